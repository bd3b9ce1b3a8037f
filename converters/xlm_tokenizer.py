"""Builds kzoo's XLM tokenizer (kzoo.tokenizers.xlm) from a Transformers XLM tokenizer dir: its
settings resolved exactly as Transformers 5.23's `XLMTokenizer.from_pretrained` resolves them."""

from __future__ import annotations

from pathlib import Path

from kzoo.errors import TokenizerError
from kzoo.tokenizers.base import SPECIAL_ATTRS
from kzoo.tokenizers.xlm import MERGES_FILE, VOCAB_FILE, XLMTokenizer, added_token, read_json, read_vocab_merges

# Transformers' XLMTokenizer defaults.
_DEFAULT_SPECIALS = {"unk_token": "<unk>", "bos_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
                     "cls_token": "</s>", "mask_token": "<special1>"}
_DEFAULT_EXTRA_SPECIALS = [f"<special{i}>" for i in range(10)]
_LARGE_INTEGER = int(1e20)  # Transformers: a model_max_length above this means "none"


def from_hf_dir(src_dir, pretokenize_by_lang=False) -> XLMTokenizer:
    """From a Transformers XLM tokenizer dir: vocab.json, merges.txt, tokenizer_config.json
    (+ special_tokens_map.json / added_tokens.json), languages from config.json if needed."""
    src = Path(src_dir)
    if not src.is_dir():
        raise TokenizerError(f"{src}: not a directory")
    settings = _resolve_hf_dir(src)
    vocab, merges = read_vocab_merges(src)
    return XLMTokenizer(vocab, merges, settings, source_dir=src, pretokenize_by_lang=pretokenize_by_lang)


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def _lang_table(config: dict) -> dict:
    """{code: language id} from a config's lang2id (preferred) or id2lang."""
    if config.get("lang2id"):
        return {code: int(i) for code, i in config["lang2id"].items()}
    return {code: int(i) for i, code in (config.get("id2lang") or {}).items()}


def _legacy_files(src, named, extra):
    """Older tokenizer dirs: special_tokens_map.json (into `named`, `extra`) and added_tokens.json.
    Returns ({id: added token}, the extra special tokens)."""
    map_additional = None
    for key, value in (read_json(src / "special_tokens_map.json") or {}).items():
        if key == "additional_special_tokens":
            map_additional = list(value)
        elif key == "extra_special_tokens" and isinstance(value, list):
            have = [_content(t) for t in extra or []]
            extra = list(extra or []) + [t for t in value if _content(t) not in have]
        elif key.endswith("_token") and (value is None or isinstance(value, (str, dict))):
            named[key] = value
    if extra is None:
        extra = map_additional
    specials = {_content(v) for k, v in named.items() if v and k in SPECIAL_ATTRS}
    specials |= {_content(v) for v in extra or []}
    added = {int(id_): added_token(content, id_, content in specials)
             for content, id_ in (read_json(src / "added_tokens.json") or {}).items()}
    return added, extra


def _resolve_hf_dir(src: Path) -> dict:
    """Settings of the Transformers tokenizer in `src`, resolved as Transformers 5.23 resolves them."""
    if not (src / VOCAB_FILE).is_file() or not (src / MERGES_FILE).is_file():
        missing = [f for f in (VOCAB_FILE, MERGES_FILE) if not (src / f).is_file()]
        raise TokenizerError(f"{src}: not an XLM tokenizer dir ({', '.join(missing)} missing)")
    config = read_json(src / "tokenizer_config.json") or {}
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")

    # Special tokens named in the files (`*_token` entries; None removes a default) ...
    named = {k: v for k, v in config.items() if k.endswith("_token") and (v is None or isinstance(v, (str, dict)))}
    extra = config.get("extra_special_tokens")
    if isinstance(extra, dict):  # named model-specific tokens
        named.update(extra)
        extra = None
    if "added_tokens_decoder" in config:
        added = {int(id_): added_token(tok["content"], id_, tok.get("special", False), **{
                     k: tok.get(k, False) for k in ("lstrip", "rstrip", "single_word")})
                 for id_, tok in ((i, {"content": t} if isinstance(t, str) else t)
                                  for i, t in config["added_tokens_decoder"].items())}
    else:
        added, extra = _legacy_files(src, named, extra)
    # ... over XLMTokenizer's defaults.
    named = {**_DEFAULT_SPECIALS, **named}
    if extra is None:
        extra = list(_DEFAULT_EXTRA_SPECIALS)

    attrs = list(SPECIAL_ATTRS) + [k for k in named if k not in SPECIAL_ATTRS]
    named = {k: _content(named[k]) for k in attrs if named.get(k)}
    all_special = list(dict.fromkeys([*named.values(), *map(_content, extra)]))

    # Languages: the tokenizer config's, else the model config's (Transformers keeps both).
    lang2id = _lang_table(config) or _lang_table(read_json(src / "config.json") or {})

    max_length = config.get("model_max_length", config.get("max_len"))
    return {
        "do_lowercase_and_remove_accent": bool(config.get("do_lowercase_and_remove_accent", True)),
        "special_tokens": named,
        "all_special_tokens": all_special,
        "added_tokens": [added[i] for i in sorted(added)],
        "languages": [code for code, _ in sorted(lang2id.items(), key=lambda kv: kv[1])],
        "lang2id": lang2id,
        "split_special_tokens": bool(config.get("split_special_tokens", False)),
        "clean_up_tokenization_spaces": bool(config.get("clean_up_tokenization_spaces", False)),
        "model_max_length": int(max_length) if max_length is not None and max_length <= _LARGE_INTEGER else None,
        "padding_side": config.get("padding_side", "right"),
        "truncation_side": config.get("truncation_side", "right"),
    }
