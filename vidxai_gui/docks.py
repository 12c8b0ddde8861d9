"""The side panels: prototype gallery, SAE latent profile, preprocessing & occlusion (annotations: annotations.py).

They only display what the window hands them (arrays already in memory, images already decoded on a
worker thread); none of them reads files or runs a model on the GUI thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtWidgets
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QImage, QPixmap

log = logging.getLogger(__name__)


def array_to_image(img: np.ndarray) -> QImage:
    """uint8 H×W, H×W×1 or H×W×3 → QImage (copied, so the array may go). Safe on any thread."""
    a = np.ascontiguousarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = np.ascontiguousarray(a[:, :, 0])
    h, w = a.shape[:2]
    if a.ndim == 2:
        qimg = QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8)
    else:
        qimg = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return qimg.copy()


def array_to_pixmap(img: np.ndarray) -> QPixmap:
    """The same as a QPixmap (GUI thread only)."""
    return QPixmap.fromImage(array_to_image(img))


def hint_label(text: str) -> QtWidgets.QLabel:
    label = QtWidgets.QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet("color: gray")
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    return label


# ------------------------------------------------------------------------------------------ prototypes


@dataclass
class PrototypeInfo:
    index: int
    class_name: str
    source: str  # where the prototype was pushed from, for a reader: "happy/123.jpg" / "clip.mp4 frame 120"
    image: QImage | None  # loaded on a worker thread (QImage, unlike QPixmap, may be made off the GUI)
    source_path: str = ""  # the training file as recorded at push time ("" when not recorded)
    source_frame: int = -1  # its frame for a video, −1 for a still image
    label: str = ""  # the training file's label
    source_ref: str = ""  # the file relative to its data set, "fer2013:train/happy/x.jpg" (engine.data.provenance)


def describe_source(path: str, frame: int) -> str:
    """A short name for a training file (the whole path is in the tooltip and the source dialog)."""
    name = Path(path).name
    return f"{name} frame {frame}" if frame >= 0 else name


def load_prototypes(model_dir: Path) -> list[PrototypeInfo]:
    """Prototype crops and provenance of a checkpoint folder (worker thread)."""
    from engine.model_card import read_model_json  # no torch

    doc = read_model_json(model_dir)
    spec = doc.get("spec", {})
    classes = list(spec.get("classes", []))
    per_class = int(spec.get("prototypes_per_class", 0) or 0)
    meta = doc.get("metadata") or {}
    prov = meta.get("prototypes") or meta.get("prototype_provenance") or []
    if isinstance(prov, dict):
        prov = [prov.get(str(j), {}) for j in range(len(doc.get("prototypes", [])))]
    out = []
    for name in doc.get("prototypes", []):
        try:
            j = int(Path(name).stem)
        except ValueError:
            continue
        p = prov[j] if j < len(prov) and isinstance(prov[j], dict) else {}
        cls = str(p.get("class", classes[j // per_class] if per_class and j // per_class < len(classes) else ""))
        # The push records the training sample as {"path", "label", "frame", ...} (engine.data.FaceCache.source).
        src = p.get("source")
        src = src if isinstance(src, dict) else {"path": src} if isinstance(src, str) else {}
        path = str(src.get("path") or "")
        ref = str(src.get("ref") or "")
        frame = int(src.get("frame", -1) if src.get("frame") is not None else -1)
        img = QImage(str(model_dir / name))
        shown = path or ref.partition(":")[2]
        out.append(PrototypeInfo(j, cls, describe_source(shown, frame) if shown else "source not recorded",
                                 None if img.isNull() else img, path, frame, str(src.get("label") or ""), ref))
    return out


class PrototypeGallery(QtWidgets.QWidget):
    """'This looks like that': the prototypes that contribute most to the current frame's decision.

    Selecting one emits ``prototypeSelected(j)`` (−1: none) so the window draws its similarity over the
    whole video on the timeline; "Open source" (or a double click) asks for the training image it was
    pushed from (``openSourceRequested``)."""

    TOP = 5
    prototypeSelected = Signal(int)
    openSourceRequested = Signal(object)  # PrototypeInfo

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.prototypes: dict[int, PrototypeInfo] = {}
        self.hint = hint_label("Open a ProtoPNet session to see which learned prototypes the current frame "
                          "looks like, and how much each adds to the decision.")
        self.table = QtWidgets.QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["", "prototype", "evidence"])
        for c, tip in enumerate(("The prototype: a patch of a training face",
                                 "Prototype number, its class, and the training image it was pushed from",
                                 ("s: similarity to this frame's closest patch; W·s: what it adds to the "
                                  "score of the predicted class"))):
            self.table.horizontalHeaderItem(c).setToolTip(tip)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(0, 72)
        self.table.horizontalHeader().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(
            2, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.table.setIconSize(pg.QtCore.QSize(64, 64))
        self.table.verticalHeader().setDefaultSectionSize(70)
        self.table.setWordWrap(True)
        self.table.itemSelectionChanged.connect(self._on_select)
        self.table.itemDoubleClicked.connect(lambda _item: self._open_source())
        self.selection_hint = QtWidgets.QLabel("Select a prototype to see its similarity over the whole video "
                                               "on the timeline.")
        self.selection_hint.setWordWrap(True)
        self.selection_hint.setStyleSheet("color: #555")
        self.open_button = QtWidgets.QPushButton("Open source…")
        self.open_button.setToolTip("Show the training image the selected prototype was taken from "
                                    "(double-click a row does the same)")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self._open_source)
        self.selected: int = -1
        bottom = QtWidgets.QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.selection_hint, 1)
        bottom.addWidget(self.open_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.hint)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)
        self.table.hide()

    def set_prototypes(self, protos: list[PrototypeInfo]) -> None:
        self.prototypes = {p.index: p for p in protos}

    def show_frame(self, k: int, predicted: str, entries: list[tuple[int, float, float]]) -> None:
        """``entries``: (prototype j, similarity s_j, contribution W·s_j), largest contribution first.
        The selected prototype stays selected while its row is still listed."""
        self.table.show()
        if not entries:
            self.table.setRowCount(0)
            self.hint.setText(f"Frame {k}: no prototype activations (no face, or not analysed yet).")
            return
        self.hint.setText(f"Frame {k} looks like these prototypes; W·s is what each adds to the score of "
                          f"<b>{predicted}</b>.")
        keep = self.selected
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(min(len(entries), self.TOP))
        for r, (j, sim, contribution) in enumerate(entries[: self.TOP]):
            info = self.prototypes.get(j)
            name = QtWidgets.QTableWidgetItem()
            if info is not None and info.image is not None:
                # Crops are a few pixels of a 48×48 face: enlarge them (sharp pixels; an icon only shrinks).
                name.setIcon(QPixmap.fromImage(info.image).scaled(
                    64, 64, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation))
            name.setData(Qt.ItemDataRole.UserRole, j)
            source = QtWidgets.QTableWidgetItem(f"#{j} · {info.class_name}\n{info.source}" if info
                                                else f"#{j}\nprototype image not loaded")
            source.setToolTip(f"prototype #{j} ({info.class_name}), pushed from {info.source_path}"
                              if info and info.source_path else source.text())
            score = QtWidgets.QTableWidgetItem(f"s = {sim:.2f}\nW·s = {contribution:+.2f}")
            for c, item in enumerate((name, source, score)):
                self.table.setItem(r, c, item)
            if j == keep:
                self.table.selectRow(r)
        self.table.blockSignals(False)

    def selected_info(self) -> PrototypeInfo | None:
        return self.prototypes.get(self.selected) if self.selected >= 0 else None

    @Slot()
    def _on_select(self) -> None:
        items = self.table.selectedItems()
        j = self.table.item(items[0].row(), 0).data(Qt.ItemDataRole.UserRole) if items else None
        self.selected = int(j) if j is not None else -1
        info = self.selected_info()
        self.open_button.setEnabled(info is not None)
        if info is not None:
            self.selection_hint.setText(f"Prototype #{j} ({info.class_name}): its similarity is drawn on the "
                                        f"timeline. Pushed from {info.source}.")
        else:
            self.selection_hint.setText("Select a prototype to see its similarity over the whole video on the "
                                        "timeline.")
        self.prototypeSelected.emit(self.selected)

    @Slot()
    def _open_source(self) -> None:
        info = self.selected_info()
        if info is not None:
            self.openSourceRequested.emit(info)


def load_latent_patches(model_dir: Path) -> dict[int, list[QImage]]:
    """A PatchSAE checkpoint's reference patches as images, latent → best first (worker thread)."""
    from engine.model_card import read_latent_patches  # no torch

    out: dict[int, list[QImage]] = {}
    for j, patches in read_latent_patches(model_dir).items():
        out[j] = [array_to_image(p) for p in patches]  # QImage: this runs on a worker thread
    return out


class LatentProfile(QtWidgets.QWidget):
    """Bar plot of the PatchSAE latents active in the current frame (strongest first), and for the
    strongest few the training patches where each latent fires most (its reference patches)."""

    TOP = 12
    PATCH_ROWS = 4  # latents whose reference patches are shown
    PATCHES = 5  # reference patches per latent
    PATCH_PX = 44

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.hint = hint_label("Open a PatchSAE session to see which sparse latents are active in the current frame.")
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "activation g_j")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.bars = pg.BarGraphItem(x0=0, y=[], height=0.7, width=[], brush="#4c72b0")
        self.plot.addItem(self.bars)
        self.patches: dict[int, list[QImage]] = {}
        self.patch_box = QtWidgets.QGroupBox("Where these latents fire in training faces")
        self.patch_box.setToolTip("For each of the frame's strongest latents: the training-image patches that "
                                  "activate it most (its reference patches), best first")
        grid = QtWidgets.QGridLayout(self.patch_box)
        grid.setContentsMargins(4, 4, 4, 4)
        grid.setHorizontalSpacing(4)
        grid.setVerticalSpacing(2)
        self.patch_names: list[QtWidgets.QLabel] = []
        self.patch_cells: list[list[QtWidgets.QLabel]] = []
        for r in range(self.PATCH_ROWS):
            name = QtWidgets.QLabel()
            name.setMinimumWidth(48)
            grid.addWidget(name, r, 0)
            cells = []
            for c in range(self.PATCHES):
                cell = QtWidgets.QLabel()
                cell.setFixedSize(self.PATCH_PX, self.PATCH_PX)
                cell.setAlignment(Qt.AlignmentFlag.AlignCenter)
                grid.addWidget(cell, r, c + 1)
                cells.append(cell)
            self.patch_names.append(name)
            self.patch_cells.append(cells)
        grid.setColumnStretch(self.PATCHES + 1, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.hint)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.patch_box)
        self.plot.hide()
        self.patch_box.hide()

    def set_patches(self, patches: dict[int, list[QImage]]) -> None:
        self.patches = patches

    def shown_patch_latents(self) -> list[int]:
        """The latents whose patches are on screen now, top to bottom."""
        return [int(n.property("latent")) for n in self.patch_names if n.property("latent") is not None
                and n.isVisible()]

    def show_frame(self, k: int, index: np.ndarray | None, values: np.ndarray | None) -> None:
        """The frame's strongest latents (indices and activations g_j, as the session stores them)."""
        if index is None or values is None or k >= len(index):
            self.plot.hide()
            self.patch_box.hide()
            return
        g = np.nan_to_num(np.asarray(values[k], dtype=float))
        idx = np.asarray(index[k])
        order = [i for i in np.argsort(-g)[: self.TOP] if g[i] > 0 and idx[i] >= 0]
        self.plot.show()
        if not order:
            self.hint.setText(f"Frame {k}: no active latents (no face, or not analysed yet).")
        else:
            self.hint.setText(f"Frame {k}: the {len(order)} strongest SAE latents.")
        n = len(order)
        self.bars.setOpts(x0=np.zeros(n), y=np.arange(n)[::-1].astype(float), width=g[order], height=0.7)
        self.plot.getAxis("left").setTicks([[(float(n - 1 - r), f"#{int(idx[i])}") for r, i in enumerate(order)]])
        self.plot.setYRange(-0.5, max(n, 1) - 0.5, padding=0)
        self.plot.setXRange(0, float(g[order].max()) if n else 1.0, padding=0.05)
        self._show_patches([int(idx[i]) for i in order if int(idx[i]) in self.patches][: self.PATCH_ROWS])

    def _show_patches(self, latents: list[int]) -> None:
        self.patch_box.setVisible(bool(latents))
        for r, (name, cells) in enumerate(zip(self.patch_names, self.patch_cells)):
            j = latents[r] if r < len(latents) else None
            name.setVisible(j is not None)
            name.setProperty("latent", j)
            name.setText(f"#{j}" if j is not None else "")
            images = self.patches.get(j, []) if j is not None else []
            for c, cell in enumerate(cells):
                cell.setVisible(j is not None)
                if c < len(images):
                    cell.setPixmap(QPixmap.fromImage(images[c]).scaled(
                        self.PATCH_PX, self.PATCH_PX, Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.FastTransformation))
                else:
                    cell.clear()


# ------------------------------------------------------------------------------------------ preprocessing
