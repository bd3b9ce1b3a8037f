"""text-classification, token-classification and zero-shot-classification on converted task checkpoints,
against Transformers' pipelines of those names on the PyTorch reference: the same labels, words, offsets and
formats, scores within 1e-4. Weights are `lively` (outputs that depend on the text: see reference.py).

Text pairs: Transformers 5.23's ALBERT tokenizer leaves token_type_ids out of the model's inputs, so its
pipelines run a pair with token type 0 throughout; ALBERT was trained (and its task checkpoints fine-tuned,
with Transformers 4) with type 1 on the second text, which kzoo feeds. The reference pipeline here is given
a tokenizer that returns token_type_ids, as Transformers 4's did."""

import functools
import json
import shutil
import warnings

import numpy as np
import pytest
import transformers

import kzoo
from kzoo.cli import main
from kzoo.converters.convert import convert
from kzoo.pipelines import PipelineError
from reference import TINY_ALBERT, TINY_XLMR, model_with_tokenizer
from spm_fixtures import make_albert_tokenizer_dir, make_xlmr_tokenizer_dir
from reference import lively, loaded
from xlm_fixtures import TINY_ENFR, tokenizer_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NER = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "MISC"}
SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
TEXTS = ["Hello I'm Jean-Pierre from Paris, France.", "Bonjour, je suis Marie Curie à Varsovie!",
         "  spaces   and\ttabs, 1,000 of them ", "Ünïcödé façade naïve café"]


def labelled(config, id2label, **extra):
    return {**config, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}, **extra}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokenizers")
    return {"albert": make_albert_tokenizer_dir(tmp / "albert", with_tokenizer_json=True),
            "xlm-roberta": make_xlmr_tokenizer_dir(tmp / "xlmr")}


CONFIGS = {"albert": ("Albert", TINY_ALBERT), "xlm-roberta": ("XLMRoberta", TINY_XLMR)}


def checkpoint(tmp_path_factory, tokenizers, family, head, id2label, **extra):
    prefix, config = CONFIGS[family]
    tmp = tmp_path_factory.mktemp(f"{family}-{head}")
    return model_with_tokenizer(tmp, f"{prefix}For{head}", labelled(config, id2label, **extra), tokenizers[family],
                                weights=lively)


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def ner(request, tmp_path_factory, tokenizers):
    return checkpoint(tmp_path_factory, tokenizers, request.param, "TokenClassification", NER)


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def sentiment(request, tmp_path_factory, tokenizers):
    return checkpoint(tmp_path_factory, tokenizers, request.param, "SequenceClassification", SENTIMENT)


def reference(task, src, inputs, **kwargs):
    """Transformers' pipeline, ALBERT's tokenizer feeding token_type_ids (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reference_pipeline(task, str(src))(inputs, **kwargs)


@functools.cache  # (its options are the call's: one pipeline serves every call on a checkpoint)
def reference_pipeline(task, src):
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    config = transformers.AutoConfig.from_pretrained(src)  # (a real checkpoint's model_max_length: what it takes)
    tokenizer.model_max_length = config.max_position_embeddings - (2 if config.model_type == "xlm-roberta" else 0)
    if type(tokenizer).__name__.startswith("Albert") and "token_type_ids" not in tokenizer.model_input_names:
        tokenizer.model_input_names = [*tokenizer.model_input_names, "token_type_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline(task, model=src, tokenizer=tokenizer, device="cpu")


def assert_same(ours, theirs):
    """Equal structure, keys and values; scores within 1e-4."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
        return
    assert isinstance(ours, dict) and set(ours) == set(theirs), (ours, theirs)
    for key, want in theirs.items():
        if key == "score":
            assert abs(ours[key] - float(want)) < 1e-4, (ours, theirs)
        else:
            assert ours[key] == (want.item() if hasattr(want, "item") else want), (key, ours, theirs)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_equals_transformers(ner, strategy):
    src, out = ner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Transformers' "fallback heuristic" warning, kzoo's too)
        ours = kzoo.pipeline("ner", loaded(out), aggregation_strategy=strategy, ignore_labels=[])(TEXTS)
    theirs = reference("token-classification", src, TEXTS, aggregation_strategy=strategy, ignore_labels=[])
    assert_same(ours, theirs)
    assert any(len(entities) for entities in ours)
    for text, entities in zip(TEXTS, ours):  # offsets into the original text
        for e in entities:
            assert 0 <= e["start"] <= e["end"] <= len(text)


@pytest.mark.parametrize("strategy", ["simple", "first", "max"])
def test_token_classification_stride_equals_transformers(ner, strategy):
    """A text longer than the model (38 tokens) in windows `stride` tokens overlapping, entities of every
    window, overlaps resolved: Transformers' `stride`."""
    src, out = ner
    text = " ".join(TEXTS[:2] * 4)
    for stride in (4, 10):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = kzoo.pipeline("ner", loaded(out), aggregation_strategy=strategy, ignore_labels=[])(text, stride=stride)
        theirs = reference("token-classification", src, text, aggregation_strategy=strategy, ignore_labels=[],
                           stride=stride)
        assert_same(ours, theirs)
        cut = kzoo.pipeline("ner", loaded(out), aggregation_strategy=strategy, ignore_labels=[])(text)  # (no stride: cut)
        assert max(e["end"] for e in ours) > max(e["end"] for e in cut)
    with pytest.raises(PipelineError, match='aggregation_strategy="none"'):  # (only when asked for)
        kzoo.pipeline("ner", loaded(out), aggregation_strategy="none")(text, stride=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(kzoo.pipeline("ner", loaded(out), ignore_labels=[])(text, stride=4),
                    reference("token-classification", src, text, ignore_labels=[], stride=4))
    with pytest.raises(PipelineError, match="stride"):
        kzoo.pipeline("ner", loaded(out), aggregation_strategy="simple")(text, stride=1000)


@pytest.mark.parametrize("strategy", ["none", "simple", "first"])
def test_token_classification_split_into_words_equals_transformers(ner, strategy):
    src, out = ner
    words = [["Jean-Pierre", "lives", "in", "Paris", ","], ["Marie", "Curie", "", "à", "Varsovie"]]
    for kwargs in ({}, {"delimiter": "  "}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = kzoo.pipeline("ner", loaded(out), aggregation_strategy=strategy, ignore_labels=[])(
                words, is_split_into_words=True, **kwargs)
            single = kzoo.pipeline("ner", loaded(out), aggregation_strategy=strategy, ignore_labels=[])(
                words[0], is_split_into_words=True, **kwargs)
        theirs = reference("token-classification", src, words, aggregation_strategy=strategy, ignore_labels=[],
                           is_split_into_words=True, **kwargs)
        assert_same(ours, theirs)
        assert_same(single, reference("token-classification", src, words[0], aggregation_strategy=strategy,
                                      ignore_labels=[], is_split_into_words=True, **kwargs))  # ([[entities]])
    with pytest.raises(PipelineError, match="must be a list of tokens"):
        kzoo.pipeline("ner", loaded(out))("a text", is_split_into_words=True)


def test_token_classification_default_ignores_o_and_takes_options_per_call(ner):
    src, out = ner
    pipe = kzoo.pipeline("token-classification", loaded(out))
    assert_same(pipe(TEXTS[0]), reference("token-classification", src, TEXTS[0]))
    assert_same(pipe(TEXTS[1], aggregation_strategy="simple", ignore_labels=["O", "MISC"]),
                reference("token-classification", src, TEXTS[1], aggregation_strategy="simple",
                          ignore_labels=["O", "MISC"]))


@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}, {"top_k": 2}, {"function_to_apply": "sigmoid"},
                                    {"function_to_apply": "none", "top_k": 1}])
@pytest.mark.parametrize("inputs", ["Hello world", ["Hello world", "Bonjour tout le monde"],
                                    {"text": "Hello", "text_pair": "world"},
                                    [{"text": "a b", "text_pair": "c"}, "plain text"]],
                         ids=["str", "list", "pair", "mixed"])
def test_text_classification_equals_transformers(sentiment, inputs, kwargs):
    src, out = sentiment
    ours = kzoo.pipeline("sentiment-analysis", loaded(out))(inputs, **kwargs)
    assert_same(ours, reference("text-classification", src, inputs, **kwargs))
    if isinstance(inputs, list):  # (the weights make the scores depend on the text)
        assert ours[0] != ours[1]


@pytest.mark.parametrize("kwargs", [{"max_length": 4, "truncation": True}, {"max_length": 4},
                                    {"padding": "max_length", "max_length": 30}, {"truncation": False, "max_length": 4},
                                    {"padding": False, "max_length": 4}, {"padding": "do_not_pad"},
                                    {"padding": True, "max_length": 4}])
def test_text_classification_tokenizer_arguments(sentiment, kwargs):
    """Transformers passes the call's other arguments to its tokenizer: max_length / truncation / padding."""
    src, out = sentiment
    texts = ["Hello world, this text is longer than four tokens", "Bonjour tout le monde"]
    ours = kzoo.pipeline("text-classification", loaded(out))(texts, top_k=None, **kwargs)
    assert_same(ours, reference("text-classification", src, texts, top_k=None, **kwargs))


def test_pipelines_stream_an_iterator(sentiment, ner):
    """A generator or a torch Dataset (KeyDataset over rows, as `datasets` gives them) in, a generator out
    (batch_size rows per model call), as Transformers' pipelines stream."""
    from transformers.pipelines.pt_utils import KeyDataset

    for (src, out), name, texts in ((sentiment, "text-classification", TEXTS), (ner, "ner", TEXTS)):
        pipe = kzoo.pipeline(name, loaded(out), batch_size=2)
        streamed = pipe(t for t in texts)
        assert not isinstance(streamed, list)
        assert list(streamed) == pipe(list(texts))
        dataset = pipe(KeyDataset([{"text": t, "label": 0} for t in texts], "text"))
        assert not isinstance(dataset, list) and list(dataset) == pipe(list(texts))
    with pytest.raises(PipelineError, match="unknown option"):
        list(kzoo.pipeline("text-classification", loaded(sentiment[1]))(iter(TEXTS), top_p=1))
    # an error names its input by its place in the stream (here the second chunk's first)
    stream = kzoo.pipeline("text-classification", loaded(sentiment[1]), batch_size=2)(iter([*TEXTS[:2], 7, TEXTS[0]]))
    assert next(stream) and next(stream)
    with pytest.raises(PipelineError, match="^input 3: expected a str"):
        next(stream)


def test_text_classification_options_at_construction(sentiment):
    """Transformers' quirk kept: top_k given to the constructor, a str's result is wrapped once more."""
    src, out = sentiment
    ours = kzoo.pipeline("text-classification", loaded(out), top_k=2)("Hello world")
    theirs = transformers.pipeline("text-classification", model=str(src), device="cpu", top_k=2)("Hello world")
    # (a single text: no token types, the same with or without them)
    assert_same(ours, theirs)
    assert isinstance(ours[0], list)
    reference = transformers.pipeline("text-classification", model=str(src), device="cpu")
    assert kzoo.pipeline("text-classification", loaded(out))(TEXTS, top_k=0) == reference(TEXTS, top_k=0) == [[]] * len(TEXTS)
    assert_same(kzoo.pipeline("text-classification", loaded(out), num_workers=2)(TEXTS, num_workers=0),
                reference(TEXTS, num_workers=0))


@pytest.mark.parametrize("problem_type, num_labels, function", [
    ("regression", 1, lambda x: x), ("multi_label_classification", 3, lambda x: 1 / (1 + np.exp(-x))),
    (None, 1, lambda x: 1 / (1 + np.exp(-x)))])
def test_default_function_follows_problem_type(tmp_path_factory, tokenizers, problem_type, num_labels, function):
    id2label = {i: f"L{i}" for i in range(num_labels)}
    src, out = checkpoint(tmp_path_factory, tokenizers, "xlm-roberta", "SequenceClassification", id2label,
                          problem_type=problem_type)
    ours = kzoo.pipeline("text-classification", out)(TEXTS, top_k=None)
    assert_same(ours, reference("text-classification", src, TEXTS, top_k=None))
    model = kzoo.load(out)
    logits = np.asarray(model(kzoo.load_tokenizer(out)(TEXTS[:1])))[0]
    assert abs(max(r["score"] for r in ours[0]) - function(logits).max()) < 1e-5


@pytest.fixture(scope="module")
def xlm_ner(tmp_path_factory):
    root = tmp_path_factory.mktemp("xlm_ner")
    tok, vocab_size = tokenizer_dir(root / "tokenizer")
    config = transformers.XLMConfig(**labelled({**TINY_ENFR, "vocab_size": vocab_size}, NER))
    src = root / "ref"
    lively(transformers.XLMForTokenClassification(config).eval()).save_pretrained(src)
    for f in tok.iterdir():
        if f.name != "config.json":
            shutil.copy(f, src / f.name)
    convert(src, root / "out")
    return src, root / "out"


@pytest.mark.parametrize("strategy", ["none", "simple"])
def test_xlm_token_classification_like_a_slow_tokenizer(xlm_ner, strategy):
    """XLM's tokenizer is a Python one in Transformers: no offsets (start/end None), words by tokens."""
    src, out = xlm_ner
    texts = ["Paris is the capital of France.", "l'été dernier à Paris", "<special1> and <s> in it"]
    ours = kzoo.pipeline("ner", loaded(out), aggregation_strategy=strategy, ignore_labels=[])(texts)
    assert_same(ours, reference("ner", src, texts, aggregation_strategy=strategy, ignore_labels=[]))
    with pytest.raises(PipelineError, match="Slow tokenizers cannot handle subwords"):
        kzoo.pipeline("ner", loaded(out))(texts, aggregation_strategy="first")


@pytest.fixture(scope="module")
def xlm_ner_exports(xlm_ner, tmp_path_factory):
    """Text-in exports of XLM's token classifier: its Moses + BPE tokenizer inside (kzoo.tokenizers.moses_graph)."""
    from kzoo.export import export_savedmodel, export_tflite

    tmp = tmp_path_factory.mktemp("xlm_ner_exports")
    report = export_tflite(xlm_ner[1], tmp / "text.tflite", with_tokenizer=True)
    assert report["ok"] and report["evaluation"]["ids_equal_python_tokenizer"], report["evaluation"]
    assert export_savedmodel(xlm_ner[1], tmp / "sm")["ok"]
    exports = {"tflite": tmp / "text.tflite", "savedmodel": tmp / "sm"}
    return exports


@pytest.mark.parametrize("strategy", ["none", "simple"])
def test_xlm_token_classification_on_text_in_exports(xlm_ner, xlm_ner_exports, strategy):
    """The pipeline on XLM's text-in .tflite and SavedModel equals Transformers' (no offsets: a Python
    tokenizer's words by tokens)."""
    src, _ = xlm_ner
    texts = ["Paris is the capital of France.", "l'été dernier à Paris, «Jean» — ok...", "<special1> and <s> in it"]
    want = reference("ner", src, texts, aggregation_strategy=strategy, ignore_labels=[])
    for path in xlm_ner_exports.values():
        assert_same(kzoo.pipeline("ner", path, aggregation_strategy=strategy, ignore_labels=[])(texts), want)


def test_bad_options_are_one_line_errors(ner, sentiment):
    _, out = ner
    with pytest.raises(PipelineError, match="unknown option.*doc_stride"):
        kzoo.pipeline("ner", loaded(out), doc_stride=16)
    with pytest.raises(PipelineError, match="aggregation_strategy must be one of"):
        kzoo.pipeline("ner", loaded(out))("x", aggregation_strategy="longest")
    with pytest.raises(PipelineError, match="token-classification runs token_classifier models"):
        kzoo.pipeline("token-classification", loaded(sentiment[1]))
    with pytest.raises(PipelineError, match="function_to_apply must be one of"):
        kzoo.pipeline("text-classification", loaded(sentiment[1]))("x", function_to_apply="relu")
    with pytest.raises(PipelineError, match="top_k must be"):
        kzoo.pipeline("text-classification", loaded(sentiment[1]))("x", top_k=-1)
    with pytest.raises(PipelineError, match="input 2: expected a str or"):
        kzoo.pipeline("text-classification", loaded(sentiment[1]))(["x", {"txt": "y"}])


def test_new_token_classifier_head_runs_in_the_pipeline(tmp_path, tokenizers):
    """`kzoo convert --task token_classifier --labels ...` on a masked-LM checkpoint: a model dir the pipeline
    runs, with the new labels."""
    src, _ = model_with_tokenizer(tmp_path, "XLMRobertaForMaskedLM", TINY_XLMR, tokenizers["xlm-roberta"])
    assert main(["convert", str(src), str(tmp_path / "ner"), "--task", "token_classifier",
                 "--labels", "O,B-PER,I-PER", "--json"]) == 0
    entities = kzoo.pipeline("ner", tmp_path / "ner", ignore_labels=[])("Jean-Pierre lives in Paris")
    assert entities and {e["entity"] for e in entities} <= {"O", "B-PER", "I-PER"}
    config = json.loads((tmp_path / "ner" / "config.json").read_text())
    assert config["labels"] == {"0": "O", "1": "B-PER", "2": "I-PER"}


def test_cli_classify_and_token_classify_json(ner, sentiment, capsys):
    src, out = sentiment
    assert main(["classify", str(out), "Hello world", "Bonjour", "--text-pair", "a", "b", "--top-k", "all",
                 "--json"]) == 0
    inputs = [{"text": "Hello world", "text_pair": "a"}, {"text": "Bonjour", "text_pair": "b"}]
    assert_same(json.loads(capsys.readouterr().out), reference("text-classification", src, inputs, top_k=None))
    src, out = ner
    assert main(["token-classify", str(out), TEXTS[0], "--aggregation-strategy", "simple", "--ignore-labels", "",
                 "--json"]) == 0
    assert_same(json.loads(capsys.readouterr().out),
                [reference("ner", src, TEXTS[0], aggregation_strategy="simple", ignore_labels=[])])
    assert main(["classify", str(out), "x"]) == 2  # a token classifier given to classify
    err = capsys.readouterr().err
    assert "text-classification runs classifier models" in err and "Traceback" not in err
    assert main(["classify", str(sentiment[1]), "x", "y", "--text-pair", "z"]) == 2
    assert "2 texts but 1 --text-pair" in capsys.readouterr().err


NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def nli(request, tmp_path_factory, tokenizers):
    return checkpoint(tmp_path_factory, tokenizers, request.param, "SequenceClassification", NLI,
                      max_position_embeddings=130)  # (premise + hypothesis: longer than TINY's 38 tokens)


@pytest.mark.parametrize("kwargs", [
    dict(candidate_labels=["politics", "sports", "cooking"]),
    dict(candidate_labels="politics, sports", multi_label=True),
    dict(candidate_labels=["sports"]),
    dict(candidate_labels=["economy", "art"], hypothesis_template="Sur {}."),
])
def test_zero_shot_equals_transformers(nli, kwargs):
    src, out = nli
    # (the third: longer than the model takes, so its premise is cut: Transformers' truncation="only_first")
    inputs = ["The match ended 2-1.", "Le gouvernement a voté.", "The long match ended 2-1 after extra time. " * 20]
    ours = kzoo.pipeline("zero-shot-classification", loaded(out))(inputs, **kwargs)
    theirs = reference("zero-shot-classification", src, inputs, **kwargs)
    for a, b in zip(ours, theirs):  # (label -> score: the order of scores equal within 1e-6 is arbitrary)
        assert a["sequence"] == b["sequence"] and sorted(a["labels"]) == sorted(b["labels"])
        mine, want = dict(zip(a["labels"], a["scores"])), dict(zip(b["labels"], b["scores"]))
        assert all(abs(mine[label] - want[label]) < 1e-4 for label in want)
        assert a["scores"] == sorted(a["scores"], reverse=True)
    kwargs = dict(kwargs)
    single = kzoo.pipeline("zero-shot-classification", loaded(out))(inputs[0], kwargs.pop("candidate_labels"), **kwargs)
    assert single["labels"] == ours[0]["labels"]  # (candidate labels as the second argument, as Transformers)


def test_zero_shot_errors(nli):
    pipe = kzoo.pipeline("zero-shot-classification", loaded(nli[1]))
    with pytest.raises(PipelineError, match="at least one label"):
        pipe("text", candidate_labels=[])
    with pytest.raises(PipelineError, match="needs {} where the label goes"):
        pipe("text", candidate_labels=["a"], hypothesis_template="No slot.")
    for template, error in (("{} {}", "IndexError"), ("about {topic}", "KeyError"), ("{", "ValueError")):
        with pytest.raises(PipelineError, match=f"takes one {{}} where the label goes \\({error}"):
            pipe("text", candidate_labels=["a"], hypothesis_template=template)


def test_cli_zero_shot_json(nli, capsys):
    src, out = nli
    assert main(["zero-shot", str(out), "The match ended 2-1.", "--candidate-labels", "sports,politics",
                 "--multi-label", "--json"]) == 0
    (ours,) = json.loads(capsys.readouterr().out)
    theirs = reference("zero-shot-classification", src, "The match ended 2-1.",
                       candidate_labels=["sports", "politics"], multi_label=True)
    assert ours["labels"] == theirs["labels"]
    np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-4)


def test_batch_size_splits_model_calls_not_results(ner, sentiment, nli):
    """batch_size (Transformers' name): model calls of that many rows; the results as in one call."""
    many = TEXTS * 3
    for pipe, inputs, kwargs in [
            (kzoo.pipeline("ner", loaded(ner[1]), ignore_labels=[]), many, {}),
            (kzoo.pipeline("text-classification", loaded(sentiment[1])), many, {"top_k": None}),
            (kzoo.pipeline("zero-shot-classification", loaded(nli[1])), many[:5], {"candidate_labels": ["a", "b", "c"]})]:
        whole, split = pipe(inputs, batch_size=100, **kwargs), pipe(inputs, batch_size=2, **kwargs)
        assert len(whole) == len(split) == len(inputs)
        for a, b in zip(whole, split):
            if isinstance(a, dict) and "sequence" in a:  # zero-shot
                assert a["labels"] == b["labels"]
                np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
            else:
                assert_same(a, b)
    with pytest.raises(PipelineError, match="batch_size must be a whole number >= 1"):
        kzoo.pipeline("ner", loaded(ner[1]))("x", batch_size=0)
