"""Each task's standard evaluation metrics: accuracy and macro-F1 (scikit-learn's), MSE for regression,
for token classification entity precision / recall / F1 as seqeval computes them (its default, lenient
IOB chunking: written out here, seqeval is not a dependency), and for question answering SQuAD's exact
match and F1 (the official v2.0 evaluation script's, which is v1.1's on answerable questions)."""

from __future__ import annotations

import collections
import re
import string

import numpy as np


def classification(predictions, labels) -> dict:
    """accuracy and macro-F1 over the classes that occur in either (sklearn's f1_score(average="macro"))."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scores = []
    for c in np.union1d(predictions, labels):
        tp = np.sum((predictions == c) & (labels == c))
        fp, fn = np.sum((predictions == c) & (labels != c)), np.sum((predictions != c) & (labels == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(predictions == labels)), "macro_f1": float(np.mean(scores))}


def regression(predictions, labels) -> dict:
    return {"mse": float(np.mean((np.asarray(predictions, np.float64) - np.asarray(labels, np.float64)) ** 2))}


def multi_label(probabilities, labels) -> dict:
    """Exact-match accuracy and macro-F1 over the labels, at probability 0.5."""
    predicted, labels = np.asarray(probabilities) >= 0.5, np.asarray(labels) >= 0.5
    tp = np.sum(predicted & labels, axis=0)
    denominator = 2 * tp + np.sum(predicted & ~labels, axis=0) + np.sum(~predicted & labels, axis=0)
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return {"accuracy": float(np.mean(np.all(predicted == labels, axis=1))), "macro_f1": float(np.mean(f1))}


def entities(tags) -> set:
    """seqeval's get_entities (IOB / IOBES, prefix form): {(type, first, last)} of a tag sequence."""
    found, previous_tag, previous_type, begin = set(), "O", "", 0
    for i, chunk in enumerate(list(tags) + ["O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _ends(previous_tag, tag, previous_type, type_):
            found.add((previous_type, begin, i - 1))
        if _starts(previous_tag, tag, previous_type, type_):
            begin = i
        previous_tag, previous_type = tag, type_
    return found


def _ends(previous_tag, tag, previous_type, type_):
    return (previous_tag in ("E", "S") or (previous_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (previous_tag not in ("O", ".") and previous_type != type_))


def _starts(previous_tag, tag, previous_type, type_):
    return (tag in ("B", "S") or (previous_tag in ("E", "S") and tag in ("E", "I"))
            or (previous_tag == "O" and tag in ("E", "I")) or (tag not in ("O", ".") and previous_type != type_))


def token_classification(predicted, gold) -> dict:
    """Entity precision, recall and F1 (seqeval's micro average) and token accuracy, over sentences given as
    tag-name sequences."""
    true_entities = [entities(seq) for seq in gold]
    pred_entities = [entities(seq) for seq in predicted]
    correct = sum(len(t & p) for t, p in zip(true_entities, pred_entities))
    n_pred, n_true = sum(map(len, pred_entities)), sum(map(len, true_entities))
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tokens = [a == b for p, g in zip(predicted, gold) for a, b in zip(p, g)]
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": float(np.mean(tokens)) if tokens else 0.0}


PUNCTUATION = set(string.punctuation)


def normalize_answer(text):
    """SQuAD's: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(prediction, gold):
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:  # (an unanswerable question: right only when both are empty)
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad(predictions, golds) -> dict:
    """exact_match and f1 in percent, as SQuAD's evaluation scripts report them: per question the best over
    its gold answers (no gold answer: "" is the answer), averaged. `predictions`: {id: text}; `golds`:
    {id: [texts]}."""
    exact, f1 = [], []
    for id_, answers in golds.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        prediction = predictions.get(id_, "")
        exact.append(max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers))
        f1.append(max(_f1(prediction, a) for a in answers))
    return {"exact_match": 100.0 * float(np.mean(exact)), "f1": 100.0 * float(np.mean(f1))}
