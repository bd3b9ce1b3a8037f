"""kzoo.export: one export path for every kzoo model dir (ALBERT, XLM-RoBERTa, XLM).

    from kzoo.export import export_savedmodel, export_tflite
    export_savedmodel("out/albert", "out/albert-sm")                  # out/albert-sm/1/saved_model.pb
    export_tflite("out/albert", "out/albert.tflite", quantize="int8")  # + albert.tflite.report.json

Nothing here knows a family. An export reads what the Keras model declares — its int32 [B, S]
inputs (`token_ids`, `padding_mask`, `segment_ids`, `lang_ids` for XLM, ...), its outputs and the
model dir's task — and builds the same functions for all of them:

  ids signature  (`serving_default`)  the model's inputs -> the model's outputs ("logits" when the
                 model has a single output, else its own names);
  text signature (`serve_text`)       strings -> the tokenizer's `tf_encode` inside the graph -> the
                 model -> the task's output (`text_outputs` below).

This module holds what both exports share; `savedmodel.py` and `tflite.py` hold the formats.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np

from kzoo.errors import KzooError

# The task's output of a text signature, per model-dir task (see `text_outputs`).
TEXT_TASKS = {"masked_lm": "fill-mask", "pretraining": "fill-mask", "classifier": "classify", "backbone": "features"}
TOP_K = 5  # fill-mask: predictions per mask (Transformers' default)
MAX_MASKS = 4  # fill-mask: mask positions reported per text (fixed, so the output shape is fixed)
SIDE_DIR = "kzoo"  # tokenizer files + config.json stored with an export (see `copy_sidecar`)

__all__ = ["ExportError", "export_savedmodel", "export_tflite"]


class ExportError(KzooError):
    """A one-line, user-facing problem with an export."""


def export_savedmodel(model_dir, out, **kwargs):
    """See `kzoo.export.savedmodel.export_savedmodel`."""
    from kzoo.export.savedmodel import export_savedmodel as _export

    return _export(model_dir, out, **kwargs)


def export_tflite(model_dir, out, **kwargs):
    """See `kzoo.export.tflite.export_tflite`."""
    from kzoo.export.tflite import export_tflite as _export

    return _export(model_dir, out, **kwargs)


# --- the model -------------------------------------------------------------------------------


def load_model(model_dir, mask_bias=None):
    """(Keras model, config) of a kzoo model dir; with `mask_bias`, built with that attention-mask bias.

    The bias is a constant captured when the functional model is built (and, for layers that build
    their mask in `call`, when it is traced), so the override wraps building here and tracing in the
    caller (`mask_bias_scope`).
    """
    from kzoo import modeldir

    config = modeldir.read_config(model_dir)
    with mask_bias_scope(mask_bias):
        model = modeldir.load(model_dir)
    return model, config


def mask_bias_scope(value):
    """`kzoo.layers.mask_bias(value)`, or nothing when `value` is None."""
    if value is None:
        return contextlib.nullcontext()
    from kzoo.layers import mask_bias

    return mask_bias(value)


def input_names(model):
    """The model's declared inputs, all int32 [B, S], sorted."""
    inputs = model.input
    if not isinstance(inputs, dict):
        raise ExportError(f"{model.name}: expected a model with named inputs (token_ids, padding_mask, ...)")
    return sorted(inputs)


def input_signature(model):
    import tensorflow as tf

    # [None, None]: dynamic batch and sequence length (TFLite: shape_signature [-1, -1]).
    return {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in input_names(model)}


def call_model(model, inputs):
    """The model's outputs as a dict: its own names, or {"logits": ...} for a single tensor."""
    out = model(inputs, training=False)
    return dict(out) if isinstance(out, dict) else {"logits": out}


def variable_holder(model):
    """A tf.Module tracking the model's variables.

    Tracking the Keras 3 variables themselves (`model.variables`) is not enough: the TFLite
    converter, which goes through a SavedModel, then kept them as resource variables without
    values (VAR_HANDLE / READ_VARIABLE ops, all-NaN outputs). Tracking the underlying tf.Variables
    (`.value`, as Keras' own ExportArchive does) saves them, and the converter freezes them.
    """
    import tensorflow as tf

    holder = tf.Module()
    holder.model_variables = [v.value for v in model.variables]
    return holder


def max_tokens(model):
    """The longest input the model's position table takes.

    `max_sequence_length` when positions count from 0 (ALBERT, XLM); fewer when they start further
    on (XLM-R counts from pad_token_id + 1, so 514 positions take 512 tokens). Found by running the
    backbone at decreasing lengths on CPU (where an out-of-range gather raises) instead of knowing
    each family.
    """
    import tensorflow as tf

    backbone = getattr(model, "backbone", model)
    longest = int(backbone.max_sequence_length)
    token = int(getattr(backbone, "vocabulary_size", 2)) - 1  # a real token: no family pads with the last id
    for length in range(longest, max(longest - 8, 0), -1):
        inputs = {name: np.zeros((1, length), "int32") for name in input_names(backbone)}
        inputs["token_ids"] = np.full((1, length), token, "int32")
        inputs["padding_mask"] = np.ones((1, length), "int32")
        try:
            with tf.device("/CPU:0"):
                backbone(inputs, training=False)
            return length
        except (tf.errors.InvalidArgumentError, ValueError):
            continue
    raise ExportError(f"{model.name}: could not find the longest input its position table takes")


def length_buckets(longest, smallest=16):
    """Padded lengths a text signature uses: 16, 32, ..., up to and including `longest`."""
    buckets = []
    b = smallest
    while b < longest:
        buckets.append(b)
        b *= 2
    return buckets + [longest]


BATCH_BUCKETS = tuple(2**i for i in range(11))  # 1, 2, 4, ..., 1024


def bucketed(compiled, inputs, pad_values, lengths=None, batches=BATCH_BUCKETS):
    """`compiled(inputs)`, the inputs padded up to a batch bucket (and a length bucket when `lengths`
    is given) first, and the outputs cut back to the request's batch (and length: rank-3 outputs).

    Runs outside XLA, which compiles one program per input shape: a server then compiles a handful
    of programs instead of one per request shape. The padding is masked (padding_mask 0, <pad>
    tokens), so real positions compute what they would unpadded; sizes past the last bucket pass
    as they are.
    """
    import tensorflow as tf

    def up(table, n):
        table = tf.constant(table, tf.int32)
        return tf.reduce_min(tf.where(table >= n, table, tf.maximum(n, table[-1])))

    shape = tf.shape(inputs["token_ids"])
    size, length = shape[0], shape[1]
    pad_rows = up(batches, size) - size
    pad_columns = up(lengths, length) - length if lengths else 0
    padded = {name: tf.pad(value, [[0, pad_rows], [0, pad_columns]], constant_values=pad_values.get(name, 0))
              for name, value in inputs.items()}
    out = compiled(padded)
    # Every model output with a sequence axis is [B, S, ...] of rank 3 (sequence_output, MLM
    # logits); rank-2 outputs are per text ([B, H], [B, C]). A [B, S] output would need its name here.
    return {name: value[:size, :length] if lengths and value.shape.rank == 3 else value[:size]
            for name, value in out.items()}


# --- text in the graph -------------------------------------------------------------------------


def load_text_tokenizer(model_dir):
    """The model dir's tokenizer, if it can run inside a TF graph (`tf_encode`); else an ExportError."""
    from kzoo.tasks import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
    except KzooError as e:
        raise ExportError(f"text signatures need the model dir's tokenizer: {e}") from None
    if not hasattr(tokenizer, "tf_encode"):
        raise ExportError(
            f"{model_dir}: its {type(tokenizer).__name__} runs in Python only (not a TF graph op), so it "
            "cannot go inside an export; export ids in (the default) and tokenize with kzoo.load_tokenizer"
        )
    return tokenizer


def text_outputs(model, config, tokenizer, *, top_k=TOP_K, max_masks=MAX_MASKS):
    """`(numeric, strings)`: the task's output for a text signature, in two halves.

    numeric(batch) -> dict of numbers (the model plus the task's head; XLA-compilable);
    strings(out)   -> the same dict plus its strings (token / label names; not XLA-compilable).

    fill-mask (masked_lm, pretraining): the first `max_masks` mask positions of each text,
        mask_positions [B, M] int32   position in token_ids, -1 for an unused slot
        top_ids        [B, M, K] int32  best `top_k` token ids per mask (-1 for an unused slot)
        top_scores     [B, M, K] float  their softmax probabilities (0 for an unused slot)
        top_tokens     [B, M, K] string their tokens ("" for an unused slot)
    classify (classifier): scores [B, C] (softmax), label_ids [B], labels [B] (config `labels`).
    features (backbone): sequence_output [B, S, H], pooled_output [B, H] (with a pooler).
    Every task also returns token_ids and padding_mask [B, S] (the ids the model saw).
    """
    import tensorflow as tf

    task = config.get("task")
    kind = TEXT_TASKS.get(task)
    if kind is None:
        raise ExportError(f"no text signature for task {task!r}; export ids in")

    if kind == "fill-mask":
        mask_id = tokenizer.mask_token_id
        if mask_id is None:
            raise ExportError("fill-mask needs a tokenizer with a mask token")
        vocab = [t or "" for t in tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))]
        k = min(top_k, int(getattr(model.backbone, "vocabulary_size", len(vocab))))
        names = vocab + [""]  # an extra "" for unused slots: TFLite cannot select between strings
        from kzoo.layers import masked_lm_head

        head = masked_lm_head(model)

        def numeric(batch):
            sequence = model.backbone(batch, training=False)["sequence_output"]
            ids, mask = batch["token_ids"], batch["padding_mask"]
            is_mask = tf.logical_and(tf.equal(ids, mask_id), tf.equal(mask, 1))  # [B, S]
            rank = tf.cumsum(tf.cast(is_mask, tf.int32), axis=1) - 1  # index among the masks
            slots = tf.reshape(tf.range(max_masks, dtype=tf.int32), [1, max_masks, 1])
            # expand_dims, not [:, None]: builtin TFLite ops only
            hit = tf.logical_and(tf.equal(tf.expand_dims(rank, 1), slots), tf.expand_dims(is_mask, 1))  # [B, M, S]
            found = tf.reduce_any(hit, axis=2)  # [B, M]
            position = tf.argmax(tf.cast(hit, tf.int32), axis=2, output_type=tf.int32)
            probs = tf.nn.softmax(head(tf.gather(sequence, position, batch_dims=1), training=False))  # [B, M, V]
            scores, top = tf.math.top_k(probs, k)
            used = tf.expand_dims(found, 2)
            return {
                "token_ids": ids,
                "padding_mask": mask,
                "mask_positions": tf.where(found, position, -tf.ones_like(position)),
                "top_ids": tf.where(used, top, -tf.ones_like(top)),
                "top_scores": tf.where(used, scores, tf.zeros_like(scores)),
            }

        def strings(out):
            table = tf.constant(names)
            # "" for unused slots and for ids past the tokenizer's vocabulary (an embedding padded
            # beyond the tokenizer, e.g. a random 250k model with a small test vocabulary)
            ids = out["top_ids"]
            named = tf.logical_and(ids >= 0, ids < len(vocab))
            out["top_tokens"] = tf.gather(table, tf.where(named, ids, tf.fill(tf.shape(ids), len(vocab))))
            return out

    elif kind == "classify":
        num = int(model.output.shape[-1])
        labels = config.get("labels") or {}
        names = [str(labels.get(str(i), labels.get(i, f"LABEL_{i}"))) for i in range(num)]

        def numeric(batch):
            logits = call_model(model, batch)["logits"]
            return {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"],
                    "scores": tf.nn.softmax(logits), "label_ids": tf.argmax(logits, axis=-1, output_type=tf.int32)}

        def strings(out):
            out["labels"] = tf.gather(tf.constant(names), out["label_ids"])
            return out

    else:  # features

        def numeric(batch):
            out = call_model(model, batch)
            return {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"], **out}

        def strings(out):
            return out

    return numeric, strings


def encode_in_graph(tokenizer, model, text, longest, buckets=None):
    """strings [B] -> the model's inputs [B, L] inside the graph.

    `tf_encode` pads to `longest`; the batch is then cut to its longest row, rounded up to a bucket
    when `buckets` is given (XLA compiles one program per shape, so a server sees a handful of
    lengths instead of one per request). Inputs the tokenizer does not make (XLM's `lang_ids`) are 0.
    """
    import tensorflow as tf

    batch = tokenizer.tf_encode(text, longest)
    needed = tf.reduce_max(tf.reduce_sum(batch["padding_mask"], axis=1))
    if buckets:
        table = tf.constant(buckets, tf.int32)
        index = tf.minimum(tf.reduce_sum(tf.cast(table < needed, tf.int32)), len(buckets) - 1)
        needed = tf.gather(table, index)
    batch = {name: value[:, :needed] for name, value in batch.items()}
    for name in input_names(model):
        batch.setdefault(name, tf.zeros_like(batch["token_ids"]))
    return {name: batch[name] for name in input_names(model)}


# --- texts for calibration and evaluation --------------------------------------------------------

# Built-in texts. Calibration and evaluation never share a sentence: the report's numbers are
# measured on text the quantizer did not see.
CALIBRATION_TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Machine translation has improved a lot over the last ten years.",
    "Le chat dort sur le canapé pendant que la pluie tombe dehors.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "El perro corre por el parque todas las mañanas con su dueño.",
    "Il treno per Milano parte alle otto e trenta dal binario tre.",
    "O mercado abre cedo e fecha antes do pôr do sol.",
    "Москва — столица России и крупнейший город страны.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "東京は日本の首都で、世界有数の大都市です。",
    "서울은 대한민국의 수도이며 가장 큰 도시이다.",
    "दिल्ली भारत की राजधानी है।",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "Istanbul, Türkiye'nin en kalabalık şehridir.",
    "Warszawa jest stolicą Polski i największym miastem kraju.",
    "Amsterdam is de hoofdstad van Nederland.",
    "Stockholm är Sveriges huvudstad och största stad.",
    "Hà Nội là thủ đô của Việt Nam.",
    "Prices rose by 3.5% in 2023, to 1,250 euros per month.",
    "Send an e-mail to info@example.com before 10:30 a.m. on Monday!",
    "She said: \"I'll be there at 7 o'clock, don't worry.\"",
    "1 2 3 4 5 6 7 8 9 10, and then we start again.",
]
EVALUATION_TEXTS = [
    "Hello, my dog is cute and my cat is even cuter.",
    "Paris is the capital of France and its largest city.",
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889.",
    "Das Wetter in Berlin ist heute sonnig und warm.",
    "¿Dónde está la biblioteca más cercana, por favor?",
    "Санкт-Петербург основан Петром Первым в 1703 году.",
    "Το φεγγάρι φωτίζει τη θάλασσα τη νύχτα.",
    "مرحبا بكم في المكتبة الوطنية.",
    "我们明天早上九点在火车站见面。",
    "このレストランの寿司はとても美味しいです。",
    "오늘 날씨가 정말 좋네요.",
    "यह किताब बहुत दिलचस्प है।",
    "The meeting was moved from Tuesday to Thursday at 3 p.m.",
    "A short one.",
    "Numbers like 42, 3.14159 and 1,000,000 appear in text too.",
    "Emoji 😀 and symbols © ™ € also show up in real input.",
]


def read_texts(path):
    """Non-empty lines of a UTF-8 text file (a calibration file)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such calibration file (one text per line)")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ExportError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ExportError(f"{path}: no text in it (one text per line)")
    return lines


def with_masks(texts, mask_token, every=4, seed=0):
    """Texts with a word replaced by the mask token here and there (fill-mask sees what it serves)."""
    if not mask_token:
        return list(texts)
    rng = np.random.default_rng(seed)
    out = []
    for i, text in enumerate(texts):
        words = text.split(" ")
        if i % every == 0 and len(words) > 2:
            words[int(rng.integers(len(words)))] = mask_token
        out.append(" ".join(words))
    return out


def full_batches(items, batch_size):
    """`items` in batches of exactly `batch_size`, the last one topped up from the start
    (TFLite's calibrator cannot change a dynamic-shape model's batch size between samples)."""
    items = list(items)
    count = -(-len(items) // batch_size)
    cycled = (items * (batch_size // max(len(items), 1) + 2))[:count * batch_size]
    return [cycled[i:i + batch_size] for i in range(0, len(cycled), batch_size)]


def id_batches(model, tokenizer, texts, *, batch_size, length, seed):
    """Padded int32 batches of the model's inputs, [batch_size, length] each.

    From `texts` through the tokenizer when there is one; random ids (rows of varied length) when
    the model dir has no tokenizer. Every batch has padding in it, so the attention mask's range is
    part of what a quantizer calibrates. All batches share one shape: TFLite's calibrator cannot
    resize a model with dynamic shapes between samples.
    """
    names = input_names(model)
    batches = []
    if tokenizer is not None:
        for chunk in full_batches(texts, batch_size):
            batch = tokenizer(chunk, max_length=length, truncation=True, padding="max_length")
            batch = {k: np.asarray(v, "int32")[:, :length] for k, v in batch.items() if k in names}
            for name in names:
                batch.setdefault(name, np.zeros_like(batch["token_ids"]))
            batches.append(batch)
        return batches
    rng = np.random.default_rng(seed)
    vocab = int(getattr(getattr(model, "backbone", model), "vocabulary_size"))
    for _ in range(max(1, len(texts) // batch_size)):
        ids = rng.integers(5, vocab, size=(batch_size, length)).astype("int32")
        mask = np.ones_like(ids)
        for row in range(batch_size):
            mask[row, int(rng.integers(2, length + 1)):] = 0
        batch = {name: np.zeros_like(ids) for name in names}
        batch.update(token_ids=ids, padding_mask=mask)
        batches.append(batch)
    return batches


# --- comparison ---------------------------------------------------------------------------------


def compare(ours, reference, padding_mask):
    """Per output: max abs diff, cosine (per position / per example, over real tokens) and top-1
    agreement (argmax of the last axis), of `ours` against `reference` (Keras fp32)."""
    rows = {}
    keep = np.asarray(padding_mask).astype(bool)
    for name, want in reference.items():
        want = np.asarray(want, np.float64)
        got = np.asarray(ours[name], np.float64)
        if got.shape != want.shape:
            raise ExportError(f"output {name}: shape {got.shape} != Keras {want.shape}")
        if want.ndim == 3 and want.shape[:2] == keep.shape:  # [B, S, X]: real positions only
            got, want = got[keep], want[keep]
        width = want.shape[-1] if want.ndim > 1 else 1  # rows: one vector per position / example
        got, want = got.reshape(-1, width), want.reshape(-1, width)
        norm = np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1)
        cosine = np.sum(got * want, axis=-1) / np.maximum(norm, 1e-30)
        both_zero = (np.abs(got).max(-1) == 0) & (np.abs(want).max(-1) == 0)  # e.g. unused fill-mask slots
        cosine = np.where(both_zero, 1.0, cosine)
        rows[name] = {
            "max_abs_diff": float(np.max(np.abs(got - want))) if got.size else 0.0,
            "cosine_min": float(cosine.min()) if cosine.size else 1.0,
            "cosine_mean": float(cosine.mean()) if cosine.size else 1.0,
            "top1_agreement": float(np.mean(got.argmax(-1) == want.argmax(-1))) if got.size else 1.0,
            "finite": bool(np.all(np.isfinite(got))),
        }
    return rows


def merge_comparisons(parts):
    """One row per output over several batches: worst max diff / min cosine, mean of the means."""
    merged = {}
    for part in parts:
        for name, row in part.items():
            m = merged.setdefault(name, {"max_abs_diff": 0.0, "cosine_min": 1.0, "_cos": [], "_top1": [],
                                         "finite": True})
            m["max_abs_diff"] = max(m["max_abs_diff"], row["max_abs_diff"])
            m["cosine_min"] = min(m["cosine_min"], row["cosine_min"])
            m["_cos"].append(row["cosine_mean"])
            m["_top1"].append(row["top1_agreement"])
            m["finite"] = m["finite"] and row["finite"]
    for m in merged.values():
        m["cosine_mean"] = float(np.mean(m.pop("_cos")))
        m["top1_agreement"] = float(np.mean(m.pop("_top1")))
    return merged


@contextlib.contextmanager
def native_logs_quiet():
    """Silences what TFLite's C++ converter, calibrator and interpreter print to fd 2 (pages of MLIR
    notes, "fully_quantize: 0, ...", delegate notices) and the deprecation warning TF's calibrator
    raises for its own use of tf.lite.Interpreter. Errors still arrive as Python exceptions."""
    import os
    import sys
    import warnings

    if os.environ.get("KZOO_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# --- files ---------------------------------------------------------------------------------------


def copy_sidecar(model_dir, dest):
    """Copies the model dir's config.json and tokenizer files (everything but the weights) to `dest`,
    so an export carries what a pipeline needs to run it (`kzoo.runtime`)."""
    from kzoo import modeldir

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file() and f.name != modeldir.WEIGHTS:
            shutil.copyfile(f, dest / f.name)
    return dest


def check_out(out, overwrite):
    if Path(out).exists() and not overwrite:
        raise ExportError(f"{out} already exists (pass --overwrite to replace it)")


def write_report(path, report):
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)


def human_size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
