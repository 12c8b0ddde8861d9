"""Per-frame scores and relevance of a clip model over a video: sliding T-frame windows.

The windows run over the frames that have a face (preprocessed crops, "rows"), T consecutive rows each,
one starting every ``stride`` rows, the last flush with the end (fewer than T rows: one shorter window).
**Per-frame rule: a frame's scores are the mean of the logits/probabilities of every window that
contains it** (with stride < T each frame is in T/stride windows, so its score is steadier than one
window's); its space map and temporal relevance are likewise the mean of its maps and of its share of
each containing window's relevance (engine.explain.spacetime). Frames without a face get NaN, as frame
models give them.

:class:`WindowStream` computes this streaming: crops are pushed one by one, a window runs as soon as its
rows are in, and a row's result is final (``pop``) once no later window can contain it, so memory holds
about T + stride crops whatever the video's length (the analysis pipeline, engine.clip_analysis).
:func:`score_windows` is the same on crops already in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.explain.hooks import model_device
from engine.explain.spacetime import relevance
from engine.jobs import CancelToken
from engine.models import TimeSformer, to_input


def window_starts(n: int, frames: int, stride: int) -> list[int]:
    """Start rows of the windows over ``n`` face frames (the last flush with the end)."""
    if n <= frames:
        return [0] if n else []
    starts = list(range(0, n - frames + 1, stride))
    if starts[-1] != n - frames:
        starts.append(n - frames)
    return starts


def resume_row(rows_done: int, frames: int, stride: int) -> int:
    """The first window start a run must redo so that rows from ``rows_done`` on get every window that
    contains them: the first multiple of ``stride`` after ``rows_done - frames``."""
    lo = max(0, rows_done - frames + 1)
    return -(-lo // stride) * stride


@dataclass
class RowResult:
    """One row's (face frame's) mean over the windows containing it."""

    logits: np.ndarray                                        # C
    probs: np.ndarray                                         # C
    maps: dict[str, np.ndarray] = field(default_factory=dict)        # method → h×w (token grid)
    temporal: dict[str, float] = field(default_factory=dict)         # method → the frame's mean share
    span: tuple[int, int] = (0, 0)    # keys of the first row of its first window and last row of its last


class _Sums:
    __slots__ = ("first", "last", "logits", "maps", "n", "probs", "temporal")

    def __init__(self, c: int, g: int, methods: tuple[str, ...]) -> None:
        self.n = 0
        self.logits, self.probs = np.zeros(c), np.zeros(c)
        self.maps = {m: np.zeros((g, g)) for m in methods}
        self.temporal = dict.fromkeys(methods, 0.0)
        self.first, self.last = None, None


def run_windows(model: TimeSformer, x: torch.Tensor, methods: tuple[str, ...] = (), fusion: str = "min"
                ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Logits W×C, probabilities, maps {method: W×T×h×w} and temporal relevance {method: W×T} of W clips
    ``x`` (W×T×C×S×S). With methods, the logits are those of the first method's (recording) pass."""
    maps, temporal = {}, {}
    logits = None
    for m in methods:
        rel = relevance(model, x, m, fusion=fusion)
        maps[m], temporal[m] = rel.maps.cpu().numpy(), rel.temporal.cpu().numpy()
        if logits is None:
            logits = rel.logits.float()
    if logits is None:
        with torch.inference_mode():
            logits = model(x).float()
    return logits.cpu().numpy(), torch.softmax(logits, 1).cpu().numpy(), maps, temporal


class WindowStream:
    """Sliding windows over rows pushed in order (see the module docstring). ``first_row`` (a multiple of
    ``stride``) resumes a run: rows before it were final already and are not pushed again."""

    def __init__(self, model: TimeSformer, stride: int, methods: tuple[str, ...] = (), fusion: str = "min",
                 batch: int = 4, first_row: int = 0, cancel: CancelToken | None = None) -> None:
        t = model.frames
        if not 1 <= stride <= t:
            raise ValueError(f"window stride must be 1..{t} (the model's T) so every frame is in a window, "
                             f"got {stride}")
        if first_row % stride:
            raise ValueError(f"a resumed run starts at a window start (a multiple of {stride}), not row {first_row}")
        self.model, self.stride, self.methods, self.fusion = model, stride, tuple(methods), fusion
        self.batch, self.cancel = max(1, batch), cancel
        self.frames, self.c, self.grid = t, model.spec.n_classes, model.grid
        self.next_row = self.next_start = first_row
        self.crops: dict[int, np.ndarray] = {}
        self.keys: dict[int, int] = {}
        self.sums: dict[int, _Sums] = {}
        self.windows = 0
        self._last = first_row - 1    # the last window start run
        self.finished = False
        self._dev = model_device(model)

    def push(self, crop: np.ndarray, key: int | None = None) -> int:
        """Add the next row's crop (S×S×C uint8); ``key`` (e.g. its frame index) names it in spans.
        Runs every window that became complete; returns the row's index."""
        r = self.next_row
        self.crops[r] = crop
        self.keys[r] = r if key is None else key
        self.sums[r] = _Sums(self.c, self.grid, self.methods)
        self.next_row += 1
        if len(self._ready()) >= self.batch:
            self._run(self._ready())
        return r

    def _ready(self) -> list[int]:
        return list(range(self.next_start, self.next_row - self.frames + 1, self.stride))

    @property
    def final_below(self) -> int:
        """Rows below this get no further window (neither a regular one nor the last, flush one)."""
        if self.finished:
            return self.next_row
        return min(self.next_start, self.next_row - self.frames)

    def flush_ready(self) -> None:
        """Run the complete windows still waiting for a full batch."""
        if self._ready():
            self._run(self._ready())

    def finish(self) -> None:
        """No more rows: run the windows left, the last one flush with the end."""
        self.flush_ready()
        n = self.next_row
        rest = [s for s in window_starts(n, self.frames, self.stride) if s > self._last]
        if rest:
            self._run(rest)
        self.finished = True

    def pop(self, row: int) -> RowResult:
        """The final result of ``row`` (call once ``row < final_below``); frees it."""
        if row >= self.final_below:
            raise ValueError(f"row {row} may still be in a window (final below {self.final_below})")
        s = self.sums.pop(row)
        if s.n == 0:
            raise ValueError(f"row {row} is in no window")
        return RowResult(s.logits / s.n, s.probs / s.n, {m: v / s.n for m, v in s.maps.items()},
                         {m: v / s.n for m, v in s.temporal.items()}, (s.first, s.last))

    def _run(self, starts: list[int]) -> None:
        length = min(self.frames, self.next_row)
        for b in range(0, len(starts), self.batch):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            group = starts[b:b + self.batch]
            rows = np.stack([np.arange(s, s + length) for s in group])          # W×T
            x = to_input(np.stack([self.crops[int(r)] for r in rows.ravel()]), self.model.spec)
            x = x.reshape(len(group), length, *x.shape[1:]).to(self._dev)
            logits, probs, maps, temp = run_windows(self.model, x, self.methods, self.fusion)
            for w, r in enumerate(rows):
                first, last = self.keys[int(r[0])], self.keys[int(r[-1])]
                for t, row in enumerate(r):
                    s = self.sums[int(row)]
                    s.n += 1
                    s.logits += logits[w]
                    s.probs += probs[w]
                    for m in self.methods:
                        s.maps[m] += maps[m][w, t]
                        s.temporal[m] += float(temp[m][w, t])
                    s.first = first if s.first is None else min(s.first, first)
                    s.last = last if s.last is None else max(s.last, last)
            self.windows += len(group)
        self._last = max(self._last, starts[-1])
        self.next_start = max(self.next_start, starts[-1] + self.stride)
        # Crops before the next window start are read by no later window (the flush one starts at n - T,
        # at or after it, unless the video has fewer than T rows: then nothing was dropped yet).
        keep_from = min(self.next_start, self.next_row - self.frames)
        for r in [r for r in self.crops if r < keep_from]:
            del self.crops[r]
            self.keys.pop(r, None)


@dataclass
class ClipScores:
    logits: np.ndarray                                   # K×C (NaN where no face)
    probs: np.ndarray                                    # K×C
    maps: dict[str, np.ndarray] = field(default_factory=dict)       # method → K×h×w (token grid)
    temporal: dict[str, np.ndarray] = field(default_factory=dict)   # method → K
    windows: int = 0


def score_windows(model: TimeSformer, crops: np.ndarray, valid: np.ndarray, stride: int = 4,
                  methods: tuple[str, ...] = (), batch: int = 4, fusion: str = "min",
                  cancel: CancelToken | None = None) -> ClipScores:
    """Score K frames (``crops`` V×S×S×C uint8 for the V frames where ``valid`` K is True) with sliding
    windows of ``model.frames``; ``methods`` from engine.explain.spacetime.METHODS."""
    valid = np.asarray(valid, bool)
    k, c, g = valid.size, model.spec.n_classes, model.grid
    if int(valid.sum()) != len(crops):
        raise ValueError(f"{len(crops)} crops for {int(valid.sum())} frames with a face")
    stream = WindowStream(model, min(stride, model.frames), methods, fusion, batch, cancel=cancel)
    for crop in crops:
        stream.push(crop)
    stream.finish()
    out = ClipScores(np.full((k, c), np.nan, np.float32), np.full((k, c), np.nan, np.float32),
                     {m: np.full((k, g, g), np.nan, np.float32) for m in methods},
                     {m: np.full(k, np.nan, np.float32) for m in methods}, stream.windows)
    for row, i in enumerate(np.flatnonzero(valid)):
        res = stream.pop(row)
        out.logits[i], out.probs[i] = res.logits, res.probs
        for m in methods:
            out.maps[m][i], out.temporal[m][i] = res.maps[m], res.temporal[m]
    return out


__all__ = ["ClipScores", "RowResult", "WindowStream", "resume_row", "run_windows", "score_windows",
           "window_starts"]
