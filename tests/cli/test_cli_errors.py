"""Bad input gets a one-line error that names the problem, and leaves nothing at OUT."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

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
    name = "albert.encoder.albert_layer_groups.0.albert_layers.1.ffn.weight"
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


# --- what a new user's tryout broke ------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """(checkpoint, model dir) of a tiny ALBERT masked LM with its tokenizer."""
    from reference import model_with_tokenizer
    from spm_fixtures import make_albert_tokenizer_dir

    tmp = tmp_path_factory.mktemp("albert-tok")
    return model_with_tokenizer(tmp, "AlbertForMaskedLM", TINY_ALBERT, make_albert_tokenizer_dir(tmp, True))


def one_line(code, err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kzoo: error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_non_utf8_argument(model_dir, capsys):
    one_line(*run(["fill-mask", str(model_dir[1]), "caf\udce9 [MASK]"], capsys), "argument 3", "not UTF-8")


@pytest.mark.skipif(os.access("/sys", os.W_OK) and os.geteuid() != 0, reason="needs a read-only /sys")
def test_unwritable_out(ckpt, capsys):
    one_line(*run(["convert", str(ckpt), "/sys/kzoo-out"], capsys), "/sys/kzoo-out", "cannot write there")


def test_config_that_is_not_an_object(tmp_path, ckpt, model_dir, capsys):
    bad = copy_ckpt(ckpt, tmp_path / "bad")
    (bad / "config.json").write_text("[]")
    one_line(*run(["convert", str(bad), str(tmp_path / "out")], capsys), "config.json", "not a model config")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("[]")
    one_line(*run(["fill-mask", str(broken), "a [MASK]"], capsys), "config.json")


def test_corrupt_tokenizer_model(tmp_path, model_dir, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(model_dir[1], copy)
    (copy / "kzoo_tokenizer.model").write_bytes(b"\x0a\xff\xff garbage")
    one_line(*run(["fill-mask", str(copy), "a [MASK]"], capsys), "kzoo_tokenizer.model")


def test_verify_against_another_model_or_a_broken_file(tmp_path, model_dir, capsys):
    from reference import TINY_XLMR

    other = make_checkpoint(tmp_path / "xlmr", "XLMRobertaForMaskedLM", TINY_XLMR)
    bigger = make_checkpoint(tmp_path / "big", "AlbertForMaskedLM", {**TINY_ALBERT, "hidden_size": 64})
    capsys.readouterr()  # (the checkpoints' own progress bars)
    one_line(*run(["verify", str(model_dir[1]), "--reference", str(other)], capsys), "xlm-roberta checkpoint")
    one_line(*run(["verify", str(model_dir[1]), "--reference", str(bigger)], capsys), "another architecture",
             "hidden_dim")
    truncated = copy_ckpt(model_dir[0], tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    one_line(*run(["verify", str(model_dir[1]), "--reference", str(truncated)], capsys), "model.safetensors",
             "truncated")


def test_bad_options_fail_before_any_work(tmp_path, model_dir, capsys, monkeypatch):
    import kzoo.export.common

    def no(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(kzoo.export.common, "model_and_config", no)
    model = str(model_dir[1])
    out = tmp_path / "x.tflite"
    for options, flag in ((["--with-tokenizer", "--top-k", "0"], "--top-k"), (["--max-masks", "-2"], "--max-masks"),
                          (["--max-masks", "0"], "--max-masks")):
        one_line(*run(["export", "tflite", model, str(out), *options], capsys), flag)
        assert not out.exists()
    monkeypatch.undo()
    one_line(*run(["fill-mask", model, "a [MASK]", "--top-k", "-1"], capsys), "top_k")
    one_line(*run(["convert", str(model_dir[0]), str(tmp_path / "o"), "--pretokenize-by-lang"], capsys),
             "--pretokenize-by-lang", "albert")
    assert not (tmp_path / "o").exists()


def test_generate_on_albert_names_the_architecture(model_dir, capsys):
    one_line(*run(["generate", str(model_dir[1]), "hello"], capsys), "'albert'", "XLM")


def test_tflite_without_its_sidecar(tmp_path, model_dir, capsys):
    import shutil

    from kzoo.export import export_tflite

    out = tmp_path / "m.tflite"
    export_tflite(model_dir[1], out)
    shutil.rmtree(tmp_path / "m.tflite.kzoo")
    one_line(*run(["fill-mask", str(out), "a [MASK]"], capsys), "m.tflite.kzoo", "missing")
    broken = tmp_path / "serving" / "1"  # (a SavedModel copied without its graph)
    (broken / "variables").mkdir(parents=True)
    one_line(*run(["fill-mask", str(tmp_path / "serving"), "a [MASK]"], capsys), "without its saved_model.pb")


def test_convert_a_model_dir_or_onto_its_source(tmp_path, ckpt, model_dir, capsys):
    one_line(*run(["convert", str(model_dir[1]), str(tmp_path / "o")], capsys), "kzoo model dir already")
    src = copy_ckpt(ckpt, tmp_path / "src")
    before = sorted(p.name for p in src.iterdir())
    for out in (src, src / "model.safetensors"):  # the checkpoint dir, a file inside it
        one_line(*run(["convert", str(src), str(out), "--overwrite"], capsys), "where the checkpoint")
    assert sorted(p.name for p in src.iterdir()) == before and (src / "model.safetensors").is_file()


def test_configs_that_do_not_fit(tmp_path, ckpt, model_dir, capsys):
    import json
    import shutil

    bad = copy_ckpt(ckpt, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "hidden_size": 30}))  # not a multiple of the heads
    one_line(*run(["convert", str(bad), str(tmp_path / "out")], capsys), "config.json", "not a multiple")
    copy = tmp_path / "copy"
    shutil.copytree(model_dir[1], copy)
    config = json.loads((copy / "config.json").read_text())
    config["backbone"]["hidden_dim"] = 36
    (copy / "config.json").write_text(json.dumps(config))
    code, err = run(["embed", str(copy), "hello"], capsys)
    one_line(code, err, "model.weights.h5", "could not load weights")
    assert "Example error message" not in err


def test_no_noise_on_stderr(tmp_path, ckpt):
    """TensorFlow's start-up logs, progress bars in a pipe, blank lines: none of it on stderr."""
    proc = subprocess.run([sys.executable, "-m", "kzoo", "convert", str(ckpt), str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["note: the source has no tokenizer files; text commands will need them"]


# --- the second tryout ---------------------------------------------------------------------------


def test_export_never_replaces_its_own_model_dir(tmp_path, model_dir, capsys):
    import shutil

    for n, (kind, model, out) in enumerate((
        ("savedmodel", "m", "m"),  # OUT is the model dir
        ("savedmodel", "m", "."),  # OUT holds it
        ("tflite", "p.tflite/m", "p.tflite"),  # a folder named .tflite holding it
        ("tflite", "x.tflite.kzoo", "x.tflite"),  # the .tflite's sidecar would replace it
        ("savedmodel", "m", "m/model.weights.h5"),  # a file inside it
    )):
        home = tmp_path / f"home{n}"
        shutil.copytree(model_dir[1], home / model)
        before = sorted(p.name for p in (home / model).iterdir())
        one_line(*run(["export", kind, str(home / model), str(home / out), "--overwrite"], capsys),
                 "where the model dir", "another path")
        assert sorted(p.name for p in (home / model).iterdir()) == before


def test_export_options_that_would_do_nothing(tmp_path, model_dir, capsys):
    model, out = str(model_dir[1]), tmp_path / "x"
    for options, words in (
        (["savedmodel", model, str(out), "--ids-only", "--max-length", "8"], ("--max-length", "--ids-only")),
        (["savedmodel", model, str(out), "--ids-only", "--top-k", "3"], ("--top-k", "--ids-only")),
        (["tflite", model, f"{out}.tflite", "--max-length", "8"], ("--max-length", "--with-tokenizer")),
        (["tflite", model, f"{out}.tflite", "--mask-bias", "nan"], ("--mask-bias nan", "negative")),
        (["tflite", model, f"{out}.tflite", "--mask-bias", "5"], ("--mask-bias 5", "negative")),
        (["tflite", model, f"{out}.tflite", "--mask-bias=-inf"], ("--mask-bias -inf",)),
    ):
        one_line(*run(["export", *options], capsys), *words)
    assert not list(tmp_path.iterdir())


def test_damaged_model_dirs_and_tokenizer_files(tmp_path, ckpt, model_dir, capsys):
    import json
    import shutil

    def damaged(name, edit):
        copy = tmp_path / name
        shutil.copytree(model_dir[1], copy)
        edit(copy)
        return str(copy)

    def without_backbone(d):
        config = json.loads((d / "config.json").read_text())
        del config["backbone"]
        (d / "config.json").write_text(json.dumps(config))

    one_line(*run(["fill-mask", damaged("nobackbone", without_backbone), "a [MASK]"], capsys), "'backbone'",
             "missing")
    one_line(*run(["fill-mask", damaged("emptymeta", lambda d: (d / "kzoo_tokenizer.json").write_text("{}")),
                   "a [MASK]"], capsys), "kzoo_tokenizer.json", "damaged")
    one_line(*run(["embed", damaged("emptyspm", lambda d: (d / "kzoo_tokenizer.model").write_bytes(b"")),
                   "hello"], capsys), "kzoo_tokenizer.model", "0 pieces")
    src = copy_ckpt(model_dir[0], tmp_path / "src")
    (src / "tokenizer.json").unlink()
    (src / "spiece.model").write_bytes(b"")
    one_line(*run(["convert", str(src), str(tmp_path / "o1")], capsys), "spiece.model", "without pieces")
    (src / "spiece.model").unlink()
    (src / "tokenizer.json").write_text('{"model": 5}')
    one_line(*run(["convert", str(src), str(tmp_path / "o2")], capsys), "tokenizer.json", "Unigram")
    (src / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}')
    one_line(*run(["convert", str(src), str(tmp_path / "o3")], capsys), "incomplete or damaged")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    one_line(*run(["convert", str(ckpt), "/etc/passwd/o9"], capsys), "/etc/passwd is a file")
    code, err = run(["export", "tflite", str(model_dir[1]), "/etc/passwd/o9.tflite"], capsys)
    one_line(code, err, "/etc/passwd is a file")
    assert "conversion" not in err


def test_usage_errors_are_one_line_too(model_dir, capsys):
    for argv, words in ((["fill-mask", str(model_dir[1]), "a [MASK]", "--top-k", "abc"], ("--top-k", "abc")),
                        (["convert", "x", "y", "--task", "foo"], ("--task", "foo")),
                        (["export", "tflite", "x"], ("out",)), (["nosuch"], ("nosuch",)),
                        (["fill-mask", "x", "y", "--frob"], ("--frob", "kzoo fill-mask --help")),
                        (["export", "tflite", "x", "y.tflite", "--frob"], ("kzoo export tflite --help",))):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        one_line(stop.value.code, err, "--help", *words)


def test_a_reader_that_leaves_early(model_dir):
    """`kzoo ... | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.run(f"{sys.executable} -m kzoo embed {model_dir[1]} hello world --json | head -1",
                          shell=True, capture_output=True, text=True)
    assert proc.stdout.strip() == "[" and "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr


def test_backbone_from_a_checkpoint_without_pooler(tmp_path, model_dir, capsys):
    """The advice `--task backbone` works on a masked-LM checkpoint: the backbone without a pooler
    (Transformers would initialise one at random), still equal to PyTorch's."""
    out = tmp_path / "backbone"
    assert run(["convert", str(model_dir[0]), str(out), "--task", "backbone"], capsys)[0] == 0
    assert main(["verify", str(out), "--reference", str(model_dir[0]), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and {r["output"] for r in report["rows"]} == {"sequence_output"}
    assert main(["embed", str(out), "hello world", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert "pooled_output" not in item and len(item["sequence_output"][0]) == TINY_ALBERT["hidden_size"]


def test_main_job_bad_checkpoint_is_one_line(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "main_job.py"
    proc = subprocess.run([sys.executable, str(script), "--checkpoint", str(tmp_path / "nope"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [f"main job: error: {tmp_path / 'nope'}: no such directory"], proc.stderr


def test_sigterm_leaves_nothing_half_written(tmp_path, ckpt, capsys, monkeypatch):
    """SIGTERM (what `kill` and process managers send) mid-write: the CLI removes what it was writing, says so in
    one line and exits 143, as Ctrl-C does with 130."""
    import os
    import signal

    from kzoo.converters import convert as convert_module

    save = convert_module.modeldir.save

    def save_then_terminated(*args, **kwargs):
        save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(convert_module.modeldir, "save", save_then_terminated)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    code, err = run(["convert", str(ckpt), str(out)], capsys)
    assert code == 143 and err == "kzoo: terminated", err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]
    assert signal.getsignal(signal.SIGTERM) is before  # (the handler is the CLI's only while it runs)

