"""clearset: scan training data sets against hash lists, clean them, and issue receipts.

The library is the product; the `clearset` command is one caller of it. The package is in
layers (cli, runs, stages, engines, documents, receipts, formats, matching, hashing, lists,
and the run folder's modules), each importing only those below it: docs/architecture.md
draws them and says what each holds.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clearset")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

TOOL_NAME = "clearset"
