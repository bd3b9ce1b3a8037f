"""text-classification and token-classification, as Transformers' pipelines of those names compute them
(transformers/pipelines/text_classification.py, token_classification.py): the same arguments, labels,
words, character offsets and output formats, so that code written against them reads kzoo's results."""

from __future__ import annotations

import collections
import warnings

import numpy as np

from kzoo.pipelines.base import Pipeline, PipelineError, batch_size_of, chunks, tokenizer_kwargs_of
from kzoo.tasks.classification import label_names


def softmax(x):
    shifted = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


FUNCTIONS = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}


class TextClassification(Pipeline):
    """`TextClassification(model)(inputs, top_k=..., function_to_apply=...)`, Transformers'
    `pipeline("text-classification")`: inputs a str, a {"text", "text_pair"} dict, or a list of them.

    Without top_k (Transformers' legacy format): the best {label, score} per input, a str's wrapped in a
    list; with top_k (an int, or None for every label): per input, that many {label, score} by score.
    function_to_apply: "softmax" / "sigmoid" / "none"; by default, as Transformers: none for a
    regression model (problem_type), sigmoid for multi-label or a single label, else softmax.
    truncation: cut inputs longer than the model takes (default: an error); max_length / padding: the
    tokenizer's, as Transformers passes them on; lang: XLM's language. An iterator of inputs (a generator)
    gives a generator of results.
    """

    name = "text-classification"
    labelled = True
    OPTIONS = ("top_k", "function_to_apply", "truncation", "max_length", "padding", "lang", "batch_size")

    def __call__(self, inputs, **options):
        legacy_call = "top_k" not in options
        options = self._options(options)
        top_k = options.get("top_k", 1)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0):
            raise PipelineError(f"top_k must be an int >= 0 or None, got {top_k!r}")
        function = self._function(options.get("function_to_apply"))
        tokenizer_kwargs = tokenizer_kwargs_of({k: options[k] for k in ("max_length", "padding") if k in options})
        if tokenizer_kwargs and "truncation" in options:  # (all three go to the tokenizer, as Transformers')
            tokenizer_kwargs["truncation"] = options["truncation"]
        single, texts, pairs = _text_inputs(inputs)
        logits = [None] * len(texts)
        for paired in (False, True):  # single texts and pairs: a batch each
            rows = [r for r, pair in enumerate(pairs) if (pair is not None) == paired]
            if rows:
                for part in chunks(rows, batch_size_of(options)):
                    chunk = self._logits([texts[r] for r in part], [pairs[r] for r in part] if paired else None,
                                         options.get("lang"), options.get("truncation", False), tokenizer_kwargs)
                    for r, row_logits in zip(part, chunk):
                        logits[r] = row_logits
        scores = function(np.stack(logits).astype(np.float32))
        names = label_names(self.runner.config, scores.shape[-1])
        results = []
        for row in scores:
            if "top_k" not in options:  # Transformers' legacy format: the best label
                best = int(row.argmax())
                results.append({"label": names[best], "score": float(row[best])})
                continue
            order = sorted(range(len(row)), key=lambda i: row[i], reverse=True)
            results.append([{"label": names[i], "score": float(row[i])} for i in order[:top_k]])
        if single:
            return [results[0]] if isinstance(inputs, str) and legacy_call else results[0]
        return results

    def _function(self, name):
        if name is None or str(name).lower() == "default":  # Transformers' choice from the config
            problem = self.runner.config.get("problem_type")
            classes = (self.runner.config.get("task_config") or {}).get("num_classes", 2)
            name = ("none" if problem == "regression" else
                    "sigmoid" if problem == "multi_label_classification" or classes == 1 else "softmax")
        function = FUNCTIONS.get(str(name).lower())
        if function is None:
            raise PipelineError(f"function_to_apply must be one of {', '.join(FUNCTIONS)}, not {name!r}")
        return function

    def _logits(self, texts, pairs, lang, truncation, tokenizer_kwargs=None):
        if self.text_only:
            if pairs is not None:
                raise PipelineError(f"{self.runner.path} takes single texts only (its text signature): run text "
                                    "pairs on the model dir, its SavedModel or an ids-in .tflite")
            if tokenizer_kwargs and "max_length" in tokenizer_kwargs:
                raise PipelineError(f"max_length: {self.runner.path} tokenizes inside and cuts at its export's "
                                    "--max-length")
            return np.asarray(self._run_text(texts, lang, truncation, needs="logits")["logits"])
        return np.asarray(self.runner(self._batch(texts, lang, truncation, pairs=pairs,
                                                  tokenizer_kwargs=tokenizer_kwargs))["logits"])


def _text_inputs(inputs):
    """(single, texts, pairs: a pair or None per text) for a str, a {"text", "text_pair"} dict or a list of them."""
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else inputs
    if not isinstance(items, (list, tuple)) or not items:
        raise PipelineError("expected a str, a {'text': ..., 'text_pair': ...} dict, or a non-empty list of them, "
                            f"got {'an empty list' if isinstance(items, (list, tuple)) else type(inputs).__name__}")
    texts, pairs = [], []
    for i, item in enumerate(items):
        if isinstance(item, dict) and set(item) <= {"text", "text_pair"} and isinstance(item.get("text"), str) \
                and isinstance(item.get("text_pair", ""), str):
            texts.append(item["text"])
            pairs.append(item.get("text_pair"))
        elif isinstance(item, str):
            texts.append(item)
            pairs.append(None)
        else:
            raise PipelineError(f"input {i + 1}: expected a str or a {{'text': str, 'text_pair': str}} dict (text "
                                f"pairs), got {type(item).__name__}" + (f" with keys {sorted(item)}"
                                                                        if isinstance(item, dict) else ""))
    return single, texts, pairs


STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassification(Pipeline):
    """`TokenClassification(model)(texts, aggregation_strategy=..., ignore_labels=...)`, Transformers'
    `pipeline("token-classification")` ("ner"): per text, a list of entities.

    aggregation_strategy "none": per token {entity, score, index, word, start, end}; "simple": adjacent
    tokens of one entity grouped as {entity_group, score, word, start, end}; "first" / "average" / "max":
    a word's tokens first agree on one label (its first token's, the average scores' best, the most
    confident token's), then grouped. start / end: character offsets into the text (None where the
    tokenizer gives none: XLM's, a Python tokenizer in Transformers, which then takes none / simple
    only). ignore_labels: labels left out (default ["O"]). Texts are cut to the longest input the model
    takes, as Transformers' pipeline cuts them to the tokenizer's model_max_length, unless `stride` (the
    whole text in windows overlapping by that many tokens). is_split_into_words: inputs are lists of
    words, offsets into them joined by `delimiter` (" ").
    """

    name = "token-classification"
    labelled = True
    OPTIONS = ("aggregation_strategy", "ignore_labels", "stride", "is_split_into_words", "delimiter", "lang",
               "batch_size")

    def __call__(self, inputs, **options):
        options = self._options(options)
        strategy = str(options.get("aggregation_strategy") or "none").lower()
        if strategy not in STRATEGIES:
            raise PipelineError(f"aggregation_strategy must be one of {', '.join(STRATEGIES)}, not "
                                f"{options['aggregation_strategy']!r}")
        if strategy in ("first", "average", "max") and not self.tokenizer.is_fast:
            raise PipelineError('Slow tokenizers cannot handle subwords. Please set the `aggregation_strategy` '
                                'option to `"simple"` (this tokenizer gives no character offsets, as '
                                "Transformers' Python tokenizer for this model)")
        ignore = options.get("ignore_labels")
        ignore = ["O"] if ignore is None else list(ignore)
        if options.get("stride") is not None or options.get("is_split_into_words"):
            return self._windowed(inputs, options, strategy, ignore)
        single, texts = self._texts(inputs)
        results = []
        for part in chunks(texts, batch_size_of(options)):
            batch, logits = self._token_logits(part, options.get("lang"))
            names = label_names(self.runner.config, logits.shape[-1])
            for row, text in enumerate(part):
                tokens = np.flatnonzero(batch["padding_mask"][row])
                entities = self._pre_entities(text, batch, row, tokens, softmax(logits[row, tokens]), strategy)
                entities = _aggregate(entities, strategy, names, self.tokenizer.convert_tokens_to_string)
                results.append([e for e in entities
                                if e.get("entity") not in ignore and e.get("entity_group") not in ignore])
        return results[0] if single else results

    def _windowed(self, inputs, options, strategy, ignore):
        """Transformers' `stride` (the whole text in windows of the model's length, `stride` tokens overlapping;
        each window's entities, then overlapping ones resolved: the longer, or on a tie the likelier) and
        `is_split_into_words` (inputs are lists of words, each tokenized as a word of its own; offsets into
        the words joined by `delimiter`, " " by default)."""
        stride, split = options.get("stride"), bool(options.get("is_split_into_words"))
        if not self.tokenizer.is_fast or self.text_only:
            raise PipelineError(f"stride / is_split_into_words need the tokenizer's offsets outside the model: "
                                f"{'this tokenizer (XLM) gives none' if not self.tokenizer.is_fast else self.runner.path} "
                                "(run the model dir, its SavedModel or an ids-in .tflite with a SentencePiece tokenizer)")
        room = self.runner.limits()[1] - self.tokenizer.num_special_tokens_to_add()
        if stride is not None:
            if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 0 <= stride < room:
                raise PipelineError(f"`stride` must be a whole number less than the model's {room} tokens per window "
                                    f"(its longest input less the special tokens), got {stride!r}")
            if options.get("aggregation_strategy") is not None and strategy == "none":  # (as Transformers: only
                # when asked for; left out, the windows' tokens are resolved as entities are)
                raise PipelineError('`stride` was provided to process all the text but `aggregation_strategy="none"`, '
                                    "please select another one instead.")
        single, items = self._words_inputs(inputs) if split else self._texts(inputs)
        delimiter = " " if options.get("delimiter") is None else options["delimiter"]
        windows = []  # (example, its text, a Row of one window)
        for i, item in enumerate(items):
            text, tokens = self._tokens_with_offsets(item, delimiter, options.get("lang")) if split else \
                (item, self.tokenizer.tokens_with_offsets([item], options.get("lang"))[0])
            start = 0
            while True:
                windows.append((i, text, self.tokenizer.with_special_tokens(tokens[start:start + room])))
                if stride is None or start + room >= len(tokens):
                    break
                start += room - stride
        per_example = [[] for _ in items]
        for part in chunks(windows, batch_size_of(options)):
            batch = self._rows(row for _, _, row in part)
            logits = np.asarray(self.runner({k: v for k, v in batch.items() if k in self.runner.input_names})["logits"],
                                np.float32)
            names = label_names(self.runner.config, logits.shape[-1])
            for r, (i, text, _) in enumerate(part):
                tokens = np.flatnonzero(batch["padding_mask"][r])
                entities = self._pre_entities(text, batch, r, tokens, softmax(logits[r, tokens]), strategy)
                entities = _aggregate(entities, strategy, names, self.tokenizer.convert_tokens_to_string)
                per_example[i].append([e for e in entities
                                       if e.get("entity") not in ignore and e.get("entity_group") not in ignore])
        results = [_resolve_overlaps(sum(found, [])) if len(found) > 1 else found[0] for found in per_example]
        return results[0] if single else results

    @staticmethod
    def _words_inputs(inputs):
        """(single, lists of words) for is_split_into_words: a list of str, or a list of such lists (one list of
        words still gives a list of results, [[entities]], as Transformers wraps it in a batch of one)."""
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(w, str) for w in inputs):
            return False, [list(inputs)]
        if isinstance(inputs, (list, tuple)) and inputs and all(
                isinstance(x, (list, tuple)) and all(isinstance(w, str) for w in x) for x in inputs):
            return False, [list(x) for x in inputs]
        raise PipelineError("When `is_split_into_words=True`, `sentence` must be a list of tokens (a list of str, "
                            "or a list of such lists).")

    def _tokens_with_offsets(self, words, delimiter, lang):
        """(the words joined by `delimiter`, their tokens as (id, span in that text)): each word tokenized on its
        own, as Transformers' tokenizers take pre-tokenized words."""
        per_word = self.tokenizer.tokens_with_offsets(words, lang) if words else []
        tokens, at = [], 0
        for word, word_tokens in zip(words, per_word):
            tokens += [(i, (a + at, b + at)) for i, (a, b) in word_tokens]
            at += len(word) + len(delimiter)
        return delimiter.join(words), tokens

    def _rows(self, rows):
        """Rows (kzoo.tokenizers.base.Row) padded into a batch, with offset_mapping and special_tokens_mask."""
        rows = list(rows)
        width = max(len(row.ids) for row in rows)
        specials = sorted(set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id})
        batch = {"token_ids": np.full((len(rows), width), self.tokenizer.pad_token_id, np.int32),
                 "padding_mask": np.zeros((len(rows), width), np.int32),
                 "segment_ids": np.zeros((len(rows), width), np.int32),
                 "offset_mapping": np.zeros((len(rows), width, 2), np.int32),
                 "special_tokens_mask": np.zeros((len(rows), width), np.int32)}
        for r, row in enumerate(rows):
            n = len(row.ids)
            batch["token_ids"][r, :n], batch["padding_mask"][r, :n] = row.ids, 1
            batch["offset_mapping"][r, :n] = np.asarray(row.spans, np.int32).reshape(-1, 2)
            batch["special_tokens_mask"][r, :n] = np.isin(row.ids, specials)
        return batch

    def _token_logits(self, texts, lang):
        """(the tokenizer's batch with offsets and special_tokens_mask, the model's logits [B, S, C]); on a
        text-in export, both from its signature (characters counted in the graph: see
        kzoo.tokenizers.sentencepiece.tf_tokenize_with_offsets)."""
        if self.text_only:
            # (a Python tokenizer's, XLM's, has no offsets: words from its tokens, as in Transformers)
            needs = "offset_mapping" if self.tokenizer.is_fast else "logits"
            out = self._run_text(texts, lang, truncation=True, needs=needs)
            batch = {name: np.asarray(out[name]) for name in ("token_ids", "padding_mask", "offset_mapping")
                     if name in out}
            if self.tokenizer.is_fast:
                specials = sorted(set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id})
                batch["special_tokens_mask"] = np.isin(batch["token_ids"], specials).astype(np.int32)
            else:  # (a Python tokenizer's mask: the template's <s> and </s> only, as kzoo.tokenizers.base)
                position = np.arange(batch["token_ids"].shape[1])[None, :]
                last = batch["padding_mask"].sum(axis=1, keepdims=True) - 1
                batch["special_tokens_mask"] = ((position == 0) | (position == last)).astype(np.int32)
            return batch, np.asarray(out["logits"], np.float32)
        batch = self._batch(texts, lang, truncation=True, offsets=self.tokenizer.is_fast, special_tokens_mask=True)
        inputs = {k: v for k, v in batch.items() if k in self.runner.input_names}  # (not offsets, special mask)
        return batch, np.asarray(self.runner(inputs)["logits"], np.float32)

    def _pre_entities(self, text, batch, row, tokens, scores, strategy):
        """Transformers' gather_pre_entities: each non-special token's word, scores, span, whether it
        continues a word (no word-aware tokenizer here: its fallback, "no space before it")."""
        entities = []
        spans = [tuple(int(v) for v in batch["offset_mapping"][row, p]) if "offset_mapping" in batch else None
                 for p in tokens]
        pieces = self.tokenizer.convert_ids_to_tokens([int(batch["token_ids"][row, p]) for p in tokens])
        real = collections.Counter(span for span, piece in zip(spans, pieces) if piece != "\u2581")
        fallback = {span for span, n in real.items() if n > 1}  # (a span two tokens share: a word's)
        for k, (position, token_scores) in enumerate(zip(tokens, scores)):
            if batch["special_tokens_mask"][row, position]:
                continue
            token_id, word = int(batch["token_ids"][row, position]), pieces[k]
            start = end = None
            is_subword = False
            if spans[k] is not None:
                start, end = spans[k]
                if strategy in ("first", "average", "max"):
                    warnings.warn("Tokenizer does not support real words, using fallback heuristic", UserWarning)
                is_subword = start > 0 and " " not in text[start - 1:start + 1]
                # a text-in export's word span, given to every token of a word its graph could not count
                # (kzoo.tokenizers.sentencepiece): the word's later tokens continue it, and an unknown piece
                # keeps its token rather than the whole word's text
                whole = self.text_only and spans[k] in fallback
                if token_id == self.tokenizer.unk_token_id:
                    word, is_subword = (word if whole else text[start:end]), False
                if whole and spans[k - 1] == spans[k]:
                    is_subword = True
            entities.append({"word": word, "scores": token_scores, "start": start, "end": end,
                             "index": int(position - tokens[0]), "is_subword": is_subword})
        return entities


def _aggregate(pre_entities, strategy, names, join):
    """Transformers' aggregate: per token (none), or words (first / average / max) and then grouped."""
    if strategy in ("none", "simple"):
        entities = [{"entity": names[int(e["scores"].argmax())], "score": float(e["scores"].max()),
                     "index": e["index"], "word": e["word"], "start": e["start"], "end": e["end"]}
                    for e in pre_entities]
    else:
        entities = [_word_entity(group, strategy, names, join) for group in _words(pre_entities)]
    return entities if strategy == "none" else _group_entities(entities, join)


def _words(pre_entities):
    groups = []
    for e in pre_entities:
        if groups and e["is_subword"]:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def _word_entity(tokens, strategy, names, join):
    if strategy == "first":
        scores = tokens[0]["scores"]
    elif strategy == "max":
        scores = max(tokens, key=lambda e: e["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([e["scores"] for e in tokens]), axis=0)
    best = int(scores.argmax())
    return {"entity": names[best], "score": float(scores[best]), "word": join([e["word"] for e in tokens]),
            "start": tokens[0]["start"], "end": tokens[-1]["end"]}


def _tag(entity):
    """("B" or "I", the tag): B-X / I-X, anything else a continuation ("I") of itself."""
    if entity.startswith(("B-", "I-")):
        return entity[0], entity[2:]
    return "I", entity


def _resolve_overlaps(entities):
    """Transformers' aggregate_overlapping_entities: by start, an entity starting inside the one kept so far
    replaces it when longer (or as long and likelier)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    kept, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                previous = entity
        else:
            kept.append(previous)
            previous = entity
    kept.append(previous)
    return kept


def _group_entities(entities, join):
    """Adjacent entities of one tag (a B- starts a new one) as {entity_group, score (mean), word, start, end}."""
    groups = []
    for e in entities:
        bi, tag = _tag(e["entity"])
        if groups and tag == _tag(groups[-1][-1]["entity"])[1] and bi != "B":
            groups[-1].append(e)
        else:
            groups.append([e])
    return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
             "score": float(np.nanmean([e["score"] for e in group])),
             "word": join([e["word"] for e in group]), "start": group[0]["start"], "end": group[-1]["end"]}
            for group in groups]


class ZeroShotClassification(Pipeline):
    """`ZeroShotClassification(nli_model)(sequences, candidate_labels, hypothesis_template=..., multi_label=...)`,
    Transformers' `pipeline("zero-shot-classification")` on an NLI classifier: each (sequence, "This example
    is {label}.") pair is classified; the entailment class is the config's label starting with "entail".
    Per sequence {sequence, labels, scores}, best first: the entailment logits softmaxed over the labels,
    or with multi_label (or one label) each label's entailment against contradiction.
    """

    name = "zero-shot-classification"
    labelled = True
    OPTIONS = ("candidate_labels", "hypothesis_template", "multi_label", "lang", "batch_size")

    def __call__(self, sequences, *args, **options):
        if len(args) == 1 and "candidate_labels" not in options:
            options["candidate_labels"] = args[0]
        elif args:
            raise PipelineError(f"Unable to understand extra arguments {args}")
        options = self._options(options)
        labels = options.get("candidate_labels")
        if isinstance(labels, str):
            labels = [label.strip() for label in labels.split(",") if label.strip()]
        template = options.get("hypothesis_template", "This example is {}.")
        single, texts = self._texts(sequences)
        if not labels or not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise PipelineError("candidate_labels: at least one label (a str, comma-separated, or a list of str)")
        try:
            hypotheses = [template.format(label) for label in labels]
        except (IndexError, KeyError, ValueError, AttributeError) as e:  # ("{} {}", "{topic}", "{", not a str)
            raise PipelineError(f"hypothesis_template {template!r} takes one {{}} where the label goes "
                                f"({type(e).__name__}: {e})") from None
        if hypotheses[0] == template:
            raise PipelineError(f'The provided hypothesis_template "{template}" was not able to be formatted with the '
                                "target labels: it needs {} where the label goes")
        if self.text_only:
            raise PipelineError(f"{self.runner.path} takes single texts only (its text signature), and zero-shot "
                                "classification runs (text, hypothesis) pairs: run it on the model dir, its SavedModel "
                                "or an ids-in .tflite")
        entailment = self._entailment_id()
        premises, pairs = [t for t in texts for _ in labels], hypotheses * len(texts)
        size = batch_size_of(options)
        # (Transformers' truncation="only_first": a premise longer than the model takes is cut, never the hypothesis)
        logits = np.concatenate([np.asarray(self.runner(self._batch(p, options.get("lang"), "only_first", h))["logits"])
                                 for p, h in zip(chunks(premises, size), chunks(pairs, size))])
        logits = logits.astype(np.float32).reshape(len(texts), len(labels), -1)
        if options.get("multi_label", False) or len(labels) == 1:
            contradiction = -1 if entailment == 0 else 0
            scores = softmax(logits[..., [contradiction, entailment]])[..., 1]
        else:
            scores = softmax(logits[..., entailment])
        results = []
        for text, row in zip(texts, scores):
            best = list(reversed(row.argsort()))
            results.append({"sequence": text, "labels": [labels[i] for i in best], "scores": row[best].tolist()})
        return results[0] if single else results

    def _entailment_id(self):
        names = label_names(self.runner.config, (self.runner.config.get("task_config") or {}).get("num_classes", 2))
        for i, name in enumerate(names):
            if name.lower().startswith("entail"):
                return i
        warnings.warn("Failed to determine 'entailment' label id from the model's labels; using -1 (the last), as "
                      "Transformers does", UserWarning)
        return -1
