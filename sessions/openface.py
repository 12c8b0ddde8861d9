"""OpenFace 2.x compatible CSV: write a session's faces as FeatureExtraction does, read OpenFace CSVs back.

OpenFace's FeatureExtraction writes one row per frame with a header whose names follow ", " (a comma and a
space), e.g. `frame, face_id, timestamp, confidence, success, ..., x_0, ..., x_67, y_0, ..., y_67, ...`.
We write the columns we share with it, in its order and spelling, then our own (see SCHEMA.md, "OpenFace
CSV"). Readers that load OpenFace files (pandas with `skipinitialspace=True`, or with the column names
stripped afterwards; R's read.csv with strip.white) load ours the same way.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessions.atomic import atomic_write
from sessions.store import N_LANDMARKS, Session

log = logging.getLogger(__name__)

OPENFACE_COLUMNS = (["frame", "face_id", "timestamp", "confidence", "success"]
                    + [f"x_{i}" for i in range(N_LANDMARKS)] + [f"y_{i}" for i in range(N_LANDMARKS)])
SEP = ", "


class OpenFaceError(ValueError):
    """A CSV that is not an OpenFace landmark file; the message names the file and what is missing."""


def _num(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if np.isfinite(x) else ""


def export_openface(session: Session, path: str | os.PathLike[str]) -> Path:
    """One row per frame: OpenFace's `frame` (1-based), `face_id` (the analysed person), `timestamp` (s),
    `confidence`, `success`, `x_0…x_67`, `y_0…y_67` (full-frame px; 0 where no face, as OpenFace writes),
    then ours: `person`, `prob_<class>`…, `ewma_<class>`…, `stage`, `occlusion_delta_<condition>`…"""
    from sessions.export import _blocks, frame_columns
    from sessions.people import analysed_person

    path = Path(path)
    person = analysed_person(session)
    face_id = 0 if person is None else int(person)
    ours_header, ours = frame_columns(session)
    header = OPENFACE_COLUMNS + ["person"] + ours_header
    ts = session.timestamps
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        fh.write(SEP.join(header) + "\n")
        rows = ours()
        for sl in _blocks(session.frame_count):
            faces = session.faces(sl)
            lm = np.where(faces.found[:, None, None], np.nan_to_num(faces.landmarks), 0.0)
            for j in range(sl.stop - sl.start):
                k = sl.start + j
                found = bool(faces.found[j])
                row = [str(k + 1), str(face_id), f"{ts[k]:.3f}", _num(float(faces.confidence[j]), 3),
                       "1" if found else "0"]
                row += [f"{v:.3f}" for v in lm[j, :, 0]] + [f"{v:.3f}" for v in lm[j, :, 1]]
                row.append(str(face_id))
                row += [_quote(c) for c in next(rows)]
                fh.write(SEP.join(row) + "\n")
    log.info("exported %s (OpenFace columns)", path)
    return path


def _quote(cell: str) -> str:
    """A cell as csv would write it (stage descriptors may hold commas: "HAPPY_A, SAD_B")."""
    if any(c in cell for c in ',"\n\r'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@dataclass
class OpenFaceTrack:
    """The landmark rows of an OpenFace CSV, one row per (frame, face)."""

    frame: np.ndarray  # int64 (N,) 0-based frame index (OpenFace's `frame` minus 1)
    face_id: np.ndarray  # int64 (N,)
    timestamp: np.ndarray  # float64 (N,) seconds
    confidence: np.ndarray  # float32 (N,)
    success: np.ndarray  # bool (N,)
    landmarks: np.ndarray  # float32 (N, 68, 2) full-frame px

    @property
    def face_ids(self) -> list[int]:
        return sorted({int(f) for f in self.face_id})


def read_openface(path: str | os.PathLike[str]) -> OpenFaceTrack:
    """Read the landmark columns of an OpenFace 2.x CSV (FeatureExtraction or FaceLandmarkVidMulti, or ours).

    Column names may carry OpenFace's leading space; other columns are ignored. Rows are kept in file
    order. Raises OpenFaceError when a needed column is missing or a value is not a number."""
    path = Path(path)
    need = ["frame", "timestamp", "confidence", "success"] + OPENFACE_COLUMNS[5:]
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise OpenFaceError(f"{path} is empty: give an OpenFace CSV (FeatureExtraction output)") from None
        missing = [c for c in need if c not in header]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise OpenFaceError(f"{path} is not an OpenFace landmark CSV: it lacks the column(s) {shown}")
        col = {c: i for i, c in enumerate(header)}
        idx = [col[c] for c in need]
        fid = col.get("face_id")
        values: list[list[float]] = []
        ids: list[int] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                values.append([float(row[i]) if row[i].strip() else np.nan for i in idx])
                ids.append(int(float(row[fid])) if fid is not None else 0)
            except (ValueError, IndexError) as exc:
                raise OpenFaceError(f"{path} line {line}: not an OpenFace row ({exc})") from None
    a = np.asarray(values, np.float64).reshape(-1, len(need))
    n = len(a)
    if n and np.any(~np.isfinite(a[:, 0])):
        raise OpenFaceError(f"{path}: a row has no frame number")
    lm = np.stack([a[:, 4:4 + N_LANDMARKS], a[:, 4 + N_LANDMARKS:]], axis=2).astype(np.float32)
    success = np.nan_to_num(a[:, 3]) > 0.5
    success &= np.all(np.isfinite(lm), axis=(1, 2))
    return OpenFaceTrack(frame=a[:, 0].astype(np.int64) - 1, face_id=np.asarray(ids, np.int64).reshape(n),
                         timestamp=a[:, 1], confidence=np.nan_to_num(a[:, 2]).astype(np.float32),
                         success=success, landmarks=lm)
