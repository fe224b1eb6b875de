"""MLCommons Croissant 1.0 JSON-LD for the cleaned copy, with Responsible-AI fields.

The distribution lists the cleaned copy's files as FileObjects with their SHA-256 and
size (paths relative to the copy's root: publish the file there), or, past
`MAX_FILE_OBJECTS` files, FileSets by extension. Record sets describe the columns a user
needs to find an item again (key, URL, hashes, sizes, status) where the copy holds them
in parquet: the cleaned parquet itself, or img2dataset's side parquet beside each tar;
a folder copy gets a record set of its image files. The RAI fields the run can fill are
`rai:dataCollection`, `rai:dataCollectionTimeframe` (when the source records it),
`rai:dataCollectionMissingData`, `rai:dataPreprocessingProtocol` and
`rai:dataManipulationProtocol`; the rest come from the answers or are gaps. A copy that
removed items is a new MAJOR version of the source (`dataset.source_version`).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from clearset import TOOL_NAME, __version__, storage
from clearset.documents.counts import plural
from clearset.documents.facts import (
    RunFacts,
    list_identity_text,
    number,
    parquet_columns,
    removal_paragraph,
)
from clearset.errors import RunFolderError
from clearset.formats import Format, format_of
from clearset.hashing import types as hash_types
from clearset.runfolder import file_sha256

FORMAT = "croissant"
DEFAULT_NAME = "croissant.json"

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

#: Above this many files the copy is described by FileSets per extension (no per-file
#: SHA-256: the run's cleaned manifest holds each item's).
MAX_FILE_OBJECTS = 1_000

#: The Croissant 1.0 @context, with the RAI namespace.
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

ENCODINGS = {
    ".tar": "application/x-tar",
    ".parquet": "application/x-parquet",
    ".json": "application/json",
    ".jsonl": "application/jsonlines",
    ".txt": "text/plain",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
IMAGE_EXTENSIONS = frozenset(e for e, t in ENCODINGS.items() if t.startswith("image/"))

#: Columns worth a record-set field: what finds an item again, never content (no image
#: bytes, no caption).
USEFUL_COLUMNS = (
    "key", "__key__", "id", "uid", "image_id", "url", "URL", "image_url", "sha256", "SHA256",
    "md5", "MD5", "width", "height", "original_width", "original_height", "status",
)  # fmt: skip


def render(facts: RunFacts) -> str:
    a = facts.answers
    distribution, record_sets = _distribution(facts)
    metadata: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": facts.dataset_name,
        "description": (
            f"{a.fill('dataset.description')} This is the copy {facts.destination_name!r} "
            f"of the source {facts.source_name!r}, cleaned by {TOOL_NAME}: "
            f"{facts.kept_text()} kept, {plural(facts.removed['samples'], 'sample')} removed "
            "after matching hash lists of known illegal material. File paths are relative "
            "to the cleaned copy's root; publish this file there. A draft for the "
            "operator's legal review."
        ),
        "license": a.fill("dataset.license"),
        "creator": {"@type": "sc:Organization", "name": a.fill("provider.name")},
        "citeAs": a.fill("dataset.citation"),
        "url": a.get("dataset.url"),
        "datePublished": a.get("dataset.date_published"),
        "version": _version(facts),
        "distribution": distribution,
        "recordSet": record_sets,
        "rai:dataCollection": _collection(facts),
        "rai:dataCollectionTimeframe": _timeframe(facts),
        "rai:dataCollectionMissingData": _missing(facts),
        "rai:dataPreprocessingProtocol": [_preprocessing(facts)],
        "rai:dataManipulationProtocol": _manipulation(facts),
        "rai:dataUseCases": [a.fill("dataset.purpose")],
        "rai:dataBiases": [a.fill("dataset.biases")],
        "rai:dataLimitations": [a.fill("dataset.limitations")],
        "rai:personalSensitiveInformation": [a.fill("dataset.personal_information")],
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}
    return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"


def _version(facts: RunFacts) -> str:
    """The cleaned copy's version: the source's next MAJOR when items were removed."""
    source = facts.answers.get("dataset.source_version")
    if source is None:
        return facts.answers.fill("dataset.source_version")
    major, minor, patch = (int(p) for p in source.split("."))
    return f"{major + 1}.0.0" if facts.removed["samples"] else f"{major}.{minor}.{patch}"


def _distribution(facts: RunFacts) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    files = facts.files
    if not files:
        raise RunFolderError(f"{facts.run}: the clean recorded no file of its copy")
    distribution: list[dict[str, Any]] = []
    if len(files) <= MAX_FILE_OBJECTS:
        for name in files:
            distribution.append(_file_object(facts.destination, name))
    by_ext: dict[str, list[str]] = {}
    for name in files:
        by_ext.setdefault(PurePosixPath(name).suffix.lower(), []).append(name)
    record_sets: list[dict[str, Any]] = []
    parquet = by_ext.get(".parquet")
    if parquet:
        distribution.append(_file_set("parquet-files", "*.parquet", ".parquet", parquet))
        schema = parquet_columns(facts.destination / parquet[0])
        fields = _parquet_fields(schema) if schema is not None else []
        if fields:
            fmt = format_of(facts.source_kind)
            what = fmt.croissant_parquet if fmt is not None else Format.croissant_parquet
            record_sets.append(
                {
                    "@type": "cr:RecordSet",
                    "@id": "items",
                    "name": "items",
                    "description": f"One record per kept item, from {what}: the columns "
                    "that find an item again (no image bytes, no caption).",
                    "field": [_field("parquet-files", column, kind) for column, kind in fields],
                }
            )
            keys = [c for c, _ in fields if c in ("key", "__key__", "id", "uid", "image_id")]
            if keys:
                record_sets[-1]["key"] = {"@id": f"items/{keys[0]}"}
    images = sorted(ext for ext in by_ext if ext in IMAGE_EXTENSIONS)
    if images and (fmt := format_of(facts.source_kind)) is not None and fmt.croissant_images:
        for ext in images:
            distribution.append(_file_set(f"images{ext}", f"*{ext}", ext, by_ext[ext]))
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": "images",
                "name": "images",
                "description": "One record per kept image file of the cleaned folder.",
                "field": [
                    {
                        "@type": "cr:Field",
                        "@id": f"images/{prop}",
                        "name": prop,
                        "dataType": "sc:Text",
                        "source": {
                            "fileSet": {"@id": f"images{images[0]}"},
                            "extract": {"fileProperty": prop},
                        },
                    }
                    for prop in ("filename", "filepath")
                ],
            }
        )
    if len(files) > MAX_FILE_OBJECTS:
        for ext in sorted(set(by_ext) - {".parquet"} - (set(images) if images else set())):
            distribution.append(_file_set(f"files{ext or '-none'}", f"*{ext}", ext, by_ext[ext]))
    return distribution, record_sets


def _file_object(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    storage.fetch(path)  # a copy in a bucket: hashed as it is there
    try:
        size = path.stat().st_size
        sha256 = file_sha256(path)
    except OSError as exc:
        raise RunFolderError(
            f"{path}: a file of the cleaned copy cannot be read ({exc.strerror or exc}); "
            "the Croissant description hashes every file of the copy"
        ) from None
    return {
        "@type": "cr:FileObject",
        "@id": name,
        "name": name,
        "contentUrl": name,
        "contentSize": f"{size} B",
        "encodingFormat": _encoding(PurePosixPath(name).suffix.lower()),
        "sha256": sha256,
    }


def _file_set(identifier: str, glob: str, ext: str, names: list[str]) -> dict[str, Any]:
    folders = {str(PurePosixPath(n).parent) for n in names}
    pattern = glob if folders == {"."} else f"**/{glob}"
    return {
        "@type": "cr:FileSet",
        "@id": identifier,
        "name": identifier,
        "description": f"The {number(len(names))} {ext or 'extension-less'} files of the "
        "cleaned copy (each listed with its SHA-256 as a FileObject above, when there are "
        f"at most {number(MAX_FILE_OBJECTS)} files).",
        "encodingFormat": _encoding(ext),
        "includes": pattern,
    }


def _encoding(ext: str) -> str:
    return ENCODINGS.get(ext, "application/octet-stream")


def _parquet_fields(schema: pa.Schema) -> list[tuple[str, str]]:
    fields = []
    for column in USEFUL_COLUMNS:
        if column not in schema.names:
            continue
        kind = schema.field(column).type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            fields.append((column, "sc:Text"))
        elif pa.types.is_integer(kind):
            fields.append((column, "sc:Integer"))
        elif pa.types.is_floating(kind):
            fields.append((column, "sc:Float"))
        elif pa.types.is_boolean(kind):
            fields.append((column, "sc:Boolean"))
    return fields


def _field(file_set: str, column: str, kind: str) -> dict[str, Any]:
    return {
        "@type": "cr:Field",
        "@id": f"items/{column}",
        "name": column,
        "dataType": kind,
        "source": {"fileSet": {"@id": file_set}, "extract": {"column": column}},
    }


def _collection(facts: RunFacts) -> str:
    text = (
        f"The items of the source {facts.source_name!r} ({facts.source_kind}), as scanned "
        f"by {TOOL_NAME} {__version__} from {facts.report['run']['started']} to "
        f"{facts.report['run']['finished']}. Collected: {facts.collection_period()}. "
        f"Crawlers: {facts.answers.fill('dataset.crawler')}."
    )
    if facts.urls:
        hosts = ", ".join(f"{h} ({number(n)})" for h, n in facts.top_domains())
        text += (
            f" {number(facts.urls)} kept items carry a source URL on "
            f"{number(len(facts.domains))} host names; the most frequent: {hosts}."
        )
    return text


def _timeframe(facts: RunFacts) -> list[str] | None:
    start, end = facts.collection.start, facts.collection.end
    if start is None or end is None:
        return None  # dates only: the gap is in rai:dataCollection
    return [start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")]


def _missing(facts: RunFacts) -> str:
    scanned, kept = facts.scanned, facts.kept
    return (
        f"Of {scanned.text()} scanned, {number(scanned.unreadable)} images could not be "
        f"decoded and {number(scanned.without_bytes)} members had no bytes (failed "
        "downloads or URL-only rows). The cleaned copy keeps "
        f"{number(kept.unreadable)} unreadable images and {number(kept.without_bytes)} "
        "members without bytes; such members are matched only by the hashes and URLs the "
        "source records."
    )


def _preprocessing(facts: RunFacts) -> str:
    settings = facts.report["run"].get("scan_settings") or {}
    return (
        f"Every item was hashed by {TOOL_NAME} {__version__} without keeping or showing it: "
        f"{hash_types.labels('bytes')} of its bytes and {hash_types.labels('pixels')} of its pixels"
        + (", also with letterbox borders trimmed" if settings.get("trim_borders") else "")
        + (", and in its 7 other rotations and flips" if settings.get("dihedral") else "")
        + "."
    )


def _manipulation(facts: RunFacts) -> str:
    lists = "; ".join(list_identity_text(entry) for entry in facts.lists) or "no list"
    return (
        f"{removal_paragraph(facts)} Lists: {lists}. What they hold: "
        f"{facts.answers.fill('dataset.lists_description')}. {facts.receipt_text()}."
    )
