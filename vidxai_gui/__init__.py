"""VidXAI's review GUI (PySide6 + pyqtgraph): thin, it shows and asks the engine through jobs.

Importing this package loads no Qt: the console script (`vidxai_gui.launcher`) must stay light for
headless commands. Qt comes in with `vidxai_gui.app` and the widget modules.
"""
