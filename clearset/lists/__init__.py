"""Load and validate operator hash lists, and name them by identity, never by contents.

``load_list(path)`` reads a plain-text, threatexchange, CSV/TSV or JSON list (local or
fsspec URL) into one :class:`HashList` per hash type: sorted unique packed hashes plus a
:class:`ListIdentity` (name, version, digest) that reports and receipts name. The digest's
canonical form is documented in :mod:`clearset.lists.model`.
"""

from clearset.lists.formats import FORMAT_BY_NAME, FORMATS, ListFormat, detect_format
from clearset.lists.loader import load_list
from clearset.lists.model import (
    DIGEST_SCHEME,
    HASH_BYTES,
    HASH_TYPES,
    HashList,
    ListIdentity,
    list_digest,
    normalise_signal,
    url_sha256,
)

__all__ = [
    "DIGEST_SCHEME",
    "FORMATS",
    "FORMAT_BY_NAME",
    "HASH_BYTES",
    "HASH_TYPES",
    "HashList",
    "ListFormat",
    "ListIdentity",
    "detect_format",
    "list_digest",
    "load_list",
    "normalise_signal",
    "url_sha256",
]
