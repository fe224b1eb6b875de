"""Review aids: an allow list of reviewed false positives, and a flood warning.

Both serve the operator who looks at what a match found (HMA's users asked for both).
They are used by the local path (`clearset scan --list`, `clearset match`, then `clean`,
`receipt`, `report`, `status`) and by the holder's and builder's sides of an exchange,
through the same few functions:

**Allow list.** SHA-256 values of items an operator reviewed as false positives. A match
of such an item is still recorded (its match row says ``allowed = true``), counted
("N samples allowed by review") and shown, but it is not removed: `clean` keeps the
item, and a receipt over that clean says how many matched-but-allowed samples it kept
and names the allow list by digest. Two file forms:

* text: one hex SHA-256 (64 digits, any case) per line; ``#`` starts a comment (a whole
  line or after the value); blank lines are skipped. Anything else is refused with a
  one-line error naming the file and the line.
* parquet (a file ending ``.parquet``): a ``sha256`` column of hex text or 32-byte
  binary values; a bad value is refused naming the file and the row.

An allow list's identity is its **digest**: hex SHA-256 of
``"clearset-allowlist-v1\\n"`` followed by each unique value as lower-case hex and a
newline, in ascending order (for a text list: ``{ echo clearset-allowlist-v1; sed
's/#.*//' FILE | tr -d ' \\t' | grep -v '^$' | tr A-F a-f | LC_ALL=C sort -u; } |
sha256sum``), and its number of unique ``entries``. Only those two
go into run.json, the report and the receipt, never the values.

**Flood warning.** One list entry matching an unusual number of images usually means a
benign image collides with the entry (a logo, a blank frame, an all-grey PDQ).
`floods` names each entry that matched at least `FLOOD_THRESHOLD` images (default 50;
``--flood-threshold``) by its list and its ordinal (its 1-based position in the list's
entries in ascending byte order, the order clearset's digest covers), never by its value
beyond what the match rows already hold.

API (what a caller needs):

* `load_allow_list(path) -> AllowList`, with `.digest`, `.entries`, `.holds(sha256s)`,
  `.identity()` ({"digest", "entries"}).
* `Review(allow, flood_threshold)`: both settings, picklable; `Review.record()` is what
  run.json keeps.
* `mark_allowed(matches, allow) -> matches` sets the ``allowed`` column of match rows.
* `ReviewedMatcher(matcher, review)`: a Matcher whose `match_table` marks allowed rows.
* `summarise(matches, lists, review) -> dict`: allowed counts and floods, for run.json.
* `floods(matches, lists, threshold) -> list[dict]` and `flood_line(flood) -> str`.
* `allowed_kept(matches, removed_keys) -> int`: samples matched, allowed and kept.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.errors import InputError
from clearset.lists.model import HashList, as_void
from clearset.matching.matcher import Matcher
from clearset.progress import plural

#: Images one list entry may match before `floods` reports it (``--flood-threshold``).
#: Real matches of one known image are a handful of copies; 50 identical hits on one
#: entry is far more often one benign image (a placeholder, a logo) colliding with it.
FLOOD_THRESHOLD = 50

#: First line of the text an allow list's digest is taken over.
ALLOW_DIGEST_SCHEME = "clearset-allowlist-v1"

#: Name of the match rows' column that marks a match of an allowed item.
ALLOWED_COLUMN = "allowed"

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class AllowList:
    """Reviewed SHA-256 values (false positives): matched, recorded, never removed."""

    path: str
    values: frozenset[bytes]
    digest: str

    @property
    def entries(self) -> int:
        return len(self.values)

    def identity(self) -> dict[str, Any]:
        """What outputs name it by: digest and count, never the values or the path."""
        return {"digest": self.digest, "entries": self.entries}

    def holds(self, sha256s: Iterable[bytes | None]) -> list[bool]:
        return [value is not None and bytes(value) in self.values for value in sha256s]


def allow_digest(values: Iterable[bytes]) -> str:
    """The digest of an allow list's values (module docstring)."""
    digest = hashlib.sha256(f"{ALLOW_DIGEST_SCHEME}\n".encode())
    for value in sorted(set(values)):
        digest.update(value.hex().encode() + b"\n")
    return digest.hexdigest()


def load_allow_list(path: str | Path) -> AllowList:
    """Read an allow list (text or parquet, module docstring); InputError naming the file
    and the line or row of the first bad value."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such allow list")
    values = _parquet_values(path) if path.suffix == ".parquet" else _text_values(path)
    return AllowList(str(path), frozenset(values), allow_digest(values))


def _text_values(path: Path) -> list[bytes]:
    values: list[bytes] = []
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{path}, line {number}: not UTF-8 text") from None
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                if not _HEX64.fullmatch(text):
                    raise InputError(
                        f"{path}, line {number}: not a hex SHA-256 (64 hex digits, one a line; "
                        "# starts a comment)"
                    )
                values.append(bytes.fromhex(text))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the allow list ({exc.strerror})") from None
    return values


def _parquet_values(path: Path) -> list[bytes]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    if "sha256" not in table.column_names:
        raise InputError(f"{path}: an allow list needs a sha256 column")
    values: list[bytes] = []
    for row, value in enumerate(table.column("sha256").to_pylist(), 1):
        if isinstance(value, bytes) and len(value) == 32:
            values.append(value)
        elif isinstance(value, str) and _HEX64.fullmatch(value.strip()):
            values.append(bytes.fromhex(value.strip()))
        else:
            raise InputError(
                f"{path}, row {row}: sha256 is not a SHA-256 (64 hex digits or 32 bytes)"
            )
    return values


@dataclass(frozen=True)
class Review:
    """The review settings of one match: an allow list (or none) and the flood threshold."""

    allow: AllowList | None = None
    flood_threshold: int = FLOOD_THRESHOLD

    def __post_init__(self) -> None:
        if self.flood_threshold < 1:
            raise InputError(f"--flood-threshold must be at least 1, got {self.flood_threshold}")

    def record(self) -> dict[str, Any]:
        """What run.json's matching record adds: the allow list's identity, when there is
        one (it changes what a clean removes). The flood threshold changes no output but a
        warning, so it is kept with the match counts (`summarise`), not here."""
        return {} if self.allow is None else {"allow_list": self.allow.identity()}


def mark_allowed(matches: pa.Table, allow: AllowList | None) -> pa.Table:
    """`matches` (match rows with a ``sha256`` column) with ``allowed`` set: True where
    the item's SHA-256 is on `allow`, False otherwise (every row False without one)."""
    if allow is None or not allow.values:
        flags = pa.array([False] * matches.num_rows, pa.bool_())
    else:
        flags = pa.array(allow.holds(matches.column("sha256").to_pylist()), pa.bool_())
    if ALLOWED_COLUMN in matches.column_names:
        at = matches.column_names.index(ALLOWED_COLUMN)
        return matches.set_column(at, matches.schema.field(ALLOWED_COLUMN), flags)
    return matches.append_column(pa.field(ALLOWED_COLUMN, pa.bool_()), flags)


def allowed_mask(matches: pa.Table) -> list[bool]:
    """Per match row: whether review allowed it (rows written before the column: no)."""
    if ALLOWED_COLUMN not in matches.column_names:
        return [False] * matches.num_rows
    return [bool(v) for v in matches.column(ALLOWED_COLUMN).to_pylist()]


class ReviewedMatcher(Matcher):
    """`matcher` (its lists and its built or mapped indexes, shared, not copied) whose
    match rows say which items the review allowed."""

    def __init__(self, matcher: Matcher, review: Review) -> None:
        super().__init__(matcher.lists, matcher.settings, video_indexes=matcher.video_indexes)
        self._indexes = matcher._indexes  # one index, built once, whichever object asks
        self.review = review

    def match_table(self, manifest: pa.Table, frames: pa.Table | None = None) -> pa.Table:
        return mark_allowed(super().match_table(manifest, frames), self.review.allow)


def review_of(matcher: Matcher | None) -> Review:
    """The review a matcher applies (the defaults for a plain Matcher)."""
    return matcher.review if isinstance(matcher, ReviewedMatcher) else Review()


def _entry_ordinal(hash_list: HashList, entry_hex: str) -> int | None:
    try:
        entry = np.frombuffer(bytes.fromhex(entry_hex), dtype=np.uint8)
    except ValueError:
        return None
    if entry.size != hash_list.hashes.shape[1]:
        return None
    at = int(np.searchsorted(as_void(hash_list.hashes), as_void(entry[None, :])[0]))
    if at < len(hash_list) and hash_list.hashes[at].tobytes() == entry.tobytes():
        return at + 1
    return None


def _samples(matches: pa.Table) -> list[Any]:
    """Each match row's sample: (shard, key) in a run's match rows; the row itself where
    there are none (a holder's rows of a request: each row is one item)."""
    if {"shard", "key"} <= set(matches.column_names):
        columns = (matches.column("shard").to_pylist(), matches.column("key").to_pylist())
        return list(zip(*columns, strict=True))
    return list(range(matches.num_rows))


def floods(
    matches: pa.Table, lists: Sequence[HashList], threshold: int = FLOOD_THRESHOLD
) -> list[dict[str, Any]]:
    """Every list entry that matched at least `threshold` images (match rows), most first:
    {list_name, list_version, list_digest, hash_type, entry_ordinal, entries, images,
    samples}. `entry_ordinal` is 1-based in the list's ascending byte order (None if the
    entry is not found in `lists`, e.g. a list no longer loaded). `matches` needs the
    columns list_digest, list_name, list_version, hash_type and entry; shard and key, where
    present, say which rows are one sample."""
    if matches.num_rows == 0:
        return []
    names = ("list_digest", "hash_type", "entry")
    grouped = Counter(zip(*(matches.column(n).to_pylist() for n in names), strict=True))
    flooding = {key: n for key, n in grouped.items() if n >= threshold}
    if not flooding:
        return []
    samples: dict[tuple[str, str, str], set[Any]] = {k: set() for k in flooding}
    columns = [matches.column(n).to_pylist() for n in names]
    for digest, kind, entry, item in zip(*columns, _samples(matches), strict=True):
        if (digest, kind, entry) in samples:
            samples[(digest, kind, entry)].add(item)
    by_identity = {(hl.identity.digest, hl.hash_type): hl for hl in lists}
    label = {
        (d, t): (n, v)
        for d, t, n, v in zip(
            *(matches.column(c).to_pylist() for c in ("list_digest", "hash_type")),
            matches.column("list_name").to_pylist(),
            matches.column("list_version").to_pylist(),
            strict=True,
        )
    }
    found = []
    for (digest, kind, entry), images in flooding.items():
        hash_list = by_identity.get((digest, kind))
        name, version = label[(digest, kind)]
        found.append(
            {
                "list_name": name,
                "list_version": version,
                "list_digest": digest,
                "hash_type": kind,
                "entry_ordinal": None if hash_list is None else _entry_ordinal(hash_list, entry),
                "entries": None if hash_list is None else len(hash_list),
                "images": images,
                "samples": len(samples[(digest, kind, entry)]),
            }
        )
    found.sort(key=lambda f: (-f["images"], f["list_name"], f["entry_ordinal"] or 0))
    return found


def flood_line(flood: dict[str, Any], threshold: int | None = None, hint: str | None = None) -> str:
    """One printable line for one flooding entry (`hint`: what to do, when not the local
    path's; a flood a list holder reported, with its ``answer``, says so)."""
    entry = (
        f"entry #{flood['entry_ordinal']:,} of {flood['entries']:,}"
        if flood.get("entry_ordinal") is not None
        else "one entry"
    )
    limit = f" (flood threshold {threshold:,})" if threshold is not None else ""
    if hint is None and flood.get("answer"):
        by = flood.get("holder") or f"key {flood.get('holder_key_id')}"
        limit += f", reported by holder {by} in answer {str(flood['answer'])[:16]}"
        hint = (
            "review this list's matches from that answer (matches.parquet), and add reviewed "
            "false positives to an --allow-list"
        )
    return (
        f"warning: {entry} of list {flood['list_name']!r} ({flood['hash_type']}) matched "
        f"{flood['images']:,} images in {flood['samples']:,} samples{limit}: often a benign "
        "image colliding with the entry; "
        + (
            hint
            or "review these matches (rows with this list and entry in matches.parquet), and "
            "add reviewed false positives to an --allow-list"
        )
    )


def summarise(
    matches: pa.Table, lists: Sequence[HashList], review: Review | None = None
) -> dict[str, Any]:
    """What run.json's match counts add for review: {allowed: {rows, samples},
    flood_threshold, floods}."""
    review = review or Review()
    mask = allowed_mask(matches)
    keys = _samples(matches)
    allowed_samples = {k for k, allowed in zip(keys, mask, strict=True) if allowed}
    return {
        "allow_list": None if review.allow is None else review.allow.identity(),
        "allowed": {"rows": sum(mask), "samples": len(allowed_samples)},
        "flood_threshold": review.flood_threshold,
        "floods": floods(matches, lists, review.flood_threshold),
    }


def review_section(matching: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    """The review part of a report or status, from run.json: the matching record (the
    allow list's identity) and the match counts (`summarise`'s)."""
    return {
        "allow_list": matching.get("allow_list"),
        "allowed": counts.get("allowed") or {"rows": 0, "samples": 0},
        "flood_threshold": counts.get("flood_threshold", FLOOD_THRESHOLD),
        "floods": counts.get("floods") or [],
    }


def review_text(review: dict[str, Any]) -> str:
    """A receipt's review field in words."""
    kept = review["allowed_kept"]
    allow = review["allow_list"]
    return (
        f"kept {kept:,} matched sample{'s' if kept != 1 else ''} the operator's review allowed "
        f"(allow list {allow['digest']}, {plural(allow['entries'], 'entry', 'entries')})"
    )


def review_lines(summary: dict[str, Any]) -> list[str]:
    """Printable lines for `summarise`'s part of a match summary: what the allow list
    kept, and one warning per flooding entry (none for a summary without review)."""
    lines = []
    allow = summary.get("allow_list")
    if allow is not None:
        samples = summary.get("allowed", {}).get("samples", 0)
        lines.append(
            f"{plural(samples, 'matched sample')} allowed by review (kept, not removed): "
            f"allow list {allow['digest'][:16]}, {plural(allow['entries'], 'entry', 'entries')}"
        )
    threshold = summary.get("flood_threshold")
    lines += [flood_line(flood, threshold) for flood in summary.get("floods", ())]
    return lines


def allowed_kept(matches: pa.Table, removed: Iterable[tuple[str, str]]) -> int:
    """Samples (shard, key) with an allowed match that are not among `removed` (shard,
    key) pairs: what a receipt says it kept although a list matched them."""
    mask = allowed_mask(matches)
    if not any(mask):
        return 0
    table = matches.filter(pa.array(mask, pa.bool_()))
    allowed = set(
        zip(table.column("shard").to_pylist(), table.column("key").to_pylist(), strict=True)
    )
    return len(allowed - set(removed))


def not_allowed(matches: pa.Table) -> pa.Table:
    """The match rows that decide removals: those review did not allow."""
    if ALLOWED_COLUMN not in matches.column_names:
        return matches
    return matches.filter(pc.invert(pc.fill_null(matches.column(ALLOWED_COLUMN), False)))


def with_allowed_column(matches: pa.Table) -> pa.Table:
    """Match rows written before the ``allowed`` column, given it (null: not allowed)."""
    if ALLOWED_COLUMN in matches.column_names:
        return matches
    return matches.append_column(
        pa.field(ALLOWED_COLUMN, pa.bool_()), pa.nulls(matches.num_rows, pa.bool_())
    )
