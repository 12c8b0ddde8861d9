"""What is drawn over frame k: its relevance map on the frame, the top prototype and its box (METHODS §1, §4).

The science of the overlays, once: the GUI draws what `frame_evidence` returns, and reports and figures
can call the same functions. Maps are mapped onto the part of the frame the model input came from (the
face), not onto a frame-sized array: a 1080p or 4K frame is 10–100× the face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    # engine.preprocess loads cv2 and dlib: imported where used, so the case report (which needs only
    # the pure helpers here) does without them
    from engine.preprocess import InputMapping
    from engine.temporal import MapRows
    from sessions import Session

TOP_X = 0.25  # METHODS §4: the paper's figures keep the top 25 % of the positive relevance
BOX_PERCENTILE = 95  # METHODS §1: the prototype's box encloses its similarity map's top 5 %
LEVEL_PERCENTILE = 99  # the heat value drawn at full colour


@dataclass
class FrameEvidence:
    """Frame k's overlay data in full-frame coordinates."""

    heat: np.ndarray | None = None  # float32, ≥ 0, no NaN; covers only the mapped region (see heat_origin)
    heat_origin: tuple[int, int] = (0, 0)  # frame pixel (x, y) of heat[0, 0]
    heat_level: float = 1.0  # the heat value drawn at full colour (99th percentile of the positive part)
    proto_box: np.ndarray | None = None  # (4,) x0, y0, x1, y1 of the top prototype's box
    proto_index: int = -1


def local_mapping(mapping: InputMapping, frame_hw: tuple[int, int]
                  ) -> tuple[InputMapping, tuple[int, int], tuple[int, int]]:
    """The part of the frame a model input came from: (mapping into that region's pixels, its origin
    (x, y) in the frame, its (h, w)). A map drawn with the returned mapping at the origin equals the
    frame-sized map `mapping.heatmap_to_frame(map, frame_hw)` on that region (and that map is 0 elsewhere)."""
    from engine.preprocess import InputMapping, MappingPiece

    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    rects = np.array([p.frame_rect for p in mapping.pieces], np.float64).reshape(-1, 4)
    if rects.size == 0:
        return mapping, (0, 0), (fh, fw)
    x0 = int(np.clip(np.floor(rects[:, 0].min()), 0, fw))
    y0 = int(np.clip(np.floor(rects[:, 1].min()), 0, fh))
    x1 = int(np.clip(np.ceil(rects[:, 2].max()), x0 + 1, max(fw, x0 + 1)))
    y1 = int(np.clip(np.ceil(rects[:, 3].max()), y0 + 1, max(fh, y0 + 1)))
    shifted = [MappingPiece(p.name, p.input_rect, (p.frame_rect[0] - x0, p.frame_rect[1] - y0,
                                                   p.frame_rect[2] - x0, p.frame_rect[3] - y0))
               for p in mapping.pieces]
    return InputMapping(mapping.input_size, shifted), (x0, y0), (y1 - y0, x1 - x0)


def shown_relevance(heat: np.ndarray, top_x: float | None = None) -> np.ndarray:
    """The part of a relevance map that is drawn: finite, ≥ 0, and with `top_x` only the fewest highest
    values holding that fraction of the positive mass."""
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0, None)
    if top_x is None:
        return heat
    from engine.explain.topx import top_x as projection  # engine.explain loads torch: only when asked

    return projection(heat, top_x)


def heat_level(frame_map: np.ndarray) -> float:
    """The value drawn at full colour: the 99th percentile of the map's positive part."""
    positive = frame_map[frame_map > 0]
    return max(float(np.percentile(positive, LEVEL_PERCENTILE)), 1e-12) if positive.size else 1.0


def top_prototypes(weight: np.ndarray, sims: np.ndarray, probs: np.ndarray, n: int = 5
                   ) -> tuple[int, list[tuple[int, float, float]]]:
    """ProtoPNet terms of one frame: (predicted class ĉ, [(prototype j, s_j, W_ĉj·s_j)] largest first);
    (-1, []) for a frame without scores."""
    row, p = np.asarray(sims, np.float64), np.asarray(probs)
    if not (np.isfinite(row).all() and np.isfinite(p).all()):
        return -1, []
    c = int(np.argmax(p))
    contrib = np.asarray(weight, np.float64)[c] * row
    order = np.argsort(-contrib)[:n]
    return c, [(int(j), float(row[j]), float(contrib[j])) for j in order]


def percentile_box(frame_map: np.ndarray, percentile: float = BOX_PERCENTILE) -> np.ndarray | None:
    """x0, y0, x1, y1 (exclusive) around the pixels at or above the percentile of the map's mapped
    (> 0) part; None if nothing is mapped."""
    inside = frame_map > 0
    if not inside.any():
        return None
    ys, xs = np.nonzero(frame_map >= np.percentile(frame_map[inside], percentile))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def frame_evidence(s: Session, k: int, method: str, frame_hw: tuple[int, int], top_x: float | None = None,
                   weight: np.ndarray | None = None, smooth_s: float | None = None,
                   map_rows: MapRows | None = None) -> FrameEvidence | None:
    """Frame k's relevance map of `method` ("" for none) and top prototype box, mapped onto the frame;
    None where frame k has no model input. `weight` is the session's head (read once by the caller).
    `smooth_s`: show the map smoothed over time with σ in seconds (engine.temporal.session_smoothed_maps;
    display only, reads only; `map_rows`: its rolling cache, for a viewer asking frame after frame)."""
    from engine.preprocess import InputMapping

    mapping = s.mappings(slice(k, k + 1))
    if not mapping or mapping[0] is None:
        return None
    m, origin, region_hw = local_mapping(InputMapping.from_json(mapping[0]), frame_hw)

    def place(input_map: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        return np.nan_to_num(m.heatmap_to_frame(input_map, region_hw), nan=0.0), origin

    out = evidence_on_frame(s, k, method, weight, place, top_x, smooth_s, map_rows)
    out.heat_origin = origin
    return out


def evidence_on_frame(s: Session, k: int, method: str, weight: np.ndarray | None,
                      place: Callable[[np.ndarray], tuple[np.ndarray, tuple[int, int]]],
                      top_x: float | None = None, smooth_s: float | None = None,
                      map_rows: MapRows | None = None) -> FrameEvidence:
    """The steps of an overlay, whatever lays a model-input map on the frame: frame k's shown relevance
    of `method` ("" for none) and its level, and the top prototype's percentile box. `place(map)` gives
    the map on (a region of) the frame and that region's origin (x, y): cv2 in the window
    (:func:`frame_evidence`), Pillow in the case report (engine.report), so both draw the same.
    `smooth_s`: the map smoothed over time, σ in seconds (display only; engine.temporal)."""
    out = FrameEvidence()
    if method and smooth_s and s.has_maps(method):
        from engine.temporal import session_smoothed_maps

        maps = session_smoothed_maps(s, method, slice(k, k + 1), smooth_s, rows=map_rows)  # frame k's map with the rest
    else:
        maps = s.explanation_maps(method, slice(k, k + 1)) if method else None
    if maps is not None and np.isfinite(maps[0]).any():
        out.heat, out.heat_origin = place(shown_relevance(maps[0], top_x))
        out.heat_level = heat_level(out.heat)
    sims = s.intrinsic("similarities", slice(k, k + 1))
    if weight is None or sims is None:
        return out
    c, top = top_prototypes(weight, sims[0], s.read("probs", slice(k, k + 1))[0], n=1)
    sim_maps = s.intrinsic("sim_maps", slice(k, k + 1)) if c >= 0 else None
    if sim_maps is None:
        return out
    j = out.proto_index = top[0][0]
    sim_map = sim_maps[0, j].astype(np.float32)
    region, origin = place(sim_map - np.nanmin(sim_map) + 1e-6)
    box = percentile_box(region)
    if box is not None:
        out.proto_box = box + np.array([*origin, *origin], np.float32)
    return out
