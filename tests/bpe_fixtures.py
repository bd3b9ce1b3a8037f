"""A tiny XLM tokenizer (Moses + BPE files, as Transformers' XLMTokenizer saves them) learnt on the
fly from a small multilingual corpus: for the tokenizer, task and generation tests."""

from __future__ import annotations

import collections
import json
import re

from kzoo.tokenizers.moses import lowercase_and_remove_accent

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]

CORPUS = """
Hello, world! The quick brown fox jumps over the lazy dog. It's a test: don't stop, we're fine.
Paris is the capital of France. London is the capital of England. The weather is nice today.
Numbers like 2024, 3.14, 1,000,000 and 50% are common; prices are $12.00 or 9.99 euros.
Bonjour le monde ! L'été dernier, j'ai vu « Le Petit Prince » à Paris. C'était très beau.
Qu'est-ce que c'est ? Ça coûte douze euros. Les élèves étudient la géographie et l'histoire.
Guten Morgen, Welt! Die Größe der Straße ist schön. Äpfel, Öl und Übermut für Müller.
Der schnelle braune Fuchs springt über den faulen Hund. Wir gehen heute nach Hause.
Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.
Москва — столица России.
Я люблю читать книги. Погода сегодня хорошая. Это тест токенизатора.
Καλημέρα κόσμε! Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.
Ελληνικά γράμματα: άλφα, βήτα, γάμμα.
Bună ziua, lume! România este o țară frumoasă. Și știm că învățăm în fiecare zi.
Mâine mâncăm pâine.
Ştefan şi ţara noastră. București este capitala României. Îmi place să citesc cărți.
"""


def learn_bpe(words, n_merges):
    """A tiny fastBPE-style learner: symbols are characters, the last one of each word ends in </w>."""
    counts = collections.Counter(words)
    segs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in counts}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in counts.items():
            s = segs[w]
            for pair in zip(s, s[1:]):
                pairs[pair] += c
        if not pairs:
            break
        (a, b), c = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b, c))
        for w in counts:
            s, out, i = segs[w], [], 0
            while i < len(s):
                if i < len(s) - 1 and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[w] = tuple(out)
    symbols = set()
    for w in counts:
        symbols.update(w)
        symbols.update(c + "</w>" for c in w)
    symbols.update(a + b for a, b, _ in merges)
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for s in sorted(symbols):
        vocab.setdefault(s, len(vocab))
    return vocab, merges


def corpus_words():
    words = re.findall(r"\w+|[^\w\s]", CORPUS)
    # XLM vocabularies see Moses-tokenised, (for some models) lowercased and accent-stripped text
    return words + lowercase_and_remove_accent(words) + [w.lower() for w in words]


def write_dir(path, vocab, merges, tokenizer_config=None, config=None, special_tokens_map=None,
              added_tokens=None, trailing_newline=True):
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    text = "\n".join(f"{a} {b} {c}" for a, b, c in merges) + ("\n" if trailing_newline else "")
    (path / "merges.txt").write_text(text, encoding="utf-8")
    for name, obj in (("tokenizer_config.json", tokenizer_config), ("config.json", config),
                      ("special_tokens_map.json", special_tokens_map), ("added_tokens.json", added_tokens)):
        if obj is not None:
            (path / name).write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path
