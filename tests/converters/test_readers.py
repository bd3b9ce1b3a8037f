"""kzoo.converters.readers: torch-free reading of safetensors / torch.save checkpoints."""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kzoo.converters.readers import Checkpoint, CheckpointError, open_checkpoint


def _tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    return {
        "f32": base,
        "f16": torch.randn(3, 5, generator=g).half(),
        "bf16": torch.randn(2, 7, generator=g).to(torch.bfloat16),
        "i64": torch.arange(-5, 5).reshape(2, 5),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
    }


def _expected(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy() if t.is_floating_point() else t.numpy()


def _assert_matches(ckpt: Checkpoint, tensors: dict):
    assert ckpt.names() == sorted(tensors)
    for name, t in tensors.items():
        assert ckpt.shape(name) == tuple(t.shape), name
        assert ckpt.dtype(name) == str(t.dtype).removeprefix("torch."), name
        got = ckpt.get(name)
        want = _expected(t)
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.writeable and got.flags.c_contiguous, name


def _one_line_naming(err: pytest.ExceptionInfo, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg
    assert os.path.basename(str(path)) in msg, msg
    return msg


# ------------------------------------------------------------------------------ safetensors


def test_safetensors_single_file(tmp_path):
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "safetensors"
        assert ckpt.files == [tmp_path / "model.safetensors"]
        assert ckpt.nbytes == sum(t.numel() * t.element_size() for t in tensors.values())
        _assert_matches(ckpt, tensors)
    # a path straight to the file works too
    with open_checkpoint(str(tmp_path / "model.safetensors")) as ckpt:
        _assert_matches(ckpt, tensors)


def test_bf16_and_fp16_upcast_is_exact(tmp_path):
    # values that fp16/bf16 hold exactly but that a sloppy conversion would round or flush
    vals = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-38, 3.0e38, float("inf")])
    tensors = {"h": vals.half(), "b": vals.to(torch.bfloat16)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with open_checkpoint(tmp_path) as ckpt:
        for name, t in tensors.items():
            got = ckpt.get(name)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got.view(np.uint32), t.float().numpy().view(np.uint32))


def _write_sharded_safetensors(tmp_path, tensors):
    shards = {"model-00001-of-00002.safetensors": ["f32", "f16", "bool"],
              "model-00002-of-00002.safetensors": ["bf16", "i64", "scalar", "empty"]}
    weight_map = {}
    for shard, names in shards.items():
        save_file({n: tensors[n] for n in names}, str(tmp_path / shard))
        weight_map.update({n: shard for n in names})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index, sorted(shards)


def test_safetensors_sharded(tmp_path):
    tensors = _tensors()
    index, shards = _write_sharded_safetensors(tmp_path, tensors)
    for where in (tmp_path, index):
        with open_checkpoint(where) as ckpt:
            assert ckpt.format == "sharded-safetensors"
            assert sorted(ckpt.files) == [tmp_path / s for s in shards]
            _assert_matches(ckpt, tensors)


def test_prefers_safetensors_over_bin(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    torch.save({"b": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "safetensors" and ckpt.names() == ["a"]


# ------------------------------------------------------------------------------ torch.save .bin


def _bin_tensors():
    tensors = _tensors()
    shared = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors.update({
        "shared": shared,
        "shared_offset": shared[1:],              # storage offset
        "shared_transposed": shared.t(),          # swapped strides
        "shared_strided": shared[1:, 1::2],       # offset + non-unit strides
        "u16": torch.tensor([0, 1, 65535], dtype=torch.uint16),  # via _rebuild_tensor_v3
    })
    return tensors


def test_bin_single_file_with_views(tmp_path):
    tensors = _bin_tensors()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "bin"
        assert ckpt.files == [tmp_path / "pytorch_model.bin"]
        # the four "shared*" tensors are stored once
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for t in tensors.values()}
        assert ckpt.nbytes == sum(storages.values())
        _assert_matches(ckpt, tensors)


def test_bin_module_state_dict_with_tied_weights(tmp_path):
    # a real state_dict(): an OrderedDict carrying _metadata, with tied (shared) weights
    model = torch.nn.Sequential(torch.nn.Embedding(7, 3), torch.nn.Linear(3, 7))
    model[1].weight = model[0].weight
    model = model.half()
    state = model.state_dict()
    torch.save(state, tmp_path / "weights.bin")
    with open_checkpoint(tmp_path / "weights.bin") as ckpt:
        _assert_matches(ckpt, dict(state))


def test_bin_sharded(tmp_path):
    tensors = _bin_tensors()
    shards = {"pytorch_model-00001-of-00002.bin": ["f32", "f16", "shared", "shared_offset"],
              "pytorch_model-00002-of-00002.bin": [n for n in tensors if n not in
                                                  ("f32", "f16", "shared", "shared_offset")]}
    weight_map = {}
    for shard, names in shards.items():
        torch.save({n: tensors[n] for n in names}, tmp_path / shard)
        weight_map.update({n: shard for n in names})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "sharded-bin"
        assert sorted(ckpt.files) == [tmp_path / s for s in sorted(shards)]
        _assert_matches(ckpt, tensors)


def test_reader_never_imports_torch(tmp_path):
    torch.save(_bin_tensors(), tmp_path / "pytorch_model.bin")
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    code = (
        "import sys\n"
        "from kzoo.converters.readers import open_checkpoint\n"
        "for f in sys.argv[1:]:\n"
        "    with open_checkpoint(f) as c:\n"
        "        [c.get(n) for n in c.names()]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "pytorch_model.bin"),
                    str(tmp_path / "model.safetensors")], check=True)


# ------------------------------------------------------------------------------ hostile pickles


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _zip_pickle(path, payload: bytes, prefix="archive"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", payload)
        zf.writestr(f"{prefix}/version", "3\n")


def test_malicious_bin_from_torch_save_is_refused(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "x": _Evil(os.system, (f"touch {sentinel}",))}, path)
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(path)
    msg = _one_line_naming(err, path)
    assert f"{os.system.__module__}.system" in msg and "refusing to load" in msg
    assert not sentinel.exists()


@pytest.mark.parametrize("func, protocol", [
    (eval, 2),                # GLOBAL 'builtins eval'
    (subprocess.Popen, 4),    # STACK_GLOBAL 'subprocess Popen'
    (os.system, 0),           # protocol 0 text opcodes
])
def test_malicious_bin_crafted_pickle_is_refused(tmp_path, func, protocol):
    sentinel = tmp_path / "SENTINEL"
    if func is eval:
        args = (f"__import__('pathlib').Path({str(sentinel)!r}).touch()",)
    elif func is subprocess.Popen:
        args = (["touch", str(sentinel)],)
    else:
        args = (f"touch {sentinel}",)
    path = tmp_path / "pytorch_model.bin"
    _zip_pickle(path, pickle.dumps({"w": _Evil(func, args)}, protocol=protocol, fix_imports=False))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    msg = _one_line_naming(err, path)
    assert f"{func.__module__}.{func.__qualname__}" in msg
    assert not sentinel.exists()


def test_pickle_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    _zip_pickle(path, pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(path)
    assert "not a state dict" in _one_line_naming(err, path)


# ------------------------------------------------------------------------------ broken files


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "truncated" in _one_line_naming(err, path)


@pytest.mark.parametrize("content", [
    b"",
    b"\x05\x00",
    (16).to_bytes(8, "little") + b"garbage garbage!",
    (10**12).to_bytes(8, "little") + b"{}",
    (2).to_bytes(8, "little") + b"[]",
    b'\x2a\x00\x00\x00\x00\x00\x00\x00{"a": {"dtype": "F32", "shape": [4]}}     ',
])
def test_garbage_safetensors_header(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    _one_line_naming(err, path)


def test_truncated_bin_zip(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(_bin_tensors(), path)
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "truncated" in _one_line_naming(err, path)


def test_corrupt_bin_record_fails_on_get(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"ok": torch.ones(3), "w": torch.full((8,), 1234.5)}, path)
    data = bytearray(path.read_bytes())
    at = data.find(np.full(8, 1234.5, np.float32).tobytes())
    data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with open_checkpoint(path) as ckpt:
        np.testing.assert_array_equal(ckpt.get("ok"), np.ones(3, np.float32))
        with pytest.raises(CheckpointError) as err:
            ckpt.get("w")
    assert "'w'" in _one_line_naming(err, path)


def test_bin_missing_storage_record(tmp_path):
    src, path = tmp_path / "src.bin", tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(3)}, src)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                zout.writestr(info, zin.read(info))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(path)
    assert "data/0" in _one_line_naming(err, path)


def test_legacy_torch_format_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    msg = _one_line_naming(err, path)
    assert "legacy" in msg and "safetensors" in msg


def test_missing_shard(tmp_path):
    index, shards = _write_sharded_safetensors(tmp_path, _tensors())
    (tmp_path / shards[1]).unlink()
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "missing" in _one_line_naming(err, shards[1])


def test_shard_lacking_a_listed_tensor(tmp_path):
    index, shards = _write_sharded_safetensors(tmp_path, _tensors())
    data = json.loads(index.read_text())
    data["weight_map"]["ghost"] = shards[0]
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "'ghost'" in _one_line_naming(err, shards[0])


@pytest.mark.parametrize("text", ["{not json", "[]", '{"weight_map": {"a": 3}}', "\udcff"])
def test_bad_index_json(tmp_path, text):
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    _one_line_naming(err, index)


def test_empty_directory(tmp_path):
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    msg = _one_line_naming(err, tmp_path)
    assert "model.safetensors" in msg and "pytorch_model.bin.index.json" in msg


def test_nonexistent_path(tmp_path):
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path / "nope")
    _one_line_naming(err, tmp_path / "nope")


def test_unknown_tensor_name(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    with open_checkpoint(tmp_path) as ckpt:
        assert "a" in ckpt and "b" not in ckpt
        with pytest.raises(CheckpointError) as err:
            ckpt.get("b")
    assert "'b'" in _one_line_naming(err, "model.safetensors")
