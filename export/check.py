"""The parity check both export formats share: what an export computes against Keras fp32, on the ids
path and on the text path, and the report written beside it (kzoo.io.layout.report_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kzoo.export.common import ExportError, graph_offsets, input_names, text_signature
from kzoo.export.data import text_inputs
from kzoo.io.jsontext import dumps
from kzoo.models import outputs
from kzoo.tasks import TASKS


def compare(ours, reference, padding_mask, token_outputs=()):
    """Per output, of `ours` against `reference` (Keras fp32): max abs diff; cosine per example (its values
    flattened: `cosine_min`, the quantized modes' bound) and, for an output with a vector per token, per
    token (`position_cosine_min`, reported); top-1 agreement (argmax of the last axis). `token_outputs`
    (the task's: [B, S, ...]) count at real tokens only. The bound is per example because a token head's
    few labels make one token's cosine the angle of the noise to a 3-vector that is sometimes short: full
    int8's few % noise gives a minimum of 0.98 over hundreds of tokens where every example's logits stay at
    0.998 (benchmarks/NOTES.md). So it does not bound a single token: the per-token minimum and top-1
    agreement beside it show one."""
    rows = {}
    keep = np.asarray(padding_mask).astype(bool)
    for name, want in reference.items():
        want = np.asarray(want, np.float64)
        got = np.asarray(ours[name], np.float64)
        if got.shape != want.shape:
            raise ExportError(f"output {name}: shape {got.shape} != Keras {want.shape}")
        rows_of = lambda x: x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # noqa: E731  (one per example)
        per_token = name in token_outputs and want.shape[:2] == keep.shape
        if per_token:  # padding counts nowhere
            real = keep.reshape(keep.shape + (1,) * (want.ndim - 2))
            example = cosines(rows_of(got * real), rows_of(want * real))
        else:
            example = cosines(rows_of(got), rows_of(want))
        position = example
        if per_token and want.ndim == 3:  # a vector per real token
            got, want = got[keep], want[keep]
            position = cosines(got, want)
        width = want.shape[-1] if want.ndim > 1 else 1  # top-1 over the last axis
        got, want = got.reshape(-1, width), want.reshape(-1, width)
        rows[name] = {
            "max_abs_diff": float(np.max(np.abs(got - want))) if got.size else 0.0,
            "cosine_min": float(example.min()) if example.size else 1.0,
            "cosine_mean": float(example.mean()) if example.size else 1.0,
            "position_cosine_min": float(position.min()) if position.size else 1.0,
            "top1_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1))) if got.size else 1.0,
            "finite": bool(np.all(np.isfinite(got))),
        }
    return rows


def cosines(got, want):
    """Row by row; 1 where both rows are all zeros (e.g. unused fill-mask slots)."""
    cosine = np.sum(got * want, axis=-1) / np.maximum(np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1),
                                                      1e-30)
    return np.where((np.abs(got).max(-1, initial=0) == 0) & (np.abs(want).max(-1, initial=0) == 0), 1.0, cosine)


def merge_comparisons(parts):
    """One row per output over several batches: worst max diff / min cosine, mean of the means."""
    merged = {}
    for part in parts:
        for name, row in part.items():
            m = merged.setdefault(name, {"max_abs_diff": 0.0, "cosine_min": 1.0, "position_cosine_min": 1.0,
                                         "_cos": [], "_top1": [], "finite": True})
            m["max_abs_diff"] = max(m["max_abs_diff"], row["max_abs_diff"])
            m["cosine_min"] = min(m["cosine_min"], row["cosine_min"])
            m["position_cosine_min"] = min(m["position_cosine_min"], row["position_cosine_min"])
            m["_cos"].append(row["cosine_mean"])
            m["_top1"].append(row["top1_agreement"])
            m["finite"] = m["finite"] and row["finite"]
    for m in merged.values():
        m["cosine_mean"] = float(np.mean(m.pop("_cos")))
        m["top1_agreement"] = float(np.mean(m.pop("_top1")))
    return merged


def ids_rows(run, model, config, batches):
    """`run(batch)` (an export's ids signature) against the Keras model, merged over the batches."""
    parts = []
    for batch in batches:
        want = {k: np.asarray(v) for k, v in outputs(model, batch).items()}
        parts.append(compare(run(batch), want, batch["padding_mask"], TASKS[config["task"]].token_outputs))
    return merge_comparisons(parts)


def text_report(run_text, model, config, tokenizer, texts, longest, options):
    """`run_text(inputs)` (an export's text signature; inputs: {input name: texts}, export.data.text_inputs)
    against the same ids through the Python tokenizer and the task's numeric text signature run by Keras:
    float outputs compared, integer outputs' agreement (top ids and label ids may differ only where two
    scores tie within float error), and for a task with offsets the share of tokens whose in-graph
    characters are the Python tokenizer's (Transformers'; the graph counts them: see
    kzoo.tokenizers.sentencepiece.tf_tokenize_with_offsets)."""
    task = TASKS[config["task"]]
    inputs = text_inputs(task.text_inputs, texts)
    if len(inputs) > 1:  # questions that leave the context room (else only_second cannot cut enough)
        inputs[task.text_inputs[0]] = [_fitted(tokenizer, q, (longest - 6) // 2) for q in inputs[task.text_inputs[0]]]
    got = run_text(inputs)
    width = got["token_ids"].shape[1]  # the bucket the graph chose
    first, *pair = inputs.values()
    if pair and not tokenizer.is_fast:  # (XLM: Transformers' SQuAD features, each context word on its own)
        batch = _word_window_batch(tokenizer, first, pair[0], longest)
    else:
        batch = tokenizer(first, pairs=pair[0] if pair else None, max_length=longest,
                          truncation="only_second" if pair else True, padding="max_length",
                          return_offsets_mapping=graph_offsets(config, tokenizer))
    batch = {k: np.asarray(v, "int32")[:, :width] for k, v in batch.items()}
    model_batch = {name: batch.get(name, np.zeros_like(batch["token_ids"])) for name in input_names(model)}
    numeric, _ = text_signature(model, config, tokenizer, options)
    want = {k: np.asarray(v) for k, v in numeric(model_batch).items()}
    floats = {k: v for k, v in want.items() if v.dtype.kind == "f"}
    ids_equal = bool(np.array_equal(got["token_ids"], batch["token_ids"])
                     and np.array_equal(got["padding_mask"], batch["padding_mask"]))
    report = {"texts": len(first), "inputs": list(inputs), "bucket": width, "ids_equal_python_tokenizer": ids_equal,
              "outputs": compare({k: got[k] for k in floats}, floats, batch["padding_mask"], task.token_outputs),
              "integer_agreement": {k: float(np.mean(got[k] == v)) for k, v in want.items() if v.dtype.kind != "f"}}
    if graph_offsets(config, tokenizer) and ids_equal:
        tokens = batch["padding_mask"].astype(bool)
        same = np.all(got["offset_mapping"] == batch["offset_mapping"], axis=-1)[tokens]
        report["offsets_equal_python_tokenizer"] = float(np.mean(same))
    return report


def _word_window_batch(tokenizer, questions, contexts, longest):
    """The first window of a Python tokenizer's `word_windows` for each pair, padded to `longest`, with each
    context token's word's characters as its offset_mapping."""
    rows, spans = [], np.zeros((len(questions), longest, 2), np.int32)
    for r, (question, context) in enumerate(zip(questions, contexts)):
        split = tokenizer.word_windows(question, context, longest, longest)
        row, first, at = split.windows[0]
        rows.append(row)
        for k, span in enumerate(split.window_words(row, first, at)):
            spans[r, first + k] = span
    batch = tokenizer.pad_rows(rows, longest, side="right")
    return {**batch, "offset_mapping": spans}


def _fitted(tokenizer, text, tokens):
    """`text` less its last words until it is at most `tokens` tokens long (one word at least)."""
    words = text.split()
    while len(words) > 1 and len(tokenizer.encode(" ".join(words), add_special_tokens=False)) > tokens:
        words.pop()
    return " ".join(words)


def passes(rows, metric="max_abs_diff", bound=1e-4):
    """Every output finite and within the bound (max_abs_diff: at most; cosine: at least)."""
    return all(r["finite"] and (r[metric] <= bound if metric == "max_abs_diff" else r[metric] >= bound)
               for r in rows.values())


def write_report(path, report):
    Path(path).write_text(dumps(report) + "\n")


def human_size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
