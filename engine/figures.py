"""Figures of a session, one rendering code for `vidxai figure` and the case report (engine.report).

Raster pieces (an explanation map over the face, a stage's mean map, a prototype crop) are drawn with numpy
and Pillow, so the report stays fast; the layouts (timeline, stage strip, key frame, prototype gallery) are
matplotlib figures sized for a journal column (3.5 in; 7.2 in for two columns), with fonts embedded: PDF
uses TrueType (Type 42) fonts, SVG draws glyphs as paths, so a figure looks the same on any machine.
Everything here is torch-, cv2- and Qt-free.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from engine.colours import class_hex

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

COLUMN_IN = 3.5  # single journal column (inches)
DOUBLE_COLUMN_IN = 7.2
FORMATS = (".png", ".svg", ".pdf")
HEAT_CMAP = "inferno"  # perceptually uniform, prints in greyscale in the right order
OVERLAY_CMAP = "jet"
MAX_CURVE_POINTS = 2000  # per curve in a timeline figure (longer videos are averaged into this many runs)  # the GUI's overlay colours, so a figure looks like what the reviewer saw


@dataclass
class Prototype:
    """One prototype as evidence for a frame's decision: its crop and where it came from."""

    index: int
    cls: str
    contribution: float  # W_cj · s_j towards the predicted class
    similarity: float
    crop: np.ndarray | None  # RGB uint8, None when the model folder is not at hand
    source: str  # training image or video frame it was pushed from ("fer2013:train/angry/x.jpg")


@dataclass
class KeyFrame:
    """A frame with its explanation: the picture around the face, the map over it, the decision."""

    index: int
    time_s: float
    predicted: str
    probability: float
    face: np.ndarray | None  # RGB uint8 crop of the frame around the model input; None without the video
    overlay: np.ndarray | None  # the same crop with the map laid over it
    heat: np.ndarray | None  # the map in model-input space
    prototypes: list[Prototype] = field(default_factory=list)


@dataclass
class StageView:
    start: int
    end: int  # exclusive
    descriptor: str
    t0: float
    t1: float
    mean_map: np.ndarray | None  # mean explanation map over the stage's scored frames (model-input space)
    key: KeyFrame | None = None

    @property
    def cls(self) -> str:
        """The class a SpRAy descriptor ("HAPPY_A, SAD_B") names first; "" for NONE."""
        head = self.descriptor.split(",")[0].strip()
        return "" if head.upper() == "NONE" else head.rsplit("_", 1)[0].lower()


@dataclass
class TimelineData:
    times: np.ndarray  # (T,) s
    classes: list[str]
    probs: np.ndarray  # (T, C), NaN without a face
    ewma: np.ndarray  # (T, C)
    alpha: float
    decision: str
    stages: list[StageView]
    annotations: list[tuple[str, float, float, str]]  # tier, t0, t1, label


# ------------------------------------------------------------------------------------------ raster pieces

_LUTS: dict[str, np.ndarray] = {}


def colormap_lut(name: str) -> np.ndarray:
    """256×3 uint8 colours of a matplotlib colormap (cached; matplotlib is imported once)."""
    if name not in _LUTS:
        from matplotlib import colormaps

        _LUTS[name] = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return _LUTS[name]


def normalise(heat: np.ndarray) -> np.ndarray:
    """The positive evidence of a map scaled to 0..1 (NaN → 0); a flat map becomes all zeros."""
    h = np.nan_to_num(np.asarray(heat, np.float32), nan=0.0)
    h = np.maximum(h, 0)
    top = float(h.max()) if h.size else 0.0
    return h / top if top > 0 else np.zeros_like(h)


def heat_image(heat: np.ndarray, size: int = 96, cmap: str = HEAT_CMAP) -> np.ndarray:
    """A map (any resolution) as a size×size RGB picture, bilinear, in `cmap`."""
    h = Image.fromarray(normalise(heat)).resize((size, size), Image.Resampling.BILINEAR)
    idx = np.clip(np.asarray(h) * 255, 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[idx]


def face_region(mapping: dict, frame_hw: tuple[int, int], pad: float = 0.15) -> tuple[int, int, int, int]:
    """The frame rectangle (x0, y0, x1, y1) that holds every piece of the model input, padded."""
    rects = np.array([p["frame_rect"] for p in mapping["pieces"]], np.float64)
    x0, y0 = rects[:, 0].min(), rects[:, 1].min()
    x1, y1 = rects[:, 2].max(), rects[:, 3].max()
    px, py = pad * (x1 - x0), pad * (y1 - y0)
    H, W = frame_hw
    return (max(0, int(x0 - px)), max(0, int(y0 - py)), min(W, int(np.ceil(x1 + px))), min(H, int(np.ceil(y1 + py))))


def heat_in_frame(heat: np.ndarray, mapping: dict, frame_hw: tuple[int, int]) -> np.ndarray:
    """A map over the model input laid back onto the frame: frame-sized float32, 0 outside the input.

    Each mapping piece maps its input rectangle edge to edge onto its frame rectangle (engine.preprocess
    MappingPiece), so its part of the map is resized onto that rectangle; overlapping pieces keep the max.
    The same geometry as InputMapping.heatmap_to_frame, without cv2."""
    heat = np.nan_to_num(np.asarray(heat, np.float32), nan=0.0)
    H, W = frame_hw
    out = np.zeros((H, W), np.float32)
    n = float(mapping["input_size"])
    hh, hw = heat.shape
    for p in mapping["pieces"]:
        u0, v0, u1, v1 = p["input_rect"]
        x0, y0, x1, y1 = p["frame_rect"]
        hx0, hx1 = int(np.floor(u0 * hw / n + 1e-6)), int(np.ceil(u1 * hw / n - 1e-6))
        hy0, hy1 = int(np.floor(v0 * hh / n + 1e-6)), int(np.ceil(v1 * hh / n - 1e-6))
        sub = heat[hy0:hy1, hx0:hx1]
        fw, fh = round(x1 - x0), round(y1 - y0)
        if sub.size == 0 or fw <= 0 or fh <= 0:
            continue
        img = np.asarray(Image.fromarray(np.ascontiguousarray(sub)).resize((fw, fh), Image.Resampling.BILINEAR))
        fx0, fy0 = round(x0), round(y0)
        # clip the piece to the frame (a face at the border has a crop partly outside it)
        ax0, ay0 = max(fx0, 0), max(fy0, 0)
        ax1, ay1 = min(fx0 + fw, W), min(fy0 + fh, H)
        if ax1 <= ax0 or ay1 <= ay0:
            continue
        part = img[ay0 - fy0:ay1 - fy0, ax0 - fx0:ax1 - fx0]
        out[ay0:ay1, ax0:ax1] = np.maximum(out[ay0:ay1, ax0:ax1], part)
    return out


def overlay(frame: np.ndarray, heat: np.ndarray, mapping: dict, opacity: float = 0.55,
            cmap: str = OVERLAY_CMAP) -> tuple[np.ndarray, np.ndarray]:
    """(face crop, the crop with the map over it): the positive evidence, its colour's opacity growing
    with the value, so the face shows through where the map says nothing."""
    H, W = frame.shape[:2]
    x0, y0, x1, y1 = face_region(mapping, (H, W))
    full = heat_in_frame(heat, mapping, (H, W))
    crop = frame[y0:y1, x0:x1]
    h = normalise(full[y0:y1, x0:x1])
    colour = colormap_lut(cmap)[np.clip(h * 255, 0, 255).astype(np.uint8)].astype(np.float32)
    a = (opacity * h)[..., None]
    out = (crop.astype(np.float32) * (1 - a) + colour * a).round().clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(crop), out


def png_bytes(image: np.ndarray, max_side: int | None = None) -> bytes:
    """PNG of an RGB uint8 image (downscaled to `max_side` when given): maps and crops, kept exact."""
    return _encode(image, max_side, "PNG", compress_level=6)


def jpeg_bytes(image: np.ndarray, max_side: int | None = None, quality: int = 90) -> bytes:
    """JPEG of a photo (a frame crop): a fifth of the PNG's size at no visible loss."""
    return _encode(image, max_side, "JPEG", quality=quality)


def _encode(image: np.ndarray, max_side: int | None, fmt: str, **opts: object) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(image))
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **opts)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ matplotlib

STYLE = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path",  # fonts embedded / outlined
    "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
    "legend.fontsize": 6, "axes.linewidth": 0.6, "lines.linewidth": 1.0, "savefig.dpi": 300,
    "figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
}


def _styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build a figure inside the house style (sizes, fonts), leaving the process's matplotlib settings alone."""
    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


def _subplots(nrows: int, ncols: int, **kw: Any) -> tuple[Figure, np.ndarray]:
    """A Figure and its axes grid in the house style, without pyplot: no global figure manager, nothing
    left open, and half a second less to import (the report is read-only work on a server, too)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=kw.pop("figsize"), layout=None)
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _colour(classes: Sequence[str], name: str) -> str:
    return class_hex(name, classes.index(name)) if name in classes else "#999999"


def decimate(t: np.ndarray, *series: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> tuple[np.ndarray, ...]:
    """At most `max_points` points per curve: the mean of each run of frames (NaN-aware; a run without a
    face stays a gap). An hour at 30 fps would otherwise put 108,000 points per curve into a figure a
    column wide."""
    n = len(t)
    if n <= max_points:
        return (t, *series)
    edges = np.linspace(0, n, max_points + 1).round().astype(int)
    out_t = np.add.reduceat(np.asarray(t, np.float64), edges[:-1]) / np.diff(edges)
    outs = []
    for y in series:
        y = np.asarray(y, np.float64)
        ok = np.isfinite(y)
        sums = np.add.reduceat(np.where(ok, y, 0.0), edges[:-1], axis=0)
        counts = np.add.reduceat(ok.astype(np.int64), edges[:-1], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            outs.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
    return (out_t, *outs)


@_styled
def timeline_figure(data: TimelineData, width_in: float = DOUBLE_COLUMN_IN) -> Figure:
    """Per-class frame probabilities (thin) and their EWMA (thick) over time, the decision, and below them
    the SpRAy stage strip and one row per annotation tier."""
    tiers = list(dict.fromkeys(t for t, *_ in data.annotations))
    rows = 1 + (1 if data.stages else 0) + len(tiers)
    heights = [4.0] + [0.45] * (rows - 1)
    fig, axes = _subplots(rows, 1, sharex=True, figsize=(width_in, 1.9 + 0.22 * (rows - 1)),
                          gridspec_kw={"height_ratios": heights, "hspace": 0.12})
    ax = axes[0, 0]
    t = data.times
    end = float(t[-1] + (t[-1] - t[-2] if len(t) > 1 else 0.04)) if len(t) else 1.0
    tt, probs, ewma = decimate(t, data.probs, data.ewma)
    for i, c in enumerate(data.classes):
        col = class_hex(c, i)
        ax.plot(tt, probs[:, i], color=col, lw=0.5, alpha=0.35)
        ax.plot(tt, ewma[:, i], color=col, lw=1.4 if c == data.decision else 0.9, label=c)
    ax.set_ylim(0, 1)
    ax.set_xlim(float(t[0]) if len(t) else 0.0, end)
    ax.set_ylabel("probability")
    fig.suptitle(f"decision: {data.decision or 'none'} (last EWMA state, α = {data.alpha:g}); thin: per frame, "
                 "thick: EWMA", x=0.01, ha="left", fontsize=7)
    ax.legend(ncol=min(len(data.classes), 8), loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False,
              handlelength=1.2, columnspacing=0.9, borderaxespad=0.1)

    def strip(a, spans: list[tuple[float, float, str, str]], name: str) -> None:
        a.set_yticks([0.5], [name])
        a.set_ylim(0, 1)
        a.tick_params(axis="y", length=0)
        for s in ("left", "top", "right"):
            a.spines[s].set_visible(False)
        for t0, t1, colour, label in spans:
            a.axvspan(t0, t1, ymin=0.1, ymax=0.9, color=colour, alpha=0.85, lw=0.3, ec="white")
            if label and (t1 - t0) > 0.06 * (end - (t[0] if len(t) else 0)):
                a.text((t0 + t1) / 2, 0.5, label, ha="center", va="center", fontsize=5, clip_on=True)

    r = 1
    if data.stages:
        strip(axes[r, 0], [(s.t0, s.t1, _colour(data.classes, s.cls), s.descriptor) for s in data.stages], "stages")
        r += 1
    for tier in tiers:
        spans = [(t0, max(t1, t0 + 1e-3), "#c7c7c7", label) for name, t0, t1, label in data.annotations if name == tier]
        strip(axes[r, 0], spans, tier[:14])
        r += 1
    axes[-1, 0].set_xlabel("time (s)")
    fig.align_ylabels(axes[:, 0])
    fig.subplots_adjust(left=0.1, right=0.99, top=0.84, bottom=0.13 if rows > 1 else 0.2)
    return fig


@_styled
def stages_figure(stages: Sequence[StageView], classes: Sequence[str], width_in: float = DOUBLE_COLUMN_IN,
                  method: str = "") -> Figure:
    """Each stage's mean explanation map with its descriptor and time range, in time order."""
    n = max(1, len(stages))
    per_row = min(n, 8)
    nrows = (n + per_row - 1) // per_row
    cell = width_in / per_row
    top = 0.3 if method else 0.05  # inches above the first row for the title
    fig, axes = _subplots(nrows, per_row, figsize=(width_in, nrows * (cell + 0.3) + top))
    for ax in axes.flat:
        ax.axis("off")
    for ax, st in zip(axes.flat, stages, strict=False):
        if st.mean_map is not None:
            ax.imshow(heat_image(st.mean_map, 96), interpolation="nearest")
        for s in ax.spines.values():
            s.set_visible(True)
            s.set_color(_colour(list(classes), st.cls))
            s.set_linewidth(2)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{st.descriptor}\n{st.t0:.2f}–{st.t1:.2f} s", fontsize=5.5)
    if method:
        fig.suptitle(f"mean {method} map per stage", fontsize=6.5, x=0.01, y=0.995, ha="left", va="top")
    height = nrows * (cell + 0.3) + top
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - (top + 0.25) / height, wspace=0.08,
                        hspace=0.3 / cell + 0.1)
    return fig


@_styled
def frame_figure(key: KeyFrame, method: str, width_in: float = COLUMN_IN) -> Figure:
    """A key frame: the face as seen, the same with the explanation map over it, and the decision."""
    panels = [(key.face, "frame"), (key.overlay, f"{method} map")] if key.face is not None else \
        [(heat_image(key.heat, 96) if key.heat is not None else None, f"{method} map (video not found)")]
    fig, axes = _subplots(1, len(panels), figsize=(width_in, width_in / len(panels) + 0.4))
    for ax, (img, title) in zip(axes.flat, panels, strict=True):
        ax.axis("off")
        if img is not None:
            ax.imshow(img)
        ax.set_title(title)
    fig.suptitle(f"frame {key.index} ({key.time_s:.2f} s): {key.predicted} {key.probability:.0%}", fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.82, wspace=0.04)
    return fig


@_styled
def gallery_figure(key: KeyFrame, width_in: float = COLUMN_IN) -> Figure:
    """The prototypes that weigh most for a frame's decision: crop, class, contribution and source."""
    protos = key.prototypes or []
    n = max(1, len(protos))
    fig, axes = _subplots(1, n, figsize=(width_in, width_in / n + 0.55))
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, protos, strict=False):
        if p.crop is not None:
            ax.imshow(p.crop, cmap="gray" if p.crop.ndim == 2 else None)
        src = p.source.rsplit("/", 1)[-1]
        ax.set_title(f"#{p.index} {p.cls}\n{p.contribution:+.2f}", fontsize=5.5)
        ax.text(0.5, -0.06, src[:22], transform=ax.transAxes, ha="center", va="top", fontsize=4.5)
    if not protos:
        axes[0, 0].text(0.5, 0.5, "no prototypes (not a ProtoPNet, or the model folder is not at hand)",
                        ha="center", va="center", fontsize=6)
    fig.suptitle(f"this looks like that: frame {key.index}, towards {key.predicted}", fontsize=6.5)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.12, top=0.72, wspace=0.1)
    return fig


def figure_bytes(fig: Figure, fmt: str = "svg", text_as_paths: bool = True) -> bytes:
    """A figure as PNG/SVG/PDF bytes. SVG text is drawn as glyph paths (no font needed to view it) unless
    `text_as_paths` is False (smaller, for a page whose browser has fonts)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({**STYLE, "svg.fonttype": "path" if text_as_paths else "none"}):
        fig.savefig(buf, format=fmt, dpi=300 if fmt == "png" else None, metadata=_metadata(fmt))
    return buf.getvalue()


def _metadata(fmt: str) -> dict:
    # Reproducible files: no creation date in SVG/PDF, one producer name.
    if fmt == "svg":
        return {"Date": None, "Creator": "VidXAI"}
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": "VidXAI"}
    return {"Software": "VidXAI"}


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure by the file's suffix (.png at 300 dpi, .svg, .pdf), atomically."""
    from sessions.atomic import atomic_write

    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in FORMATS:
        raise ValueError(f"{path}: figures are written as {', '.join(FORMATS)}; choose one of those suffixes")
    data = figure_bytes(fig, fmt[1:])
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return path
