"""The `vidxai` console script: the GUI for `vidxai`, `vidxai open …` and `--self-test`, the headless CLI
(`engine.cli`) for everything else. Qt is imported only when a window is wanted, so batch jobs on a
server never load it."""

from __future__ import annotations

import argparse
import sys

GUI_COMMANDS = {"open", "gui"}


def _gui_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidxai open", description="Open videos or sessions in the review window.")
    p.add_argument("files", nargs="*", help="video files (.mp4, .mov, .flv, …) or sessions (.vxs)")
    p.add_argument("--demo", action="store_true", help="open the bundled demo clip, analysed by the default model")
    p.add_argument("--model", default=None, help="model folder to analyse with (default: the bundled model the measurements pick)")
    p.add_argument("--no-analyze", action="store_true", help="open without starting an analysis")
    p.add_argument("--self-test", action="store_true",
                   help="open offscreen, analyse the demo clip, save a session and a screenshot, exit 0 if all worked")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in GUI_COMMANDS or argv[0].startswith("--") and argv[0] not in {"--help", "-h",
                                                                                           "--version"}:
        if argv and argv[0] in GUI_COMMANDS:
            argv = argv[1:]
        args = _gui_parser().parse_args(argv)
        from vidxai_gui import app  # Qt is loaded only here

        if args.self_test:
            return app.self_test()
        return app.run(args.files, demo=args.demo, model_dir=args.model, analyze=not args.no_analyze)

    from engine import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
