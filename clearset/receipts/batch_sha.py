"""SHA-256 of many short prefixed messages in one call, through hashlib's own OpenSSL.

A Merkle tree over n leaves is 2n - 1 SHA-256 computations of 33 or 65 bytes each. Made
one Python call at a time through ``hashlib`` that is ~0.4-0.8 µs a hash, nearly all of
it interpreter and object overhead: OpenSSL itself (with the CPU's SHA extensions)
needs well under 0.1 µs for such a message. `prefixed_sha256` runs the loop in numba and
calls OpenSSL's EVP digest functions directly, from the very libcrypto that ``_hashlib``
is linked against (found in this process's memory map), so the digests come from the
same implementation as ``hashlib.sha256`` — only the loop moves out of the interpreter.

Where that library cannot be found (a Python whose ``_hashlib`` links OpenSSL
statically, a system without /proc, an OpenSSL without the EVP functions), or numba is
missing, `prefixed_sha256` returns None and callers use hashlib. ``CLEARSET_HASHLIB_ONLY=1``
forces that path; the tests compare both paths' results.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np

HASH_SIZE = 32

#: A batch this large loads the native loop if the process has not yet: its one-off
#: set-up (importing numba, loading the cached kernel: about a second, more the first
#: time it is compiled) is not worth it for fewer.
NATIVE_MIN_ROWS = 1 << 14
#: Once loaded, batches from this size go through it (a call costs a few microseconds).
NATIVE_LOADED_MIN_ROWS = 32

_lock = threading.Lock()
_kernel: Callable[..., Any] | None = None
_digest: Any = None  # (EVP_MD pointer, ctypes functions) once loaded
_failed = False


def libcrypto_path() -> str | None:
    """The libcrypto that ``_hashlib`` loaded into this process, if it is a shared one."""
    import _hashlib  # noqa: F401 - loads the library whose path is wanted

    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and "libcrypto" in os.path.basename(fields[5]):
                    return fields[5]
    except OSError:
        return None
    return None


def _load() -> Callable[..., Any] | None:
    """Bind OpenSSL's EVP digest calls and compile the loop once; None if not possible."""
    global _kernel, _digest, _failed
    with _lock:
        if _kernel is not None or _failed:
            return _kernel
        try:
            _kernel = _compile()
        except Exception:  # any failure: hashlib stays the path, never a wrong result
            _failed = True
            _kernel = None
        return _kernel


def _compile() -> Callable[..., Any]:
    global _digest
    path = libcrypto_path()
    if path is None:
        raise OSError("no shared libcrypto in this process")
    lib = ctypes.CDLL(path)
    vp = ctypes.c_void_p
    if hasattr(lib, "EVP_MD_fetch"):  # OpenSSL 3: fetch once, not per hash
        fetch = lib.EVP_MD_fetch
        fetch.argtypes, fetch.restype = [vp, ctypes.c_char_p, ctypes.c_char_p], vp
        md = fetch(None, b"SHA256", None)
    else:  # OpenSSL 1.1: a static method table
        sha256 = lib.EVP_sha256
        sha256.argtypes, sha256.restype = [], vp
        md = sha256()
    if not md:
        raise OSError("OpenSSL has no SHA256")
    new, free = lib.EVP_MD_CTX_new, lib.EVP_MD_CTX_free
    new.argtypes, new.restype = [], vp
    free.argtypes, free.restype = [vp], None
    _digest = (md, new, free)

    import llvmlite.binding

    llvmlite.binding.load_library_permanently(path)
    from clearset.receipts.sha_kernel import prefixed_digests as kernel

    probe = np.zeros((1, HASH_SIZE), np.uint8)
    got = np.empty((1, HASH_SIZE), np.uint8)
    ctx = new()
    try:
        done = kernel(probe, 0, got, ctx, md)
    finally:
        free(ctx)
    import hashlib

    if done != 1 or bytes(got[0]) != hashlib.sha256(bytes(1 + HASH_SIZE)).digest():
        raise OSError("the native SHA-256 loop disagrees with hashlib")
    return cast(Callable[..., Any], kernel)


def _hashlib_only() -> bool:
    return os.environ.get("CLEARSET_HASHLIB_ONLY") == "1"


def worth_native(rows: int) -> bool:
    """Whether a batch of ``rows`` messages should go through `prefixed_sha256` (which
    loads the loop the first time a batch is large enough to pay for it)."""
    if _hashlib_only() or _failed:
        return False
    return rows >= NATIVE_MIN_ROWS or (rows >= NATIVE_LOADED_MIN_ROWS and _kernel is not None)


def native_available() -> bool:
    """Whether `prefixed_sha256` can run (loads and compiles on first call)."""
    if _hashlib_only():
        return False
    return _load() is not None


def prefixed_sha256(rows: np.ndarray, prefix: int) -> np.ndarray | None:
    """SHA-256(prefix byte || row) for each row of uint8[m, w], as uint8[m, 32]; None
    when the native loop is unavailable (the caller then hashes with hashlib)."""
    if not native_available():
        return None
    kernel = cast(Callable[..., Any], _kernel)  # loaded by native_available
    md, new, free = _digest
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    out = np.empty((rows.shape[0], HASH_SIZE), np.uint8)
    ctx = new()
    if not ctx:
        raise MemoryError("OpenSSL could not allocate a digest context")
    try:
        done = kernel(rows, prefix, out, ctx, md)
    finally:
        free(ctx)
    if done != rows.shape[0]:
        raise RuntimeError(f"OpenSSL SHA-256 failed at message {done} of {rows.shape[0]}")
    return out
