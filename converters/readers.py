"""Read Hugging Face PyTorch checkpoints (safetensors, sharded, or torch.save ``.bin``) without torch.

Safetensors files are read here; ``.bin`` files by kzoo.converters.torch_bin, which reads the pickle
without running any of its code. Tensors are read one at a time, into aligned float32 arrays.

Every failure (missing, corrupt, truncated, hostile) surfaces as a one-line ``CheckpointError``
naming the file, never as a raw traceback from safetensors, zipfile or pickle.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from kzoo.converters.tensors import (
    RAW_CODES, CheckpointError, check_readable, fail, finish, is_dims, is_int, itemsize, why,
)
from kzoo.converters.torch_bin import BinFile
from kzoo.io.arrays import aligned_empty

__all__ = ["CheckpointError", "Checkpoint", "open_checkpoint"]

# What a Hugging Face checkpoint directory may hold, in order of preference.
_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


# --- safetensors: 8-byte little-endian header length, JSON header, then the raw tensor bytes --------

_MAX_HEADER = 100_000_000  # safetensors' own limit


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        self._raw = None  # plain file handle, opened on the first read
        self._tensors = {}  # name -> (dtype, shape, begin, end), offsets relative to the data
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise fail(path, f"not a safetensors file: only {size} bytes long")
                n = int.from_bytes(head, "little")
                if n > min(size - 8, _MAX_HEADER):
                    raise fail(path, f"not a safetensors file, or truncated: the header claims "
                                      f"{n} bytes but the file holds {size}")
                header_bytes = f.read(n)
        except OSError as e:
            raise fail(path, f"cannot read: {why(e)}") from None
        try:
            header = json.loads(header_bytes)
        except ValueError as e:
            raise fail(path, f"not a safetensors file: header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise fail(path, "not a safetensors file: the header is not a JSON object")
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
            raise fail(self.path, f"malformed header entry for tensor {name!r}") from None
        if not (is_dims(shape) and is_int(begin) and is_int(end) and 0 <= begin <= end):
            raise fail(self.path, f"malformed header entry for tensor {name!r}")
        if end - begin != math.prod(shape) * itemsize(dtype):
            raise fail(self.path, f"tensor {name!r}: {end - begin} bytes do not hold "
                                   f"shape {tuple(shape)} of {dtype}")
        if end > data_len:
            raise fail(self.path, f"truncated: tensor {name!r} ends at byte {end} of the data "
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
        check_readable(self.path, name, dtype)
        try:
            if self._raw is None:
                self._raw = open(self.path, "rb")
            raw = aligned_empty(shape, np.dtype(RAW_CODES[dtype]).newbyteorder("<"))
            self._raw.seek(self._data_start + begin)
            if self._raw.readinto(raw.reshape(-1).view(np.uint8)) != end - begin:
                raise fail(self.path, f"truncated while reading tensor {name!r}")
            return finish(raw, dtype)
        except CheckpointError:
            raise
        except OSError as e:
            raise fail(self.path, f"cannot read tensor {name!r} ({why(e)})") from None

    def close(self):
        if self._raw is not None:
            self._raw.close()
            self._raw = None


# --- the public API ----------------------------------------------------------------------------------


class Checkpoint:
    """Tensors of one checkpoint (single file or shards), read one at a time.

    ``files`` lists the data files (the shards, not the index json); ``nbytes`` is the size of
    their tensor data. Use as a context manager, or call ``close()``.
    """

    def __init__(self, format: str, files, readers: dict):
        self.format = format
        self.files = [Path(p) for p in files]
        self._readers = readers  # tensor name -> the SafetensorsFile / BinFile holding it

    def _reader(self, name):
        try:
            return self._readers[name]
        except KeyError:
            where = self.files[0] if len(self.files) == 1 else self.files[0].parent
            raise fail(where, f"no tensor named {str(name)[:200]!r} in this checkpoint") from None

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
        return SafetensorsFile(path)
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt"):
        return BinFile(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise fail(path, f"cannot read: {why(e)}") from None
    return BinFile(path) if head in (b"PK", b"\x80\x02") else SafetensorsFile(path)


def _open_sharded(index_path: Path) -> Checkpoint:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise fail(index_path, f"cannot read the index ({why(e)})") from None
    except ValueError as e:
        raise fail(index_path, f"the index is not valid JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())):
        raise fail(index_path, "the index has no 'weight_map' mapping tensor names to shard files")

    shard_names = sorted(set(weight_map.values()))
    for shard in shard_names:  # check them all before opening any
        if not (index_path.parent / shard).is_file():
            raise fail(index_path.parent / shard,
                        f"shard file is missing (listed in {index_path.name})")
    opened = {}
    try:
        for shard in shard_names:
            opened[shard] = _open_file(index_path.parent / shard)
        readers = {}
        for name, shard in weight_map.items():
            if name not in opened[shard].names():
                raise fail(opened[shard].path, f"tensor {name!r} listed in {index_path.name} "
                                                f"is not in this shard")
            readers[name] = opened[shard]
    except BaseException:
        for r in opened.values():
            r.close()
        raise
    kinds = {isinstance(r, SafetensorsFile) for r in opened.values()}
    fmt = "sharded-safetensors" if kinds == {True} else "sharded-bin"
    return Checkpoint(fmt, [r.path for r in opened.values()], readers)


def _open_path(path: Path) -> Checkpoint:
    if path.name.endswith(".json"):
        return _open_sharded(path)
    reader = _open_file(path)
    fmt = "safetensors" if isinstance(reader, SafetensorsFile) else "bin"
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
        raise fail(path, f"no checkpoint found (looked for {', '.join(_CANDIDATES)})")
    if not path.exists():
        raise fail(path, "no such file or directory")
    return _open_path(path)
