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
  * Transformers' charsmap step works on graphemes: one under 6 bytes is rewritten by the rule of its
    shortest prefix that has one, dropping the rest ("½" + a combining mark -> "1/2"), one of 6 bytes
    or more character by character, composing nothing (NFD Greek "α\u0313\u0301", stacked marks). So
    each (rule, combining mark) pair the op would rewrite otherwise gets a rule of its own, identities
    included (SentencePiece's builder refuses those; a placeholder is compiled and cut): ~1.5M rules,
    ~12 MB, for XLM-R's charsmap, a few for ALBERT's (its NFKD and accent stripping come first). And the
    tokenizer puts a marker (U+FDD0 U+FDD1) between the characters of each grapheme of 6 bytes or more,
    found in the graph by UAX #29's rules (kzoo.tokenizers.graphemes), which a rule of its own deletes:
    no other rule matches across it, so each character is rewritten alone (only where some rule spans
    two characters one grapheme can hold);
  * characters that can only be unknown (their normalised text is in no piece) are rewritten to one
    stand-in character with a piece of its own, mapped to the unknown id; consecutive unknowns are
    fused into one id after the op, as Transformers fuses them;
  * each added token `t` becomes the rule `t -> " M "`, where `M` is a marker character that nothing
    else can produce (a private-use code point in no piece and in no rule output; the raw marker
    character itself is rewritten to another unknown character of the same length). The model gets a
    piece `▁M` (beating every other segmentation of that word) and the id table maps it to the
    token's id, so `[MASK]` is split off untouched wherever it is, also inside a word;
  * the pieces are Transformers' vocabulary in Transformers' order (all NORMAL, unknown piece at
    Transformers' unk id, plus a NORMAL copy of it because Transformers also matches the text
    "<unk>"), so model ids *are* Transformers' ids (the fairseq layout of XLM-R included) except for
    the pieces appended at the end;
  * scores are Transformers' scores made exact for the op, which sums them in float32 where
    Transformers uses float64 (`_exact_scores`): a constant per character is added (the same on every
    path, so nothing changes but the size of the sums), pieces that can never win are raised to just
    below the segmentation that beats them (so the op's unknown penalty stays small), and all are
    rounded to multiples of 2**-16. Each word is tokenized on its own (kzoo.tokenizers.sentencepiece),
    so a path's sum stays within +-256, where float32 adds those values exactly: equal scores (".",
    ".." vs "..", ".") tie exactly and resolve as in Transformers (first found wins in both), and
    near-ties resolve by their true scores down to ~1e-5.

In the graph this is: tf-text's whitespace splitter, the tf-text custom op on each word, the unknown
fusion, one `tf.gather` through the id table (markers -> special ids), and, for `tf_encode`, a
concatenation/select that adds the special tokens and pads. The same graph serves eager Python
(`encode`, `__call__`), `tf.function`, SavedModel and TFLite.

Measured (tests/text_strategies.py's strings; held-out lines of the machine's translation catalogs,
1.16M lines in ~100 languages, a 32k-piece model trained on 300k of them): natural text 0 lines in
100,000 differ, in NFC and in NFD, for ALBERT and XLM-R alike; mixed-script strings with marks after
letters, NFD, ZWJ/ZWNJ, U+061C, emoji and compatibility characters 0 in 20,000; adversarial ones
(random marks stacked on letters, marks after compatibility characters) 0 in 9,000, where 1.5 % of
XLM-R's differed before the grapheme marker; offsets equal Transformers' on the tests' adversarial
and mixed-script strings.

Known differences from Transformers: a grapheme of 5 bytes or less that starts with ZWJ/ZWNJ or a mark
(at the start of a text or after a line break) and holds more marks (1 % of strings made of such
graphemes); a text holding U+FDD0 U+FDD1 (two noncharacters: the grapheme marker) loses them; a text
with more than 16,383 characters inside long graphemes has only its first 16,383 marked (what three
rounds of the in-graph string join hold); a word whose near-ties differ by less than ~1e-5, or whose
exact ties come after more than ~25 bytes of characters the op scores as unknown (unassigned code
points); a word whose path sums leave +-256 (thousands of characters without a space); the op scores
an unknown character per byte, Transformers per character (only between paths with different unknown
characters); added tokens flagged `normalized=True` / `single_word=True` are matched on the raw text
like the others; a tokenizer with an added token holding ASCII whitespace tokenizes whole strings (it
could not match across the cut), whose exact ties hold for ~100 words only; a literal `▁` is a word
boundary for Transformers, here too only if the charsmap maps it to a space (the standard nmt_nfkc one
does).

Conversion needs the `tokenizers` library (Transformers' normaliser, evaluated); the runtime tokenizer
needs neither it nor Transformers / torch.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import unicodedata
from pathlib import Path

from kzoo.converters.tokenizers import SentencePieceFiles
from kzoo.errors import TokenizerError
from kzoo.io.cache import disk_cached
from kzoo.tokenizers import graphemes
from kzoo.tokenizers.base import SPECIAL_ATTRS
from kzoo.tokenizers.sentencepiece import SPACE, WHITESPACE, SentencePieceTokenizer, Vocabulary

# Hugging Face tokenizer files copied into a kzoo model dir (so Transformers can load it as well).
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
            "spiece.model", "sentencepiece.bpe.model")
SCORE_GRID_BITS = 16  # piece scores are rounded to multiples of 2**-16 (see _exact_scores)


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
        grapheme_marker=graphemes.MARKER if _deletes_marker(folded) else None,
    )
    return SentencePieceTokenizer(folded, id_map, vocabulary)


def _deletes_marker(folded: bytes) -> bool:
    """Whether the folded model has the grapheme marker's rule (see _folded)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(folded)
    return _op_normalizer(model.normalizer_spec.SerializeToString()).normalize(graphemes.MARKER) == ""


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


def _disk_cached(kind: str, parts: tuple, compute, dump, load):
    """kzoo.io.cache.disk_cached, named by this module's source and the versions of what computes it (the
    `tokenizers` and `sentencepiece` libraries, Unicode's data) too."""
    import sentencepiece
    import tokenizers

    return disk_cached(kind, parts, compute, dump, load, source=__file__,
                       versions=(tokenizers.__version__, sentencepiece.__version__, unicodedata.unidata_version))


def _json_dict(data: bytes) -> dict:
    rules = json.loads(data)
    if not isinstance(rules, dict):
        raise TypeError("not a dict")
    return rules


@functools.lru_cache(maxsize=8)
def _normalizer_rules(albert: bool, do_lower_case: bool, keep_accents: bool, charsmap: bytes | None) -> dict:
    """_evaluate_rules, cached in the process and on disk: ~10-18 s for a charsmap with compositions
    (XLM-R's), the same for every checkpoint that has it."""
    return _disk_cached("normalizer-rules", (albert, do_lower_case, keep_accents, charsmap or b""),
                        lambda: _evaluate_rules(albert, do_lower_case, keep_accents, charsmap),
                        lambda rules: json.dumps(rules, ensure_ascii=False).encode(), _json_dict)


def _evaluate_rules(albert: bool, do_lower_case: bool, keep_accents: bool, charsmap: bytes | None) -> dict:
    """Rewrite rules (raw text -> normalised text, Unicode whitespace as " ") equivalent to
    Transformers' normaliser followed by WhitespaceSplit. It evaluates ~1.1M code points."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    normalizer = _reference_normalizer(albert, do_lower_case, keep_accents, charsmap)
    normalize = normalizer.normalize_str if normalizer is not None else (lambda text: text)

    def spaced(text):  # normalised, Unicode whitespace as " " (one translate of a joined batch)
        return normalize(text).translate(_TO_SPACE)

    # Every code point (but surrogates) the normaliser (or WhitespaceSplit) changes.
    chars = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    rules = {c: out for c, out in zip(chars, _normalize_each(spaced, chars)) if out != c}
    per_char = {ord(c): out for c, out in rules.items()}

    # Sequences handled as a whole: the original charsmap's multi-character keys (compositions) and
    # ALBERT's quote rules, wherever the normaliser treats them differently from char by char.
    sequences = []
    if charsmap:
        spec = pb.NormalizerSpec(name="original", precompiled_charsmap=charsmap)
        sequences += [k for k, _ in spm.SentencePieceNormalizer(normalizer_spec=spec).decompile() if len(k) > 1]
    if albert:
        sequences += ["``", "''"]
    wanted = dict(zip(sequences, _normalize_each(spaced, sequences)))
    for k, out in wanted.items():
        if out != k.translate(per_char) and out != k:
            rules[k] = out

    # Transformers' charsmap step works on graphemes: one under 6 bytes is rewritten as a whole by the
    # rule of its shortest prefix that has one, so the marks after that prefix are dropped ("½" or
    # "\xa0" + "\u0301"; "u\u0308" + "\u0301"), and one of 6 bytes or more character by character,
    # so nothing in it is composed ("ω\u0342" + "\u0300"; the tokenizer's grapheme marker, see
    # _folded). The op rewrites the longest rule wherever it is. So each (rule, combining mark) pair
    # where the two differ becomes a rule of its own: ~1.5M for XLM-R's charsmap (~12 MB in
    # kzoo_tokenizer.model; ~10-18 s, hence the disk cache), 2 for ALBERT's.
    extend = [chr(cp) for cp in range(0x300, 0x10000) if not 0xD800 <= cp < 0xE000
              and (unicodedata.category(chr(cp)).startswith("M") or cp in (0x200C, 0x200D, 0xFF9E, 0xFF9F))]
    starts = [k for k in rules if len(k.encode()) < 6  # (marks, ZWJ, ZWNJ rarely start a grapheme)
              and not unicodedata.category(k[0]).startswith(("M", "C"))]
    ops = _op_normalizer(_compile(rules))

    def differing(texts):
        return [(text, out) for text, out, got in zip(texts, _normalize_each(spaced, texts),
                                                      _op_normalize_each(ops, rules, texts)) if out != got]

    probes = [k + e for k in starts for e in ("\u0301", "\u0308", "\u05b9", "\u0650", "\u093e", "\u200d", "\uff9e") if len((k + e).encode()) < 7]
    droppers = {pair[:-1] for pair, _ in differing(probes)}
    marks = [(e, len(e.encode())) for e in extend]
    pairs = [pair for k in droppers for size in (len(k.encode()),) for e, mark_size in marks
             if size + mark_size < 7 and (pair := k + e) not in rules]
    for pair, out in differing(pairs):
        rules[pair] = out  # (the op rewrites a pair by its own rule: its key is the whole text)

    # A sequence the op would still rewrite otherwise gets a rule of its own, an identity if need be:
    # NFD Greek "α\u0313\u0301" is one grapheme of 6 bytes, which the charsmap step leaves as it is,
    # where the op would compose its prefix "α\u0313" (a rule for the 4-byte grapheme "ἀ").
    # The op's output for a text depends only on the rules whose keys are in it: compiled for speed.
    substrings = {t[i:j] for t in wanted for i in range(len(t)) for j in range(i + 1, len(t) + 1)}
    for _ in range(3):  # (a new rule can change what a longer sequence starts with)
        ops = _op_normalizer(_compile({k: rules[k] for k in substrings if k in rules}))
        wrong = {k: out for (k, out), got in zip(wanted.items(), _op_normalize_each(ops, rules, list(wanted)))
                 if got != out}
        if not wrong:
            break
        rules.update(wrong)
    return rules


_IDENTITY = "\x7f"  # a placeholder ending the output of an identity rule (DEL: no other output ends with it)


def _compile(rules: dict) -> bytes:
    """The serialised SentencePiece NormalizerSpec of `rules` (raw -> normalised, longest key first).
    SentencePiece's builder refuses identity rules, which matter here (they stop a shorter key from
    matching); they are compiled with a placeholder, which is then cut from the output strings."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    if any(out.endswith(_IDENTITY) for out in rules.values()):
        raise TokenizerError("a normaliser output ends with U+007F; kzoo cannot fold this normaliser")
    spm.set_min_log_level(2)
    compiled = spm.SentencePieceNormalizer(norm_map=sorted(
        (key, out + _IDENTITY if out == key else out) for key, out in rules.items()))
    spec = pb.NormalizerSpec()
    spec.ParseFromString(compiled.serialized_normalizer_spec())
    # precompiled_charsmap: uint32 trie size, the trie, then NUL-terminated outputs the trie points to.
    charsmap = spec.precompiled_charsmap
    trie_end = 4 + int.from_bytes(charsmap[:4], "little")
    spec.precompiled_charsmap = charsmap[:trie_end] + charsmap[trie_end:].replace(
        _IDENTITY.encode() + b"\0", b"\0\0")
    return spec.SerializeToString()


def _op_normalizer(spec: bytes):
    """A normaliser that rewrites text as the op's charsmap step does (no "▁" prefix or escaping)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    normalizer_spec = pb.NormalizerSpec()
    normalizer_spec.ParseFromString(spec)
    return spm.SentencePieceNormalizer(normalizer_spec=normalizer_spec, add_dummy_prefix=False,
                                       escape_whitespaces=False, remove_extra_whitespaces=False)


def _normalize_each(normalize, texts, separator="\n\u2981\n", chunk=10_000):
    """`[normalize(t) for t in texts]` in one call per `chunk` texts (for speed; the normaliser's time grows
    faster than its text: 1.5M pairs at once took 30 s, in chunks of 10,000 under 5 s): texts joined by a
    separator that the normaliser keeps apart (a grapheme ends at a line break, also before a combining
    mark; a text ending in CR, which joins a line feed, is normalised alone); checked on a sample, else one
    call each."""
    if len(texts) > chunk:
        return [out for i in range(0, len(texts), chunk)
                for out in _normalize_each(normalize, texts[i:i + chunk], separator, chunk)]
    joined = separator.join(texts)
    outs = normalize(joined).split(normalize(separator))
    if len(outs) != len(texts) or any(outs[i] != normalize(texts[i]) for i in range(0, len(texts), 997)):
        return [normalize(t) for t in texts]
    if "\r" + separator in joined:
        return [normalize(t) if t.endswith("\r") else out for t, out in zip(texts, outs)]
    return outs


def _op_normalize_each(ops, rules, texts, separator="\ue000"):
    """`ops.normalize(texts)` (ops compiled from `rules`) in one call (for speed): SentencePiece's
    normaliser calls once per text from Python, ~1 us each over millions. The texts are joined by a
    character that no rule rewrites or has in its key, so no match crosses it; else one call each."""
    if separator in rules or any(separator in k for k in rules if len(k) > 1):
        return ops.normalize(texts)
    outs = ops.normalize(separator.join(texts)).split(separator)
    if len(outs) != len(texts) or any(outs[i] != ops.normalize(texts[i]) for i in range(0, len(texts), 997)):
        return ops.normalize(texts)
    return outs


def _exact_scores(vocab):
    """`exact(piece, score)`: the score the folded model gives a piece of Transformers' vocabulary, so
    that the op's float32 Viterbi sums are exact where Transformers' float64 ones decide.

    * Every segmentation of a word covers the same characters, so adding C per character to every
      piece adds the same to every path: best paths and ties are unchanged. C is minus the score per
      character a text typically costs (pieces weighted by probability, exp(score)), so a word's
      running sum hovers around 0 instead of falling by ~2 per character.
    * A piece scoring below the best segmentation of its own text by other pieces never wins (swap it
      for that segmentation). Such pieces (albert-*-v2's "digit," pieces, lowered by 100) are raised
      to 1 below it: they still never win, and the op's unknown-character penalty (lowest score - 10)
      stays small.
    * Scores are rounded to multiples of 2**-SCORE_GRID_BITS. Together with words tokenized one at a
      time (kzoo.tokenizers.sentencepiece), path sums stay inside +-2**(24 - SCORE_GRID_BITS), where
      float32 adds grid values exactly: equal scores (".", ".." vs "..", ".") tie exactly and resolve
      as in Transformers (first found wins in both), and near-ties down to ~1e-5 resolve by their
      true scores."""
    scores = {}
    for piece, score in vocab:
        scores.setdefault(piece, score)
    longest = max(map(len, scores))
    raised = {}
    for piece, score in scores.items():  # the best segmentation of `piece` without the piece itself
        best = [0.0] + [-math.inf] * len(piece)
        for j in range(1, len(piece) + 1):
            for i in range(max(0, j - longest), j):
                part = scores.get(piece[i:j]) if (i, j) != (0, len(piece)) else None
                if part is not None and best[i] + part > best[j]:
                    best[j] = best[i] + part
        if best[-1] - 1 > score:
            raised[piece] = best[-1] - 1
    weighted = [(math.exp(s), s, len(p)) for p, s in scores.items() if s < 0]
    per_char = sum(w * s for w, s, _ in weighted) / max(sum(w * n for w, _, n in weighted), 1e-30)
    grid = float(2**SCORE_GRID_BITS)
    c = round(-per_char * grid) / grid

    def exact(piece, score):
        return round((raised.get(piece, score) + c * len(piece)) * grid) / grid

    return exact


def _fold(hf: _HFTokenizer):
    """Returns (folded SentencePiece ModelProto bytes, id table: folded id -> Transformers id)."""
    folded, id_map = _fold_cached(hf.spec.normalizer == "albert", hf.do_lower_case, hf.keep_accents, hf.charsmap,
                                  tuple(hf.vocab), hf.unk_id, tuple(hf.added.items()))
    return folded, list(id_map)


@functools.lru_cache(maxsize=4)
def _fold_cached(*args):
    """_folded, cached in the process and on disk (~5 s for XLM-R's tokenizer once its rules are known):
    checkpoints that share a tokenizer fold it once."""
    def load(data):
        head, _, model = data.partition(b"\n")
        return model, tuple(json.loads(head))

    return _disk_cached("folded", args[:3] + (args[3] or b"",) + args[4:], lambda: _folded(*args),
                        lambda value: json.dumps(value[1]).encode() + b"\n" + value[0], load)


def _folded(albert, do_lower_case, keep_accents, charsmap, vocab, unk_id, added):
    """_fold of what it reads from the tokenizer."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    added = dict(added)
    rules = dict(_normalizer_rules(albert, do_lower_case, keep_accents, charsmap))

    # Marker characters for added tokens: in no piece and in no rule output.
    vocab_chars = set("".join(p for p, _ in vocab))
    produced = set("".join(rules.values()))
    candidates = (chr(cp) for cp in range(0x100000, 0x10FFFE) if chr(cp) not in vocab_chars)
    stand_in = next(candidates)  # what a raw marker character is rewritten to (unknown either way)
    tokens = sorted(added, key=lambda t: added[t][0])
    markers = {}
    for t in tokens:
        m = next(c for c in candidates if c not in produced)
        markers[t] = m
        rules[m] = rules.get(m, m).replace(m, stand_in)
        rules[t] = f" {m} "

    # Transformers rewrites a grapheme of 6 bytes or more character by character, where the op would match
    # rules across its characters: the tokenizer puts a marker between them (kzoo.tokenizers.graphemes),
    # which this rule deletes. Only where a rule's key holds two characters one grapheme can hold (XLM-R's
    # compositions; not ALBERT's folded rules, which strip marks first): elsewhere it changes nothing, and
    # the tokenizer's graph is ~800 ops smaller without it.
    if any(len(k) > 1 and any(map(graphemes.may_join, k, k[1:])) for k in rules):
        rules[graphemes.MARKER] = ""

    # Characters that can only be unknown (their normalised text is in no piece, and in no longer rule)
    # become one stand-in character with its own piece: Transformers gives each an unknown node that
    # every segmentation shares, so its score changes nothing, and a cheap piece keeps the op's path
    # sums small (the op's own unknown costs at least 10 per byte). Consecutive unknowns are fused
    # into one id afterwards, as Transformers fuses them (kzoo.tokenizers.sentencepiece).
    unknown = next(c for c in candidates if c not in produced)
    in_sequences = {ch for k in rules if len(k) > 1 for ch in k}
    for cp in range(1, 0x110000):  # (NUL cannot be a charsmap key)
        c = chr(cp)
        if c in in_sequences or c in markers.values() or unicodedata.category(c) in ("Cn", "Co", "Cs"):
            continue
        out = rules.get(c, c)
        if out and " " not in out and not any(ch in vocab_chars for ch in out):
            rules[c] = unknown

    # The folded model: Transformers' pieces and scores, then one `▁M` piece per added token and the
    # unknown stand-in, each score made exact for the op's float32 sums (see `_exact_scores`).
    model = pb.ModelProto()
    exact = _exact_scores(vocab)
    for i, (piece, score) in enumerate(vocab):
        model.pieces.add(piece=piece, score=exact(piece, score),
                         type=pb.ModelProto.SentencePiece.UNKNOWN if i == unk_id
                         else pb.ModelProto.SentencePiece.NORMAL)
    id_map = list(range(len(vocab)))
    # Transformers' Unigram also matches the unknown piece's own text ("<unk>" coming out of the
    # normaliser, e.g. from "＜unk＞"); the op never matches UNKNOWN pieces, so add a NORMAL copy.
    unk_piece, unk_score = vocab[unk_id]
    model.pieces.add(piece=unk_piece, score=exact(unk_piece, unk_score), type=pb.ModelProto.SentencePiece.NORMAL)
    id_map.append(unk_id)
    for t in tokens:
        marker = SPACE + markers[t]
        model.pieces.add(piece=marker, score=exact(marker, 0.0), type=pb.ModelProto.SentencePiece.NORMAL)
        id_map.append(added[t][0])
    model.pieces.add(piece=unknown, score=exact(unknown, 0.0), type=pb.ModelProto.SentencePiece.NORMAL)
    id_map.append(unk_id)
    model.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    model.trainer_spec.vocab_size = len(model.pieces)
    model.trainer_spec.unk_id = unk_id
    model.trainer_spec.bos_id = model.trainer_spec.eos_id = model.trainer_spec.pad_id = -1
    model.trainer_spec.unk_piece = vocab[unk_id][0]

    model.normalizer_spec.ParseFromString(_compile(rules))
    model.normalizer_spec.name = "kzoo_folded"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = True
    model.normalizer_spec.escape_whitespaces = True
    return model.SerializeToString(), tuple(id_map)
