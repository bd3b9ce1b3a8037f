"""SentencePiece tokenizers (ALBERT, XLM-RoBERTa) giving Transformers' ids, in Python and in TF graphs.

Why a "folded" SentencePiece model
----------------------------------
TFLite runs exactly one SentencePiece tokenizer: tf-text's `FastSentencepieceTokenizer` custom op.
TF string ops placed in front of it (`tf.strings.lower`, `normalize_utf8`, `regex_replace`, ...) do
not run in TFLite, so everything Transformers does to the text before its Unigram model must happen
inside that op. Transformers 5 (the `tokenizers` library) tokenizes ALBERT and XLM-RoBERTa like this:

  1. added/special tokens (`[MASK]`, `<mask>`, `<s>`, ...) are cut out of the raw text;
  2. each remaining piece is normalised: ALBERT: ``` `` ```/`''` -> `"`, NFKD + strip accents (unless
     keep_accents), lowercase (if do_lower_case), then the SentencePiece charsmap; XLM-R: the charsmap;
  3. `WhitespaceSplit` + `Metaspace`: split on Unicode whitespace, prefix each word with `▁`;
  4. Unigram Viterbi over Transformers' piece scores (also for XLM-R, whose file is a BPE model).

`FastSentencepieceTokenizer` does: charsmap (greedy longest match of rewrite rules on the raw text),
dummy `▁` prefix, whitespace collapsing and escaping, then Unigram Viterbi over the model's scores.
So steps 1-3 are *folded* into one new charsmap, and step 4's scores are copied into the model:

  * the reference normaliser (built with the `tokenizers` library exactly as Transformers builds it)
    is evaluated on every Unicode code point; each code point it changes becomes a rewrite rule, its
    output with Unicode whitespace turned into " " (what `WhitespaceSplit` splits on);
  * multi-character keys of the original charsmap (composition sequences) become rules too where
    the normaliser treats the sequence differently from its characters one by one, and ALBERT's
    ``` `` ``` and `''` quote rules are added;
  * each added token `t` becomes the rule `t -> " M "`, where `M` is a marker character that nothing
    else can produce (a private-use code point in no piece and in no rule output; the raw marker
    character itself is rewritten to another unknown character of the same length). The model gets a
    piece `▁M` (score 0, beating every other segmentation of that word) and the id table maps it to
    the token's id, so `[MASK]` is split off untouched wherever it is, also inside a word;
  * the pieces are Transformers' vocabulary in Transformers' order with Transformers' scores (all
    NORMAL, unknown piece at Transformers' unk id, plus a NORMAL copy of it because Transformers also
    matches the text "<unk>"), so model ids *are* Transformers' ids (the fairseq layout of XLM-R
    included) except for the pieces appended at the end;
  * scores are rounded to multiples of 2**-10, which makes the op's float32 path sums exact (up to
    paths scoring -16384, i.e. ~2000 tokens in one string): segmentations with equal scores
    (".", ".." vs "..", ".") then tie exactly and are resolved as Transformers resolves them in
    float64 (first found wins in both Viterbi implementations). Unrounded, float32 rounding decides.

In the graph this is: the tf-text custom op, one `tf.gather` through the id table (markers -> special
ids), and, for `tf_encode`, a concatenation/select that adds the special tokens and pads. The same
graph serves eager Python (`encode`, `__call__`), `tf.function`, SavedModel and TFLite.

Known differences from Transformers (adversarial input only): two segmentations whose scores differ by
less than the rounding (~1e-3), or tie beyond ~2000 tokens of one string, may resolve differently;
Transformers' charsmap works on grapheme clusters, so a combining mark right after a compatibility
character (`"ﬁ\u0301"`) is dropped there and kept here; the op scores an unknown character per byte,
Transformers per character (this only matters between paths with different unknown characters);
added tokens flagged `normalized=True` / `single_word=True` are matched on the raw text like the
others; a literal `▁` is a word boundary for Transformers, here too only if the charsmap maps it to a
space (the standard nmt_nfkc one does).

Only `from_hf_dir` needs the `tokenizers` library; `load` needs neither it nor Transformers / torch.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from kzoo.errors import TokenizerError

MODEL_FILE = "kzoo_tokenizer.model"  # the folded SentencePiece model
META_FILE = "kzoo_tokenizer.json"  # family, special tokens, id table
FORMAT_VERSION = 1
# Hugging Face tokenizer files copied into a kzoo model dir (so Transformers can load it as well).
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
            "spiece.model", "sentencepiece.bpe.model")

SPACE = "\u2581"  # ▁
SCORE_GRID_BITS = 10  # piece scores are rounded to multiples of 2**-10 (see _fold)
# Rust's char::is_whitespace (Unicode White_Space): what `WhitespaceSplit` splits on.
_WHITESPACE = frozenset(
    map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
              0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
)
# Order of Transformers' special token attributes (for `all_special_ids`).
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

_FAMILIES = {
    # spm file, defaults of the named special tokens, unk id Transformers hard-codes
    "albert": dict(
        spm_file="spiece.model",
        specials=dict(bos_token="[CLS]", eos_token="[SEP]", unk_token="<unk>", sep_token="[SEP]",
                      pad_token="<pad>", cls_token="[CLS]", mask_token="[MASK]"),
        unk_id=1,
    ),
    "xlm-roberta": dict(
        spm_file="sentencepiece.bpe.model",
        specials=dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                      pad_token="<pad>", cls_token="<s>", mask_token="<mask>"),
        unk_id=3,
    ),
}
_FAMILY_ALIASES = {"albert": "albert", "xlm-roberta": "xlm-roberta", "xlm_roberta": "xlm-roberta",
                   "xlmroberta": "xlm-roberta", "xlm-r": "xlm-roberta", "xlmr": "xlm-roberta"}




def _family(name: str) -> str:
    family = _FAMILY_ALIASES.get(str(name).lower())
    if family is None:
        raise TokenizerError(f"unknown tokenizer family {name!r}; kzoo knows albert, xlm-roberta")
    return family


# --------------------------------------------------------------------------------------------
# 1. Reading a Hugging Face tokenizer dir (without Transformers)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _HFTokenizer:
    """What Transformers builds from a tokenizer dir, as plain data."""

    family: str
    vocab: list  # [(piece, score)] in Transformers' id order
    unk_id: int
    charsmap: bytes | None  # SentencePiece precompiled charsmap Transformers uses, if any
    do_lower_case: bool
    keep_accents: bool
    clean_up_tokenization_spaces: bool
    specials: dict  # attr ("cls_token", ...) -> content
    added: dict  # content -> (id, special): tokens cut out of raw text before normalisation
    all_special_tokens: list
    files: list  # source files to copy


def _content(token):
    return token["content"] if isinstance(token, dict) else token


def _read_hf_dir(src_dir, family: str) -> _HFTokenizer:
    from sentencepiece import sentencepiece_model_pb2 as pb

    src = Path(src_dir)
    fam = _FAMILIES[family]
    if not src.is_dir():
        raise TokenizerError(f"{src}: not a directory")
    config_path, json_path, spm_path = src / "tokenizer_config.json", src / "tokenizer.json", src / fam["spm_file"]
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        tok_json = json.loads(json_path.read_text()) if json_path.is_file() else None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{src}: invalid tokenizer JSON ({e})") from None
    if tok_json is None and not spm_path.is_file():
        raise TokenizerError(f"{src}: neither tokenizer.json nor {fam['spm_file']} found")
    if config.get("add_prefix_space", True) is False:
        raise TokenizerError(f"{src}: add_prefix_space=False is not supported")

    proto = None
    if spm_path.is_file():
        proto = pb.ModelProto()
        proto.ParseFromString(spm_path.read_bytes())

    # Like Transformers: tokenizer.json wins (vocab, scores, charsmap, added tokens); without it the
    # SentencePiece model is converted. Either way AlbertTokenizer / XLMRobertaTokenizer rebuild the
    # normaliser and pre-tokenizer themselves, from tokenizer_config.json's flags.
    added_entries = []  # (content, id or None, special)
    if tok_json is not None:
        model = tok_json.get("model", {})
        if model.get("type") != "Unigram":
            raise TokenizerError(f"{json_path}: expected a Unigram model, found {model.get('type')!r}")
        vocab = [(p, float(s)) for p, s in model["vocab"]]
        charsmap = _json_charsmap(tok_json.get("normalizer"))
        added_entries += [(t["content"], t["id"], t.get("special", False)) for t in tok_json.get("added_tokens", [])]
    else:
        pieces = [(p.piece, float(p.score)) for p in proto.pieces]
        if family == "xlm-roberta":  # fairseq layout: <s> <pad> </s> <unk>, spm pieces 3.., <mask>
            sp = {k: _content(config.get(k, v)) for k, v in fam["specials"].items()}
            vocab = [(sp["bos_token"], 0.0), (sp["pad_token"], 0.0), (sp["eos_token"], 0.0), (sp["unk_token"], 0.0)]
            vocab += pieces[3:] + [(sp["mask_token"], 0.0)]
        else:
            vocab = pieces
        charsmap = proto.normalizer_spec.precompiled_charsmap or None
        # SentencePiece control and user-defined pieces are added tokens in Transformers.
        added_entries += [(p.piece, None, p.type == 3) for p in proto.pieces if p.type in (3, 4)]

    for id_, tok in sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
        added_entries.append((_content(tok), int(id_), tok.get("special", False) if isinstance(tok, dict) else True))
    specials = {k: _content(config.get(k, v)) for k, v in fam["specials"].items()}
    specials = {k: v for k, v in specials.items() if v is not None}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if isinstance(extra, dict):
        extra = list(extra.values())
    extra = [_content(t) for t in extra]
    added_entries += [(t, None, True) for t in list(specials.values()) + extra]

    # Ids: the vocab's own id where the token is a piece, else its recorded id, else appended.
    piece_ids = {}
    for i, (p, _) in enumerate(vocab):
        piece_ids.setdefault(p, i)
    added = {}
    next_id = len(vocab)
    for content, id_, special in added_entries:
        if not content:
            continue
        if content in added:
            old_id, old_special = added[content]
            added[content] = (old_id, old_special or special)
            continue
        if content in piece_ids:
            id_ = piece_ids[content]
        elif id_ is None:
            id_ = next_id
        next_id = max(next_id, id_ + 1)
        added[content] = (id_, special)

    all_special = []
    for t in [specials[k] for k in _SPECIAL_ATTRS if k in specials] + extra:
        if t not in all_special:
            all_special.append(t)

    return _HFTokenizer(
        family=family,
        vocab=vocab,
        unk_id=fam["unk_id"],
        charsmap=charsmap,
        do_lower_case=bool(config.get("do_lower_case", True)),
        keep_accents=bool(config.get("keep_accents", False)),
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        specials=specials,
        added=added,
        all_special_tokens=all_special,
        files=[src / f for f in HF_FILES if (src / f).is_file()],
    )


def _json_charsmap(normalizer):
    """The precompiled charsmap of a tokenizer.json normaliser (as Transformers extracts it)."""
    if not normalizer:
        return None
    items = normalizer["normalizers"] if normalizer.get("type") == "Sequence" else [normalizer]
    for n in items:
        if n.get("type") == "Precompiled" and n.get("precompiled_charsmap"):
            return base64.b64decode(n["precompiled_charsmap"])
    return None


def _reference_normalizer(family: str, do_lower_case: bool, keep_accents: bool, charsmap: bytes | None):
    """The normaliser Transformers' AlbertTokenizer / XLMRobertaTokenizer construct (`tokenizers`)."""
    from tokenizers import normalizers

    steps = []
    if family == "albert":
        steps += [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
        if not keep_accents:
            steps += [normalizers.NFKD(), normalizers.StripAccents()]
        if do_lower_case:
            steps.append(normalizers.Lowercase())
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    return normalizers.Sequence(steps) if steps else None


# --------------------------------------------------------------------------------------------
# 2. Folding: Transformers' normaliser + added tokens + scores -> one SentencePiece model
# --------------------------------------------------------------------------------------------


_TO_SPACE = {ord(c): " " for c in _WHITESPACE}


@functools.lru_cache(maxsize=8)
def _normalizer_rules(family: str, do_lower_case: bool, keep_accents: bool, charsmap: bytes | None) -> dict:
    """Rewrite rules (raw text -> normalised text, Unicode whitespace as " ") equivalent to
    Transformers' normaliser followed by WhitespaceSplit. Cached: it evaluates ~1.1M code points."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    normalizer = _reference_normalizer(family, do_lower_case, keep_accents, charsmap)
    normalize = normalizer.normalize_str if normalizer is not None else (lambda text: text)

    # Every code point the normaliser (or WhitespaceSplit) changes.
    rules = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:  # surrogates
            continue
        c = chr(cp)
        out = normalize(c).translate(_TO_SPACE)
        if out != c:
            rules[c] = out
    per_char = {ord(c): out for c, out in rules.items()}

    # Sequences handled as a whole: the original charsmap's multi-character keys (compositions) and
    # ALBERT's quote rules, wherever the normaliser treats them differently from char by char.
    sequences = []
    if charsmap:
        spec = pb.NormalizerSpec(name="original", precompiled_charsmap=charsmap)
        sequences += [k for k, _ in spm.SentencePieceNormalizer(normalizer_spec=spec).decompile() if len(k) > 1]
    if family == "albert":
        sequences += ["``", "''"]
    for k in sequences:
        out = normalize(k).translate(_TO_SPACE)
        if out != k.translate(per_char) and out != k:  # (an identity rule cannot be stored; none seen in practice)
            rules[k] = out
    return rules


def _fold(hf: _HFTokenizer):
    """Returns (folded SentencePiece ModelProto bytes, id table: folded id -> Transformers id)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    rules = dict(_normalizer_rules(hf.family, hf.do_lower_case, hf.keep_accents, hf.charsmap))

    # Marker characters for added tokens: in no piece and in no rule output.
    vocab_chars = set("".join(p for p, _ in hf.vocab))
    produced = set("".join(rules.values()))
    candidates = (chr(cp) for cp in range(0x100000, 0x10FFFE) if chr(cp) not in vocab_chars)
    stand_in = next(candidates)  # what a raw marker character is rewritten to (unknown either way)
    tokens = sorted(hf.added, key=lambda t: hf.added[t][0])
    markers = {}
    for t in tokens:
        m = next(c for c in candidates if c not in produced)
        markers[t] = m
        rules[m] = rules.get(m, m).replace(m, stand_in)
        rules[t] = f" {m} "

    # The folded model: Transformers' pieces and scores, then one `▁M` piece per added token.
    # Scores are rounded to multiples of 2**-SCORE_GRID_BITS so that the op's float32 path sums are
    # exact (while above -2**(24 - SCORE_GRID_BITS)); equal-scoring segmentations (".", ".." vs
    # "..", ".") then tie exactly and are resolved like Transformers resolves them in float64.
    model = pb.ModelProto()
    grid = float(2**SCORE_GRID_BITS)
    for i, (piece, score) in enumerate(hf.vocab):
        model.pieces.add(piece=piece, score=round(score * grid) / grid,
                         type=pb.ModelProto.SentencePiece.UNKNOWN if i == hf.unk_id
                         else pb.ModelProto.SentencePiece.NORMAL)
    id_map = list(range(len(hf.vocab)))
    # Transformers' Unigram also matches the unknown piece's own text ("<unk>" coming out of the
    # normaliser, e.g. from "＜unk＞"); the op never matches UNKNOWN pieces, so add a NORMAL copy.
    unk_piece, unk_score = hf.vocab[hf.unk_id]
    model.pieces.add(piece=unk_piece, score=round(unk_score * grid) / grid, type=pb.ModelProto.SentencePiece.NORMAL)
    id_map.append(hf.unk_id)
    for t in tokens:
        model.pieces.add(piece=SPACE + markers[t], score=0.0, type=pb.ModelProto.SentencePiece.NORMAL)
        id_map.append(hf.added[t][0])
    model.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    model.trainer_spec.vocab_size = len(model.pieces)
    model.trainer_spec.unk_id = hf.unk_id
    model.trainer_spec.bos_id = model.trainer_spec.eos_id = model.trainer_spec.pad_id = -1
    model.trainer_spec.unk_piece = hf.vocab[hf.unk_id][0]

    spm.set_min_log_level(2)
    compiled = spm.SentencePieceNormalizer(norm_map=sorted(rules.items()))
    model.normalizer_spec.ParseFromString(compiled.serialized_normalizer_spec())
    model.normalizer_spec.name = "kzoo_folded"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    return model.SerializeToString(), id_map


# --------------------------------------------------------------------------------------------
# 3. The tokenizer
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Meta:
    """Plain (non-TF) tokenizer data, saved as kzoo_tokenizer.json."""

    family: str
    specials: dict
    special_ids: dict
    all_special_tokens: list
    added: dict  # content -> [id, special]
    id_to_token: list
    clean_up_tokenization_spaces: bool
    source_files: list
    token_to_id: dict = dataclasses.field(default_factory=dict)  # built lazily


class SentencePieceTokenizer(tf.Module):
    """Transformers-exact ALBERT / XLM-RoBERTa tokenizer on tf-text's FastSentencepieceTokenizer.

    Python (`encode`, `__call__`, `decode`) and graph (`tf_tokenize`, `tf_encode`) share the graph path.
    """

    def __init__(self, folded_model: bytes, id_map, meta: _Meta, name=None):
        super().__init__(name=name or "sentencepiece_tokenizer")
        import tensorflow_text as tf_text

        self._folded_model = bytes(folded_model)
        self._info = meta  # a plain dataclass: not wrapped by tf.Module's tracking
        self._id_map_np = np.asarray(id_map, np.int32)
        with self.name_scope:
            self._sp = tf_text.FastSentencepieceTokenizer(self._folded_model)
            self._id_map = tf.constant(self._id_map_np, name="id_map")
        self._tokenize_fn = tf.function(
            self.tf_tokenize, input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)

    # ---- construction / persistence ----------------------------------------------------------

    @classmethod
    def from_hf_dir(cls, src_dir, family: str) -> "SentencePieceTokenizer":
        """Builds the folded model from a Hugging Face tokenizer dir (tokenizer.json and/or *.model)."""
        hf = _read_hf_dir(src_dir, _family(family))
        folded, id_map = _fold(hf)
        id_to_token = [p for p, _ in hf.vocab]
        for content, (id_, _) in sorted(hf.added.items(), key=lambda kv: kv[1][0]):
            if id_ >= len(id_to_token):
                id_to_token += [None] * (id_ + 1 - len(id_to_token))
            if id_to_token[id_] is None or id_ >= len(hf.vocab):
                id_to_token[id_] = content
        meta = _Meta(
            family=hf.family,
            specials=dict(hf.specials),
            special_ids={k: hf.added[v][0] for k, v in hf.specials.items()},
            all_special_tokens=list(hf.all_special_tokens),
            added={k: [int(i), bool(s)] for k, (i, s) in hf.added.items()},
            id_to_token=id_to_token,
            clean_up_tokenization_spaces=hf.clean_up_tokenization_spaces,
            source_files=[str(f) for f in hf.files],
        )
        return cls(folded, id_map, meta)

    def save(self, out_dir):
        """Writes kzoo_tokenizer.model (folded), kzoo_tokenizer.json and copies of the HF tokenizer files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(self._folded_model)
        vocab_size = len(self._info.id_to_token)
        base = next((i for i, v in enumerate(self._id_map_np) if i != v), len(self._id_map_np))
        meta = {
            "format": "kzoo-sentencepiece",
            "format_version": FORMAT_VERSION,
            "family": self._info.family,
            "model_file": MODEL_FILE,
            "vocab_size": vocab_size,
            "special_tokens": self._info.specials,
            "special_token_ids": self._info.special_ids,
            "all_special_tokens": self._info.all_special_tokens,
            "added_tokens": [{"content": c, "id": i, "special": s}
                             for c, (i, s) in sorted(self._info.added.items(), key=lambda kv: kv[1][0])],
            # folded model id -> Transformers id: identity below `identity_below`, then `tail`
            "id_map": {"identity_below": int(base), "tail": self._id_map_np[base:].tolist()},
            # Transformers tokens of ids the folded model has no piece for (added tokens past the vocab)
            "extra_tokens": {str(i): t for i, t in enumerate(self._info.id_to_token) if i >= base},
            "clean_up_tokenization_spaces": self._info.clean_up_tokenization_spaces,
            "source_files": [Path(f).name for f in self._info.source_files],
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        for f in self._info.source_files:
            f = Path(f)
            if f.is_file() and (out / f.name).resolve() != f.resolve():
                shutil.copyfile(f, out / f.name)

    @classmethod
    def load(cls, model_dir) -> "SentencePieceTokenizer":
        """Loads the tokenizer of a kzoo model dir (no Transformers, torch or tokenizers needed)."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        d = Path(model_dir)
        try:
            meta = json.loads((d / META_FILE).read_text())
            folded = (d / meta.get("model_file", MODEL_FILE)).read_bytes()
        except FileNotFoundError as e:
            raise TokenizerError(f"{d}: no kzoo tokenizer ({Path(e.filename).name} is missing)") from None
        except json.JSONDecodeError as e:
            raise TokenizerError(f"{d / META_FILE}: not valid JSON ({e})") from None
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise TokenizerError(f"{d / META_FILE}: format_version {meta['format_version']} is newer than this kzoo")
        proto = pb.ModelProto()
        proto.ParseFromString(folded)
        base = meta["id_map"]["identity_below"]
        id_map = list(range(base)) + list(meta["id_map"]["tail"])
        id_to_token = [p.piece for p in proto.pieces[:base]]
        id_to_token += [None] * (meta["vocab_size"] - len(id_to_token))
        for i, t in meta.get("extra_tokens", {}).items():
            id_to_token[int(i)] = t
        info = _Meta(
            family=meta["family"],
            specials=meta["special_tokens"],
            special_ids=meta["special_token_ids"],
            all_special_tokens=meta["all_special_tokens"],
            added={t["content"]: [t["id"], t["special"]] for t in meta["added_tokens"]},
            id_to_token=id_to_token,
            clean_up_tokenization_spaces=meta.get("clean_up_tokenization_spaces", False),
            source_files=[str(d / f) for f in meta.get("source_files", [])],
        )
        return cls(folded, id_map, info)

    # ---- vocabulary -----------------------------------------------------------------------------

    @property
    def family(self) -> str:
        return self._info.family

    @property
    def vocab_size(self) -> int:
        return len(self._info.id_to_token)

    def _special_id(self, attr):
        return self._info.special_ids.get(attr)

    @property
    def pad_token_id(self) -> int:
        return self._special_id("pad_token")

    @property
    def unk_token_id(self) -> int:
        return self._special_id("unk_token")

    @property
    def cls_token_id(self) -> int:
        return self._special_id("cls_token")

    @property
    def sep_token_id(self) -> int:
        return self._special_id("sep_token")

    @property
    def mask_token(self) -> str:
        return self._info.specials.get("mask_token")

    @property
    def mask_token_id(self) -> int:
        return self._special_id("mask_token")

    @property
    def all_special_tokens(self) -> list:
        return list(self._info.all_special_tokens)

    @property
    def all_special_ids(self) -> list:
        return [self._info.added[t][0] for t in self._info.all_special_tokens]

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
        folded = self._sp.tokenize(tf.convert_to_tensor(strings, tf.string))
        if isinstance(folded, tf.RaggedTensor):
            return folded.with_flat_values(tf.gather(self._id_map, folded.flat_values))
        return tf.gather(self._id_map, folded)  # a scalar string: a 1-D tensor of ids

    def tf_encode(self, strings, sequence_length: int) -> dict:
        """Dense int32 [batch, sequence_length] token_ids / padding_mask / segment_ids, with specials.

        `<cls> tokens <sep>` (truncated to fit), right-padded with the pad id; single sequences.
        Built from concatenation and selects only, so it converts to TFLite as well.
        """
        length = int(sequence_length)
        if length < 2:
            raise ValueError("sequence_length must be at least 2 (room for the special tokens)")
        tokens = self.tf_tokenize(strings)
        pad, cls, sep = self.pad_token_id, self.cls_token_id, self.sep_token_id
        body = tokens.to_tensor(default_value=pad, shape=[None, length - 2])  # [B, L-2], truncated
        n = tf.minimum(tf.cast(tokens.row_lengths(), tf.int32), length - 2)[:, None]  # [B, 1]
        batch = tf.shape(body)[:1]
        column = lambda value: tf.fill(tf.concat([batch, [1]], 0), tf.constant(value, tf.int32))  # noqa: E731
        ids = tf.concat([column(cls), body, column(pad)], axis=1)  # [B, L]
        positions = tf.range(length, dtype=tf.int32)[None, :]
        ids = tf.where(tf.equal(positions, n + 1), tf.constant(sep, tf.int32), ids)
        mask = tf.cast(positions < n + 2, tf.int32)
        return {"token_ids": ids, "padding_mask": mask, "segment_ids": tf.zeros_like(ids)}

    # ---- Python ------------------------------------------------------------------------------------

    def _tokenize_batch(self, texts) -> list:
        """Ids without specials for a list of str, through the graph path."""
        if not texts:
            return []
        ragged = self._tokenize_fn(tf.constant([t.encode("utf-8") for t in texts], tf.string))
        values, splits = ragged.flat_values.numpy(), ragged.row_splits.numpy()
        return [values[splits[i]:splits[i + 1]].tolist() for i in range(len(texts))]

    def _num_special(self, pair: bool) -> int:
        if not pair:
            return 2
        return 4 if self.family == "xlm-roberta" else 3

    def _with_specials(self, a, b=None):
        """(ids, segment ids) with the family's template."""
        cls, sep = self.cls_token_id, self.sep_token_id
        ids = [cls, *a, sep]
        segments = [0] * len(ids)
        if b is not None:
            if self.family == "xlm-roberta":  # <s> A </s></s> B </s>, all segment 0
                tail = [sep, *b, sep]
                segments += [0] * len(tail)
            else:  # [CLS] A [SEP] B [SEP], B part segment 1
                tail = [*b, sep]
                segments += [1] * len(tail)
            ids += tail
        return ids, segments

    @staticmethod
    def _truncate(a, b, max_tokens):
        """Transformers' (the `tokenizers` library's) "longest_first" truncation."""
        if max_tokens < 0:
            raise ValueError("max_length is too short for the special tokens")
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

    def _encode_ids(self, a, b, add_special_tokens, max_length, truncation):
        if truncation and max_length is not None:
            n = max_length - (self._num_special(b is not None) if add_special_tokens else 0)
            a, b = self._truncate(a, b, n)
        if add_special_tokens:
            return self._with_specials(a, b)
        ids = a + (b or [])
        return ids, [0] * len(a) + [1 if self.family == "albert" else 0] * len(b or [])

    def encode(self, text, pair=None, add_special_tokens=True, max_length=None, truncation=False) -> list:
        """== Transformers' `tokenizer(text, pair, ...)["input_ids"]`."""
        tokenized = self._tokenize_batch([text] if pair is None else [text, pair])
        b = tokenized[1] if pair is not None else None
        return self._encode_ids(tokenized[0], b, add_special_tokens, max_length, truncation)[0]

    def __call__(self, texts, pairs=None, max_length=None, truncation=True, padding="longest") -> dict:
        """Batch encoding like Transformers' `tokenizer(texts, pairs, ...)`, as numpy int32 arrays.

        Returns token_ids, padding_mask (1 = token, 0 = padding) and segment_ids, right-padded with the
        pad id to the longest row (padding="longest") or to max_length (padding="max_length").
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        tokenized = self._tokenize_batch(texts + (pairs or []))
        rows = []
        for i in range(len(texts)):
            b = tokenized[len(texts) + i] if pairs is not None else None
            rows.append(self._encode_ids(tokenized[i], b, True, max_length, truncation))
        if padding in (True, "longest"):
            width = max((len(ids) for ids, _ in rows), default=0)
        elif padding == "max_length":
            if max_length is None:
                raise ValueError('padding="max_length" needs max_length')
            width = max([max_length] + [len(ids) for ids, _ in rows])
        else:
            raise ValueError(f'padding must be "longest" or "max_length", not {padding!r}')
        token_ids = np.full((len(rows), width), self.pad_token_id, np.int32)
        padding_mask = np.zeros((len(rows), width), np.int32)
        segment_ids = np.zeros((len(rows), width), np.int32)
        for r, (ids, segments) in enumerate(rows):
            token_ids[r, :len(ids)] = ids
            padding_mask[r, :len(ids)] = 1
            segment_ids[r, :len(ids)] = segments
        return {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids}

    def decode(self, ids, skip_special_tokens=False) -> str:
        """== Transformers' `tokenizer.decode` (Metaspace decoder)."""
        ids = np.asarray(ids).reshape(-1).tolist()
        special = {i for t, (i, s) in self._info.added.items() if s}
        tokens = []
        for i in ids:
            if not 0 <= i < len(self._info.id_to_token) or self._info.id_to_token[i] is None:
                continue
            if skip_special_tokens and i in special:
                continue
            tokens.append(self._info.id_to_token[i])
        text = []
        for n, token in enumerate(tokens):
            token = token.replace(SPACE, " ")
            if n == 0 and token.startswith(" "):
                token = token[1:]
            text.append(token)
        text = "".join(text)
        if self._info.clean_up_tokenization_spaces:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text
