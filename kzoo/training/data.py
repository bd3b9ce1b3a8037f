"""Training data: the files `kzoo train` reads, checked line by line, and the batches built from them.

    classification        JSONL {"text", "text_pair"?, "label"}: a label name, an id, a float for
                          regression, a list of names / ids for multi-label
    token classification  JSONL {"tokens": [...], "tags": [...]} (names or ids), or CoNLL columns (a
                          token per line, its tag in the last column, a blank line between sentences)
    question answering    SQuAD v1.1 / v2.0 JSON ({"data": [{"paragraphs": [{"context", "qas": [{"id",
                          "question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}), or
                          JSONL rows as the datasets library gives SQuAD ({"id", "question", "context",
                          "answers": {"text": [...], "answer_start": [...]}})

A bad line is a one-line DataError naming the file, the line and the problem; so is an unknown label and
a file without examples. Batches keep the file's order (shuffled per epoch unless told not to), each padded
to the smallest length bucket that holds its longest row: a handful of shapes for XLA to compile.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

from kzoo.errors import KzooError

LENGTH_BUCKETS = (32, 64, 128, 256, 512)  # (then the model's longest input)


class DataError(KzooError):
    """A one-line problem with a training or evaluation file."""


@dataclasses.dataclass
class Examples:
    """What a file holds: texts (and pairs) or word lists, and their labels (an int or float array, or per
    word a list of ints)."""

    path: str
    texts: list
    pairs: list | None
    labels: list
    words: bool = False  # texts are lists of words (token classification)
    ids: list | None = None  # question answering: the questions' ids

    def __len__(self):
        return len(self.texts)


def read(path, task, names, problem_type=None) -> Examples:
    """The examples of `path` for a `task` model whose classes are `names`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: " + ("a directory, not a data file (one file: .jsonl, .csv, .tsv or CoNLL)"
                                       if path.is_dir() else "no such file"))
    if task == "token_classifier":
        examples = _read_conll(path, names) if path.suffix.lower() not in (".jsonl", ".json") and not \
            _looks_like_json(path) else _read_tagged_jsonl(path, names)
    elif task == "classifier":
        examples = _read_classification(path, names, problem_type)
    elif task == "question_answering":
        examples = _read_squad(path)
    else:
        raise DataError(f"kzoo train trains classifier, token_classifier and question_answering models; this one is "
                        f"a {task!r} model")
    if not examples.texts:
        raise DataError(f"{path}: no examples")
    return examples


def _looks_like_json(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _objects(path):
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(item, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        yield number, item


def _class_id(value, names, where):
    """A label (a name or an id) as an id of `names`."""
    if isinstance(value, str):
        if value not in names:
            raise DataError(f"{where}: unknown label {value!r} (the model's labels: {', '.join(names)})")
        return names.index(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(names):
        return int(value)
    raise DataError(f"{where}: label {value!r} is neither one of the model's labels ({', '.join(names)}) nor an id "
                    f"0..{len(names) - 1}")


def _read_classification(path, names, problem_type):
    regression = problem_type == "regression" or (problem_type is None and len(names) == 1)
    multi = problem_type == "multi_label_classification"
    texts, pairs, labels = [], [], []
    for number, item in _objects(path):
        where = f"{path}:{number}"
        if not isinstance(item.get("text"), str):
            raise DataError(f'{where}: needs "text" (a string)')
        if item.get("text_pair") is not None and not isinstance(item["text_pair"], str):
            raise DataError(f'{where}: "text_pair" must be a string')
        if "label" not in item:
            raise DataError(f'{where}: needs "label"')
        label = item["label"]
        if regression:
            if isinstance(label, bool) or not isinstance(label, (int, float)):
                raise DataError(f"{where}: a regression model's label is a number, got {label!r}")
            labels.append(float(label))
        elif multi:
            ids = label if isinstance(label, list) else [label]
            hot = np.zeros(len(names), np.float32)
            hot[[_class_id(x, names, where) for x in ids]] = 1.0
            labels.append(hot)
        else:
            labels.append(_class_id(label, names, where))
        texts.append(item["text"])
        pairs.append(item.get("text_pair"))
    if any(p is not None for p in pairs) and any(p is None for p in pairs):
        missing = pairs.index(None) if pairs[0] is not None else next(i for i, p in enumerate(pairs) if p is not None)
        raise DataError(f"{path}: some examples have a text_pair and some not (example {missing + 1}); give all or none")
    return Examples(str(path), texts, pairs if pairs and pairs[0] is not None else None, labels)


def _read_tagged_jsonl(path, names):
    words, tags = [], []
    for number, item in _objects(path):
        where = f"{path}:{number}"
        tokens, tagged = item.get("tokens"), item.get("tags", item.get("ner_tags"))
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise DataError(f'{where}: needs "tokens" (a non-empty list of strings)')
        if not isinstance(tagged, list) or len(tagged) != len(tokens):
            raise DataError(f'{where}: needs "tags", one per token ({len(tokens)})')
        words.append(tokens)
        tags.append([_class_id(t, names, where) for t in tagged])
    return Examples(str(path), words, None, tags, words=True)


def _read_conll(path, names):
    words, tags, sentence, sentence_tags = [], [], [], []
    for number, line in _lines(path):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if sentence:
                words.append(sentence)
                tags.append(sentence_tags)
            sentence, sentence_tags = [], []
            continue
        if len(columns) < 2:
            raise DataError(f"{path}:{number}: expected a token and its tag (CoNLL columns), got {line.strip()!r}")
        sentence.append(columns[0])
        sentence_tags.append(_class_id(columns[-1], names, f"{path}:{number}"))
    if sentence:
        words.append(sentence)
        tags.append(sentence_tags)
    return Examples(str(path), words, None, tags, words=True)


def _read_squad(path):
    """Questions: their texts, contexts (`pairs`) and per question its answers [(start character, text)]
    ([]: unanswerable, SQuAD v2), `ids` the questions' ids."""
    rows = []
    if _is_squad(path):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a SQuAD JSON file ({e})") from None
        for a, article in enumerate(_list(document.get("data"), f"{path}: data")):
            for p, paragraph in enumerate(_list(article.get("paragraphs"), f"{path}: data[{a}].paragraphs")):
                where = f"{path}: data[{a}].paragraphs[{p}]"
                for q, qa in enumerate(_list(paragraph.get("qas"), f"{where}.qas")):
                    answers = qa.get("answers", [])
                    rows.append((f"{where}.qas[{q}]", qa.get("id", f"{a}-{p}-{q}"), qa.get("question"),
                                 paragraph.get("context"), answers, bool(qa.get("is_impossible"))))
    else:
        for number, item in _objects(path):
            answers = item.get("answers", {"text": [], "answer_start": []})
            if isinstance(answers, dict):
                texts, starts = answers.get("text", []), answers.get("answer_start", [])
                if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
                    raise DataError(f'{path}:{number}: "answers" needs lists "text" and "answer_start" of one length')
                answers = [{"text": t, "answer_start": a} for t, a in zip(texts, starts)]
            rows.append((f"{path}:{number}", item.get("id", str(number)), item.get("question"), item.get("context"),
                         answers, False))
    ids, questions, contexts, labels = [], [], [], []
    for where, id_, question, context, answers, impossible in rows:
        if not isinstance(question, str) or not question.strip():
            raise DataError(f'{where}: needs "question" (a non-empty string)')
        if not isinstance(context, str) or not context.strip():
            raise DataError(f'{where}: needs "context" (a string holding words)')
        found = []
        for k, answer in enumerate(answers if not impossible else []):
            text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
            if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
                raise DataError(f'{where}: an answer needs "text" (a string) and "answer_start" (a character index)')
            # (training labels the first answer; evaluation compares every answer's text, as SQuAD's script)
            if k == 0 and context[start:start + len(text)] != text:
                raise DataError(f"{where}: answer {text!r} is not at character {start} of its context "
                                f"(there: {context[start:start + len(text)]!r})")
            found.append((start, text))
        ids.append(str(id_))
        questions.append(question)
        contexts.append(context)
        labels.append(found)
    return Examples(str(path), questions, contexts, labels, ids=ids)


def _is_squad(path):
    """A whole-file JSON document (SQuAD's) rather than JSONL: its first line is no JSON object of its own,
    or one holding "data"."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        item = json.loads(first)
    except json.JSONDecodeError:
        return first.lstrip().startswith("{")
    return isinstance(item, dict) and "data" in item


def _list(value, where):
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list (SQuAD's layout)")
    return value


@dataclasses.dataclass
class Windows:
    """Question-answering training rows: each question's context in windows of `max_length` tokens beside
    the question, `stride` tokens overlapping (Transformers' run_qa features), each labelled with the
    answer's first and last token, or <cls> for both where the window does not hold all of it (or there is
    no answer)."""

    questions: Examples
    rows: list  # kzoo.tokenizers.base.Row
    labels: list  # (start, end) token positions
    example: list  # the question each window is of
    context_at: list  # each window's first context token
    words: list = None  # XLM: per window, its context tokens' words as (start, end) characters

    def __len__(self):
        return len(self.rows)


def windows(questions, tokenizer, max_length, stride) -> Windows:
    """Transformers' run_qa prepare_train_features: the question (leading whitespace removed) and its
    context's windows (only_second truncation with a stride), the answer's tokens from the offsets. One
    difference: where an answer starts in the context's last token, run_qa's loop walks past the context
    (onto the separator and padding, whose offsets are (0, 0); its comment calls it an edge case); here the
    start stays on the answer's token."""
    from kzoo.errors import TokenizerError

    if not tokenizer.is_fast:
        return word_windows(questions, tokenizer, max_length, stride)
    out = Windows(questions, [], [], [], [])
    for i, (question, context, answers) in enumerate(zip(questions.texts, questions.pairs, questions.labels)):
        try:
            parts = tokenizer.windows(question.lstrip(), context, max_length, stride)
        except TokenizerError as e:
            raise DataError(f"{questions.path}: question {questions.ids[i]}: {e}") from None
        for row, first, _ in parts:
            last = len(row.ids) - 2  # (one special token ends a pair)
            cls = row.ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in row.ids else 0
            label = (cls, cls)
            if answers:
                start_char, text = answers[0]
                end_char = start_char + len(text)
                spans = row.spans
                if spans[first][0] <= start_char and spans[last][1] >= end_char:
                    start, end = first, last
                    while start <= last and spans[start][0] <= start_char:
                        start += 1
                    while spans[end][1] >= end_char:
                        end -= 1
                    label = (start - 1, end + 1)
            out.rows.append(row)
            out.labels.append(label)
            out.example.append(i)
            out.context_at.append(first)
    return out


def word_windows(questions, tokenizer, max_length, stride) -> Windows:
    """XLM's (a Python tokenizer: no offsets) question-answering features, Transformers 4.57's
    squad_convert_example_to_features for training (run_squad.py's): the context's words each tokenized
    alone, windows `stride` tokens apart (the tokenizer's `word_windows`); the answer's words from its
    characters, its tokens those words' (narrowed to the answer's own tokens where they appear among them);
    a window that does not hold them all is labelled with Transformers' cls_token, the "</s>" after the
    question, and an unanswerable question (SQuAD v2) with the first token. Where the answer's words do not
    hold the answer (only whitespace differs in SQuAD's check) the question is left out, as there."""
    from kzoo.errors import TokenizerError

    out = Windows(questions, [], [], [], [], [])
    cls = tokenizer._special_id("cls_token")  # (Transformers' XLM cls_token: "</s>")
    skipped = []
    for i, (question, context, answers) in enumerate(zip(questions.texts, questions.pairs, questions.labels)):
        try:
            split = tokenizer.word_windows(question, context, max_length, stride)
        except TokenizerError as e:
            raise DataError(f"{questions.path}: question {questions.ids[i]}: {e}") from None
        span = None
        if answers:
            start_char, text = answers[0]
            start_word, end_word = _word_at(split.words, start_char), _word_at(split.words, start_char + len(text) - 1)
            if " ".join(text.split()) not in " ".join(context[a:b] for a, b in split.words[start_word:end_word + 1]):
                skipped.append(questions.ids[i])
                continue
            owners = np.asarray(split.owners)
            first, last = int(np.searchsorted(owners, start_word)), int(np.searchsorted(owners, end_word + 1)) - 1
            span = _improve_answer_span(split.tokens, first, last, " ".join(tokenizer.tokenize(text)))
        for row, first, at in split.windows:
            held = len(row.ids) - first - 1
            if not answers:
                label = (0, 0)
            elif at <= span[0] and span[1] < at + held:
                label = (span[0] - at + first, span[1] - at + first)
            else:
                label = (row.ids.index(cls),) * 2
            out.rows.append(row)
            out.labels.append(label)
            out.example.append(i)
            out.context_at.append(first)
            out.words.append(split.window_words(row, first, at))
    if skipped:
        warnings.warn(f"{questions.path}: {len(skipped)} question(s) left out, their answer's words not holding the "
                      f"answer (as Transformers' SQuAD features leave them out): {', '.join(skipped[:5])}")
    return out


def _word_at(words, char):
    """SquadExample's char_to_word_offset: the word a character is in, or before it (whitespace)."""
    return max(int(np.searchsorted([a for a, _ in words], char, side="right")) - 1, 0)


def _improve_answer_span(doc_tokens, start, end, answer_tokens):
    """Transformers' _improve_answer_span: the narrowest tokens within start..end that read as the answer's
    own tokens (e.g. "1891" out of "1891 ."), else start..end."""
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == answer_tokens:
                return new_start, new_end
    return start, end


def bucket(length, longest):
    """The smallest length bucket holding `length` tokens (the model's longest input past the last)."""
    for b in LENGTH_BUCKETS:
        if length <= b and b < longest:
            return b
    return longest


def batches(examples, tokenizer, *, batch_size, max_length, longest, shuffle=False, seed=0, epoch=0, skip=0,
            traced=None):
    """The examples as model-input batches (dicts of int32 tensors, with "labels"), in file order or shuffled
    by (seed, epoch), from batch `skip` on (a resumed run's), each cut to the smallest length bucket
    holding its longest row. A tf.data pipeline: the SentencePiece tokenizer runs in its graph (tf_encode /
    tf_encode_words), a batch ahead of the training step; XLM's Python tokenizer feeds it from a generator;
    question-answering windows (`windows`) come tokenized. `traced`: a dict one run keeps from epoch to
    epoch, where the in-graph tokenizer's tf.function is traced once (each epoch's new pipeline would
    trace it again: ~0.3 s an epoch)."""
    import tensorflow as tf

    traced = {} if traced is None else traced

    order = np.arange(len(examples))
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(examples))
    order = order[skip * batch_size:]
    limit = min(longest, max_length)
    if isinstance(examples, Windows):  # (its rows come tokenized)
        for start in range(0, len(order), batch_size):
            rows = [examples.rows[i] for i in order[start:start + batch_size]]
            # padded to max_length as run_qa does (pad_to_max_length): the start / end softmaxes take in the
            # padding positions, so their number changes the loss; on the right: labels count from the start
            batch = tokenizer.pad_rows(rows, limit, side="right")
            labels = np.asarray([examples.labels[i] for i in order[start:start + batch_size]], np.int32)
            yield {**{k: tf.constant(v) for k, v in batch.items()}, "labels": tf.constant(labels)}
        return
    pair = examples.pairs is not None
    if limit < tokenizer.num_special_tokens_to_add(pair) + 1 + pair:  # (room for a token of each text)
        raise DataError(f"max-length {limit} leaves no room for text beside the tokenizer's "
                        f"{tokenizer.num_special_tokens_to_add(pair)} special tokens{' of a pair' if pair else ''}")
    buckets = tf.constant(sorted({bucket(n, limit) for n in (*LENGTH_BUCKETS, limit)}), tf.int32)

    # (autograph off here and in the encoders below: none branches on tensors in Python, and converting the
    # in-graph tokenizer took ~4 s a run)
    @tf.autograph.experimental.do_not_convert
    def cut(batch):  # to the smallest bucket holding the longest row
        needed = tf.reduce_max(tf.reduce_sum(batch["padding_mask"], axis=1))
        width = tf.gather(buckets, tf.minimum(tf.reduce_sum(tf.cast(buckets < needed, tf.int32)),
                                              tf.size(buckets) - 1))
        out = {k: v[:, :width] for k, v in batch.items() if k not in ("labels", "truncated")}
        out["labels"] = batch["labels"][:, :width] if examples.words else batch["labels"]
        return out

    labels = [examples.labels[i] for i in order]
    if examples.words and hasattr(tokenizer, "tf_encode_words"):
        columns = {"words": tf.ragged.constant([examples.texts[i] for i in order], dtype=tf.string),
                   "tags": tf.ragged.constant(labels, dtype=tf.int32, inner_shape=())}
        key = ("words", max_length)
        if key not in traced:
            traced[key] = tf.function(lambda b: tokenizer.tf_encode_words(b["words"], max_length, tags=b["tags"]),
                                      autograph=False)
        encode = traced[key]
    elif tokenizer.trains_in_graph:
        columns = {"texts": tf.constant([examples.texts[i] for i in order]), "labels": _labels(labels)}
        if examples.pairs is not None:
            columns["pairs"] = tf.constant([examples.pairs[i] for i in order])

        def encode_texts(b):
            out = tokenizer.tf_encode(b["texts"], max_length, pairs=b.get("pairs"), truncation="longest_first")
            return {**out, "labels": b["labels"]}

        key = ("texts", max_length, examples.pairs is not None)
        if key not in traced:
            traced[key] = tf.function(encode_texts, autograph=False)
        encode = traced[key]
    else:  # XLM: its Python tokenizer, batch by batch
        def python_batches():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                if examples.words:  # (each word on its own; its tag on its first token, -100 elsewhere)
                    encoded = [tokenizer.encode_words(examples.texts[i], max_length) for i in rows]
                    batch = tokenizer.pad_rows([row for row, _ in encoded], max_length, side="right")
                    tags = np.full(batch["token_ids"].shape, -100, np.int32)
                    for r, (i, (row, owners)) in enumerate(zip(rows, encoded)):
                        for position, word in enumerate(owners):
                            if word is not None and owners[position - 1] != word:
                                tags[r, position] = examples.labels[i][word]
                    yield {**batch, "labels": tags}
                    continue
                texts = [examples.texts[i] for i in rows]
                pairs = [examples.pairs[i] for i in rows] if examples.pairs is not None else None
                batch = tokenizer(texts, pairs=pairs, max_length=max_length, truncation=True, padding="max_length")
                yield {**{k: np.asarray(v, np.int32) for k, v in batch.items()},
                       "labels": _labels([examples.labels[i] for i in rows])}

        produced = python_batches()
        first = next(produced)  # (its arrays give the dataset's signature; then it is yielded, not redone)
        spec = {k: tf.TensorSpec([None, *v.shape[1:]], tf.as_dtype(v.dtype)) for k, v in first.items()}

        def all_batches():
            yield first
            yield from produced

        dataset = tf.data.Dataset.from_generator(all_batches, output_signature=spec)
        yield from dataset.map(cut).prefetch(1)
        return
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size).map(encode).map(cut)
    yield from dataset.prefetch(1)


def _labels(labels):
    array = np.asarray(labels)
    return array.astype(np.float32) if array.dtype.kind == "f" else array.astype(np.int32)
