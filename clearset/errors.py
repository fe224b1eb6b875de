"""The exceptions clearset raises on purpose.

Every error a user can cause (a missing file, a malformed list line, a run folder made
with other settings) is one of these, with a message that names the file and the problem
in one line. The CLI prints that line on stderr and exits non-zero; anything else is a bug.
"""

import sys


class ClearsetError(Exception):
    """Base class: a problem the user can act on. str(error) is the one-line message.

    `transient`: made while handling an I/O error (`except OSError: raise InputError(...)`),
    so another try may succeed; otherwise the input itself is bad and a retry would fail
    the same way. Kept when the error is pickled from a worker to the driver."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        handling = sys.exc_info()[1]
        self.transient = isinstance(handling, OSError | TimeoutError)

    def __str__(self) -> str:
        # A message often quotes a library's error (pyarrow's run over several lines):
        # it is folded onto one line, so every error stays one line wherever it is shown.
        text = super().__str__()
        return " ".join(text.split()) if "\n" in text or "\r" in text else text


class InputError(ClearsetError):
    """A source, list, key or proof the user gave cannot be read or is malformed."""


class RunFolderError(ClearsetError):
    """A run folder is missing, incomplete, or was made with incompatible settings."""


class OutputError(ClearsetError):
    """An output location cannot be written, or holds something that is not ours."""


class VerificationError(ClearsetError):
    """A receipt or proof did not verify. The message says why."""


class MissingExtraError(ClearsetError):
    """An optional dependency (ray, a cloud filesystem) is needed but not installed."""
