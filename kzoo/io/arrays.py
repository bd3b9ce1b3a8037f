"""Arrays TensorFlow can adopt without a copy: weights then exist once in memory, not twice.

Readers (checkpoints, h5 files) read into `aligned_empty` buffers; `as_tensor` hands those to TF
through DLPack. Conversion and loading then peak at about the weights' own size (1.0x), where
`tf.convert_to_tensor` would hold one or two more copies of the largest tensor.
"""

from __future__ import annotations

import numpy as np

ADOPT_MIN_SIZE = 2**16  # smaller arrays are copied: not worth the bookkeeping


def aligned_empty(shape, dtype) -> np.ndarray:
    """`np.empty` on a 64-byte boundary (when not empty): TF can then adopt the buffer (DLPack)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def transpose(x) -> np.ndarray:
    """`x.T` as a new aligned array (PyTorch Linear stores [out, in]; Keras Dense wants [in, out])."""
    out = aligned_empty(x.T.shape, x.dtype)
    out[...] = x.T
    return out


def as_tensor(value, dtype):
    """A TF tensor for a numpy array; large aligned arrays are adopted without a copy (DLPack).

    The tensor (and a variable made from it) then shares the array's memory: the caller must not
    use the array afterwards. Only numeric dtypes travel through DLPack (bfloat16 arrays are copied).
    """
    import tensorflow as tf
    from keras import ops

    if (value.size >= ADOPT_MIN_SIZE and value.dtype == np.dtype(dtype) and value.dtype.kind in "biuf"
            and value.flags.c_contiguous and value.flags.writeable and value.ctypes.data % 64 == 0):
        return tf.experimental.dlpack.from_dlpack(value.__dlpack__())
    return ops.convert_to_tensor(value, dtype=dtype)
