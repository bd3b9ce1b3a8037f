"""What every kzoo tokenizer does as Transformers' tokenizers do, written once.

A format (SentencePiece, XLM's Moses + BPE) subclasses `Tokenizer` and supplies the text -> ids
step (`_tokenize`), its character offsets (`_offsets`), its vocabulary and its special tokens;
this class adds the rest exactly as Transformers 5.23 does it: special-token templates, pairs,
truncation, padding, batches, offsets through all of those, decode.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kzoo.errors import TokenizerError

# Order of Transformers' special token attributes (that of `all_special_tokens`).
SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Transformers' `clean_up_tokenization` replacements.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))

NO_SPAN = (0, 0)  # the offsets of special tokens and padding (Transformers': (0, 0))


class Row(NamedTuple):
    """One encoded text (or pair): ids, segment ids, where the pair part starts, character spans."""

    ids: list
    segments: list
    first: int
    spans: list


def longest_first(a, b, max_tokens):
    """The `tokenizers` library's "longest_first" truncation of a (pair of) id list(s) to max_tokens."""
    if max_tokens < 0:
        raise TokenizerError("max_length is too short for the special tokens")
    if b is None:
        return a[:max_tokens], None
    if len(a) + len(b) <= max_tokens:
        return a, b
    n1, n2 = len(a), len(b)
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > max_tokens else max(n1, max_tokens - n1)
    if n1 + n2 > max_tokens:
        n1 = max_tokens // 2
        n2 = n1 + max_tokens % 2
    if swap:
        n1, n2 = n2, n1
    return a[:n1], b[:n2]


def longest_first_python(a, b, max_tokens, left=False):
    """Transformers' Python ("slow") tokenizers' "longest_first": another tie rule than
    `longest_first` (which side loses the odd token), and `truncation_side`."""
    remove = len(a) + len(b or []) - max_tokens
    if remove <= 0:
        return a, b
    if b is None:
        return (a[remove:], None) if left else (a[:-remove], None)
    first = min(abs(len(b) - len(a)), remove)
    second = remove - first
    if len(a) > len(b):
        cut_a, cut_b = first + second // 2, second - second // 2
    else:
        cut_a, cut_b = second // 2, first + second - second // 2
    if left:  # (Transformers turns an empty pair into no pair here)
        return a[cut_a:], (b[cut_b:] if b else None)
    return (a[:-cut_a] if cut_a > 0 else a), (b[:-cut_b] if b and cut_b > 0 else b)


def only_one(a, b, max_tokens, strategy, left=False, python=False):
    """Transformers' "only_first" / "only_second" truncation: that sequence alone gives way (from the left
    with truncation_side "left"). Where it cannot give enough, or there is no second text to cut, the
    `tokenizers` library raises (a TokenizerError here); Transformers' Python tokenizers (`python`) cut what
    there is."""
    remove = len(a) + len(b or []) - max_tokens
    cut = a if strategy == "only_first" else b
    if remove <= 0 or (python and cut is None):
        return a, b
    if cut is None:
        raise TokenizerError('truncation="only_second": the text is too long and there is no text pair to cut')
    if remove >= len(cut) and not python:
        raise TokenizerError(f"truncation={strategy!r}: the {'first' if cut is a else 'second'} text ({len(cut)} tokens) "
                             f"cannot be cut enough to fit max_length (it would need to lose {remove})")
    kept = cut[remove:] if left else cut[:max(len(cut) - remove, 0)]
    return (kept, b) if cut is a else (a, kept)


class Tokenizer:
    """Transformers' tokenizer API over a format's `_tokenize` (see the module docstring).

    A subclass sets `FORMAT`, `template` and `python_truncation` (Transformers' Python tokenizer rule
    instead of the `tokenizers` library's), and implements `_tokenize`,
    `convert_ids_to_tokens`, `convert_tokens_to_ids`, `_decode_tokens` and `_join`; it fills
    `self._specials` (attr -> token) and `self._all_special` (tokens, Transformers' order).
    """

    FORMAT = "?"
    META_FILE = "kzoo_tokenizer.json"
    # "bert": [CLS] A [SEP] and [CLS] A [SEP] B [SEP], B with segment 1 (ALBERT, XLM);
    # "roberta": <s> A </s> and <s> A </s></s> B </s>, all segment 0 (XLM-RoBERTa)
    template = "bert"
    python_truncation = False
    # whether training tokenizes in a tf.data graph (tf_encode); XLM's Python tokenizer feeds it instead (its
    # graph, kzoo.tokenizers.moses_graph, is for exports: ~6 s to trace a shape)
    trains_in_graph = False
    languages: list = []  # XLM: language codes by id
    model_max_length = None  # truncation's default max_length (Python tokenizers only)
    padding_side = "right"
    truncation_side = "right"
    clean_up_tokenization_spaces = False

    # ---- what a format supplies --------------------------------------------------------------

    def _tokenize(self, texts, lang) -> list:
        """Ids without special tokens, one list per text."""
        raise NotImplementedError

    def _offsets(self, texts, ids) -> list:
        """Each token's (start, end) character span in its text (Transformers' offset_mapping)."""
        raise TokenizerError(f"{type(self).__name__} gives no character offsets (Transformers' Python "
                             "tokenizers return no offset_mapping either)")

    def _decode_tokens(self, ids, skip_special_tokens) -> list:
        raise NotImplementedError

    def _join(self, tokens) -> str:
        raise NotImplementedError

    @property
    def is_fast(self) -> bool:
        """Whether it gives character offsets, as Transformers' fast tokenizers do (its Python ones, XLM's,
        do not; pipelines then work as Transformers' do with a slow tokenizer)."""
        return type(self)._offsets is not Tokenizer._offsets

    # ---- special tokens ------------------------------------------------------------------------

    def _special_id(self, attr):
        token = self._specials.get(attr)
        return None if token is None else self.convert_tokens_to_ids(token)

    @property
    def pad_token_id(self) -> int:
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int:
        return self._special_id("unk_token")

    @property
    def cls_token_id(self) -> int:
        """The first token of every sequence."""
        return self._special_id("cls_token")

    @property
    def sep_token_id(self) -> int:
        return self._special_id("sep_token")

    @property
    def mask_token(self) -> str:
        return self._specials.get("mask_token")

    @property
    def mask_token_id(self) -> int:
        return self._special_id("mask_token")

    @property
    def all_special_tokens(self) -> list:
        return list(self._all_special)

    @property
    def all_special_ids(self) -> list:
        return [self.convert_tokens_to_ids(t) for t in self._all_special]

    # ---- ids -------------------------------------------------------------------------------------

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """== Transformers' `num_special_tokens_to_add`: the template's special tokens around one text or a pair."""
        return 2 if not pair else 4 if self.template == "roberta" else 3

    def with_special_tokens(self, a, b=None):
        """A Row of (id, span) token lists (`tokens_with_offsets`) with the template's special tokens (span
        NO_SPAN)."""
        cls, sep = (self.cls_token_id, NO_SPAN), (self.sep_token_id, NO_SPAN)
        tokens = [cls, *a, sep]
        first = len(tokens)
        if b is None:
            segments = [0] * first
        elif self.template == "roberta":  # <s> A </s></s> B </s>, all segment 0
            tokens += [sep, *b, sep]
            segments = [0] * len(tokens)
        else:  # [CLS] A [SEP] B [SEP], the B part segment 1
            tokens += [*b, sep]
            segments = [0] * first + [1] * (len(tokens) - first)
        return Row([t for t, _ in tokens], segments, first, [s for _, s in tokens])

    def _build(self, a, b, add_special_tokens, max_length, truncation):
        """A Row for token lists a, b of (id, span), as Transformers' `prepare_for_model`."""
        if truncation and max_length is None:
            max_length = self.model_max_length
        special = self.num_special_tokens_to_add(b is not None) if add_special_tokens else 0
        if truncation and max_length is not None:
            if truncation in ("only_first", "only_second"):
                a, b = only_one(a, b, max_length - special, truncation, self.truncation_side == "left",
                                self.python_truncation)
            elif not self.python_truncation:
                a, b = longest_first(a, b, max_length - special)
            elif max_length and len(a) + len(b or []) + special > max_length:
                a, b = longest_first_python(a, b, max_length - special, left=self.truncation_side == "left")
        if add_special_tokens:
            return self.with_special_tokens(a, b)
        tokens = a + (b or [])
        pair_segment = 1 if self.template == "bert" else 0
        return Row([t for t, _ in tokens], [0] * len(a) + [pair_segment] * len(b or []), len(a),
                   [s for _, s in tokens])

    def _check_texts(self, texts, pairs):
        texts = _as_texts(texts, "texts")
        if pairs is not None:
            pairs = _as_texts(pairs, "pairs")
            if len(pairs) != len(texts):
                raise TokenizerError(f"{len(texts)} texts but {len(pairs)} pairs")
        return texts, pairs

    def encode(self, text, pair=None, add_special_tokens=True, max_length=None, truncation=None, lang=None) -> list:
        """== Transformers' `tokenizer(text, pair, ...)["input_ids"]`. truncation: True / "longest_first"
        cuts to max_length (without one: the tokenizer's model_max_length), "only_first" / "only_second"
        cut that text alone; None, Transformers' default, cuts when max_length is given."""
        for value in (text, pair):
            if value is not None and not isinstance(value, str):
                raise TokenizerError(f"expected a str, got {type(value).__name__}")
        texts, pairs = self._check_texts(text, pair)
        _check_max_length(max_length)
        a, b = self._tokenize_pairs(texts, pairs, lang)
        truncation = _truncation(max_length is not None if truncation is None else truncation)
        return self._build(a[0], b[0] if b else None, add_special_tokens, max_length, truncation).ids

    def _tokenize_pairs(self, texts, pairs, lang, offsets=False):
        """Token lists of (id, span) for the texts, and for the pairs (None without); `lang` (XLM): a
        code or (text's, pair's) codes. Spans are NO_SPAN unless `offsets`."""
        lang_a, lang_b = self._pair_langs(lang)
        if pairs is None or lang_a == lang_b:
            ids = self._tokenize(texts + (pairs or []), lang_a)
        else:
            ids = self._tokenize(texts, lang_a) + self._tokenize(pairs, lang_b)
        every = texts + (pairs or [])
        spans = self._offsets(every, ids) if offsets else [[NO_SPAN] * len(row) for row in ids]
        tokens = [list(zip(row, row_spans)) for row, row_spans in zip(ids, spans)]
        return tokens[:len(texts)], (tokens[len(texts):] if pairs is not None else None)

    def tokens_with_offsets(self, texts, lang=None) -> list:
        """Per text, its tokens (no special tokens) as (id, (start, end)): ids and Transformers' character spans."""
        texts, _ = self._check_texts(texts, None)
        return self._tokenize_pairs(texts, None, lang, offsets=True)[0]

    def _pair_langs(self, lang):
        if lang is not None:
            raise TokenizerError(f"lang={lang!r}: this tokenizer has no languages (lang is for XLM)")
        return None, None

    def __call__(self, texts, pairs=None, max_length=None, truncation=None, padding=None, lang=None,
                 return_offsets_mapping=False, return_special_tokens_mask=False) -> dict:
        """Batch encoding like Transformers' `tokenizer(texts, pairs, ...)`, as numpy int32 arrays:
        token_ids, padding_mask (1 = token, 0 = padding) and segment_ids, padded with the pad id to
        the longest row (padding None or "longest") or to max_length (padding="max_length"); with
        `return_offsets_mapping`, offset_mapping [B, S, 2]: each token's (start, end) character span
        in its text (a pair's tokens: in the pair), (0, 0) for special tokens and padding; with
        `return_special_tokens_mask`, special_tokens_mask [B, S]: 1 for the template's special tokens and
        special tokens written in the text (not an unknown piece), 0 for other tokens and padding.
        truncation: as in `encode`, but, as in Transformers, None cuts to max_length only when padding
        is not asked for (padding None: the arrays still pad to the longest row, as they must)."""
        texts, pairs = self._check_texts(texts, pairs)
        _check_max_length(max_length)
        if truncation is None:
            truncation = max_length is not None and padding is None
        truncation = _truncation(truncation)
        a, b = self._tokenize_pairs(texts, pairs, lang, offsets=return_offsets_mapping)
        rows = [self._build(a[i], b[i] if b else None, True, max_length, truncation) for i in range(len(texts))]
        longest = max((len(row.ids) for row in rows), default=0)
        if padding in (None, True, "longest"):
            width = longest
        elif padding == "max_length":
            target = max_length if max_length is not None else self.model_max_length
            if target is None:
                raise TokenizerError('padding="max_length" needs max_length')
            width = max(target, longest)
        else:
            raise TokenizerError(f'padding must be "longest" or "max_length", not {padding!r}')
        batch = self.pad_rows(rows, width, lang)
        if return_offsets_mapping:
            batch["offset_mapping"] = np.zeros((len(rows), width, 2), np.int32)
        if return_special_tokens_mask:
            batch["special_tokens_mask"] = np.zeros((len(rows), width), np.int32)
            specials = np.asarray(sorted(set(self.all_special_ids) - {self.unk_token_id}))
        for r, row in enumerate(rows):
            span = self._placed(len(row.ids), width)
            if return_offsets_mapping:
                batch["offset_mapping"][r, span] = np.asarray(row.spans, np.int32).reshape(-1, 2)
            if return_special_tokens_mask:
                batch["special_tokens_mask"][r, span] = self._special_mask(row, specials)
        return batch

    def _special_mask(self, row, specials):
        """Transformers' special_tokens_mask of a row: a fast tokenizer marks every special token, the
        template's and those written in the text; a Python one (XLM's `get_special_tokens_mask`) the
        template's only."""
        if self.is_fast:
            return np.isin(row.ids, specials)
        mask = np.zeros(len(row.ids), bool)
        if row.ids:
            mask[[0, row.first - 1, len(row.ids) - 1]] = True  # <s>, the </s> after A, the last </s>
        return mask

    def _placed(self, length, width, side=None):
        return slice(width - length, width) if (side or self.padding_side) == "left" else slice(0, length)

    def pad_rows(self, rows, width, lang=None, side=None) -> dict:
        """Rows (`with_special_tokens`') as a batch `width` tokens wide: token_ids, padding_mask,
        segment_ids (and XLM's lang_ids), padded on `side` (default: the tokenizer's padding side)."""
        batch = {"token_ids": np.full((len(rows), width), self.pad_token_id, np.int32),
                 "padding_mask": np.zeros((len(rows), width), np.int32),
                 "segment_ids": np.zeros((len(rows), width), np.int32)}
        for r, row in enumerate(rows):
            span = self._placed(len(row.ids), width, side)
            batch["token_ids"][r, span] = row.ids
            batch["padding_mask"][r, span] = 1
            batch["segment_ids"][r, span] = row.segments
        return self._finish_batch(batch, rows, lang, side)

    def encode_words(self, words, max_length=None, lang=None):
        """Transformers' `tokenizer(words, is_split_into_words=True, truncation=True, max_length=...)` for a
        Python tokenizer (each word tokenized on its own): (the Row, each token's word index, None for
        special tokens)."""
        words = _as_texts(list(words), "words")
        pieces = self._tokenize(words, lang) if words else []
        tokens = [(t, NO_SPAN) for piece in pieces for t in piece]
        owners = [w for w, piece in enumerate(pieces) for _ in piece]
        if max_length is not None:
            keep = max(max_length - self.num_special_tokens_to_add(False), 0)
            tokens, owners = tokens[:keep], owners[:keep]
        return self.with_special_tokens(tokens), [None, *owners, None]

    def windows(self, text, pair, max_length, stride, lang=None) -> list:
        """Transformers' `tokenizer(text, pair, truncation="only_second", max_length=..., stride=...,
        return_overflowing_tokens=True, return_offsets_mapping=True)` (a long context with its question):
        the pair's tokens in windows of the room `max_length` leaves beside the text, each starting
        `room - stride` tokens after the last, until one reaches the end (the tokenizers library's
        windows). Returns [(Row with offsets, position of its first pair token, index of that token in the
        pair)]."""
        (a,), (b,) = self._tokenize_pairs([text], [pair], lang, offsets=True)
        room = max_length - len(a) - self.num_special_tokens_to_add(True)
        if room <= 0:
            raise TokenizerError(f"the first text's {len(a)} tokens and {self.num_special_tokens_to_add(True)} "
                                 f"special tokens leave no room for the second in max_length {max_length}")
        if len(b) > room and stride >= room:
            raise TokenizerError(f"stride {stride} must be less than the room for the second text in a window "
                                 f"({room} tokens: max_length {max_length} less the first text and special tokens)")
        windows, start = [], 0
        while True:
            part = b[start:start + room]
            row = self.with_special_tokens(a, part)
            windows.append((row, len(row.ids) - len(part) - 1, start))
            if start + room >= len(b):
                return windows
            start += room - stride

    def _finish_batch(self, batch, rows, lang, side=None):
        """A format's extra inputs (XLM: lang_ids)."""
        return batch

    # ---- text --------------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens) -> str:
        """== Transformers' `convert_tokens_to_string` (its decoder on token strings)."""
        return self._join(list(tokens))

    def decode(self, ids, skip_special_tokens=False):
        """== Transformers' `tokenizer.decode`; a batch ([[ids], ...] or 2-D) gives a list."""
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple, np.ndarray)):
            return [self.decode(row, skip_special_tokens) for row in ids]
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row, skip_special_tokens) for row in ids]
        text = self._join(self._decode_tokens(ids, skip_special_tokens))
        if self.clean_up_tokenization_spaces:
            for a, b in _CLEAN_UP:
                text = text.replace(a, b)
        return text


def _as_texts(texts, what):
    """A list of str for a str or a sequence of str; a one-line TokenizerError for anything else or for
    text that is not Unicode (a lone surrogate: what undecodable bytes become in Python)."""
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (list, tuple)):
        texts = list(texts)
    else:
        raise TokenizerError(f"{what}: expected a str or a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TokenizerError(f"{what}[{i}]: expected a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(f"{what}[{i}] is not valid Unicode: {text[e.start]!r} at {e.start} is a lone "
                                 "surrogate (bytes that were not UTF-8?)") from None
    return texts


def _check_max_length(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
        raise TokenizerError(f"max_length must be a whole number >= 0 or None, not {value!r}")


_TRUNCATION = {True: "longest_first", False: False, "longest_first": "longest_first", "do_not_truncate": False,
               "only_first": "only_first", "only_second": "only_second"}


def _truncation(value):
    """Transformers' truncation values: True / "longest_first", "only_first", "only_second", False /
    "do_not_truncate"; the strategy's name, or False."""
    if isinstance(value, (bool, str)) and value in _TRUNCATION:
        return _TRUNCATION[value]
    raise TokenizerError(f"truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
                         f"'do_not_truncate', not {value!r}")
