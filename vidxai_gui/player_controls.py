"""The player's controls: the transport bar (first/back/play/forward/last, position, time readout, speed,
face view, heatmap opacity) and the transport keys as window-wide actions.

`PlayerControls` is a part of `vidxai_gui.player.Player` (a mixin, like the timeline's tracks): the buttons
call the Player's seek/step/toggle_play/set_speed/set_face_view.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QStyle, QToolButton

SPEEDS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def format_time(seconds: float) -> str:
    """mm:ss.cc — the precision a reviewer needs to find a frame again at 25–30 fps."""
    seconds = max(seconds, 0.0)
    minutes = int(seconds // 60)
    return f"{minutes:02d}:{seconds - 60 * minutes:05.2f}"



class PlayerControls:
    """The transport bar and keys of the Player."""

    def _tool(self, icon: QStyle.StandardPixmap, tip: str, slot: Callable[[], None]) -> QToolButton:
        button = QToolButton()
        button.setIcon(self.style().standardIcon(icon))
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.clicked.connect(slot)
        return button

    def _build_transport(self) -> None:
        sp = QStyle.StandardPixmap
        self.home_button = self._tool(sp.SP_MediaSkipBackward, "First frame (Home)", lambda: self.seek(0))
        self.back_button = self._tool(sp.SP_MediaSeekBackward, "Back one frame (Left); one second: Shift+Left",
                                      lambda: self.step(-1))
        self.play_button = self._tool(sp.SP_MediaPlay, "Play / pause (Space)", self.toggle_play)
        self.forward_button = self._tool(sp.SP_MediaSeekForward,
                                         "Forward one frame (Right); one second: Shift+Right", lambda: self.step(1))
        self.end_button = self._tool(sp.SP_MediaSkipForward, "Last frame (End)", lambda: self.seek(self.last_frame))
        self.position = QSlider(Qt.Orientation.Horizontal)
        self.position.setToolTip("Scrub through the video")
        self.position.valueChanged.connect(self._on_slider)
        self.readout = QLabel("frame – / – · 00:00.00")
        self.readout.setMinimumWidth(200)
        self.readout.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.readout.setStyleSheet("font-family: monospace")
        self.speed_combo = QComboBox()
        for s in SPEEDS:
            self.speed_combo.addItem(f"{s:g}×", s)
        self.speed_combo.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_combo.setToolTip("Playback speed")
        self.speed_combo.currentIndexChanged.connect(lambda _i: self.set_speed(self.speed_combo.currentData()))
        # Keys go to the window's shortcuts, not to the combo or slider (arrow keys would change them).
        self.speed_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.position.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setFixedWidth(90)
        self.opacity.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity.setToolTip("Heatmap opacity")
        self.opacity.valueChanged.connect(lambda v: self.view.heat_item.setOpacity(v / 100))
        self.face_button = QToolButton()
        self.face_button.setText("Face")
        self.face_button.setCheckable(True)
        self.face_button.setAutoRaise(True)
        self.face_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.face_button.setToolTip("Face view (F): follow the analysed person's face, cropped and steadied, "
                                    "with the overlays; again for the whole frame")
        self.face_button.toggled.connect(self.set_face_view)
        self.transport = QHBoxLayout()
        self.transport.setContentsMargins(4, 0, 4, 2)
        for w in (self.home_button, self.back_button, self.play_button, self.forward_button, self.end_button):
            self.transport.addWidget(w)
        self.transport.addWidget(self.position, 1)
        self.transport.addWidget(self.readout)
        self.transport.addWidget(self.speed_combo)
        self.transport.addWidget(self.face_button)
        self.transport.addWidget(QLabel("heatmap"))
        self.transport.addWidget(self.opacity)

    def _build_actions(self) -> None:
        """Transport keys as actions, so the window can list them in a menu and they work from anywhere."""
        def act(text: str, key: QKeySequence | Qt.Key | str, slot: Callable[[], None]) -> QAction:
            a = QAction(text, self)
            a.setShortcut(QKeySequence(key))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.triggered.connect(slot)
            self.addAction(a)
            return a

        mod = Qt.KeyboardModifier.ShiftModifier
        self.actions_transport = [
            act("Play / pause", Qt.Key.Key_Space, self.toggle_play),
            act("Next frame", Qt.Key.Key_Right, lambda: self.step(1)),
            act("Previous frame", Qt.Key.Key_Left, lambda: self.step(-1)),
            act("Forward 1 s", QKeySequence(mod | Qt.Key.Key_Right), lambda: self.step_seconds(1.0)),
            act("Back 1 s", QKeySequence(mod | Qt.Key.Key_Left), lambda: self.step_seconds(-1.0)),
            act("First frame", Qt.Key.Key_Home, lambda: self.seek(0)),
            act("Last frame", Qt.Key.Key_End, lambda: self.seek(self.last_frame)),
            act("Face view", Qt.Key.Key_F, lambda: self.set_face_view(not self.face_view)),
        ]
        self.face_action = self.actions_transport[-1]
        self.face_action.setCheckable(True)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.home_button, self.back_button, self.play_button, self.forward_button, self.end_button,
                  self.position, self.speed_combo, self.face_button):
            w.setEnabled(on)
        for a in self.actions_transport:
            a.setEnabled(on)

