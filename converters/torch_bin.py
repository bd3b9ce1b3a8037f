"""Reads torch.save ``.bin`` checkpoints without torch, and without running pickle code.

Why a hand-written unpickler: a ``pytorch_model.bin`` is a zip whose ``data.pkl`` is a pickle,
and unpickling calls whatever callables the pickle names, so a hostile checkpoint can run
arbitrary code. ``torch.load(weights_only=True)`` guards against that but needs torch, which
kzoo does not depend on. ``_WeightsUnpickler`` resolves only the few globals a plain state dict
uses, and resolves them to inert stand-ins (never the real torch objects); any other global
stops the load before anything runs. The tensor bytes are then read one storage record at a
time straight out of the zip with numpy.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from kzoo.converters.tensors import (
    RAW_CODES, UNSUPPORTED_SIZES, CheckpointError, check_readable, fail, finish, is_dims, is_int, itemsize, why,
)

# torch.save zip: <archive>/data.pkl (the pickled state dict) + <archive>/data/<key> records.
# Stand-ins for the only things data.pkl may name. NamedTuples: immutable, no __dict__, so a
# pickle BUILD opcode cannot tamper with them.


class _StorageType(NamedTuple):  # torch.FloatStorage & co.; dtype None = torch.UntypedStorage
    dtype: str | None


class _DType(NamedTuple):  # torch.float16 & co. (named by _rebuild_tensor_v3)
    name: str


class _Storage(NamedTuple):  # what persistent_load returns for a ('storage', ...) id
    key: str
    dtype: str | None
    nbytes: int


class _TensorRef(NamedTuple):  # a tensor: a strided view into one storage record
    storage: _Storage
    dtype: str
    offset: int
    shape: tuple
    stride: tuple


def _tensor_ref(storage, offset, size, stride, dtype):
    if not (isinstance(storage, _Storage) and is_int(offset) and offset >= 0
            and is_dims(size) and is_dims(stride) and len(size) == len(stride)):
        raise ValueError("malformed tensor record")
    return _TensorRef(storage, dtype, offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage) or storage.dtype is None:
        raise ValueError("malformed tensor record")
    return _tensor_ref(storage, offset, size, stride, storage.dtype)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise ValueError("malformed tensor record")
    return _tensor_ref(storage, offset, size, stride, dtype.name)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data  # an nn.Parameter is just its tensor here


_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_ALLOWED_GLOBALS = {
    "collections.OrderedDict": collections.OrderedDict,  # (state_dict()'s own type)
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.UntypedStorage": _StorageType(None),
    "torch.storage.UntypedStorage": _StorageType(None),
    **{f"torch.{k}": _StorageType(v) for k, v in _STORAGE_DTYPES.items()},
    **{f"torch.{k}": _DType(k) for k in (*RAW_CODES, *UNSUPPORTED_SIZES)},
}


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles a state dict into _TensorRef stand-ins; refuses every other global."""

    def __init__(self, data: bytes, path):
        super().__init__(io.BytesIO(data))
        self._path = path
        self._storages = {}

    def find_class(self, module, name):
        qualname = f"{module}.{name}"
        if qualname in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[qualname]
        raise fail(self._path, f"refusing to load: the pickle references {qualname[:200]}, "
                                f"which a weights-only checkpoint never contains "
                                f"(nothing was executed)")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel); numel counts elements, bytes if untyped
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and is_int(pid[4]) and pid[4] >= 0):
            raise fail(self._path, f"refusing to load: unexpected persistent id {repr(pid)[:100]}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        nbytes = numel if storage_type.dtype is None else numel * itemsize(storage_type.dtype)
        storage = _Storage(key, storage_type.dtype, nbytes)
        if self._storages.setdefault(key, storage) != storage:
            raise fail(self._path, f"storage {key!r} is described two different ways")
        return storage


_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled magic number of the pre-1.6 format


class BinFile:
    def __init__(self, path: Path):
        self.path = path
        self._zip = self._open_zip()
        try:
            self._load_index()
        except BaseException:
            self._zip.close()
            raise

    def _open_zip(self):
        path = self.path
        try:
            return zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            pass
        except OSError as e:
            raise fail(path, f"cannot read: {why(e)}") from None
        try:
            with open(path, "rb") as f:
                head = f.read(32)
        except OSError as e:
            raise fail(path, f"cannot read: {why(e)}") from None
        if head.startswith(b"PK"):
            raise fail(path, "truncated or corrupt zip archive (its central directory is missing)")
        if head.startswith(b"\x80") and _LEGACY_MAGIC in head:
            raise fail(path, "this is the legacy (pre-1.6, non-zip) torch.save format, which kzoo "
                              "does not read; re-save it with a recent torch or convert it to "
                              "safetensors")
        raise fail(path, "not a PyTorch checkpoint (not a zip archive)")

    def _load_index(self):
        path, zf = self.path, self._zip
        pkl_names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if not pkl_names:
            raise fail(path, "zip archive holds no data.pkl: not a torch.save checkpoint")
        self._prefix = pkl_names[0][: -len("data.pkl")]  # "archive/", "pytorch_model/", ...
        try:
            pkl = zf.read(pkl_names[0])
            order = zf.read(self._prefix + "byteorder").decode("ascii", "replace").strip() \
                if self._prefix + "byteorder" in zf.NameToInfo else "little"
        except Exception as e:  # BadZipFile (bad CRC), EOFError, zlib.error, ...
            raise fail(path, f"corrupt zip archive ({why(e)})") from None
        if order not in ("little", "big"):
            raise fail(path, f"unknown byte order {order[:20]!r}")
        self._order = "<" if order == "little" else ">"

        try:
            state = _WeightsUnpickler(pkl, path).load()
        except CheckpointError:
            raise
        except Exception as e:  # UnpicklingError, EOFError, ValueError from a stand-in, ...
            raise fail(path, f"data.pkl is not a readable state dict ({why(e)})") from None
        if not isinstance(state, dict):
            raise fail(path, f"data.pkl holds a {type(state).__name__}, not a state dict")

        self._tensors = {}
        self._records = {}  # storage key -> record size
        for name, ref in state.items():
            if not isinstance(name, str) or not isinstance(ref, _TensorRef):
                raise fail(path, f"state dict entry {repr(name)[:100]} is not a tensor")
            key = ref.storage.key
            if key not in self._records:
                try:
                    info = zf.getinfo(f"{self._prefix}data/{key}")
                except KeyError:
                    raise fail(path, f"tensor {name!r}: its storage record data/{key} is "
                                      f"missing from the archive") from None
                self._records[key] = info.file_size
            self._check_bounds(name, ref, min(self._records[key], ref.storage.nbytes))
            self._tensors[name] = ref

    def _check_bounds(self, name, ref, nbytes):
        """The view (offset, shape, strides) must lie inside the storage's nbytes."""
        if 0 in ref.shape:
            return
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
        if (last + 1) * itemsize(ref.dtype) > nbytes:
            raise fail(self.path, f"tensor {name!r} reaches past the end of its storage "
                                   f"(truncated or corrupt)")

    def names(self):
        return self._tensors.keys()

    def shape(self, name):
        return self._tensors[name].shape

    def dtype(self, name):
        return self._tensors[name].dtype

    @property
    def nbytes(self):
        return sum(self._records.values())

    def get(self, name):
        ref = self._tensors[name]
        check_readable(self.path, name, ref.dtype)
        try:  # one storage record; zipfile checks its CRC
            raw = self._zip.read(f"{self._prefix}data/{ref.storage.key}")
        except Exception as e:  # BadZipFile, EOFError, zlib.error, OSError
            raise fail(self.path, f"cannot read tensor {name!r} ({why(e)})") from None
        self._check_bounds(name, ref, len(raw))
        code = np.dtype(RAW_CODES[ref.dtype]).newbyteorder(self._order)
        if 0 in ref.shape:
            return finish(np.empty(ref.shape, code), ref.dtype)
        flat = np.frombuffer(raw, dtype=code, count=len(raw) // code.itemsize)
        view = as_strided(flat[ref.offset:], shape=ref.shape,
                          strides=[s * code.itemsize for s in ref.stride], writeable=False)
        return finish(view, ref.dtype)  # copies out of the shared storage

    def close(self):
        self._zip.close()
