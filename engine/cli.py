"""Headless command line: everything the GUI can do, for batch jobs and servers.

Exit codes: 0 success; 2 bad input (one clear line on stderr, no traceback); 1 an unexpected error;
130 cancelled with Ctrl+C. A batch goes on past a bad file and reports it at the end."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.jobs import Cancelled, CancelToken, file_error_message
from engine.temporal import DEFAULT_MIN_STAGE_S, DEFAULT_TAU_S, DEFAULT_TEMPORAL_WEIGHT

log = logging.getLogger("vidxai")

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class BadInput(Exception):
    """An input the user can fix: the message is shown as one line, without a traceback."""


def _one_line(item: str, exc: BaseException) -> str:
    """The message of an error as one line naming `item` once."""
    if isinstance(exc, OSError) and (msg := file_error_message(item, exc)):
        return msg
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return msg if item in msg else f"{item}: {msg}"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "your input is wrong".

    Only modules that are already imported are asked: an error of a module that was never loaded
    cannot have been raised, and importing one here (engine.checkpoint pulls in torch) would make
    `vidxai info` and `export` pay seconds and hundreds of MB for nothing."""
    errors: list[type[BaseException]] = [BadInput, FileNotFoundError, IsADirectoryError, PermissionError]
    for mod, name in (("engine.video", "VideoError"), ("sessions.store", "SessionError"),
                      ("engine.checkpoint", "CheckpointError"), ("engine.data", "DataError"),
                      ("engine.resources", "ResourceError"), ("sessions.openface", "OpenFaceError"),
                      ("sessions.elan", "EafError"), ("engine.report", "ReportError"),
                      ("engine.cluster", "ClusterError")):
        err = getattr(sys.modules.get(mod), name, None)
        if err is not None:
            errors.append(err)
    return tuple(errors)


@contextmanager
def progress_bar(desc: str) -> Iterator[Callable[[int, int, str], None]]:
    """A tqdm bar on stderr driven by an engine progress callback: only on a terminal (in a log or a pipe
    stderr keeps one line per problem), and only from the first progress report, so an input refused at
    once leaves no empty bar."""
    from tqdm import tqdm

    bars: list[tqdm] = []

    def update(done: int, total: int, message: str = "") -> None:
        if not bars:
            if not sys.stderr.isatty():
                return
            bars.append(tqdm(total=0, desc=desc, unit="it", dynamic_ncols=True, leave=True, file=sys.stderr,
                             mininterval=0.5))
        bar = bars[0]
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _batch(items: list[str], what: str, fn: Callable[[str, CancelToken], object]) -> int:
    """Run `fn` on every item; bad inputs are reported and skipped, the exit code says if any failed."""
    failed: list[tuple[str, str]] = []
    cancel = CancelToken()
    for item in items:
        try:
            fn(item, cancel)
        except KeyboardInterrupt:
            cancel.cancel()
            print(f"vidxai: {what} cancelled at {item}", file=sys.stderr)
            return EXIT_CANCELLED
        except Cancelled:
            print(f"vidxai: {what} cancelled at {item}", file=sys.stderr)
            return EXIT_CANCELLED
        except _user_errors() as exc:  # evaluated after fn imported what it raises
            msg = _one_line(item, exc)
            print(f"vidxai: {msg}", file=sys.stderr)
            failed.append((item, msg))
        except OSError as exc:
            msg = file_error_message(item, exc)
            if msg is None:
                raise
            print(f"vidxai: {msg}", file=sys.stderr)
            failed.append((item, msg))
    if failed:
        if len(items) > 1:  # one bad input says it in one line; a batch also says which ones failed
            print(f"vidxai: {len(failed)} of {len(items)} failed: {', '.join(i for i, _ in failed)}",
                  file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _out_path(video: str, out_dir: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out / (Path(video).stem + ".vxs")


# --- commands -----------------------------------------------------------------------------------------

def cmd_ingest(args: argparse.Namespace) -> int:
    from engine.pipeline import ingest

    def one(video: str, cancel: CancelToken) -> None:
        with progress_bar(Path(video).name) as bar:
            path = ingest(video, _out_path(video, args.out), progress=bar, cancel=cancel,
                          detect_every=args.detect_every, person=args.person, landmarks=args.landmarks)
        print(path)

    if args.landmarks and len(args.videos) > 1:
        raise BadInput("--landmarks is the OpenFace CSV of one video: ingest one video at a time with it")
    return _batch(args.videos, "ingest", one)


def cmd_analyze(args: argparse.Namespace) -> int:
    from engine.pipeline import AnalyzeSettings, analyze
    from engine.resources import default_model_dir

    model = Path(args.model) if args.model else default_model_dir()
    settings = AnalyzeSettings(alpha=args.alpha, ewma_tau_s=args.ewma_tau,
                               explain=tuple(args.explain.split(",")) if args.explain else (),
                               batch_size=args.batch_size, device=args.device, spray=not args.no_spray,
                               spray_temporal_weight=args.spray_temporal_weight, min_stage_s=args.min_stage_s,
                               occlusion=args.occlusion, detect_every=args.detect_every, person=args.person,
                               stride=args.stride, fusion=args.fusion)
    if args.engine == "ray":  # a corpus on a Ray cluster or every core of this machine (engine.cluster)
        from engine.cluster import cmd_analyze_ray

        return cmd_analyze_ray(args, settings, model)

    def one(video: str, cancel: CancelToken) -> None:
        with progress_bar(Path(video).name) as bar:
            # A landmark-sequence model is routed by analyze itself (engine.landmark_analysis).
            path = analyze(video, model, _out_path(video, args.out), settings, progress=bar, cancel=cancel)
        from sessions import Session

        with Session.open(path) as s:
            info = s.info()
        print(f"{path}\t{info.get('decision')}")

    return _batch(args.videos, "analyze", one)


def cmd_info(args: argparse.Namespace) -> int:
    from sessions import Session

    def one(path: str, cancel: CancelToken) -> None:
        with Session.open(path) as s:
            info = s.info()
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            for k, v in info.items():
                if k == "people":
                    print(f"{k:>20}: {len(v)} (person, frames, seconds, thumbnail frame; * = analysed)")
                    for p in v:
                        mark = "*" if p["id"] == info.get("person") else " "
                        print(f"{'':>20}  {mark}{p['id']:>3} {p['frames']:>7} {p['seconds']:>9.1f} s  "
                              f"frame {p['thumb_frame']}")
                else:
                    print(f"{k:>20}: {v}")

    return _batch(args.sessions, "info", one)


def cmd_export(args: argparse.Namespace) -> int:
    from sessions import Session
    from sessions import export as exp
    from sessions.openface import export_openface

    writers = {"csv": exp.export_csv, "json": exp.export_json, "eaf": exp.export_eaf, "openface": export_openface}
    suffix = {"openface": ".openface.csv"}.get(args.format, "." + args.format)

    def one(path: str, cancel: CancelToken) -> None:
        out = Path(args.out) if args.out and len(args.sessions) == 1 else Path(path).with_suffix(suffix)
        if args.out and len(args.sessions) > 1:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            out = Path(args.out) / (Path(path).stem + suffix)
        with Session.open(path) as s:
            writers[args.format](s, out)
        print(out)

    return _batch(args.sessions, "export", one)


def cmd_import_annotations(args: argparse.Namespace) -> int:
    from sessions import Session
    from sessions.elan import import_eaf

    def one(path: str, cancel: CancelToken) -> None:
        with Session.open(args.session, writable=True) as s:
            tiers, segments = import_eaf(s, path, author=args.author)
        print(f"{path}: {segments} segment(s) added, {tiers} new tier(s), into {args.session}")

    return _batch(args.files, "import-annotations", one)


def cmd_summary(args: argparse.Namespace) -> int:
    from sessions import Session
    from sessions.summary import session_paths, session_row, write_summary

    paths = [str(p) for p in session_paths(args.sessions)]
    if not paths:
        raise BadInput(f"no .vxs sessions in {' '.join(args.sessions)}")
    rows: list[dict] = []

    def one(path: str, cancel: CancelToken) -> None:
        with Session.open(path) as s:
            rows.append(session_row(s))

    code = _batch(paths, "summary", one)
    if rows:
        print(write_summary(rows, args.out))
        print(f"{len(rows)} session(s)", file=sys.stderr)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from engine.report import write_report

    def one(path: str, cancel: CancelToken) -> None:
        out = Path(args.out) if args.out and len(args.sessions) == 1 else Path(path).with_suffix(".report.html")
        if args.out and len(args.sessions) > 1:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            out = Path(args.out) / (Path(path).stem + ".report.html")
        with progress_bar(Path(path).name) as bar:
            print(write_report(path, out, model_dir=args.model, video=args.video, progress=bar, cancel=cancel))

    return _batch(args.sessions, "report", one)


def cmd_figure(args: argparse.Namespace) -> int:
    from engine import figures
    from engine.report import case_data, key_frame

    out = Path(args.out)
    if out.suffix.lower() not in figures.FORMATS:
        raise BadInput(f"{out}: figures are written as {', '.join(figures.FORMATS)}; choose one of those suffixes")
    width = args.width

    def one(path: str, cancel: CancelToken) -> None:
        if args.what in ("timeline", "stages"):
            case = case_data(path, model_dir=args.model, video=args.video, cancel=cancel, key_frames=False)
            if args.what == "timeline":
                fig = figures.timeline_figure(case.timeline, width or figures.DOUBLE_COLUMN_IN)
            else:
                if not case.stages:
                    raise BadInput(f"{path}: no stages (SpRAy did not run for this session)")
                fig = figures.stages_figure(case.stages, case.classes, width or figures.DOUBLE_COLUMN_IN,
                                            method=case.method)
        else:
            key, method = key_frame(path, args.frame, model_dir=args.model, video=args.video)
            fig = figures.frame_figure(key, method, width or figures.COLUMN_IN) if args.what == "frame" else \
                figures.gallery_figure(key, width or figures.COLUMN_IN)
        print(figures.save_figure(fig, out))

    return _batch([args.session], "figure", one)


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise BadInput(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def train_config(args: argparse.Namespace):
    """The TrainConfig a `vidxai train` command line asks for."""
    import dataclasses

    from engine.preprocess import PreprocessConfig
    from engine.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    over = dict(_setting(t) for t in args.set)
    unknown = sorted(set(over) - fields)
    if unknown:
        raise BadInput(f"unknown training setting(s) {unknown}; known: {', '.join(sorted(fields))}")
    base = {"arch": args.arch, "backbone": args.backbone, "label_setting": args.labels, "seed": args.seed,
            "device": args.device, "out_dir": args.out,
            "preprocess": PreprocessConfig(mode=args.preprocess).to_json()}
    if args.epochs is not None:
        base["epochs"] = args.epochs
    if args.batch_size is not None:
        base["batch_size"] = args.batch_size
    if getattr(args, "au_guidance", None) is not None:
        base["au_guidance"] = args.au_guidance
    if getattr(args, "window", None) is not None:
        base["sequence"] = {"window": args.window}
    try:
        return TrainConfig(**{**base, **over})
    except (TypeError, ValueError) as exc:
        raise BadInput(str(exc)) from exc


def cmd_train(args: argparse.Namespace) -> int:
    from engine.data import DataConfig
    from engine.train import train

    cfg = train_config(args)
    data = DataConfig(path=args.data, label_setting=args.labels,
                      max_per_class={"train": args.limit_per_class, "val": args.limit_per_class}
                      if args.limit_per_class else {})

    from engine import distributed

    if args.ddp and not distributed.launched():
        raise BadInput("--ddp trains in the processes torchrun starts: torchrun --nproc-per-node N "
                       "-m engine.train DATA --out DIR … (README: Beyond one workstation)")
    group = distributed.init(cfg.device) if distributed.launched() else None

    def one(path: str, cancel: CancelToken) -> None:
        with progress_bar(f"train {cfg.arch}") as bar:
            out = train(data, cfg, progress=bar, cancel=cancel, resume=args.resume)
        if group is None or group.main:
            print(out)

    try:
        return _batch([args.data], "train", one)
    finally:
        if group is not None:
            distributed.shutdown()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.evaluate import evaluate, write_report
    from engine.model_card import model_arch

    def one(data: str, cancel: CancelToken) -> None:
        out = Path(args.out) if args.out else evaluation_folder(data, args.model)
        if args.landmark_ranking or model_arch(args.model) == "landmark-lstm":
            if not args.landmark_ranking:
                raise BadInput(f"{args.model} is a landmark-sequence model: evaluate it with --landmark-ranking")
            from engine.landmark_eval import ladder_table, landmark_ranking

            with progress_bar("landmark ranking") as bar:
                res = landmark_ranking(args.model, data, out, progress=bar, cancel=cancel)
            print(ladder_table(res))
            if args.record:
                _record_ladder(args.model, data, res, out)
            print(f"report: {out}")
            return
        try:  # before minutes of scoring: the report must have somewhere to go
            out.mkdir(parents=True, exist_ok=True)
            if not os.access(out, os.W_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            raise BadInput(f"{out}: cannot write the evaluation report there ({exc.strerror or exc}); "
                           "choose a folder with --out") from exc
        with progress_bar("evaluate") as bar:
            result = evaluate(args.model, data, split=args.split, limit=args.limit, seed=args.seed,
                              device=args.device, progress=bar, cancel=cancel, cam_cos=args.cam_cos,
                              labels=args.labels)
        try:
            write_report(result, out)
        except OSError as exc:
            raise BadInput(f"{out}: cannot write the evaluation report ({exc.strerror or exc}); "
                           "choose a folder with --out") from exc
        print(f"used {result.n} samples from {result.items} of {result.items_total} items "
              f"(split {result.split}): {result.reason}")
        print(f"accuracy {result.accuracy:.4f} on {result.n} samples of {result.split}")
        for c, r in result.per_class_recall.items():
            print(f"  recall {c:<10} {'n/a' if r is None else f'{r:.3f}'}")
        if result.video_accuracy is not None:
            print(f"video accuracy (EWMA last state) {result.video_accuracy:.4f} on {result.videos} videos")
        if result.cam_cos is not None:
            print(_cam_cos_lines(result.cam_cos))
        if args.record:
            from engine.checkpoint import record_in_model_json

            name = f"{Path(data).name}:{result.split}:{args.limit or 'all'}:seed{args.seed}"
            summary = {k: v for k, v in result.to_json().items() if k not in ("predictions", "labels")}
            summary["command"] = "vidxai " + " ".join(sys.argv[1:]) if sys.argv else ""
            print(f"recorded as evaluations[{name!r}] in {record_in_model_json(args.model, 'evaluations', name, summary)}")
        if args.occlusion:
            from engine.checkpoint import read_checkpoint_json
            from engine.faithfulness import (
                methods_for,
                occlusion_evaluate,
                record_faithfulness,
                write_occlusion_report,
            )

            with progress_bar("occlusion") as bar:
                rep = occlusion_evaluate(args.model, data, split=result.split, limit=args.limit or 700,
                                         seed=args.seed, methods=methods_for(read_checkpoint_json(args.model)["spec"]["arch"]),
                                         device=args.device, progress=bar, cancel=cancel,
                                         labels=args.labels)
            write_occlusion_report(rep, out)
            print(rep.summary())
            if args.record:
                name = f"{Path(data).name}:{result.split}:{args.limit or 700}:seed{args.seed}"
                where = record_faithfulness(args.model, name, rep, "vidxai " + " ".join(sys.argv[1:]))
                print(f"recorded every method's Δ as faithfulness[{name!r}] in {where}")
        print(f"report: {out}")

    return _batch([args.data], "evaluate", one)


def _record_ladder(model: str, data: str, res: dict, out: Path) -> None:
    """``--landmark-ranking --record``: the ranking and the pruning ladder under
    ``metadata.evaluations["<data>:<split>:landmark-ladder"]`` of the ranked model (the retrained models'
    folders stay in the report folder and are not recorded)."""
    from engine.checkpoint import record_in_model_json

    rows = [{k: v for k, v in r.items() if k != "model"} for r in res["rows"]]
    ranking = json.loads((out / "ranking.json").read_text())
    summary = {**{k: v for k, v in res.items() if k not in ("model", "data", "rows")}, "rows": rows,
               "accuracy": rows[0]["accuracy"], "ranking_overall": ranking["overall"],
               "ranking_per_class": ranking["ranking"], "samples": ranking["samples"],
               "command": "vidxai " + " ".join(sys.argv[1:]) if sys.argv else ""}
    name = f"{Path(data).name}:{res['split']}:landmark-ladder"
    print(f"recorded as evaluations[{name!r}] in {record_in_model_json(model, 'evaluations', name, summary)}")


def _cam_cos_lines(cc: dict) -> str:
    """``vidxai evaluate --cam-cos``'s printout: the mean and one line per labelled class."""
    mean = "n/a" if cc["mean"] is None else f"{cc['mean']:.3f}"
    lines = [f"CAM-COS (Grad-CAM of the label vs its AU map) {mean} on {sum(cc['n'].values())} samples"]
    for c, v in cc["per_class"].items():
        lines.append(f"  cam-cos {c:<10} {'n/a (no AU map)' if v is None else f'{v:.3f}'} (n={cc['n'][c]})")
    return "\n".join(lines)


def evaluation_folder(data: str, model: str) -> Path:
    """Where an evaluation report goes by default: a folder beside the data, named for the data and the
    model (`<data>.evaluation/<model>`), never inside the model folder, which may be installed read-only."""
    d = Path(data).resolve()
    base = d.parent / f"{d.stem if d.is_file() else d.name}.evaluation"
    return base / (Path(model).resolve().name or "model")


def _cluster_arguments(s: argparse.ArgumentParser) -> None:
    """`analyze --engine ray`: the corpus on Ray (engine.cluster; README "Beyond one workstation")."""
    g = s.add_argument_group("corpus on Ray (pip install 'vidxai[cluster]')")
    g.add_argument("--engine", choices=("serial", "ray"), default="serial",
                   help="serial: one video after another in this process (default); ray: one task per video "
                        "on a Ray pool, a .txt argument being a list of videos, OUT/corpus.json the manifest")
    g.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                   help="Ray cluster to use (auto: the one `ray start` began here); default: start Ray locally")
    g.add_argument("--workers", type=int, default=None,
                   help="at most N worker processes, each holding the model (default: one per CPU)")
    g.add_argument("--gpus-per-task", type=float, default=0.0, metavar="F",
                   help="GPUs each worker asks Ray for, e.g. 0.25: four workers share a GPU (default 0)")
    g.add_argument("--retries", type=int, default=2,
                   help="times a video whose worker died or failed unexpectedly is tried again (default 2)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidxai", description="VidXAI: explainable emotion recognition for face videos. "
                                "Run `vidxai` or `vidxai open FILE` for the review window.")
    p.add_argument("--version", action="version", version="vidxai 0.1.0")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("ingest", help="decode videos and track faces into session files")
    s.add_argument("videos", nargs="+", help="video files")
    s.add_argument("--out", required=True, help="output folder for <video stem>.vxs")
    s.add_argument("--detect-every", type=int, default=5, help="run the face detector every N frames (default 5)")
    s.add_argument("--landmarks", default=None, metavar="FILE.csv",
                   help="take the faces from this OpenFace 2.x CSV of the video (each face_id a person) "
                        "instead of tracking them")
    s.add_argument("--person", type=int, default=None,
                   help="person to follow (ids from `vidxai info`; default: the one visible longest)")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("analyze", help="score every frame with a model, explain it, write session files")
    s.add_argument("videos", nargs="+", help="video files (.mp4, .mov, .flv, …); a session already ingested "
                   "or half analysed in --out is continued")
    s.add_argument("--model", default=None, help="model folder (default: the bundled model its recorded accuracy and "
                   "faithfulness pick; README, The bundled models)")
    s.add_argument("--out", required=True, help="output folder for <video stem>.vxs")
    s.add_argument("--ewma-tau", type=float, default=DEFAULT_TAU_S, metavar="SECONDS",
                   help="EWMA time constant in seconds; α = 1 − exp(−1/(fps·τ)), so videos of any frame rate "
                        f"smooth alike (default {DEFAULT_TAU_S}, chosen on the shared clips)")
    s.add_argument("--alpha", type=float, default=None,
                   help="EWMA smoothing factor in (0, 1] per frame, instead of --ewma-tau")
    s.add_argument("--explain", default="intrinsic",
                   help="comma-separated: intrinsic, lrp, gradcam, ig (default: intrinsic); a clip model "
                        "(TimeSformer): rollout (its intrinsic map), rollout-grad, chefer, gradcam")
    s.add_argument("--stride", type=int, default=4, metavar="FRAMES",
                   help="clip models: a T-frame window starts every FRAMES face frames, 1..T; a frame's score is "
                        "the mean of the windows containing it (default 4)")
    s.add_argument("--fusion", choices=("min", "mean", "max"), default="min",
                   help="clip models: how attention rollout fuses the heads (default min, as seed 004)")
    s.add_argument("--occlusion", action="store_true", help="also score the seven facial-part occlusions per frame")
    s.add_argument("--no-spray", action="store_true", help="skip SpRAy temporal prototypes")
    s.add_argument("--spray-temporal-weight", type=float, default=DEFAULT_TEMPORAL_WEIGHT, metavar="W",
                   help="weight of the temporal-neighbour links in SpRAy's affinity, 0 = SpRAy as published "
                        f"(default {DEFAULT_TEMPORAL_WEIGHT})")
    s.add_argument("--min-stage-s", type=float, default=DEFAULT_MIN_STAGE_S, metavar="SECONDS",
                   help="stages shorter than this are merged into the neighbour with the closest mean map for "
                        f"display; SpRAy's own stages stay in the session (default {DEFAULT_MIN_STAGE_S}, 0 = off)")
    s.add_argument("--batch-size", type=int, default=32, help="frames scored per model call (default 32)")
    s.add_argument("--detect-every", type=int, default=5, help="run the face detector every N frames, track in "
                   "between (default 5)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--person", type=int, default=None,
                   help="person to analyse (ids from `vidxai info`; default: as before, else the one visible longest)")
    _cluster_arguments(s)
    s.set_defaults(fn=cmd_analyze)

    s = sub.add_parser("info", help="print what a session file holds")
    s.add_argument("sessions", nargs="+", help="session files (.vxs)")
    s.add_argument("--json", action="store_true", help="print each session as a JSON object instead of aligned text")
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser("export", help="export a session as CSV (per frame), OpenFace-compatible CSV, JSON "
                       "(summary) or ELAN .eaf")
    s.add_argument("sessions", nargs="+", help="session files (.vxs)")
    s.add_argument("--format", choices=("csv", "openface", "json", "eaf"), default="csv",
                   help="csv: our per-frame columns; openface: OpenFace 2.x columns (frame, face_id, timestamp, "
                        "confidence, success, x_0..y_67) then ours; json: summary; eaf: ELAN tiers")
    s.add_argument("--out", default=None, help="output file (one session) or folder (several)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("import-annotations", help="add the tiers of ELAN .eaf files to a session's annotations "
                       "(times snapped to the nearest frames)")
    s.add_argument("session", help="session file (.vxs) to add the annotations to")
    s.add_argument("files", nargs="+", help="ELAN .eaf files")
    s.add_argument("--author", default="", help="author recorded on the imported segments "
                   "(default: each tier's ELAN annotator)")
    s.set_defaults(fn=cmd_import_annotations)

    s = sub.add_parser("summary", help="one table row per session (decision, class means and time shares, "
                       "stages, annotations, reviewer agreement, faces, model)")
    s.add_argument("sessions", nargs="+", metavar="DIR_OR_SESSION",
                   help="session files (.vxs) or folders searched for them")
    s.add_argument("--out", required=True, help="table to write: .csv, or .html for a web page")
    s.set_defaults(fn=cmd_summary)

    s = sub.add_parser("report", help="a case report of a session: one self-contained HTML file (images "
                       "embedded, no script, prints to PDF from a browser)")
    s.add_argument("sessions", nargs="+", metavar="SESSION", help="session files (.vxs), analysed")
    s.add_argument("--out", default=None, help="report file (.html) for one session, or folder for several "
                   "(default: <session>.report.html beside each session)")
    s.add_argument("--model", default=None, help="model folder, when the one the session recorded has moved "
                   "(for the model card and prototypes)")
    s.add_argument("--video", default=None, help="the video, when it is no longer where the session recorded it "
                   "(for the key frames)")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("figure", help="a publication figure of a session (PNG at 300 dpi, SVG or PDF, fonts "
                       "embedded, sized for a journal column)")
    s.add_argument("session", help="session file (.vxs), analysed")
    s.add_argument("--what", choices=("timeline", "frame", "stages", "gallery"), default="timeline",
                   help="timeline: class scores and EWMA with stages and annotations; frame: a frame with its "
                        "explanation map; stages: each stage's mean map; gallery: a frame's top prototypes")
    s.add_argument("--frame", type=int, default=None,
                   help="frame index for --what frame/gallery (default: where the decided class is most probable)")
    s.add_argument("--out", required=True, help="figure file: .png, .svg or .pdf")
    s.add_argument("--width", type=float, default=None,
                   help="figure width in inches (default 3.5, one column; 7.2 for timeline and stages)")
    s.add_argument("--model", default=None, help="model folder, when the one the session recorded has moved")
    s.add_argument("--video", default=None, help="the video, when it is no longer where the session recorded it")
    s.set_defaults(fn=cmd_figure)

    s = sub.add_parser("train", help="train a frame model on an image or video corpus")
    s.add_argument("data", help="data folder: FER2013-style class folders, RAVDESS or CREMA-D videos, or a JSON list")
    s.add_argument("--arch", choices=("protopnet", "patchsae", "cnn", "timesformer", "landmark-lstm"),
                   default="protopnet",
                   help="model kind: protopnet (prototype parts), patchsae (sparse autoencoder latents), cnn "
                        "(black-box baseline), timesformer (clip model: T-frame windows, --set "
                        "timesformer='{\"frames\": 8}' clip_stride=4) or landmark-lstm (one CNN+LSTM per emotion "
                        "on landmark sequences, --window P); default protopnet")
    s.add_argument("--backbone", choices=("small", "vgg16_bn", "resnet18"), default="small",
                   help="feature extractor (default small; vgg16_bn/resnet18 use ImageNet weights if cached)")
    s.add_argument("--labels", default=None,
                   help="label setting: fer2013, crema-d, ravdess-original, ravdess-v1, ravdess-v2, folders, json")
    s.add_argument("--preprocess", choices=("face", "original", "reassembled"), default="face",
                   help="model input: face (tight crop, default), original (whole frame) or reassembled "
                        "(eyes, nose, mouth in a 2×2 grid)")
    s.add_argument("--epochs", type=int, default=None, help="training epochs (default: the architecture's)")
    s.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the architecture's)")
    s.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and sampling (default 0)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last if it exists")
    s.add_argument("--limit-per-class", type=int, default=None, help="use at most N training (and validation) items per class")
    s.add_argument("--window", type=int, default=None, metavar="P",
                   help="landmark-lstm: frames per window (default 16; 1 on still images)")
    s.add_argument("--au-guidance", type=float, default=None, metavar="LAMBDA",
                   help="AU-guided training: add λ·(1 − cos(feature map, AU map of the label)) to the loss "
                        "(METHODS §7; CNN and ProtoPNet; about 4)")
    s.add_argument("--out", required=True, help="model folder to write")
    s.add_argument("--ddp", action="store_true",
                   help="data-parallel over the processes torchrun started (implied under torchrun): same "
                        "result as one process with the same --batch-size (the global batch) and seed")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training setting, e.g. --set last_layer_lr=1e-3")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="accuracy, per-class recall and confusion matrix of a model on labelled data")
    s.add_argument("data", help="labelled data: <class>/<image> folders (any image type Pillow reads: .jpg, .png, "
                   ".tif, …), FER2013-style train/test folders, RAVDESS or CREMA-D videos, or a JSON list")
    s.add_argument("--model", required=True, help="model folder (or a training run's folder) to evaluate")
    s.add_argument("--labels", default=None,
                   help="the data's label setting (default: the model's): e.g. crema-d to evaluate a FER2013 model "
                        "on CREMA-D videos, whose six classes are among its seven")
    s.add_argument("--split", default=None, choices=("all", "train", "val", "test"),
                   help="part of the data to use (default: the data's own test/ folder if it has one, else every "
                        "item; the output says which and why)")
    s.add_argument("--limit", type=int, default=None, help="evaluate on a fixed seeded subset of N items")
    s.add_argument("--seed", type=int, default=0, help="seed of the --limit subset and of a random split (default 0)")
    s.add_argument("--occlusion", action="store_true",
                   help="also MoRF/LeRF faithfulness curves and one confusion matrix per facial-part condition")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    s.add_argument("--cam-cos", action="store_true",
                   help="also CAM-COS per labelled class: cosine of the label's Grad-CAM and its AU map on the "
                        "same samples (METHODS §7; neutral has no map); --record stores it with the accuracy")
    s.add_argument("--landmark-ranking", action="store_true",
                   help="landmark-lstm models: rank the landmarks by IG, prune 68→34→17→8 with retraining, "
                        "write the accuracy table and the ranking figure (METHODS §8)")
    s.add_argument("--record", action="store_true",
                   help="also store the result in the model's model.json (metadata.evaluations)")
    s.add_argument("--out", default=None, help="report folder (default: <data>.evaluation/<model name> beside "
                   "the data, never the model folder)")
    s.set_defaults(fn=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # After a failed write (disk full) h5py's object destructors report the same error again as
    # "Exception ignored in ..." blocks; the one line that matters is ours, the rest goes to the debug log.
    sys.unraisablehook = lambda u: log.debug("ignored in %r: %s", u.object, u.exc_value)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        print("vidxai: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except _user_errors() as exc:
        print(f"vidxai: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        msg = file_error_message(" ".join(getattr(args, "videos", []) or []) or "vidxai", exc)
        if msg is None:
            raise
        print(f"vidxai: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
