"""The review model: what the reviewer looks at, in one object that says what changed (no widgets).

napari's ``components/dims.py`` is the pattern: a plain model emits events and the views (player,
timeline, docks, status bar; see ``vidxai_gui.views``) only subscribe and redraw what the signal names.
The window's actions change the model; nothing else holds this state. docs/GUI.md lists the fields,
the signals and who listens to what.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.temporal import DEFAULT_TAU_S
from vidxai_gui.review import ReviewData, Rows


class ReviewModel(QObject):
    """The open session's data, the frame on screen, the heatmap method, Top-X, the selection and α."""

    sessionChanged = Signal()  # another session (or none): every view redraws from `data`
    rowsMerged = Signal(int, int)  # streamed rows [start, end) were merged into `data`
    frameChanged = Signal(int)  # the frame on screen (the player reports it; overlays are drawn with it)
    heatChanged = Signal()  # `heat_method` or `top_x` changed: the overlay reader is rebuilt
    methodDeltasChanged = Signal()  # the model's recorded faithfulness per method arrived
    prototypeSelected = Signal(int)  # the selected prototype (-1: none)
    alphaChanged = Signal(float)  # EWMA α (what τ gives at the video's fps)
    tauChanged = Signal(float)  # EWMA time constant τ, seconds (the reviewer's setting)
    stageSelected = Signal(int)  # the selected stage of the strip (index in its order; -1: none)
    personChanged = Signal(int)  # the person the session's scores and maps refer to (-1: not known yet)
    auRegionsChanged = Signal(bool)  # View ▸ Show expected AU regions was toggled

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data: ReviewData | None = None  # the session's per-frame arrays (vidxai_gui.review)
        self.session_path: Path | None = None  # where the session is (being) written
        self.frame = -1
        self.heat_method = ""  # "" = no map (the prototype box is still drawn)
        self.heat_chosen = False  # the reviewer (or the saved review state) chose it, not the default
        self.smooth_maps = True  # show maps smoothed over time (display only; README issue 14: less flicker)
        self.top_x = False  # draw only the Top-X of the positive relevance (engine.overlay.TOP_X)
        self.method_deltas: dict[str, float] = {}  # recorded faithfulness Δ per method (model.json)
        self.prototype = -1
        self.alpha = 0.3
        self.tau_s = DEFAULT_TAU_S
        self.stage = -1  # the selected stage of the strip (Session.display_stages(), in order)
        self.stage_info: dict | None = None  # engine.temporal.stage_details of the selected stage
        self.person = -1  # the analysed person (sessions.people.analysed_person; -1: none or not loaded yet)
        self.au_regions = False  # draw the predicted class's expected AU regions (engine.frame_au) on the frame

    @property
    def explain_methods(self) -> list[str]:
        return self.data.explain_methods if self.data is not None else []

    @property
    def map_methods(self) -> list[str]:
        """The session's explanations that are heatmaps (the Heatmap menu's choices)."""
        return self.data.map_methods if self.data is not None else []

    # ---- the session
    def set_session(self, data: ReviewData | None, path: Path | None = None, *, emit: bool = True) -> None:
        """A whole session (opened, reloaded) or none; views redraw everything. ``emit=False``: the data
        waits for its video to be on screen (the window emits then, with `redraw`)."""
        self.data = data
        self.stage, self.stage_info = -1, None
        self.session_path = data.path if data is not None and path is None else path
        if data is None:
            self.set_person(-1)
        if emit:
            self.sessionChanged.emit()

    def redraw(self) -> None:
        """Every view draws the session again (its video is on screen now)."""
        self.sessionChanged.emit()

    def clear(self) -> None:
        """A new video: no session, the heatmap choice starts afresh."""
        self.heat_method, self.heat_chosen, self.method_deltas, self.prototype = "", False, {}, -1
        self.set_session(None, None)
        self.heatChanged.emit()

    def restore(self, state: dict) -> None:
        """The reviewer's saved view (heatmap method, Top-X); drawn when the session's video is on screen."""
        self.heat_method = str(state.get("method", self.heat_method) or "")
        self.heat_chosen = bool(state.get("method"))
        self.top_x = bool(state.get("top_x", False))
        self.smooth_maps = bool(state.get("smooth_maps", True))

    def merge_rows(self, rows: Rows) -> None:
        """Streamed rows of the session being written (`data` must exist); views redraw what changed."""
        assert self.data is not None
        self.data.merge(rows)
        self.rowsMerged.emit(rows.start, rows.end)
        if not self.heat_method:
            self.choose_heat_method()

    # ---- what is drawn
    def set_frame(self, k: int) -> None:
        self.frame = k
        self.frameChanged.emit(k)

    def set_heat(self, method: str | None = None, top_x: bool | None = None, chosen: bool = True,
                 smooth: bool | None = None) -> None:
        """Change the heatmap method, Top-X and/or smoothing; `chosen`: by the reviewer (kept over the default)."""
        if smooth is not None:
            self.smooth_maps = bool(smooth)
        if method is not None:
            self.heat_method = method
            self.heat_chosen = self.heat_chosen or chosen
        if top_x is not None:
            self.top_x = bool(top_x)
        self.heatChanged.emit()

    def choose_heat_method(self) -> None:
        """The reviewer's method if it has maps here, else the most faithful one the model's record
        measured (docs/EXPLANATIONS.md), else LRP, else the first one."""
        methods = self.map_methods
        if not methods:
            self.heatChanged.emit()
            return
        if self.heat_method not in methods or not self.heat_chosen:
            from engine.model_card import most_faithful

            best = most_faithful(self.method_deltas, methods)
            if best is not None:
                self.heat_method = best
            elif self.heat_method not in methods:
                self.heat_method = "lrp" if "lrp" in methods else methods[0]
        self.heatChanged.emit()

    def set_method_deltas(self, deltas: dict[str, float]) -> None:
        self.method_deltas = dict(deltas)
        self.methodDeltasChanged.emit()
        if not self.heat_chosen and self.map_methods:
            self.choose_heat_method()

    def select_prototype(self, j: int) -> None:
        self.prototype = j
        self.prototypeSelected.emit(j)

    def set_alpha(self, alpha: float) -> None:
        if alpha != self.alpha:
            self.alpha = float(alpha)
            self.alphaChanged.emit(self.alpha)

    def set_tau(self, tau_s: float) -> None:
        if abs(tau_s - self.tau_s) > 1e-12:
            self.tau_s = float(tau_s)
            self.tauChanged.emit(self.tau_s)

    def select_stage(self, i: int, info: dict | None = None) -> None:
        """Stage i of the strip is selected (−1: none); `info` is its `engine.temporal.stage_details`."""
        self.stage = i if i >= 0 else -1
        self.stage_info = info if self.stage >= 0 else None
        self.stageSelected.emit(self.stage)

    def set_person(self, person: int | None) -> None:
        """The person the open session follows (read with its people list; −1/None: none)."""
        p = -1 if person is None else int(person)
        if p != self.person:
            self.person = p
            self.personChanged.emit(p)

    def set_au_regions(self, on: bool) -> None:
        """Show or hide the expected AU regions of the predicted class over the frame (display only)."""
        if bool(on) != self.au_regions:
            self.au_regions = bool(on)
            self.auRegionsChanged.emit(self.au_regions)
