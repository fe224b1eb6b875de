"""The prompts command: the training set's most duplicated captions, to prompt a model with.

Carlini et al. (2023) chose the prompts for their extraction attack from the most
duplicated training items: an image seen many times is the likeliest to be memorised. The
procedure is then: generate M images per prompt with the model, and `clearset audit` them
against the run. Duplicates are counted two ways: items with exactly the same caption,
and items with exactly the same PDQ hash (the same picture, re-encoded or resized),
whose most common caption is the prompt.

A run's manifest holds no caption (only the caption file's hashes), so the captions are
read again from the source the run scanned: the `.txt` member of each key (WebDataset
shards, img2dataset's folders) or a caption column of a parquet source or of the URL list a
`scan --fetch` read (`caption`, `text`, `TEXT`, `prompt`), row by row. These are the
training set's own captions, listed for the operator who holds the set. Items the run
matched against a hash list are left out entirely: no output ever carries a caption of a
matched item.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clearset.errors import RunFolderError
from clearset.formats import FORMATS, source_from_spec
from clearset.formats.base import ShardRef, Source
from clearset.formats.urls import text_records, url_format
from clearset.hashing.item import STATUS_OK
from clearset.records import RunInfo
from clearset.runfolder import RunFolder

#: Parquet columns read as captions, in this order of preference (LAION writes TEXT).
CAPTION_COLUMNS = ("caption", "text", "TEXT", "prompt")
#: The member suffix a WebDataset or img2dataset folder keeps captions in.
CAPTION_SUFFIX = ".txt"
#: Longest caption kept, in characters (a caption file can hold anything).
MAX_CAPTION_CHARS = 2_000


@dataclass
class Prompts:
    by_caption: list[dict[str, Any]]
    by_image: list[dict[str, Any]]
    captions: int  # items with a caption
    matched_left_out: int  # items the run matched: their captions are never read out
    where: str  # where the captions were read from

    def to_dict(self) -> dict[str, Any]:
        return {
            "captions": self.captions,
            "matched_left_out": self.matched_left_out,
            "captions_from": self.where,
            "by_caption": self.by_caption,
            "by_image": self.by_image,
        }


def most_duplicated(run_dir: str | Path, top: int) -> Prompts:
    """The `top` most duplicated captions of the run's training set, both ways."""
    run = RunFolder(Path(run_dir))
    info = RunInfo.read(run)
    if not info.finished:
        raise RunFolderError(
            f"{run.path}: the scan is not finished; re-run the same `clearset scan` first"
        )
    manifest = run.read_manifest(
        columns=["key", "shard", "position", "status", "pdq", "pdq_quality"]
    )
    matched = _matched(run)
    source = source_from_spec(info.source)
    done = {str(m["shard"]) for m in run.done_markers()}
    shards, positions = manifest.column("shard").to_pylist(), manifest.column("position")
    keys: dict[tuple[str, int], str] = {
        (shard, position): key
        for shard, position, key in zip(
            shards, positions.to_pylist(), manifest.column("key").to_pylist(), strict=True
        )
    }
    captions, where = _captions(source, done, matched, keys)
    if not captions:
        looked = (
            f"a {'/'.join(CAPTION_COLUMNS)} column"
            if FORMATS[source.kind].captions_in == "column"
            else f"{CAPTION_SUFFIX} members"
        )
        raise RunFolderError(
            f"{run.path}: no caption of an unmatched item in its source {source.url} "
            f"(looked for {looked})"
        )
    by_caption = [
        {"caption": caption, "items": count}
        for caption, count in _top(Counter(captions.values()), top)
    ]
    min_quality = info.min_quality
    images = manifest.filter(
        pc.and_(
            pc.equal(manifest.column("status"), STATUS_OK),
            pc.greater_equal(pc.fill_null(manifest.column("pdq_quality"), -1), min_quality),
        )
    )
    groups: dict[bytes, list[tuple[str, str]]] = defaultdict(list)
    for shard, key, pdq in zip(
        images.column("shard").to_pylist(),
        images.column("key").to_pylist(),
        images.column("pdq").to_pylist(),
        strict=True,
    ):
        if (shard, key) not in matched:
            groups[pdq].append((shard, key))
    by_image = []
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
    for pdq, items in ranked[:top]:
        said = Counter(captions[item] for item in items if item in captions)
        caption, _ = _top(said, 1)[0] if said else (None, 0)
        by_image.append(
            {
                "pdq": pdq.hex(),
                "items": len(items),
                "caption": caption,
                "distinct_captions": len(said),
            }
        )
    return Prompts(by_caption, by_image, len(captions), len(matched), where)


def _top(counts: Counter[str], top: int) -> list[tuple[str, int]]:
    """The `top` most common, ties broken by the text (a stable, reproducible order)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def _matched(run: RunFolder) -> set[tuple[str, str]]:
    path = run.path / "matches.parquet"
    if not path.exists():
        return set()
    table = pq.read_table(path, columns=["shard", "key"])
    return set(zip(table.column("shard").to_pylist(), table.column("key").to_pylist(), strict=True))


def _captions(
    source: Source,
    done: set[str],
    matched: set[tuple[str, str]],
    keys: dict[tuple[str, int], str],
) -> tuple[dict[tuple[str, str], str], str]:
    """(shard, key) -> caption for every unmatched item of the scanned shards, and where
    they were read from."""
    captions: dict[tuple[str, str], str] = {}
    shards = [shard for shard in source.shards() if shard.name in done]
    if FORMATS[source.kind].fetches:
        # A URL list's captions are in the list itself; reading its shards would fetch
        # every image again (and find no caption member in what came back).
        return _url_list_captions(source, shards, matched, keys)
    if FORMATS[source.kind].captions_in == "column":
        for shard in shards:
            with fsspec.open(shard.path, "rb") as handle:
                names = pq.read_schema(handle).names
                column = next((c for c in CAPTION_COLUMNS if c in names), None)
                if column is None:
                    continue
                handle.seek(0)
                texts = pq.read_table(handle, columns=[column]).column(column).to_pylist()
            for position, text in enumerate(texts):
                key = keys.get((shard.name, position))
                if key is not None and isinstance(text, str) and (shard.name, key) not in matched:
                    captions[(shard.name, key)] = _clean(text)
        return captions, "the parquet source's caption column, row by row"
    for shard in shards:
        for item in source.read_shard(shard):
            member = item.member or ""
            if not member.endswith(CAPTION_SUFFIX) or item.data is None:
                continue
            if (item.shard, item.key) in matched:
                continue
            captions[(item.shard, item.key)] = _clean(item.data.decode("utf-8", "replace"))
    return captions, f"the source's {CAPTION_SUFFIX} members, by key"


def _url_list_captions(
    source: Any,
    shards: list[ShardRef],
    matched: set[tuple[str, str]],
    keys: dict[tuple[str, int], str],
) -> tuple[dict[tuple[str, str], str], str]:
    """`_captions` for a URL list scanned with `scan --fetch`: its caption column, row by
    row, no URL fetched. A row's manifest position is its number in its file."""
    captions: dict[tuple[str, str], str] = {}
    by_file: dict[str, dict[int, str]] = defaultdict(dict)
    for shard in shards:
        start = shard.rows[0] if shard.rows is not None else 0
        by_file[shard.path][start] = shard.name
    for path, starts in by_file.items():
        for position, text in _caption_cells(path, source.url_column):
            name = starts.get(position - position % source.shard_rows)
            key = keys.get((name, position)) if name is not None else None
            if key is not None and isinstance(text, str) and (name, key) not in matched:
                captions[(name, key)] = _clean(text)  # type: ignore[index]  # name is, as key is
    return captions, "the URL list's caption column, row by row (no URL fetched)"


def _caption_cells(path: str, url_column: str | None) -> Iterator[tuple[int, Any]]:
    """(row number, caption cell) of every row of a URL list with a caption column."""

    fmt = url_format(path)
    if fmt == "parquet":
        with fsspec.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            column = next((c for c in CAPTION_COLUMNS if c in names), None)
            if column is None:
                return
            position = 0
            for batch in parquet.iter_batches(batch_size=4096, columns=[column]):
                for text in batch.column(0).to_pylist():
                    yield position, text
                    position += 1
        return
    if fmt == "list":
        return  # one URL a line: no caption to read
    _, _, records = text_records(path, fmt, url_column, need_url=False)
    for position, (_, fields) in enumerate(records):
        if fields is not None:
            column = next((c for c in CAPTION_COLUMNS if c in fields), None)
            yield position, fields.get(column) if column is not None else None


def _clean(text: str) -> str:
    return " ".join(text.split())[:MAX_CAPTION_CHARS]
