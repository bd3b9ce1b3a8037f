"""XLM's tokenizer inside a TF graph: Transformers 5.23's XLMTokenizer ids from builtin TFLite ops (and
tf-text's byte splitter), for the English Moses rules that Transformers runs on every language.

No TFLite op runs a regular expression, so the Moses scripts as Transformers calls them (its
replace_unicode_punct, sacremoses' `MosesPunctNormalizer("en").normalize`, the removal of category C
characters, `MosesTokenizer("en").tokenize(escape=False)`) are written here as one table of rules over
code points, in their order (`_moses_rules`). A rule finds its matches with vectorized comparisons of each
character and its neighbours (character classes from sacremoses' own sets and Python's unicodedata,
looked up in a two-level table), takes them leftmost first without overlap as `re.sub` does (a match
that overlaps one to its left is dropped, round after round), and rebuilds the text with what it puts
in (`_rewrite`: a gather over cumulative lengths). The graph's time is its op count, not arithmetic, so a
rule that matches nothing in the batch skips its rewrite, and groups of rules whose characters the batch
lacks are skipped whole (`_when_any`, a tf.cond: TFLite's IF). Then lowercase + accent removal (a per-character
table; the final sigma by its context, as Python's `str.lower`) and the `</w>` BPE: every word merges
its lowest-ranked pair at once, in a while loop, ranks found by binary search.

Known differences from Transformers (none in the tests' texts): NFD's canonical reordering is not done
between the 25 combining characters that are not Mn (which survive accent removal), and an added token
that begins inside another added token's text would be cut as the leftmost longest match, where
Transformers' trie scan can cut otherwise (XLM's own special tokens never overlap so).
"""

from __future__ import annotations

import functools
import unicodedata
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from kzoo.tokenizers import graphemes

# Character class bits (one int32 per code point)
WS, DIGIT, N, ALNUM, ALPHA, LOWER, SC, SO, CTRL, ASCII_LETTER, CASED, IGNORABLE = (1 << k for k in range(12))
UNICODE = 0x110000


class Chars(NamedTuple):
    """Texts as code points: code [n] int32, row [n] int32 (nondecreasing; rows may be empty), rows: how many."""

    code: tf.Tensor
    row: tf.Tensor
    rows: tf.Tensor


# ---- tables -------------------------------------------------------------------------------------------


def _two_level(values: np.ndarray):
    """(block of 256 code points -> row, rows) of a per-code-point array: what `_lookup` reads."""
    rows, block_of = np.unique(values.reshape(-1, 256), axis=0, return_inverse=True)
    return block_of.reshape(-1).astype(np.int32), rows.reshape(-1)


def _is(bits, bit):
    """Whether class `bit` is set (arithmetic: TFLite has no bitwise and)."""
    return (bits // bit) % 2 > 0


def _lookup(table, code):
    block_of, rows = table  # (numpy: constants of the graph being built)
    code = tf.clip_by_value(code, 0, UNICODE - 1)
    return tf.gather(tf.constant(rows), tf.gather(tf.constant(block_of), code // 256) * 256 + code % 256)


@functools.lru_cache(maxsize=None)
def _class_values() -> np.ndarray:
    """int32 [UNICODE]: each code point's class bits (the English Moses tokenizer's sets, Python's \\s and \\d,
    category C, and str.lower's Cased / Case_Ignorable, read off its final-sigma rule)."""
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang="en")
    values = np.zeros(UNICODE, np.int32)
    for bit, chars in ((N, tok.IsN), (ALNUM, tok.IsAlnum), (ALPHA, tok.IsAlpha), (LOWER, tok.IsLower),
                       (SC, tok.IsSc), (SO, tok.IsSo)):
        values[[ord(c) for c in set(chars)]] |= bit
    values[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]] |= ASCII_LETTER
    for cp in range(UNICODE):
        c = chr(cp)
        category = unicodedata.category(c)
        if category[0] == "C":
            values[cp] |= CTRL
        if c.isspace():
            values[cp] |= WS
        if category == "Nd":
            values[cp] |= DIGIT
        if category != "Cn":  # (unassigned: neither)
            # x then a capital sigma ends in a final sigma iff x is cased and not case-ignorable; "A", x,
            # sigma does iff x is either
            alone = (c + "\u03a3").lower()[-1] == "\u03c2"
            after_a = ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
            values[cp] |= (CASED if alone else 0) | (IGNORABLE if after_a and not alone else 0)
    return values


@functools.lru_cache(maxsize=None)
def classes():
    """The class bits as a two-level table (`_lookup`)."""
    return _two_level(_class_values())


def _char_map(mapping: dict):
    """(two-level table: code point -> replacement index + 1, or 0 to keep it; the replacements)."""
    values = np.zeros(UNICODE, np.int32)
    replacements = [""]
    for cp, new in mapping.items():
        replacements.append(new)
        values[cp] = len(replacements) - 1
    return _two_level(values), replacements


@functools.lru_cache(maxsize=None)
def _lowercase_map():
    """XLM's lowercase + NFD + drop Mn + lowercase, per character (capital sigma: "σ"; `_lowercase` sets the
    final one first)."""
    out = {}
    for cp in range(UNICODE):
        c = chr(cp)
        new = "".join(x for x in unicodedata.normalize("NFD", c.lower()) if unicodedata.category(x) != "Mn").lower()
        if new != c:
            out[cp] = new
    return _char_map(out)


# ---- rewriting ------------------------------------------------------------------------------------------


def _literals(strings):
    """(flat code points, starts, lengths) of a list of strings, as constants."""
    flat = [ord(ch) for s in strings for ch in s] + [0]
    lengths = [len(s) for s in strings]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    return tf.constant(flat, tf.int32), tf.constant(starts), tf.constant(lengths, tf.int32)


def _rewrite(t: Chars, keep, pre, post, literals) -> Chars:
    """Each character i becomes literals[pre[i]] + (itself if keep[i]) + literals[post[i]]."""
    flat, starts, lengths = _literals(literals)
    n_pre, n_post, kept = tf.gather(lengths, pre), tf.gather(lengths, post), tf.cast(keep, tf.int32)
    size = n_pre + kept + n_post
    begin = tf.cumsum(size, exclusive=True)
    total = tf.reduce_sum(size)
    # each output position's source: how many sources begin at or before it, minus one
    src = tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(begin), begin, total + 1))[:-1] - 1
    j = tf.range(total) - tf.gather(begin, src)
    p, k = tf.gather(n_pre, src), tf.gather(kept, src)
    from_pre = tf.gather(flat, tf.gather(tf.gather(starts, pre), src) + tf.minimum(j, tf.maximum(p - 1, 0)))
    from_post = tf.gather(flat, tf.gather(tf.gather(starts, post), src) + tf.maximum(j - p - k, 0))
    code = tf.where(j < p, from_pre, tf.where(j < p + k, tf.gather(t.code, src), from_post))
    return Chars(code, tf.gather(t.row, src), t.rows)


class _Near:
    """values[i + k] where i + k is in i's row, else a filler; the gather indices of each k made once."""

    def __init__(self, t: Chars):
        self.t, self.n, self.made = t, tf.size(t.code), {}

    def shift(self, values, k, fill):
        if k == 0:
            return values
        if k not in self.made:
            j = tf.range(self.n) + k
            jj = tf.clip_by_value(j, 0, tf.maximum(self.n - 1, 0))
            self.made[k] = jj, (j >= 0) & (j < self.n) & tf.equal(tf.gather(self.t.row, jj), self.t.row)
        jj, same = self.made[k]
        return tf.where(same, tf.gather(values, jj), fill)

    def edges(self):
        """(first in its row, last in its row) [n] bool."""
        true = tf.ones_like(self.t.code, tf.bool)
        return tf.logical_not(self.shift(true, -1, False)), tf.logical_not(self.shift(true, 1, False))


def _leftmost(candidates, length, longest: int):
    """bool [n]: the matches `re.sub` takes among `candidates` (matches of `length` characters, an int or
    per position, at most `longest`, starting there): leftmost first, none overlapping one taken before it.
    Each round takes the pending candidates that no pending one before them covers and drops those they
    cover; overlaps are short and rare, so the loop runs once or twice."""
    if longest == 1:
        return candidates
    n = tf.size(candidates)
    at = tf.cast(tf.where(candidates)[:, 0], tf.int32)
    span = tf.gather(length, at) if isinstance(length, tf.Tensor) else tf.fill([tf.size(at)], length)
    m = tf.size(at)

    def body(pending, taken):
        idx = tf.cast(tf.where(pending)[:, 0], tf.int32)
        pos = tf.gather(at, idx)
        end, k = pos + tf.gather(span, idx), tf.size(idx)

        def covered_by(mask):  # one of `mask` before it covers it (only the longest - 1 before can)
            out = tf.zeros_like(mask)
            for d in range(1, longest):
                before = tf.concat([tf.fill([d], -1), end], 0)[:k]
                out |= tf.concat([tf.zeros([d], tf.bool), mask], 0)[:k] & (before > pos)
            return out

        free = ~covered_by(tf.ones_like(pos, tf.bool))
        gone = free | covered_by(free)
        taken = taken | (tf.math.unsorted_segment_max(tf.cast(free, tf.int32), idx, m) > 0)
        pending = pending & ~(tf.math.unsorted_segment_max(tf.cast(gone, tf.int32), idx, m) > 0)
        return pending, taken

    ones = tf.ones([m], tf.bool)
    _, taken = tf.while_loop(lambda pending, taken: tf.reduce_any(pending), body, (ones, ~ones))
    return tf.math.unsorted_segment_max(tf.cast(taken, tf.int32), at, n) > 0


# ---- rules ---------------------------------------------------------------------------------------------
# A pattern's atoms: a predicate on (code points, class bits), or a string of characters (any of them).

KEEP = None


def lit(chars):
    """A predicate: the character is one of `chars`."""
    codes = [ord(c) for c in chars]
    return lambda code, bits: functools.reduce(tf.logical_or, [tf.equal(code, c) for c in codes])


def has(bit):
    return lambda code, bits: _is(bits, bit)


def hasnt(bit):
    return lambda code, bits: tf.logical_not(_is(bits, bit))


def unless(*predicates):
    return lambda code, bits: tf.logical_not(functools.reduce(tf.logical_or, [p(code, bits) for p in predicates]))


class Sub(NamedTuple):
    """re.sub of a fixed-length pattern: atoms[k] at i + k; out[k] what atom k becomes (KEEP or a string);
    `pre` goes before the first atom, `post` after the last; `start` / `end`: anchored at the text's start / end."""

    atoms: tuple
    out: tuple
    pre: str = ""
    post: str = ""
    start: bool = False
    end: bool = False
    overlaps: bool = True  # whether two matches can overlap (else every candidate is a match)


class Group(NamedTuple):
    """Rules each of which needs one of `chars` to match and none of which puts one in where there was none:
    skipped together when the batch has none of them."""

    chars: str
    rules: list


def _atom(a):
    return lit(a) if isinstance(a, str) else a


def _may_overlap(atoms) -> bool:
    """Whether a pattern can match at i and at i + d < i + len(atoms) (its atoms from d on against those
    from 0 on); a predicate against a predicate is taken to."""
    values = _class_values()

    def can_equal(x, y):
        if isinstance(x, str) and isinstance(y, str):
            return bool(set(x) & set(y))
        if isinstance(x, str) or isinstance(y, str):
            chars, predicate = (x, y) if isinstance(x, str) else (y, x)
            codes = np.array([ord(c) for c in chars], np.int32)
            return bool(np.any(predicate(tf.constant(codes), tf.constant(values[codes])).numpy()))
        return True

    n = len(atoms)
    return any(all(can_equal(atoms[k], atoms[k - d]) for k in range(d, n)) for d in range(1, n))


def _apply_sub(t: Chars, rule: Sub) -> Chars:
    bits = _lookup(classes(), t.code)
    near = _Near(t)
    length = len(rule.atoms)
    candidate = tf.ones_like(t.code, tf.bool)
    for k, atom in enumerate(rule.atoms):
        candidate &= near.shift(_atom(atom)(t.code, bits), k, False)
    if rule.start:
        candidate &= near.edges()[0]
    if rule.end:
        candidate &= near.shift(near.edges()[1], length - 1, False)
    return _when_any(candidate, lambda: _substitute(t, rule, candidate, near), t)


def _when_any(mask, rewrite, t: Chars) -> Chars:
    """rewrite() if any of `mask`, else t: most rules match nothing in most batches, and the graph's time is
    its op count (a tf.cond runs one branch; TFLite's IF likewise)."""
    return Chars(*tf.cond(tf.reduce_any(mask), lambda: tuple(rewrite()), lambda: tuple(t)))


def _substitute(t: Chars, rule: Sub, candidate, near) -> Chars:
    length = len(rule.atoms)
    taken = _leftmost(candidate, length, length) if rule.overlaps else candidate
    literals = [""]
    index = lambda s: literals.index(s) if s in literals else (literals.append(s) or len(literals) - 1)  # noqa: E731
    keep, pre, post = tf.ones_like(taken), tf.zeros_like(t.code), tf.zeros_like(t.code)
    for k in range(length):
        here = near.shift(taken, -k, False)
        kept = rule.out[k] is KEEP
        keep = tf.where(here, kept, keep)
        pre = tf.where(here, index((rule.pre if k == 0 else "") + ("" if kept else rule.out[k])), pre)
    if rule.post:
        post = tf.where(near.shift(taken, 1 - length, False), index(rule.post), post)
    return _rewrite(t, keep, pre, post, literals)


def _apply_map(t: Chars, mapping) -> Chars:
    table, replacements = mapping
    which = _lookup(table, t.code)
    return _when_any(which > 0, lambda: _rewrite(t, tf.equal(which, 0), which, tf.zeros_like(which), replacements), t)


def _squeeze(t: Chars, predicate, into=" ") -> Chars:
    """Each run of characters matching `predicate` -> `into` (re.sub(" +", " ") and re.sub(r"\\s+", " "))."""
    near = _Near(t)
    match = predicate(t.code, _lookup(classes(), t.code))
    follows = near.shift(match, -1, False)
    first = match & tf.logical_not(follows)
    changed = match & (follows | tf.not_equal(t.code, ord(into)))
    return _when_any(changed, lambda: _rewrite(t, ~match, tf.where(first, 1, 0), tf.zeros_like(t.code), ["", into]), t)


def _runs(near: _Near, member):
    """(first of each run of members, last of it, the run's length at each member)."""
    starts = member & tf.logical_not(near.shift(member, -1, False))
    ends = member & tf.logical_not(near.shift(member, 1, False))
    run = tf.maximum(tf.cumsum(tf.cast(starts, tf.int32)) - 1, 0)
    length = tf.math.unsorted_segment_sum(tf.cast(member, tf.int32), run, near.n + 1)
    return starts, ends, tf.where(member, tf.gather(length, run), 0)


def _strip(t: Chars) -> Chars:
    """str.strip() of each row."""
    ws = _is(_lookup(classes(), t.code), WS)
    solid = tf.cast(~ws, tf.int32)
    before = tf.cumsum(solid, exclusive=True)
    row_solid = tf.math.unsorted_segment_sum(solid, t.row, t.rows)
    row_before = tf.gather(tf.cumsum(row_solid, exclusive=True), t.row)
    inside = (before - row_before > 0) & (before + solid - row_before < tf.gather(row_solid, t.row))
    keep = ~ws | inside
    return _when_any(~keep, lambda: _rewrite(t, keep, tf.zeros_like(t.code), tf.zeros_like(t.code), [""]), t)


def _eat_space_after(t: Chars, chars) -> Chars:
    """re.sub(c + r"\\s*", c): whitespace right after one of `chars` is dropped (Transformers' "。\\s*")."""
    ws = _is(_lookup(classes(), t.code), WS)
    index = tf.range(tf.size(t.code))
    segment = tf.cumsum(tf.cast(~ws, tf.int32))
    last_solid = tf.gather(tf.math.unsorted_segment_max(tf.where(ws, -1, index), segment, tf.size(t.code) + 1),
                           segment)
    owner = tf.gather(t.code, tf.maximum(last_solid, 0))
    same_row = tf.equal(tf.gather(t.row, tf.maximum(last_solid, 0)), t.row) & (last_solid >= 0)
    drop = ws & same_row & lit(chars)(owner, None)
    return _when_any(drop, lambda: _rewrite(t, ~drop, tf.zeros_like(t.code), tf.zeros_like(t.code), [""]), t)


def _quote_after_run(t: Chars) -> Chars:
    """re.sub(r'"([,.]+)', r'\\1"'): a quote before a run of commas and dots goes after it."""
    near = _Near(t)
    punct = lit(",.")(t.code, None)
    moved = tf.equal(t.code, ord('"')) & near.shift(punct, 1, False)
    return _when_any(moved, lambda: _move_quotes(t, near, punct, moved), t)


def _move_quotes(t: Chars, near, punct, moved) -> Chars:
    starts, ends, _ = _runs(near, punct)
    run = tf.maximum(tf.cumsum(tf.cast(starts, tf.int32)) - 1, 0)
    after_quote = tf.math.unsorted_segment_max(tf.cast(starts & near.shift(moved, -1, False), tf.int32), run,
                                               tf.size(t.code) + 1)
    gets = ends & (tf.gather(after_quote, run) > 0)
    return _rewrite(t, ~moved, tf.zeros_like(t.code), tf.where(gets, 1, 0), ["", '"'])


def _multidots(t: Chars) -> Chars:
    """sacremoses' replace_multidots: a run of 2+ dots -> " " + "DOT" * n + "MULTI" (+ " " unless it ends
    the text)."""
    near = _Near(t)
    dot = tf.equal(t.code, ord("."))
    return _when_any(dot & near.shift(dot, 1, False), lambda: _mark_multidots(t, near, dot), t)


def _mark_multidots(t: Chars, near, dot) -> Chars:
    starts, ends, length = _runs(near, dot)
    multi = length >= 2
    _, last = near.edges()
    pre = tf.where(multi, tf.where(starts, 1, 2), 0)
    post = tf.where(multi & ends, tf.where(last, 3, 4), 0)
    return _rewrite(t, ~multi, pre, post, ["", " DOT", "DOT", "MULTI", "MULTI "])


def _restore_multidots(t: Chars) -> Chars:
    """re.sub("(?:DOT)+MULTI", "." * its DOTs): wherever the letters are, as sacremoses does."""
    near = _Near(t)

    def word_at(word):
        ok = tf.ones_like(t.code, tf.bool)
        for k, ch in enumerate(word):
            ok &= near.shift(tf.equal(t.code, ord(ch)), k, False)
        return ok

    dot3, multi5 = word_at("DOT"), word_at("MULTI")
    return _when_any(multi5, lambda: _dots_back(t, near, dot3, multi5), t)


def _dots_back(t: Chars, near, dot3, multi5) -> Chars:
    n = tf.size(t.code)
    index = tf.range(n)
    # where a chain of "DOT"s from each position ends (n: at a row's end), by pointer doubling
    step = tf.where(near.shift(tf.ones_like(dot3), 3, False), index + 3, n)
    chain = tf.where(dot3, step, index)
    jump = lambda f: tf.gather(tf.concat([f, [n]], 0), f)  # noqa: E731
    ends = tf.while_loop(lambda f, moved: moved, lambda f, moved: (jump(f), tf.reduce_any(jump(f) != f)),
                         (chain, tf.constant(True)))[0]
    at_multi = tf.gather(tf.concat([multi5, [False]], 0), tf.minimum(ends, n))
    dots = dot3 & at_multi  # each "DOT" of a chain that reaches "MULTI"
    multi = multi5 & near.shift(dots, -3, False)
    gone = tf.zeros_like(dot3)
    for k in range(1, 3):
        gone |= near.shift(dots, -k, False)
    for k in range(5):
        gone |= near.shift(multi, -k, False)
    return _rewrite(t, ~gone & ~dots, tf.where(dots, 1, 0), tf.zeros_like(t.code), ["", "."])


def _drop(t: Chars, predicate) -> Chars:
    gone = predicate(t.code, _lookup(classes(), t.code))
    return _when_any(gone, lambda: _rewrite(t, ~gone, tf.zeros_like(t.code), tf.zeros_like(t.code), [""]), t)


def _nonbreaking(t: Chars, prefixes, numeric) -> Chars:
    """sacremoses' handles_nonbreaking_prefixes, then its " ".join: a word ending in "." gets the dot split
    off unless it holds another dot and a letter, is a known prefix ("Mr."), comes before a lowercase word,
    or is a numeric-only prefix ("No.") before a number."""
    # (a word ending in "." needs a dot)
    return _when_any(tf.equal(t.code, ord(".")), lambda: _split_final_dots(t, prefixes, numeric), t)


def _split_final_dots(t: Chars, prefixes, numeric) -> Chars:
    near = _Near(t)
    code, bits = t.code, _lookup(classes(), t.code)
    n = tf.size(code)
    index = tf.range(n)
    solid = tf.not_equal(code, ord(" "))
    starts = solid & tf.logical_not(near.shift(solid, -1, False))
    ends = solid & tf.logical_not(near.shift(solid, 1, False))
    word = tf.maximum(tf.cumsum(tf.cast(starts, tf.int32)) - 1, 0)
    first, last = tf.boolean_mask(index, starts), tf.boolean_mask(index, ends)  # [words]
    n_words = tf.size(first)
    count = lambda x: tf.math.unsorted_segment_sum(tf.cast(x & solid, tf.int32), word, n_words)  # noqa: E731
    dots, letters = count(tf.equal(code, ord("."))), count(_is(bits, ALPHA))
    size = last - first + 1
    dotted = tf.equal(tf.gather(code, last), ord(".")) & (size >= 2)
    following = tf.minimum(tf.range(n_words) + 1, tf.maximum(n_words - 1, 0))
    has_next = (tf.range(n_words) + 1 < n_words) & tf.equal(tf.gather(t.row, tf.gather(first, following)),
                                                            tf.gather(t.row, first))
    next_char = tf.gather(code, tf.gather(first, following))
    next_lower = has_next & _is(tf.gather(bits, tf.gather(first, following)), LOWER)
    next_digit = has_next & (next_char >= ord("0")) & (next_char <= ord("9"))

    def member(words):  # whether each word but its dot is one of `words`
        if not words:
            return tf.zeros_like(dotted)
        width = max(len(w) for w in words)
        table = tf.constant([[ord(c) for c in w] + [-1] * (width - len(w)) for w in words], tf.int32)
        asked = tf.cast(tf.where(dotted & (size - 1 <= width))[:, 0], tf.int32)  # the few that could be
        k = tf.range(width)
        spelled = tf.gather(code, tf.minimum(tf.gather(first, asked)[:, None] + k, tf.maximum(n - 1, 0)))
        spelled = tf.where(k < tf.gather(size, asked)[:, None] - 1, spelled, -1)
        hit = tf.reduce_any(tf.reduce_all(tf.equal(spelled[:, None, :], table[None]), -1), -1)
        return tf.math.unsorted_segment_max(tf.cast(hit, tf.int32), asked, n_words) > 0

    kept = (((dots >= 2) & (letters > 0)) | member(prefixes) | next_lower
            | (member(numeric) & next_digit))
    split = dotted & ~kept
    t = _rewrite(t, tf.ones_like(solid), tf.where(ends & tf.gather(split, word), 1, 0), tf.zeros_like(code), ["", " "])
    return _strip(_squeeze(t, lit(" ")))


def _lowercase(t: Chars) -> Chars:
    """XLM's lowercase_and_remove_accent on each text (its words joined by spaces): str.lower (a capital
    sigma is final after a cased letter not followed by one, case-ignorable characters skipped), NFD,
    combining marks (Mn) dropped, str.lower again; per character from `_lowercase_map`."""
    bits = _lookup(classes(), t.code)
    solid = tf.logical_not(_is(bits, IGNORABLE))
    at = tf.cast(tf.where(solid)[:, 0], tf.int32)  # the characters that are not case-ignorable
    rank = tf.cumsum(tf.cast(solid, tf.int32)) - 1  # (a sigma's own place in `at`)
    cased = tf.concat([_is(tf.gather(bits, at), CASED), [False]], 0)
    row_of = tf.concat([tf.gather(t.row, at), [-1]], 0)
    last = tf.size(at)

    def cased_at(j):  # the j-th character not case-ignorable is cased and in this row
        j = tf.where((j >= 0) & (j < last), j, last)
        return tf.gather(cased, j) & tf.equal(tf.gather(row_of, j), t.row)

    final = tf.equal(t.code, 0x3A3) & cased_at(rank - 1) & ~cased_at(rank + 1)
    return _apply_map(Chars(tf.where(final, 0x3C2, t.code), t.row, t.rows), _lowercase_map())


# ---- the rule table -----------------------------------------------------------------------------------


def _moses_rules():
    """Transformers' moses_pipeline + MosesTokenizer("en").tokenize(escape=False), in order: each a
    function of Chars -> Chars. (The sacremoses rule each step is appears in its comment.)"""
    from sacremoses import MosesTokenizer

    from kzoo.tokenizers.moses import UNICODE_PUNCT, replace_unicode_punct

    tok = MosesTokenizer(lang="en")
    prefixes = [w for w in tok.NONBREAKING_PREFIXES if " " not in w and w not in tok.NUMERIC_ONLY_PREFIXES]
    letter, digit, alpha, number = has(ASCII_LETTER), has(DIGIT), has(ALPHA), has(N)
    mapping = lambda pairs: _char_map({ord(a): b for a, b in pairs})  # noqa: E731
    unicode_punct = {ord(k): replace_unicode_punct(k) for k, _ in
                     ((old if isinstance(old, str) else old.pattern[0], new) for old, new in UNICODE_PUNCT)}
    # sacremoses' regexes with these sets as character classes, e.g. "[^{IsAlnum}\s\.'\`\,\-]"
    rules = [
        # Transformers' replace_unicode_punct (its "。\s*" and "．\s*" take the spaces after them)
        lambda t: _eat_space_after(t, "。．"),
        _char_map(unicode_punct),
        # MosesPunctNormalizer("en").normalize: EXTRA_WHITESPACE
        mapping([("\r", ""), ("(", " ("), (")", ") ")]),
        lambda t: _squeeze(t, lit(" ")),
        Group("()%:;", [
            Sub((")", " ", ".!:?;,"), (KEEP, "", KEEP)),
            Sub(("(", " "), (KEEP, "")),
            Sub((" ", ")"), ("", KEEP)),
            Sub((digit, " ", "%"), (KEEP, "", KEEP)),
            Sub((" ", ":"), ("", KEEP)),
            Sub((" ", ";"), ("", KEEP)),
        ]),
        # NORMALIZE_UNICODE_IF_NOT_PENN
        mapping([("`", "'")]),
        Sub(("'", "'"), (' " ', "")),
        # NORMALIZE_UNICODE ("´´" -> '"' cannot match: "´" became "'" before it)
        mapping([("„", '"'), ("“", '"'), ("”", '"'), ("–", "-"), ("—", " - ")]),
        lambda t: _squeeze(t, lit(" ")),
        mapping([("´", "'")]),
        Sub((letter, "‘", letter), (KEEP, "'", KEEP)),
        Sub((letter, "’", letter), (KEEP, "'", KEEP)),
        mapping([("‘", "'"), ("‚", "'"), ("’", "'")]),
        Sub(("'", "'"), ('"', "")),
        mapping([("…", "...")]),
        # FRENCH_QUOTES, HANDLE_PSEUDO_SPACES
        Group("\xa0«»", [
            Sub(("\xa0", "«", "\xa0"), ('"', "", "")),
            Sub(("«", "\xa0"), ('"', "")),
            mapping([("«", '"')]),
            Sub(("\xa0", "»", "\xa0"), ('"', "", "")),
            Sub(("\xa0", "»"), ('"', "")),
            mapping([("»", '"')]),
            Sub(("\xa0", "%"), ("", KEEP)),
            Sub(("n", "º", "\xa0"), (KEEP, KEEP, " ")),
            Sub(("\xa0", ":"), ("", KEEP)),
            Sub(("\xa0", "º", "C"), (" ", KEEP, KEEP)),
            Sub(("\xa0", "c", "m"), (" ", KEEP, KEEP)),
            Sub(("\xa0", "?"), ("", KEEP)),
            Sub(("\xa0", "!"), ("", KEEP)),
            Sub(("\xa0", ";"), ("", KEEP)),
            Sub((",", "\xa0"), (KEEP, " ")),
        ]),
        lambda t: _squeeze(t, lit(" ")),
        # EN_QUOTATION_FOLLOWED_BY_COMMA, OTHER (numbers), strip
        _quote_after_run,
        Sub((digit, "\xa0", digit), (KEEP, ".", KEEP)),
        _strip,
        # Transformers' remove_non_printing_char
        lambda t: _drop(t, has(CTRL)),
        # MosesTokenizer("en").tokenize: DEDUPLICATE_SPACE (ASCII_JUNK: gone with category C), strip
        lambda t: _squeeze(t, has(WS)),
        _strip,
        # PAD_NOT_ISALNUM, replace_multidots, COMMA_SEPARATE_1-3
        Sub((unless(has(ALNUM), has(WS), lit(".'`,-")),), (KEEP,), pre=" ", post=" "),
        _multidots,
        Group(",", [
            Sub((hasnt(N), ","), (KEEP, " , ")),
            Sub((",", hasnt(N)), (" , ", KEEP)),
            Sub((number, ","), (KEEP, " , "), end=True),
        ]),
        # ENGLISH_SPECIFIC_APOSTROPHE
        Group("'", [
            Sub((hasnt(ALPHA), "'", hasnt(ALPHA)), (KEEP, " ' ", KEEP)),
            Sub((unless(alpha, number), "'", alpha), (KEEP, " ' ", KEEP)),
            Sub((alpha, "'", hasnt(ALPHA)), (KEEP, " ' ", KEEP)),
            Sub((alpha, "'", alpha), (KEEP, " '", KEEP)),
            Sub((number, "'", "s"), (KEEP, " '", KEEP)),
        ]),
        # handles_nonbreaking_prefixes (its join, then DEDUPLICATE_SPACE and strip: nothing left to do)
        lambda t: _nonbreaking(t, prefixes, tok.NUMERIC_ONLY_PREFIXES),
        # TRAILING_DOT_APOSTROPHE (r"\.' ?$": the text is stripped), restore_multidots
        Sub((".", "'"), (" . ' ", ""), end=True),
        _restore_multidots,
    ]
    def settled(r):
        if isinstance(r, Group):
            return r._replace(rules=[settled(x) for x in r.rules])
        return r._replace(overlaps=_may_overlap(r.atoms)) if isinstance(r, Sub) else r

    return [settled(r) for r in rules]


def _run(t: Chars, rule) -> Chars:
    if isinstance(rule, Group):
        return _when_any(lit(rule.chars)(t.code, None), lambda: functools.reduce(_run, rule.rules, t), t)
    if isinstance(rule, Sub):
        return _apply_sub(t, rule)
    if isinstance(rule, tuple):
        return _apply_map(t, rule)
    return rule(t)


# ---- BPE ------------------------------------------------------------------------------------------------


def _search(keys, queries):
    """Binary search: for each query (a tuple of int32 tensors), how many rows of the sorted `keys` (a tuple
    of int32 numpy columns, compared in order) are less than it; log2(len) unrolled gathers."""
    size = len(keys[0])
    columns = [tf.constant(np.append(k, 0).astype(np.int32)) for k in keys]
    pos = tf.zeros_like(queries[0])
    step = 1 << max(size - 1, 0).bit_length()
    while step:
        probe = pos + step
        ok = probe <= size
        at = [tf.gather(c, tf.minimum(probe, size) - 1) for c in columns]
        less, equal = tf.zeros_like(ok), tf.ones_like(ok)
        for a, q in zip(at, queries):
            less |= equal & (a < q)
            equal &= tf.equal(a, q)
        pos = tf.where(ok & less, probe, pos)
        step //= 2
    found = tf.ones_like(pos, tf.bool) if size else tf.zeros_like(pos, tf.bool)
    for c, q in zip(columns, queries):
        found &= tf.equal(tf.gather(c, tf.minimum(pos, size)), q) & (pos < size)
    return pos, found


class BPETables(NamedTuple):
    """The `</w>` BPE of a vocabulary and merges, as sorted arrays: symbol ids for characters (alone and as a
    word's last, with `</w>`), merges by (left, right) symbol with rank and result, each symbol's token id."""

    char_code: np.ndarray
    char_symbol: np.ndarray
    end_code: np.ndarray
    end_symbol: np.ndarray
    left: np.ndarray
    right: np.ndarray
    rank: np.ndarray
    merged: np.ndarray
    token_id: np.ndarray  # [symbols + 1]: the last is the symbol of a character the vocabulary lacks

    @classmethod
    def build(cls, ranks: dict, tokens, token_id):
        """ranks: (left, right) -> rank (Transformers' bpe_ranks); tokens: the vocabulary's; token_id: symbol
        -> id (None: the unknown id)."""
        symbols = {}
        for s in [s for a, b in ranks for s in (a, b, a + b)] + list(tokens):
            symbols.setdefault(s, len(symbols))
        chars = {s for s in symbols if len(s) == 1}
        ends = {s for s in symbols if len(s) == 5 and s.endswith("</w>")}

        def column(items):
            items = sorted(items)
            return (np.array([ord(s[0]) for s in items], np.int32), np.array([symbols[s] for s in items], np.int32))

        char_code, char_symbol = column(chars)
        end_code, end_symbol = column(ends)
        merges = sorted((symbols[a], symbols[b], r, symbols[a + b]) for (a, b), r in ranks.items())
        left, right, rank, merged = (np.array(col, np.int32).reshape(-1) for col in zip(*merges)) if merges else (
            np.zeros(0, np.int32),) * 4
        names = sorted(symbols, key=symbols.get)
        token_id = np.array([token_id(s) for s in names] + [token_id(None)], np.int32)
        return cls(char_code, char_symbol, end_code, end_symbol, left, right, rank, merged, token_id)


def _bpe(t: Chars, tables: BPETables):
    """(token ids [tokens], their row [tokens]) of the words (runs of non-spaces) of `t`."""
    near = _Near(t)
    solid = tf.not_equal(t.code, ord(" "))
    last = solid & tf.logical_not(near.shift(solid, 1, False))
    starts = solid & tf.logical_not(near.shift(solid, -1, False))
    code, row = tf.boolean_mask(t.code, solid), tf.boolean_mask(t.row, solid)
    last, word = tf.boolean_mask(last, solid), tf.cumsum(tf.cast(tf.boolean_mask(starts, solid), tf.int32)) - 1
    unknown = len(tables.token_id) - 1

    def symbol_of(codes, symbols):  # a character's symbol, or the unknown one
        at, found = _search((codes,), (code,))
        return tf.where(found, tf.gather(tf.constant(np.append(symbols, unknown).astype(np.int32)), at), unknown)

    plain, end = symbol_of(tables.char_code, tables.char_symbol), symbol_of(tables.end_code, tables.end_symbol)
    symbol = tf.where(last, end, plain)
    n = tf.size(code)
    n_words = tf.reduce_max(tf.concat([word + 1, [0]], 0))
    never = np.iinfo(np.int32).max
    ranks = tf.constant(np.append(tables.rank, never).astype(np.int32))
    results = tf.constant(np.append(tables.merged, 0).astype(np.int32))

    def body(symbol, alive, _):
        at = tf.cast(tf.where(alive)[:, 0], tf.int32)  # the live symbols, in order
        s, w = tf.gather(symbol, at), tf.gather(word, at)
        k = tf.size(at)
        following = tf.minimum(tf.range(k) + 1, tf.maximum(k - 1, 0))
        paired = (tf.range(k) + 1 < k) & tf.equal(tf.gather(w, following), w)
        pos, found = _search((tables.left, tables.right), (s, tf.gather(s, following)))
        found &= paired
        rank = tf.where(found, tf.gather(ranks, pos), never)
        best = tf.gather(tf.math.unsorted_segment_min(rank, w, n_words), w)
        hit = found & tf.equal(rank, best)
        # "x x x" merging (x, x): every other one of a run, from its left (Transformers' `_merge` scan)
        before = lambda x: tf.concat([[False], x], 0)[:k]  # noqa: E731  (x one place on; [:-1] fails on none)
        starts = hit & tf.logical_not(before(hit))
        run = tf.maximum(tf.cumsum(tf.cast(starts, tf.int32)) - 1, 0)
        run_start = tf.gather(tf.math.unsorted_segment_min(tf.where(hit, tf.range(k), k), run, k + 1), run)
        take = hit & tf.equal((tf.range(k) - run_start) % 2, 0)
        merged = tf.math.unsorted_segment_max(tf.where(take, tf.gather(results, pos), -1), at, n)
        dead = tf.math.unsorted_segment_max(tf.cast(before(take), tf.int32), at, n) > 0
        return tf.where(merged >= 0, merged, symbol), alive & ~dead, tf.reduce_any(take)

    symbol, alive, _ = tf.while_loop(lambda symbol, alive, more: more, body,
                                     (symbol, tf.ones([n], tf.bool), tf.constant(True)))
    token = tf.gather(tf.constant(tables.token_id), tf.boolean_mask(symbol, alive))
    return token, tf.boolean_mask(row, alive)


# ---- the tokenizer --------------------------------------------------------------------------------------


def _added_tokens(t: Chars, added: dict):
    """Added tokens cut out of the texts as Transformers' trie does for tokens that do not begin inside one
    another: leftmost, longest. -> (the rest as Chars, one row per piece between tokens; the tokens' ids and
    pieces; how many pieces each text has)."""
    near = _Near(t)
    best_len, best_id = tf.zeros_like(t.code), tf.zeros_like(t.code)
    for content, id_ in sorted(added.items(), key=lambda kv: len(kv[0])):  # longer ones win
        here = tf.ones_like(t.code, tf.bool)
        for k, ch in enumerate(content):
            here &= near.shift(tf.equal(t.code, ord(ch)), k, False)
        best_len, best_id = tf.where(here, len(content), best_len), tf.where(here, id_, best_id)
    longest = max(len(c) for c in added)
    taken = _leftmost(best_len > 0, best_len, longest)
    inside = tf.zeros_like(taken)
    for k in range(longest):
        inside |= near.shift(taken & (best_len > k), -k, False)
    # pieces: a token's first character starts one, and so does a text's first and any after a token
    first, _ = near.edges()
    after = near.shift(inside, -1, False) & ~inside
    starts = first | taken | after
    piece = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    n_pieces = tf.reduce_sum(tf.cast(starts, tf.int32))
    text_pieces = tf.math.unsorted_segment_sum(tf.cast(starts, tf.int32), t.row, t.rows)
    rest = Chars(tf.boolean_mask(t.code, ~inside), tf.boolean_mask(piece, ~inside), n_pieces)
    return rest, tf.boolean_mask(best_id, taken), tf.boolean_mask(piece, taken), text_pieces


class Graph:
    """XLM's tokenizer as TF ops. tokens: the vocabulary's; ranks: Transformers' bpe_ranks; token_id: a
    token's id (None: the unknown id); added: content -> id of the added tokens cut out of the text ({} with
    split_special_tokens); lowercase: do_lowercase_and_remove_accent. `tokenize` and `tokenize_words` are
    tf.functions."""

    def __init__(self, tokens, ranks: dict, token_id, added: dict, lowercase: bool):
        self.tables = BPETables.build(ranks, tokens, token_id)
        self.added, self.lowercase = dict(added), lowercase
        self.rules = _moses_rules()
        spec = [tf.TensorSpec([None], tf.string)]
        self.tokenize = tf.function(self._tokenize, input_signature=spec, autograph=False)
        self.tokenize_words = tf.function(self._tokenize_words, input_signature=spec, autograph=False)

    def words(self, t: Chars):
        """Chars after Moses (and lowercasing): one row per piece between added tokens, words split by
        spaces; also the added tokens' ids, pieces, and each row's pieces (for `_ids`)."""
        if self.added:
            t, ids, at, text_pieces = _added_tokens(t, self.added)
        else:
            ids, at, text_pieces = tf.zeros([0], tf.int32), tf.zeros([0], tf.int32), tf.ones([t.rows], tf.int32)
        for rule in self.rules:
            t = _run(t, rule)
        if self.lowercase:
            t = _lowercase(t)
        return t, ids, at, text_pieces

    def _tokenize(self, strings) -> tf.RaggedTensor:
        """int32 RaggedTensor [texts, (tokens)]: Transformers' XLMTokenizer ids without special tokens."""
        chars = graphemes.characters(strings)
        char_splits = tf.gather(chars.before, chars.byte_splits)
        return self._ids(Chars(chars.code, graphemes.row_ids(char_splits), tf.size(strings)))

    def _tokenize_words(self, strings):
        """(ids, starts, ends): int32 RaggedTensors [texts, (tokens)], each text cut into words at " ", tab,
        CR, LF and U+202F and each word tokenized on its own (Transformers' SQuAD features for a Python
        tokenizer), with each token's word's characters in its text."""
        chars = graphemes.characters(strings)
        char_splits = tf.gather(chars.before, chars.byte_splits)
        text = graphemes.row_ids(char_splits)
        t = Chars(chars.code, text, tf.size(strings))
        near = _Near(t)
        solid = tf.logical_not(lit(" \t\r\n\u202f")(t.code, None))
        starts = solid & tf.logical_not(near.shift(solid, -1, False))
        ends = solid & tf.logical_not(near.shift(solid, 1, False))
        local = tf.range(tf.size(t.code)) - tf.gather(char_splits, text)  # (each character's place in its text)
        word_start, word_end = tf.boolean_mask(local, starts), tf.boolean_mask(local, ends) + 1
        n_words = tf.size(word_start)
        word = tf.cumsum(tf.cast(starts, tf.int32)) - 1
        ids = self._ids(Chars(tf.boolean_mask(t.code, solid), tf.boolean_mask(word, solid), n_words))
        owner = graphemes.row_ids(tf.cast(ids.row_splits, tf.int32))  # each token's word
        per_text = tf.math.unsorted_segment_sum(tf.cast(ids.row_lengths(), tf.int32), tf.boolean_mask(text, starts),
                                                t.rows)
        splits = tf.concat([[0], tf.cumsum(per_text)], 0)
        rows = lambda values: tf.RaggedTensor.from_row_splits(values, splits, validate=False)  # noqa: E731
        return rows(ids.flat_values), rows(tf.gather(word_start, owner)), rows(tf.gather(word_end, owner))

    def _ids(self, t: Chars) -> tf.RaggedTensor:
        """The ids of each row of `t` (its characters before Moses), [rows, (tokens)]."""
        t, added_ids, added_at, text_pieces = self.words(t)
        tokens, piece = _bpe(t, self.tables)
        # every piece's tokens in order: BPE's (in order, by piece), then each added token (its piece's only)
        bpe_count = tf.math.unsorted_segment_sum(tf.ones_like(piece), piece, t.rows)
        within = tf.range(tf.size(piece)) - tf.gather(tf.cumsum(bpe_count, exclusive=True), piece)
        token = tf.concat([tokens, added_ids], 0)
        piece = tf.concat([piece, added_at], 0)
        within = tf.concat([within, tf.zeros_like(added_at)], 0)
        per_piece = tf.math.unsorted_segment_sum(tf.ones_like(piece), piece, t.rows)
        place = tf.gather(tf.cumsum(per_piece, exclusive=True), piece) + within
        ordered = tf.math.unsorted_segment_sum(token, place, tf.size(piece))
        piece_splits = tf.concat([[0], tf.cumsum(text_pieces)], 0)
        token_splits = tf.gather(tf.concat([[0], tf.cumsum(per_piece)], 0), piece_splits)
        return tf.RaggedTensor.from_row_splits(ordered, token_splits, validate=False)
