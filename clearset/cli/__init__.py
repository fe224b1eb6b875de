"""The `clearset` command: thin, it parses arguments and calls the library.

Each module registers its commands on the one Typer app. Every ClearsetError becomes one
line on stderr and a non-zero exit, with no traceback; so does an operating-system error
(disk full, file too large, read-only or forbidden folder) that reaches the top, naming
the path and the problem.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from rich.text import Text

from clearset.atomic import remove_pending_tmp
from clearset.cli import audit, clean, commands, documents, exchange, receipts  # noqa: F401  (they register commands)
from clearset.cli.app import EXIT_ERROR, app, console
from clearset.errors import ClearsetError, InputError

__all__ = ["app", "main"]

INTERRUPTED = "clearset: interrupted; re-run the same command to resume"


def main() -> None:
    # Typer/click handle usage errors themselves (exit 2 with a usage line); our own
    # errors are the user's to act on: one line, no traceback.
    _stop_on_first_interrupt()
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into exit 130 before we see it
            remove_pending_tmp()  # the Ctrl-C may have landed in a write's clean-up
            console.print(INTERRUPTED)
        raise
    except ClearsetError as exc:
        _error_line(str(exc))
        sys.exit(EXIT_ERROR if isinstance(exc, InputError) else 1)
    except OSError as exc:
        # A last resort: the library maps the errors it expects to OutputError/InputError
        # with context; anything the OS still throws at us is said in one line too.
        _error_line(os_error_line(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        remove_pending_tmp()
        console.print(INTERRUPTED)
        sys.exit(130)


def os_error_line(exc: OSError) -> str:
    """'PATH: problem' for an OSError, as `ls` or `cp` would say it."""
    problem = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, getattr(exc, "filename2", None)) if p is not None]
    if not paths:
        return problem
    return f"{' -> '.join(str(p) for p in paths)}: {problem}"


def _error_line(message: str) -> None:
    # A Text, not markup: the message quotes user paths, which may hold `[`.
    console.print(
        Text.assemble(("clearset: error:", "red"), f" {message}"), highlight=False, soft_wrap=True
    )


def _stop_on_first_interrupt() -> None:
    """The first Ctrl-C stops the command; any more while it stops are ignored.

    Stopping takes a moment (workers are ended, temporary files removed, the message
    printed); a second Ctrl-C in that moment used to land anywhere in the unwinding and
    end the process with a traceback or by the signal itself. Left alone when SIGINT is
    already ignored (started in the background with `nohup` or `&`).
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
