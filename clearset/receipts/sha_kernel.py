"""The numba loop behind `clearset.receipts.batch_sha` (imported only from there, after
the process's libcrypto is made visible to numba's linker).

OpenSSL's functions are named, not addressed, so the compiled loop is cached on disk
like the PDQ kernels and a new worker process only loads it."""

from __future__ import annotations

import numba
import numpy as np
from numba import types

_init = types.ExternalFunction("EVP_DigestInit_ex", types.int32(types.intp, types.intp, types.intp))
_update = types.ExternalFunction(
    "EVP_DigestUpdate", types.int32(types.intp, types.intp, types.uintp)
)
_final = types.ExternalFunction(
    "EVP_DigestFinal_ex", types.int32(types.intp, types.intp, types.intp)
)


@numba.njit(nogil=True, cache=True)
def prefixed_digests(rows: np.ndarray, prefix: int, out: np.ndarray, ctx: int, md: int) -> int:
    """out[i] = SHA-256(prefix || rows[i]) with digest context ``ctx`` and method ``md``;
    returns how many were made (fewer only if OpenSSL reported a failure)."""
    m, width = rows.shape
    message = np.empty(width + 1, np.uint8)
    message[0] = prefix
    for i in range(m):
        message[1:] = rows[i]
        if _init(ctx, md, 0) != 1:
            return i
        if _update(ctx, message.ctypes.data, width + 1) != 1:
            return i
        if _final(ctx, out[i].ctypes.data, 0) != 1:
            return i
    return m
