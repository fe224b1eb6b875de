"""Named settings with documented defaults.

Thresholds and limits live here, not as numbers in the middle of code. Every value that
changes what a scan finds is recorded in the run folder's run.json so that a run can be
reproduced and a receipt can name it.
"""

from __future__ import annotations

#: PDQ Hamming distance at or below which two hashes match (Meta's recommended value).
PDQ_MATCH_THRESHOLD = 31

#: PDQ quality below which a hash is too unreliable to near-match (Meta's recommendation).
#: Such items are still exact-matched on their cryptographic hashes.
PDQ_MIN_QUALITY = 50

#: Pillow refuses images above this many pixels (twice this raises, once this warns).
#: We keep Pillow's own default so a decompression bomb is an error row, never a crash.
MAX_IMAGE_PIXELS = 89_478_485

#: Images with more pixels than this (width x height of the first frame) are not decoded:
#: they get status "error", reason "too_large", and their cryptographic hashes as every
#: item does, so exact-hash matching still finds them. It bounds a worker's memory: the
#: reference PDQ path (every PNG, and JPEGs with --exact-pdq) peaks near 22 bytes a pixel
#: above the worker's own 0.3 GiB, most of it pdqhash's float buffers: 1.65 GiB in all
#: at this cap, against 2.6 GiB near Pillow's limit (bench/memory.py). Raise it, with
#: the memory, to hash larger images.
MAX_PIXELS = 64_000_000

#: Items a folder source puts in one shard (a folder has no shards of its own).
FOLDER_SHARD_SIZE = 10_000

#: Rows buffered before a manifest row group is written; bounds memory per worker.
MANIFEST_ROW_GROUP = 4_096

#: Extensions (lower case, without the dot) read as images inside shards and folders.
IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jfif", "avif", "heic"}
)

#: Largest member or file held in memory to hash and decode. A larger one is hashed
#: (SHA-256, MD5, SHA-1) while streaming, never decoded, and its row says `too_large`.
MAX_MEMBER_BYTES = 256 * 1024 * 1024

#: A scan fails (exit 1) when more than this share of its items could not be read
#: (no bytes where there should be, or bytes that do not decode), unless the user
#: passes --allow-missing. Failed downloads the source itself records are not counted.
MAX_UNREAD_SHARE = 0.05

#: How often a worker process checks that its parent is alive (where the kernel cannot
#: end it with the parent, see `clearset.engines.local`): the longest an orphan lives.
PARENT_POLL_SECONDS = 0.5

#: How long stopped workers (Ctrl-C, an error) get to remove their temporary files and
#: exit before they are killed; a worker is only that slow inside one long C call.
STOP_GRACE_SECONDS = 5.0
