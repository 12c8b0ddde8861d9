"""ELAN .eaf files made or edited in ELAN, brought back as VidXAI annotation tiers (export: sessions.export).

Each time-aligned tier of the file becomes a tier of the session (a tier of the same name gets the new
segments added; a segment already there is not added twice). Times are snapped to frames: a segment
starts at the frame whose presentation time is nearest its start, and ends (exclusive) at the frame
nearest its end, at least one frame long. Tiers VidXAI computed itself (ANNOTATOR "VidXAI": model
decision, SpRAy stages) are left out; they are recomputed on every export.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessions.export import GENERATED_BY, VIDXAI_PROPERTY
from sessions.store import Annotations, Segment, Session, Tier

log = logging.getLogger(__name__)

_VERDICT = re.compile(r"^\[(agree|disagree)\]\s*")


class EafError(ValueError):
    """A file that is not a usable ELAN document; the message names it and says what is wrong."""


@dataclass
class EafTier:
    name: str
    annotator: str
    segments: list[tuple[float, float, str]]  # (start s, end s, value)


def read_eaf(path: str | os.PathLike[str]) -> tuple[list[EafTier], bool]:
    """(the time-aligned tiers of an .eaf with their annotations in seconds, whether VidXAI wrote it).

    Symbolic tiers (annotations referring to a parent annotation) take their parent's times."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise EafError(f"{path} is not an ELAN file (not well-formed XML: {exc})") from None
    if root.tag != "ANNOTATION_DOCUMENT":
        raise EafError(f"{path} is not an ELAN file (its root is <{root.tag}>, not <ANNOTATION_DOCUMENT>)")
    units = root.find("HEADER")
    if units is not None and units.get("TIME_UNITS", "milliseconds") != "milliseconds":
        raise EafError(f"{path}: time units {units.get('TIME_UNITS')!r} are not supported (milliseconds only)")
    ours = any(p.get("NAME") == VIDXAI_PROPERTY for p in root.iterfind("HEADER/PROPERTY"))
    slots: dict[str, float | None] = {}
    for s in root.iterfind("TIME_ORDER/TIME_SLOT"):
        v = s.get("TIME_VALUE")
        slots[s.get("TIME_SLOT_ID", "")] = None if v is None else float(v) / 1000.0
    times: dict[str, tuple[float, float]] = {}  # annotation id -> (start, end) in seconds
    tiers: list[EafTier] = []
    pending: list[tuple[EafTier, list[tuple[str, str, str]]]] = []  # (own id, parent id, value)
    for t in root.iterfind("TIER"):
        tier = EafTier(t.get("TIER_ID", ""), t.get("ANNOTATOR", ""), [])
        for a in t.iterfind("ANNOTATION/ALIGNABLE_ANNOTATION"):
            t0, t1 = slots.get(a.get("TIME_SLOT_REF1", "")), slots.get(a.get("TIME_SLOT_REF2", ""))
            if t0 is None or t1 is None:
                log.warning("%s: annotation %s of tier %r has an unaligned time slot; skipped",
                            path, a.get("ANNOTATION_ID"), tier.name)
                continue
            times[a.get("ANNOTATION_ID", "")] = (t0, t1)
            tier.segments.append((t0, t1, a.findtext("ANNOTATION_VALUE") or ""))
        refs = [(a.get("ANNOTATION_ID", ""), a.get("ANNOTATION_REF", ""), a.findtext("ANNOTATION_VALUE") or "")
                for a in t.iterfind("ANNOTATION/REF_ANNOTATION")]
        tiers.append(tier)
        if refs:
            pending.append((tier, refs))
    for _ in range(len(pending)):  # symbolic tiers may refer to symbolic tiers: resolve level by level
        for _tier, refs in pending:
            for own, parent, _v in refs:
                if parent in times:
                    times[own] = times[parent]
    for tier, refs in pending:
        tier.segments = [(*times[own], v) for own, _p, v in refs if own in times]
    return tiers, ours


def snap(times_s: np.ndarray, t: float) -> int:
    """Index of the frame whose presentation time is nearest `t` (ties: the earlier frame)."""
    k = int(np.searchsorted(times_s, t))
    if k <= 0:
        return 0
    if k >= len(times_s):
        return len(times_s) - 1
    return k - 1 if t - times_s[k - 1] <= times_s[k] - t else k


def segments_from_eaf(path: str | os.PathLike[str], timestamps: np.ndarray, fps: float,
                      author: str = "") -> tuple[list[Tier], list[Segment]]:
    """The reviewer tiers of an .eaf as VidXAI tiers and frame-snapped segments [start, end)."""
    tiers, ours = read_eaf(path)
    ts = np.asarray(timestamps, np.float64)
    T = len(ts)
    if T == 0:
        raise EafError(f"cannot import {path} into a session without frames")
    end_of_video = float(ts[-1] + 1.0 / fps) if fps else float(ts[-1])
    grid = np.append(ts, end_of_video)  # a segment may end at the end of the last frame
    out_tiers, out_segs = [], []
    for tier in tiers:
        if tier.annotator == GENERATED_BY or not tier.segments:
            continue
        out_tiers.append(Tier(tier.name))
        for t0, t1, value in tier.segments:
            start = min(snap(grid, t0), T - 1)
            end = min(max(snap(grid, t1), start + 1), T)
            agreement, label, note = "", value, ""
            if m := _VERDICT.match(value):
                agreement, label = m.group(1), value[m.end():]
            if ours and ": " in label:
                label, note = label.split(": ", 1)
            out_segs.append(Segment(tier.name, start, end, label.strip(), note=note, author=author or tier.annotator,
                                    agreement=agreement))
    return out_tiers, out_segs


def import_eaf(session: Session, path: str | os.PathLike[str], author: str = "") -> tuple[int, int]:
    """Add the tiers of an ELAN file to a writable session's annotations and save them
    (`Session.save_annotations`). Returns (tiers, segments) added."""
    new_tiers, new_segs = segments_from_eaf(path, session.timestamps, session.fps, author)
    ann = session.annotations()
    names = {t.name for t in ann.tiers}
    tiers = list(ann.tiers) + [t for t in new_tiers if t.name not in names]

    def key(s: Segment) -> tuple:
        return (s.tier, s.start_frame, s.end_frame, s.label, s.note, s.agreement)

    have = {key(s) for s in ann.segments}
    added = [s for s in new_segs if key(s) not in have]
    session.save_annotations(Annotations(tiers, list(ann.segments) + added))
    log.info("imported %d segments in %d tiers from %s", len(added), len(new_tiers), path)
    return len(tiers) - len(ann.tiers), len(added)
