"""What every checkpoint reader shares: its one-line error, the dtypes it reads, and turning raw
tensor bytes into the arrays kzoo loads (float32, aligned for TF to adopt)."""

from __future__ import annotations

import numpy as np

from kzoo.errors import KzooError
from kzoo.io.arrays import aligned_empty


class CheckpointError(KzooError):
    """One-line, user-facing message naming the file / tensor and the problem."""


def fail(path, problem) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}")


def why(exc: BaseException) -> str:
    """A wrapped exception as a short phrase, e.g. 'BadZipFile: Bad CRC-32 for file ...'."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- dtypes: our names follow torch / numpy ("float32", "bfloat16", ...) ---------------------------

# name -> numpy code of the raw little-endian storage; bfloat16 is read as its raw uint16 bits.
RAW_CODES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2",
    "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1",
    "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "u1", "bool": "?",
}
FLOATING = {"float64", "float32", "float16", "bfloat16"}
# Known but not readable (numpy has no such type); shape()/dtype() still work for them.
UNSUPPORTED_SIZES = {"float8_e4m3fn": 1, "float8_e5m2": 1}


def itemsize(dtype: str) -> int:
    if dtype in RAW_CODES:
        return np.dtype(RAW_CODES[dtype]).itemsize
    return UNSUPPORTED_SIZES[dtype]


def check_readable(path, name, dtype):
    if dtype not in RAW_CODES:
        raise fail(path, f"tensor {name!r} has dtype {dtype}, which kzoo cannot read")


def finish(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Raw source-dtype values (any layout) -> a writable, 64-byte-aligned C-contiguous array in
    native order (the array itself when it already is one).

    Floating tensors become float32 (bfloat16 bits are widened: bf16 is the top half of an fp32).
    """
    if dtype == "bfloat16":
        out = aligned_empty(arr.shape, np.uint32)
        out[...] = arr
        out <<= 16
        return out.view(np.float32)
    target = np.dtype(np.float32 if dtype in FLOATING else arr.dtype.newbyteorder("="))
    if (arr.dtype == target and arr.flags.writeable and arr.flags.c_contiguous
            and arr.ctypes.data % 64 == 0):
        return arr
    out = aligned_empty(arr.shape, target)
    out[...] = arr
    return out


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_dims(x) -> bool:
    return isinstance(x, (tuple, list)) and all(is_int(d) and d >= 0 for d in x)
