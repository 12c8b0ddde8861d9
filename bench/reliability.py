"""Crash safety, measured: SIGKILL `vidxai analyze` and the GUI's annotation autosave at random moments.

    .venv/bin/python bench/reliability.py [--kills 20] [--gui-kills 20] [--seed 0] [--repeat 8]

1. A clip long enough to be killed mid-way: the CREMA-D happy clip (shared data) concatenated ×8
   (made here with PyAV, in a temp folder). One uninterrupted `vidxai analyze` gives the reference
   session and the run time.
2. `--kills` times: start `vidxai analyze` into a fresh folder, SIGKILL it at a seeded random moment:
   one kill in four between its start and the reference run time, the others between the moment the
   reference run's session appeared and its end (so kills land in start-up, in the session's creation,
   in streaming, in SpRAy and the final commit). Then:
   - every .vxs left opens, and `vidxai info --json` reads it (else: corrupt);
   - what it says is true: "complete" only if every frame equals the reference's; "incomplete" only if
     something is missing (frames not done or not finished) (else: corrupt);
   - a second `vidxai analyze` resumes it to the reference's scores: faces, valid frames and the
     decision equal, probabilities and EWMA equal to float16 tolerance (else: resume differs);
   - nothing is left beside it but the session (no working copy, lock or temp file).
3. `--gui-kills` times: a driver (this file with --gui-driver) opens a copy of the reference session in
   the real main window (offscreen), adds annotations in a loop and prints "saved N" each time the
   window reports the autosave of annotation N done; SIGKILL it at a seeded random moment. Then the
   session must open, `vidxai info` must read it, and every annotation printed as saved must be there.

Prints per trial, then `kills survived / sessions corrupt / annotations lost` (and resumes that differ).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data" / "videos" / "crema-d"
CLIP = SHARED / "1001_DFA_HAP_XX.flv"


def vidxai_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "vidxai_gui.launcher", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "QT_QPA_PLATFORM": "offscreen"}


def make_clip(path: Path, repeat: int) -> int:
    import av

    with av.open(str(CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "18"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        k = 0
        for _ in range(repeat):
            for img in frames:
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = k
                k += 1
                for p in s.encode(f):
                    out.mux(p)
        for p in s.encode():
            out.mux(p)
    return k


def analyze(video: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(vidxai_cmd("analyze", video, "--out", out, "--device", "cpu"), cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def info(session: Path) -> dict | None:
    r = subprocess.run(vidxai_cmd("info", "--json", session), cwd=REPO, env=env(), capture_output=True, text=True,
                       check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def read(session: Path) -> dict:
    from sessions import Session

    with Session.open(session) as s:
        a = s.analysis_info() or {}
        f = s.faces()
        d = {"found": f.found, "faces_done": f.frames_done, "frames_done": a.get("frames_done", 0),
             "complete": a.get("complete", False), "decision": a.get("decision", ""),
             "stages": [(st.start, st.end, st.descriptor) for st in s.temporal_prototype()],
             "annotations": [seg.label for seg in s.annotations().segments]}
        if a:
            d.update(valid=s.read("valid"), probs=s.read("probs"), ewma=s.read("ewma"))
        return d


def same_result(a: dict, ref: dict) -> str:
    """'' when `a` equals the reference analysis (float16 tolerance on scores), else what differs."""
    if "valid" not in a:
        return "no analysis"
    if not np.array_equal(a["found"], ref["found"]):
        return "faces differ"
    if not np.array_equal(a["valid"], ref["valid"]):
        return "valid frames differ"
    for k in ("probs", "ewma"):
        if not np.allclose(a[k], ref[k], atol=1e-3, rtol=0, equal_nan=True):
            return f"{k} differ (max {np.nanmax(np.abs(a[k] - ref[k])):.2e})"
    if a["decision"] != ref["decision"]:
        return f"decision {a['decision']!r} != {ref['decision']!r}"
    if a["stages"] != ref["stages"]:
        return "stages differ"
    return ""


# ------------------------------------------------------------------------------------------ analyze kills


def analyze_trial(i: int, video: Path, root: Path, at: float, ref: dict) -> dict:
    out = root / f"kill{i:02d}"
    proc = analyze(video, out)
    time.sleep(at)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stderr:
        proc.stderr.close()
    res = {"trial": i, "kill_at_s": round(at, 2), "finished_first": finished, "corrupt": "", "resume": ""}
    session = out / f"{video.stem}.vxs"
    state = "no session yet"
    if session.exists():
        d_info = info(session)
        try:
            d = read(session)
        except Exception as exc:  # noqa: BLE001 - any failure to read is what this bench counts
            d = None
            res["corrupt"] = f"does not open: {exc}"
        if d_info is None and not res["corrupt"]:
            res["corrupt"] = "vidxai info refuses it"
        if d is not None and d_info is not None:
            if d_info["complete"]:
                why = same_result(d, ref)
                if why:
                    res["corrupt"] = f"says complete but {why}"
                state = "complete"
            else:
                if d["frames_done"] >= ref["frames_done"] and d["decision"]:
                    res["corrupt"] = "says incomplete but is finished"  # every frame and the decision are there
                state = f"incomplete ({d['faces_done']} faces, {d['frames_done']} scored)"
    res["state"] = state
    # resume
    proc = analyze(video, out)
    _, err = proc.communicate()
    if proc.returncode != 0:
        res["resume"] = f"rerun exit {proc.returncode}: {err.strip().splitlines()[-1:] if err else ''}"
    else:
        res["resume"] = same_result(read(session), ref)
        left = sorted(p.name for p in out.iterdir())
        if left != [session.name]:
            res["resume"] = (res["resume"] + f"; left beside it: {left}").strip("; ")
    return res


# ------------------------------------------------------------------------------------------ GUI kills

DRIVER_READY = "ready"


def gui_driver(session: Path, settings_dir: Path) -> None:
    """Open `session` in the real window, add annotations one after another, print each once saved."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from vidxai_gui.app import SETTINGS_ENV, app_settings

    os.environ[SETTINGS_ENV] = str(settings_dir)
    app = QApplication.instance() or QApplication([])
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(app_settings())
    w.resize(1280, 800)
    w.show()
    w.open_path(session)
    state = {"n": 0, "ready": False}

    def add() -> None:
        n = state["n"]
        start = (n * 7) % max(w.data.frame_count - 10, 1)
        w.add_annotation_segment(f"note {n}", start, start + 5, tier="reviewer", note=f"autosave {n}")

    def on_saved(_path: str) -> None:
        # The next note is added only after this signal, so the write that just finished held note n.
        print(f"saved {state['n']}", flush=True)
        state["n"] += 1
        QTimer.singleShot(0, add)

    def poll() -> None:
        if not state["ready"] and w.data is not None and w.player.info is not None \
                and w.annotation_panel.isEnabled():
            state["ready"] = True
            print(DRIVER_READY, flush=True)
            w.autosaver.saved.connect(on_saved)
            add()
        elif not state["ready"]:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, poll)
    app.exec()


def gui_trial(i: int, ref_session: Path, video: Path, root: Path, at: float) -> dict:
    folder = root / f"gui{i:02d}"
    folder.mkdir()
    session = Path(shutil.copy(ref_session, folder / ref_session.name))
    os.link(video, folder / video.name) if video.stat().st_dev == folder.stat().st_dev else \
        shutil.copy(video, folder / video.name)
    proc = subprocess.Popen([sys.executable, __file__, "--gui-driver", str(session), str(folder / "settings")],
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    saved: list[int] = []
    res = {"trial": i, "kill_at_s": round(at, 2), "corrupt": "", "lost": 0}
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != DRIVER_READY:
        proc.kill()
        proc.wait()
        res["corrupt"] = f"driver did not start: {line.strip()!r}"
        return res
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    time.sleep(at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)  # what it printed before it died counts as shown
    proc.stdout.close()
    with_rest = "".join(lines)
    saved = [int(t.split()[1]) for t in with_rest.splitlines() if t.startswith("saved ")]
    res["saved"] = len(saved)
    if info(session) is None:
        res["corrupt"] = "vidxai info refuses it"
        return res
    try:
        got = read(session)["annotations"]
    except Exception as exc:  # noqa: BLE001
        res["corrupt"] = f"does not open: {exc}"
        return res
    want = [f"note {n}" for n in saved]
    res["lost"] = len([x for x in want if x not in got])
    res["in_file"] = len(got)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills of `vidxai analyze`")
    ap.add_argument("--gui-kills", type=int, default=20, help="kills of the GUI during annotation autosave")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=8, help="the CREMA-D clip concatenated this many times")
    ap.add_argument("--gui-max-s", type=float, default=4.0, help="latest GUI kill, s after it is ready")
    ap.add_argument("--gui-driver", nargs=2, metavar=("SESSION", "SETTINGS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gui_driver:
        gui_driver(Path(args.gui_driver[0]), Path(args.gui_driver[1]))
        return 0
    if not CLIP.exists():
        print(f"shared data not found: {CLIP}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="vidxai-reliability-") as tmp:
        root = Path(tmp)
        video = root / "hap_x8.mp4"
        n = make_clip(video, args.repeat)
        t0 = time.monotonic()
        p = analyze(video, root / "reference")
        t_session = None  # when the session file appears: start-up (imports, model) is over
        while p.poll() is None:
            if t_session is None and (root / "reference" / f"{video.stem}.vxs").exists():
                t_session = time.monotonic() - t0
            time.sleep(0.02)
        err = p.stderr.read() if p.stderr else ""
        t_ref = time.monotonic() - t0
        t_session = t_session or 0.2
        if p.returncode != 0:
            print(f"reference run failed: {err}", file=sys.stderr)
            return 1
        ref_session = root / "reference" / f"{video.stem}.vxs"
        ref = read(ref_session)
        print(f"clip: {n} frames; uninterrupted analysis {t_ref:.1f} s (process start included, the session "
              f"appears at {t_session:.1f} s); decision {ref['decision']}", flush=True)
        survived = corrupt = differ = lost = 0
        for i in range(args.kills):
            # One kill in four anywhere in the run (start-up included), the others once the session exists.
            r = analyze_trial(i, video, root, rng.uniform(0.2 if i % 4 == 0 else t_session, t_ref), ref)
            ok = not r["corrupt"]
            survived += ok
            corrupt += not ok
            differ += bool(r["resume"])
            print(f"analyze kill {i:2d} at {r['kill_at_s']:5.2f} s: {r['state']:<34} "
                  f"{'CORRUPT ' + r['corrupt'] if r['corrupt'] else 'ok'}; resume "
                  f"{'DIFFERS ' + r['resume'] if r['resume'] else 'identical'}", flush=True)
        for i in range(args.gui_kills):
            r = gui_trial(i, ref_session, video, root, rng.uniform(0.0, args.gui_max_s))
            ok = not r["corrupt"]
            survived += ok
            corrupt += not ok
            lost += r["lost"]
            print(f"GUI kill {i:2d} at {r['kill_at_s']:5.2f} s: {r.get('saved', 0):3d} shown saved, "
                  f"{r.get('in_file', 0):3d} in the file, {r['lost']} lost"
                  f"{'; CORRUPT ' + r['corrupt'] if r['corrupt'] else ''}", flush=True)
        total = args.kills + args.gui_kills
        print(f"kills survived / sessions corrupt / annotations lost: {survived}/{total} / {corrupt} / {lost}"
              f"   (resumes differing from the uninterrupted run: {differ} of {args.kills})")
        return 0 if corrupt == 0 and lost == 0 and differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
