"""A model dir's tokenizer, built from a checkpoint's Hugging Face tokenizer files in the format its
family declares (kzoo.families: `Family.tokenizer`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kzoo.errors import TokenizerError

@dataclasses.dataclass(frozen=True)
class SentencePieceFiles:
    """What a family's Transformers tokenizer class reads and does (each converter declares one)."""

    spm_file: str  # the SentencePiece model's file name
    specials: dict  # defaults of the named special tokens
    unk_id: int  # the unknown piece's id, which Transformers hard-codes
    template: str  # kzoo.tokenizers.base.Tokenizer.template
    fairseq: bool = False  # without tokenizer.json, ids in fairseq's layout (XLM-R)
    normalizer: str | None = None  # "albert": quotes, NFKD + accents, lowercase, per tokenizer_config


# Any of these in a checkpoint dir means it has a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt")


def _sentencepiece(src, family, spec):
    from kzoo.converters import sentencepiece

    return sentencepiece.from_hf_dir(src, family.name, spec.TOKENIZER)


def _xlm_bpe(src, family, spec, pretokenize_by_lang=False):
    from kzoo.converters import xlm_tokenizer

    return xlm_tokenizer.from_hf_dir(src, pretokenize_by_lang=pretokenize_by_lang)


# Family.tokenizer -> (builder, the options it takes, what the format is called in messages)
BUILDERS = {
    "kzoo-sentencepiece": (_sentencepiece, (), "SentencePiece"),
    "kzoo-xlm-bpe": (_xlm_bpe, ("pretokenize_by_lang",), "Moses + BPE"),
}


def check_options(family, options):
    """A one-line error for options the family's tokenizer does not take (before any slow work)."""
    _, accepted, kind = BUILDERS[family.tokenizer]
    for name, value in options.items():
        if value and name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise TokenizerError(f"{flag} is not for {family.name}: its tokenizer ({kind}) has no such option")


def build_tokenizer(src, family, spec, **options):
    """The family's tokenizer from the files in `src`, or None when it has none.
    options: `pretokenize_by_lang` (XLM)."""
    check_options(family, options)
    src = Path(src)
    if not any((src / f).exists() for f in TOKENIZER_FILES):
        return None
    builder, accepted, _ = BUILDERS[family.tokenizer]
    try:
        return builder(src, family, spec, **{k: v for k, v in options.items() if k in accepted})
    except TokenizerError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:  # a field missing or mistyped
        raise TokenizerError(f"{src}: its tokenizer files are incomplete or damaged ({type(e).__name__}: {e})") \
            from None


def from_hf_dir(src, family_name, **options):
    """A family's tokenizer from a Hugging Face tokenizer dir (e.g. for tests and tools)."""
    from kzoo.converters import spec_of
    from kzoo.families import FAMILIES

    if family_name not in FAMILIES:
        raise TokenizerError(f"unknown tokenizer family {family_name!r}; kzoo knows {', '.join(FAMILIES)}")
    family = FAMILIES[family_name]
    check_options(family, options)
    return BUILDERS[family.tokenizer][0](Path(src), family, spec_of(family), **options)
