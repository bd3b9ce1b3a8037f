"""Tiny SentencePiece models and Hugging Face tokenizer dirs built from them, for tests.

No downloads: every model is trained here from generated multilingual text.

    make_albert_tokenizer_dir(tmp_dir, with_tokenizer_json) -> Path
    make_xlmr_tokenizer_dir(tmp_dir) -> Path

Each returns a dir holding exactly what Transformers' `save_pretrained` writes for the tokenizer
(`spiece.model` / `sentencepiece.bpe.model`, `tokenizer_config.json`, `tokenizer.json`, ...); with
`with_tokenizer_json=False` the `tokenizer.json` is removed, so Transformers (and kzoo) rebuild the
tokenizer from the SentencePiece model plus `tokenizer_config.json`.

`training_corpus()` and `held_out_texts()` are the texts the models are trained and tested on.
"""

from __future__ import annotations

import random
import shutil
import unicodedata
from pathlib import Path

# Words per language: enough variety for a few hundred sentences, with accents, scripts that
# SentencePiece treats differently (no spaces in Chinese / Japanese / Thai), and symbols.
_WORDS = {
    "en": "the quick brown fox jumps over lazy dog people said they would meet again tomorrow "
    "morning because weather forecast was good and everyone wanted walk park "
    "Paris London Monday December Internet computer science".split(),
    "fr": "le la les une des très été déjà où garçon français élève hôpital fenêtre château "
    "Noël cœur naïve façon être àussi problème deuxième Québec Ça".split(),
    "de": "der die das und über Straße Mädchen schön größer Übung Äpfel Öl müssen heißen "
    "Fußball Grüße natürlich München".split(),
    "es": "el los las niño señor año mañana corazón canción árbol pingüino también "
    "¿qué? ¡hola! España jalapeño".split(),
    "ru": "привет мир это очень хорошо спасибо большое Москва сегодня погода ёлка "
    "Россия язык".split(),
    "el": "γεια σου κόσμε καλημέρα Αθήνα ευχαριστώ πολύ ΟΔΟΣ σήμερα".split(),
    "ar": "مرحبا بالعالم شكرا جزيلا القاهرة اليوم الكتاب".split(),
    "zh": "你好世界 我们 今天 天气 很好 北京 中华人民共和国 谢谢 学习 中文".split(),
    "ja": "こんにちは 世界 東京 ありがとう カタカナ ひらがな 日本語 ﾃｽﾄ".split(),
    "ko": "안녕하세요 세계 서울 감사합니다 한국어 오늘 날씨".split(),
    "hi": "नमस्ते दुनिया भारत धन्यवाद हिन्दी आज".split(),
    "th": "สวัสดี ประเทศไทย ขอบคุณ ภาษาไทย วันนี้".split(),
    "sym": ["😀", "👍", "🎉", "❤️", "©", "™", "½", "ﬁ", "①", "Ⅻ", "€", "£", "%", "&", "@", "#"],
}
_NUMBERS = ["1,000,000", "3,14", "2,500", "42", "2024", "10,000", "7.5", "1,2,3", "0,5", "99,"]
_QUOTES = [("``", "''"), ('"', '"'), ("«", "»"), ("„", "“"), ("'", "'"), ("‘", "’")]
_SPACES = [" ", " ", " ", " ", "  ", "\t", " \n ", "   ", "\u00a0", "\u3000"]


def _sentence(rng: random.Random) -> str:
    langs = list(_WORDS)
    main = rng.choice(langs[:-1])
    words = []
    for _ in range(rng.randint(3, 14)):
        r = rng.random()
        if r < 0.7:
            words.append(rng.choice(_WORDS[main]))
        elif r < 0.8:
            words.append(rng.choice(_WORDS[rng.choice(langs)]))
        elif r < 0.9:
            words.append(rng.choice(_NUMBERS))
        else:
            open_, close = rng.choice(_QUOTES)
            words.append(f"{open_}{rng.choice(_WORDS[main])}{close}")
    text = words[0]
    for w in words[1:]:
        text += rng.choice(_SPACES) + w
    if rng.random() < 0.3:
        text = text.capitalize()
    return text + rng.choice([".", "!", "?", "", "...", " ;", ","])


def training_corpus(n: int = 600, seed: int = 0) -> list[str]:
    """Generated multilingual sentences (deterministic)."""
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(n)]


def held_out_texts(mask_token: str, n: int = 150, seed: int = 12345) -> list[str]:
    """Sentences the models were not trained on, plus edge cases; `mask_token` is put in many places."""
    rng = random.Random(seed)
    m = mask_token
    texts = [_sentence(rng) for _ in range(n)]
    texts += [
        "",
        " ",
        "   \t\n  ",
        "\u00a0\u3000",
        "Hello world",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\nand  many   spaces",
        "Crème brûlée, naïve café; Ångström — déjà vu.",
        "ÉCOLE ÉLÉMENTAIRE À PARIS",
        "Ça coûte 1,000,000 € ou 2,500.50 $ (10,000 tokens, 3,14%).",
        "numbers 1,2,3 and 99, and ,5 and 1,,2",
        "He said ``hello'' and 'bye' and \"this\" and ''quoted`` ``",
        "```triple''' ''''",
        "中华人民共和国成立于1949年。你好，世界！",
        "東京タワーﾃｽﾄ ｶﾀｶﾅ ＡＢＣ１２３",
        "안녕하세요, 세계! 한국어 텍스트입니다.",
        "नमस्ते दुनिया",
        "สวัสดีครับ ประเทศไทย",
        "Привет, МИР! Ёлка.",
        "ΓΕΙΑ ΣΟΥ ΚΟΣΜΕ, ΟΔΟΣ σοφός",
        "مرحبا بالعالم",
        "یہ اردو میں ایک جملہ ہے۔ لاہور، ۱۲۳",
        "¿Dónde está la biblioteca? Mañana, señor.",
        "emoji 😀👍🎉 ❤️ 👨‍👩‍👧 🇫🇷 and ✓",
        "ligatures ﬁ ﬂ ½ ① ™ Ⅻ ㎏ ㈱",
        "Ⅰ ⅱ ℌ ℃ ﹏ ＂quoted＂",
        "combining e\u0301 a\u0300 n\u0303 o\u0308",
        unicodedata.normalize("NFD", "Crème brûlée à Hà Nội: Tiếng Việt, 한국어 텍스트, ﬁ ① ＡＢＣ"),
        "stacked A\u0302\u0300 e\u0323\u0302 \u1112\u1161\u11ab",
        "zero\u200bwidth\u200djoiner\ufeffbom",
        "control\x00chars\x07here\x1f",
        "İstanbul ǅ ß ẞ ŉ",
        "a",
        ".",
        "1,000",
        m,
        f"{m}",
        f" {m} ",
        f"{m} at start",
        f"at end {m}",
        f"at end with period {m}.",
        f"inside a wo{m}rd",
        f"before punctuation {m}, and {m}! and ({m})",
        f"two {m}{m} masks and {m} {m}",
        f"  {m}   spaced  {m}  ",
        f"{m.lower()} lowercase and {m.upper()} uppercase",
        f"über{m}straße",
        f"中文{m}测试",
        f"1,000{m}2,000",
        f"{m}😀",
        "[CLS] [SEP] <pad> <unk> <s> </s> inside text",
        "x[SEP]y <s>z</s>",
        "literal ▁ marker ▁▁ and a▁b",
        "UPPER lower MiXeD",
    ]
    # A long string (> 512 tokens), to exercise truncation.
    texts.append(" ".join(_sentence(rng) for _ in range(60)))
    return texts


def train_spm(out_dir, kind: str, vocab_size: int = 800, corpus=None) -> Path:
    """Trains a tiny SentencePiece model; kind "albert" (unigram, spiece.model) or "xlmr" (BPE)."""
    import io

    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else training_corpus()
    common = dict(
        sentence_iterator=iter(corpus),
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        num_threads=1,
        minloglevel=2,
    )
    model = io.BytesIO()
    if kind == "albert":
        spm.SentencePieceTrainer.train(
            model_writer=model,
            model_type="unigram",
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
            **common,
        )
        path = out_dir / "spiece.model"
    elif kind == "xlmr":
        spm.SentencePieceTrainer.train(
            model_writer=model, model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, **common
        )
        path = out_dir / "sentencepiece.bpe.model"
    else:
        raise ValueError(kind)
    path.write_bytes(model.getvalue())
    return path


def make_albert_tokenizer_dir(tmp_dir, with_tokenizer_json: bool, **tokenizer_kwargs) -> Path:
    """An ALBERT tokenizer dir as `AlbertTokenizer.save_pretrained` writes it (minus tokenizer.json if asked).

    `tokenizer_kwargs` go to `AlbertTokenizer.from_pretrained` (e.g. keep_accents=True, do_lower_case=False)
    and so end up in tokenizer_config.json.
    """
    from transformers import AlbertTokenizer

    tmp_dir = Path(tmp_dir)
    if not (tmp_dir / "spm-albert" / "spiece.model").is_file():
        train_spm(tmp_dir / "spm-albert", "albert")
    name = "hf-albert-" + ("json" if with_tokenizer_json else "spm")
    name += "".join(f"-{k}={v}" for k, v in sorted(tokenizer_kwargs.items()))
    out = tmp_dir / name
    AlbertTokenizer.from_pretrained(tmp_dir / "spm-albert", **tokenizer_kwargs).save_pretrained(out)
    # Transformers 5 writes tokenizer.json + tokenizer_config.json only; checkpoints on the Hub also
    # carry the SentencePiece model, which is what Transformers falls back on without tokenizer.json.
    shutil.copy(tmp_dir / "spm-albert" / "spiece.model", out / "spiece.model")
    if not with_tokenizer_json:
        (out / "tokenizer.json").unlink(missing_ok=True)
    return out


def make_xlmr_tokenizer_dir(tmp_dir, with_tokenizer_json: bool = True) -> Path:
    """An XLM-RoBERTa tokenizer dir as `XLMRobertaTokenizer.save_pretrained` writes it (minus tokenizer.json if asked)."""
    from transformers import XLMRobertaTokenizer

    tmp_dir = Path(tmp_dir)
    if not (tmp_dir / "spm-xlmr" / "sentencepiece.bpe.model").is_file():
        train_spm(tmp_dir / "spm-xlmr", "xlmr")
    out = tmp_dir / ("hf-xlmr" if with_tokenizer_json else "hf-xlmr-spm")
    XLMRobertaTokenizer.from_pretrained(tmp_dir / "spm-xlmr").save_pretrained(out)
    shutil.copy(tmp_dir / "spm-xlmr" / "sentencepiece.bpe.model", out / "sentencepiece.bpe.model")
    if not with_tokenizer_json:
        (out / "tokenizer.json").unlink(missing_ok=True)
    return out


def make_albert_hub_style_tokenizer_dir(tmp_dir) -> Path:
    """Like `make_albert_tokenizer_dir(tmp_dir, True)`, with a tokenizer.json shaped like the Hub's
    albert-*-v2 ones (made by Transformers' old AlbertConverter): "digit," pieces scored -100 lower,
    a `" {2,}" -> " "` step in the normaliser, a Metaspace-only pre-tokenizer and `[MASK]` with lstrip.
    Transformers 5 takes the vocab, scores and added tokens from such a file but rebuilds the rest.
    """
    import json

    src = make_albert_tokenizer_dir(tmp_dir, True)
    out = Path(tmp_dir) / "hf-albert-hub-style"
    shutil.copytree(src, out, dirs_exist_ok=True)
    tok = json.loads((out / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    for entry in vocab:
        piece = entry[0]
        if len(piece) >= 2 and piece[-1] == "," and piece[-2].isdigit():
            entry[1] -= 100.0
    tok["normalizer"]["normalizers"].append(
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
    tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    for added in tok["added_tokens"]:
        if added["content"] == "[MASK]":
            added["lstrip"] = True
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    return out
