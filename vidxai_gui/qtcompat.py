"""A guard against a reference-counting defect in the Qt binding, applied when the package is imported.

PySide6 6.12.0 (as installed here) drops one reference to ``True`` on every Python-side
``SignalInstance.emit()`` and one reference to ``None`` every time a C++ signal calls a Python slot. On
Python 3.11 those objects are not immortal, so after a few hundred emits (a progress bar, a second of
playback, pyqtgraph's own range signals) their count reaches zero and the interpreter aborts with
"Fatal Python error: bool_dealloc" / "none_dealloc". ``check_signal_refcounts`` measures whether the
installed binding has the defect; ``pin_singletons`` then gives the three singletons a reference count
far beyond anything a session could leak — what Python 3.12 does for them anyway (PEP 683). With a
fixed binding nothing is changed. Remove this module once the binding is fixed upstream.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_PIN = 1 << 40  # ~10^12 leaked references before trouble: decades of signals
_pinned = False


def check_signal_refcounts(n: int = 8) -> dict[str, int]:
    """References lost per ``n`` signal deliveries, measured on throwaway objects: {"True": k, "None": k}."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        sig = Signal(int)

    probe = _Probe()
    probe.sig.connect(lambda _v: None)
    before_true = sys.getrefcount(True)
    for i in range(n):
        probe.sig.emit(i)
    lost_true = before_true - sys.getrefcount(True)

    # objectNameChanged is emitted by C++, so this measures the C++ → Python slot path.
    emitter = QObject()
    emitter.objectNameChanged.connect(lambda _name: None)
    before_none = sys.getrefcount(None)
    for i in range(n):
        emitter.setObjectName(f"probe{i}")
    lost_none = before_none - sys.getrefcount(None)
    return {"True": max(lost_true, 0), "None": max(lost_none, 0)}


def pin_singletons() -> bool:
    """Make None, True and False practically immortal; returns False where that is not possible or needed."""
    global _pinned
    if _pinned or sys.version_info >= (3, 12):
        return _pinned or sys.version_info >= (3, 12)
    if hasattr(sys, "gettotalrefcount") or sys.implementation.name != "cpython":
        log.warning("cannot guard None/True/False against the Qt binding's reference leak on this interpreter")
        return False
    # ob_refcnt is the first field of every CPython object (release builds, checked above).
    for obj in (None, True, False):
        ctypes.c_ssize_t.from_address(id(obj)).value += _PIN
    _pinned = True
    return True


def apply() -> None:
    """Check the binding once and pin the singletons if it loses references."""
    if _pinned:
        return
    lost = check_signal_refcounts()
    if any(lost.values()):
        import PySide6

        pin_singletons()
        log.warning("PySide6 %s loses references in signal delivery (%s per 8 signals); pinned None/True/False "
                    "so the application cannot abort (see vidxai_gui/qtcompat.py)", PySide6.__version__, lost)
