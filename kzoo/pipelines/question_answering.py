"""question-answering: extractive QA as Transformers 4.57's `pipeline("question-answering")` computes it
(Transformers 5 removed the pipeline; kzoo keeps its algorithm, arguments and output format). With a fast
tokenizer (ALBERT, XLM-R): the question, then windows of the context `doc_stride` tokens apart, each through
the model; the best spans by start x end probability over the context tokens, aligned to words, duplicates
merged. With XLM's Python tokenizer (no offsets), its slow path (squad_convert_examples_to_features): the
context split at whitespace into words, each tokenized alone, and answers made of whole words."""

from __future__ import annotations

import numpy as np

from kzoo.errors import TokenizerError
from kzoo.pipelines.base import Pipeline, PipelineError, batch_size_of, chunks
from kzoo.tokenizers.xlm import SQUAD_WORD


def decode_spans(start, end, top_k, max_answer_len, allowed):
    """The top_k (start, end) token spans by start x end probability, end >= start, at most max_answer_len
    tokens, both ends allowed (Transformers' decode_spans, including its selection among ties)."""
    outer = np.matmul(start[:, None], end[None, :])
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = [np.argmax(flat)]
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        best = np.argpartition(-flat, top_k)[0:top_k]
        order = best[np.argsort(-flat[best])]
    starts, ends = np.unravel_index(order, candidates.shape)
    # (Transformers tests membership in `allowed[None].nonzero()`, row indices included: position 0 passes)
    positions = np.concatenate([[0], np.flatnonzero(allowed)])
    keep = np.isin(starts, positions) & np.isin(ends, positions)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[starts, ends]


def _probabilities(logits, allowed):
    logits = np.where(allowed, logits, -10000.0)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _select(start_logits, end_logits, allowed, top_k, max_answer_len):
    """Transformers' select_starts_ends on one window: start and end probabilities over the allowed tokens, the
    top_k spans (`decode_spans`) and the null score (start x end at the first token)."""
    start = _probabilities(np.asarray(start_logits, np.float32), allowed)
    end = _probabilities(np.asarray(end_logits, np.float32), allowed)
    null = float(start[0] * end[0])
    start[0] = end[0] = 0.0
    return (*decode_spans(start, end, top_k, max_answer_len, allowed), null)


def _ranked(answers, impossible, min_null, top_k):
    """Transformers' end of postprocess, after either tokenizer path: the null answer where asked, then the
    top_k by score."""
    if impossible:
        answers.append({"score": min_null, "start": 0, "end": 0, "answer": ""})
    return sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]


class QuestionAnswering(Pipeline):
    """`QuestionAnswering(model)(question=..., context=...)`: {score, start, end, answer}, start/end character
    offsets into the context; a list of them with top_k > 1, or per question for several.

    Inputs: question= and context= (str, or lists), a {"question", "context"} dict (or a list of them), or
    (question, context) as two strings. Options (Transformers'): top_k (1), doc_stride (min(max_seq_len // 2,
    128)), max_answer_len (15), max_seq_len (min(the model's longest input, 384)), handle_impossible_answer
    (False: with it, the empty answer "" scored by the first token's start x end probability),
    align_to_words (True: an answer widened to whole words). The question is never cut (a question longer
    than max_seq_len takes is an error); ALBERT's context tokens get token type 1, as it was trained.
    XLM (Transformers' slow path): whole-word answers, the question cut to max_question_len (64) tokens, no
    token types (Transformers 5's XLM tokenizer feeds none, nor did its SQuAD training); `lang` as elsewhere.
    """

    name = "question-answering"
    unwraps_one = True  # (Transformers: a list of one example answers as that example)
    OPTIONS = ("question", "context", "top_k", "doc_stride", "max_answer_len", "max_seq_len", "max_question_len",
               "handle_impossible_answer", "align_to_words", "lang", "batch_size")

    def __call__(self, *args, **options):
        examples = _examples(args, options)
        options = self._options({k: v for k, v in options.items() if k not in ("question", "context")})
        if self.text_only:
            return self._in_model(examples, options)
        top_k = _positive(options, "top_k", 1)
        max_answer_len = _positive(options, "max_answer_len", 15)
        longest = self.runner.limits()[1] or 384
        max_seq_len = _positive(options, "max_seq_len", min(longest, 384))
        doc_stride = _positive(options, "doc_stride", min(max_seq_len // 2, 128), zero=True)
        if doc_stride > max_seq_len:
            raise PipelineError(f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})")
        if max_seq_len > longest:
            raise PipelineError(f"max_seq_len {max_seq_len}: the model takes at most {longest} tokens")
        if self.tokenizer.is_fast:
            windows = [self._windows(q, c, max_seq_len, doc_stride, options.get("lang")) for q, c in examples]
        else:
            question_len = _positive(options, "max_question_len", 64)
            windows = [self._word_windows(q, c, max_seq_len, doc_stride, question_len, options.get("lang"))
                       for q, c in examples]
        rows = [row for example in windows for row, _, _ in example]
        logits = []  # (start, end) per window, BATCH_SIZE windows a model call
        for part in chunks(rows, batch_size_of(options)):
            out = self.runner(self._pad(part, options.get("lang")))
            logits += [(out["start_logits"][i, :len(row.ids)], out["end_logits"][i, :len(row.ids)])
                       for i, row in enumerate(part)]
        results, r = [], 0
        for (question, context), example in zip(examples, windows):
            spans = []
            for row, context_at, words in example:
                spans.append((row, context_at, words, *logits[r]))
                r += 1
            answer = self._answers if self.tokenizer.is_fast else self._word_answers
            answers = answer(context, spans, top_k, max_answer_len, bool(options.get("handle_impossible_answer")),
                             options.get("align_to_words", True))
            results.append(answers[0] if len(answers) == 1 else answers)
        return results[0] if len(results) == 1 else results

    def _in_model(self, examples, options):
        """On a text-in export: its signature's answer (kzoo.tasks.question_answering: the best span of one
        window, words as the export's tokenizer counts them, max_answer_len as exported), with the null answer
        where handle_impossible_answer asks and it scores higher. What needs windows or several answers is a
        one-line error naming the option."""
        fixed = [name for name in ("doc_stride", "max_seq_len", "max_question_len", "max_answer_len")
                 if options.get(name) is not None]
        top_k = _positive(options, "top_k", 1)
        if fixed or top_k != 1 or options.get("align_to_words", True) is not True:
            what = ", ".join(fixed) or ("top_k" if top_k != 1 else "align_to_words")
            raise PipelineError(f"{what}: {self.runner.path} answers in its text signature (the best answer, words "
                                "aligned, one window of its --max-length, --max-answer-len as exported); run the model "
                                "dir, its SavedModel or an ids-in .tflite for that")
        answers = []
        for part in chunks(examples, batch_size_of(options)):
            texts = {"question": [q for q, _ in part], "context": [c for _, c in part]}
            out = self._run_text(texts, options.get("lang"), truncation=False, needs="null_score")
            for i, (_, context) in enumerate(part):
                start, end, score = int(out["start"][i]), int(out["end"][i]), float(out["score"][i])
                text = (context[start:end] if self.tokenizer.is_fast  # (XLM: its words joined by a space)
                        else " ".join(SQUAD_WORD.findall(context, start, end)))
                answer = {"score": score, "start": start, "end": end, "answer": text}
                null = float(out["null_score"][i])
                if options.get("handle_impossible_answer") and null > score:
                    answer = {"score": null, "start": 0, "end": 0, "answer": ""}
                answers.append(answer)
        return answers[0] if len(answers) == 1 else answers

    def _windows(self, question, context, max_seq_len, doc_stride, lang):
        """[(Row, position of its first context token, its context tokens' word ids)] for the context's windows
        (the tokenizer's `windows`: Transformers' only_second truncation with a stride)."""
        try:
            windows = self.tokenizer.windows(question, context, max_seq_len, doc_stride, lang)
        except TokenizerError as e:
            raise PipelineError(f"question and context (max_seq_len {max_seq_len}, doc_stride {doc_stride}): {e}") \
                from None
        word_starts = [i for i, ch in enumerate(context) if not ch.isspace() and (i == 0 or context[i - 1].isspace())]
        return [(row, first, _word_ids(context, word_starts, row.spans[first:len(row.ids) - 1]))
                for row, first, _ in windows]

    def _word_windows(self, question, context, max_seq_len, doc_stride, max_question_len, lang):
        """XLM's windows (its tokenizer's `word_windows`: Transformers' slow path), as `_windows` gives them but
        with each context token's word as its (start, end) characters."""
        try:
            split = self.tokenizer.word_windows(question, context, max_seq_len, doc_stride, max_question_len, lang)
        except TokenizerError as e:
            raise PipelineError(f"question and context (max_seq_len {max_seq_len}, doc_stride {doc_stride}): {e}") \
                from None
        return [(row, first, split.window_words(row, first, at)) for row, first, at in split.windows]

    def _pad(self, rows, lang):
        batch = self.tokenizer.pad_rows(rows, max(len(row.ids) for row in rows), lang=lang, side="right")
        return {k: v for k, v in batch.items() if k in self.runner.input_names}

    def _answers(self, context, spans, top_k, max_answer_len, impossible, align):
        min_null = 1000000.0
        answers = []
        for row, context_at, words, start_logits, end_logits in spans:
            n = len(row.ids)
            allowed = np.zeros(n, bool)
            allowed[context_at:n - 1] = True
            allowed[np.asarray(row.ids) == self.tokenizer.cls_token_id] = True
            *best, null = _select(start_logits, end_logits, allowed, top_k * 2 + 10 if align else top_k,
                                  max_answer_len)
            if impossible:
                min_null = min(min_null, null)
            for s, e, score in zip(*best):
                begin, stop = _indices(int(s), int(e), context_at, row.spans, words, align)
                text = context[begin:stop]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += float(score)
                else:
                    answers.append({"score": float(score), "start": begin, "end": stop, "answer": text})
        return _ranked(answers, impossible, min_null, top_k)

    def _word_answers(self, context, spans, top_k, max_answer_len, impossible, align):
        """Transformers 4.57's slow-path answers: whole words ({score, start, end, answer}: the words joined by
        one space), windows not merged. Its p_mask allows the context's tokens except special ones (<unk>
        among them) and its `cls_token` (XLM's "</s>", first after the question); the null answer scores the
        first token, which that mask leaves out (so 0). Where a best span starts or ends on "</s>",
        Transformers raised KeyError; kzoo leaves that span out. Transformers' `end` is the last character of
        the whitespace after the answer; kzoo's is where its last word ends, so context[start:end] holds it."""
        tok = self.tokenizer
        specials, cls = tok.all_special_ids, tok._special_id("cls_token")  # (Transformers' cls_token: "</s>")
        min_null = 1000000.0
        answers = []
        for row, first, words, start_logits, end_logits in spans:
            ids = np.asarray(row.ids)
            allowed = np.zeros(len(ids), bool)
            allowed[first:len(ids) - 1] = ~np.isin(ids[first:len(ids) - 1], specials)
            allowed[row.ids.index(cls)] = True
            *best, null = _select(start_logits, end_logits, allowed, top_k * 2 + 10 if align else top_k,
                                  max_answer_len)
            if impossible:
                min_null = min(min_null, null)
            for s, e, score in zip(*best):
                if not (first <= s < first + len(words) and first <= e < first + len(words)):
                    continue
                begin, stop = words[s - first][0], words[e - first][1]
                answers.append({"score": float(score), "start": begin, "end": stop,
                                "answer": " ".join(SQUAD_WORD.findall(context, begin, stop))})
        return _ranked(answers, impossible, min_null, top_k)


def _indices(s, e, first, spans, words, align):
    """Character (start, end) of the tokens s..e: with `align`, of the words they are in (within this window,
    from its first token of the word to its last), as Transformers' get_indices; a special token (no word)
    falls back to the tokens' own offsets."""
    def word(position):
        return words[position - first] if 0 <= position - first < len(words) else None

    ws, we = word(s), word(e)
    if align and ws is not None and we is not None:
        begin = spans[first + words.index(ws)][0]
        end = spans[first + len(words) - 1 - words[::-1].index(we)][1]
        return begin, end
    return spans[s][0], spans[e][1]


def _word_ids(text, starts, spans):
    """The word (a run of non-space characters; `starts`: where each begins) each token belongs to, by the
    first non-space character at or after its start: a lone "▁" piece belongs to the word after it, as
    SentencePiece's Metaspace splits."""
    ids = []
    for a, _ in spans:
        while a < len(text) and text[a].isspace():
            a += 1
        ids.append(int(np.searchsorted(starts, a, side="right")) - 1)
    return ids


def _positive(options, name, default, zero=False):
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if zero else 1):
        raise PipelineError(f"{name} must be a whole number >= {0 if zero else 1}, got {value!r}")
    return int(value)


def _examples(args, options):
    """[(question, context)] from Transformers' ways of giving them."""
    question, context = options.get("question"), options.get("context")
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        items = [{"question": args[0], "context": args[1]}]
    elif len(args) == 1:
        items = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
    elif args:
        raise PipelineError(f"Unable to understand arguments {args}: pass question= and context=")
    elif question is not None and context is not None:
        for key, value in (("question", question), ("context", context)):
            if not isinstance(value, (str, list, tuple)):
                raise PipelineError(f"`{key}` must be a str or a list of str, got {type(value).__name__}")
        questions = [question] if isinstance(question, str) else list(question)
        contexts = [context] * len(questions) if isinstance(context, str) else list(context)
        if len(questions) != len(contexts):
            raise PipelineError(f"{len(questions)} questions but {len(contexts)} contexts")
        items = [{"question": q, "context": c} for q, c in zip(questions, contexts)]
    else:
        raise PipelineError("question-answering needs question= and context= (or a {'question', 'context'} dict)")
    examples = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"question", "context"} <= set(item):
            raise PipelineError(f"input {i + 1}: expected a dict with keys question and context, got "
                                f"{type(item).__name__}")
        for key in ("question", "context"):
            if not isinstance(item[key], str) or not item[key]:
                raise PipelineError(f"input {i + 1}: `{key}` must be a non-empty str")
        examples.append((item["question"], item["context"]))
    return examples
