"""The SentencePiece tokenizer's offsets and text pairs inside the graph (`tf_tokenize_with_offsets`,
`tf_encode(pairs=, offsets=True)`: what the token-classification and question-answering text signatures
run) against Transformers' tokenizer (offset_mapping, only_second truncation, sequence_ids).

In-graph offsets are counted from the pieces (the op gives none): each token's span is Transformers' or,
in a word whose normalisation the count cannot follow, the whole word's (the documented fallback), and on
text without such words (NFD compositions included) they are all Transformers'.
"""

import re
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

import spm_fixtures
import text_strategies
from kzoo.converters.tokenizers import from_hf_dir
from kzoo.errors import TokenizerError

# Text whose normalisation keeps every character one character (case, accents, punctuation, digits,
# added tokens): every in-graph offset must be Transformers'.
PLAIN = ["Hello world, it's me.", "  leading  spaces\tand tabs\n", "x , y", "café naïve über Ærø", "",
         "Paris is the capital of France. Berlin, Madrid; Rome!", "don't (stop) 1,000.50 $5 #tag @user",
         "{mask} after {mask}x and x{mask}"]


@pytest.fixture(scope="module", params=["albert", "xlm-roberta"])
def tokenizers(request, tmp_path_factory):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp(request.param)
    make = spm_fixtures.make_xlmr_tokenizer_dir if request.param == "xlm-roberta" else \
        spm_fixtures.make_albert_tokenizer_dir
    path = make(tmp, with_tokenizer_json=True)
    hf = AutoTokenizer.from_pretrained(path)
    assert hf.is_fast
    return hf, from_hf_dir(path, request.param)


def _words(text):
    return {(m.start(), m.end()) for m in re.finditer(r"[^\t\n\v\f\r ]+", text)}


def _exact_or_word(text, ours, theirs):
    """How many spans are exact; the others must be a word (between ASCII whitespace) holding Transformers'."""
    words, exact = _words(text), 0
    for a, b in zip(ours, map(tuple, theirs)):
        exact += a == b
        assert a == b or (a in words and a[0] <= b[0] and b[1] <= a[1]), (text, a, b)
    return exact


def _graph_offsets(kz, texts):
    ids, starts, ends, word_starts, word_ends = kz.tf_tokenize_with_offsets(tf.constant(texts))
    for text, *rows in zip(texts, starts.to_list(), ends.to_list(), word_starts.to_list(), word_ends.to_list()):
        words = _words(text)
        for start, end, word_start, word_end in zip(*rows):  # each token's word: the one holding its span
            assert (word_start, word_end) in words and word_start <= start and end <= word_end, (text, start, end)
    return ids.to_list(), [list(zip(s, e)) for s, e in zip(starts.to_list(), ends.to_list())]


def test_graph_offsets_are_transformers_or_the_word(tokenizers):
    hf, kz = tokenizers
    texts = spm_fixtures.held_out_texts(hf.mask_token)
    ids, spans = _graph_offsets(kz, texts)
    want = hf(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == want["input_ids"]
    exact = sum(_exact_or_word(*row) for row in zip(texts, spans, want["offset_mapping"]))
    assert exact > sum(map(len, ids)) / 2  # (the fallback is not all there is)


def test_graph_offsets_on_plain_text_are_transformers(tokenizers):
    """Every token's span, but in words with an unknown piece (the tiny test vocabularies lack letters such
    as "H"; there the word's span is all the graph can count)."""
    hf, kz = tokenizers
    assert _exact_but_in_unknown_words(hf, kz, [t.format(mask=hf.mask_token) for t in PLAIN]) > 60


def test_graph_offsets_on_decomposed_text_are_transformers(tokenizers):
    """NFD text (macOS file names, some keyboards): XLM-R's charsmap composes "e" + U+0301 into "é" (a
    rule on a sequence, whose length the graph reads off the word's pieces), ALBERT's drops the mark.
    Every token's span is Transformers', one such grapheme in a word or several."""
    hf, kz = tokenizers
    texts = [unicodedata.normalize("NFD", t) for t in PLAIN if t != unicodedata.normalize("NFD", t)]
    texts += ["e\u0301te\u0301 a\u0300 la\u0300 ne\u0301e\u0300, cafe\u0301s", "nai\u0308ve\u0301 o\u0308"]
    assert _exact_but_in_unknown_words(hf, kz, texts) > 20
    decomposed = "e\u0301te\u0301 a\u0300 la\u0300 cafe\u0301s"  # (no unknown piece: every token checked)
    assert _exact_but_in_unknown_words(hf, kz, [decomposed]) == len(hf(decomposed, add_special_tokens=False)["input_ids"])
    # one mark composed and one not: the pieces cannot tell which, so the word's span (not a guess)
    _, spans = _graph_offsets(kz, ["cafe\u0301x\u0301"])
    assert kz.family == "albert" or set(spans[0]) == {(0, 7)}, spans


def _exact_but_in_unknown_words(hf, kz, texts):
    """Asserts each token's in-graph span is Transformers' but in words with an unknown piece; how many."""
    ids, spans = _graph_offsets(kz, texts)
    want = hf(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == want["input_ids"]
    checked = 0
    for text, row, got, theirs in zip(texts, ids, spans, want["offset_mapping"]):
        unknown = [s for i, s in zip(row, theirs) if i == hf.unk_token_id]
        for ours, their in zip(got, map(tuple, theirs)):
            word = next(w for w in _words(text) if w[0] <= their[0] and their[1] <= w[1])
            if not any(word[0] <= u[0] < word[1] for u in unknown):
                assert ours == their, (text, ours, their)
                checked += 1
    return checked


@pytest.mark.parametrize("adversarial", [False, True])
def test_graph_offsets_on_mixed_scripts(tokenizers, adversarial):
    """Scripts, marks, NFD, non-ASCII spaces, emoji, compatibility characters: each character's normalized
    length comes from the folded charsmap's table, a grapheme a rule on a sequence rewrote (XLM-R's NFD
    compositions) from the word's pieces. The word's span is left only to words with an unknown piece
    (the tiny vocabularies lack most of these characters) and ALBERT's `` / '' quotes."""
    hf, kz = tokenizers
    texts = text_strategies.sample_texts(300, seed=21 + adversarial, adversarial=adversarial)
    ids, spans = _graph_offsets(kz, texts)
    want = hf(texts, add_special_tokens=False, return_offsets_mapping=True)
    same = [k for k in range(len(texts)) if ids[k] == want["input_ids"][k]]  # (documented id differences aside)
    assert len(same) > 0.95 * len(texts)
    exact = sum(_exact_or_word(texts[k], spans[k], want["offset_mapping"][k]) for k in same)
    share = exact / sum(len(ids[k]) for k in same)
    assert share > (0.97 if kz.family == "albert" else 0.3), share  # measured 0.99 / 0.49-0.64
    for k in same:
        unknown = [s for i, s in zip(ids[k], want["offset_mapping"][k]) if i == hf.unk_token_id]
        for ours, theirs in zip(spans[k], map(tuple, want["offset_mapping"][k])):
            if ours != theirs:  # (then `ours` is the word: _exact_or_word)
                word = texts[k][ours[0]:ours[1]]
                assert any(ours[0] <= u[0] < ours[1] for u in unknown) or "``" in word or "''" in word, (word, theirs)


@pytest.mark.parametrize("room", [1, 6, 60])
def test_graph_pairs_are_transformers_only_second(tokenizers, room):
    """tf_encode(questions, pairs=contexts): Transformers' pair template, truncation="only_second" (the
    context cut to the room the longest question leaves), offsets in each text, sequence_ids; ALBERT's
    pair in segment 1."""
    hf, kz = tokenizers
    questions = ["Where is it?", "Who wrote the book about the old sea", "why"]
    contexts = ["It is in Paris, near the river.", "The old man and the sea was written by Hemingway in 1951.", ""]
    length = max(len(hf(q)["input_ids"]) for q in questions) + 1 + (kz.template == "roberta") + room
    got = {k: v.numpy() for k, v in kz.tf_encode(tf.constant(questions), length, pairs=tf.constant(contexts),
                                                 offsets=True).items()}
    want = hf(questions, contexts, truncation="only_second", max_length=length, padding="max_length",
              return_offsets_mapping=True)
    np.testing.assert_array_equal(got["token_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["padding_mask"], want["attention_mask"])
    sequence_ids = [[-1 if s is None else s for s in want.sequence_ids(i)] for i in range(len(questions))]
    np.testing.assert_array_equal(got["sequence_ids"], sequence_ids)
    for i, texts in enumerate(zip(questions, contexts)):
        for part, text in enumerate(texts):
            tokens = np.asarray(sequence_ids[i]) == part
            theirs = np.asarray(want["offset_mapping"][i])[tokens]
            _exact_or_word(text, map(tuple, got["offset_mapping"][i][tokens].tolist()), theirs.tolist())
    assert not got["offset_mapping"][np.asarray(sequence_ids) < 0].any()  # special tokens, padding: (0, 0)
    if kz.template == "bert":  # [CLS] A [SEP] B [SEP]: what follows the first [SEP] is segment 1
        ids, position = np.asarray(want["input_ids"]), np.arange(length)
        first = np.argmax(ids == kz.sep_token_id, axis=1)[:, None] + 1
        second = (position >= first) & (position < np.sum(want["attention_mask"], axis=1)[:, None])
        np.testing.assert_array_equal(got["segment_ids"], second.astype(int))
    else:
        assert not got["segment_ids"].any()
    full = [len(hf(q, c)["input_ids"]) for q, c in zip(questions, contexts)]
    np.testing.assert_array_equal(got["truncated"], [int(n > length) for n in full])


def test_a_question_longer_than_the_room_is_cut_leaving_one_context_token(tokenizers):
    """(Transformers raises there; a signature cannot, so the question gives way too, and `truncated` says so.)"""
    hf, kz = tokenizers
    question, context = "Who wrote the book about the old sea and the man", "Hemingway wrote it"
    got = {k: v.numpy()[0] for k, v in kz.tf_encode(tf.constant([question]), 8, pairs=tf.constant([context]),
                                                     offsets=True).items()}
    assert got["truncated"] == 1 and list(got["sequence_ids"]).count(1) == 1 and got["padding_mask"].all()
    first_context = hf(context, add_special_tokens=False)["input_ids"][0]
    assert got["token_ids"][list(got["sequence_ids"]).index(1)] == first_context
    with pytest.raises(TokenizerError, match="1 texts but 2 pairs"):  # (not a gather error deep inside)
        kz.tf_encode(tf.constant([question]), 8, pairs=tf.constant([context, context]), offsets=True)


def test_graph_offsets_and_pairs_in_tflite(tokenizers):
    """The same graph converted to TFLite (builtins and tf-text's kernels: ByteSplitWithOffsets for the
    characters) gives what it gives in TF."""
    import tensorflow_text
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    hf, kz = tokenizers
    spec = tf.TensorSpec([None], tf.string)

    @tf.function(input_signature=[spec, spec])
    def encode(questions, contexts):
        return kz.tf_encode(questions, 24, pairs=contexts, offsets=True)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([encode.get_concrete_function()], kz)
    converter.allow_custom_ops = True
    interpreter = InterpreterWithCustomOps(model_content=converter.convert(),
                                           custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
    runner = interpreter.get_signature_runner()
    questions = ["Where is it?", "wer?", "Ωmega café"]
    contexts = ["It is in Paris, near the river Seine, which flows through the city.", "Berlin", "ﬁne ok"]
    got = runner(questions=np.array(questions, dtype=object), contexts=np.array(contexts, dtype=object))
    want = encode(tf.constant(questions), tf.constant(contexts))
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value.numpy(), err_msg=name)


@pytest.mark.parametrize("length", [10, 16, 64])
def test_graph_pairs_longest_first_is_transformers(tokenizers, length):
    """tf_encode(truncation="longest_first"): what training on text pairs feeds (Transformers' truncation=True)."""
    hf, kz = tokenizers
    texts = spm_fixtures.held_out_texts(hf.mask_token)[:40]
    firsts, seconds = texts[::2], texts[1::2]
    got = kz.tf_encode(tf.constant(firsts), length, pairs=tf.constant(seconds), truncation="longest_first")
    want = hf(firsts, seconds, truncation=True, max_length=length, padding="max_length")
    np.testing.assert_array_equal(got["token_ids"].numpy(), want["input_ids"])
    np.testing.assert_array_equal(got["padding_mask"].numpy(), want["attention_mask"])


@pytest.mark.parametrize("length", [8, 48])
def test_graph_words_and_their_labels(tokenizers, length):
    """tf_encode_words: Transformers' is_split_into_words ids, and each word's tag on its first token
    (-100 elsewhere), as its token-classification examples align them."""
    hf, kz = tokenizers
    words = [["Jean-Pierre", "lives", "in", "Paris", ","], ["Marie", "", "Curie", "à", "Varsovie", "!"], ["x"]]
    tags = [[1, 0, 0, 2, 0], [1, 0, 3, 0, 2, 0], [4]]
    got = kz.tf_encode_words(tf.ragged.constant(words), length, tags=tf.ragged.constant(tags))
    want = hf(words, is_split_into_words=True, truncation=True, max_length=length, padding="max_length")
    np.testing.assert_array_equal(got["token_ids"].numpy(), want["input_ids"])
    labels = []
    for i, row in enumerate(tags):
        labels.append([])
        previous = None
        for w in want.word_ids(i):  # (first token of each word only)
            labels[-1].append(row[w] if w is not None and w != previous else -100)
            previous = w
    np.testing.assert_array_equal(got["labels"].numpy(), labels)
