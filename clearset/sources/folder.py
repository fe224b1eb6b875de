"""A folder of files, searched recursively (img2dataset's "files" output included).

Files are grouped into keys as webdataset would group them (`dir/000001.jpg` and
`dir/000001.json` are key `dir/000001`), so a `.json` side file gives its image a URL
and upstream hashes. A folder has no shards, so its sorted file list is cut into runs of
`FOLDER_SHARD_SIZE` files; the cut is deterministic, which is what lets a scan resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec

from clearset.errors import InputError
from clearset.settings import FOLDER_SHARD_SIZE
from clearset.sources.base import (
    Item,
    ShardRef,
    expand_paths,
    is_image_ext,
    normalise_hex,
    protocol_url,
    relative_name,
    split_ext,
)


@dataclass
class FolderSource:
    kind: ClassVar[str] = "folder"
    url: str
    shard_size: int = FOLDER_SHARD_SIZE

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "shard_size": self.shard_size}

    def shards(self) -> list[ShardRef]:
        fs, paths = expand_paths(self.url)
        if len(paths) != 1 or not fs.isdir(paths[0]):
            raise InputError(f"{self.url}: not a folder")
        root = paths[0]
        files = [relative_name(p, root) for p in sorted(fs.find(root))]
        # Keep whole keys together: a shard boundary never splits a key's files, even
        # where sorting puts another key between them (`a.b.jpg`, `a.d/x.jpg`, `a.txt`).
        by_key: dict[str, list[str]] = {}
        for name in files:
            key, _ = split_ext(name)
            by_key.setdefault(key if key is not None else name, []).append(name)
        groups = list(by_key.values())
        refs = []
        root_url = protocol_url(fs, root)
        for number, start in enumerate(range(0, len(groups), self.shard_size)):
            chunk = [name for group in groups[start : start + self.shard_size] for name in group]
            shard_name = f"part-{number:05d}"
            refs.append(ShardRef(id=shard_name, name=shard_name, path=root_url, files=tuple(chunk)))
        if not refs:
            raise InputError(f"{self.url}: the folder holds no files")
        return refs

    def read_shard(self, shard: ShardRef) -> Iterator[Item]:
        fs, root = fsspec.core.url_to_fs(shard.path)
        by_key: dict[str, list[str]] = {}
        for name in shard.files:
            key, _ = split_ext(name)
            by_key.setdefault(key if key is not None else name, []).append(name)
        position = 0
        for key, names in by_key.items():
            meta: dict[str, Any] = {}
            images = []
            for name in names:
                _, ext = split_ext(name)
                if ext == "json":
                    meta = _read_json(fs, f"{root}/{name}")
                elif is_image_ext(ext):
                    images.append(name)
            common = {
                "key": key,
                "shard": shard.name,
                "members": tuple(names),
                "url": meta.get("url"),
                "upstream_sha256": normalise_hex(meta.get("sha256")),
                "upstream_md5": normalise_hex(meta.get("md5")),
                "upstream_status": meta.get("status"),
            }
            if not images:
                # A stray text or metadata file is not an item; a json without its
                # image is, since it names something that should have been there.
                if not meta:
                    continue
                yield Item(
                    position=position,
                    member=None,
                    data=None,
                    missing_reason="no_image: no image file for this key",
                    **common,
                )
                position += 1
            for name in images:
                try:
                    with fs.open(f"{root}/{name}", "rb") as handle:
                        data = handle.read()
                except OSError as exc:
                    raise InputError(f"{root}/{name}: cannot read ({exc})") from None
                yield Item(position=position, member=name, data=data, **common)
                position += 1


def _read_json(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    try:
        with fs.open(path, "rb") as handle:
            value = json.loads(handle.read())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
