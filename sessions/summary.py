"""The corpus table: one row per session, for a statistician's spreadsheet (`vidxai summary`).

Columns: session, video, frames, duration_s, person, model, model_arch, model_backbone, model_sha256,
model_path (the model's identity as the session recorded it), alpha, decision, complete, then per class
`mean_prob_<class>` (mean probability over scored frames) and `share_<class>` (fraction of scored frames
whose top class it is), stages (SpRAy temporal-prototype stages), annotations,
agree, disagree, agreement_rate (agree / (agree + disagree); empty without verdicts), face_found_fraction.
Classes are the union over the sessions, in order of first appearance; a class a session's model lacks
is an empty cell. Written as CSV, or as a self-contained HTML table (every cell escaped).
"""

from __future__ import annotations

import csv
import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from string import Template

import numpy as np

from sessions.atomic import atomic_write
from sessions.store import SUFFIX, WORK_SUFFIX, Session

BASE_COLUMNS = ["session", "video", "frames", "duration_s", "person", "model", "model_arch", "model_backbone",
                "model_sha256", "model_path", "alpha", "decision", "complete"]
TAIL_COLUMNS = ["stages", "annotations", "agree", "disagree", "agreement_rate", "face_found_fraction"]


def session_paths(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Sessions named, and every `.vxs` under folders named (sorted), in the order given."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*" + SUFFIX) if q.is_file() and not q.name.endswith(WORK_SUFFIX))
        else:
            out.append(p)
    return out


def session_row(session: Session) -> dict[str, object]:
    """The corpus-table row of one session (values as numbers or text; None = no value)."""
    from sessions.export import _blocks
    from sessions.people import analysed_person

    info = session.analysis_info()
    classes: list[str] = info["classes"] if info else []
    total = np.zeros(len(classes))
    top = np.zeros(len(classes), np.int64)
    scored = 0
    if info:
        for sl in _blocks(session.frame_count):
            probs, valid = session.read("probs", sl), session.read("valid", sl)
            ok = valid & np.all(np.isfinite(probs), axis=1)
            total += probs[ok].sum(axis=0)
            np.add.at(top, np.argmax(probs[ok], axis=1), 1)
            scored += int(ok.sum())
    segs = session.annotations().segments
    agree = sum(s.agreement == "agree" for s in segs)
    disagree = sum(s.agreement == "disagree" for s in segs)
    model = (info or {}).get("model") or {}
    T = session.frame_count
    row: dict[str, object] = {
        "session": str(session.path), "video": str(session.video.get("path", "")), "frames": T,
        "duration_s": round(float(session.video.get("duration", 0.0)), 3), "person": analysed_person(session),
        "model": info["model_name"] if info else None, "model_arch": model.get("arch"),
        "model_backbone": model.get("backbone"), "model_sha256": info["model_sha256"] if info else None,
        "model_path": model.get("path"), "alpha": info["alpha"] if info else None,
        "decision": info["decision"] if info else "", "complete": bool(info and info["complete"]),
    }
    for i, c in enumerate(classes):
        row[f"mean_prob_{c}"] = float(total[i] / scored) if scored else None
        row[f"share_{c}"] = float(top[i] / scored) if scored else None
    row.update({"stages": len(session.display_stages()), "annotations": len(segs), "agree": agree,
                "disagree": disagree, "agreement_rate": agree / (agree + disagree) if agree + disagree else None,
                "face_found_fraction": session.face_found_frames() / T if T else None})
    return row


def columns(rows: Sequence[dict[str, object]]) -> list[str]:
    classes: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("mean_prob_") and k[10:] not in classes:
                classes.append(k[10:])
    return (BASE_COLUMNS + [f"mean_prob_{c}" for c in classes] + [f"share_{c}" for c in classes]
            + TAIL_COLUMNS)


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if np.isfinite(v) else ""
    return str(v)


_HTML = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 2px 6px; white-space: nowrap; }
th { background: #eee; position: sticky; top: 0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
</style></head>
<body><h1>$title</h1>
<p>$count sessions. Written by VidXAI (`vidxai summary`).</p>
<table>
<thead><tr>$head</tr></thead>
<tbody>
$body
</tbody></table></body></html>
""")


def write_summary(rows: Sequence[dict[str, object]], path: str | os.PathLike[str]) -> Path:
    """The table as CSV, or as HTML when `path` ends in .html/.htm; written atomically."""
    path = Path(path)
    cols = columns(rows)
    if path.suffix.lower() in (".html", ".htm"):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "\n".join(
            "<tr>" + "".join(f'<td{" class=n" if isinstance(r.get(c), (int, float)) else ""}>'
                             f"{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
        text = _HTML.substitute(title="VidXAI corpus summary", count=len(rows), head=head, body=body)
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return path
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
    return path
