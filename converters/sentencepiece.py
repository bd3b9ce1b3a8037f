"""Builds kzoo's SentencePiece tokenizer (kzoo.tokenizers.sentencepiece) from a Hugging Face tokenizer dir.

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

Known differences from Transformers. Not only adversarial: two segmentations whose scores differ by
less than the rounding (2**-10, ~1e-3) may resolve differently; on natural text about 1 line in 700 with
albert-base-v2's vocabulary (Catalan "l'etiqueta": e|ti here, et|i there, -11.04933 vs -11.04886). A
finer grid would need each word's Viterbi on its own (small sums stay exact), and tf-text's
WhitespaceTokenizer, the one splitter TFLite runs, keeps a multi-byte space's leading bytes in the
word before it. Adversarial: equal scores tie beyond ~2000 tokens of one string and may resolve
differently; Transformers' charsmap works on grapheme clusters, so a combining mark right after a
compatibility character (`"ﬁ\u0301"`) is dropped there and kept here; the op scores an unknown
character per byte, Transformers per character (this only matters between paths with different
unknown characters); added tokens flagged `normalized=True` / `single_word=True` are matched on the
raw text like the others; a literal `▁` is a word boundary for Transformers, here too only if the
charsmap maps it to a space (the standard nmt_nfkc one does).

Conversion needs the `tokenizers` library (Transformers' normaliser, evaluated); the runtime tokenizer
needs neither it nor Transformers / torch.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from pathlib import Path

from kzoo.converters.tokenizers import SentencePieceFiles
from kzoo.errors import TokenizerError
from kzoo.tokenizers.base import SPECIAL_ATTRS
from kzoo.tokenizers.sentencepiece import SPACE, WHITESPACE, SentencePieceTokenizer, Vocabulary

# Hugging Face tokenizer files copied into a kzoo model dir (so Transformers can load it as well).
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
            "spiece.model", "sentencepiece.bpe.model")
SCORE_GRID_BITS = 10  # piece scores are rounded to multiples of 2**-10 (see _fold)


def from_hf_dir(src_dir, family: str, spec: SentencePieceFiles) -> SentencePieceTokenizer:
    """Builds the folded model from a Hugging Face tokenizer dir (tokenizer.json and/or *.model)."""
    hf = _read_hf_dir(src_dir, family, spec)
    folded, id_map = _fold(hf)
    id_to_token = [p for p, _ in hf.vocab]
    for content, (id_, _) in sorted(hf.added.items(), key=lambda kv: kv[1][0]):
        if id_ >= len(id_to_token):
            id_to_token += [None] * (id_ + 1 - len(id_to_token))
        if id_to_token[id_] is None or id_ >= len(hf.vocab):
            id_to_token[id_] = content
    vocabulary = Vocabulary(
        family=family,
        template=spec.template,
        specials=dict(hf.specials),
        special_ids={k: hf.added[v][0] for k, v in hf.specials.items()},
        all_special_tokens=list(hf.all_special_tokens),
        added={k: [int(i), bool(s)] for k, (i, s) in hf.added.items()},
        strip=dict(hf.strip),
        id_to_token=id_to_token,
        clean_up_tokenization_spaces=hf.clean_up_tokenization_spaces,
        source_files=[str(f) for f in hf.files],
    )
    return SentencePieceTokenizer(folded, id_map, vocabulary)


# --- reading a Hugging Face tokenizer dir (without Transformers) ------------------------------------


@dataclasses.dataclass
class _HFTokenizer:
    """What Transformers builds from a tokenizer dir, as plain data."""

    family: str
    spec: "SentencePieceFiles"
    vocab: list  # [(piece, score)] in Transformers' id order
    unk_id: int
    charsmap: bytes | None  # SentencePiece precompiled charsmap Transformers uses, if any
    do_lower_case: bool
    keep_accents: bool
    clean_up_tokenization_spaces: bool
    specials: dict  # attr ("cls_token", ...) -> content
    added: dict  # content -> (id, special): tokens cut out of raw text before normalisation
    strip: dict  # content -> [lstrip, rstrip], for added tokens with either
    all_special_tokens: list
    files: list  # source files to copy


def _content(token):
    return token["content"] if isinstance(token, dict) else token


def _read_hf_dir(src_dir, family: str, spec: "SentencePieceFiles") -> _HFTokenizer:
    """What Transformers' AlbertTokenizer / XLMRobertaTokenizer build from a tokenizer dir."""
    src = Path(src_dir)
    config, tok_json, proto = _read_files(src, spec)
    vocab, charsmap, added_entries = _vocabulary(src, config, tok_json, proto, spec)
    decoder = sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0]))
    for id_, tok in decoder:
        added_entries.append((_content(tok), int(id_), tok.get("special", False) if isinstance(tok, dict) else True))
    # AddedToken's lstrip / rstrip: the token's offsets take in the whitespace beside it
    listed = (tok_json or {}).get("added_tokens", []) + [tok for _, tok in decoder if isinstance(tok, dict)]
    strip = {t["content"]: [bool(t.get("lstrip")), bool(t.get("rstrip"))] for t in listed
             if t.get("lstrip") or t.get("rstrip")}
    specials = {k: _content(config.get(k, v)) for k, v in spec.specials.items()}
    specials = {k: v for k, v in specials.items() if v is not None}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    extra = [_content(t) for t in (list(extra.values()) if isinstance(extra, dict) else extra)]
    added_entries += [(t, None, True) for t in list(specials.values()) + extra]
    return _HFTokenizer(
        family=family,
        spec=spec,
        vocab=vocab,
        unk_id=spec.unk_id,
        charsmap=charsmap,
        do_lower_case=bool(config.get("do_lower_case", True)),
        keep_accents=bool(config.get("keep_accents", False)),
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        specials=specials,
        added=_added_ids(vocab, added_entries),
        strip=strip,
        all_special_tokens=list(dict.fromkeys([specials[k] for k in SPECIAL_ATTRS if k in specials] + extra)),
        files=[src / f for f in HF_FILES if (src / f).is_file()],
    )


def _read_files(src, spec):
    """(tokenizer_config.json's dict, tokenizer.json's dict or None, the SentencePiece model or None)."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2 as pb

    if not src.is_dir():
        raise TokenizerError(f"{src}: not a directory")
    config_path, json_path, spm_path = src / "tokenizer_config.json", src / "tokenizer.json", src / spec.spm_file
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        tok_json = json.loads(json_path.read_text()) if json_path.is_file() else None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{src}: invalid tokenizer JSON ({e})") from None
    if tok_json is None and not spm_path.is_file():
        raise TokenizerError(f"{src}: neither tokenizer.json nor {spec.spm_file} found")
    if config.get("add_prefix_space", True) is False:
        raise TokenizerError(f"{src}: add_prefix_space=False is not supported")
    proto = None
    if spm_path.is_file():
        proto = pb.ModelProto()
        try:
            proto.ParseFromString(spm_path.read_bytes())
        except DecodeError:
            raise TokenizerError(f"{spm_path}: not a SentencePiece model (corrupt or truncated)") from None
        if not proto.pieces:
            raise TokenizerError(f"{spm_path}: a SentencePiece model without pieces (empty or damaged)")
    for path, value in ((config_path, config), (json_path, tok_json)):
        if value is not None and not isinstance(value, dict):
            raise TokenizerError(f"{path}: not a tokenizer description (a JSON object)")
    return config, tok_json, proto


def _vocabulary(src, config, tok_json, proto, spec):
    """(vocab [(piece, score)] in Transformers' id order, charsmap, added entries (content, id or None,
    special)). Like Transformers: tokenizer.json wins (vocab, scores, charsmap, added tokens); without
    it the SentencePiece model is converted. Either way AlbertTokenizer / XLMRobertaTokenizer rebuild
    the normaliser and pre-tokenizer themselves, from tokenizer_config.json's flags."""
    if tok_json is not None:
        model = tok_json.get("model", {})
        if not isinstance(model, dict) or model.get("type") != "Unigram":
            raise TokenizerError(f"{src / 'tokenizer.json'}: expected a Unigram model, found {model.get('type') if isinstance(model, dict) else model!r}")
        added = [(t["content"], t["id"], t.get("special", False)) for t in tok_json.get("added_tokens", [])]
        return [(p, float(s)) for p, s in model["vocab"]], _json_charsmap(tok_json.get("normalizer")), added
    pieces = [(p.piece, float(p.score)) for p in proto.pieces]
    vocab = pieces
    if spec.fairseq:  # fairseq layout: <s> <pad> </s> <unk>, spm pieces 3.., <mask>
        sp = {k: _content(config.get(k, v)) for k, v in spec.specials.items()}
        vocab = [(sp["bos_token"], 0.0), (sp["pad_token"], 0.0), (sp["eos_token"], 0.0), (sp["unk_token"], 0.0)]
        vocab += pieces[3:] + [(sp["mask_token"], 0.0)]
    # SentencePiece control and user-defined pieces are added tokens in Transformers.
    added = [(p.piece, None, p.type == 3) for p in proto.pieces if p.type in (3, 4)]
    return vocab, proto.normalizer_spec.precompiled_charsmap or None, added


def _added_ids(vocab, entries) -> dict:
    """{content: (id, special)}: the vocab's own id where the token is a piece, else its recorded id,
    else appended; a token listed twice is special if either listing says so."""
    piece_ids = {}
    for i, (p, _) in enumerate(vocab):
        piece_ids.setdefault(p, i)
    added = {}
    next_id = len(vocab)
    for content, id_, special in entries:
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
    return added


def _json_charsmap(normalizer):
    """The precompiled charsmap of a tokenizer.json normaliser (as Transformers extracts it)."""
    if not normalizer:
        return None
    items = normalizer["normalizers"] if normalizer.get("type") == "Sequence" else [normalizer]
    for n in items:
        if n.get("type") == "Precompiled" and n.get("precompiled_charsmap"):
            return base64.b64decode(n["precompiled_charsmap"])
    return None


def _reference_normalizer(albert: bool, do_lower_case: bool, keep_accents: bool, charsmap: bytes | None):
    """The normaliser Transformers' AlbertTokenizer (`albert`) / XLMRobertaTokenizer construct (`tokenizers`)."""
    from tokenizers import normalizers

    steps = []
    if albert:
        steps += [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
        if not keep_accents:
            steps += [normalizers.NFKD(), normalizers.StripAccents()]
        if do_lower_case:
            steps.append(normalizers.Lowercase())
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    return normalizers.Sequence(steps) if steps else None


# --- folding: Transformers' normaliser + added tokens + scores -> one SentencePiece model -------


_TO_SPACE = {ord(c): " " for c in WHITESPACE}


@functools.lru_cache(maxsize=8)
def _normalizer_rules(albert: bool, do_lower_case: bool, keep_accents: bool, charsmap: bytes | None) -> dict:
    """Rewrite rules (raw text -> normalised text, Unicode whitespace as " ") equivalent to
    Transformers' normaliser followed by WhitespaceSplit. Cached: it evaluates ~1.1M code points."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    normalizer = _reference_normalizer(albert, do_lower_case, keep_accents, charsmap)
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
    if albert:
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

    rules = dict(_normalizer_rules(hf.spec.normalizer == "albert", hf.do_lower_case, hf.keep_accents,
                                    hf.charsmap))

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
