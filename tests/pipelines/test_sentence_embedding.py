"""sentence-transformers dirs (both layouts) converted, against SentenceTransformer(dir).encode: every pooling
mode, Dense layers, Normalize, max_seq_length truncation; `kzoo embed` on them."""

import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import quantize_embeddings
from sentence_transformers.sentence_transformer import modules as M

import kzoo
from kzoo.cli import main
from kzoo.converters.convert import convert
from kzoo.converters.readers import CheckpointError
from reference import TINY_ALBERT, TINY_XLMR, lively, make_checkpoint
from spm_fixtures import make_albert_tokenizer_dir, make_xlmr_tokenizer_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["hello world", "a", "Bonjour tout le monde, ceci est un texte nettement plus long que les autres, avec "
         "1,000 mots et des virgules, qui dépasse max_seq_length de loin."]


def make_encoder(tmp, family):
    """A Hugging Face encoder dir (random lively weights) with its tokenizer files."""
    if family == "albert":
        tok, cls, config = make_albert_tokenizer_dir(tmp, with_tokenizer_json=True), "AlbertModel", TINY_ALBERT
    else:
        tok, cls, config = make_xlmr_tokenizer_dir(tmp), "XLMRobertaModel", TINY_XLMR
    vocab = len(json.loads((tok / "tokenizer.json").read_text())["model"]["vocab"])
    src = make_checkpoint(tmp / "hf", cls, {**config, "vocab_size": vocab}, weights=lively)
    for f in tok.iterdir():
        shutil.copy(f, src / f.name)
    return src


@pytest.fixture(scope="module", params=["xlm-roberta", "albert"])
def encoder(request, tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp(request.param), request.param)


def sentence_transformer(encoder, out, modes, dense=True, normalize=True, max_seq_length=20):
    modules = [M.Transformer(str(encoder), max_seq_length=max_seq_length),
               M.Pooling(32, pooling_mode=modes[0] if len(modes) == 1 else tuple(modes))]
    if dense:
        modules.append(M.Dense(32 * len(modes), 16, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(M.Normalize())
    model = SentenceTransformer(modules=modules, device="cpu")
    for p in model[2].parameters() if dense else ():
        p.data.normal_(0, 0.3)
    model.save(str(out))
    return out


@pytest.mark.parametrize("modes, dense, normalize", [
    (["mean"], True, True), (["cls"], False, True), (["max"], True, False), (["lasttoken"], False, False),
    (["weightedmean"], True, True), (["mean_sqrt_len_tokens"], False, True), (["cls", "mean"], True, True)])
def test_sentence_embedding_equals_sentence_transformers(tmp_path, encoder, modes, dense, normalize):
    st = sentence_transformer(encoder, tmp_path / "st", modes, dense, normalize)
    summary = convert(st, tmp_path / "out")
    assert summary["task"] == "sentence_embedding" and summary["unexpected"] == []
    want = SentenceTransformer(str(st), device="cpu").encode(TEXTS)
    pipe = kzoo.pipeline("sentence-embedding", tmp_path / "out")
    ours = pipe(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == want.shape
    assert np.max(np.abs(ours - want)) <= 1e-4
    assert np.max(np.abs(pipe(TEXTS[0]) - want[0])) <= 1e-4


def test_verify_against_sentence_transformers(tmp_path, encoder, capsys):
    """`kzoo verify OUT --reference ST_DIR`: sentence-transformers' own modules on padded batches (a padding-only row
    too), the sentence vectors and the token embeddings within 1e-4; another model's dir fails."""
    st = sentence_transformer(encoder, tmp_path / "st", ["mean"], dense=True, normalize=True)
    convert(st, tmp_path / "out")
    assert main(["verify", str(tmp_path / "out"), "--reference", str(st), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and {r["output"] for r in report["rows"]} == {"sentence_embedding", "sequence_output"}
    other = sentence_transformer(encoder, tmp_path / "other", ["cls"], dense=True, normalize=False)
    assert main(["verify", str(tmp_path / "out"), "--reference", str(other)]) == 1  # (another Dense, another pooling)
    assert "FAIL" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "out"), "--reference", str(encoder)]) == 2  # a plain encoder: no modules.json
    assert "not a sentence-transformers model" in capsys.readouterr().err


def test_the_older_layout_reads_the_same(tmp_path, encoder):
    """Hub dirs from sentence-transformers 2.x: pooling_mode_* booleans, sentence_bert_config.json's
    max_seq_length (here 12: the long text is cut there)."""
    st = sentence_transformer(encoder, tmp_path / "st", ["cls"], max_seq_length=None)
    (st / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12, "do_lower_case": False}))
    want = SentenceTransformer(str(st), device="cpu").encode(TEXTS)
    convert(st, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["max_seq_length"] == 12
    assert np.max(np.abs(kzoo.pipeline("sentence-embedding", tmp_path / "out")(TEXTS) - want)) <= 1e-4


def test_embed_cli_and_options(tmp_path, encoder, capsys):
    st = sentence_transformer(encoder, tmp_path / "st", ["mean"], normalize=False)
    convert(st, tmp_path / "out")
    reference = SentenceTransformer(str(st), device="cpu")
    assert main(["embed", str(tmp_path / "out"), *TEXTS[:2], "--normalize", "--json"]) == 0
    want = reference.encode(TEXTS[:2], normalize_embeddings=True)
    assert np.max(np.abs(np.asarray(json.loads(capsys.readouterr().out)) - want)) <= 1e-4
    pipe = kzoo.pipeline("sentence-embedding", tmp_path / "out", batch_size=1)
    assert np.max(np.abs(pipe(TEXTS, prompt="query: ") - reference.encode(TEXTS, prompt="query: "))) <= 1e-4


def test_encode_arguments(tmp_path, encoder, capsys):
    """encode's arguments, against SentenceTransformer.encode: the model's named and default prompts (carried by
    convert), truncate_dim before normalize_embeddings, every precision, token_embeddings, convert_to_tensor /
    convert_to_numpy, an iterator read whole, [] -> an empty array; the CLI's --prompt-name / --truncate-dim."""
    import tensorflow as tf

    st = sentence_transformer(encoder, tmp_path / "st", ["mean"], normalize=False)
    settings = json.loads((st / "config_sentence_transformers.json").read_text())
    settings.update(prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="passage")
    (st / "config_sentence_transformers.json").write_text(json.dumps(settings))
    convert(st, tmp_path / "out")
    reference = SentenceTransformer(str(st), device="cpu")
    pipe = kzoo.pipeline("sentence-embedding", tmp_path / "out")
    texts = TEXTS * 2

    def close(ours, want):
        return ours.shape == want.shape and np.max(np.abs(ours - want)) <= 1e-4

    assert close(pipe(texts), reference.encode(texts))  # (the default prompt: "passage: ")
    assert not close(pipe(texts), reference.encode(texts, prompt=""))
    assert close(pipe(texts, prompt_name="query"), reference.encode(texts, prompt_name="query"))
    assert close(pipe(texts, prompt=""), reference.encode(texts, prompt=""))
    assert close(pipe(texts, truncate_dim=5, normalize_embeddings=True),
                 reference.encode(texts, truncate_dim=5, normalize_embeddings=True))
    # precision: sentence-transformers' quantize_embeddings on our float vectors, exactly (on its own vectors a
    # dimension spanning 1e-3 moves a bucket for a 1e-6 difference); its dtypes and shapes from encode itself
    floats = pipe(texts)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        ours, want = pipe(texts, precision=precision), reference.encode(texts, precision=precision)
        assert ours.dtype == want.dtype and ours.shape == want.shape
        np.testing.assert_array_equal(ours, quantize_embeddings(floats, precision=precision))
    tokens, want = pipe(texts, output_value="token_embeddings"), reference.encode(texts, output_value="token_embeddings")
    assert [t.shape for t in tokens] == [tuple(w.shape) for w in want]
    assert all(np.max(np.abs(t - w.numpy())) <= 1e-4 for t, w in zip(tokens, want))
    quantized = pipe(texts, output_value="token_embeddings", precision="uint8")  # (ranges shared by all texts)
    for ours, want in zip(quantized, quantize_embeddings(tokens, precision="uint8")):
        np.testing.assert_array_equal(ours, want)
    assert close(pipe(texts, prompt_name="document"), reference.encode(texts, prompt_name="document"))  # (a default)
    assert isinstance(pipe(texts, convert_to_tensor=True), tf.Tensor)
    assert isinstance(pipe(texts, convert_to_numpy=False), list)
    assert close(pipe(iter(texts)), reference.encode(texts))
    assert pipe([]).shape == reference.encode([]).shape == (0,)
    with pytest.raises(kzoo.pipelines.PipelineError, match="Prompt name 'doc' not found"):
        pipe(texts, prompt_name="doc")
    with pytest.raises(kzoo.pipelines.PipelineError, match="precision must be one of"):
        pipe(texts, precision="int4")
    with pytest.raises(kzoo.pipelines.PipelineError, match="needs at least 2 embeddings"):
        pipe(texts[0], precision="int8")
    assert main(["embed", str(tmp_path / "out"), *texts[:2], "--prompt-name", "query", "--truncate-dim", "4",
                 "--json"]) == 0
    want = reference.encode(texts[:2], prompt_name="query", truncate_dim=4)
    assert np.max(np.abs(np.asarray(json.loads(capsys.readouterr().out)) - want)) <= 1e-4


@pytest.mark.parametrize("edit, message", [
    (lambda st: (st / "modules.json").write_text(json.dumps(
        [*json.loads((st / "modules.json").read_text()), {"idx": 9, "path": "", "type": "x.LSTM"}])),
     "module x.LSTM is not supported"),
    (lambda st: (st / "2_Dense" / "config.json").write_text(json.dumps(
        {**json.loads((st / "2_Dense" / "config.json").read_text()), "activation_function": "torch.nn.SiLU"})),
     "activation_function torch.nn.SiLU is not supported"),
    (lambda st: (st / "1_Pooling" / "config.json").write_text('{"pooling_mode": "median"}'),
     "pooling mode 'median'"),
])
def test_unsupported_modules_are_one_line_errors(tmp_path, encoder, edit, message):
    st = sentence_transformer(encoder, tmp_path / "st", ["mean"])
    edit(st)
    with pytest.raises(CheckpointError, match=message):
        convert(st, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_exports_give_the_same_vectors(tmp_path):
    """The SavedModel (ids through serving_default) and a text-in .tflite (the tokenizer inside, cutting at
    max_seq_length) give SentenceTransformer.encode's vectors; a dynamic-int8 one close to them (on this
    32-wide toy model int8 reaches cosine ~0.96-0.99, under the 0.99 its report asks, which it reports as
    FAIL; xlm-roberta-base-sized, benchmarks/pipelines.py measures 0.9998)."""
    from kzoo.export import export_savedmodel, export_tflite

    torch.manual_seed(0)  # (the Dense layer's draw)
    st = sentence_transformer(make_encoder(tmp_path, "xlm-roberta"), tmp_path / "st", ["mean"], max_seq_length=20)
    convert(st, tmp_path / "out")
    want = SentenceTransformer(str(st), device="cpu").encode(TEXTS)
    assert export_savedmodel(tmp_path / "out", tmp_path / "sm")["ok"]
    assert np.max(np.abs(kzoo.pipeline("sentence-embedding", tmp_path / "sm")(TEXTS) - want)) <= 1e-4
    report = export_tflite(tmp_path / "out", tmp_path / "e.tflite", with_tokenizer=True)
    assert report["ok"] and report["signatures"]["serve_text"]["outputs"]
    assert np.max(np.abs(kzoo.pipeline("sentence-embedding", tmp_path / "e.tflite")(TEXTS) - want)) <= 1e-4
    report = export_tflite(tmp_path / "out", tmp_path / "q.tflite", quantize="dynamic-int8", with_tokenizer=True)
    cosine = report["evaluation"]["outputs"]["sentence_embedding"]["cosine_min"]
    assert report["ok"] == (cosine >= 0.99) and cosine > 0.95
    vectors = kzoo.pipeline("sentence-embedding", tmp_path / "q.tflite")(TEXTS)
    assert np.min(np.sum(vectors * want, axis=1)) > 0.95  # (unit vectors: their dot products are the cosines)
