"""Corpus analysis on Ray: `vidxai analyze … --engine ray` (README "Beyond one workstation").

One task per video on a pool of worker actors, each holding the model loaded once. Every task is the
ordinary `engine.pipeline.analyze` writing `<out>/<video stem>.vxs`, so the sessions, their resume and
their one-line errors are the serial CLI's. The driver keeps `<out>/corpus.json` (docs/corpus.schema.json),
rewritten atomically as tasks finish. A task whose worker dies (SIGKILL, OOM) or that fails unexpectedly is
retried on a fresh worker up to `retries` times and then reported; a bad input (a corrupt file) is
reported at once with the serial CLI's message, since running it again gives the same answer.

Ray is imported only here, and only when this engine is asked for: `pip install vidxai[cluster]`.
Arguments travel to the workers as plain strings and dicts; results come back as JSON-able dicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sessions.atomic import atomic_write

MANIFEST = "corpus.json"
MANIFEST_VERSION = 1
LIST_SUFFIXES = (".txt", ".lst", ".list")


class ClusterError(Exception):
    """Ray is missing or cannot be reached: one line for the user."""


def expand_inputs(items: list[str]) -> list[str]:
    """Videos from the command line; a .txt/.lst/.list file is a list of videos, one a line (# comments,
    relative paths relative to the list)."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    v = Path(line)
                    out.append(str(v if v.is_absolute() else p.parent / v))
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("--engine ray needs Ray: pip install 'vidxai[cluster]'") from exc
    return ray


# --- the worker -----------------------------------------------------------------------------------------

class AnalyzeWorker:
    """A Ray actor: loads the model once, then analyses one video per call."""

    def __init__(self, model_dir: str, settings: dict[str, Any]) -> None:
        from engine.analyzer import FrameAnalyzer
        from engine.model_card import model_arch
        from engine.pipeline import AnalyzeSettings

        self.model_dir = model_dir
        self.settings = AnalyzeSettings(**{**settings, "explain": tuple(settings["explain"])})
        # A landmark-sequence model has no FrameAnalyzer: analyze routes it (and loads it) per video.
        self.analyzer = None if model_arch(model_dir) == "landmark-lstm" else \
            FrameAnalyzer(model_dir, device=self.settings.device)
        self.where = {"host": socket.gethostname(), "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()

    def analyze(self, video: str, out_path: str) -> dict[str, Any]:
        from engine.cli import _one_line, _user_errors
        from engine.jobs import file_error_message
        from engine.pipeline import analyze
        from sessions import Session

        t0 = time.time()
        rec: dict[str, Any] = {"worker": self.where, "started": t0}
        try:
            analyze(video, self.model_dir if self.analyzer is None else None, out_path, self.settings,
                    analyzer=self.analyzer)
        except _user_errors() as exc:
            return {**rec, "status": "failed", "error": _one_line(video, exc), "seconds": time.time() - t0}
        except OSError as exc:
            msg = file_error_message(video, exc)
            if msg is None:
                raise
            return {**rec, "status": "failed", "error": msg, "seconds": time.time() - t0}
        with Session.open(out_path) as s:
            info = s.info()
        seconds = time.time() - t0
        return {**rec, "status": "done", "decision": info.get("decision"), "frames": int(info["frame_count"]),
                "seconds": seconds, "frames_per_s": info["frame_count"] / seconds if seconds > 0 else None}


# --- the manifest ---------------------------------------------------------------------------------------

class Manifest:
    """`<out>/corpus.json`: one entry per video, rewritten atomically after every change."""

    def __init__(self, out_dir: Path, model_dir: str, settings: dict[str, Any]) -> None:
        self.path = out_dir / MANIFEST
        old: dict[str, Any] = {}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, ValueError):
                old = {}
        self.doc: dict[str, Any] = {"version": MANIFEST_VERSION, "model": model_dir, "settings": settings,
                                    "updated": time.time(), "videos": old.get("videos", {})
                                    if old.get("model") == model_dir else {}}

    @property
    def videos(self) -> dict[str, dict[str, Any]]:
        return self.doc["videos"]

    def set(self, key: str, **fields: Any) -> None:
        self.videos[key] = {**self.videos.get(key, {}), **fields}

    def write(self) -> None:
        self.doc["updated"] = time.time()
        with atomic_write(self.path) as fh:
            json.dump(self.doc, fh, indent=1, default=str)


def _finished(session: Path, entry: dict[str, Any]) -> str | None:
    """The decision of a session this corpus run already finished with the same model, else None."""
    if entry.get("status") not in ("done", "skipped") or not session.exists():
        return None
    from sessions import Session, SessionError

    try:
        with Session.open(session) as s:
            info = s.info()
    except (SessionError, OSError):
        return None
    return str(info.get("decision")) if info.get("analysed") and info.get("complete") else None


# --- the driver -----------------------------------------------------------------------------------------

def connect(address: str | None, workers: int | None, repo_root: Path) -> Any:
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        else:
            # A local Ray on this machine; workers import this very checkout (an editable or source tree).
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                         p for p in (str(repo_root), os.environ.get("PYTHONPATH", "")) if p)}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot start or reach Ray at {address or 'this machine'}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return ray


def pool_size(ray: Any, n_tasks: int, cpus: float, gpus: float, workers: int | None) -> int:
    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // max(cpus, 1e-9))
    if gpus > 0:
        n = min(n, int(res.get("GPU", 0) // gpus))
        if n == 0:
            raise ClusterError(f"--gpus-per-task {gpus}: the Ray cluster has {res.get('GPU', 0)} GPU(s)")
    if workers:
        n = min(n, workers)
    return max(1, min(n, n_tasks))


def run_corpus(videos: list[str], out_dir: str | Path, model_dir: str | Path, settings: Any,
               address: str | None = None, workers: int | None = None, gpus_per_task: float = 0.0,
               cpus_per_task: float = 1.0, retries: int = 2,
               progress: Callable[[int, int, str], None] | None = None,
               on_result: Callable[[str, dict[str, Any]], None] | None = None,
               on_start: Callable[[list[Any]], None] | None = None) -> dict[str, Any]:
    """Analyse `videos` into `out_dir` on Ray; returns the manifest document.

    `on_result(video, entry)` is called as each video ends; `on_start(actors)` once the pool is up (tests
    use it to find the worker processes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = str(Path(model_dir).resolve())
    sdict = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
    manifest = Manifest(out, model_dir, sdict)
    keys = {v: os.path.abspath(v) for v in videos}  # not resolve(): links to one file are separate videos
    stems: dict[str, str] = {}
    for v in videos:  # two workers must never write one session at once
        other = stems.setdefault(Path(v).stem, v)
        if other != v:
            raise ClusterError(f"{other} and {v} would both be written to {out / (Path(v).stem + '.vxs')}: "
                               "rename one, or analyse them into different --out folders")
    todo: list[str] = []
    for v in videos:
        session = out / (Path(v).stem + ".vxs")
        entry = manifest.videos.get(keys[v], {})
        decision = _finished(session, entry)
        if decision is not None:
            manifest.set(keys[v], video=v, session=str(session), status="skipped", decision=decision, error=None)
        else:
            manifest.set(keys[v], video=v, session=str(session), status="pending", attempts=0, error=None)
            todo.append(v)
    manifest.write()
    total, finished = len(videos), len(videos) - len(todo)
    report = progress or (lambda d, t, m: None)
    report(finished, total, f"{finished} already analysed" if finished else "starting Ray")
    if not todo:
        return manifest.doc

    ray = connect(address, workers, Path(__file__).resolve().parents[1])
    Actor = ray.remote(AnalyzeWorker).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task or 0,
                                              max_restarts=0)
    n = pool_size(ray, len(todo), cpus_per_task, gpus_per_task, workers)
    actors = [Actor.remote(model_dir, sdict) for _ in range(n)]
    if on_start is not None:
        on_start(actors)
    queue = list(todo)
    idle = list(actors)
    running: dict[Any, tuple[Any, str]] = {}
    failed = 0

    def submit() -> None:
        while queue and idle:
            v, a = queue.pop(0), idle.pop(0)
            attempts = manifest.videos[keys[v]].get("attempts", 0) + 1
            manifest.set(keys[v], status="running", attempts=attempts)
            running[a.analyze.remote(v, str(out / (Path(v).stem + ".vxs")))] = (a, v)

    submit()
    manifest.write()
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        ref = ready[0]
        actor, v = running.pop(ref)
        entry = manifest.videos[keys[v]]
        try:
            res = ray.get(ref)
            idle.append(actor)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.OutOfMemoryError) as exc:
            res = {"status": "lost", "error": f"{v}: worker lost ({type(exc).__name__})"}
            idle.append(Actor.remote(model_dir, sdict))  # a fresh worker in place of the dead one
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            res = {"status": "error", "error": f"{v}: {type(cause).__name__}: "
                                               f"{str(cause).splitlines()[0] if str(cause) else ''}"}
            idle.append(actor)
        status = res.pop("status")
        if status in ("lost", "error") and entry.get("attempts", 0) <= retries:
            manifest.set(keys[v], status="retrying", error=res["error"])
            queue.append(v)
        else:
            if status != "done":
                status, failed = "failed", failed + 1
            manifest.set(keys[v], status=status, decision=res.get("decision"), error=res.get("error"),
                         seconds=res.get("seconds"), frames=res.get("frames"),
                         frames_per_s=res.get("frames_per_s"), worker=res.get("worker"), started=res.get("started"))
            finished += 1
            if on_result is not None:
                on_result(v, manifest.videos[keys[v]])
            report(finished, total, f"{failed} failed" if failed else Path(v).name)
        submit()
        manifest.write()
    for a in actors + idle:
        with contextlib.suppress(Exception):  # one killed earlier is already gone
            ray.kill(a)
    return manifest.doc


def cmd_analyze_ray(args: Any, settings: Any, model: Path) -> int:
    """`vidxai analyze --engine ray`: the exit codes of the serial batch (2 if any video failed)."""
    from engine.cli import EXIT_BAD_INPUT, EXIT_OK, progress_bar

    videos = expand_inputs(args.videos)
    if not videos:
        raise ClusterError("no videos to analyse")

    def done(video: str, entry: dict[str, Any]) -> None:
        if entry["status"] == "done":
            print(f"{entry['session']}\t{entry.get('decision')}")
        else:
            print(f"vidxai: {entry.get('error')}", file=sys.stderr)

    # A ClusterError is one line for the user (engine.cli lists it among the input errors).
    with progress_bar("corpus") as bar:
        doc = run_corpus(videos, args.out, model, settings, address=args.address, workers=args.workers,
                         gpus_per_task=args.gpus_per_task, retries=args.retries, progress=bar,
                         on_result=done)
    bad = [e["video"] for e in doc["videos"].values() if e["status"] == "failed" and e["video"] in videos]
    print(f"{Path(args.out) / MANIFEST}", file=sys.stderr)
    if bad:
        print(f"vidxai: {len(bad)} of {len(videos)} failed: {', '.join(bad)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
