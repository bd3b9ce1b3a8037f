"""Read Hugging Face PyTorch checkpoints (safetensors or torch.save ``.bin``) without torch.

Why a hand-written unpickler: a ``pytorch_model.bin`` is a zip whose ``data.pkl`` is a pickle,
and unpickling calls whatever callables the pickle names, so a hostile checkpoint can run
arbitrary code. ``torch.load(weights_only=True)`` guards against that but needs torch, which
kzoo does not depend on. ``_WeightsUnpickler`` resolves only the few globals a plain state dict
uses, and resolves them to inert stand-ins (never the real torch objects); any other global
stops the load before anything runs. The tensor bytes are then read one storage record at a
time straight out of the zip with numpy.

Every failure (missing, corrupt, truncated, hostile) surfaces as a one-line ``CheckpointError``
naming the file, never as a raw traceback from safetensors, zipfile or pickle.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kzoo.errors import KzooError
from numpy.lib.stride_tricks import as_strided

__all__ = ["CheckpointError", "Checkpoint", "open_checkpoint"]

# What a Hugging Face checkpoint directory may hold, in order of preference.
_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class CheckpointError(KzooError):
    """One-line, user-facing message naming the file / tensor and the problem."""


def _fail(path, problem) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}")


def _why(exc: BaseException) -> str:
    """A wrapped exception as a short phrase, e.g. 'BadZipFile: Bad CRC-32 for file ...'."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# dtypes: our names follow torch / numpy ("float32", "bfloat16", ...)

# name -> numpy code of the raw little-endian storage; bfloat16 is read as its raw uint16 bits.
_RAW_CODES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2",
    "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1",
    "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "u1", "bool": "?",
}
_FLOATING = {"float64", "float32", "float16", "bfloat16"}
# Known but not readable (numpy has no such type); shape()/dtype() still work for them.
_UNSUPPORTED_SIZES = {"float8_e4m3fn": 1, "float8_e5m2": 1}

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _itemsize(dtype: str) -> int:
    if dtype in _RAW_CODES:
        return np.dtype(_RAW_CODES[dtype]).itemsize
    return _UNSUPPORTED_SIZES[dtype]


def _check_readable(path, name, dtype):
    if dtype not in _RAW_CODES:
        raise _fail(path, f"tensor {name!r} has dtype {dtype}, which kzoo cannot read")


def aligned_empty(shape, dtype) -> np.ndarray:
    """`np.empty` on a 64-byte boundary (when not empty): TF can then adopt the buffer without a
    copy (DLPack)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def _finish(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Raw source-dtype values (any layout) -> a writable, 64-byte-aligned C-contiguous array in
    native order (the array itself when it already is one).

    Floating tensors become float32 (bfloat16 bits are widened: bf16 is the top half of an fp32).
    """
    if dtype == "bfloat16":
        out = aligned_empty(arr.shape, np.uint32)
        out[...] = arr
        out <<= 16
        return out.view(np.float32)
    target = np.dtype(np.float32 if dtype in _FLOATING else arr.dtype.newbyteorder("="))
    if (arr.dtype == target and arr.flags.writeable and arr.flags.c_contiguous
            and arr.ctypes.data % 64 == 0):
        return arr
    out = aligned_empty(arr.shape, target)
    out[...] = arr
    return out


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_dims(x) -> bool:
    return isinstance(x, (tuple, list)) and all(_is_int(d) and d >= 0 for d in x)


# --------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header, then the raw tensor bytes.

_MAX_HEADER = 100_000_000  # safetensors' own limit


class _SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        self._raw = None  # plain file handle, opened on the first read
        self._tensors = {}  # name -> (dtype, shape, begin, end), offsets relative to the data
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise _fail(path, f"not a safetensors file: only {size} bytes long")
                n = int.from_bytes(head, "little")
                if n > min(size - 8, _MAX_HEADER):
                    raise _fail(path, f"not a safetensors file, or truncated: the header claims "
                                      f"{n} bytes but the file holds {size}")
                header_bytes = f.read(n)
        except OSError as e:
            raise _fail(path, f"cannot read: {_why(e)}") from None
        try:
            header = json.loads(header_bytes)
        except ValueError as e:
            raise _fail(path, f"not a safetensors file: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise _fail(path, "not a safetensors file: the header is not a JSON object")
        self._data_start = 8 + n
        data_len = size - self._data_start
        for name, info in header.items():
            if name != "__metadata__":
                self._tensors[name] = self._parse_entry(name, info, data_len)

    def _parse_entry(self, name, info, data_len):
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape, (begin, end) = info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _fail(self.path, f"malformed header entry for tensor {name!r}") from None
        if not (_is_dims(shape) and _is_int(begin) and _is_int(end) and 0 <= begin <= end):
            raise _fail(self.path, f"malformed header entry for tensor {name!r}")
        if end - begin != math.prod(shape) * _itemsize(dtype):
            raise _fail(self.path, f"tensor {name!r}: {end - begin} bytes do not hold "
                                   f"shape {tuple(shape)} of {dtype}")
        if end > data_len:
            raise _fail(self.path, f"truncated: tensor {name!r} ends at byte {end} of the data "
                                   f"but only {data_len} bytes are present")
        return dtype, tuple(shape), begin, end

    def names(self):
        return self._tensors.keys()

    def shape(self, name):
        return self._tensors[name][1]

    def dtype(self, name):
        return self._tensors[name][0]

    @property
    def nbytes(self):
        return sum(end - begin for _, _, begin, end in self._tensors.values())

    def get(self, name):
        # Plain reads, not mmap: mapped pages would stay resident and double peak memory.
        dtype, shape, begin, end = self._tensors[name]
        _check_readable(self.path, name, dtype)
        try:
            if self._raw is None:
                self._raw = open(self.path, "rb")
            raw = aligned_empty(shape, np.dtype(_RAW_CODES[dtype]).newbyteorder("<"))
            self._raw.seek(self._data_start + begin)
            if self._raw.readinto(raw.reshape(-1).view(np.uint8)) != end - begin:
                raise _fail(self.path, f"truncated while reading tensor {name!r}")
            return _finish(raw, dtype)
        except CheckpointError:
            raise
        except OSError as e:
            raise _fail(self.path, f"cannot read tensor {name!r} ({_why(e)})") from None

    def close(self):
        if self._raw is not None:
            self._raw.close()
            self._raw = None


# --------------------------------------------------------------------------------------------
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
    if not (isinstance(storage, _Storage) and _is_int(offset) and offset >= 0
            and _is_dims(size) and _is_dims(stride) and len(size) == len(stride)):
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
    **{f"torch.{k}": _DType(k) for k in (*_RAW_CODES, *_UNSUPPORTED_SIZES)},
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
        raise _fail(self._path, f"refusing to load: the pickle references {qualname[:200]}, "
                                f"which a weights-only checkpoint never contains "
                                f"(nothing was executed)")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel); numel counts elements, bytes if untyped
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and _is_int(pid[4]) and pid[4] >= 0):
            raise _fail(self._path, f"refusing to load: unexpected persistent id {repr(pid)[:100]}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        nbytes = numel if storage_type.dtype is None else numel * _itemsize(storage_type.dtype)
        storage = _Storage(key, storage_type.dtype, nbytes)
        if self._storages.setdefault(key, storage) != storage:
            raise _fail(self._path, f"storage {key!r} is described two different ways")
        return storage


_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # pickled magic number of the pre-1.6 format


class _BinFile:
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
            raise _fail(path, f"cannot read: {_why(e)}") from None
        try:
            with open(path, "rb") as f:
                head = f.read(32)
        except OSError as e:
            raise _fail(path, f"cannot read: {_why(e)}") from None
        if head.startswith(b"PK"):
            raise _fail(path, "truncated or corrupt zip archive (its central directory is missing)")
        if head.startswith(b"\x80") and _LEGACY_MAGIC in head:
            raise _fail(path, "this is the legacy (pre-1.6, non-zip) torch.save format, which kzoo "
                              "does not read; re-save it with a recent torch or convert it to "
                              "safetensors")
        raise _fail(path, "not a PyTorch checkpoint (not a zip archive)")

    def _load_index(self):
        path, zf = self.path, self._zip
        pkl_names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if not pkl_names:
            raise _fail(path, "zip archive holds no data.pkl: not a torch.save checkpoint")
        self._prefix = pkl_names[0][: -len("data.pkl")]  # "archive/", "pytorch_model/", ...
        try:
            pkl = zf.read(pkl_names[0])
            order = zf.read(self._prefix + "byteorder").decode("ascii", "replace").strip() \
                if self._prefix + "byteorder" in zf.NameToInfo else "little"
        except Exception as e:  # BadZipFile (bad CRC), EOFError, zlib.error, ...
            raise _fail(path, f"corrupt zip archive ({_why(e)})") from None
        if order not in ("little", "big"):
            raise _fail(path, f"unknown byte order {order[:20]!r}")
        self._order = "<" if order == "little" else ">"

        try:
            state = _WeightsUnpickler(pkl, path).load()
        except CheckpointError:
            raise
        except Exception as e:  # UnpicklingError, EOFError, ValueError from a stand-in, ...
            raise _fail(path, f"data.pkl is not a readable state dict ({_why(e)})") from None
        if not isinstance(state, dict):
            raise _fail(path, f"data.pkl holds a {type(state).__name__}, not a state dict")

        self._tensors = {}
        self._records = {}  # storage key -> record size
        for name, ref in state.items():
            if not isinstance(name, str) or not isinstance(ref, _TensorRef):
                raise _fail(path, f"state dict entry {repr(name)[:100]} is not a tensor")
            key = ref.storage.key
            if key not in self._records:
                try:
                    info = zf.getinfo(f"{self._prefix}data/{key}")
                except KeyError:
                    raise _fail(path, f"tensor {name!r}: its storage record data/{key} is "
                                      f"missing from the archive") from None
                self._records[key] = info.file_size
            self._check_bounds(name, ref, min(self._records[key], ref.storage.nbytes))
            self._tensors[name] = ref

    def _check_bounds(self, name, ref, nbytes):
        """The view (offset, shape, strides) must lie inside the storage's nbytes."""
        if 0 in ref.shape:
            return
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
        if (last + 1) * _itemsize(ref.dtype) > nbytes:
            raise _fail(self.path, f"tensor {name!r} reaches past the end of its storage "
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
        _check_readable(self.path, name, ref.dtype)
        try:  # one storage record; zipfile checks its CRC
            raw = self._zip.read(f"{self._prefix}data/{ref.storage.key}")
        except Exception as e:  # BadZipFile, EOFError, zlib.error, OSError
            raise _fail(self.path, f"cannot read tensor {name!r} ({_why(e)})") from None
        self._check_bounds(name, ref, len(raw))
        code = np.dtype(_RAW_CODES[ref.dtype]).newbyteorder(self._order)
        if 0 in ref.shape:
            return _finish(np.empty(ref.shape, code), ref.dtype)
        flat = np.frombuffer(raw, dtype=code, count=len(raw) // code.itemsize)
        view = as_strided(flat[ref.offset:], shape=ref.shape,
                          strides=[s * code.itemsize for s in ref.stride], writeable=False)
        return _finish(view, ref.dtype)  # copies out of the shared storage

    def close(self):
        self._zip.close()


# --------------------------------------------------------------------------------------------
# The public API


class Checkpoint:
    """Tensors of one checkpoint (single file or shards), read one at a time.

    ``files`` lists the data files (the shards, not the index json); ``nbytes`` is the size of
    their tensor data. Use as a context manager, or call ``close()``.
    """

    def __init__(self, format: str, files, readers: dict):
        self.format = format
        self.files = [Path(p) for p in files]
        self._readers = readers  # tensor name -> the _SafetensorsFile / _BinFile holding it

    def _reader(self, name):
        try:
            return self._readers[name]
        except KeyError:
            where = self.files[0] if len(self.files) == 1 else self.files[0].parent
            raise _fail(where, f"no tensor named {str(name)[:200]!r} in this checkpoint") from None

    def names(self) -> list[str]:
        return sorted(self._readers)

    def __contains__(self, name) -> bool:
        return name in self._readers

    def __len__(self) -> int:
        return len(self._readers)

    def shape(self, name) -> tuple[int, ...]:
        return self._reader(name).shape(name)

    def dtype(self, name) -> str:
        return self._reader(name).dtype(name)

    def get(self, name) -> np.ndarray:
        return self._reader(name).get(name)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._unique_readers())

    def _unique_readers(self):
        return list({id(r): r for r in self._readers.values()}.values())

    def close(self):
        for r in self._unique_readers():
            r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Checkpoint(format={self.format!r}, files={len(self.files)}, tensors={len(self)})"


def _open_file(path: Path):
    """A single (non-index) checkpoint file -> its reader, chosen by extension, else by content."""
    if path.suffix == ".safetensors":
        return _SafetensorsFile(path)
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        return _BinFile(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise _fail(path, f"cannot read: {_why(e)}") from None
    return _BinFile(path) if head in (b"PK", b"\x80\x02") else _SafetensorsFile(path)


def _open_sharded(index_path: Path) -> Checkpoint:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(index_path, f"cannot read the index ({_why(e)})") from None
    except ValueError as e:
        raise _fail(index_path, f"the index is not valid JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())):
        raise _fail(index_path, "the index has no 'weight_map' mapping tensor names to shard files")

    shard_names = sorted(set(weight_map.values()))
    for shard in shard_names:  # check them all before opening any
        if not (index_path.parent / shard).is_file():
            raise _fail(index_path.parent / shard,
                        f"shard file is missing (listed in {index_path.name})")
    opened = {}
    try:
        for shard in shard_names:
            opened[shard] = _open_file(index_path.parent / shard)
        readers = {}
        for name, shard in weight_map.items():
            if name not in opened[shard].names():
                raise _fail(opened[shard].path, f"tensor {name!r} listed in {index_path.name} "
                                                f"is not in this shard")
            readers[name] = opened[shard]
    except BaseException:
        for r in opened.values():
            r.close()
        raise
    kinds = {isinstance(r, _SafetensorsFile) for r in opened.values()}
    fmt = "sharded-safetensors" if kinds == {True} else "sharded-bin"
    return Checkpoint(fmt, [r.path for r in opened.values()], readers)


def _open_path(path: Path) -> Checkpoint:
    if path.name.endswith(".json"):
        return _open_sharded(path)
    reader = _open_file(path)
    fmt = "safetensors" if isinstance(reader, _SafetensorsFile) else "bin"
    return Checkpoint(fmt, [path], {name: reader for name in reader.names()})


def open_checkpoint(path) -> Checkpoint:
    """Open a checkpoint directory (model.safetensors, model.safetensors.index.json,
    pytorch_model.bin or pytorch_model.bin.index.json, preferred in that order) or one such file.
    Raises CheckpointError when nothing usable is found."""
    path = Path(os.fspath(path))
    if path.is_dir():
        for candidate in _CANDIDATES:
            if (path / candidate).is_file():
                return _open_path(path / candidate)
        raise _fail(path, f"no checkpoint found (looked for {', '.join(_CANDIDATES)})")
    if not path.exists():
        raise _fail(path, "no such file or directory")
    return _open_path(path)
