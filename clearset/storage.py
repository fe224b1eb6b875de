"""Outputs on object stores: run folders, clean destinations, removal lists and receipts
at an fsspec URL (`s3://`, `gs://`, `az://`; `memory://` in tests), with a local
folder's guarantees.

An object store has no rename, so the run folder of a URL is worked in a local folder
of the same layout (its *mirror*, under `CLEARSET_CACHE`, default
`~/.cache/clearset/buckets/`), and the bucket is the durable, shared copy:

- `attach(url)` fills the mirror from the bucket (listed in pages, one GET per object
  that is not already there whole) and aborts the multipart uploads an interrupted
  writer left under the URL; `attach(url, reads=...)`, for a command that declares the
  parts of the folder it reads (`clearset.runfolder.COMMAND_READS`), fetches only those,
  keeps the listing, and `fetch` brings in any other file it opens, on first use;
- every file clearset writes is written whole locally and renamed (`clearset.atomic`),
  and *then* uploaded under its final name (`publish`): a single PUT, or a multipart
  upload that only its completion makes visible, aborted when it fails. So an object
  appears whole or not at all, and a shard's marker is uploaded only after the
  manifest it vouches for; a resume trusts only markers, as on a local path;
- `push` at the end of the command (whatever its end) uploads what changed by other
  means (moves into RUN/history/) and, for a command that held the run alone, deletes
  the objects it removed. Ranks writing one run at once only add objects.

Never uploaded: the list index (`.list-index/`, it holds list entries), the lock file,
temporary names. Who finishes a run of several ranks is decided by `create_if_absent`:
a conditional PUT (If-None-Match: *) where the store has one, else the fallback that
function documents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from clearset.errors import InputError, OutputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: Names a mirror keeps to itself (matched on every part of the relative path).
LOCAL_ONLY = (".list-index", ".lock", ".finishing")
_TMP = ".tmp-"
#: Environment variable that hands the mirrors of this command to its worker processes.
MIRRORS_ENV = "CLEARSET_BUCKET_MIRRORS"
#: The URL schemes outputs may go to: object stores (and fsspec's in-memory one, for tests).
OUTPUT_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory")
#: Objects listed per request (S3's maximum page).
PAGE = 1000
#: Environment variable: the parts of one multipart upload sent at once (default 4).
UPLOADS_ENV = "CLEARSET_UPLOADS"


def upload_concurrency() -> int:
    """How many parts of one file a process uploads at once. Each process (a worker, a
    rank, a Ray task) uploads its files one after another, so this bounds a worker's
    upload connections, and its part buffers to this many times s3fs's part size (50 MiB):
    4 by default (s3fs's own default is 10), `CLEARSET_UPLOADS` to change it."""
    try:
        return max(1, int(os.environ.get(UPLOADS_ENV) or 4))
    except ValueError:
        raise InputError(f"{UPLOADS_ENV}={os.environ[UPLOADS_ENV]}: not a whole number") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def is_url(value: str | os.PathLike[str]) -> bool:
    """Whether `value` names an object store (or another fsspec file system) by URL."""
    text = str(value)
    return bool(_URL.match(text)) and not text.startswith("file://")


def local_only(rel: str) -> bool:
    return any(part in LOCAL_ONLY or part.startswith(_TMP) for part in rel.split("/"))


@dataclass
class Store:
    """One fsspec URL prefix and the few operations clearset needs of it."""

    url: str
    fs: Any = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        import fsspec

        self.url = self.url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except ImportError:
            scheme = self.url.split("://", 1)[0]
            extra = "s3" if scheme.startswith("s3") else scheme
            raise InputError(
                f"{self.url}: {scheme}:// needs its fsspec driver, which is not installed; "
                f"pip install 'clearset[{extra}]'"
            ) from None
        self.root = self.root.rstrip("/")

    def check(self) -> None:
        """InputError, in one line naming the URL, unless the bucket is there and this
        machine's credentials may read it (one request). Nothing is written either way."""
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.ls(bucket, detail=False)
            return
        except FileNotFoundError:
            problem = f"no bucket named {bucket} there (create it, or check the name)"
        except PermissionError as exc:
            problem = f"access denied ({_one_line(exc)}); check the credentials"
        except Exception as exc:  # botocore's connection errors are no OSError
            problem = f"cannot reach the object store ({_one_line(exc)})"
        raise InputError(f"{self.url}: {problem}")

    def key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def put_file(self, local: Path, rel: str) -> None:
        """Upload `local` whole under `rel`: one PUT, or a multipart upload that becomes
        visible only on completion and is aborted when it fails (s3fs does both)."""
        # s3fs splits a file over its part size into parts sent concurrently: bounded.
        bound = (
            {"max_concurrency": upload_concurrency()} if hasattr(self.fs, "max_concurrency") else {}
        )
        try:
            self.fs.put_file(str(local), self.key(rel), **bound)
        except OSError as exc:
            self.fs.invalidate_cache(self.key(rel))
            raise OutputError(
                f"{self.url}/{rel}: cannot upload: {exc}; re-run the same command to resume"
            ) from exc
        self.fs.invalidate_cache(self.key(rel))  # readers in this process see it now

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.key(rel)))

    def list_pages(self, rel: str = "") -> Iterator[list[tuple[str, int]]]:
        """(relative name, size) of every object under `rel`, a page at a time (the
        store's own paging: S3 lists at most 1,000 keys per request)."""
        base = self.key(rel)
        self._forget()
        try:
            found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return
        finally:
            self._forget()  # a listing is no promise for later reads
        page: list[tuple[str, int]] = []
        skip = len(self.root) + 1
        for name, info in sorted(found.items()):
            if info.get("type") == "directory":
                continue
            page.append((name[skip:], int(info.get("size") or 0)))
            if len(page) == PAGE:
                yield page
                page = []
        if page:
            yield page

    def _forget(self) -> None:
        """Drop every listing this process cached (a folder's invalidation leaves its
        subfolders' listings, which other writers may have added to since)."""
        self.fs.invalidate_cache()

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f"{_TMP}{os.getpid()}-{local.name}")
        try:
            self.fs.get_file(self.key(rel), str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key(rel))
        self.fs.invalidate_cache(self.key(rel))

    def delete_many(self, rels: list[str]) -> None:
        """Delete these objects in as few requests as the store allows (S3: one
        DeleteObjects request per 1,000 keys), not one each."""
        if not rels:
            return
        keys = [self.key(rel) for rel in rels]
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(keys)
        for key in keys:
            self.fs.invalidate_cache(key)

    def create_if_absent(self, rel: str, data: bytes) -> bool:
        """Write `data` under `rel` only if nothing is there; whether this call made it.

        With a conditional write (S3's If-None-Match: *, which s3fs sends for mode
        "create"; a local or memory file system's exclusive create) exactly one caller
        wins. Where the store refuses it (`NotImplementedError`, or an S3 API without
        conditional writes answering 501), the fallback: each caller uploads its own
        claim `rel.claim-<time>-<random>` and lists them; the first in name order wins,
        so a caller after the winner always loses. Two callers within clock skew of each
        other may both win;
        clearset only uses this to choose who finishes a run, which is idempotent
        (every object it writes is whole, and the same)."""
        try:
            with self.fs.open(self.key(rel), "xb") as handle:
                handle.write(data)
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError):
            return self._claim(rel, data)
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            if "NotImplemented" in str(exc) or "501" in str(exc):
                return self._claim(rel, data)
            raise

    def _claim(self, rel: str, data: bytes) -> bool:
        # Named by time first: a later caller's claim sorts after every earlier one.
        mine = f"{rel}.claim-{time.time_ns():020d}-{uuid.uuid4().hex}"
        self.fs.pipe_file(self.key(mine), data)
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        claims = sorted(
            name
            for page in self.list_pages(parent)
            for name, _ in page
            if name.startswith(f"{rel}.claim-")
        )
        return bool(claims) and claims[0] == mine

    def release(self, rel: str) -> None:
        """Undo `create_if_absent` (and its fallback's claims)."""
        self.delete(rel)
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        for page in self.list_pages(parent):
            for name, _ in page:
                if name.startswith(f"{rel}.claim-"):
                    self.delete(name)

    def abort_uploads(self) -> int:
        """Abort the multipart uploads under this URL that never completed (an uploader
        killed mid-file); their parts are billed until then. Stores without multipart
        uploads have none."""
        lister = getattr(self.fs, "list_multipart_uploads", None)
        if lister is None:
            return 0
        bucket, _, prefix = self.root.partition("/")
        aborted = 0
        for upload in lister(bucket):
            if upload["Key"].startswith(prefix):
                self.fs.abort_mpu(bucket, upload["Key"], upload["UploadId"])
                aborted += 1
        return aborted


#: Commands whose Ray tasks work a bucket output themselves (`task_mirrors`); the driver
#: of every other command would wait on files its tasks wrote on other nodes' disks.
RAY_COMMANDS = ("scan", "clean")


def refuse_engine(engine: str, command: str | None = None) -> None:
    """Outputs on an object store are written by this machine's processes, or by Ray
    tasks of `RAY_COMMANDS`, which upload what they write themselves. Any other command's
    Ray tasks would write into their nodes' disks, which nobody uploads."""
    if engine != "local" and _attached and command not in RAY_COMMANDS:
        raise InputError(
            f"--engine {engine}: {_attached[0]}: with an output on an object store, "
            f"`clearset {command}` needs the local engine (run one rank per node with "
            "--rank/--world-size); only scan and clean run their Ray tasks against a bucket"
        )


# ---------------------------------------------------------------- mirrors


def cache_root() -> Path:
    base = os.environ.get("CLEARSET_CACHE") or Path.home() / ".cache" / "clearset"
    return Path(base) / "buckets"


def _load_mirrors() -> dict[str, str]:
    try:
        found = json.loads(os.environ.get(MIRRORS_ENV) or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


#: local mirror folder -> URL, for this process and (through the environment) its workers.
_mirrors: dict[str, str] = _load_mirrors()


def mirror_for(url: str) -> Path:
    """The local folder that mirrors `url` on this machine (registered, not filled)."""
    url = url.rstrip("/")
    local = cache_root() / hashlib.sha256(url.encode()).hexdigest()[:20]
    _mirrors[str(local)] = url
    os.environ[MIRRORS_ENV] = json.dumps(_mirrors, sort_keys=True)
    return local


def remote_of(path: Path, *, any_name: bool = False) -> tuple[Store, str] | None:
    """The store and object name a local path is mirrored to, or None (a plain path, or
    a name the mirror keeps to itself unless `any_name`)."""
    if not _mirrors:
        return None
    text = os.path.abspath(path)
    for local, url in _mirrors.items():
        if text.startswith(local + os.sep):
            rel = text[len(local) + 1 :].replace(os.sep, "/")
            return (store(url), rel) if any_name or not local_only(rel) else None
    return None


def _mirror_forms() -> list[tuple[str, str]]:
    """(local folder, URL) of every mirror of this process, also under its real path (a
    cache behind a symbolic link), the longest folder first."""
    forms: dict[str, str] = {}
    for local, url in _mirrors.items():
        forms.setdefault(local, url)
        forms.setdefault(os.path.realpath(local), url)
    return sorted(forms.items(), key=lambda kv: len(kv[0]), reverse=True)


def url_of(path: str | os.PathLike[str]) -> str:
    """What a path stands for where users see or share it: the URL (`s3://b/run/x`) of a
    path inside a mirror, the longest mirror first; the path unchanged otherwise (and
    always where no bucket is attached). The mirror is this machine's working copy; its
    path must never reach a record, a document, a receipt or a printed line."""
    text = os.fspath(path)
    if not _mirrors:
        return text
    for local, url in _mirror_forms():
        if text == local:
            return url
        if text.startswith(local + os.sep):
            return f"{url}/{text[len(local) + 1 :].replace(os.sep, '/')}"
    return text


def shown(text: str) -> str:
    """`text` (a line to print) with every mirror path in it replaced by its URL."""
    if not _mirrors:
        return text
    for local, url in _mirror_forms():
        if local in text:
            text = text.replace(local + os.sep, url + "/").replace(local, url)
    return text


def with_urls(exc: BaseException) -> BaseException:
    """`exc`, its message's mirror paths replaced by their URLs (`shown`): for an error
    raised in a task on another node, whose mirror folder nobody else can see, and which
    a driver prints and records (RUN/failed/) as it is."""
    if _mirrors:
        exc.args = tuple(shown(a) if isinstance(a, str) else a for a in exc.args)
        if isinstance(exc, OSError):
            for name in ("filename", "filename2"):
                value = getattr(exc, name)
                if isinstance(value, str):
                    setattr(exc, name, shown(value))
    return exc


def local_path(location: str) -> Path:
    """The local folder a recorded location (`url_of`'s answer) is worked in on this
    machine: the mirror of a URL clearset writes to, or the path itself."""
    if not is_url(location) or location.split("://", 1)[0] not in OUTPUT_PROTOCOLS:
        return Path(location)
    location = location.rstrip("/")
    for local, url in sorted(_mirrors.items(), key=lambda kv: len(kv[1]), reverse=True):
        if location == url:
            return Path(local)
        if location.startswith(url + "/"):
            return Path(local) / location[len(url) + 1 :]
    found = mirror_for(location)
    _borrowed.setdefault(str(found), set())  # attached by none: `fetch` reads the bucket
    return found


_stores: dict[str, Store] = {}
#: Mirrors of URLs no command attached, made for reading a recorded location (`local_path`):
#: {folder: the files `fetch` brought in from the bucket}.
_borrowed: dict[str, set[str]] = {}
#: The URLs this command attached (until it pushes them back at its end).
_attached: list[str] = []


def store(url: str) -> Store:
    if url not in _stores:
        _stores[url] = Store(url)
    return _stores[url]


def publish(path: Path) -> None:
    """Upload a file just renamed into place in a mirror (nothing for a plain path)."""
    found = remote_of(path)
    if found is not None:
        found[0].put_file(path, found[1])
        viewed = _in_view(path)
        if viewed is not None:
            viewed[0].listed[viewed[2]] = path.stat().st_size
            viewed[0].fetched.add(viewed[2])


@dataclass
class _View:
    """A mirror attached for a command that reads only part of the folder."""

    reads: tuple[str, ...]
    #: {name: size} of every object under the URL when it was attached (and since
    #: uploaded by this command).
    listed: dict[str, int]
    #: Names fetched on first use (`fetch`), outside `reads`.
    fetched: set[str] = field(default_factory=set)

    def covers(self, rel: str) -> bool:
        return within(rel, self.reads) or rel in self.fetched


#: local mirror folder -> its view, for mirrors attached with `reads`.
_views: dict[str, _View] = {}


def within(rel: str, parts: tuple[str, ...]) -> bool:
    """Whether the object `rel` is one of `parts`: a name, or a folder ending in "/"."""
    return any(rel == part or (part.endswith("/") and rel.startswith(part)) for part in parts)


def _same(target: Path, size: int) -> bool:
    return target.is_file() and target.stat().st_size == size


def attach(url: str, reads: tuple[str, ...] | None = None) -> Path:
    """Fill this machine's mirror of `url` from the bucket; the mirror's path. Objects
    already in the mirror at the same size are not downloaded again.

    `reads`: the parts of the folder the command reads (names, and folders ending in
    "/"): only those are downloaded (and what this machine kept of them that the bucket
    no longer holds is dropped); the listing is kept, so `exists` answers for every other
    object and `fetch` downloads one on first use. A cold mirror then costs the listing
    and a GET per object read, not a GET per object under the URL."""
    remote = store(url)
    remote.check()
    local = mirror_for(url)
    listed: dict[str, int] = {}
    for page in remote.list_pages():
        for rel, size in page:
            if local_only(rel):
                continue
            listed[rel] = size
            if (reads is None or within(rel, reads)) and not _same(local / rel, size):
                remote.get_file(rel, local / rel)
    local.mkdir(parents=True, exist_ok=True)
    if reads is not None:
        for part in reads:
            here = local / part
            found = here.rglob("*") if part.endswith("/") and here.is_dir() else [here]
            for path in found:
                rel = path.relative_to(local).as_posix()
                if path.is_file() and rel not in listed and not local_only(rel):
                    path.unlink()  # gone from the bucket since this machine last saw it
        _views[str(local)] = _View(tuple(reads), listed)
    _attached.append(remote.url)
    return local


def _in_view(path: Path) -> tuple[_View, str, str] | None:
    """(view, mirror folder, object name) of a path inside a mirror attached with reads."""
    if not _views:
        return None
    text = os.path.abspath(path)
    for local, view in _views.items():
        if text.startswith(local + os.sep):
            return view, local, text[len(local) + 1 :].replace(os.sep, "/")
    return None


def exists(path: Path) -> bool:
    """Whether a file is there: on disk, or, in a mirror attached with `reads`, for a
    name outside them, in the bucket's listing (it is fetched only when read)."""
    found = _in_view(path)
    if found is None or found[0].covers(found[2]):
        return path.exists()
    return found[2] in found[0].listed


def sweep(path: Path) -> None:
    """For a mirrored folder that one command holds alone: abort the multipart uploads
    left under its URL, and drop from the mirror what the bucket does not hold (a file
    renamed here by a writer killed before its upload): a resume trusts only what the
    bucket's markers vouch for. Nothing for a plain path."""
    url = _mirrors.get(os.path.abspath(path))
    if url is None:
        return
    remote = store(url)
    remote.abort_uploads()
    present = {rel for page in remote.list_pages() for rel, _ in page}
    for found in sorted(Path(path).rglob("*"), reverse=True):
        rel = found.relative_to(path).as_posix()
        if found.is_file() and not local_only(rel) and rel not in present:
            found.unlink()


def pull(path: Path, prefix: str) -> None:
    """Bring what other writers uploaded under `prefix` of a mirror (their markers, say)
    into it; nothing for a plain path."""
    found = remote_of(path / prefix, any_name=True)
    if found is None:
        return
    remote, rel_prefix = found
    for page in remote.list_pages(rel_prefix):
        for rel, size in page:
            target = Path(_local_of(remote.url)) / rel
            if not local_only(rel) and not (target.is_file() and target.stat().st_size == size):
                remote.get_file(rel, target)


def _local_of(url: str) -> str:
    return next(local for local, u in _mirrors.items() if u == url)


def push(local: Path, *, delete: bool) -> None:
    """Make the bucket hold what the mirror holds: upload files whose object is missing
    or of another size, and (`delete`: this command held the run alone) delete objects
    the mirror no longer has."""
    url = _mirrors.get(str(local))
    if url is None:
        return
    with contextlib.suppress(ValueError):
        _attached.remove(url)
    # A mirror attached with reads holds only what its command read: the rest of it may
    # be what this machine saw long ago, so it is neither uploaded nor a reason to delete.
    view = _views.pop(str(local), None)
    remote = store(url)
    listed = {rel: size for page in remote.list_pages() for rel, size in page}
    for path in sorted(local.rglob("*"), key=_markers_last):
        rel = path.relative_to(local).as_posix()
        if view is not None and not view.covers(rel):
            continue
        if path.is_file() and not local_only(rel) and listed.get(rel) != path.stat().st_size:
            remote.put_file(path, rel)
    if delete:
        gone = [
            rel
            for rel in listed
            if (view is None or view.covers(rel))
            and not local_only(rel)
            and not (local / rel).is_file()
        ]
        # Markers and records first: none may be left vouching for a deleted object.
        remote.delete_many([rel for rel in gone if _vouches(rel)])
        remote.delete_many([rel for rel in gone if not _vouches(rel)])


def _vouches(name: str) -> bool:
    """Whether this file is a marker or record, vouching for others."""
    return any(f"{d}/" in f"/{name}" for d in ("/markers", "/.clearset-clean")) or name.endswith(
        (".json", ".jsonl")
    )


def _markers_last(path: Path) -> tuple[bool, Path]:
    """Upload order: what a marker or record vouches for before the marker or record."""
    return _vouches(path.as_posix()), path


def finishing_claim(path: Path, name: str, data: bytes) -> bool | None:
    """For a mirrored run folder: take `name` in the bucket with a conditional write
    (whether this caller took it); None for a plain path (the caller locks locally)."""
    found = remote_of(path / name, any_name=True)
    if found is None:
        return None
    return found[0].create_if_absent(found[1], data)


def finishing_release(path: Path, name: str) -> None:
    found = remote_of(path / name, any_name=True)
    if found is not None:
        found[0].release(found[1])


# ---------------------------------------------------------------- tasks on other machines

#: Mirrors made for one task in this process (`task_mirrors`): empty but for what the
#: task fetches, so `fetch` brings in the few files it reads.
_task_mirrors: set[str] = set()


def task_context() -> dict[str, str]:
    """What a task that may run on another machine needs to work this command's buckets:
    {this machine's mirror folder: URL}. Empty where no output is on an object store."""
    return dict(_mirrors)


@contextlib.contextmanager
def task_mirrors(context: dict[str, str]) -> Iterator[dict[str, str]]:
    """In a task sent from a driver on (maybe) another machine: a new, empty mirror of
    each of the driver's URLs, in this machine's cache (`CLEARSET_CACHE`), registered so
    that what the task writes is uploaded whole, markers last, as a rank's writes are;
    yields {driver's folder: this task's folder} for `translate`. The folders are
    removed when the task ends: the bucket holds what it wrote."""
    if not context:
        yield {}
        return
    top = cache_root().parent / "tasks"
    top.mkdir(parents=True, exist_ok=True)
    here = Path(tempfile.mkdtemp(prefix="task-", dir=top))
    made: dict[str, str] = {}
    try:
        for n, (driver, url) in enumerate(sorted(context.items())):
            local = here / str(n)
            local.mkdir()
            made[driver] = str(local)
            _mirrors[str(local)] = url
            _task_mirrors.add(str(local))
        yield made
    finally:
        for folder in made.values():
            _mirrors.pop(folder, None)
            _task_mirrors.discard(folder)
        shutil.rmtree(here, ignore_errors=True)


def translate(value: Any, moved: dict[str, str]) -> Any:
    """`value` (a task's arguments: strings, paths, tuples, lists, dicts, dataclasses)
    with every path inside a driver's mirror folder moved to this task's (`moved`)."""
    if not moved:
        return value
    if isinstance(value, str):
        for old, new in moved.items():
            if value == old or value.startswith(old + os.sep):
                return new + value[len(old) :]
        return value
    if isinstance(value, PurePath):
        text = translate(str(value), moved)
        return value if text == str(value) else type(value)(text)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(translate(v, moved) for v in value)
    if isinstance(value, list):
        return [translate(v, moved) for v in value]
    if isinstance(value, dict):
        return {k: translate(v, moved) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for f in dataclasses.fields(value):
            if f.init:
                old = getattr(value, f.name)
                new = translate(old, moved)
                if new is not old:
                    changed[f.name] = new
        return dataclasses.replace(value, **changed) if changed else value
    return value


def fetch(*paths: Path) -> None:
    """Make the named files, which the caller is about to read, the bucket's, one GET
    each at most (absent objects are skipped):

    - in a mirror attached with `reads`: a file the listing holds and the mirror does not
      (at that size), from then on part of what the command read;
    - in a task's own mirror (`task_mirrors`): a file not here yet;
    - in a mirror this command did not attach (a cleaned copy a document reads): the
      object, once, whatever this machine kept of it.

    Nothing for a plain path, or a mirror `attach` filled whole."""
    if not _mirrors:
        return
    for path in paths:
        viewed = _in_view(path)
        if viewed is not None:
            view, local, rel = viewed
            size = view.listed.get(rel)
            if local_only(rel) or view.covers(rel):
                continue
            if size is None:
                path.unlink(missing_ok=True)  # gone from the bucket since this machine saw it
                continue
            view.fetched.add(rel)
            if not _same(path, size):
                store(_mirrors[local]).get_file(rel, path)
            continue
        found = remote_of(path, any_name=True)
        if found is None:
            continue
        text = os.path.abspath(path)
        borrowed = next((b for b in _borrowed if text.startswith(b + os.sep)), None)
        task = any(text.startswith(local + os.sep) for local in _task_mirrors)
        if borrowed is not None and text not in _borrowed[borrowed]:
            _borrowed[borrowed].add(text)
            path.unlink(missing_ok=True)  # what this machine kept is no promise
        elif not (task and not path.exists()):
            continue
        with contextlib.suppress(FileNotFoundError):
            found[0].get_file(found[1], path)


def is_mirror(path: Path) -> bool:
    """Whether `path` is this command's mirror of a folder on an object store."""
    return os.path.abspath(path) in _mirrors


def pull_all(path: Path) -> None:
    """Bring into a command's mirror everything other writers (Ray tasks on any node)
    uploaded under its URL: one listing, a GET per new or changed object."""
    url = _mirrors.get(os.path.abspath(path))
    if url is None:
        return
    remote = store(url)
    for page in remote.list_pages():
        for rel, size in page:
            target = Path(path) / rel
            if not local_only(rel) and not (target.is_file() and target.stat().st_size == size):
                remote.get_file(rel, target)
