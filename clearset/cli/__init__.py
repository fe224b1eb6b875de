"""The `clearset` command: thin, it parses arguments and calls the library.

Each module registers its commands on the one Typer app. Every ClearsetError becomes one
line on stderr and a non-zero exit, with no traceback.
"""

from __future__ import annotations

import sys

from rich.text import Text

from clearset.cli import clean, commands, receipts  # noqa: F401  (they register commands)
from clearset.cli.app import EXIT_ERROR, app, console
from clearset.errors import ClearsetError, InputError

__all__ = ["app", "main"]


def main() -> None:
    # Typer/click handle usage errors themselves (exit 2 with a usage line); our own
    # errors are the user's to act on: one line, no traceback.
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into exit 130 before we see it
            console.print("clearset: interrupted; re-run the same command to resume")
        raise
    except ClearsetError as exc:
        # A Text, not markup: the message quotes user paths, which may hold `[`.
        console.print(Text.assemble(("clearset: error:", "red"), f" {exc}"))
        sys.exit(EXIT_ERROR if isinstance(exc, InputError) else 1)
    except KeyboardInterrupt:
        console.print("clearset: interrupted; re-run the same command to resume")
        sys.exit(130)
