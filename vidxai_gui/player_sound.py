"""The player's sound: mute and volume in the transport bar, the audio clock playback follows, loop-playing a
frame range (an annotation: L) and the optional short snippet when stepping or scrubbing.

`PlayerSound` is a part of `vidxai_gui.player.Player` (a mixin, like `PlayerControls`). While sound plays,
the frame due is the one the audio clock says (vidxai_gui.audio.AudioPlayer.clock): the video drops or repeats
frames to follow it, the sound is never stretched to follow the video. Without a sound track, without an audio
device, or when the sound cannot start, playback runs on the wall clock as before and `soundNote` says why.
"""

from __future__ import annotations

from PySide6.QtCore import QElapsedTimer, QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QSlider, QStyle, QToolButton

from vidxai_gui.audio import AudioPlayer, has_output_device

SNIPPET_S = 0.15  # what stepping or scrubbing plays when "sound when stepping" is on
PREROLL_S = 1.0  # the longest a (re)start waits for its first frame before the clocks run


class PlayerSound:
    """Mute, volume, the audio clock and range loops of the Player."""

    def _build_sound(self) -> None:
        self.audio = AudioPlayer(parent=self)
        self.audio.infoReady.connect(self._on_audio_info)
        self.sound_on = False  # the open video's sound plays now (its clock leads)
        self.sound_note = ""  # why there is no sound ("" when there is)
        self.snippets = False  # step / scrub play SNIPPET_S of sound
        self.loop_range: tuple[int, int, bool] | None = None  # first, end (exclusive), loop
        self._settings: QSettings | None = None
        self._preroll: int | None = None  # the frame a (re)start waits for (see _preroll_done)
        self._preroll_timer = QElapsedTimer()
        sp = QStyle.StandardPixmap
        self.mute_button = QToolButton()
        self.mute_button.setCheckable(True)
        self.mute_button.setAutoRaise(True)
        self.mute_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.mute_button.setIcon(self.style().standardIcon(sp.SP_MediaVolume))
        self.mute_button.setToolTip("Mute (M); the menu: sound when stepping or scrubbing")
        self.mute_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        menu = QMenu(self.mute_button)
        self.snippet_action = QAction(f"Sound when stepping or scrubbing ({SNIPPET_S * 1000:.0f} ms)", self)
        self.snippet_action.setCheckable(True)
        self.snippet_action.toggled.connect(self._set_snippets)
        menu.addAction(self.snippet_action)
        self.mute_button.setMenu(menu)
        self.mute_button.toggled.connect(lambda _on: self._volume_changed())
        self.volume = QSlider(Qt.Orientation.Horizontal)
        self.volume.setRange(0, 100)
        self.volume.setValue(80)
        self.volume.setFixedWidth(70)
        self.volume.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.volume.setToolTip("Volume")
        self.volume.valueChanged.connect(lambda _v: self._volume_changed())
        self.transport.addWidget(self.mute_button)
        self.transport.addWidget(self.volume)
        self.mute_action = QAction("Mute", self)
        self.mute_action.setShortcut(QKeySequence(Qt.Key.Key_M))
        self.mute_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.mute_action.triggered.connect(self.mute_button.toggle)
        self.addAction(self.mute_action)
        self._volume_changed()

    # --- settings -----------------------------------------------------------------------------
    def bind_settings(self, settings: QSettings) -> None:
        """Volume, mute and snippets as the last run left them; every change is remembered."""
        self._settings = None
        self.volume.setValue(int(settings.value("audio/volume", self.volume.value(), int)))
        self.mute_button.setChecked(settings.value("audio/muted", False, bool))
        self.snippet_action.setChecked(settings.value("audio/snippets", False, bool))
        self._settings = settings

    def _remember(self) -> None:
        if self._settings is not None:
            self._settings.setValue("audio/volume", self.volume.value())
            self._settings.setValue("audio/muted", self.mute_button.isChecked())
            self._settings.setValue("audio/snippets", self.snippets)

    def _volume_changed(self) -> None:
        muted = self.mute_button.isChecked()
        sp = QStyle.StandardPixmap
        self.mute_button.setIcon(self.style().standardIcon(sp.SP_MediaVolumeMuted if muted else sp.SP_MediaVolume))
        self.audio.set_volume(self.volume.value() / 100, muted)
        self._remember()

    def _set_snippets(self, on: bool) -> None:
        self.snippets = bool(on)
        self._remember()

    # --- the sound track ------------------------------------------------------------------------
    def _on_audio_info(self, info: object) -> None:
        if info is None:
            self.sound_note = "This video has no sound track: it plays silently"
        elif self.audio.sink is None and not has_output_device():
            self.sound_note = "No audio output device: the video plays silently"
        else:
            self.sound_note = ""
            return
        self.soundNote.emit(self.sound_note)

    def _start_sound(self, k: int) -> None:
        """Playback (re)starts at frame k: the clocks wait until the decoder has frame k (pre-roll, at most
        PREROLL_S), so the first frame is shown with its sound instead of being dropped to catch up."""
        self.audio.stop()
        self.sound_on = False
        self._preroll = k
        self._preroll_timer.start()

    def _preroll_done(self) -> bool:
        """Start the clocks once frame k is decoded: the sound from frame k's time (to the end of a loop
        range) at the playing speed, and the wall clock. False while still waiting."""
        k = self._preroll
        if k is None:
            return True
        if self.source is not None and not self.source.buffered() and self._preroll_timer.elapsed() < PREROLL_S * 1000:
            return False
        self._preroll = None
        stop = None
        if self.loop_range is not None and self.loop_range[1] < len(self.timestamps):
            stop = float(self.timestamps[self.loop_range[1]])
        self._clock.start()
        self.sound_on = self.audio.start(float(self.timestamps[k]), self.speed, stop)
        return True

    def _media_time(self) -> float:
        """Where playback is: the audio clock while sound plays, else the wall clock since the (re)start."""
        if self._preroll is not None:
            return float(self.timestamps[self._clock_start_frame])
        if self.sound_on and self.audio.active:
            return self.audio.clock()
        return float(self.timestamps[self._clock_start_frame]) + self._clock.elapsed() / 1000.0 * self.speed

    def _snippet(self, k: int) -> None:
        if self.snippets and not self._playing and 0 <= k < len(self.timestamps):
            t = float(self.timestamps[k])
            self.audio.start(t, 1.0, t + SNIPPET_S)

    # --- ranges -------------------------------------------------------------------------------
    def play_range(self, first: int, end: int, loop: bool = False) -> None:
        """Play frames [first, end) with their sound; again and again with `loop` (until `stop_range`)."""
        if self.source is None or self.info is None:
            return
        first = int(min(max(first, 0), self.last_frame))
        end = int(min(max(end, first + 1), self.frame_count))
        self.pause()
        self.loop_range = (first, end, bool(loop))
        self.requested = first
        self.play()

    def stop_range(self) -> None:
        if self.loop_range is not None:
            self.pause()

    @property
    def looping(self) -> bool:
        return self.loop_range is not None and self.loop_range[2]

    def _range_end(self, due: int) -> int:
        """The due frame, kept inside the range being played."""
        return min(due, self.loop_range[1] - 1) if self.loop_range is not None else due

    def _range_done(self) -> bool:
        """Past the range's end (its last frame's time is over, and all its sound was heard): start it again
        (loop) or stop. True when playback stopped here."""
        if self.loop_range is None:
            return False
        first, end, loop = self.loop_range
        t_end = float(self.timestamps[end]) if end < len(self.timestamps) else \
            float(self.timestamps[-1]) + 1.0 / self.fps
        if self._media_time() < t_end - 1e-6 or (self.sound_on and self.audio.active and not self.audio.finished):
            return False
        if loop:
            self._restart_clock(first)
            return False
        self.pause()
        return True
