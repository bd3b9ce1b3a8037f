"""Text-in exports of the task heads (a SavedModel's serve_text, a `--with-tokenizer` .tflite: what a phone
runs) against Transformers on the PyTorch reference: question answering (question and context strings in,
the answer's characters and score out) equals Transformers 4.57's pipeline algorithm (tests/qa_reference.py)
on a context that fits one window; token classification gives per-token labels, scores and character
offsets, and the token-classification pipeline on the .tflite equals Transformers' pipeline. Both run
under LiteRT from text, in fp32 and dynamic int8."""

import re
import warnings

import numpy as np
import pytest

import kzoo
from kzoo.cli import main
from kzoo.export import export_savedmodel, export_tflite
from kzoo.pipelines import PipelineError
from qa_reference import reference_qa
from reference import TINY_ALBERT, TINY_XLMR, lively, model_with_tokenizer
from spm_fixtures import make_albert_tokenizer_dir, make_xlmr_tokenizer_dir
from test_classification_pipelines import NER, labelled, reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = ("Jean-Pierre lives in Paris, France, since 1999. He works at a café near the Seine, with 1,000 "
           "others, and   spends weekends in Lyon.")
QUESTIONS = ["Where does Jean live?", "Who works?", "Since when?"]
# Lower-case words the tiny test vocabularies hold (no unknown pieces: the in-graph offsets are all
# Transformers' there; elsewhere a token may span its whole word, see kzoo.tokenizers.sentencepiece).
NER_TEXTS = ["jean lives in paris and works near the river", "the city of lyon , since 1999 !", "marie curie"]


def _family(tmp, family, head, config):
    if family == "albert":
        prefix, base, tokenizer = "Albert", TINY_ALBERT, make_albert_tokenizer_dir(tmp, True)
    else:
        prefix, base, tokenizer = "XLMRoberta", TINY_XLMR, make_xlmr_tokenizer_dir(tmp)
    return model_with_tokenizer(tmp, f"{prefix}For{head}", {**base, "max_position_embeddings": 130, **config},
                                tokenizer, weights=lively)


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def qa(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"qa-{request.param}")
    src, model_dir = _family(tmp, request.param, "QuestionAnswering", {})
    exports = {"savedmodel": tmp / "sm", "tflite": tmp / "qa.tflite", "short": tmp / "short.tflite"}
    assert export_savedmodel(model_dir, exports["savedmodel"])["ok"]
    report = export_tflite(model_dir, exports["tflite"], with_tokenizer=True)
    assert report["ok"] and set(report["custom_ops"]) <= {  # (tf-text's kernels only)
        "TFText>ByteSplitWithOffsets", "TFText>FastSentencepieceTokenize", "TFText>WhitespaceTokenizeWithOffsetsV2",
        "RaggedTensorToTensor", "TFText>ByteSplitByOffsets", "TFText>NgramsStringJoin"}, report["custom_ops"]
    assert 0.5 < report["evaluation"]["offsets_equal_python_tokenizer"] <= 1
    export_tflite(model_dir, exports["short"], with_tokenizer=True, max_answer_len=3, max_length=100)
    return src, model_dir, exports


@pytest.mark.parametrize("export", ["savedmodel", "tflite"])
def test_qa_text_signature_equals_transformers(qa, export):
    src, _, exports = qa
    run = kzoo.runtime.load(exports[export])
    assert run.text_input_names == ("context", "question") or set(run.text_input_names) == {"question", "context"}
    out = run({"question": QUESTIONS, "context": [CONTEXT] * len(QUESTIONS)})
    assert not out["truncated"].any()
    for i, question in enumerate(QUESTIONS):
        want = reference_qa(src, question, CONTEXT, max_seq_len=128)
        assert (int(out["start"][i]), int(out["end"][i])) == (want["start"], want["end"]), (question, want)
        assert abs(float(out["score"][i]) - want["score"]) < 1e-4
        null = reference_qa(src, question, CONTEXT, max_seq_len=128, handle_impossible_answer=True, top_k=1000)
        assert abs(float(out["null_score"][i]) - next(a["score"] for a in null if a["answer"] == "")) < 1e-4


def test_qa_pipeline_on_a_text_in_tflite(qa):
    src, _, exports = qa
    pipe = kzoo.pipeline("question-answering", exports["tflite"])
    for question in QUESTIONS:
        for impossible in (False, True):
            ours = pipe(question=question, context=CONTEXT, handle_impossible_answer=impossible)
            theirs = reference_qa(src, question, CONTEXT, max_seq_len=128, handle_impossible_answer=impossible)
            assert (ours["answer"], ours["start"], ours["end"]) == (theirs["answer"], theirs["start"], theirs["end"])
            assert abs(ours["score"] - theirs["score"]) < 1e-4
    short = kzoo.pipeline("question-answering", exports["short"])(question=QUESTIONS[0], context=CONTEXT[:60])
    want = reference_qa(src, QUESTIONS[0], CONTEXT[:60], max_seq_len=128, max_answer_len=3)
    assert (short["start"], short["end"]) == (want["start"], want["end"])


def test_qa_text_in_errors_name_the_option(qa, capsys):
    _, _, exports = qa
    pipe = kzoo.pipeline("question-answering", exports["short"])
    for options, word in ((dict(top_k=2), "top_k"), (dict(doc_stride=8), "doc_stride"),
                          (dict(max_answer_len=5), "max_answer_len")):
        with pytest.raises(PipelineError, match=word):
            pipe(question="Who?", context="Jean.", **options)
    with pytest.raises(PipelineError, match="longer than the 100 tokens"):
        pipe(question="Who?", context=CONTEXT * 3)  # (one window of its --max-length 100)
    run = kzoo.runtime.load(exports["short"])
    with pytest.raises(kzoo.runtime.RunnerError, match="text signature takes .*call it with a dict"):
        run(["a text"])
    with pytest.raises(kzoo.runtime.RunnerError, match="one of each"):
        run({"question": ["a", "b"], "context": ["c"]})
    assert main(["qa", str(exports["short"]), "--question", "Who lives?", "--context", "Jean lives.", "--json"]) == 0
    assert '"answer"' in capsys.readouterr().out


def test_qa_savedmodel_signature_refuses_what_it_cannot_answer(qa):
    """serve_text called as a server calls it: a scalar (it crashed the process in tf-text's ops), a 2-D batch
    (read as its first text; [N, 1] was answered row by row), bytes that are not UTF-8 (a surrogate among
    them) and batches of two sizes are InvalidArgument errors that say so; a context of
    whitespace only is the null answer, as an empty one (the graph's offsets failed on a batch without words)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (serve_text's ops)

    serve = tf.saved_model.load(str(qa[2]["savedmodel"] / "1")).signatures["serve_text"]
    for given, message in ((dict(question=["Who?", "Where?"], context=[CONTEXT]), "the same number of texts"),
                           (dict(question="Who?", context=[CONTEXT]), "question: must be a \\[batch\\] string"),
                           (dict(question=[["Who?", "Where?"]], context=[[CONTEXT, CONTEXT]]), "not 2-D"),
                           (dict(question=[["Who?"], ["Where?"]], context=[[CONTEXT], [CONTEXT]]), "not 2-D"),
                           (dict(question=["Who?"], context=[b"Jean \xff lives."]), "context: holds bytes that "
                            "are not UTF-8"),
                           (dict(question=[b"\xed\xa0\x80?"], context=[CONTEXT]), "question: holds bytes")):
        for _ in range(10):  # (the checks' order is decided at run time: twice a reduction's error came first)
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                serve(**{k: tf.constant(v) for k, v in given.items()})
    for context in ("", "   "):
        out = serve(question=tf.constant(["Who?"]), context=tf.constant([context]))
        assert (int(out["start"][0]), int(out["end"][0])) == (0, 0), context


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def ner(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"ner-{request.param}")
    src, model_dir = _family(tmp, request.param, "TokenClassification", labelled({}, NER))
    text = tmp / "ner.tflite"
    assert export_tflite(model_dir, text, with_tokenizer=True)["ok"]
    int8 = tmp / "ner-int8.tflite"
    report = export_tflite(model_dir, int8, with_tokenizer=True, quantize="dynamic-int8")
    assert report["evaluation"]["ids_equal_python_tokenizer"]
    return src, model_dir, text, int8


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_pipeline_on_a_text_in_tflite_equals_transformers(ner, strategy):
    src, _, text, _ = ner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the "fallback heuristic" warning, Transformers' and kzoo's)
        ours = kzoo.pipeline("ner", text, aggregation_strategy=strategy, ignore_labels=[])(NER_TEXTS)
    theirs = reference("token-classification", src, NER_TEXTS, aggregation_strategy=strategy, ignore_labels=[])
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert [{k: v for k, v in e.items() if k != "score"} for e in a] == \
            [{k: (v.item() if hasattr(v, "item") else v) for k, v in e.items() if k != "score"} for e in b]
        assert max(abs(x["score"] - float(y["score"])) for x, y in zip(a, b)) < 1e-4


def test_token_classification_signature_outputs(ner):
    """Per token: label ids and names, scores, and the token's (and its word's) characters in the text,
    (0, 0) for special tokens and padding; dynamic int8 agrees on the labels."""
    _, model_dir, text, int8 = ner
    out = kzoo.runtime.load(text)(NER_TEXTS)
    names = [NER[i] for i in range(len(NER))]
    mask = out["padding_mask"].astype(bool)
    assert out["scores"].shape == (*mask.shape, len(NER)) and out["offset_mapping"].shape == (*mask.shape, 2)
    np.testing.assert_allclose(out["scores"].sum(-1)[mask], 1, atol=1e-5)
    assert [[names[i] for i in row] for row in out["label_ids"]] == [[str(x, "utf-8") if isinstance(x, bytes) else x
                                                                     for x in row] for row in out["labels"]]
    assert not out["offset_mapping"][~mask].any()
    tok = kzoo.load_tokenizer(model_dir)
    want = tok(NER_TEXTS, return_offsets_mapping=True)
    width = want["token_ids"].shape[1]
    np.testing.assert_array_equal(out["offset_mapping"][:, :width], want["offset_mapping"])
    words = out["word_offsets"][mask]
    spans = out["offset_mapping"][mask]
    assert np.all((words[:, 0] <= spans[:, 0]) & (spans[:, 1] <= words[:, 1]))
    quantized = kzoo.runtime.load(int8)(NER_TEXTS)
    assert np.mean(quantized["label_ids"][mask] == out["label_ids"][mask]) > 0.9


def test_token_classification_where_the_graph_gives_a_word_span(ner):
    """A word whose offsets the graph cannot count (ALBERT's `` / '' rules; XLM-R's NFD marks, one composed
    and one not: which is which the pieces cannot tell) gives each of its tokens the word's span: the
    pipeline groups them as one word, and an unknown piece there reads "<unk>", not the whole word's text
    again."""
    _, _, text, _ = ner
    sample = "jean ``lives\u2603'' near the cafe\u0301x\u0301\u2603 in paris"  # (☃: an unknown piece)
    out = kzoo.runtime.load(text)([sample])
    mask = out["padding_mask"][0].astype(bool) & (out["offset_mapping"][0, :, 1] > 0)
    spans = [tuple(s) for s in out["offset_mapping"][0][mask].tolist()]
    counted = {s for s, w in zip(spans, out["word_offsets"][0][mask].tolist()) if spans.count(s) > 1 and s == tuple(w)}
    assert counted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the "fallback heuristic" warning)
        pipe = kzoo.pipeline("ner", text, ignore_labels=[])
        first = pipe(sample, aggregation_strategy="first")
        tokens = pipe(sample)
    for lo, hi in counted:  # (one word: one entity holds it, alone or grouped with its neighbours)
        assert sum(e["start"] < hi and lo < e["end"] for e in first) == 1, ((lo, hi), first)
    assert len(tokens) == int(mask.sum())
    words = {(m.start(), m.end()) for m in re.finditer(r"\S+", sample)}
    shared = [t for t in tokens if (t["start"], t["end"]) in words and len(sample[t["start"]:t["end"]]) > 1 and
              sum((u["start"], u["end"]) == (t["start"], t["end"]) and u["word"] != "\u2581" for u in tokens) > 1]
    unknown = [t for t in shared if t["word"] == pipe.tokenizer.convert_ids_to_tokens([pipe.tokenizer.unk_token_id])[0]]
    assert unknown and all(sample[t["start"]:t["end"]] != t["word"] for t in shared)
