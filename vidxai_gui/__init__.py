"""VidXAI's review GUI (PySide6 + pyqtgraph): thin, it shows and asks the engine through jobs."""

from vidxai_gui import qtcompat

# Before any widget exists: the installed Qt binding leaks references in signal delivery (see qtcompat).
qtcompat.apply()
