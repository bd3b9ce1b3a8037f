"""Writes kzoo/tokenizers/grapheme_break.txt: each code point's grapheme-cluster properties (UAX #29), which
the in-graph tokenizer needs to find graphemes (kzoo.tokenizers.graphemes) and Python's unicodedata lacks.

Read from the `regex` library (its \\X is what Transformers' Rust `unicode-segmentation` computes, measured
on the tests' strings). Run `python -m kzoo.converters.graphemes` after a Unicode update; a test checks the
file against the installed `regex`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kzoo.tokenizers import graphemes

TABLE_FILE = Path(graphemes.__file__).with_name(graphemes.TABLE_FILE)


def code_point_values() -> np.ndarray:
    """uint8 [0x110000]: Grapheme_Cluster_Break class + Extended_Pictographic + Indic_Conjunct_Break flags
    (kzoo.tokenizers.graphemes' encoding)."""
    import regex

    values = np.zeros(0x110000, np.uint8)
    chars = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)  # (surrogates: no text)
    for name, value in graphemes.CLASSES.items():
        if name == "Other":
            continue
        pattern = regex.compile(r"\p{Grapheme_Cluster_Break=%s}" % name)
        values[[ord(c) for c in pattern.findall(chars)]] |= value
    for prop, value in (("Extended_Pictographic", graphemes.PICTOGRAPHIC),
                        ("InCB=Consonant", graphemes.CONSONANT), ("InCB=Linker", graphemes.LINKER),
                        ("InCB=Extend", graphemes.INCB_EXTEND)):
        values[[ord(c) for c in regex.compile(r"\p{%s}" % prop).findall(chars)]] |= value
    return values


def ranges_text(values: np.ndarray) -> str:
    """The file's text: a header, then `FIRST..LAST value` (hex code points) for each run of equal values
    but 0."""
    import regex

    change = np.flatnonzero(np.diff(values.astype(np.int32))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(values)]]) - 1
    lines = [f"# kzoo grapheme-cluster properties per code point (regex {regex.__version__}); written by",
             "# python -m kzoo.converters.graphemes. Value: Grapheme_Cluster_Break class (0-13, see",
             "# kzoo/tokenizers/graphemes.py) + 16 Extended_Pictographic + 32/64/128 InCB Consonant/Linker/Extend."]
    lines += [f"{a:04X}..{b:04X} {values[a]}" for a, b in zip(starts, ends) if values[a]]
    return "\n".join(lines) + "\n"


def main():
    TABLE_FILE.write_text(ranges_text(code_point_values()))
    print(f"wrote {TABLE_FILE}")


if __name__ == "__main__":
    main()
