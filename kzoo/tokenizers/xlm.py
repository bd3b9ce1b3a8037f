"""XLM's tokenizer (Moses + BPE) giving Transformers 5.23's `XLMTokenizer` ids, without Transformers.

XLM was trained on text run through the Moses scripts (punctuation normalisation, tokenisation) and
fastBPE. Transformers reproduces that in Python with `sacremoses` (a faithful Python port of the Moses
Perl scripts); we call the same `sacremoses` classes with the same arguments, so every quirk of those
scripts is shared rather than re-implemented (kzoo.tokenizers.moses).

The pipeline, step for step Transformers' (`tokenization_xlm.py` + `tokenization_python.py`):

  1. added / special tokens (`<s>`, `</s>`, `<pad>`, `<unk>`, `<special0>`..`<special9>`; the mask
     token is `<special1>`) are cut out of the raw text (Transformers' trie scan) and kept whole;
     their lstrip / rstrip / single_word flags are honoured as Transformers does;
  2. each remaining piece is pre-tokenised: unicode punctuation replacement (Moses'
     replace-unicode-punctuation.perl), `MosesPunctNormalizer(lang).normalize`, removal of Unicode
     category C characters (tabs and newlines included), [Romanian normalisation for `ro`],
     `MosesTokenizer(lang).tokenize(escape=False)`; Chinese (rjieba), Thai (pythainlp) and
     Japanese (KyTea) use their own word segmenters instead (optional extras);
  3. lowercase + NFD + drop combining marks, when `do_lowercase_and_remove_accent`;
  4. BPE with `</w>` ending each word, merges ranked by their line in merges.txt; ids from vocab.json,
     unknown pieces -> `<unk>`;
  5. `<s> A </s>` or `<s> A </s> B </s>` (segment ids 0 for `<s> A </s>`, 1 for `B </s>`), Transformers'
     slow-tokenizer "longest_first" truncation, padding with `<pad>`.
  Decoding joins the tokens and turns `</w>` into spaces (XLM cannot restore Moses' splits).

Languages. Transformers 5.23 never passes a language to step 2: `PreTrainedTokenizer.tokenize`
calls `self._tokenize(text)` without keyword arguments, so `tokenizer(text, lang="fr")` silently
drops `lang` and every text is pre-tokenised with the English Moses rules (no Romanian step, no
Chinese / Thai / Japanese segmenter). That is what `XLMTokenizer` here does by default, so its ids
equal Transformers'. `lang` then only selects the language ids (`lang_ids`, XLM's `langs` input).
With `pretokenize_by_lang=True`, step 2 uses the given language as XLM's original preprocessing
did, equal to Transformers' `_tokenize(text, lang=lang)`; only then are the extras needed.
The default language is "en" (Transformers' own default for Moses and the language every
multilingual XLM checkpoint has); a model without "en" needs an explicit `lang`.

Files in a kzoo model dir: copies of the Transformers tokenizer files (vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json / added_tokens.json when present, so Transformers can
load the dir too) and kzoo_tokenizer.json (the resolved settings: special and added tokens, languages,
flags), written by kzoo.converters.xlm_tokenizer. `load` needs neither Transformers nor torch.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kzoo.errors import TokenizerError
from kzoo.tokenizers import moses
from kzoo.tokenizers.base import NO_SPAN, Tokenizer
from kzoo.tokenizers.moses import MissingExtraError

__all__ = ["MissingExtraError", "XLMTokenizer", "added_token", "read_json", "read_vocab_merges"]

# SquadExample's words (Transformers' question answering with a Python tokenizer): runs of characters other
# than " ", tab, CR, LF and U+202F
SQUAD_WORD = re.compile("[^ \t\r\n\u202f]+")


class WordWindows(NamedTuple):
    """`word_windows`: a context's words and tokens, and its windows beside the question."""

    words: list  # each word's (start, end) characters
    tokens: list  # the context's tokens (strings), each word tokenized alone
    owners: list  # each token's word
    windows: list  # [(Row, position of its first context token, index of that token in `tokens`)]

    def window_words(self, row, first, at) -> list:
        """A window's context tokens' words, as (start, end) characters."""
        return [self.words[w] for w in self.owners[at:at + len(row.ids) - first - 1]]


FORMAT = "kzoo-xlm-bpe"
FORMAT_VERSION = 1
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
# Transformers tokenizer files copied into a kzoo model dir (config.json is never touched).
HF_FILES = (VOCAB_FILE, MERGES_FILE, "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
# What kzoo_tokenizer.json keeps besides added tokens and file names (kzoo.converters.xlm_tokenizer).
SETTINGS = ("do_lowercase_and_remove_accent", "special_tokens", "all_special_tokens", "languages", "lang2id",
            "split_special_tokens", "clean_up_tokenization_spaces", "model_max_length", "padding_side",
            "truncation_side")

def read_json(path):
    """A JSON file's content, None when it does not exist."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None


def added_token(content, id_, special, lstrip=False, rstrip=False, single_word=False, **_):
    """An added token as kzoo_tokenizer.json stores it."""
    return {"content": content, "id": int(id_), "special": bool(special), "lstrip": bool(lstrip),
            "rstrip": bool(rstrip), "single_word": bool(single_word)}


def read_vocab_merges(directory: Path, vocab_file=VOCAB_FILE, merges_file=MERGES_FILE):
    """(vocab.json's {token: id}, merges.txt's pairs in rank order), read as Transformers reads them."""
    vocab = read_json(directory / vocab_file)
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{directory / vocab_file}: missing or not a JSON object")
    try:
        lines = (directory / merges_file).read_text(encoding="utf-8").split("\n")[:-1]
    except FileNotFoundError:
        raise TokenizerError(f"{directory}: no {merges_file}") from None
    # As Transformers: the last line is dropped (it expects a final newline), fields past 2 ignored.
    return vocab, [tuple(line.split()[:2]) for line in lines]


class XLMTokenizer(Tokenizer):
    """Transformers-exact XLM tokenizer (Moses pre-tokenisation, `</w>` BPE).

    settings: what kzoo_tokenizer.json holds (SETTINGS, added_tokens). source_dir: the dir holding
    the Transformers files (copied by `save`).
    """

    FORMAT = FORMAT
    python_truncation = True  # Transformers' XLMTokenizer is a Python tokenizer
    graph_offsets = False  # (nor has it offsets in Python)

    def __init__(self, vocab: dict, merges: list, settings: dict, source_dir=None, pretokenize_by_lang=None):
        try:
            import sacremoses
        except ImportError:
            raise MissingExtraError("XLM's tokenizer needs sacremoses: pip install sacremoses") from None
        self._sm = sacremoses
        self._settings = dict(settings)
        self._source_dir = Path(source_dir) if source_dir is not None else None
        if pretokenize_by_lang is None:
            pretokenize_by_lang = settings.get("pretokenize_by_lang", False)
        self.pretokenize_by_lang = bool(pretokenize_by_lang)
        self.do_lowercase_and_remove_accent = settings["do_lowercase_and_remove_accent"]
        self._lang2id = {code: int(i) for code, i in settings["lang2id"].items()}
        self.languages = [code for code, _ in sorted(self._lang2id.items(), key=lambda kv: kv[1])]
        self.model_max_length = settings.get("model_max_length")
        self.padding_side = settings.get("padding_side", "right")
        self.truncation_side = settings.get("truncation_side", "right")
        self.clean_up_tokenization_spaces = settings.get("clean_up_tokenization_spaces", False)

        self._encoder = vocab
        self._decoder = {v: k for k, v in vocab.items()}
        self._bpe_ranks = dict(zip(merges, range(len(merges))))
        self._bpe_cache = {}
        self._moses_normalizers, self._moses_tokenizers, self._segmenters = {}, {}, {}
        self._graph_ops, self._graph_lock = None, threading.Lock()

        # Added tokens: those from the files, then each special token not yet added (Transformers'
        # `_add_tokens`): its vocab.json id, or the next free id.
        self._added = {t["id"]: dict(t) for t in settings["added_tokens"]}
        added_ids = {t["content"]: t["id"] for t in self._added.values()}
        vocab_now = dict(vocab, **added_ids)
        next_id = len(vocab_now)
        for content in settings["all_special_tokens"]:
            if not content or content in added_ids:
                continue
            if content not in vocab_now:
                vocab_now[content] = next_id
                next_id += 1
            id_ = vocab_now[content]
            self._added[id_] = added_token(content, id_, True)
            added_ids[content] = id_
        self._added_ids = added_ids
        self._trie = moses.build_trie(added_ids)
        self._size = len(dict(vocab, **added_ids))
        self._specials = dict(settings["special_tokens"])
        self._all_special = list(settings["all_special_tokens"])

    # ---- persistence -------------------------------------------------------------------------------

    def save(self, out_dir):
        """Writes kzoo_tokenizer.json and copies of the Transformers tokenizer files (never config.json)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self._source_dir is None:
            raise TokenizerError("this tokenizer has no source files to save")
        copied = []
        for name in HF_FILES:
            src = self._source_dir / name
            if src.is_file():
                if not (out / name).exists() or (out / name).resolve() != src.resolve():
                    shutil.copyfile(src, out / name)
                copied.append(name)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": "xlm",
                "vocab_file": VOCAB_FILE, "merges_file": MERGES_FILE, "vocab_size": self.vocab_size,
                **{k: self._settings[k] for k in SETTINGS if k in self._settings},
                "added_tokens": [self._added[i] for i in sorted(self._added)],
                "pretokenize_by_lang": self.pretokenize_by_lang, "source_files": copied}
        (out / self.META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, model_dir, meta=None) -> "XLMTokenizer":
        """The tokenizer of a kzoo model dir (meta: its kzoo_tokenizer.json, when already read)."""
        d = Path(model_dir)
        meta = meta or read_json(d / cls.META_FILE)
        if meta is None:
            raise TokenizerError(f"{d}: no kzoo tokenizer ({cls.META_FILE} is missing)")
        if meta.get("format", FORMAT) != FORMAT:
            raise TokenizerError(f"{d / cls.META_FILE}: not an XLM tokenizer (format {meta.get('format')!r})")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise TokenizerError(f"{d / cls.META_FILE}: format_version {meta['format_version']} is newer than this kzoo")
        vocab, merges = read_vocab_merges(d, meta.get("vocab_file", VOCAB_FILE), meta.get("merges_file", MERGES_FILE))
        return cls(vocab, merges, meta, source_dir=d)

    # ---- vocabulary -----------------------------------------------------------------------------

    @property
    def family(self) -> str:
        return "xlm"

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens (vocab.json + added tokens) == `len(transformers_tokenizer)`."""
        return self._size

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            if tokens in self._added_ids:
                return self._added_ids[tokens]
            unk = self._encoder.get(self._specials.get("unk_token"))
            return self._encoder.get(tokens, unk if unk is not None else self._added_ids.get(
                self._specials.get("unk_token")))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, (int, np.integer)):
            i = int(ids)
            return self._added[i]["content"] if i in self._added else self._decoder.get(
                i, self._specials.get("unk_token"))
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    @property
    def bos_token_id(self) -> int:
        return self._special_id("bos_token")

    @property
    def cls_token_id(self) -> int:
        """The first token of every sequence, `<s>` (XLM's bos; Transformers' `cls_token` is `</s>`)."""
        return self.bos_token_id

    # ---- languages -------------------------------------------------------------------------------

    def _resolve_lang(self, lang) -> str | None:
        if lang is None:
            if not self.languages or "en" in self.languages:
                return "en"
            raise TokenizerError(f"this model has no 'en'; pass lang= one of: {', '.join(self.languages)}")
        if self.languages and lang not in self._lang2id:
            raise TokenizerError(f"unknown language {lang!r}; this model has: {', '.join(self.languages)}")
        return lang

    def lang_id(self, lang=None) -> int:
        """XLM's language id for `lang` (0 for a model without languages)."""
        return self._lang2id.get(self._resolve_lang(lang), 0) if self.languages else 0

    def _pair_langs(self, lang):
        if isinstance(lang, (tuple, list)):
            if len(lang) != 2:
                raise TokenizerError(f"lang must be a code or a (text, pair) pair of codes, got {lang!r}")
            return self._resolve_lang(lang[0]), self._resolve_lang(lang[1])
        lang = self._resolve_lang(lang)
        return lang, lang

    # ---- text -> tokens ------------------------------------------------------------------------

    def _moses(self, kind, lang):
        cache = self._moses_normalizers if kind == "norm" else self._moses_tokenizers
        if lang not in cache:
            cls = self._sm.MosesPunctNormalizer if kind == "norm" else self._sm.MosesTokenizer
            cache[lang] = cls(lang=lang)
        return cache[lang]

    def _moses_pipeline(self, text, lang):
        text = moses.replace_unicode_punct(text)
        text = self._moses("norm", lang).normalize(text)
        return moses.remove_non_printing_char(text)

    def _words(self, text, lang) -> list:
        """Pre-tokenisation of a piece of text (Transformers' `_tokenize` up to BPE)."""
        if lang not in moses.SEGMENTED:
            text = self._moses_pipeline(text, lang)
            if lang == "ro":
                text = moses.romanian_preprocessing(text)
            words = self._moses("tok", lang).tokenize(text, return_str=False, escape=False)
        elif lang == "zh":  # segment first, then Moses' normalisation
            words = self._moses_pipeline(" ".join(moses.segmenter(lang, self._segmenters)(text)), lang).split()
        else:
            words = moses.segmenter(lang, self._segmenters)(self._moses_pipeline(text, lang))
        if self.do_lowercase_and_remove_accent:
            words = moses.lowercase_and_remove_accent(words)
        return [w for w in words if w]

    def bpe(self, word: str) -> list:
        """BPE pieces of one word (Transformers' `bpe(word).split(" ")`, `</w>` on the last piece)."""
        if word not in self._bpe_cache:
            if len(self._bpe_cache) > 200_000:
                self._bpe_cache.clear()
            self._bpe_cache[word] = moses.bpe(word, self._bpe_ranks)
        return self._bpe_cache[word]

    def tokenize(self, text: str, lang=None) -> list:
        """Tokens of `text` without special tokens around it (Transformers' `tokenize`)."""
        lang = self._resolve_lang(lang)
        moses_lang = lang if self.pretokenize_by_lang else "en"
        if self._settings.get("split_special_tokens"):  # added tokens are plain text then
            return [piece for word in self._words(text, moses_lang) for piece in self.bpe(word)]
        pieces = self._split_added(text)
        tokens = []
        for piece in pieces:
            if not piece:
                continue
            if piece in self._added_ids or piece in self._all_special:
                tokens.append(piece)
            else:
                tokens += [bpe_piece for word in self._words(piece, moses_lang) for bpe_piece in self.bpe(word)]
        return tokens

    def _split_added(self, text) -> list:
        """`text` cut at added tokens, their rstrip / lstrip / single_word flags applied in place."""
        pieces = moses.split_on_added_tokens(text, self._trie)
        for i, piece in enumerate(pieces):
            if piece not in self._added_ids:
                continue
            tok = self._added[self._added_ids[piece]]
            left = pieces[i - 1] if i > 0 else None
            right = pieces[i + 1] if i < len(pieces) - 1 else None
            if tok["rstrip"] and right:
                pieces[i + 1] = right.lstrip()
            if tok["lstrip"] and left:
                pieces[i - 1] = left.rstrip()
            if tok["single_word"]:
                if left and left[-1] != " ":
                    pieces[i - 1] += piece
                    pieces[i] = ""
                elif right and right[0] != " ":
                    pieces[i + 1] = piece + pieces[i + 1]
                    pieces[i] = ""
        return pieces

    def _tokenize(self, texts, lang) -> list:
        return [self.convert_tokens_to_ids(self.tokenize(text, lang)) for text in texts]

    def encode(self, text, pair=None, lang=None, add_special_tokens=True, max_length=None,
               truncation=None) -> list:
        """== Transformers' `tokenizer(text, pair, add_special_tokens=..., max_length=...,
        truncation=...)["input_ids"]`. `lang`: a code, or (text's, pair's) codes."""
        return super().encode(text, pair, add_special_tokens=add_special_tokens, max_length=max_length,
                              truncation=truncation, lang=lang)

    def __call__(self, texts, pairs=None, lang=None, max_length=None, truncation=None, padding=None,
                 return_offsets_mapping=False, return_special_tokens_mask=False) -> dict:
        """Batch encoding like `tokenizer(texts, pairs, padding=..., truncation=..., max_length=...)`.

        numpy int32 [batch, length]: token_ids, padding_mask (1 token / 0 padding), segment_ids,
        lang_ids. -1 in segment_ids / lang_ids means "not given": the model adds no token-type /
        language embedding there, as Transformers' XLM called without `token_type_ids` / `langs`.
        lang_ids: with `lang`, the language id of each position (XLM's `langs`; with lang=(a, b) the
        pair part gets b's, padding a's); without, -1 everywhere, as Transformers' tokenizer returns
        no `langs` (so `model(tokenizer(texts))` computes what Transformers' model does on its
        tokenizer's output).
        segment_ids are all -1: XLM would add the *word* embedding of a token type, and neither the
        original XLM nor Transformers' tokenizer (model_input_names) feeds them.
        """
        return super().__call__(texts, pairs, max_length=max_length, truncation=truncation, padding=padding,
                                lang=lang, return_offsets_mapping=return_offsets_mapping,
                                return_special_tokens_mask=return_special_tokens_mask)

    def _finish_batch(self, batch, rows, lang, side=None):
        batch["segment_ids"][:] = -1
        if lang is None:
            batch["lang_ids"] = np.full_like(batch["token_ids"], -1)
            return batch
        lang_a, lang_b = self._pair_langs(lang)
        id_a, id_b = (self._lang2id.get(lang_a, 0), self._lang2id.get(lang_b, 0)) if self.languages else (0, 0)
        width = batch["token_ids"].shape[1]
        batch["lang_ids"] = np.full_like(batch["token_ids"], id_a)
        for r, row in enumerate(rows):
            start = width - len(row.ids) if (side or self.padding_side) == "left" else 0
            batch["lang_ids"][r, start + row.first:start + len(row.ids)] = id_b
        return batch

    # ---- inside a TF graph ---------------------------------------------------------------------------

    def graph_refusal(self) -> str | None:
        """Why this tokenizer cannot run inside a TF graph, or None."""
        if self.pretokenize_by_lang:
            return ("XLM's tokenizer runs in a TF graph with Transformers' English Moses rules only, and this one "
                    "pre-tokenises by language (pretokenize_by_lang)")
        odd = [t["content"] for t in self._added.values() if t.get("single_word")]
        if odd and not self._settings.get("split_special_tokens"):
            return ("XLM's tokenizer cannot run in a TF graph with single_word added tokens "
                    f"({', '.join(map(repr, odd))})")
        return None

    def _graph(self):
        """kzoo.tokenizers.moses_graph's ops for this vocabulary (built on first use, once)."""
        with self._graph_lock:
            if self._graph_ops is None:
                why = self.graph_refusal()
                if why:
                    raise TokenizerError(why)
                import tensorflow as tf

                from kzoo.tokenizers import moses_graph

                unk = self.convert_tokens_to_ids(self._specials.get("unk_token"))
                added = {} if self._settings.get("split_special_tokens") else dict(self._added_ids)
                with tf.init_scope():  # (eagerly, also when first asked for while a graph is traced)
                    self._graph_ops = moses_graph.Graph(
                        self._encoder, self._bpe_ranks, lambda s: unk if s is None else self.convert_tokens_to_ids(s),
                        added, self.do_lowercase_and_remove_accent)
            return self._graph_ops

    def tf_tokenize(self, strings):
        """Transformers ids without special tokens, int32 RaggedTensor [batch, (tokens)], for 1-D strings:
        the same as `encode(..., add_special_tokens=False)`, as TF ops that convert to TFLite
        (kzoo.tokenizers.moses_graph)."""
        import tensorflow as tf

        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank == 0:
            return self.tf_tokenize(tf.reshape(strings, [1])).flat_values
        return self._graph().tokenize(strings)

    def tf_encode(self, strings, sequence_length: int, pairs=None, offsets=False, truncation="only_second",
                  max_question_len=64) -> dict:
        """Dense int32 [batch, sequence_length] token_ids / padding_mask, `<s> A </s>` or `<s> A </s> B </s>`
        right-padded, segment_ids and lang_ids -1 (none given, as Transformers' tokenizer), and truncated
        [batch] (1 where a text had more tokens than fit); a pair cut as kzoo.tokenizers.sentencepiece's
        tf_encode, "longest_first" by Transformers' Python rule.
        With `offsets` (a question and context pair only: XLM's tokenizer has no character offsets),
        Transformers' SQuAD features for a Python tokenizer (`word_windows`' first window): the question's
        tokens cut to `max_question_len`, the context cut into words at whitespace, each tokenized on its
        own; offset_mapping and word_offsets [batch, sequence_length, 2] give each context token its word's
        characters ((0, 0) elsewhere), sequence_ids 0 / 1 / -1."""
        import tensorflow as tf

        from kzoo.tokenizers.graph_encode import assemble, check_pairs

        check_pairs(strings, pairs)
        if offsets and pairs is None:
            raise TokenizerError("XLM's tokenizer gives no character offsets (as Transformers' Python tokenizer)")
        if not offsets:
            parts = [self.tf_tokenize(x) for x in ([strings] if pairs is None else [strings, pairs])]
            out, _, _ = assemble(self, parts, sequence_length, truncation)
        else:
            from kzoo.tokenizers.graphemes import row_ids

            question = self.tf_tokenize(strings)
            splits = tf.cast(question.row_splits, tf.int32)
            kept = tf.range(splits[-1]) - tf.gather(splits, row_ids(splits)) < max_question_len
            question = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(question.flat_values, kept),
                                                        tf.minimum(splits[1:] - splits[:-1], max_question_len))
            context, starts, ends = self._graph().tokenize_words(pairs)
            out, place, sequence_ids = assemble(self, [question, context], sequence_length, "only_second")
            zero, none = tf.zeros_like(out["token_ids"]), tf.zeros_like(question)
            out["offset_mapping"] = out["word_offsets"] = tf.stack(
                [place([none, starts], zero), place([none, ends], zero)], -1)
            out["sequence_ids"] = sequence_ids
        out["segment_ids"] = out["lang_ids"] = tf.fill(tf.shape(out["token_ids"]), -1)
        return out

    # ---- question answering ----------------------------------------------------------------------

    def word_windows(self, question, context, max_length, doc_stride, max_question_len=64, lang=None):
        """Transformers 4.57's question-answering features for a Python tokenizer (squad_convert_example_to_
        features, which its pipeline and run_squad.py ran for XLM): the context split at whitespace into words,
        each tokenized on its own; the question's tokens cut to max_question_len; windows of the context tokens
        that fit beside it, each `doc_stride` tokens after the last (a step, where the fast path's stride is an
        overlap), until one holds the end."""
        bounds = [m.span() for m in SQUAD_WORD.finditer(context)]
        if not bounds:
            raise TokenizerError("the context holds no words, only whitespace")
        if doc_stride < 1:  # (Transformers' loop never ends on 0)
            raise TokenizerError(f"doc_stride must be >= 1 with XLM's tokenizer, got {doc_stride}")
        pieces = [self.tokenize(context[a:b], lang) for a, b in bounds]
        tokens = [t for piece in pieces for t in piece]
        owners = [w for w, piece in enumerate(pieces) for _ in piece]
        query = [(t, NO_SPAN) for t in self._tokenize([question], lang)[0][:max_question_len]]
        room = max_length - len(query) - self.num_special_tokens_to_add(True)
        if room <= 0:
            raise TokenizerError(f"the question's {len(query)} tokens (at most {max_question_len}) and 3 special "
                                 f"tokens leave no room for the context in max_length {max_length}")
        ids = [(i, NO_SPAN) for i in self.convert_tokens_to_ids(tokens)]
        windows, start = [], 0
        while start < len(ids):
            part = ids[start:start + room]
            row = self.with_special_tokens(query, part)
            windows.append((row, len(row.ids) - len(part) - 1, start))
            if len(ids) - start <= room:
                break
            start += doc_stride
        return WordWindows(bounds, tokens, owners, windows)

    # ---- decoding --------------------------------------------------------------------------------

    def _decode_tokens(self, ids, skip_special_tokens) -> list:
        # (Transformers skips special tokens in sequences only, not for a lone int)
        skip = set(self.all_special_ids) if skip_special_tokens and ids.ndim else set()
        return [self.convert_ids_to_tokens(int(i)) for i in ids.reshape(-1).tolist() if int(i) not in skip]

    def _join(self, tokens) -> str:
        """Tokens joined, `</w>` -> space, stripped (XLM cannot restore Moses' splits)."""
        return "".join(tokens).replace("</w>", " ").strip()
