"""Where a prototype came from: the training image (or video frame) it was pushed from, read on a worker
and shown beside the prototype's crop ("Open source" in the Prototypes dock)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from vidxai_gui.docks import PrototypeInfo, array_to_pixmap


def load_source_image(info: PrototypeInfo, data_folder: str = "") -> np.ndarray:
    """The training image or video frame a prototype was pushed from, RGB (worker thread).

    A source named relative to its data set (``info.source_ref``) is looked for under ``data_folder``
    (the folder the user set with "Data folder…"). Raises ``FileNotFoundError`` naming the file and the
    folder looked in when it is not on this machine."""
    from engine.data.provenance import ref_candidates, resolve_ref

    found = resolve_ref(info.source_ref, data_folder) if info.source_ref and data_folder else None
    path = found or Path(info.source_path)
    if found is None and (not info.source_path or not path.is_file()):
        if info.source_ref:
            where = (f"not found in the data folder {data_folder} (looked for "
                     f"{', '.join(str(c) for c in ref_candidates(info.source_ref, data_folder))})"
                     if data_folder else "not looked for: no data folder is set")
            raise FileNotFoundError(
                f"{info.source_ref}: {where}. Use \"Data folder…\" to choose the folder that holds the "
                "data set (or its parent). The prototype's crop, shown in the gallery, is what the model keeps of it.")
        raise FileNotFoundError(
            f"{info.source_path or 'The source'} is not on this machine: the model was trained on data stored "
            "elsewhere. The prototype's crop, shown in the gallery, is what the model keeps of it.")
    if info.source_frame >= 0:
        from engine.video import open_video

        with open_video(path) as reader:
            return reader.frame(info.source_frame)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))




class PrototypeSourceDialog(QDialog):
    """A prototype next to the training image it was pushed from (the image is loaded by the caller
    on a worker thread and handed in with :meth:`set_source`, or :meth:`set_error`)."""

    def __init__(self, info: PrototypeInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Prototype #{info.index} — source")
        self.info = info
        crop = QLabel()
        if info.image is not None:
            crop.setPixmap(QPixmap.fromImage(info.image).scaled(
                160, 160, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation))
        crop.setToolTip("The prototype: the patch of the training face the model compares frames with")
        self.source_view = QLabel("Loading the training image…")
        self.source_view.setMinimumSize(240, 240)
        self.source_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.source_view.setWordWrap(True)
        label = f", labelled <b>{info.label}</b>" if info.label else ""
        text = QLabel(f"Prototype <b>#{info.index}</b> of class <b>{info.class_name}</b> was pushed onto a "
                      f"patch of<br><code>{info.source_ref or info.source_path or 'an unrecorded file'}</code>"
                      f"{f' (frame {info.source_frame})' if info.source_frame >= 0 else ''}{label}.")
        text.setTextFormat(Qt.TextFormat.RichText)
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        images = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(QLabel("prototype"))
        left.addWidget(crop)
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(QLabel("training image"))
        right.addWidget(self.source_view, 1)
        images.addLayout(left)
        images.addLayout(right, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        # "Data folder…": where data sets named in a model's provenance are looked for (the window remembers it).
        self.folder_button = buttons.addButton("Data folder…", QDialogButtonBox.ButtonRole.ActionRole)
        self.folder_button.setVisible(bool(info.source_ref))
        self.folder_label = QLabel("")
        self.folder_label.setStyleSheet("color: gray")
        self.folder_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addLayout(images, 1)
        layout.addWidget(self.folder_label)
        layout.addWidget(buttons)

    def set_folder(self, folder: str) -> None:
        """Say which data folder the source is looked for in."""
        if self.info.source_ref:
            self.folder_label.setText(f"Data folder: {folder}" if folder else "Data folder: not set")

    def set_source(self, rgb: np.ndarray) -> None:
        pix = array_to_pixmap(np.ascontiguousarray(rgb))
        side = 320
        mode = (Qt.TransformationMode.FastTransformation if max(rgb.shape[:2]) < side
                else Qt.TransformationMode.SmoothTransformation)  # small faces: sharp pixels, not blur
        self.source_view.setPixmap(pix.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, mode))
        self.source_view.setToolTip(f"{self.info.source_path} ({rgb.shape[1]}×{rgb.shape[0]} pixels)")

    def set_error(self, message: str, _traceback: str = "") -> None:
        self.source_view.setText(message)


# ------------------------------------------------------------------------------------------ SAE latents


