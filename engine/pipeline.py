"""Ingest and analysis jobs: decode ∥ faces ∥ model, streamed into a session file.

Both are engine jobs (`progress`, `cancel`) that the CLI runs in the foreground and the GUI on a worker
thread. Frames flow through bounded queues (engine.stream), so memory does not grow with the video;
results are committed to the session every few seconds, so a crash loses at most the last chunk and
running again resumes where the committed part ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.aggregate import DEFAULT_TAU_S, alpha_from_tau, ewma, tau_from_alpha, video_decision
from engine.analyzer import POST_HOC, FrameAnalyzer, head_weights
from engine.audio import envelope
from engine.faces import FaceResult, FaceTracker, People
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.model_card import model_arch
from engine.preprocess import InputMapping, MappingPiece, PreprocessConfig, Preprocessed
from engine.stream import Stage, batched
from engine.temporal import DEFAULT_MIN_STAGE_S, DEFAULT_TEMPORAL_WEIGHT
from engine.video import AnalysisFrame, VideoReader, open_video
from sessions import FaceTrack, Session, SessionError
from sessions import people as people_store

log = logging.getLogger(__name__)

N_LANDMARKS = 68
CLIP_METHODS = ("rollout", "rollout-grad", "chefer")   # clip models only (engine.clip_analysis)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def video_record(reader: VideoReader) -> dict:
    """The /video attributes of a session: reader metadata plus the file's sha256."""
    info = dataclasses.asdict(reader.info)
    info["path"] = str(Path(reader.path).resolve())
    info["sha256"] = file_sha256(Path(reader.path))
    return info


def open_or_create_session(reader: VideoReader, out_path: Path) -> Session:
    """Resume `out_path` when it is a session of this very video; start it anew otherwise."""
    record = video_record(reader)
    if out_path.exists():
        try:
            s = Session.open(out_path, writable=True)
        except SessionError as exc:
            log.warning("starting %s anew: %s", out_path, exc)
        else:
            if s.video.get("sha256") == record["sha256"] and s.frame_count == reader.frame_count:
                return cache_waveform(s, reader.path)
            log.info("%s belongs to another video; starting it anew", out_path)
            s.close()
    return cache_waveform(Session.create(out_path, record, reader.timestamps, overwrite=True), reader.path)


def cache_waveform(session: Session, video: str | Path) -> Session:
    """The sound's envelope (engine.audio) into the session unless it holds one, committed with the analysis'
    next commit: the window draws it at once instead of decoding the whole sound track (issue 18)."""
    if session.waveform() is None:
        try:
            wave = envelope(video)
        except Exception as exc:  # noqa: BLE001 - a bad sound track must not stop the analysis
            log.warning("%s: no waveform (%s)", video, exc)
            wave = None
        if wave is not None:
            session.write_waveform(wave)
    return session


@dataclass
class FaceChunk:
    """Per-frame face arrays for a run of consecutive frames, in the layout Session.write_faces takes, plus
    every person's own track (from FaceResult.faces) when the results come from a FaceTracker."""

    start: int
    found: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    confidence: np.ndarray
    n_faces: np.ndarray
    detected: np.ndarray
    tracks: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    followed: np.ndarray | None = None  # int16 person id in /faces per frame, -1 = nobody

    @classmethod
    def from_results(cls, start: int, faces: list[FaceResult]) -> FaceChunk:
        n = len(faces)
        box = np.full((n, 4), np.nan, np.float32)
        lm = np.full((n, N_LANDMARKS, 2), np.nan, np.float32)
        followed = np.full(n, -1, np.int16)
        tracks: dict[int, dict[str, np.ndarray]] = {}
        for i, f in enumerate(faces):
            if f.found and f.box is not None:
                box[i] = f.box
            if f.found and f.landmarks is not None:
                lm[i] = f.landmarks
            if f.found:
                followed[i] = f.person
            for g in f.faces:
                if g.person < 0 or g.box is None or g.landmarks is None:
                    continue
                t = tracks.setdefault(g.person, people_store.empty_track(n))
                t["found"][i], t["box"][i], t["landmarks"][i] = True, g.box, g.landmarks
                t["confidence"][i], t["detected"][i] = g.confidence, g.detected
        return cls(start, np.array([f.found for f in faces], bool), box, lm,
                   np.array([f.confidence for f in faces], np.float32),
                   np.array([min(f.n_faces, 255) for f in faces], np.uint8),
                   np.array([f.detected for f in faces], bool), tracks, followed)

    def write(self, session: Session, people: People | None = None) -> None:
        """Store the chunk; with the tracker's `people`, every person's track too (sessions.people)."""
        session.write_faces(self.start, self.found, self.box, self.landmarks, self.confidence, self.n_faces,
                            self.detected)
        if people is not None and self.followed is not None:
            people_store.write_tracks(session, self.start, self.tracks, self.followed, people.to_json())


def resume_point(session: Session, done: int) -> int:
    """Where to restart after `done` committed frames so the result equals an uninterrupted run.

    The tracker's state at a frame follows from its last fresh detection, so restarting at that frame
    (and redoing the few frames after it) reproduces the same faces; older files without the detection
    record restart at `done` with a fresh detection.
    """
    if done <= 0:
        return 0
    track = session.faces(slice(0, done))
    if track.detected is None or track.frames_done < done:
        return done
    hits = np.flatnonzero(track.detected[:done])
    if hits.size == 0:
        # No detection recorded: a face was never searched for (search_every > 1) or the file is old.
        return 0 if not track.found[:done].any() else done
    return int(hits[-1])


def make_tracker(session: Session, start: int, detect_every: int) -> FaceTracker:
    """A FaceTracker for frames from `start`. Resuming (start > 0), it gets the people the session found
    (ids, descriptors, frames seen before `start`) and every person's face of frame start-1, so the frames
    it redoes come out as in an uninterrupted run."""
    known = people_store.tracker_people(session) if start > 0 else []
    tracker = FaceTracker(detect_every=detect_every, people=People.from_json(known) if known else None)
    tracker.next_index = start
    if known:
        frames, last = people_store.tracks_before(session, start)
        for p, n in frames.items():
            if p < len(tracker.people):
                tracker.people.frames[p] = n
        tracker.restore(last)
    return tracker


def face_stages(reader: VideoReader, start: int, detect_every: int, cancel: CancelToken,
                stored: Callable[[int], FaceResult] | None = None, maxsize: int = 32,
                tracker: FaceTracker | None = None) -> tuple[Stage, Stage]:
    """Decode and face stages from frame `start`; the second yields (k, frame, FaceResult), tracked (by
    `tracker`, or a new one), or read back from the session when `stored` (a StoredFaces) is given."""
    if stored is None:
        tracker = tracker or FaceTracker(detect_every=detect_every)
        stored_or_tracked = lambda kf: (kf[0], kf[1], tracker.process(kf[1], kf[0]))
    else:
        stored_or_tracked = lambda kf: (kf[0], kf[1], stored(kf[0]))
    # Large frames come as AnalysisFrames: luma for the tracker, RGB only of the regions that need colour.
    decode = Stage("decode", source=reader.iter_frames(start, analysis=True), maxsize=maxsize, cancel=cancel)
    faces = Stage("faces", fn=stored_or_tracked, upstream=decode, maxsize=maxsize, cancel=cancel)
    return decode, faces


def prepare_frame(analyzer: FrameAnalyzer, frame: np.ndarray | AnalysisFrame, face: FaceResult | None,
                  cfg: PreprocessConfig | None = None) -> Preprocessed | None:
    """``analyzer.prepare`` of a frame from the analysis reader. An AnalysisFrame gives the RGB of just the
    region the model input is cut from (the face and parts with their margins, cut to the frame, at even
    offsets): the same pixels, crops and mapping as the whole RGB frame gives, without converting it all."""
    if not isinstance(frame, AnalysisFrame):
        return analyzer.prepare(frame, face, cfg)
    cfg = cfg or analyzer.preprocess_config
    if cfg.mode == "original":
        return analyzer.prepare(frame.rgb(), face, cfg)
    if face is None or not face.found or (face.landmarks is None and face.box is None):
        return None  # every other mode crops around the face (preprocess says None too)
    pts = np.asarray(face.landmarks if face.landmarks is not None else np.reshape(face.box, (2, 2)), np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0) + 1.0
    centre, reach = (lo + hi) / 2.0, float((hi - lo).max()) * (1.0 + cfg.margin) + 2.0
    # A face crop spans (1 + 2·margin)·size around the face's centre, a part crop at most that around a
    # point inside the face: all within `reach` of the centre.
    x0, y0, x1, y1 = frame.clip((math.floor(centre[0] - reach), math.floor(centre[1] - reach),
                                 math.ceil(centre[0] + reach), math.ceil(centre[1] + reach)))
    off = np.array([x0, y0], np.float64)
    moved = dataclasses.replace(
        face, box=None if face.box is None else np.asarray(face.box, np.float64) - np.tile(off, 2),
        landmarks=None if face.landmarks is None else np.asarray(face.landmarks, np.float64) - off)
    pre = analyzer.prepare(frame.rgb((x0, y0, x1, y1)), moved, cfg)
    if pre is None:
        return None
    pieces = [MappingPiece(p.name, p.input_rect, (p.frame_rect[0] + x0, p.frame_rect[1] + y0,
                                                  p.frame_rect[2] + x0, p.frame_rect[3] + y0))
              for p in pre.mapping.pieces]
    return Preprocessed(pre.image, InputMapping(pre.mapping.input_size, pieces))


class Committer:
    """Commits a session when `Session.maybe_commit` finds it due, and tells a viewer which frames are new."""

    def __init__(self, session: Session, every_s: float, on_chunk: Callable[[int, int], None] | None) -> None:
        self.session, self.every_s, self.on_chunk = session, every_s, on_chunk
        self._pending_from: int | None = None
        self._pending_to = 0

    def wrote(self, start: int, end: int) -> None:
        self._pending_from = start if self._pending_from is None else min(self._pending_from, start)
        self._pending_to = max(self._pending_to, end)
        if self.session.maybe_commit(self.every_s):
            self._notify()

    def flush(self) -> None:
        self.session.commit()
        self._notify()

    def _notify(self) -> None:
        if self._pending_from is not None and self.on_chunk is not None:
            self.on_chunk(self._pending_from, self._pending_to)
        self._pending_from = None


def ingest(video: str | Path, out_path: str | Path, progress: ProgressFn = no_progress,
           cancel: CancelToken | None = None, detect_every: int = 5, commit_every_s: float = 2.0,
           on_chunk: Callable[[int, int], None] | None = None, person: int | None = None,
           landmarks: str | Path | None = None) -> Path:
    """Decode a video and track every face into `out_path` (.vxs); resumes an interrupted ingest.

    `/faces` gets the face of `person` (None: the person chosen before, else the one visible longest).
    With `landmarks` (an OpenFace 2.x CSV of this video), faces are taken from it instead of tracked."""
    cancel = cancel or CancelToken()
    out_path = Path(out_path)
    if landmarks is not None:
        return ingest_openface(video, landmarks, out_path, progress, cancel, person)
    bounded_heap()
    with open_video(video) as reader:
        session = open_or_create_session(reader, out_path)
        ok = False
        try:
            start = resume_point(session, session.faces(slice(0, 0)).frames_done)
            if start > 0 and not people_store.has_people(session):
                start = 0  # made before people were tracked: track everyone from the start
            total = reader.frame_count
            progress(start, total, "faces")
            tracker = make_tracker(session, start, detect_every)
            decode, faces = face_stages(reader, start, detect_every, cancel, tracker=tracker)
            decode.start()
            faces.start()
            committer = Committer(session, commit_every_s, on_chunk)
            try:
                for items in batched(faces, 16):
                    cancel.raise_if_cancelled()
                    k0 = items[0][0]
                    FaceChunk.from_results(k0, [f for _, _, f in items]).write(session, tracker.people)
                    committer.wrote(k0, k0 + len(items))
                    progress(k0 + len(items), total, "faces")
            finally:
                faces.stop()
            people_store.settle(session, person)
            committer.flush()
            ok = True
        finally:
            # Commit what was done even on cancel: the committed prefix is valid and resumable.
            try:
                session.commit()
            finally:
                session.close()
            if not ok:
                log.info("ingest of %s stopped; %s keeps the frames done so far", video, out_path)
    return out_path


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """The face box our tracker reports for these 68 landmarks: the canonical box drawn from them, grown to
    hold every landmark (engine.faces)."""
    from engine.faces import _canonical_box, _face_box

    return _face_box(_canonical_box(landmarks), landmarks)


def ingest_openface(video: str | Path, csv_path: str | Path, out_path: str | Path,
                    progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
                    person: int | None = None) -> Path:
    """Ingest with the faces of an OpenFace 2.x CSV (sessions.openface) instead of our tracker: each OpenFace
    `face_id` becomes a person; OpenFace's 1-based `frame` k is our frame k-1; rows with `success` 0 are
    frames without that face. The session is made anew (the CSV is the whole tracking)."""
    from sessions.openface import OpenFaceError, read_openface

    cancel = cancel or CancelToken()
    out_path = Path(out_path)
    track = read_openface(csv_path)
    with open_video(video) as reader:
        T = reader.frame_count
        bad = track.frame[(track.frame < 0) | (track.frame >= T)]
        if bad.size:
            raise OpenFaceError(f"{csv_path} has frame {int(bad[0]) + 1}, but {video} has frames 1..{T}: "
                                "is it the OpenFace output of this video?")
        off = np.abs(track.timestamp - np.asarray(reader.timestamps)[track.frame])
        if off.size and np.nanmedian(off) > 0.5 / (reader.info.fps or 30.0):
            log.warning("%s: OpenFace timestamps differ from %s's frame times by %.3f s (median); frames are "
                        "matched by number", csv_path, video, float(np.nanmedian(off)))
        session = Session.create(out_path, video_record(reader), reader.timestamps, overwrite=True)
        try:
            ids = track.face_ids
            pid = {f: i for i, f in enumerate(ids)}  # OpenFace face ids -> person ids 0, 1, ...
            ok = track.success
            faces: list[list[FaceResult]] = [[] for _ in range(T)]
            best: dict[int, tuple[float, int, list[float]]] = {}
            for r in np.flatnonzero(ok):
                cancel.raise_if_cancelled()
                k, p, lm = int(track.frame[r]), pid[int(track.face_id[r])], track.landmarks[r]
                box = landmark_box(lm)
                conf = float(track.confidence[r])
                faces[k].append(FaceResult(True, box, lm, conf, 0, False, person=p))
                if conf > best.get(p, (-1.0, -1, []))[0]:
                    best[p] = (conf, k, [float(v) for v in box])
            counts = np.bincount([pid[int(f)] for f in track.face_id[ok]], minlength=len(ids))
            people = [{"id": p, "frames": int(counts[p]), "count": 0, "descriptor": None,
                       "thumb_score": best[p][0] if p in best else None,
                       "thumb_frame": best[p][1] if p in best else -1,
                       "thumb_box": best[p][2] if p in best else [], "openface_face_id": f}
                      for f, p in pid.items()]
            for start in range(0, T, 256):
                cancel.raise_if_cancelled()
                results = []
                for k in range(start, min(T, start + 256)):
                    fs = faces[k]
                    for f in fs:
                        f.n_faces = len(fs)
                    # /faces first holds the most confident face; `settle` then picks the person
                    main = max(fs, key=lambda f: f.confidence) if fs else None
                    results.append(FaceResult(True, main.box, main.landmarks, main.confidence, len(fs), False,
                                              person=main.person, faces=fs) if main else FaceResult.none())
                chunk = FaceChunk.from_results(start, results)
                session.write_faces(chunk.start, chunk.found, chunk.box, chunk.landmarks, chunk.confidence,
                                    chunk.n_faces, chunk.detected)
                people_store.write_tracks(session, start, chunk.tracks, chunk.followed, people)
                progress(min(T, start + 256), T, "faces from OpenFace")
            people_store.settle(session, person)
            session.set_attrs("/faces", landmarks_source=f"openface:{Path(csv_path).resolve()}")
            session.commit()
        finally:
            session.close()
    return out_path


# --- analysis -------------------------------------------------------------------------------------------

@dataclass
class AnalyzeSettings:
    """What `analyze` computes; every field is recorded in the session."""

    alpha: float | None = None               # EWMA smoothing factor (METHODS §9); None: from ewma_tau_s
    ewma_tau_s: float = DEFAULT_TAU_S        # EWMA time constant (s): α = 1 − exp(−1/(fps·τ))
    explain: tuple[str, ...] = ("intrinsic",)  # plus any of "lrp", "gradcam", "ig"
    batch_size: int = 32
    detect_every: int = 5
    device: str = "auto"
    commit_every_s: float = 2.0
    spray: bool = True
    spray_active: str | float = "predicted"  # which frames a class is clustered on
    spray_method: str | None = None          # relevance used by SpRAy (default: first post-hoc, else intrinsic)
    spray_temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT  # temporal-neighbour term in SpRAy's affinity
    min_stage_s: float = DEFAULT_MIN_STAGE_S  # shorter stages are merged into a neighbour for display
    occlusion: bool = False                  # score the seven facial-part conditions per frame
    preprocess_mode: str | None = None       # override the model's mode: "original" | "face" | "reassembled"
    au: bool = True                          # cosine of each map with the predicted class's AU map
    ig_steps: int = 16
    person: int | None = None                # who to analyse (sessions.people id); None: as before, else the one visible longest
    # Clip models (engine.clip_analysis): a T-frame window every `stride` face frames (1..T; a frame's score
    # is the mean of the windows containing it), attention rollout's head fusion, windows per model call.
    stride: int = 4
    fusion: str = "min"
    window_batch: int = 4

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not self.ewma_tau_s >= 0:
            raise ValueError(f"ewma_tau_s must be ≥ 0 s, got {self.ewma_tau_s}")
        if not self.spray_temporal_weight >= 0:
            raise ValueError(f"spray_temporal_weight must be ≥ 0, got {self.spray_temporal_weight}")
        if not self.min_stage_s >= 0:
            raise ValueError(f"min_stage_s must be ≥ 0 s, got {self.min_stage_s}")
        methods = tuple(m for m in ("intrinsic", *self.explain) if m)
        self.explain = tuple(dict.fromkeys(methods))   # intrinsic first, no repeats
        unknown = set(self.explain) - {"intrinsic", *POST_HOC, *CLIP_METHODS}
        if unknown:
            raise ValueError(f"unknown explanation method(s) {sorted(unknown)}; choose from "
                             f"intrinsic, {', '.join(POST_HOC)} (clip models: {', '.join(CLIP_METHODS)}, gradcam)")
        if self.stride < 1:
            raise ValueError(f"stride must be ≥ 1 face frame, got {self.stride}")

    def ewma(self, fps: float) -> tuple[float, float]:
        """(α, τ s) for a video at ``fps``: α from ewma_tau_s, unless α was given (then τ follows from it)."""
        if self.alpha is not None:
            return float(self.alpha), tau_from_alpha(self.alpha, fps)
        return alpha_from_tau(self.ewma_tau_s, fps), float(self.ewma_tau_s)

    def spray_source(self) -> str:
        if self.spray_method:
            return self.spray_method
        post = [m for m in self.explain if m in POST_HOC]
        return post[0] if post else "intrinsic"


def _post_hoc(method: str, analyzer: FrameAnalyzer, images: np.ndarray, target: np.ndarray,
              ig_steps: int) -> np.ndarray:
    """Post-hoc relevance maps N×S×S in model-input space for the predicted classes."""
    from engine import explain

    x = analyzer.tensor(images)
    tgt = torch.as_tensor(target, dtype=torch.long, device=x.device)
    if method == "lrp":
        from engine.explain.lrp import lrp

        return lrp(analyzer.model, x, tgt)
    if method == "gradcam":
        from engine.explain.gradcam import gradcam

        return gradcam(analyzer.model, x, tgt, analyzer.model.target_layer())
    if method == "ig":
        return explain.integrated_gradients(analyzer.model, x, tgt, steps=ig_steps)[0]
    if method == "gxi":
        from engine.explain.evidence import gradient_x_input

        return gradient_x_input(analyzer.model, x, tgt)
    if method == "prp":
        if analyzer.spec.arch != "protopnet":
            raise ValueError(f"prp explains ProtoPNets only; this model is a {analyzer.spec.arch}")
        from engine.explain.prp import prp

        return prp(analyzer.model, x, tgt)
    raise ValueError(method)


def _rows(n: int, valid: np.ndarray, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Scatter per-valid-frame rows into an n-row array, `fill` for frames without a model input."""
    out = np.full((n, *values.shape[1:]), fill, dtype=values.dtype if values.dtype.kind == "f" else np.float32)
    out[valid] = values
    return out


def _au_cosines(maps: np.ndarray, items: list, pred: np.ndarray, classes: list[str]) -> np.ndarray:
    """CAM-COS per frame: cosine between a map (any resolution over the model input) and the AU map of the
    predicted class drawn from the frame's landmarks in the same input space (METHODS §7)."""
    from engine.explain import au_map, cam_cos

    out = np.full(len(items), np.nan, np.float32)
    for i, (_, _, face, pre) in enumerate(items):
        if len(pre.mapping.pieces) != 1 or face.landmarks is None:
            continue  # the reassembled grid has no single face geometry to draw AUs on
        size = pre.mapping.input_size
        lm = pre.mapping.from_frame(face.landmarks)
        au = au_map(lm, classes[int(pred[i])], (size, size))
        if not np.any(au):
            continue  # neutral: no action units, the cosine is undefined
        m = maps[i].astype(np.float32)
        if m.shape != (size, size):
            m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
        out[i] = cam_cos(m, au)
    return out


class _BatchWriter:
    """Scores one batch of (k, frame, face, preprocessed) items and writes every per-frame array."""

    def __init__(self, analyzer: FrameAnalyzer, session: Session, settings: AnalyzeSettings,
                 write_faces: bool = True, occlusion_only: bool = False, cfg: PreprocessConfig | None = None,
                 people: People | None = None) -> None:
        self.a, self.s, self.cfg = analyzer, session, settings
        self.people = people
        self.classes = analyzer.classes
        self.write_faces, self.occlusion_only = write_faces, occlusion_only
        base = cfg or analyzer.preprocess_config
        if settings.occlusion:
            from engine.preprocess import OCCLUSION_CONDITIONS

            self.conditions = list(OCCLUSION_CONDITIONS)
            self.occ_cfgs = [dataclasses.replace(base, occlude=OCCLUSION_CONDITIONS[c]) for c in self.conditions]

    def _occlusion(self, k0: int, n: int, valid: np.ndarray, good: list) -> None:
        occ = np.full((n, len(self.conditions), len(self.classes)), np.nan, np.float32)
        rows = np.flatnonzero(valid)
        if rows.size:
            for ci, cfg in enumerate(self.occ_cfgs):
                imgs = [prepare_frame(self.a, it[1], it[2], cfg) for it in good]
                occ[rows, ci] = self.a.probs(np.stack([p.image for p in imgs]))
        self.s.write_occlusion(k0, occ, self.conditions)

    def finish(self) -> None:
        """Every batch is written when it comes: nothing is left at the end."""

    def __call__(self, items: list) -> tuple[int, int]:
        """Writes the batch; returns the frames written, [k0, k0 + n)."""
        self._write(items)
        return items[0][0], items[0][0] + len(items)

    def _write(self, items: list) -> None:
        n, k0, C = len(items), items[0][0], len(self.classes)
        valid = np.array([it[3] is not None for it in items], bool)
        good = [it for it in items if it[3] is not None]
        if self.occlusion_only:
            self._occlusion(k0, n, valid, good)
            return
        if self.write_faces:
            FaceChunk.from_results(k0, [it[2] for it in items]).write(self.s, self.people)
        self.s.write_mappings(k0, [it[3].mapping.to_json() if it[3] is not None else None for it in items])
        if not valid.any():
            self.s.write_scores(k0, valid, np.full((n, C), np.nan, np.float32), np.full((n, C), np.nan, np.float32))
            return
        images = np.stack([it[3].image for it in good])
        logits, probs, extra = self.a.run(images)
        pred = probs.argmax(1)
        for name, arr in extra.items():
            dtype = np.float16 if name.endswith("maps") else arr.dtype
            fill = -1 if arr.dtype.kind == "i" else np.nan
            rows = np.full((n, *arr.shape[1:]), fill, dtype=dtype)
            rows[valid] = arr
            if name == "maps":
                self.s.write_explanation("intrinsic", k0, rows)
            else:
                self.s.write_intrinsic(name, k0, rows)
        maps_by_method = {"intrinsic": extra["maps"]}
        for method in self.cfg.explain:
            if method in POST_HOC:
                m = _post_hoc(method, self.a, images, pred, self.cfg.ig_steps)
                maps_by_method[method] = m
                self.s.write_explanation(method, k0, _rows(n, valid, m.astype(np.float16)))
        if self.cfg.au:
            for method, m in maps_by_method.items():
                cos = _au_cosines(m, good, pred, self.classes)
                self.s.write_au_cos(method, k0, _rows(n, valid, cos))
        if self.cfg.occlusion:
            self._occlusion(k0, n, valid, good)
        self.s.write_scores(k0, valid, _rows(n, valid, logits), _rows(n, valid, probs))


def _pooled_map_reader(session: Session, method: str, max_side: int = 32) -> Callable[[int, int], np.ndarray]:
    """read(start, end) → frames [start, end)'s maps of one method, ≥ 0 and sum-pooled to ≤ max_side², for
    SpRAy to read chunk by chunk (never the whole video's maps at once)."""
    from engine.explain.spray import prepare_maps

    def read(start: int, end: int) -> np.ndarray:
        m = np.nan_to_num(session.explanation_maps(method, slice(start, end)).astype(np.float32))
        m = np.maximum(m, 0)  # SpRAy clusters where the evidence for the class lies
        pooled = prepare_maps(m, max_side)
        side = math.isqrt(pooled.shape[1])
        return pooled.reshape(len(m), side, side)

    return read


def _spray_to_session(session: Session, classes: list[str], settings: AnalyzeSettings,
                      progress: ProgressFn, cancel: CancelToken) -> None:
    from engine.explain.spray import cluster_letter, spray_streamed
    from sessions.store import SprayResult as StoredSpray
    from sessions.store import runs_of

    method = settings.spray_source()
    if not session.has_maps(method):
        return
    valid = session.read("valid")
    probs = session.read("probs")
    probs[~valid] = np.nan
    read = _pooled_map_reader(session, method)
    res = spray_streamed(read, probs, classes, active=settings.spray_active, progress=progress, cancel=cancel,
                         temporal_weight=settings.spray_temporal_weight)
    tp = res.prototypes
    for cname, cc in res.classes.items():
        labels = np.full(session.frame_count, -1, np.int16)
        labels[cc.frames] = cc.labels
        names = [f"{cname.upper()}_{cluster_letter(c)}" for c in range(cc.k)]
        # The class's own stages: maximal runs of one cluster over the frames where the class is active.
        stages = [st for st in runs_of([names[x] if x >= 0 else "" for x in labels]) if st.descriptor]
        cmaps = np.stack([cc.mean_maps[n] for n in names if n in cc.mean_maps]) if names else np.zeros((0, 1, 1))
        vals = np.sort(np.asarray(cc.eigenvalues, float))
        gap = float(np.max(np.diff(vals[: cc.k + 1]))) if vals.size > 1 else 0.0
        session.write_spray(cname, StoredSpray(labels, stages, cmaps, cc.k, gap, tp.reduction, tp.prototype[:30000]))
    session.write_temporal_prototype([", ".join(d) for d in tp.descriptors], method)
    _merged_stages_to_session(session, read, tp.stages, settings)


def _merged_stages_to_session(session: Session, read: Callable[[int, int], np.ndarray], stages: list,
                              settings: AnalyzeSettings) -> None:
    """The stages shown in the strip: SpRAy's stages with those shorter than `min_stage_s` merged into a
    neighbour (engine.explain.spray.merge_short_stages), stored per frame in /analysis/stages/merged beside
    SpRAy's own descriptors, with both reductions and mean frame-to-stage cosines and the settings."""
    from engine.explain.spray import frame_stage_cosine, merge_short_stages, stage_durations, stage_map_sums

    fps = session.fps
    sums, counts = stage_map_sums(read, stages)
    merged = merge_short_stages(stages, sums, counts, stage_durations(stages, session.timestamps, fps),
                                settings.min_stage_s)
    desc = np.empty(session.frame_count, dtype=object)
    for st in merged:
        desc[st.start:st.end] = ", ".join(st.descriptor)
    T = max(session.frame_count, 1)
    session.write_display_stages(list(desc), temporal_weight=float(settings.spray_temporal_weight),
                                 min_stage_s=float(settings.min_stage_s), n_merged_stages=len(merged),
                                 merged_reduction=1.0 - len(merged) / T,
                                 frame_stage_cosine=frame_stage_cosine(read, stages),
                                 merged_frame_stage_cosine=frame_stage_cosine(read, merged))


class StoredFaces:
    """Per-frame FaceResults read back from a session in blocks, so memory stays flat in video length."""

    def __init__(self, session: Session, block: int = 1024) -> None:
        self.session, self.block = session, block
        self._start = 0
        self._track: FaceTrack | None = None

    def __call__(self, k: int) -> FaceResult:
        if self._track is None or not self._start <= k < self._start + self.block:
            self._start = k - k % self.block
            end = min(self._start + self.block, self.session.frame_count)
            self._track = self.session.faces(slice(self._start, end))
        t, i = self._track, k - self._start
        if not t.found[i]:
            return FaceResult.none(n_faces=int(t.n_faces[i]))
        detected = bool(t.detected[i]) if t.detected is not None else False
        return FaceResult(True, t.box[i], t.landmarks[i], float(t.confidence[i]), int(t.n_faces[i]), detected)


def bounded_heap() -> None:
    """Serve allocations of 64 KiB or more (decoded frames, batches, maps) with mmap, returned to the
    system when freed. glibc's default threshold grows to 32 MiB, after which those buffers come from the
    threads' heaps, which fragment: a 10-minute analysis grew from 1.07 to 1.64 GB (RSS after each tenth
    of the video, bench/long_video.py); with this it stays at 1.05 GB throughout. Same effect as
    MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=131072; a no-op where glibc is absent."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD (also stops glibc raising it dynamically)
        libc.mallopt(-1, 131072)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        log.debug("mallopt not available; heap left as it is")


def model_threads(settings: AnalyzeSettings, device: torch.device | str, cores: int | None = None) -> int | None:
    """Torch threads for the model while the pipeline runs, or None to leave torch's choice.

    On a CPU with two cores or fewer the face tracker (dlib, one thread) and the decoder run beside the
    model, so a model using every core only makes them wait: with intrinsic explanations alone, one model
    thread analyses 18 % more frames/s on this project's 2-core reference machine (bench/analyze.py, 184
    vs 156 frames/s). Post-hoc methods (LRP, Grad-CAM, IG) make the model the slowest stage, so it keeps
    every core then."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    backward = (*POST_HOC, *CLIP_METHODS[1:])   # methods that run a backward pass
    if torch.device(device).type != "cpu" or cores > 2 or any(m in backward for m in settings.explain):
        return None
    return 1


def analyze(video: str | Path, model_dir: str | Path | None, out_path: str | Path,
            settings: AnalyzeSettings | None = None, progress: ProgressFn = no_progress,
            cancel: CancelToken | None = None, on_chunk: Callable[[int, int], None] | None = None,
            analyzer: FrameAnalyzer | None = None) -> Path:
    """Score, explain and summarise every frame of a video into a session; resumes an incomplete one.

    Faces already in the session (from `ingest` or an earlier analysis) are reused rather than tracked
    again, so re-analysing with another model, preprocessing mode or occlusion costs only the model.
    A landmark-sequence model (arch ``landmark-lstm``) reads landmarks, not face crops: it goes to
    `engine.landmark_analysis.analyze_landmarks` with the EWMA and face-tracking settings (the session is
    written at the end; ``on_chunk`` is not called).
    """
    settings = settings or AnalyzeSettings()
    cancel = cancel or CancelToken()
    out_path = Path(out_path)
    if analyzer is None and model_dir is not None and model_arch(model_dir) == "landmark-lstm":
        from engine.landmark_analysis import LandmarkAnalyzeSettings, analyze_landmarks

        return analyze_landmarks(video, model_dir, out_path,
                                 LandmarkAnalyzeSettings(alpha=settings.alpha, ewma_tau_s=settings.ewma_tau_s,
                                                         detect_every=settings.detect_every),
                                 progress=progress, cancel=cancel)
    bounded_heap()
    if analyzer is None:
        if model_dir is None:
            raise ValueError("analyze needs a model folder or a loaded FrameAnalyzer")
        analyzer = FrameAnalyzer(model_dir, device=settings.device)
    threads, previous = model_threads(settings, analyzer.device), torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)  # process-wide; restored below
    try:
        return _analyze(video, out_path, settings, progress, cancel, on_chunk, analyzer)
    finally:
        if threads is not None and threads != previous:
            torch.set_num_threads(previous)


def _analyze(video: str | Path, out_path: Path, settings: AnalyzeSettings, progress: ProgressFn,
             cancel: CancelToken, on_chunk: Callable[[int, int], None] | None, analyzer: FrameAnalyzer) -> Path:
    clip = analyzer.spec.is_clip
    if clip:
        from engine.clip_analysis import clip_settings

        settings = clip_settings(settings)
    elif set(settings.explain) & set(CLIP_METHODS):
        raise ValueError(f"{', '.join(sorted(set(settings.explain) & set(CLIP_METHODS)))} explain clip models "
                         f"(TimeSformer) only; this model is a {analyzer.spec.arch}")
    cfg = analyzer.config(mode=settings.preprocess_mode)
    identity = {**analyzer.identity, "preprocess": cfg.to_json()}
    with open_video(video) as reader:
        session = open_or_create_session(reader, out_path)
        try:
            total = reader.frame_count
            known_faces = session.faces(slice(0, 0)).frames_done >= total
            # The person analysed: settled now when every face is known; otherwise the tracker follows its
            # best guess (-1) and the person is settled after the pass (redoing it if the guess was wrong).
            target = people_store.settle(session, settings.person)[0] if known_faces else -1
            before = session.analysis_info()
            resume = before is not None and int(session.attrs("").get("person", 0)) == target

            def begin(resume: bool) -> int:
                if clip and resume:   # other windows give other scores: analyse anew
                    old = session.clip_windows()
                    resume = old.get("stride") == settings.stride and old.get("fusion") == settings.fusion
                done = session.begin_analysis(identity, analyzer.classes, list(settings.explain),
                                              settings.ewma(session.fps)[0],
                                              resume=resume)
                W, b = head_weights(analyzer.model)
                session.set_head(W, b, analyzer.spec.arch)
                return done

            done = begin(resume)
            if not resume:
                session.set_attrs("", person=target)
            info = session.analysis_info() or {}
            occlusion_only = done >= total and settings.occlusion and not info.get("occlusion")
            if clip and occlusion_only:   # a clip model's part scores come from its windows: one pass for all
                person = int(session.attrs("").get("person", 0))
                done, occlusion_only = begin(False), False
                session.set_attrs("", person=person)
            if done >= total and info.get("complete") and not occlusion_only:
                progress(total, total, "already analysed")
                return out_path

            def run(done: int, known: bool) -> None:
                feed_from = first_row = 0
                if occlusion_only:
                    start = 0
                elif clip:
                    from engine.clip_analysis import clip_start

                    feed_from, first_row = clip_start(session, done, analyzer.model.frames, settings.stride)
                    start = feed_from if known else resume_point(session, feed_from)
                else:
                    start = done if known else resume_point(session, done)
                progress(start, total, "analysing")
                tracker = None if known else make_tracker(session, start, settings.detect_every)
                decode, faces = face_stages(reader, start, settings.detect_every, cancel,
                                            stored=StoredFaces(session) if known else None, tracker=tracker)
                # The frame goes on to the batch only for occlusion; otherwise a batch and the queue before it
                # would hold ~64 decoded frames (~0.8 GB of 4K) for nothing.
                keep = settings.occlusion
                prep = Stage("preprocess", fn=lambda it: (it[0], it[1] if keep else None, it[2],
                                                          prepare_frame(analyzer, it[1], it[2], cfg)),
                             upstream=faces, cancel=cancel)
                people = None if tracker is None else tracker.people
                if clip:
                    from engine.clip_analysis import ClipWriter

                    write: _BatchWriter | ClipWriter = ClipWriter(analyzer, session, settings, done, feed_from,
                                                                  first_row, write_faces=not known, people=people,
                                                                  cancel=cancel, cfg=cfg)
                else:
                    write = _BatchWriter(analyzer, session, settings, write_faces=not known,
                                         occlusion_only=occlusion_only, cfg=cfg, people=people)
                committer = Committer(session, settings.commit_every_s, on_chunk)
                for st in (decode, faces, prep):
                    st.start()
                try:
                    for items in batched(prep, settings.batch_size):
                        cancel.raise_if_cancelled()
                        span = write(items)
                        if span is not None:
                            committer.wrote(*span)
                        progress(items[-1][0] + 1, total, "occlusion" if occlusion_only else "analysing")
                finally:
                    prep.stop()
                span = write.finish()
                if span is not None:
                    committer.wrote(*span)
                committer.flush()
                log.info("stage rates (frames/s): %s",
                         {st.name: round(st.timer.rate, 1) for st in (decode, faces, prep)})

            run(done, known_faces)
            if occlusion_only:
                session.set_attrs("", complete=True)
                return out_path
            if not known_faces:
                person, changed = people_store.settle(session, settings.person)
                if changed:
                    # The tracker followed someone else in some frames: score this person's face instead.
                    log.info("%s: analysing person %d again from their stored track", out_path, person)
                    begin(False)
                    session.set_attrs("", person=person)
                    run(0, True)
                else:
                    session.set_attrs("", person=person)
            _finish(session, analyzer.classes, settings, progress, cancel)
        finally:
            try:
                session.commit()
            finally:
                session.close()
    return out_path


def _finish(session: Session, classes: list[str], settings: AnalyzeSettings, progress: ProgressFn,
            cancel: CancelToken) -> None:
    """Whole-video results once every frame is scored: SpRAy stages, EWMA and the decision."""
    if settings.spray:
        progress(0, len(classes), "SpRAy temporal prototypes")
        _spray_to_session(session, classes, settings, progress, cancel)
    valid = session.read("valid")
    probs = session.read("probs")
    alpha, tau = settings.ewma(session.fps)
    smoothed = ewma(probs, alpha, valid)
    # τ and the frame rate α was derived at, beside α (which older readers use alone).
    session.set_attrs("", ewma_tau_s=tau, ewma_fps=float(session.fps))
    session.finish_analysis(smoothed, alpha, video_decision(smoothed, classes))
