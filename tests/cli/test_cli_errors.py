"""Bad input gets a one-line error that names the problem, and leaves nothing at OUT."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from kzoo.cli import main
from reference import TINY_ALBERT, make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ref") / "albert", "AlbertForMaskedLM", TINY_ALBERT)


def copy_ckpt(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_clean_failure(code, err, out, *words):
    assert code != 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("kzoo: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial")]


def test_truncated_safetensors(tmp_path, ckpt, capsys):
    bad = copy_ckpt(ckpt, tmp_path / "bad")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, err = run(["convert", str(bad), str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out", "model.safetensors")


def test_corrupt_header(tmp_path, ckpt, capsys):
    bad = copy_ckpt(ckpt, tmp_path / "bad")
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[8:20] = b"garbage!!!!!"
    (bad / "model.safetensors").write_bytes(bytes(data))
    code, err = run(["convert", str(bad), str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out", "model.safetensors")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_malicious_bin(tmp_path, ckpt, capsys, monkeypatch):
    import torch

    bad = copy_ckpt(ckpt, tmp_path / "bad")
    (bad / "model.safetensors").unlink()
    torch.save({"x": Evil()}, bad / "pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    code, err = run(["convert", str(bad), str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out", "pytorch_model.bin", "system")
    assert not (tmp_path / "EVIL_RAN").exists()


def test_shape_mismatch_names_tensor_and_shapes(tmp_path, ckpt, capsys):
    bad = copy_ckpt(ckpt, tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    name = "albert.encoder.albert_layer_groups.1.albert_layers.0.ffn.weight"
    tensors[name] = np.zeros((36, 32), np.float32)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    code, err = run(["convert", str(bad), str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out", name, "(36, 32)", "(32, 37)")


def test_missing_tensor(tmp_path, ckpt, capsys):
    bad = copy_ckpt(ckpt, tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    del tensors["albert.embeddings.LayerNorm.bias"]
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    code, err = run(["convert", str(bad), str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out", "missing", "embeddings_layer_norm/beta")


def test_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(["convert", str(tmp_path / "empty"), str(tmp_path / "out")], capsys)
    assert_clean_failure(code, err, tmp_path / "out", "config.json")


def test_out_exists_is_kept(tmp_path, ckpt, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    code, err = run(["convert", str(ckpt), str(out)], capsys)
    assert code != 0 and "already exists" in err and (out / "keep").read_text() == "mine"


def test_fill_mask_on_non_model_dir(tmp_path, ckpt, capsys):
    code, err = run(["fill-mask", str(ckpt), "a [MASK]"], capsys)
    assert code != 0 and "kzoo convert" in err and "Traceback" not in err


def test_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "kzoo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("convert", "fill-mask", "embed", "verify"):
        assert command in out.stdout
