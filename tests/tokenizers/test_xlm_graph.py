"""XLM's tokenizer inside a TF graph (kzoo.tokenizers.moses_graph: what a text-in export runs) against
Transformers 5.23's XLMTokenizer, id for id: the XLM tokenizer test dirs' texts, random multilingual and
adversarial strings, and strings drawn from the characters Moses' rules are about (quotes, apostrophes,
dots, commas, no-break spaces, "DOTMULTI", final sigmas, nonbreaking prefixes, added tokens)."""

import random

import numpy as np
import pytest
import tensorflow as tf

from kzoo.converters.xlm_tokenizer import from_hf_dir as xlm_from_hf_dir
from kzoo.errors import TokenizerError
from test_xlm_bpe import TEXTS, dirs, get  # noqa: F401  (the dirs fixture)
from text_strategies import sample_texts

pytest.importorskip("transformers")

PIECES = ["'", '"', ".", ",", " ", " ", " ", "\xa0", "(", ")", "`", "‘", "’", "a", "A", "b", "1", "2", "%", ":", ";",
          "?", "!", "«", "»", "n", "º", "C", "c", "m", "–", "—", "…", "。", "．", "\t", "Σ", "Α", "σ", "\u0301", "DOT",
          "MULTI", "-", "$", "€", "<", ">", "/", "@", "#", "Mr", "No", "pp", "Art", "s", "t", "<special1>", "<s>",
          "</s>", "ΑΣ", "\u0345", "İ", "，", "ß", "ǅ", "Ⅻ", "\u200b", "\ufeff", "x", "y", "''", "..", "...", "„", "“",
          "”", "´", "‚", "\r", "\n", "i.e.", "e.g", "U.S.", "n't", "'s", "'ll", "5,000", "\u3000"]


def moses_strings(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25))) for _ in range(n)]


def differences(hf, ours, texts):
    got = ours.tf_tokenize(tf.constant(texts)).to_list()
    want = [hf(text, add_special_tokens=False)["input_ids"] for text in texts]
    return [(text, hf.convert_ids_to_tokens(a), hf.convert_ids_to_tokens(b)) for text, a, b in zip(texts, want, got)
            if a != b]


@pytest.mark.parametrize("name", ["enfr", "multi", "legacy", "split"])
def test_graph_ids_equal_transformers(dirs, name):
    hf, _, ours = get(dirs, name)  # (the tokenizer re-loaded from a kzoo model dir)
    texts = (TEXTS + sample_texts(150, seed=21) + sample_texts(150, seed=22, adversarial=True)
             + moses_strings(600, seed=hash(name) % 1000))
    assert differences(hf, ours, texts) == []


def test_graph_ids_equal_transformers_text_by_text(dirs):
    """One text a call, as a phone calls it: the graph skips the rules (and groups of rules) whose characters
    a batch does not hold, so here each text skips its own."""
    hf, _, ours = get(dirs, "enfr")
    texts = TEXTS[:20] + moses_strings(200, seed=5)
    assert [d for text in texts for d in differences(hf, ours, [text])] == []


def test_batches_without_words(dirs):
    """A batch where no text leaves a word to BPE (empty, spaces, what Moses removes, only an added token; no
    text at all) gives Transformers' empty rows, not a shape error from the merge loop."""
    hf, _, ours = get(dirs, "enfr")
    for batch in ([""], [" ", "\u200b\x00"], ["<special1>", "<s></s>"], []):
        got = ours.tf_tokenize(tf.constant(batch, tf.string)).to_list()
        assert got == [hf(t, add_special_tokens=False)["input_ids"] for t in batch], batch


def test_graph_encode_equals_python(dirs):
    _, _, ours = get(dirs, "enfr")
    texts, pairs = TEXTS[:12], TEXTS[12:24]
    for length in (5, 9, 24, 64):
        graph = ours.tf_encode(tf.constant(texts), length, pairs=tf.constant(pairs), truncation="longest_first")
        python = ours(texts, pairs, max_length=length, truncation="longest_first", padding="max_length")
        for key in ("token_ids", "padding_mask", "segment_ids", "lang_ids"):
            np.testing.assert_array_equal(graph[key].numpy(), python[key], err_msg=key)
        graph = ours.tf_encode(tf.constant(texts), length)
        python = ours(texts, max_length=length, truncation=True, padding="max_length")
        np.testing.assert_array_equal(graph["token_ids"].numpy(), python["token_ids"])
        lengths = [len(ours.encode(t)) for t in texts]
        np.testing.assert_array_equal(graph["truncated"].numpy(), [n > length for n in lengths])
    assert ours.tf_tokenize(tf.constant("Hello world")).numpy().tolist() == ours.encode("Hello world", add_special_tokens=False)


def test_what_the_graph_cannot_do_is_refused(dirs):
    _, _, custom = get(dirs, "custom")  # (a single_word added token)
    assert "single_word" in custom.graph_refusal()
    with pytest.raises(TokenizerError, match="single_word.*'\\[X\\]'"):
        custom.tf_tokenize(tf.constant(["x"]))
    with pytest.raises(TokenizerError, match="pretokenize_by_lang"):
        xlm_from_hf_dir(dirs["enfr"], pretokenize_by_lang=True).tf_tokenize(tf.constant(["x"]))
    _, _, ours = get(dirs, "enfr")
    assert ours.graph_refusal() is None
    with pytest.raises(TokenizerError, match="offsets"):  # (a question and context pair only)
        ours.tf_encode(tf.constant(["x"]), 8, offsets=True)
    with pytest.raises(TokenizerError, match="2 texts but 1 pairs"):
        ours.tf_encode(tf.constant(["x", "y"]), 8, pairs=tf.constant(["z"]))


def test_graph_question_answering_features_equal_word_windows(dirs):
    """A question and context pair with offsets: the first window of `word_windows` (Transformers' SQuAD
    features for a Python tokenizer: question cut to 64 tokens, each context word tokenized alone), each
    context token with its word's characters."""
    _, _, ours = get(dirs, "enfr")
    contexts = [t for t in TEXTS + sample_texts(60, seed=23, adversarial=True) + moses_strings(60, seed=24)
                if t.split()]
    questions = [TEXTS[i % 20] * (1 + 3 * (i % 7 == 0)) for i in range(len(contexts))]  # (some over 64 tokens)
    length = 80
    graph = ours.tf_encode(tf.constant(questions), length, pairs=tf.constant(contexts), offsets=True)
    for r, (question, context) in enumerate(zip(questions, contexts)):
        split = ours.word_windows(question, context, length, length)
        if not split.windows:  # (words without tokens: Moses leaves nothing of "\u200b")
            assert not (graph["sequence_ids"].numpy()[r] == 1).any()
            continue
        row, first, at = split.windows[0]
        n = len(row.ids)
        assert graph["token_ids"].numpy()[r, :n].tolist() == row.ids, context
        assert graph["padding_mask"].numpy()[r].sum() == n
        spans = graph["word_offsets"].numpy()[r, first:n - 1].tolist()
        assert spans == [list(w) for w in split.window_words(row, first, at)], context
        assert (graph["sequence_ids"].numpy()[r, first:n - 1] == 1).all()
