"""Hashes of URL strings, as `url` and `url_md5` lists hold them.

A data-set row's URL is matched against such lists by these functions, and a list that
names URLs in the clear is stored as their `url_sha256`, so both sides hash alike.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlparse


def url_sha256(url: str) -> bytes:
    """The 32-byte entry a URL is stored as in a ``url`` list.

    Normalisation is deliberately minimal: surrounding whitespace is stripped and the
    rest is hashed as UTF-8, unchanged (no case folding, percent-decoding or trailing-slash
    removal), so that a list made by any tool that hashes the raw URL string matches. The
    matcher must hash data-set URLs with this same function.
    """
    return hashlib.sha256(url.strip().encode("utf-8")).digest()


def url_md5_forms(url: str) -> tuple[bytes, ...]:
    """The 16-byte ``url_md5`` entries a data-set URL could be listed as.

    python-threatexchange's ``url_md5`` hashes its own normal form of the URL: lower-cased,
    with the leading ``scheme://`` removed (as ``urllib.parse`` rebuilds it). Lists made
    by other tools hash the raw string. Both are matched, so a list from either finds
    the URL; an MD5 collision between the two forms of different URLs is not a concern.
    """
    raw = url.strip()
    forms = {hashlib.md5(raw.encode("utf-8")).digest()}
    try:
        parsed = urlparse(raw.lower())
        threatexchange = parsed.geturl().replace(f"{parsed.scheme}://", "", 1)
    except ValueError:  # e.g. a malformed IPv6 host: python-threatexchange fails too
        return tuple(forms)
    forms.add(hashlib.md5(threatexchange.encode("utf-8")).digest())
    return tuple(sorted(forms))
