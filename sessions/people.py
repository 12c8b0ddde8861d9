"""The people of a session: every tracked face, grouped into people by appearance (layout in SCHEMA.md).

`/faces` holds the face of ONE person, the one analysed (what scores, maps, exports and the timeline
refer to); `/people` holds every person's own track, their summary (frames visible, mean 128-d
descriptor, a thumbnail frame and box) and which person is in `/faces`. Choosing another person copies
that person's track into `/faces` (`settle`), after which the analysis is redone for them.

Sessions written before people existed have no `/people`: they read as one person, id 0, whose track is
`/faces`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sessions.store import N_LANDMARKS, Session, SessionError, _create_frames, _get_attrs, _set_attrs

GROUP = "people"
TRACK_FIELDS = ("found", "box", "landmarks", "confidence", "detected")
_BLOCK = 4096


@dataclass
class Person:
    id: int
    frames: int  # frames in which the person's face was tracked
    seconds: float  # frames / fps
    thumb_frame: int  # a frame showing the person (their best detection); -1 = none
    thumb_box: np.ndarray | None  # float32 (4,) face box in that frame
    descriptor: np.ndarray | None = None  # float32 (128,) mean descriptor; None without one (old sessions)

    def to_json(self) -> dict:
        return {"id": self.id, "frames": self.frames, "seconds": round(self.seconds, 2),
                "thumb_frame": self.thumb_frame,
                "thumb_box": None if self.thumb_box is None else [round(float(v), 1) for v in self.thumb_box]}


def _empty_track(n: int) -> dict[str, np.ndarray]:
    return {"found": np.zeros(n, bool), "box": np.full((n, 4), np.nan, np.float32),
            "landmarks": np.full((n, N_LANDMARKS, 2), np.nan, np.float32),
            "confidence": np.zeros(n, np.float32), "detected": np.zeros(n, bool)}


def empty_track(n: int) -> dict[str, np.ndarray]:
    """Arrays of one person's track over n frames, all "absent" (fill them, then `write_tracks`)."""
    return _empty_track(n)


def write_tracks(session: Session, start: int, tracks: dict[int, dict[str, np.ndarray]], followed: np.ndarray,
                 people: list[dict]) -> None:
    """Store frames [start, start+n) of every person's track, which person `/faces` holds in each frame
    (`followed`, -1 = nobody), and the people found so far (the tracker's `People.to_json()`).

    Write it with the same frames' `write_faces`, before the next commit."""
    followed = np.asarray(followed, np.int16)
    n = len(followed)
    with session._mutex:
        f = session._w()
        g = f.require_group(GROUP)
        T = session.frame_count
        if "followed" not in g:
            _create_frames(g, "followed", T, (), np.dtype(np.int16), fillvalue=-1)
        g["followed"][start:start + n] = followed
        for p, arrays in tracks.items():
            name = f"tracks/{int(p)}"
            if name not in g:
                tg = g.require_group(name)
                for field, (shape, dtype, fill) in {
                        "found": ((), np.bool_, False), "box": ((4,), np.float32, np.nan),
                        "landmarks": ((N_LANDMARKS, 2), np.float32, np.nan),
                        "confidence": ((), np.float32, 0.0), "detected": ((), np.bool_, False)}.items():
                    _create_frames(tg, field, T, shape, np.dtype(dtype), fillvalue=fill)
            tg = g[name]
            for field in TRACK_FIELDS:
                tg[field][start:start + n] = arrays[field]
        _set_attrs(g, {"people": people})


def has_people(session: Session) -> bool:
    with session._mutex:
        return GROUP in session._r()


def tracker_people(session: Session) -> list[dict]:
    """The people as the tracker left them (to resume tracking with the same ids); [] if none."""
    with session._mutex:
        f = session._r()
        return list(_get_attrs(f[GROUP]).get("people") or []) if GROUP in f else []


def analysed_person(session: Session) -> int | None:
    """The person whose face is in `/faces` (0 for sessions without people); None before one was chosen."""
    with session._mutex:
        f = session._r()
        if GROUP not in f:
            return 0
        v = _get_attrs(f[GROUP]).get("analysed")
        return None if v is None else int(v)


def tracks_before(session: Session, start: int) -> tuple[dict[int, int], dict[int, np.ndarray]]:
    """For resuming at frame `start`: frames each person was seen in before it, and the landmarks of
    every person tracked in frame start-1."""
    frames: dict[int, int] = {}
    last: dict[int, np.ndarray] = {}
    with session._mutex:
        f = session._r()
        if f"{GROUP}/tracks" not in f:
            return frames, last
        for name, tg in f[f"{GROUP}/tracks"].items():
            p = int(name)
            frames[p] = int(sum(int(np.count_nonzero(tg["found"][i:min(start, i + _BLOCK)]))
                                for i in range(0, start, _BLOCK)))
            if start > 0 and bool(tg["found"][start - 1]):
                last[p] = tg["landmarks"][start - 1].astype(np.float32)
    return frames, last


def people(session: Session) -> list[Person]:
    """Every person of the session, by id. Old sessions (no `/people`): one person, id 0, from `/faces`."""
    fps = session.fps or 1.0
    with session._mutex:
        f = session._r()
        if GROUP not in f:
            conf = f["faces/confidence"][()]
            found = f["faces/found"][()]
            n = int(found.sum())
            if n == 0:
                return [Person(0, 0, 0.0, -1, None)]
            k = int(np.argmax(np.where(found, conf, -1.0)))
            return [Person(0, n, n / fps, k, f["faces/box"][k].astype(np.float32))]
        return people_from(tracker_people(session), fps)


def default_person(found: list[Person]) -> int:
    """The person visible longest (lowest id on a tie)."""
    return min(found, key=lambda p: (-p.frames, p.id)).id if found else 0


def settle(session: Session, person: int | None = None) -> tuple[int, bool]:
    """Make `/faces` the track of `person` (None: the person chosen before, else the one visible longest).

    Recounts every person's frames from their tracks. Returns (person, changed): `changed` is True when a
    frame of `/faces` was rewritten, i.e. an analysis made before is no longer of this person. Needs the
    faces of every frame (`/faces` frames_done == T). Raises SessionError for a person that does not exist.
    """
    with session._mutex:
        T = session.frame_count
        if not has_people(session):
            if person not in (None, 0):
                raise SessionError(f"{session.path} has one person (id 0), not person {person}: "
                                   "use --person 0, or run `vidxai ingest` again to find everyone")
            return 0, False
        f = session._w()  # written below in any case (recounted frames); one handle throughout
        g = f[GROUP]
        state = tracker_people(session)
        for d in state:
            name = f"tracks/{int(d['id'])}/found"
            d["frames"] = int(sum(int(np.count_nonzero(g[name][i:i + _BLOCK])) for i in range(0, T, _BLOCK))) \
                if name in g else 0
        found = people_from(state, session.fps)
        ids = [p.id for p in found] or [0]  # nobody found: person 0, absent from every frame
        if person is None:
            before = _get_attrs(g).get("analysed")
            person = int(before) if before is not None and int(before) in ids else default_person(found)
        if person not in ids:
            raise SessionError(f"{session.path} has no person {person}: it has "
                               f"{', '.join(str(i) for i in ids) or 'nobody'} (see `vidxai info`)")
        changed = False
        has_track = f"tracks/{person}" in g
        for s in range(0, T, _BLOCK):
            sl = slice(s, min(T, s + _BLOCK))
            followed = g["followed"][sl] if "followed" in g else np.full(sl.stop - s, -1, np.int16)
            tr = {k: g[f"tracks/{person}/{k}"][sl] for k in TRACK_FIELDS} if has_track \
                else _empty_track(sl.stop - s)
            want = np.where(tr["found"], person, -1).astype(np.int16)
            if np.array_equal(followed, want):
                continue
            changed = True
            n_faces = f["faces/n_faces"][sl]
            session.write_faces(s, tr["found"], tr["box"], tr["landmarks"], tr["confidence"], n_faces,
                                tr["detected"])
            g["followed"][sl] = want
        _set_attrs(g, {"analysed": int(person), "people": state})
        return person, changed


def people_from(state: list[dict], fps: float) -> list[Person]:
    out = []
    for d in sorted(state, key=lambda d: int(d["id"])):
        box = d.get("thumb_box") or None
        desc = d.get("descriptor")
        frames = int(d.get("frames", 0))
        out.append(Person(int(d["id"]), frames, frames / (fps or 1.0), int(d.get("thumb_frame", -1)),
                          None if box is None else np.asarray(box, np.float32),
                          None if desc is None else np.asarray(desc, np.float32)))
    return out


def summary(session: Session) -> tuple[list[dict], int | None]:
    """(people as JSON-able dicts, the analysed person) for `Session.info()`."""
    return [p.to_json() for p in people(session)], analysed_person(session)
