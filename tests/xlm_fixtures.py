"""Tiny XLM checkpoints with a tokenizer, for the task and generation tests.

Like xlm-mlm-enfr-1024 in miniature: two languages (en, fr) with language embeddings, the
XLM tokenizer of tests/bpe_fixtures.py (lowercase + accent removal, mask `<special1>`).
Weights are random but "lively" (LayerNorm scales near 1, small biases, larger matrices), so
that predictions depend on the context and the language: with every parameter drawn at
std 0.2 (tests/reference.py) an LM head predicts the same token whatever the text.
"""

from __future__ import annotations

import json
import shutil

import torch
import transformers

from kzoo.converters.convert import convert
from bpe_fixtures import corpus_words, learn_bpe, write_dir
from reference import lively  # noqa: F401  (re-exported: the XLM tests use it)

TINY_ENFR = dict(
    emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=96, n_langs=2, use_lang_emb=True,
    dropout=0.1, attention_dropout=0.1, pad_token_id=2, bos_token_id=0, eos_token_id=1, unk_index=3,
    mask_index=5, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"},
)


def tokenizer_dir(path, languages=("en", "fr")):
    vocab, merges = learn_bpe(corpus_words(), 300)
    config = {"do_lowercase_and_remove_accent": True, "tokenizer_class": "XLMTokenizer"}
    if languages:
        config["lang2id"] = {c: i for i, c in enumerate(languages)}
        config["id2lang"] = {str(i): c for i, c in enumerate(languages)}
    return write_dir(path, vocab, merges, tokenizer_config=config), len(vocab)


def xlm_checkpoint(root, seed=0, languages=("en", "fr"), config_json=None, head="XLMWithLMHeadModel", **config):
    """A Transformers XLMWithLMHeadModel (or `head`) dir with tokenizer files; config_json: keys added to its
    config.json afterwards (as a hub config carries them, e.g. trained_causal)."""
    tok, vocab_size = tokenizer_dir(root / "tokenizer", languages)
    if not languages:
        config = {"n_langs": 1, "lang2id": None, "id2lang": None, **config}
    model = getattr(transformers, head)(transformers.XLMConfig(**{**TINY_ENFR, "vocab_size": vocab_size, **config}))
    src = root / "ref"
    lively(model.eval(), seed).save_pretrained(src)
    for f in tok.iterdir():
        if f.name != "config.json":
            shutil.copy(f, src / f.name)
    if config_json:
        hf = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**hf, **config_json}))
    return src


def xlm_model_dir(root, **kwargs):
    """(Transformers checkpoint dir, converted kzoo model dir)."""
    src = xlm_checkpoint(root, **kwargs)
    convert(src, root / "out")
    return src, root / "out"
