"""clearset: scan training data sets against hash lists, clean them, and issue receipts.

The library is the product; the `clearset` command is one caller of it. Each stage of the
data's path is a subpackage: sources, hashing, lists, matching, sinks, receipts, audit and
engines.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clearset")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

TOOL_NAME = "clearset"
