"""question-answering against Transformers 4.57's QuestionAnsweringPipeline algorithm (tests/qa_reference.py:
5.23 removed the pipeline) on the PyTorch reference: the same answers, character offsets and scores (1e-4),
over contexts split into several windows; XLM (a Python tokenizer) by 4.57's slow path, whole words."""

import json

import pytest

import kzoo
from kzoo.cli import main
from kzoo.pipelines import PipelineError
from qa_reference import reference_qa
from reference import TINY_ALBERT, TINY_XLMR, lively, loaded, model_with_tokenizer
from spm_fixtures import make_albert_tokenizer_dir, make_xlmr_tokenizer_dir
from xlm_fixtures import xlm_model_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTION = "Where does Jean live?"
CONTEXT = ("Jean-Pierre lives in Paris, France, since 1999. He works at the café near the Seine, with 1,000 "
           "others, and   spends weekends in Lyon.")


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def qa(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "albert":
        cls, config, tok = "AlbertForQuestionAnswering", TINY_ALBERT, make_albert_tokenizer_dir(tmp, True)
    else:
        cls, config, tok = "XLMRobertaForQuestionAnswering", TINY_XLMR, make_xlmr_tokenizer_dir(tmp)
    return model_with_tokenizer(tmp, cls, {**config, "max_position_embeddings": 130}, tok, weights=lively)


def assert_same(ours, theirs):
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b)
        return
    assert (ours["answer"], ours["start"], ours["end"]) == (theirs["answer"], theirs["start"], theirs["end"])
    assert abs(ours["score"] - theirs["score"]) < 1e-4


@pytest.mark.parametrize("kwargs", [
    dict(max_seq_len=32, doc_stride=8),
    dict(max_seq_len=64, doc_stride=16, top_k=3),
    dict(max_seq_len=30, doc_stride=5, top_k=5, handle_impossible_answer=True),
    dict(max_seq_len=40, doc_stride=10, top_k=2, align_to_words=False, max_answer_len=4),
    dict(top_k=2),  # (one window: the defaults, max_seq_len the model's 128 tokens)
], ids=["windows", "top3", "impossible", "tokens", "defaults"])
def test_question_answering_equals_transformers_algorithm(qa, kwargs):
    src, out = qa
    ours = kzoo.pipeline("question-answering", loaded(out))(question=QUESTION, context=CONTEXT, **kwargs)
    theirs = reference_qa(src, QUESTION, CONTEXT, **{"max_seq_len": 128, **kwargs})
    assert_same(ours, theirs)
    for answer in ours if isinstance(ours, list) else [ours]:
        assert CONTEXT[answer["start"]:answer["end"]] == answer["answer"]


def test_question_answering_input_forms(qa):
    src, out = qa
    pipe = kzoo.pipeline("question-answering", loaded(out), max_seq_len=48, doc_stride=12)
    want = reference_qa(src, QUESTION, CONTEXT, max_seq_len=48, doc_stride=12)
    assert_same(pipe(QUESTION, CONTEXT), want)
    assert_same(pipe({"question": QUESTION, "context": CONTEXT}), want)
    both = pipe(question=[QUESTION, "Who works?"], context=CONTEXT)
    assert_same(both[0], want)
    assert_same(both[1], reference_qa(src, "Who works?", CONTEXT, max_seq_len=48, doc_stride=12))
    examples = [{"question": q, "context": CONTEXT} for q in (QUESTION, "Who works?", QUESTION)]
    for size in (1, 2):  # (a stream: one result per example, also from a chunk of one)
        streamed = list(kzoo.pipeline("question-answering", loaded(out), max_seq_len=48, doc_stride=12,
                                      batch_size=size)(iter(examples)))
        assert len(streamed) == 3 and all(isinstance(r, dict) for r in streamed)
        assert_same(streamed[2], want)


def test_question_answering_errors(qa):
    pipe = kzoo.pipeline("question-answering", loaded(qa[1]))
    with pytest.raises(PipelineError, match="needs question= and context="):
        pipe(question=QUESTION)
    with pytest.raises(PipelineError, match="`context` must be a non-empty str"):
        pipe(question=QUESTION, context="")
    with pytest.raises(PipelineError, match="`question` must be a str or a list of str, got int"):
        pipe(question=1, context=CONTEXT)
    with pytest.raises(PipelineError, match="stride 20 must be less than the room"):
        pipe(question=QUESTION, context=CONTEXT, max_seq_len=40, doc_stride=20)
    with pytest.raises(PipelineError, match="no room for the second"):
        pipe(question=QUESTION * 3, context=CONTEXT, max_seq_len=20, doc_stride=2)
    with pytest.raises(PipelineError, match="top_k must be a whole number >= 1"):
        pipe(question=QUESTION, context=CONTEXT, top_k=0)


def test_cli_qa_json(qa, capsys):
    src, out = qa
    assert main(["qa", str(out), "--question", QUESTION, "--context", CONTEXT, "--max-seq-len", "32",
                 "--doc-stride", "8", "--top-k", "2", "--json"]) == 0
    assert_same(json.loads(capsys.readouterr().out),
                reference_qa(src, QUESTION, CONTEXT, max_seq_len=32, doc_stride=8, top_k=2))


@pytest.mark.parametrize("max_length, stride", [(30, 4), (32, 8), (40, 0), (200, 8)])
def test_tokenizer_windows_are_transformers_overflowing_tokens(qa, max_length, stride):
    import transformers

    src, out = qa
    theirs = transformers.AutoTokenizer.from_pretrained(str(src))(
        QUESTION, CONTEXT, truncation="only_second", max_length=max_length, stride=stride,
        return_overflowing_tokens=True, return_offsets_mapping=True)
    windows = kzoo.load_tokenizer(out).windows(QUESTION, CONTEXT, max_length, stride)
    assert [row.ids for row, _, _ in windows] == theirs["input_ids"]
    for (row, first, _), offsets, sequence in zip(windows, theirs["offset_mapping"],
                                                  [theirs.sequence_ids(i) for i in range(len(windows))]):
        assert first == sequence.index(1)
        assert [tuple(s) for s in row.spans[first:-1]] == [tuple(o) for o in offsets[first:-1]]


def test_batch_size_splits_windows_not_answers(qa):
    pipe = kzoo.pipeline("question-answering", loaded(qa[1]), max_seq_len=32, doc_stride=8, top_k=3)
    questions = [QUESTION, "Who works?", "Where is Lyon?"]
    assert_same(pipe(question=questions, context=CONTEXT, batch_size=1),
                pipe(question=questions, context=CONTEXT, batch_size=64))


@pytest.fixture(scope="module")
def xlm_qa(tmp_path_factory):
    return xlm_model_dir(tmp_path_factory.mktemp("xlm_qa"), head="XLMForQuestionAnsweringSimple")


@pytest.mark.parametrize("kwargs", [
    dict(max_seq_len=32, doc_stride=8),
    dict(max_seq_len=64, doc_stride=16, top_k=3),
    dict(max_seq_len=30, doc_stride=5, top_k=5, handle_impossible_answer=True),
    dict(max_seq_len=40, doc_stride=30, top_k=2, max_answer_len=4, max_question_len=3),
    dict(max_seq_len=96, top_k=2),  # (one window: the model's longest input)
], ids=["windows", "top3", "impossible", "cut-question", "one-window"])
def test_xlm_question_answering_equals_the_slow_path(xlm_qa, kwargs):
    """Whole words: the answer is the words joined by a space, start/end where they begin and end."""
    src, out = xlm_qa
    ours = kzoo.pipeline("question-answering", loaded(out))(question=QUESTION, context=CONTEXT, **kwargs)
    theirs = reference_qa(src, QUESTION, CONTEXT, **kwargs)
    assert_same(ours, theirs)
    for answer in ours if isinstance(ours, list) else [ours]:
        assert " ".join(CONTEXT[answer["start"]:answer["end"]].split()) == answer["answer"]


def test_xlm_question_answering_on_a_text_in_tflite(xlm_qa, tmp_path):
    """Question and context strings into XLM's text-in .tflite (its Moses + BPE tokenizer inside, each context
    word on its own; a SavedModel's serve_text is the same graph): the answer of Transformers' slow path on
    one window, whole words."""
    from kzoo.export import export_tflite

    src, out = xlm_qa
    path = tmp_path / "qa.tflite"
    report = export_tflite(out, path, with_tokenizer=True)
    assert report["ok"] and report["evaluation"]["ids_equal_python_tokenizer"], report
    assert report["evaluation"]["offsets_equal_python_tokenizer"] == 1.0
    questions = [QUESTION, "Who works?", "Where, «exactly»?"]
    contexts = [CONTEXT[:47], CONTEXT[48:], "He works   at the café\tnear the Seine.\nSince 1999."]  # (one window each)
    ours = kzoo.pipeline("question-answering", path)(question=questions, context=contexts)
    for question, context, answer in zip(questions, contexts, ours):
        assert_same(answer, reference_qa(src, question, context, max_seq_len=96))


def test_xlm_question_answering_on_an_export_and_its_errors(xlm_qa, tmp_path, capsys):
    from kzoo.export import export_tflite

    src, out = xlm_qa
    assert export_tflite(out, tmp_path / "qa.tflite")["ok"]
    ours = kzoo.pipeline("question-answering", tmp_path / "qa.tflite")(
        question=[QUESTION, "Who works?"], context=CONTEXT, max_seq_len=40, doc_stride=12, top_k=2)
    assert_same(ours[0], reference_qa(src, QUESTION, CONTEXT, max_seq_len=40, doc_stride=12, top_k=2))
    assert_same(ours[1], reference_qa(src, "Who works?", CONTEXT, max_seq_len=40, doc_stride=12, top_k=2))
    assert main(["qa", str(tmp_path / "qa.tflite"), "--question", QUESTION, "--context", CONTEXT, "--max-seq-len",
                 "40", "--doc-stride", "30", "--max-question-len", "3", "--json"]) == 0
    assert_same(json.loads(capsys.readouterr().out),
                reference_qa(src, QUESTION, CONTEXT, max_seq_len=40, doc_stride=30, max_question_len=3))
    pipe = kzoo.pipeline("question-answering", loaded(out))
    assert main(["qa", str(out), "--question", QUESTION, "--context", CONTEXT, "--max-seq-len", "40", "--lang", "fr",
                 "--top-k", "3", "--json"]) == 0
    in_french = pipe(question=QUESTION, context=CONTEXT, max_seq_len=40, lang="fr", top_k=3)
    assert json.loads(capsys.readouterr().out) == in_french != pipe(question=QUESTION, context=CONTEXT, max_seq_len=40,
                                                                    top_k=3)
    with pytest.raises(PipelineError, match="doc_stride must be >= 1 with XLM's tokenizer, got 0"):
        pipe(question=QUESTION, context=CONTEXT, doc_stride=0)
    with pytest.raises(PipelineError, match="leave no room for the context in max_length 8"):
        pipe(question=QUESTION, context=CONTEXT, max_seq_len=8, doc_stride=2)
    with pytest.raises(PipelineError, match="the context holds no words, only whitespace"):
        pipe(question=QUESTION, context=" \t ")
