"""Tokenizers giving Transformers' ids: one base (kzoo.tokenizers.base) and a subclass per format.

    kzoo-sentencepiece  ALBERT, XLM-RoBERTa: a folded SentencePiece model run by tf-text (Python,
                        tf.function, SavedModel and TFLite alike)
    kzoo-xlm-bpe        XLM: Moses + BPE, in Python

A model dir's kzoo_tokenizer.json names its format; `load_tokenizer` dispatches on it. Building one
from a Hugging Face checkpoint's files is the converters' work (kzoo.converters.tokenizers).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from kzoo.errors import TokenizerError
from kzoo.tokenizers.base import Tokenizer

META_FILE = Tokenizer.META_FILE
FORMATS = {  # stored format -> (module, class)
    "kzoo-sentencepiece": ("kzoo.tokenizers.sentencepiece", "SentencePieceTokenizer"),
    "kzoo-xlm-bpe": ("kzoo.tokenizers.xlm", "XLMTokenizer"),
}


def tokenizer_class(format_name):
    if format_name not in FORMATS:
        raise TokenizerError(f"unknown tokenizer format {format_name!r}; kzoo reads {', '.join(FORMATS)}")
    module, name = FORMATS[format_name]
    return getattr(importlib.import_module(module), name)


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer stored in a model dir, or with an export (a SavedModel or .tflite: its sidecar's),
    of whatever format it names."""
    from kzoo.io import layout

    if Path(path).suffix == ".tflite" or layout.kind_of(path) == "savedmodel":
        path = layout.sidecar_of(path)
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        why = "the checkpoint it was converted from had no tokenizer files" if (Path(path) / "config.json").is_file() \
            else "not a kzoo model dir or export"
        raise TokenizerError(f"{path}: no tokenizer ({META_FILE}); {why}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{meta_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise TokenizerError(f"{meta_file}: not a kzoo tokenizer description (a JSON object)")
    # (a file without "format" predates it: XLM's said family "xlm", SentencePiece ones their family)
    format_name = meta.get("format") or ("kzoo-xlm-bpe" if meta.get("family") == "xlm" else "kzoo-sentencepiece")
    try:
        return tokenizer_class(format_name).load(path, meta)
    except TokenizerError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:  # a field missing or mistyped
        raise TokenizerError(f"{meta_file}: incomplete or damaged ({type(e).__name__}: {e}); convert the "
                             "checkpoint again") from None
