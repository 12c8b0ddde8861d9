"""Entry script of the PyInstaller bundle: the same `vidxai` command as the console script (GUI by default,
`open`, `--self-test`, and every headless CLI subcommand)."""

import multiprocessing
import sys

from vidxai_gui.launcher import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # engine.data.cache uses a process pool; frozen children need this
    sys.exit(main())
