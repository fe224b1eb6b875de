"""The registry of hash types: one entry per type, from which everything else derives.

A `HashType` says what a type is called, how wide one hash is, the manifest columns that
hold it, how it is computed (from the stored bytes, from the pixels, or from the row's
URL), the names other tools give it in their lists, how reports label it, and whether
it matches exactly or by Hamming distance. The manifest schema, list parsing, the
matcher's exact-or-distance dispatch, report labels and the CLI's help read this
registry; none of them lists the types. Only PDQ's own code names PDQ's columns (its
quality, border-trimmed and rotated hashes), as the one distance type.

Adding an exact hash of the stored bytes is one `register` call with a `hashlib`
constructor: the scan computes it in the same streaming pass as the others (one hashlib
object per type, all updated with each block), the manifest gains its column after those
already registered, lists naming it load, and the matcher checks it exactly::

    register(HashType("sha512", 64, "SHA-512", digest=hashlib.sha512))

A distance type (PDQ) points at the code that computes it (`clearset.hashing.item`'s fast
and reference paths) and at the matcher's Hamming search; a second one needs both.

The registry's order is the manifest's column order, which must not change for the
built-in types (manifests are compared byte for byte across versions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from clearset.hashing.urls import url_md5_forms, url_sha256
from clearset.settings import PDQ_MATCH_THRESHOLD

#: Where a type's hash comes from: the stored bytes, the decoded pixels, or the row's URL.
Computed = Literal["bytes", "pixels", "url"]


@dataclass(frozen=True)
class HashType:
    """One hash type. `name` is how clearset names it everywhere (lists, match rows,
    `--type`); the rest is derived from it where left out."""

    name: str
    #: Packed width of one hash in bytes (a list entry, a manifest cell).
    width: int
    #: How reports and messages name it ("SHA-256").
    label: str
    computed_from: Computed = "bytes"
    #: For byte digests: a hashlib-style constructor (`update`, `digest`).
    digest: Callable[[], Any] | None = None
    #: "exact", or "distance" (Hamming, with `default_threshold` bits).
    match: Literal["exact", "distance"] = "exact"
    default_threshold: int | None = None
    #: Other names lists give it (threatexchange signal types, HMA export names, CSV
    #: column names), lower-case; `name` is always one.
    aliases: tuple[str, ...] = ()
    #: Manifest columns this type adds, in order; default one `binary(width)` named `name`.
    manifest_columns: tuple[pa.Field, ...] = ()
    #: Manifest columns the matcher checks against an exact list, own hashes first.
    #: Default: `(name,)`.
    match_fields: tuple[str, ...] = ()
    #: For URL types: the list entries a URL could be listed as.
    url_forms: Callable[[str], tuple[bytes, ...]] | None = None

    def __post_init__(self) -> None:
        if not self.manifest_columns and self.computed_from == "bytes":
            object.__setattr__(
                self, "manifest_columns", (pa.field(self.name, pa.binary(self.width)),)
            )
        if not self.match_fields and self.computed_from != "url":
            object.__setattr__(self, "match_fields", (self.name,))
        if self.computed_from == "bytes" and self.digest is None:
            raise ValueError(f"hash type {self.name}: a byte digest needs `digest`")

    @property
    def exact(self) -> bool:
        return self.match == "exact"

    @property
    def of_file(self) -> bool:
        """Whether a file's own hashes give it (not the URL types)."""
        return self.computed_from != "url"


def _pdq_columns() -> tuple[pa.Field, ...]:
    return (
        pa.field("pdq", pa.binary(32)),
        pa.field("pdq_quality", pa.int16()),
        pa.field("pdq_trimmed", pa.binary(32)),
        pa.field("pdq_trimmed_quality", pa.int16()),
        # With --dihedral: the other 7 rotations/flips' hashes, 32 bytes each, in
        # clearset.hashing.pdq.DIHEDRAL_NAMES order after "original".
        pa.field("pdq_dihedral", pa.binary(224)),
    )


def _md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


def _sha1() -> Any:
    return hashlib.sha1(usedforsecurity=False)


def _url_sha256_forms(url: str) -> tuple[bytes, ...]:
    return (url_sha256(url),) if url.strip() else ()


def _url_md5_forms(url: str) -> tuple[bytes, ...]:
    return url_md5_forms(url) if url.strip() else ()


_REGISTRY: dict[str, HashType] = {}
#: Alias (lower-case) -> type name; rebuilt on every `register`.
_ALIASES: dict[str, str] = {}

# The order lists are loaded and named in predates the registry; outputs keep it. Types
# registered later follow, in registration order.
_LIST_ORDER = ("pdq", "md5", "sha1", "sha256", "url", "url_md5")


def register(hash_type: HashType) -> HashType:
    """Add `hash_type` (after those registered already) and its aliases."""
    names = (hash_type.name, *hash_type.aliases)
    for name in names:
        owner = _ALIASES.get(name.lower())
        if owner is not None and owner != hash_type.name:
            raise ValueError(f"hash type name {name!r} is already {owner}'s")
    if hash_type.name in _REGISTRY:
        raise ValueError(f"hash type {hash_type.name!r} is already registered")
    _REGISTRY[hash_type.name] = hash_type
    for name in names:
        _ALIASES[name.lower()] = hash_type.name
    return hash_type


def unregister(name: str) -> None:
    """Remove a type `register` added (tests that register one of their own)."""
    _REGISTRY.pop(name)
    for alias in [a for a, owner in _ALIASES.items() if owner == name]:
        del _ALIASES[alias]


def all_types() -> tuple[HashType, ...]:
    """Every registered type, in registry (manifest column) order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> HashType:
    """The type called `name` (clearset's own name). KeyError if none is."""
    return _REGISTRY[name]


def lookup(name: str) -> HashType | None:
    """The type another tool's name (any alias, any case, spaces around) means, or None."""
    ours = _ALIASES.get(name.strip().lower())
    return None if ours is None else _REGISTRY[ours]


def list_types() -> tuple[HashType, ...]:
    """Every type a list can hold, in the order lists are loaded and named."""
    known = [_REGISTRY[n] for n in _LIST_ORDER if n in _REGISTRY]
    return (*known, *(t for t in _REGISTRY.values() if t.name not in _LIST_ORDER))


def list_type_names() -> tuple[str, ...]:
    return tuple(t.name for t in list_types())


def file_types() -> tuple[HashType, ...]:
    """Types a file's own hashes give (`clearset hash --type`), in list order."""
    return tuple(t for t in list_types() if t.of_file)


def byte_types() -> tuple[HashType, ...]:
    """Digests of the stored bytes, in registry order."""
    return tuple(t for t in _REGISTRY.values() if t.computed_from == "bytes")


def digest_types() -> tuple[HashType, ...]:
    """Digests of the stored bytes, in list order (what checksum files hold)."""
    return tuple(t for t in list_types() if t.computed_from == "bytes")


def width(name: str) -> int:
    return _REGISTRY[name].width


def widths() -> dict[str, int]:
    """Type name -> packed width in bytes, in list order."""
    return {t.name: t.width for t in list_types()}


def by_hex_length(types: Iterable[HashType]) -> dict[int, list[HashType]]:
    """Hex length -> the given types of that width (list order kept)."""
    found: dict[int, list[HashType]] = {}
    for hash_type in types:
        found.setdefault(2 * hash_type.width, []).append(hash_type)
    return dict(sorted(found.items()))


def inferable_types() -> tuple[HashType, ...]:
    """Types an untyped hex entry may be: a file's hashes (URL types are never guessed)."""
    return file_types()


def spoken(words: Iterable[str], last: str = "or") -> str:
    """'MD5, SHA-1 or SHA-256'."""
    items = list(words)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def labels(computed_from: Computed) -> str:
    """'SHA-256, MD5 and SHA-1': the labels of the types computed from bytes (or pixels)."""
    return spoken((t.label for t in _REGISTRY.values() if t.computed_from == computed_from), "and")


def manifest_fields() -> tuple[pa.Field, ...]:
    """The manifest columns every registered type adds, in registry order."""
    return tuple(column for t in _REGISTRY.values() for column in t.manifest_columns)


def label(name: str | None) -> str:
    """How reports name a type; an unknown one by its own name."""
    hash_type = _REGISTRY.get(name or "")
    return hash_type.label if hash_type is not None else (name or "?")


def is_exact(name: str | None) -> bool:
    """Whether lists of this type match exactly (a type no longer registered: yes)."""
    hash_type = _REGISTRY.get(name or "")
    return hash_type is None or hash_type.exact


class ByteDigests:
    """Every registered byte digest of one stream, in one pass: each block updates all."""

    def __init__(self) -> None:
        self._digests = [(t.name, t.digest()) for t in byte_types() if t.digest is not None]
        self.size = 0

    def update(self, block: bytes) -> None:
        for _, digest in self._digests:
            digest.update(block)
        self.size += len(block)

    def result(self) -> dict[str, bytes]:
        """Type name -> raw digest, in registry order."""
        return {name: digest.digest() for name, digest in self._digests}


def digests_of(data: bytes) -> dict[str, bytes]:
    """Every registered byte digest of `data` (type name -> raw digest), as `ByteDigests`
    gives them, without its objects (a scan takes this for every member)."""
    digests: dict[str, bytes] = {}
    for t in _REGISTRY.values():
        if t.computed_from == "bytes" and t.digest is not None:
            digest = t.digest()
            digest.update(data)
            digests[t.name] = digest.digest()
    return digests


SHA256 = register(HashType("sha256", 32, "SHA-256", digest=hashlib.sha256,
                           aliases=("sha-256", "hash_sha256"),
                           match_fields=("sha256", "upstream_sha256")))  # fmt: skip
MD5 = register(HashType("md5", 16, "MD5", digest=_md5,
                        aliases=("photo_md5", "hash_md5", "md5_hash", "video_md5",
                                 "hash_video_md5"),
                        match_fields=("md5", "upstream_md5")))  # fmt: skip
SHA1 = register(HashType("sha1", 20, "SHA-1", digest=_sha1, aliases=("sha-1", "hash_sha1")))
PDQ = register(
    HashType(
        "pdq",
        32,
        "PDQ",
        computed_from="pixels",  # clearset.hashing.item: the fast path, or pdqhash's
        match="distance",
        default_threshold=PDQ_MATCH_THRESHOLD,
        aliases=("photo_pdq", "hash_pdq", "pdq_hash"),
        manifest_columns=_pdq_columns(),
    )
)
# A `url` list holds SHA-256 digests of URL strings; a `url_md5` list (python-threatexchange's
# signal type) MD5 digests of URLs. Both are checked against the row's URL.
URL = register(HashType("url", 32, "URL", computed_from="url", aliases=("uri",),
                        match_fields=("url",), url_forms=_url_sha256_forms))  # fmt: skip
URL_MD5 = register(HashType("url_md5", 16, "url_md5", computed_from="url",
                            aliases=("hash_url_md5",), match_fields=("url",),
                            url_forms=_url_md5_forms))  # fmt: skip
