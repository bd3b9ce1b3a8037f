"""Every runner (a model dir in Keras, a SavedModel, a .tflite ids in, a .tflite text in): bad inputs
get a one-line error naming the input, the value and the range (never clamped garbage), and eight
threads get the answers one thread gets."""

import threading

import numpy as np
import pytest
import tensorflow as tf

import kzoo
from kzoo import runtime
from kzoo.errors import RunnerError
from kzoo.export import export_savedmodel, export_tflite
from families import NAMES, masked_lm_class, tiny_hf_config
from reference import TINY_ALBERT, loaded, make_checkpoint, model_with_tokenizer
from spm_fixtures import held_out_texts, make_albert_tokenizer_dir


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """kind -> path: a tiny ALBERT masked LM with its tokenizer, and its exports."""
    tmp = tmp_path_factory.mktemp("runners")
    _, model_dir = model_with_tokenizer(tmp, "AlbertForMaskedLM", TINY_ALBERT, make_albert_tokenizer_dir(tmp, True))
    export_savedmodel(model_dir, tmp / "sm")
    export_tflite(model_dir, tmp / "ids.tflite")
    export_tflite(model_dir, tmp / "text.tflite", with_tokenizer=True)
    return {"keras": model_dir, "savedmodel": tmp / "sm", "tflite": tmp / "ids.tflite", "tflite-text": tmp / "text.tflite"}


def batch_of(paths, texts=("hello [MASK] world", "a longer text, with [MASK] in it", "[MASK]")):
    return kzoo.load_tokenizer(paths["keras"])(list(texts))


def one_line(error, *words):
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    for word in words:
        assert word in text, (word, text)


@pytest.mark.parametrize("kind", ["keras", "savedmodel", "tflite"])
def test_bad_ids_are_one_line_errors(paths, kind):
    run = runtime.load(paths[kind])
    good = batch_of(paths)
    vocab = kzoo.load_tokenizer(paths["keras"]).vocab_size
    cases = [  # (input, values, words the error names)
        ("token_ids", vocab, ("token_ids", str(vocab), f"0..{vocab - 1}")),
        ("token_ids", 10**6, ("token_ids", "1000000")),
        ("token_ids", -1, ("token_ids", "-1", f"0..{vocab - 1}")),
        ("segment_ids", 2, ("segment_ids", "2", "0..1")),
        ("padding_mask", 3, ("padding_mask", "3", "0..1")),
    ]
    for name, value, words in cases:
        bad = {k: v.copy() for k, v in good.items()}
        bad[name][0, 1] = value
        with pytest.raises(RunnerError) as error:
            run(bad)
        one_line(error, *words)
    with pytest.raises(RunnerError) as error:
        run({**good, "padding_mask": good["padding_mask"][:, :-1]})
    one_line(error, "padding_mask", "shape", "token_ids")
    longest = 64  # TINY_ALBERT's positions
    with pytest.raises(RunnerError) as error:
        run({k: np.zeros((1, longest + 1), "int32") for k in good})
    one_line(error, str(longest + 1), str(longest))
    assert np.all(np.isfinite(run(good)["logits"]))  # and good ids still run


@pytest.mark.parametrize("name", NAMES)
def test_every_family_refuses_ids_outside_its_tables(tmp_path, name):
    """Each family's own ranges (kzoo.models: input_ranges): XLM's token types index its token table
    (-1: not given) and its languages its language table."""
    src = make_checkpoint(tmp_path / "ref", masked_lm_class(name), tiny_hf_config(name))
    from kzoo.converters.convert import convert

    convert(src, tmp_path / "out")
    run = runtime.load(tmp_path / "out")
    batch = {k: np.zeros((1, 5), "int32") for k in run.input_names}
    batch.update(token_ids=np.full((1, 5), 7, "int32"), padding_mask=np.ones((1, 5), "int32"))
    if "lang_ids" in batch:
        batch["segment_ids"][:] = -1  # XLM: not given
        batch["lang_ids"][:] = -1
    assert run(batch)["logits"].shape[:2] == (1, 5)
    for input_name, value in [("segment_ids", 99), ("lang_ids", 2)]:
        if input_name in batch:
            bad = {k: v.copy() for k, v in batch.items()}
            bad[input_name][0, 2] = value
            with pytest.raises(RunnerError) as error:
                run(bad)
            one_line(error, input_name, str(value))


def test_savedmodel_signature_refuses_bad_ids_itself(paths):
    """A server (no kzoo) gets InvalidArgument naming the input: the checks run before XLA."""
    loaded = tf.saved_model.load(str(paths["savedmodel"] / "1"))
    serve = loaded.signatures["serving_default"]
    good = batch_of(paths)
    for name, value in [("token_ids", 10**6), ("token_ids", -1), ("segment_ids", 5)]:
        bad = {k: v.copy() for k, v in good.items()}
        bad[name][0, 0] = value
        with pytest.raises(tf.errors.InvalidArgumentError, match=name):
            serve(**{k: tf.constant(v) for k, v in bad.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        serve(**{k: tf.constant(v[:, :2] if k == "segment_ids" else v) for k, v in good.items()})


@pytest.mark.parametrize("kind", ["keras", "savedmodel", "tflite", "tflite-text", "fill-mask-tflite"])
def test_eight_threads_get_what_one_thread_gets(paths, kind):
    tok = kzoo.load_tokenizer(paths["keras"])
    texts = [t if "[MASK]" in t else t + " [MASK]" for t in held_out_texts("[MASK]") if t.strip()]
    texts = [t for t in texts if len(tok.encode(t)) <= 64][:8]  # (TINY_ALBERT's positions)
    if kind == "fill-mask-tflite":
        fill = kzoo.pipeline("fill-mask", paths["tflite"])
        call = lambda i: fill(texts[i % len(texts)], top_k=3)  # noqa: E731
    elif kind == "tflite-text":
        run = loaded(paths[kind])
        call = lambda i: run([texts[i % len(texts)]])  # noqa: E731
    else:
        run = loaded(paths[kind])
        call = lambda i: run(tok([texts[i % len(texts)]]))  # noqa: E731
    want = [call(i) for i in range(len(texts))]
    results, errors = {}, []

    def worker(t):
        try:
            for n in range(20):
                i = (t + n) % len(texts)
                results[(t, n)] = (i, call(i))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 160
    for i, got in results.values():
        assert_same(got, want[i])


def assert_same(got, want):
    if isinstance(want, dict):
        assert sorted(got) == sorted(want)
        for k in want:
            if np.asarray(want[k]).dtype.kind == "f":
                np.testing.assert_allclose(got[k], want[k], atol=1e-5)
            else:
                np.testing.assert_array_equal(got[k], want[k])
        return
    assert [(r["token"], r["sequence"]) for r in got] == [(r["token"], r["sequence"]) for r in want]


def test_tflite_errors_do_not_repeat_old_ones(paths):
    """LiteRT's error reporter keeps every message: a failed interpreter is replaced, so each error
    says only its own problem."""
    run = runtime.load(paths["tflite"])
    good = {k: v.astype("int32") for k, v in batch_of(paths).items()}
    messages = []
    for width in (3, 5):
        bad = {**good, "segment_ids": good["segment_ids"][:, :width]}  # past kzoo's own check: LiteRT's
        with pytest.raises(RunnerError) as error:
            run._call("serving_default", **bad)
        messages.append(str(error.value))
    assert messages[0].count("LiteRT") == messages[1].count("LiteRT") == 1
    assert np.all(np.isfinite(run(good)["logits"]))


@pytest.mark.parametrize("kind", ["savedmodel", "tflite"])
def test_padding_only_row_is_the_same_everywhere(paths, kind):
    """A row whose padding_mask is all 0 attends to nothing on every backend (Keras equals PyTorch on
    it: tests/models/test_parity.py); the SavedModel pads the batch to its buckets, which must not
    change that row."""
    batch = batch_of(paths)
    batch["padding_mask"][1] = 0
    batch["token_ids"][1] = 0
    want = loaded(paths["keras"])(batch)["logits"]
    got = loaded(paths[kind])(batch)["logits"]
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("kind", ["keras", "savedmodel", "tflite"])
def test_inputs_are_named_and_complete(paths, kind):
    """padding_mask is required (zeros would hide every token), a name the model has not is refused
    (Transformers' attention_mask would else be dropped silently), segment_ids may be left out."""
    run = loaded(paths[kind])
    good = batch_of(paths)
    with pytest.raises(RunnerError) as error:
        run({"token_ids": good["token_ids"]})
    one_line(error, "missing", "padding_mask")
    with pytest.raises(RunnerError) as error:
        run({"token_ids": good["token_ids"], "attention_mask": good["padding_mask"]})
    one_line(error, "attention_mask", "attention_mask -> padding_mask")
    assert_same(run({k: v for k, v in good.items() if k != "segment_ids"}), run(good))
    for shape, words in (((0, 5), ("no rows",)), ((2, 0), ("no tokens",))):
        with pytest.raises(RunnerError) as error:
            run({k: np.zeros(shape, "int32") for k in good})
        one_line(error, "token_ids", str(list(shape)), *words)
    for bad in ([1, 2, 3], 7, None):
        with pytest.raises(RunnerError) as error:
            run(bad)
        one_line(error, "expected texts or a dict", type(bad).__name__)
    with pytest.raises(RunnerError) as error:
        run([])
    one_line(error, "empty list")
    with pytest.raises(RunnerError) as error:
        run({k: v[0] for k, v in good.items()})  # one text's ids without the batch dimension
    one_line(error, "token_ids has shape", "[batch, length]", "[[...]]")


@pytest.mark.parametrize("kind", ["savedmodel", "tflite-text"])
def test_text_runners_take_str_and_utf8_bytes_only(paths, kind):
    run = loaded(paths[kind])
    assert_same(run([b"caf\xc3\xa9 [MASK]"]), run(["café [MASK]"]))
    for bad, words in ((["a\udcff [MASK]"], ("texts[0]", "not UTF-8")), ([b"ok", b"\xff\xfe"], ("texts[1]", "not UTF-8")),
                       (["ok", 3], ("texts[1]", "int"))):
        with pytest.raises(RunnerError) as error:
            run(bad)
        one_line(error, *words)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_left_out_are_transformers_defaults(tmp_path, name):
    """Only token_ids and padding_mask given: what Transformers computes when token_type_ids (and XLM's
    langs) are not passed (XLM: no token type and no language added, not those of id 0)."""
    import torch
    import transformers

    from kzoo.converters.convert import convert

    cls = masked_lm_class(name)
    src = make_checkpoint(tmp_path / "ref", cls, tiny_hf_config(name))
    convert(src, tmp_path / "out")
    run = runtime.load(tmp_path / "out")
    ids = np.random.default_rng(0).integers(5, 99, (2, 7)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    ours = run({"token_ids": ids, "padding_mask": mask})["logits"]
    reference = getattr(transformers, cls).from_pretrained(src).eval()
    with torch.no_grad():
        theirs = reference(input_ids=torch.as_tensor(ids, dtype=torch.long),
                           attention_mask=torch.as_tensor(mask, dtype=torch.long)).logits.numpy()
    assert np.abs(ours - theirs)[mask == 1].max() <= 1e-4
