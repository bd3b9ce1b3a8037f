"""SavedModel (XLA) and TFLite exports: parity, builtin ops, quantization bounds, atomic writes.

Parity is measured against the PyTorch reference (fp32 exports) or Keras fp32 (quantized ones),
always by this file's own runs, never from the export's report.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kzoo
from kzoo.cli import main
from kzoo.converters import family_of
from kzoo.converters.convert import convert, read_hf_config
from kzoo.converters.verify import reference_inputs, run_reference
from kzoo.export import export_savedmodel, export_tflite
from reference import TINY_ALBERT, TINY_XLMR, make_checkpoint, model_with_tokenizer
from spm_fixtures import held_out_texts, make_albert_tokenizer_dir, make_xlmr_tokenizer_dir, training_corpus
from text_strategies import sample_texts

MODES = ["none", "fp16", "dynamic-int8", "int8", "int16x8"]
BOUNDS = {"fp16": 1e-2}  # max abs diff vs Keras fp32; int modes: cosine >= 0.99 per position


@pytest.fixture(scope="module")
def albert(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("albert")
    return model_with_tokenizer(tmp, "AlbertForMaskedLM", TINY_ALBERT, make_albert_tokenizer_dir(tmp, True),
                                out="model")


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xlmr")
    return model_with_tokenizer(tmp, "XLMRobertaForMaskedLM", TINY_XLMR, make_xlmr_tokenizer_dir(tmp), out="model")


@pytest.fixture(scope="module")
def models(albert, xlmr):
    return {"albert": albert, "xlmr": xlmr}


@pytest.fixture(scope="module")
def savedmodel(models, tmp_path_factory):
    """family -> (SavedModel dir, report), exported once per module."""
    done = {}

    def get(family):
        if family not in done:
            out = tmp_path_factory.mktemp(f"{family}-savedmodel") / "sm"
            done[family] = out, export_savedmodel(models[family][1], out)
        return done[family]

    return get


@pytest.fixture(scope="module")
def albert_tflite(albert, tmp_path_factory):
    out = tmp_path_factory.mktemp("albert-tflite") / "model.tflite"
    export_tflite(albert[1], out)
    return out


# --- helpers -----------------------------------------------------------------------------------


def builtin_codes(content):
    """(builtin op names, custom op names) read from the flatbuffer's operator codes."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    builtin, custom = set(), set()
    for i in range(model.OperatorCodesLength()):
        c = model.OperatorCodes(i)
        code = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM:
            custom.add(c.CustomCode().decode())
        else:
            builtin.add(names[code])
    return builtin, custom


def interpreter(path, text=False):
    from ai_edge_litert.interpreter import Interpreter, InterpreterWithCustomOps

    if text:
        import tensorflow_text

        return InterpreterWithCustomOps(custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
                                        model_path=str(path))
    return Interpreter(model_path=str(path))


@functools.lru_cache(maxsize=None)
def keras_model(model_dir):
    return kzoo.load(model_dir)


def keras_logits(model_dir, batch):
    return np.asarray(keras_model(str(model_dir))(batch, training=False))


def held_out_batch(model_dir, tokenizer, length=32):
    texts = [t for t in held_out_texts(tokenizer.mask_token)[:40] if t.strip()][:16]
    return tokenizer(texts, max_length=length, truncation=True)


def pytorch_batches(src, model_dir):
    hf = read_hf_config(src)
    config = json.loads((model_dir / "config.json").read_text())
    vocab, pad = config["backbone"]["vocabulary_size"], hf.get("pad_token_id", 0) or 0
    segments = min(2, config["backbone"].get("num_segments", 2))
    return [reference_inputs(vocab, pad_id=pad, seed=0, num_segments=segments),
            reference_inputs(vocab, pad_id=pad, seed=1, left_pad=True, num_segments=segments, length=11)]


def cosines(a, b, mask):
    a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --- TFLite ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", ["albert", "xlmr"])
def test_tflite_every_mode(models, family, mode, tmp_path):
    src, model_dir = models[family]
    out = tmp_path / "m.tflite"
    report = export_tflite(model_dir, out, quantize=mode)
    content = out.read_bytes()
    builtin, custom = builtin_codes(content)
    assert not custom and not [op for op in builtin if op.startswith("FLEX")], custom
    assert report["ok"] and report["bytes"] == len(content) and report["ops"] == sorted(builtin)
    assert (tmp_path / "m.tflite.report.json").is_file() and (tmp_path / "m.tflite.kzoo" / "config.json").is_file()

    runner = interpreter(out).get_signature_runner("serving_default")
    if mode == "none":  # against PyTorch
        spec = family_of(read_hf_config(src))[1]
        for batch in pytorch_batches(src, model_dir):
            got = runner(**batch)["logits"]
            want = run_reference(src, "masked_lm", spec, batch)["logits"]
            assert np.abs(got - want).max() <= 1e-4
        return
    tok = kzoo.load_tokenizer(model_dir)
    batch = held_out_batch(model_dir, tok)  # text the calibration never saw
    got, want = runner(**batch)["logits"], keras_logits(model_dir, batch)
    assert np.all(np.isfinite(got))
    if mode in BOUNDS:
        assert np.abs(got - want).max() <= BOUNDS[mode]
    else:
        cos = cosines(got, want, batch["padding_mask"])
        assert cos.min() >= 0.99, cos.min()
        print(f"{family} {mode}: cosine min {cos.min():.5f}, top-1 agreement "
              f"{np.mean(got.argmax(-1) == want.argmax(-1)):.3f}")


def test_tflite_resize_two_lengths(albert, albert_tflite):
    tok = kzoo.load_tokenizer(albert[1])
    interp = interpreter(albert_tflite)
    details = {d["name"].split("serving_default_")[-1].split(":")[0]: d for d in interp.get_input_details()}
    assert all(list(d["shape_signature"]) == [-1, -1] for d in details.values())
    output = interp.get_output_details()[0]["index"]
    texts = ["hello [MASK] world", "le garçon est très [MASK] aujourd'hui", "a"]
    for batch_size, length in [(2, 7), (3, 23)]:
        batch = tok(texts[:batch_size], max_length=length, truncation=True, padding="max_length")
        for name, d in details.items():
            interp.resize_tensor_input(d["index"], [batch_size, length])
        interp.allocate_tensors()
        for name, d in details.items():
            interp.set_tensor(d["index"], batch[name])
        interp.invoke()
        got = interp.get_tensor(output)
        assert got.shape[:2] == (batch_size, length)
        assert np.abs(got - keras_logits(albert[1], batch)).max() <= 1e-4


def test_tflite_with_tokenizer_ids_equal_python_tokenizer(models, tmp_path):
    for family, (_, model_dir) in models.items():
        out = tmp_path / f"{family}.tflite"
        report = export_tflite(model_dir, out, with_tokenizer=True)
        content = out.read_bytes()
        assert report["ok"] and len(content) > 200_000  # weights present (the from_saved_model failure: none)
        builtin, custom = builtin_codes(content)
        marker = json.loads((model_dir / "kzoo_tokenizer.json").read_text()).get("grapheme_marker")
        assert bool(marker) == (family == "xlmr")  # (ALBERT's folded rules strip marks first: no marker)
        assert custom == {"TFText>WhitespaceTokenizeWithOffsetsV2", "TFText>FastSentencepieceTokenize",
                          "RaggedTensorToTensor"} | ({"TFText>ByteSplitWithOffsets", "TFText>ByteSplitByOffsets",
                                                    "TFText>NgramsStringJoin"} if marker else set()), custom

        tok = kzoo.load_tokenizer(model_dir)
        texts = held_out_texts(tok.mask_token)  # edge cases, masks everywhere, one text past the limit
        texts += sample_texts(100, seed=3, adversarial=True)  # scripts, marks, NFD, emoji, odd spaces
        runner = interpreter(out, text=True).get_signature_runner("serve_text")
        got = runner(text=np.array([t.encode("utf-8") for t in texts], dtype=object))
        longest = report["max_tokens"]
        width = got["token_ids"].shape[1]
        want = tok(texts, max_length=longest, truncation=True, padding="max_length")
        np.testing.assert_array_equal(got["token_ids"], want["token_ids"][:, :width])
        np.testing.assert_array_equal(got["padding_mask"], want["padding_mask"][:, :width])
        assert np.all(np.isfinite(got["top_scores"]))

        # fill-mask output against Keras: the first mask of the first text with one
        row = next(i for i, t in enumerate(texts) if tok.mask_token in t)
        ids = want["token_ids"][row:row + 1, :width]
        batch = {k: v[row:row + 1, :width] for k, v in want.items()}
        position = int(np.flatnonzero(ids[0] == tok.mask_token_id)[0])
        assert got["mask_positions"][row, 0] == position
        logits = keras_logits(model_dir, batch)[0, position]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:5]
        np.testing.assert_array_equal(got["top_ids"][row, 0], best)
        assert np.abs(got["top_scores"][row, 0] - probs[best]).max() <= 1e-4
        assert [t.decode() for t in got["top_tokens"][row, 0]] == tok.convert_ids_to_tokens(best.tolist())


def test_text_signature_max_length_cuts_and_says_so(albert, tmp_path, capsys):
    """--max-length: the text signature's longest input; longer texts are cut there, `truncated` says
    which, and a mask past the cut leaves its slot unused (-1)."""
    model_dir = albert[1]
    tok = kzoo.load_tokenizer(model_dir)
    out = tmp_path / "m.tflite"
    report = export_tflite(model_dir, out, with_tokenizer=True, max_length=16)
    assert report["ok"] and report["max_length"] == 16
    texts = [f"short {tok.mask_token}", "long text " * 20 + tok.mask_token]
    got = kzoo.runtime.load(out)(texts)
    np.testing.assert_array_equal(got["truncated"], [0, 1])
    assert got["token_ids"].shape[1] <= 16 and got["mask_positions"][1, 0] == -1 and got["mask_positions"][0, 0] > 0
    for bad in ("1", "100000"):
        assert main(["export", "tflite", str(model_dir), str(tmp_path / "x.tflite"), "--with-tokenizer",
                     "--max-length", bad]) == 2
        assert "--max-length" in capsys.readouterr().err and not (tmp_path / "x.tflite").exists()


def test_tflite_calibration_file_and_cli_json(albert, tmp_path, capsys):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(" ".join(t.split()) for t in training_corpus(40, seed=3)) + "\n")
    out = tmp_path / "int8.tflite"
    code = main(["export", "tflite", str(albert[1]), str(out), "--quantize", "int8",
                 "--calibration", str(calibration), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and out.is_file()
    assert report["calibration"]["source"] == str(calibration) and report["calibration"]["texts"] == 40
    assert report["mask_bias"] == -100.0 and report["integer_op_fraction"] > 0.5


def test_full_integer_ranges_are_the_data_s(xlmr, tmp_path):
    """Full-integer exports quantize each activation on the range it takes on the calibration data. TF's calibrator
    logs an op's inputs again after the op ran, and an op run in place writes its output there: the attention
    scores took in the -100 mask bias added to them ([-102, 13] for scores within [-11, 13]), and a text-in export,
    whose shapes the tokenizer makes dynamic, got other ranges in every process (here: the same scales from
    another process). The text-in int16x8 model, which reached a cosine of 0.91 on those ranges, meets its 0.99."""
    from ai_edge_litert import schema_py_generated as schema

    report = export_tflite(xlmr[1], tmp_path / "int8.tflite", quantize="int8", with_tokenizer=True)
    again = subprocess.run([sys.executable, "-c", "import sys; from kzoo.export import export_tflite; "
                            "export_tflite(sys.argv[1], sys.argv[2], quantize='int8', with_tokenizer=True)",
                            str(xlmr[1]), str(tmp_path / "again.tflite")], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]

    def scales(path):  # (every tensor's quantization; names differ with the layers a process built before)
        model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
        q = [t.quantization for t in model.subgraphs[0].tensors]
        return model, [None if p is None or p.scale is None else (list(p.scale), list(p.zeroPoint)) for p in q]

    model, ours = scales(tmp_path / "int8.tflite")
    assert ours == scales(tmp_path / "again.tflite")[1]
    scores = [t for t in model.subgraphs[0].tensors if t.name.decode().endswith("attention_layer/MatMul")
              or t.name.decode().split("/")[-1] == "MatMul" and "transformer_layer" in t.name.decode()]
    assert scores and report["mask_bias"] == -100.0
    assert all(t.quantization.scale[0] * 255 < 60 for t in scores), [t.quantization.scale[0] * 255 for t in scores]
    report = export_tflite(xlmr[1], tmp_path / "text.tflite", quantize="int16x8", with_tokenizer=True)
    assert report["ok"], report["evaluation"]


# --- SavedModel --------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (serve_text's tokenizer ops)

    for at in range(1, len(sys.argv), 4):  # (path, inputs, texts, result) per SavedModel
        path, inputs, texts, result = sys.argv[at:at + 4]
        loaded = tf.saved_model.load(path)
        out = {}
        data = dict(np.load(inputs))
        for tag in sorted({k.split("/")[0] for k in data}):
            batch = {k.split("/")[1]: tf.constant(v) for k, v in data.items() if k.startswith(tag + "/")}
            out[tag + "/logits"] = loaded.signatures["serving_default"](**batch)["logits"].numpy()
        text = loaded.signatures["serve_text"](text=tf.constant(json.loads(open(texts).read())))
        for k, v in text.items():
            v = v.numpy()
            out["text/" + k] = v.astype("S") if v.dtype == object else v  # strings without pickle
        np.savez(result, **out)
    assert "kzoo" not in sys.modules and not any(m.startswith("kzoo.") for m in sys.modules)
    print("modules ok")
""")


def run_clean(args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)


def test_savedmodel_in_a_clean_process(models, savedmodel, tmp_path):
    """Both families' SavedModels load with tensorflow + tensorflow_text only (one process);
    serving_default (XLA) within 1e-4 of PyTorch."""
    from tensorflow.core.protobuf import saved_model_pb2

    args, checks = [], []
    for family in ("albert", "xlmr"):
        src, model_dir = models[family]
        out, report = savedmodel(family)
        assert report["ok"] and (out / "1" / "saved_model.pb").is_file()
        assert (out / "1" / "assets.extra" / "kzoo" / "kzoo_tokenizer.json").is_file()
        assert (out.parent / "sm.report.json").is_file()

        # XLA: the signature functions carry _XlaMustCompile
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((out / "1" / "saved_model.pb").read_bytes())
        compiled = [f.signature.name for f in proto.meta_graphs[0].graph_def.library.function
                    if f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b]
        assert compiled

        batches = pytorch_batches(src, model_dir)
        np.savez(tmp_path / f"{family}-in.npz", **{f"b{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})
        tok = kzoo.load_tokenizer(model_dir)
        texts = [f"hello {tok.mask_token} world", "a longer text " * 9, f"{tok.mask_token}{tok.mask_token} x"]
        (tmp_path / f"{family}-texts.json").write_text(json.dumps(texts))
        args += [out / "1", tmp_path / f"{family}-in.npz", tmp_path / f"{family}-texts.json",
                 tmp_path / f"{family}-result.npz"]
        checks.append((family, src, batches, tok, texts, report))
    proc = run_clean(args)
    assert proc.returncode == 0 and "modules ok" in proc.stdout, proc.stderr[-3000:]

    for family, src, batches, tok, texts, report in checks:
        result = dict(np.load(tmp_path / f"{family}-result.npz"))
        spec = family_of(read_hf_config(src))[1]
        for i, batch in enumerate(batches):
            want = run_reference(src, "masked_lm", spec, batch)["logits"]
            assert np.abs(result[f"b{i}/logits"] - want).max() <= 1e-4

        width = result["text/token_ids"].shape[1]
        assert width in report["length_buckets"]
        ids = tok(texts, max_length=report["max_tokens"], truncation=True, padding="max_length")
        np.testing.assert_array_equal(result["text/token_ids"], ids["token_ids"][:, :width])
        assert result["text/top_ids"].shape == (3, 4, 5) and result["text/mask_positions"][2, 1] == 2
        assert result["text/mask_positions"][1, 0] == -1 and result["text/top_tokens"][1, 0, 0] == b""
        np.testing.assert_array_equal(result["text/truncated"],
                                      [len(tok.encode(t)) > report["max_tokens"] for t in texts])


def test_ids_only_savedmodel_needs_no_tensorflow_text(albert, tmp_path, capsys):
    """`--ids-only`: a SavedModel any TensorFlow (or a stock TF Serving) loads: no tf-text op in it,
    loaded and run in a process where tensorflow_text cannot be imported, by TF and by kzoo.runtime."""
    out = tmp_path / "ids"
    assert main(["export", "savedmodel", str(albert[1]), str(out), "--ids-only", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["signatures"]) == ["serving_default"]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow_text"] = None  # any import of it fails
        import numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(out / "1")!r}).signatures["serving_default"]
        ids = {{k: tf.constant(np.ones((1, 5), "int32")) for k in ("token_ids", "padding_mask", "segment_ids")}}
        print("tf", serve(**ids)["logits"].shape)
        from kzoo import runtime
        print("kzoo", runtime.load({str(out)!r})({{k: v.numpy() for k, v in ids.items()}})["logits"].shape)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tf (1, 5, " in proc.stdout and "kzoo (1, 5, " in proc.stdout


def test_savedmodel_cli_lists_signatures(savedmodel):
    out, _ = savedmodel("albert")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", str(out / "1"), "--all"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signature_def['serving_default']" in proc.stdout and "signature_def['serve_text']" in proc.stdout
    assert "inputs['token_ids']" in proc.stdout and "inputs['text']" in proc.stdout


# --- pipelines on exports ----------------------------------------------------------------------


def test_pipelines_accept_exports(albert, albert_tflite, savedmodel, tmp_path):
    model_dir = albert[1]
    sm, _ = savedmodel("albert")
    text = "Hello I'm a [MASK] model."
    want = kzoo.pipeline("fill-mask", model_dir)(text, top_k=3)
    for path in (albert_tflite, sm):
        got = kzoo.pipeline("fill-mask", path)(text, top_k=3)
        assert [r["token"] for r in got] == [r["token"] for r in want]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want)) <= 1e-5
    for path in (albert_tflite, sm):  # an export's tokenizer: the copy stored beside it
        assert kzoo.load_tokenizer(path).encode(text) == kzoo.load_tokenizer(model_dir).encode(text)
    # the tokenizer from a model dir, when the export has no stored copy
    bare = tmp_path / "bare.tflite"
    shutil.copy(albert_tflite, bare)
    got = kzoo.pipeline("fill-mask", bare, tokenizer=model_dir)(text, top_k=3)
    assert [r["token"] for r in got] == [r["token"] for r in want]


def test_features_on_a_backbone_export(albert, tmp_path):
    src = make_checkpoint(tmp_path / "ref", "AlbertModel", TINY_ALBERT, vocab_size=kzoo.load_tokenizer(
        albert[1]).vocab_size)
    for f in albert[0].iterdir():  # the tokenizer files
        if f.name.startswith(("tokenizer", "special", "spiece")):
            shutil.copy(f, src / f.name)
    backbone = tmp_path / "backbone"
    convert(src, backbone)
    out, text_in = tmp_path / "backbone.tflite", tmp_path / "backbone-text.tflite"
    assert export_tflite(backbone, out)["ok"]
    assert export_tflite(backbone, text_in, with_tokenizer=True)["ok"]  # features through the file's tokenizer
    texts = ["hello world", "le garçon est là"]
    want = kzoo.pipeline("features", backbone)(texts)
    for path in (out, text_in):
        got = kzoo.pipeline("features", path)(texts)
        for a, b in zip(got, want):
            assert a["tokens"] == b["tokens"]
            for key in ("sequence_output", "pooled_output"):
                assert a[key].shape == b[key].shape and np.abs(a[key] - b[key]).max() <= 1e-4
    # SavedModel: the ids are padded to [4, 16] inside serving_default, the outputs cut back
    report = export_savedmodel(backbone, tmp_path / "sm")
    assert report["ok"] and report["batch_buckets"][:4] == [1, 2, 4, 8]
    import tensorflow as tf

    serve = tf.saved_model.load(str(tmp_path / "sm" / "1")).signatures["serving_default"]
    tok = kzoo.load_tokenizer(backbone)
    batch = tok(["hello world", "le garçon est là", "a longer text " * 5], max_length=13, truncation=True,
                padding="max_length")
    ours = serve(**{k: tf.constant(v) for k, v in batch.items()})
    keras_out = keras_model(backbone)(batch, training=False)
    assert ours["sequence_output"].shape == (3, 13, 32) and ours["pooled_output"].shape == (3, 32)
    for key in ("sequence_output", "pooled_output"):
        assert np.abs(ours[key].numpy() - np.asarray(keras_out[key])).max() <= 1e-4


@pytest.mark.parametrize("arch, task", [("albert", "masked_lm"), ("albert", "pretraining"),
                                        ("xlm-roberta", "masked_lm"), ("xlm", "masked_lm")])
def test_masked_lm_head_is_the_models_own(arch, task):
    """Text signatures run the head at the mask rows only: the cut head equals the full model."""
    import keras

    from kzoo.models import build_model
    from kzoo.models.layers import per_position_head

    backbone = {"vocabulary_size": 50, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "intermediate_dim": 16}
    if arch == "albert":
        backbone["embedding_dim"] = 4
    model = build_model({"architecture": arch, "task": task, "backbone": backbone})
    keras.Model(model.backbone.input, model.backbone(model.backbone.input))  # a user's graph: a 2nd call
    rng = np.random.default_rng(0)
    batch = {k: np.zeros((2, 7), "int32") for k in model.input}
    batch.update(token_ids=rng.integers(0, 50, (2, 7)).astype("int32"), padding_mask=np.ones((2, 7), "int32"))
    full = model(batch, training=False)
    full = np.asarray(full["mlm_logits"] if task == "pretraining" else full)
    sequence = model.backbone(batch, training=False)["sequence_output"]
    (cut,) = per_position_head(model)(sequence[:, 2:5], training=False).values()
    cut = np.asarray(cut)
    assert cut.shape == (2, 3, 50) and np.abs(cut - full[:, 2:5]).max() <= 1e-6


def test_fill_mask_export_with_more_ids_than_the_tokenizer(albert, tmp_path):
    """An embedding padded past the tokenizer's vocabulary: top ids there have no token name."""
    import tensorflow as tf
    from safetensors.numpy import load_file, save_file

    tok = kzoo.load_tokenizer(albert[1])
    src = make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM", TINY_ALBERT, vocab_size=tok.vocab_size + 40)
    tensors = load_file(src / "model.safetensors")
    tensors["predictions.bias"][tok.vocab_size:] = 1e3  # the best ids all lie past the tokenizer
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    for f in albert[0].iterdir():  # the tokenizer files
        if f.name.startswith(("tokenizer", "special", "spiece")):
            shutil.copy(f, src / f.name)
    convert(src, tmp_path / "model")
    report = export_savedmodel(tmp_path / "model", tmp_path / "sm")
    assert report["ok"]
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "1"))
    out = loaded.signatures["serve_text"](text=tf.constant([f"hello {tok.mask_token} world"]))
    ids, tokens = out["top_ids"].numpy()[0, 0], out["top_tokens"].numpy()[0, 0]
    assert np.all(ids >= tok.vocab_size) and list(tokens) == [b""] * len(ids)


# --- XLM: any extra int32 input the model declares -----------------------------------------------


@pytest.fixture(scope="module")
def xlm(tmp_path_factory):
    """A tiny XLM with language embeddings and an XLM (Moses + BPE) tokenizer."""
    from transformers import XLMTokenizer

    tmp = tmp_path_factory.mktemp("xlm")
    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {t: i for i, t in enumerate(specials + letters + [c + "</w>" for c in letters] + ["th", "the</w>"])}
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    XLMTokenizer(vocab_file=str(tmp / "vocab.json"), merges_file=str(tmp / "merges.txt")).save_pretrained(tmp / "tok")
    config = dict(vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=40, n_langs=2,
                  use_lang_emb=True, pad_token_id=2, bos_token_id=0, eos_token_id=1, unk_index=3, mask_index=5,
                  lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"})
    src = make_checkpoint(tmp / "ref", "XLMWithLMHeadModel", config)
    for f in (tmp / "tok").iterdir():
        shutil.copy(f, src / f.name)
    convert(src, tmp / "model")
    return src, tmp / "model"


def test_xlm_exports_take_lang_ids(xlm, tmp_path):
    src, model_dir = xlm
    batch = reference_inputs(99, pad_id=2, num_segments=1, num_languages=2)
    want = run_reference(src, "masked_lm", family_of(read_hf_config(src))[1], batch)["logits"]
    report = export_tflite(model_dir, tmp_path / "xlm.tflite")
    assert report["ok"] and report["signatures"]["serving_default"]["inputs"] == [
        "lang_ids", "padding_mask", "segment_ids", "token_ids"]
    got = interpreter(tmp_path / "xlm.tflite").get_signature_runner("serving_default")(**batch)["logits"]
    assert np.abs(got - want).max() <= 1e-4
    report = export_savedmodel(model_dir, tmp_path / "sm")
    assert report["ok"] and list(report["signatures"]) == ["serving_default", "serve_text"]
    assert "lang_ids" in report["signatures"]["serving_default"]["inputs"]


def test_xlm_text_in_tflite_runs_its_moses_tokenizer(xlm, tmp_path):
    """XLM's Moses + BPE tokenizer inside a .tflite (kzoo.tokenizers.moses_graph): builtin ops and tf-text's,
    the ids of the Python tokenizer, fill-mask on it as on the model dir (no language: Transformers' pipeline)."""
    _, model_dir = xlm
    report = export_tflite(model_dir, tmp_path / "text.tflite", with_tokenizer=True)
    assert report["ok"] and report["evaluation"]["ids_equal_python_tokenizer"], report["evaluation"]
    assert set(report["custom_ops"]) <= {"TFText>ByteSplitWithOffsets", "RaggedTensorToTensor"}, report["custom_ops"]
    texts = ["The <special1> is here.", "«Bonjour» — l'été, t'as vu <special1>... (really)?"]
    ours = kzoo.pipeline("fill-mask", tmp_path / "text.tflite")(texts)
    want = kzoo.pipeline("fill-mask", model_dir)(texts)
    assert [[c["token"] for c in row] for row in ours] == [[c["token"] for c in row] for row in want]
    assert max(abs(a["score"] - b["score"]) for x, y in zip(ours, want) for a, b in zip(x, y)) < 1e-4


# --- failures --------------------------------------------------------------------------------


def assert_nothing_at(out):
    siblings = [p.name for p in out.parent.iterdir()]
    assert not [n for n in siblings if n.startswith(out.name) or n.startswith(f".{out.name}")], siblings


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_export_leaves_nothing(albert, tmp_path, monkeypatch, error):
    import kzoo.export.savedmodel
    import kzoo.export.tflite

    def fail(*args, **kwargs):
        raise error("injected")

    # After the files were written aside: the last step before they are renamed into place.
    monkeypatch.setattr(kzoo.export.tflite.modeldir, "copy_sidecar", fail)
    monkeypatch.setattr(kzoo.export.savedmodel, "_evaluate", fail)
    out = tmp_path / "out" / "m.tflite"
    with pytest.raises(error):
        export_tflite(albert[1], out)
    assert_nothing_at(out)
    if error is KeyboardInterrupt:
        return  # (the same code path; once is enough for the slower SavedModel)
    out = tmp_path / "out" / "sm"
    with pytest.raises(error):
        export_savedmodel(albert[1], out)
    assert_nothing_at(out)


class Stopped(BaseException):
    """What the test's SIGTERM handler raises (the CLI's raises kzoo.cli.Terminated)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # (the one Python drops)
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_interrupt_lost_in_a_finaliser_still_stops_the_conversion(signame):
    """TF's converter calls gc.collect(), and Python drops an exception raised inside a finaliser: a Ctrl-C (or
    the CLI's SIGTERM) landing there let an int8 export run on and write OUT. The conversion step raises it
    again when it ends."""
    import gc
    import signal

    from kzoo.io.atomic import interrupts_kept

    signum = getattr(signal, signame)

    def stop(*_):
        raise Stopped

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signum)
            sum(range(1000))  # (bytecode: Python runs the handler here, inside __del__)

    expected, own = (KeyboardInterrupt, signal.default_int_handler) if signame == "SIGINT" else (Stopped, stop)
    handler = signal.signal(signum, own)  # (Python's own Ctrl-C handler, whatever the worker's)
    try:
        with pytest.raises(expected):
            with interrupts_kept():
                Finalised()
                gc.collect()
        with interrupts_kept():  # (nothing lost, nothing raised)
            gc.collect()
        calls = []
        signal.signal(signum, lambda *_: calls.append(signum))
        with interrupts_kept():
            Finalised()
            gc.collect()
        assert calls == [signum]  # (a handler that raises nothing is not called again)
    finally:
        signal.signal(signum, handler)


def one_line_error(argv, capsys, *words):
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("kzoo: error:"), err
    for word in words:
        assert word in err[0], (word, err[0])


def test_cli_errors(albert, xlm, tmp_path, capsys):
    out = str(tmp_path / "x.tflite")
    one_line_error(["export", "tflite", str(tmp_path / "missing"), out], capsys, "missing")
    one_line_error(["export", "savedmodel", str(tmp_path / "missing"), str(tmp_path / "sm")], capsys, "missing")
    one_line_error(["export", "tflite", str(albert[1]), out, "--quantize", "int4"], capsys, "int4", "int16x8")
    one_line_error(["export", "tflite", str(albert[1]), out, "--quantize", "int8", "--calibration",
                    str(tmp_path / "nope.txt")], capsys, "nope.txt")
    one_line_error(["export", "tflite", str(albert[1]), str(tmp_path / "x.onnx")], capsys, ".tflite")
    one_line_error(["export", "savedmodel", str(albert[1]), out, "--overwrite"], capsys, "a SavedModel is a directory")
    (tmp_path / "taken.tflite").write_bytes(b"")
    one_line_error(["export", "tflite", str(albert[1]), str(tmp_path / "taken.tflite")], capsys, "--overwrite")
    assert not (tmp_path / "x.tflite").exists() and not (tmp_path / "sm").exists()


# --- token classification: labels from the config, per token, in every export --------------------


def test_token_classifier_exports_label_every_token(tmp_path):
    """An XLMRobertaForTokenClassification with id2label: convert keeps the labels; the SavedModel's
    serve_text gives each token Transformers' label (argmax of PyTorch's logits on the same ids) and its
    softmax score. (The text-in .tflite's: tests/pipelines/test_task_exports.py, through the pipeline.)"""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (serve_text's tokenizer ops)
    import torch
    import transformers

    from kzoo.io import modeldir

    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    src, model_dir = model_with_tokenizer(
        tmp_path, "XLMRobertaForTokenClassification", {**TINY_XLMR, "id2label": labels,
                                                       "label2id": {v: k for k, v in labels.items()}},
        make_xlmr_tokenizer_dir(tmp_path))
    assert modeldir.read_config(model_dir)["labels"] == {str(k): v for k, v in labels.items()}
    tok = kzoo.load_tokenizer(model_dir)
    texts = ["Marie Curie a vécu à Paris.", "hello world", ""]
    batch = tok(texts, padding="longest")
    reference = transformers.XLMRobertaForTokenClassification.from_pretrained(src).eval()
    with torch.no_grad():
        logits = reference(input_ids=torch.as_tensor(batch["token_ids"], dtype=torch.long),
                           attention_mask=torch.as_tensor(batch["padding_mask"], dtype=torch.long)).logits.numpy()
    want_ids = logits.argmax(-1)
    want_scores = np.exp(logits - logits.max(-1, keepdims=True))
    want_scores /= want_scores.sum(-1, keepdims=True)
    real = batch["padding_mask"] == 1

    def check(out):
        width = batch["token_ids"].shape[1]
        ids, scores = np.asarray(out["label_ids"])[:, :width], np.asarray(out["scores"])[:, :width]
        np.testing.assert_array_equal(ids[real], want_ids[real])
        assert np.abs(scores[real] - want_scores[real]).max() <= 1e-4
        names = np.asarray(out["labels"])[:, :width][real]
        assert [n.decode() for n in names] == [labels[i] for i in want_ids[real]]

    assert export_savedmodel(model_dir, tmp_path / "sm")["ok"]
    check(tf.saved_model.load(str(tmp_path / "sm" / "1")).signatures["serve_text"](text=tf.constant(texts)))


def test_question_answering_exports_span_logits(tmp_path):
    """An AlbertForQuestionAnswering: the SavedModel's serving_default gives PyTorch's start and end
    logits ([B, S] outputs cut back from the length bucket); the .tflite meets its export bounds."""
    import tensorflow as tf
    import torch
    import transformers

    src = make_checkpoint(tmp_path / "ref", "AlbertForQuestionAnswering", TINY_ALBERT)
    convert(src, tmp_path / "model")
    batch = reference_inputs(TINY_ALBERT["vocab_size"])
    reference = transformers.AlbertForQuestionAnswering.from_pretrained(src).eval()
    with torch.no_grad():
        want = reference(input_ids=torch.as_tensor(batch["token_ids"], dtype=torch.long),
                         attention_mask=torch.as_tensor(batch["padding_mask"], dtype=torch.long),
                         token_type_ids=torch.as_tensor(batch["segment_ids"], dtype=torch.long))
    assert export_savedmodel(tmp_path / "model", tmp_path / "sm")["ok"]
    got = tf.saved_model.load(str(tmp_path / "sm" / "1")).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in batch.items()})
    for name in ("start_logits", "end_logits"):
        assert np.abs(got[name].numpy() - getattr(want, name).numpy()).max() <= 1e-4
    assert export_tflite(tmp_path / "model", tmp_path / "qa.tflite")["ok"]
