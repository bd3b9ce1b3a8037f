"""SentencePiece tokenizers (ALBERT, XLM-RoBERTa) giving Transformers' ids, in Python and in TF graphs.

One graph serves every path: tf-text's whitespace splitter (ASCII whitespace), then its
`FastSentencepieceTokenizer` custom op on each word with a *folded* model (Transformers' whole
normaliser, its special tokens and its piece scores compiled into one SentencePiece model at
conversion time: kzoo.converters.sentencepiece says how and why), consecutive unknown pieces fused
into one, and one `tf.gather` from the folded model's ids to Transformers' ids. Eager Python
(`encode`, `__call__`), `tf.function`, SavedModel and TFLite all run that graph: these are the only
tokenizer ops TFLite runs.

Files in a model dir: kzoo_tokenizer.model (the folded model), kzoo_tokenizer.json (special and added
tokens, the id table) and copies of the Hugging Face files it came from. Loading needs neither
Transformers, torch nor the `tokenizers` library.

Its known differences from Transformers are listed in
kzoo.converters.sentencepiece.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from kzoo.errors import TokenizerError
from kzoo.tokenizers import graphemes
from kzoo.tokenizers.base import Tokenizer
from kzoo.tokenizers.graph_encode import assemble, check_pairs
from kzoo.traced import traced

MODEL_FILE = "kzoo_tokenizer.model"  # the folded SentencePiece model
FORMAT = "kzoo-sentencepiece"
FORMAT_VERSION = 1
SPACE = "\u2581"  # ▁
# Rust's char::is_whitespace (Unicode White_Space): what Transformers' tokenizers treat as whitespace.
WHITESPACE = frozenset(
    map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
              0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
)


def token_spans(text, normalized, origin, lengths, markers, vanishes=lambda c: False) -> list:
    """Transformers' offsets of the tokens covering `lengths` normalized characters each, in order.

    origin[i]: where normalized character i starts in `text` (sentencepiece's alignment). As the
    `tokenizers` library aligns its normalizer: a normalized character spans the first original
    character it comes from (a composed "é" from "e" + U+0301 spans the "e"; both of "fi" from "ﬁ"
    span the "ﬁ"), except ALBERT's quote rule, whose '"' spans the second character of `` or '';
    a word's `▁` spans the word's first character; an added token (a marker) spans its own text, and
    the whitespace before / after it when it is an lstrip / rstrip AddedToken.
    markers: {marker character: (the added token's text, lstrip, rstrip)}. vanishes(c): the character
    normalizes to nothing or to whitespace on its own (not part of a rewrite it follows).
    """

    starts = sorted(set(origin[:len(normalized)])) + [len(text)]
    chunk = {}  # input characters of each rewrite (up to the first one after it that vanishes)
    for a, b in zip(starts, starts[1:]):
        chunk[a] = next((k for k in range(a + 1, b) if vanishes(text[k])), b) - a
    first, size = {}, collections.Counter()  # its output characters (but ▁)
    for i, c in enumerate(normalized):
        if c != SPACE:
            first.setdefault(origin[i], i)
            size[origin[i]] += 1

    def span(i):
        if normalized[i] == SPACE:  # Metaspace's ▁ points at the word's first character
            return span(i + 1) if i + 1 < len(normalized) and normalized[i + 1] != SPACE else None
        start = origin[i]
        # as the tokenizers library aligns a rewrite of C characters: its first C output characters one to one,
        # the rest with the last (an identity, "ﬁ" -> "fi", "½" + a dropped mark -> "1⁄2"; "e" + U+0301 -> "é")
        start += min(i - first[start], chunk[start] - 1)
        if normalized[i] == '"' and text[start:start + 2] in ("``", "''"):
            start += 1
        return start, start + 1

    spans, position = [], 0
    for length in lengths:
        chars = range(position, position + length)
        position += length
        marker = [i for i in chars if normalized[i] in markers]
        if marker:
            content, lstrip, rstrip = markers[normalized[marker[0]]]
            start = end = origin[marker[0]]
            end += len(content)
            while lstrip and start > 0 and text[start - 1] in WHITESPACE:
                start -= 1
            while rstrip and end < len(text) and text[end] in WHITESPACE:
                end += 1
            spans.append((start, end))
            continue
        covered = [s for s in map(span, chars) if s is not None]
        spans.append((min(s for s, _ in covered), max(e for _, e in covered)) if covered else (0, 0))
    return spans


@dataclasses.dataclass
class Vocabulary:
    """A folded tokenizer's plain (non-TF) data, saved in kzoo_tokenizer.json."""

    family: str
    template: str  # Tokenizer.template: "bert" or "roberta"
    specials: dict  # attr ("cls_token", ...) -> token
    special_ids: dict  # attr -> id
    all_special_tokens: list
    added: dict  # content -> [id, special]
    strip: dict  # content -> [lstrip, rstrip] of the added tokens with either (their offsets take in whitespace)
    id_to_token: list
    clean_up_tokenization_spaces: bool
    source_files: list  # the Hugging Face files it came from (copied by `save`)
    token_to_id: dict = dataclasses.field(default_factory=dict)  # built lazily
    alignment: tuple = None  # (sentencepiece processor, markers) for offsets, built lazily
    # what the folded charsmap deletes, put between the characters of long graphemes (kzoo.tokenizers.graphemes);
    # None in model dirs converted before kzoo had it
    grapheme_marker: str | None = None


def _splitter_config(codepoints) -> bytes:
    """tf-text's whitespace-splitter config: a bitmap of the code points to split on (bit cp % 8 of byte cp // 8)."""
    bits = bytearray(max(codepoints) // 8 + 1)
    for cp in codepoints:
        bits[cp // 8] |= 1 << (cp % 8)
    return bytes(bits)


_ASCII_SPACES = _splitter_config([*range(0x09, 0x0E), 0x20])  # \t \n \v \f \r and " ": Unicode White_Space
_ASCII_SPACE_RUNS = re.compile("[\t\n\v\f\r ]+")  # the same, for the Python side


def _marker_pieces(folded_model: bytes, id_map) -> np.ndarray:
    """Which folded ids are added tokens' markers: `▁M` pieces appended past Transformers' vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(folded_model)
    differ = np.flatnonzero(id_map != np.arange(len(id_map)))  # from the first appended piece (the unk copy) on
    markers = np.zeros(len(id_map), bool)
    for i in range(int(differ[0]) if len(differ) else len(id_map), len(id_map)):
        piece = proto.pieces[i].piece
        markers[i] = len(piece) == 2 and piece[0] == SPACE
    return markers


class SentencePieceTokenizer(Tokenizer, tf.Module):
    """Transformers-exact ALBERT / XLM-RoBERTa tokenizer on tf-text's FastSentencepieceTokenizer.

    Python (`encode`, `__call__`, `decode`) and graph (`tf_tokenize`, `tf_encode`) share the graph path.
    """

    FORMAT = FORMAT
    trains_in_graph = True
    graph_offsets = True  # (tf_encode's offset_mapping, word_offsets)

    def __init__(self, folded_model: bytes, id_map, vocabulary: Vocabulary, name=None):
        tf.Module.__init__(self, name=name or "sentencepiece_tokenizer")
        import tensorflow_text as tf_text

        self._folded_model = bytes(folded_model)
        self._info = vocabulary  # a plain dataclass: not wrapped by tf.Module's tracking
        self._id_map_np = np.asarray(id_map, np.int32)
        # Pieces that stand for unknown text (fused when consecutive): the unknown piece, its NORMAL copy
        # and the unknown-character stand-in; not the marker `▁M` of an added token "<unk>" (Transformers
        # cuts added tokens out before its model, so they are never fused).
        self._unknown_np = (self._id_map_np == vocabulary.special_ids.get("unk_token")) & ~_marker_pieces(
            self._folded_model, self._id_map_np)
        # Words are tokenized one at a time unless an added token holds ASCII whitespace (it could not
        # match across the cut): then whole strings, whose score sums stay exact for ~100 words only.
        self._split_words = not any(_ASCII_SPACE_RUNS.search(t) for t in vocabulary.added)
        with self.name_scope:
            self._sp = tf_text.FastSentencepieceTokenizer(self._folded_model)
            self._id_map = tf.constant(self._id_map_np, name="id_map")
            self._unknown = tf.constant(self._unknown_np, name="unknown_pieces")
        self._piece_table = None  # built on first use by tf_tokenize_with_offsets
        # Python's graph, traced on first use (exports and servers trace their own)
        self._tokenize_fn, self._tracing = None, threading.Lock()

    @property
    def template(self):
        return self._info.template

    @property
    def clean_up_tokenization_spaces(self):
        return self._info.clean_up_tokenization_spaces

    @property
    def _specials(self):
        return self._info.specials

    @property
    def _all_special(self):
        return self._info.all_special_tokens

    # ---- persistence -------------------------------------------------------------------------------

    def save(self, out_dir):
        """Writes kzoo_tokenizer.model (folded), kzoo_tokenizer.json and copies of the HF tokenizer files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(self._folded_model)
        info = self._info
        base = next((i for i, v in enumerate(self._id_map_np) if i != v), len(self._id_map_np))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": info.family,
            "template": info.template,
            "model_file": MODEL_FILE,
            "vocab_size": len(info.id_to_token),
            "special_tokens": info.specials,
            "special_token_ids": info.special_ids,
            "all_special_tokens": info.all_special_tokens,
            "added_tokens": [{"content": c, "id": i, "special": s, **self._strip_flags(c)}
                             for c, (i, s) in sorted(info.added.items(), key=lambda kv: kv[1][0])],
            # folded model id -> Transformers id: identity below `identity_below`, then `tail`
            "id_map": {"identity_below": int(base), "tail": self._id_map_np[base:].tolist()},
            # Transformers tokens of ids the folded model has no piece for (added tokens past the vocab)
            "extra_tokens": {str(i): t for i, t in enumerate(info.id_to_token) if i >= base},
            "clean_up_tokenization_spaces": info.clean_up_tokenization_spaces,
            "source_files": [Path(f).name for f in info.source_files],
            **({"grapheme_marker": info.grapheme_marker} if info.grapheme_marker else {}),
        }
        (out / self.META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        for f in map(Path, info.source_files):
            if f.is_file() and (out / f.name).resolve() != f.resolve():
                shutil.copyfile(f, out / f.name)

    def _strip_flags(self, content):
        lstrip, rstrip = self._info.strip.get(content, (False, False))
        return {"lstrip": lstrip, "rstrip": rstrip} if lstrip or rstrip else {}

    @classmethod
    def load(cls, model_dir, meta=None) -> "SentencePieceTokenizer":
        """The tokenizer of a kzoo model dir (meta: its kzoo_tokenizer.json, when already read)."""
        from google.protobuf.message import DecodeError
        from sentencepiece import sentencepiece_model_pb2 as pb

        d = Path(model_dir)
        try:
            meta = meta or json.loads((d / cls.META_FILE).read_text())
            model_file = d / meta.get("model_file", MODEL_FILE)
            folded = model_file.read_bytes()
        except FileNotFoundError as e:
            raise TokenizerError(f"{d}: no kzoo tokenizer ({Path(e.filename).name} is missing)") from None
        except json.JSONDecodeError as e:
            raise TokenizerError(f"{d / cls.META_FILE}: not valid JSON ({e})") from None
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise TokenizerError(f"{d / cls.META_FILE}: format_version {meta['format_version']} is newer than this kzoo")
        proto = pb.ModelProto()
        try:
            proto.ParseFromString(folded)
        except DecodeError:
            raise TokenizerError(f"{model_file}: not a SentencePiece model (corrupt or truncated)") from None
        base = meta["id_map"]["identity_below"]
        if len(proto.pieces) < base:
            raise TokenizerError(f"{model_file}: {len(proto.pieces)} pieces where {cls.META_FILE} says at least {base} "
                                 "(empty, damaged or another model's)")
        id_map = list(range(base)) + list(meta["id_map"]["tail"])
        id_to_token = [p.piece for p in proto.pieces[:base]]
        id_to_token += [None] * (meta["vocab_size"] - len(id_to_token))
        for i, t in meta.get("extra_tokens", {}).items():
            id_to_token[int(i)] = t
        vocabulary = Vocabulary(
            family=meta["family"],
            # (tokenizers saved before the template was stored: XLM-R's is "roberta")
            template=meta.get("template") or ("roberta" if meta["family"] == "xlm-roberta" else "bert"),
            specials=meta["special_tokens"],
            special_ids=meta["special_token_ids"],
            all_special_tokens=meta["all_special_tokens"],
            added={t["content"]: [t["id"], t["special"]] for t in meta["added_tokens"]},
            strip={t["content"]: [t.get("lstrip", False), t.get("rstrip", False)] for t in meta["added_tokens"]
                   if t.get("lstrip") or t.get("rstrip")},
            id_to_token=id_to_token,
            clean_up_tokenization_spaces=meta.get("clean_up_tokenization_spaces", False),
            source_files=[str(d / f) for f in meta.get("source_files", [])],
            grapheme_marker=meta.get("grapheme_marker"),
        )
        return cls(folded, id_map, vocabulary)

    # ---- vocabulary -----------------------------------------------------------------------------

    @property
    def family(self) -> str:
        return self._info.family

    @property
    def vocab_size(self) -> int:
        return len(self._info.id_to_token)

    def _special_id(self, attr):
        return self._info.special_ids.get(attr)

    def convert_ids_to_tokens(self, ids) -> list:
        if isinstance(ids, (int, np.integer)):
            return self._info.id_to_token[int(ids)]
        return [self._info.id_to_token[int(i)] for i in ids]

    def convert_tokens_to_ids(self, tokens):
        lookup = self._info.token_to_id
        if not lookup:
            for i, t in enumerate(self._info.id_to_token):
                lookup.setdefault(t, i)
            lookup.update({t: i for t, (i, _) in self._info.added.items()})
        if isinstance(tokens, str):
            return lookup.get(tokens, self.unk_token_id)
        return [lookup.get(t, self.unk_token_id) for t in tokens]

    # ---- in graph ---------------------------------------------------------------------------------

    def tf_tokenize(self, strings) -> tf.RaggedTensor:
        """Transformers ids without special tokens, int32 RaggedTensor [batch, (tokens)], for 1-D strings."""
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank == 0:  # a scalar string: a 1-D tensor of ids
            return self.tf_tokenize(tf.reshape(strings, [1])).flat_values
        folded = self._folded(strings)
        return folded.with_flat_values(tf.gather(self._id_map, folded.flat_values))

    def _folded(self, strings) -> tf.RaggedTensor:
        """The folded model's ids [batch, (tokens)], each word tokenized on its own, as Transformers does
        (its pre-tokenizer splits words before the Viterbi): the op sums scores in float32, and a word's
        short sums stay exact on the folded model's score grid (kzoo.converters.sentencepiece), where one
        sum over a whole text would not. Words are cut at ASCII whitespace only: tf-text's splitter leaves
        a multi-byte space's lead bytes in the word before it, and the folded charsmap turns the other
        Unicode spaces into word boundaries inside the op anyway."""
        # (the op behind tf_text.WhitespaceTokenizer, which takes no other set of spaces)
        from tensorflow_text.python.ops.whitespace_tokenizer import gen_whitespace_tokenizer_v2 as whitespace_ops

        strings = self._marked(strings)
        if not self._split_words:
            return self._fuse_unknowns(self._sp.tokenize(strings))
        words, splits, _, _ = whitespace_ops.tf_text_whitespace_tokenize_with_offsets_v2(
            input_values=strings, input_config=_ASCII_SPACES)
        pieces = self._fuse_unknowns(self._sp.tokenize(words))  # [words, (pieces)]
        return tf.RaggedTensor.from_row_splits(pieces.flat_values, tf.gather(pieces.row_splits, splits),
                                               validate=False)

    def _marked(self, strings):
        """1-D `strings` with the grapheme marker inside graphemes of 6 bytes or more (Transformers rewrites
        those character by character; kzoo.tokenizers.graphemes), for the op; `strings` for a folded model
        without the marker's rule."""
        if self._info.grapheme_marker is None:
            return strings
        return graphemes.marked(strings, self._info.grapheme_marker)

    def tf_tokenize_with_offsets(self, strings):
        """(ids, starts, ends, word_starts, word_ends): int32 RaggedTensors [batch, (tokens)]: `tf_tokenize`'s
        ids, each token's character span in its text and its word's (between ASCII whitespace: the words
        Transformers' pre-tokenizer sees in most text), for 1-D strings; builtin TFLite ops and tf-text's only.

        The op gives no offsets, so they are counted: a word's pieces cover its normalized characters in
        order, each its own characters but `▁` (an added token's marker: what its text normalizes to; the
        stand-in for a character the vocabulary lacks: one), and each character of the text normalizes to a
        known number of characters (`_piece_tables`' per-code-point table of the folded charsmap; 0 for a
        removed one, 2 for "ﬁ"), so each token's normalized characters lead back to the characters they
        came from, with Transformers' rules of `token_spans` (a lone `▁` spans the character after it,
        lstrip / rstrip added tokens take in the whitespace). A grapheme a rule on a sequence rewrote
        (composed NFD marks) takes the length the word's pieces leave it (`_rewritten_graphemes`). In a
        word where the pieces still do not add up to the count (such graphemes it cannot tell apart, or
        beside an unknown piece; ALBERT's `` -> ", a rule across graphemes; runs of non-ASCII spaces), or
        that holds two unknown pieces (runs of characters of unknown lengths), every token of the word
        spans the whole word. Python's `__call__(return_offsets_mapping=True)` aligns those too.
        """
        from tensorflow_text.python.ops.whitespace_tokenizer import gen_whitespace_tokenizer_v2 as whitespace_ops

        strings = tf.convert_to_tensor(strings, tf.string)
        chars, leading, marker, lstrip, rstrip, block_of, blocks = self._piece_tables()
        # Each character's code point, then how many characters it normalizes to, and for each normalized
        # character the character it came from: the number of characters that end at or before it.
        characters = graphemes.characters(strings)
        byte_splits, before, code = characters.byte_splits, characters.before, characters.code
        norm = tf.gather(blocks, tf.gather(block_of, code // 256) * 256 + code % 256)  # [chars]
        norm, to_space, starts, continues = norm % 256, norm // 256 % 2, norm // 512 % 2, norm // 1024
        # a character that starts a rule on a sequence followed by one that can continue it: the table's
        # count of its word may be wrong
        # (the grapheme marker keeps rules from matching inside long graphemes); the op's words are the
        # marked text's (the marker is no whitespace: the same words, in the same order)
        if self._info.grapheme_marker is None:
            marked, split = strings, tf.zeros_like(code)
        else:
            marked, marks = graphemes.marked(strings, self._info.grapheme_marker, with_marks=True)
            split = tf.cast(marks.flat_values, tf.int32)
        sequence = starts * tf.concat([continues[1:] * (1 - split[1:]), [0]], 0)
        text_base = tf.gather(byte_splits, tf.range(tf.size(byte_splits) - 1))  # each text's first byte
        if self._split_words:
            _, splits, word_start, word_end = whitespace_ops.tf_text_whitespace_tokenize_with_offsets_v2(
                input_values=strings, input_config=_ASCII_SPACES)
            words = whitespace_ops.tf_text_whitespace_tokenize_with_offsets_v2(
                input_values=marked, input_config=_ASCII_SPACES)[0]
        else:  # the whole text is one word
            words, splits = marked, tf.range(tf.size(strings) + 1)
            word_start = tf.zeros_like(text_base)
            word_end = byte_splits[1:] - text_base
        splits = tf.cast(splits, tf.int32)
        word_text = tf.cast(tf.RaggedTensor.from_row_splits(tf.zeros([splits[-1]], tf.int32), splits,
                                                            validate=False).value_rowids(), tf.int32)

        def char(byte_offset, text):  # a byte offset in a text -> the character's index in all texts
            return tf.gather(before, tf.gather(text_base, text) + tf.cast(byte_offset, tf.int32))

        text_first = char(0, tf.range(tf.size(text_base)))
        w_first, w_after = char(word_start, word_text), char(word_end, word_text)
        norm = self._op_spaces(norm, to_space, w_first, w_after)
        norm_before = tf.concat([[0], tf.cumsum(norm)], 0)  # [chars + 1]
        w_start, w_end = w_first - tf.gather(text_first, word_text), w_after - tf.gather(text_first, word_text)
        text_chars = char(byte_splits[1:] - text_base, tf.range(tf.size(text_base))) - text_first
        w_norm = tf.gather(norm_before, w_after) - tf.gather(norm_before, w_first)  # by the table
        first_of_text = tf.gather(splits, word_text)
        w_index = tf.range(tf.size(word_text))
        # whitespace before / after each word, to the previous / next word of its text
        space_from = tf.where(w_index > first_of_text, tf.gather(w_end, tf.maximum(w_index - 1, 0)), 0)
        space_to = tf.where(w_index + 1 < tf.gather(splits, word_text + 1),
                            tf.gather(w_start, tf.minimum(w_index + 1, tf.size(word_text) - 1)),
                            tf.gather(text_chars, word_text))

        pieces = self._sp.tokenize(words)  # [words, (pieces)]
        pieces, length = self._fuse_unknowns(pieces, tf.gather(chars, pieces.flat_values))
        ids, piece_splits = pieces.flat_values, tf.cast(pieces.row_splits, tf.int32)
        word = tf.cast(pieces.value_rowids(), tf.int32)
        n_words = tf.size(word_text)
        position = tf.range(tf.size(ids))
        first = tf.equal(position, tf.gather(piece_splits, word))
        last = tf.equal(position + 1, tf.gather(piece_splits, word + 1))
        is_marker = tf.gather(marker, ids)
        after_marker = tf.gather(is_marker, tf.maximum(position - 1, 0)) & ~first
        # a ▁ inside a word stands for a (non-ASCII) space there; the word's first ▁ and one after a marker
        # are the normaliser's own
        space = tf.cast(tf.gather(leading, ids) & ~first & ~after_marker, tf.int32)
        unknown = length < 0  # the unknown piece (a run of unknown characters: as many as the others leave)
        per_word = lambda x: tf.math.unsorted_segment_sum(x, word, n_words)  # noqa: E731
        n_unknown = per_word(tf.cast(unknown, tf.int32))
        known = per_word(tf.where(unknown, 0, length) + space)
        norm, w_known = self._rewritten_graphemes(characters, norm, sequence, w_first, w_after, w_norm - known,
                                                  n_unknown)
        norm_before = tf.concat([[0], tf.cumsum(norm)], 0)
        owner = tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(norm), norm_before[1:], norm_before[-1] + 1))
        w_norm_start = tf.gather(norm_before, w_first)
        w_norm = tf.gather(norm_before, w_after) - w_norm_start  # the word's normalized characters
        length = tf.where(unknown, tf.gather(w_norm - known, word), length)
        taken = length + space
        counted = tf.equal(per_word(taken), w_norm) & w_known & (n_unknown < 2) & tf.equal(
            per_word(tf.cast(unknown & (length < 1), tf.int32)), 0)
        cum = tf.cumsum(taken, exclusive=True)
        cum -= tf.gather(tf.concat([cum, [0]], 0), tf.gather(piece_splits, word))
        # the token's first and last normalized characters (a lone ▁: the one after it), in all texts
        first_norm = tf.gather(w_norm_start, word) + cum + space
        last_norm = first_norm + tf.maximum(length, 1) - 1
        top = tf.size(owner) - 1
        base = tf.gather(tf.gather(text_first, word_text), word)
        start = tf.gather(owner, tf.minimum(first_norm, top)) - base
        end = tf.gather(owner, tf.minimum(last_norm, top)) + 1 - base
        past = tf.equal(length, 0) & (first_norm >= tf.gather(w_norm_start + w_norm, word))  # a ▁ ending its word
        start, end = tf.where(past, 0, start), tf.where(past, 0, end)
        start = tf.where(tf.gather(lstrip, ids) & first, tf.gather(space_from, word), start)
        end = tf.where(tf.gather(rstrip, ids) & last, tf.gather(space_to, word), end)
        whole = tf.gather(counted, word)
        start = tf.where(whole, start, tf.gather(w_start, word))
        end = tf.where(whole, end, tf.gather(w_end, word))
        rows = tf.gather(piece_splits, splits)
        ragged = lambda x: tf.RaggedTensor.from_row_splits(x, rows, validate=False)  # noqa: E731
        return (ragged(tf.gather(self._id_map, ids)), ragged(start), ragged(end),
                ragged(tf.gather(w_start, word)), ragged(tf.gather(w_end, word)))

    @staticmethod
    def _rewritten_graphemes(chars, norm, sequence, w_first, w_after, excess, unknowns):
        """(`norm` with Transformers' lengths for the characters of graphemes a rule on a sequence rewrote,
        [words]: whether each word's lengths are known: it has no such grapheme, or they are resolved).

        Transformers' Precompiled normaliser rewrites a whole grapheme (under 6 bytes) that a rule starts,
        to m characters: the i-th comes from the grapheme's i-th character, the rest of those are removed
        (m < k characters) or the extra ones come from its last (m > k). The table cannot tell m (the rules
        on sequences are ~1M), but a word's pieces can: `excess` [words] is how many more characters the
        table gives the word than its pieces cover (a word with no unknown piece). A word's only such
        grapheme takes the difference; several become one character each (compositions) or keep their
        lengths, whichever adds up. Otherwise (or a rule across graphemes: ALBERT's `` -> ") the word's
        lengths stay unknown."""
        n = tf.size(norm)
        index = tf.range(n)
        grapheme, n_bytes = graphemes.clusters(chars)
        per_grapheme = lambda f, x: f(x, grapheme, n)  # noqa: E731
        n_words = tf.size(w_first)
        word = tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(w_first), w_first, n + 1))[:-1] - 1
        # (gathers by word read a last 0 / False: a batch may have no word at all)
        at = lambda x, i: tf.gather(tf.concat([x, tf.zeros([1], x.dtype)], 0), i)  # noqa: E731
        word = tf.where((word >= 0) & (index < at(w_after, tf.maximum(word, 0))), word, -1)  # -1: none
        next_one = lambda x: tf.concat([x[1:], [-1]], 0)  # noqa: E731
        inside = tf.equal(next_one(grapheme), grapheme)  # the next character is in its grapheme
        j = index - tf.gather(per_grapheme(tf.math.unsorted_segment_min, index), grapheme)  # place in it
        # Transformers looks up rules from a grapheme's first character only (inside another one, each
        # character is rewritten alone: the table's count, which the word's pieces check)
        flagged = per_grapheme(tf.math.unsorted_segment_max, sequence * tf.cast(inside & tf.equal(j, 0), tf.int32)) > 0
        flagged &= n_bytes < graphemes.LONG
        low, high = per_grapheme(tf.math.unsorted_segment_min, word), per_grapheme(tf.math.unsorted_segment_max, word)
        fixable = flagged & (low >= 0) & tf.equal(low, high)  # all its characters in one word
        g_word = tf.where(fixable, low, n_words)  # (n_words: none; an empty segment's min is the largest int32)
        k = per_grapheme(tf.math.unsorted_segment_sum, tf.ones_like(norm))
        total = per_grapheme(tf.math.unsorted_segment_sum, norm)
        per_word = lambda x, w=g_word: tf.math.unsorted_segment_sum(x, w, n_words + 1)[:n_words]  # noqa: E731
        count = per_word(tf.cast(fixable, tf.int32))
        # a rule across graphemes in a word (ALBERT's ``), or a grapheme in two words (or none): its words
        # stay unknown
        across = (sequence > 0) & ~inside & (word >= 0) & tf.equal(next_one(word), word)
        stuck = across | tf.gather(flagged & ~fixable, grapheme)
        stuck = per_word(tf.cast(stuck, tf.int32), tf.where(word >= 0, word, n_words))
        compose = tf.equal(excess, per_word(tf.where(fixable, total - 1, 0)))  # each one character
        keep = tf.equal(excess, 0) & tf.equal(per_word(tf.cast(fixable & tf.not_equal(total, k), tf.int32)), 0)
        w_known = tf.equal(stuck, 0) & (tf.equal(count, 0) | tf.equal(unknowns, 0) & (
            tf.equal(count, 1) | compose | keep))
        single = at(count, g_word) == 1
        m = tf.where(single, total - at(excess, g_word), tf.where(at(compose, g_word), 1, total))
        w_known &= tf.equal(per_word(tf.cast(fixable & (m < 0), tf.int32)), 0)
        kc, mc = tf.gather(k, grapheme), tf.gather(m, grapheme)
        rewritten = tf.where(mc <= kc, tf.cast(j < mc, tf.int32), tf.where(j < kc - 1, 1, 1 + mc - kc))
        apply = tf.gather(fixable & at(w_known & (count > 0), g_word), grapheme)
        return tf.where(apply, rewritten, norm), w_known

    @staticmethod
    def _op_spaces(norm, to_space, w_first, w_after):
        """`norm` (how many characters each character normalizes to) less the spaces the op removes in each
        word's normalized text: leading and trailing ones, and all but the first of a run (`to_space`: the
        character normalizes to one space)."""
        n = tf.size(norm)
        # each character's word: the last word starting at or before it (characters between words: ASCII
        # whitespace, in no word's count)
        word = tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(w_first), w_first, n + 1))[:-1] - 1
        word = tf.maximum(word, 0)

        def per_word(values):  # (a character in no word, also where no text has a word, reads a last 0)
            return tf.gather(tf.concat([values, [0]], 0), word)

        before = tf.concat([[0], tf.cumsum(norm)], 0)
        owner = tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(norm), before[1:], before[-1] + 1))
        # the character the previous normalized character came from, in the same word
        at_start = tf.equal(before[:-1], per_word(tf.gather(before, w_first)))
        previous = tf.minimum(tf.gather(owner, tf.maximum(before[:-1] - 1, 0)), n - 1)  # (n: nothing before)
        solid = tf.concat([[0], tf.cumsum(norm * (1 - to_space))], 0)  # normalized characters but spaces
        trailing = tf.equal(solid[1:], per_word(tf.gather(solid, w_after)))
        drop = (to_space > 0) & (at_start | tf.equal(tf.gather(to_space, previous), 1) | trailing)
        return tf.where(drop, 0, norm)

    @tf.autograph.experimental.do_not_convert  # (plain Python on numpy: converted, it took ~20 s to trace)
    def _piece_tables(self):
        """Per folded piece: normalized characters it covers (its own but `▁`; a marker: its added token's
        text's), starts with `▁`, is a marker, is an lstrip / rstrip added token; and how many characters
        each code point normalizes to, as two tables (block of 256 -> row; rows), the folded charsmap's
        rules on one character (a rule on a sequence is not in them: see tf_tokenize_with_offsets)."""
        if self._piece_table is None:  # numpy, cached: a tensor would belong to the first caller's graph
            from sentencepiece import sentencepiece_model_pb2 as pb

            processor, markers = self._alignment()
            model = pb.ModelProto()
            model.ParseFromString(self._folded_model)
            lengths, rows, block_of = _code_point_table(model.normalizer_spec.SerializeToString(), frozenset(markers))
            normalized = lambda text: int(sum(lengths[ord(c)] for c in text))  # noqa: E731
            pieces = [processor.IdToPiece(i) for i in range(processor.GetPieceSize())]
            marker = np.array([len(p) == 2 and p[0] == SPACE and p[1] in markers for p in pieces])
            chars = [normalized(markers[p[1]][0]) if m else len(p.replace(SPACE, "")) for p, m in zip(pieces, marker)]
            # an unknown piece: the stand-in for one character the vocabulary lacks (one each), or the
            # unknown piece itself, which the op gives for a run of them (-1: not known)
            chars = [(1 if len(p.replace(SPACE, "")) == 1 else -1) if unknown and not m else n
                     for p, m, n, unknown in zip(pieces, marker, chars, self._unknown_np)]
            strips = np.array([markers[p[1]][1:] if m else (False, False) for p, m in zip(pieces, marker)], bool)
            leading = np.array([p.startswith(SPACE) for p in pieces]) & ~marker
            self._piece_table = (np.array(chars, np.int32), leading, marker, strips[:, 0], strips[:, 1],
                                 block_of.reshape(-1).astype(np.int32), rows.reshape(-1))
        return [tf.constant(table) for table in self._piece_table]

    def _fuse_unknowns(self, pieces: tf.RaggedTensor, lengths=None):
        """Consecutive unknown pieces of a word as one, as Transformers' Unigram fuses them (the folded
        model has several pieces that mean unknown). With `lengths` (per piece): (fused, their sums)."""
        flat, rows = pieces.flat_values, pieces.value_rowids()
        unknown = tf.gather(self._unknown, flat)
        position = tf.range(tf.size(flat, out_type=rows.dtype), dtype=rows.dtype)
        before = tf.maximum(position - 1, 0)
        repeat = (position > 0) & unknown & tf.gather(unknown, before) & tf.equal(tf.gather(rows, before), rows)
        kept = tf.concat([tf.zeros([1], rows.dtype), tf.cumsum(tf.cast(~repeat, rows.dtype))], 0)
        fused = tf.RaggedTensor.from_row_splits(tf.boolean_mask(flat, ~repeat), tf.gather(kept, pieces.row_splits),
                                                validate=False)
        if lengths is None:
            return fused
        group = tf.cumsum(tf.cast(~repeat, tf.int32)) - 1  # the fused piece each piece joins
        n = tf.size(fused.flat_values)
        # (a run holding a piece of unknown length, -1, is of unknown length)
        return fused, tf.where(tf.math.unsorted_segment_min(lengths, group, n) < 0, -1,
                               tf.math.unsorted_segment_sum(lengths, group, n))

    def tf_encode(self, strings, sequence_length: int, pairs=None, offsets=False, truncation="only_second") -> dict:
        """Dense int32 [batch, sequence_length] token_ids / padding_mask / segment_ids, with specials, and
        truncated [batch] int32: 1 where a text had more tokens than fit.

        `<cls> A <sep>`, or with `pairs` the template's pair (`[CLS] A [SEP] B [SEP]`, B segment 1;
        `<s> A </s></s> B </s>`), right-padded with the pad id. A pair is cut as Transformers'
        truncation="only_second" (the question-answering pipeline's: B gives way, A only where it alone
        would not leave B one token) or "longest_first" (the tokenizers library's; classification's). With
        `offsets`, also offset_mapping [batch, sequence_length, 2] (each token's character span in its own
        text, `tf_tokenize_with_offsets`; (0, 0) for special tokens and padding), word_offsets [batch,
        sequence_length, 2] (the span of the token's word) and sequence_ids [batch, sequence_length] (0 for
        A's tokens, 1 for B's, -1 else: Transformers' `sequence_ids()`). Built from gathers and selects, so
        it converts to TFLite as well.
        """
        check_pairs(strings, pairs)
        parts = [self.tf_tokenize_with_offsets(x) if offsets else (self.tf_tokenize(x),)
                 for x in ([strings] if pairs is None else [strings, pairs])]
        out, place, sequence_ids = assemble(self, [part[0] for part in parts], sequence_length, truncation)
        if offsets:
            zero = tf.zeros_like(out["token_ids"])
            spans = lambda k: tf.stack([place([part[k] for part in parts], zero),  # noqa: E731
                                        place([part[k + 1] for part in parts], zero)], -1)
            out["offset_mapping"], out["word_offsets"] = spans(1), spans(3)
            out["sequence_ids"] = sequence_ids
        return out

    def tf_encode_words(self, words, sequence_length: int, tags=None) -> dict:
        """Pre-split words (a string RaggedTensor [batch, (words)]), each tokenized as a text of its own
        (Transformers' is_split_into_words): tf_encode's outputs, and with `tags` (int [batch, (words)])
        labels [batch, sequence_length]: each word's tag on its first token, -100 on its other tokens,
        the special tokens and padding (Transformers' token-classification examples)."""
        pieces = self.tf_tokenize(words.flat_values)  # [all words, (tokens)]
        rows = tf.gather(tf.cast(pieces.row_splits, tf.int64), tf.cast(words.row_splits, tf.int64))
        ids = tf.RaggedTensor.from_row_splits(pieces.flat_values, rows, validate=False)
        out, place, _ = assemble(self, [ids], sequence_length, "longest_first")
        if tags is not None:
            first = tf.equal(tf.ragged.range(pieces.row_lengths()).flat_values, 0)
            tag = tf.repeat(tf.cast(tags.flat_values, tf.int32), pieces.row_lengths())
            labels = tf.RaggedTensor.from_row_splits(tf.where(first, tag, -100), rows, validate=False)
            out["labels"] = place([labels], tf.fill(tf.shape(out["token_ids"]), -100))
        return out

    # ---- Python ------------------------------------------------------------------------------------

    def _tokenize(self, texts, lang=None) -> list:
        """Ids without specials for a list of str, through the graph path."""
        if not texts:
            return []
        ragged = self._tokenize_graph()(tf.constant([t.encode("utf-8") for t in texts], tf.string))
        values, splits = ragged.flat_values.numpy(), ragged.row_splits.numpy()
        return [values[splits[i]:splits[i + 1]].tolist() for i in range(len(texts))]

    def _tokenize_graph(self):
        """tf_tokenize on 1-D strings, traced once per tokenizer (and thread-safely)."""
        with self._tracing:
            if self._tokenize_fn is None:
                self._tokenize_fn = traced(self.tf_tokenize, [tf.TensorSpec([None], tf.string)])
            return self._tokenize_fn

    def _offsets(self, texts, ids) -> list:
        """Each token's (start, end) character span in its text, as Transformers' offset_mapping: the
        `sentencepiece` library's own normalizer, run on the folded model, aligns the normalized text
        with the original (see `token_spans`)."""
        processor, markers = self._alignment()

        @functools.lru_cache(maxsize=None)
        def vanishes(c):
            return not processor.Normalize(c).replace(SPACE, "").strip()

        spans = []
        for text, (op_text, origin_of), row in zip(texts, self._op_texts(texts), ids):
            normalized, origin = processor.Normalize(op_text, with_offsets=True)
            lengths = self._normalized_lengths(processor, op_text, row, len(normalized))
            found = token_spans(op_text, normalized, origin, lengths, markers, vanishes)
            spans.append([(origin_of[s], origin_of[e]) for s, e in found] if origin_of else found)
        return spans

    def _op_texts(self, texts) -> list:
        """[(the text the op sees (`_marked`), and for each of its character positions, up to its end, the
        text's position there (a marker's: the character after it); None where nothing was marked)]."""
        if self._info.grapheme_marker is None or not texts:
            return [(t, None) for t in texts]
        marked, marks = graphemes.marked(tf.constant([t.encode("utf-8") for t in texts], tf.string),
                                         self._info.grapheme_marker, with_marks=True)
        marks, splits, size = marks.flat_values.numpy(), marks.row_splits.numpy(), len(self._info.grapheme_marker)
        out = []
        for text, op_text, row in zip(texts, marked.numpy(), np.split(marks, splits[1:-1])):
            if not row.any():
                out.append((text, None))
                continue
            origin_of = np.repeat(np.arange(len(row)), 1 + size * row).tolist() + [len(text)]
            out.append((op_text.decode("utf-8"), origin_of))
        return out

    def _alignment(self):
        """(a sentencepiece processor of the folded model, {marker character: the added token's text})."""
        if self._info.alignment is None:
            import sentencepiece as spm

            processor = spm.SentencePieceProcessor(model_proto=self._folded_model)
            markers = {}
            for i in np.flatnonzero(self._id_map_np != np.arange(len(self._id_map_np))):  # the appended pieces
                piece = processor.IdToPiece(int(i))
                if len(piece) == 2 and piece[0] == SPACE:  # `▁M`: an added token's marker (a private-use character)
                    content = self._info.id_to_token[int(self._id_map_np[i])]
                    markers[piece[1]] = (content, *self._info.strip.get(content, (False, False)))
            self._info.alignment = (processor, markers)
        return self._info.alignment

    def _normalized_lengths(self, processor, text, row, total):
        """How many normalized characters each token of `row` covers: the processor's own segmentation,
        word by word as the op segments, when it gives the same ids as the op (it does on every test text:
        same pieces and scores); else the op's pieces, an unknown piece taking what the others leave."""
        words = [w for w in _ASCII_SPACE_RUNS.split(text) if w] if self._split_words else [text]
        ids, lengths = [], []
        for word in processor.Encode(words, return_type="offset_mapping") if words else []:
            for k, (i, piece) in enumerate(zip(word["ids"], word["pieces"])):
                if k and self._unknown_np[i] and self._unknown_np[word["ids"][k - 1]]:  # as `_fuse_unknowns`
                    lengths[-1] += len(piece)
                else:
                    ids.append(int(self._id_map_np[i]))
                    lengths.append(len(piece))
        if ids == list(row) and sum(lengths) == total:
            return lengths
        folded = np.asarray(self._folded(tf.constant([text.encode("utf-8")])).flat_values).tolist()
        lengths = [None if self._unknown_np[i] else len(processor.IdToPiece(i)) for i in folded]
        unknown = [k for k, n in enumerate(lengths) if n is None]
        rest = total - sum(n for n in lengths if n is not None)
        for k in unknown:
            lengths[k] = rest if k == unknown[-1] else min(1, rest)
            rest -= lengths[k]
        return lengths

    def _decode_tokens(self, ids, skip_special_tokens) -> list:
        special = {i for _, (i, s) in self._info.added.items() if s}
        tokens = []
        for i in ids.reshape(-1).tolist():
            if not 0 <= i < len(self._info.id_to_token) or self._info.id_to_token[i] is None:
                continue
            if skip_special_tokens and i in special:
                continue
            tokens.append(self._info.id_to_token[i])
        return tokens

    def _join(self, tokens) -> str:
        """Transformers' Metaspace decoder: ▁ -> space, the first one dropped."""
        text = "".join(tokens).replace(SPACE, " ")
        return text[1:] if text.startswith(" ") else text


@functools.lru_cache(maxsize=8)  # (seconds each: a charsmap holds ~1.7M rules; every export of a model asks)
def _code_point_table(normalizer_spec, markers):
    """(how many characters each code point normalizes to, and that with flags as two tables: block of 256
    -> row, rows) from a serialized NormalizerSpec's rules: +256 normalizes to one space, +512 starts a rule
    on a sequence (not an added token's: its pieces count it), +1024 continues one. Kept on disk too
    (kzoo.io.cache): ~9 s for XLM-R's charsmap, in every process that exports a model with it."""
    import sentencepiece as spm

    from kzoo.io.cache import disk_cached

    def dump(arrays):
        buffer = io.BytesIO()
        np.savez(buffer, *arrays)
        return buffer.getvalue()

    def load(data):
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return tuple(arrays[f"arr_{i}"] for i in range(3))

    arrays = disk_cached("code-points", (normalizer_spec, sorted(markers)),
                         lambda: _decompiled_table(normalizer_spec, markers), dump, load, source=__file__,
                         versions=(spm.__version__,))
    for array in arrays:
        array.flags.writeable = False  # (shared by the cache's callers)
    return arrays


def _decompiled_table(normalizer_spec, markers):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    spec = pb.NormalizerSpec()
    spec.ParseFromString(normalizer_spec)
    rules = spm.SentencePieceNormalizer(normalizer_spec=spec).decompile()
    lengths, spaces, starts, continues = (np.zeros(0x110000, np.int32) for _ in range(4))
    lengths[:] = 1
    single = [(ord(key), out) for key, out in rules if len(key) == 1]
    lengths[[c for c, _ in single]] = [len(out) for _, out in single]
    spaces[[c for c, out in single if out == " "]] = 1
    sequences = [key for key, out in rules if len(key) > 1 and key != graphemes.MARKER
                 and not any(c in markers for c in out)]
    starts[list({ord(c) for key in sequences for c in key[:-1]})] = 1
    continues[list({ord(c) for key in sequences for c in key[1:]})] = 1
    table = (np.minimum(lengths, 255) + 256 * spaces + 512 * starts + 1024 * continues).reshape(-1, 256)
    rows, block_of = np.unique(table, axis=0, return_inverse=True)
    return lengths, rows, block_of
