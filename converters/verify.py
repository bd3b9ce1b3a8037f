"""`kzoo verify`: a converted model against its PyTorch reference, output by output.

Needs the reference extra (torch + transformers; a sentence-transformers model's: sentence-transformers
too); nothing else in kzoo does.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from kzoo.converters import family_of
from kzoo.converters.convert import read_hf_config, resolve_source
from kzoo.converters.readers import CheckpointError, open_checkpoint
from kzoo.families import architecture_key
from kzoo.io import modeldir
from kzoo.models import load_model, outputs
from kzoo.tasks import TASKS

BOUND = 1e-4  # the numerical contract: max abs diff on logits and hidden states

# Transformers' output attributes, per task, in the order of its declared outputs (kzoo.tasks)
HF_OUTPUTS = {
    "backbone": ("last_hidden_state", "pooler_output"),
    "masked_lm": ("logits",),
    "pretraining": ("prediction_logits", "sop_logits"),
    "classifier": ("logits",),
    "token_classifier": ("logits",),
    "question_answering": ("start_logits", "end_logits"),
    "multiple_choice": ("logits",),
}


def reference_inputs(vocab_size, batch=3, length=17, pad_id=0, seed=0, left_pad=False, num_segments=2,
                     num_languages=0, empty_row=False):
    """A padded batch of random ids: rows of full, 2/3 and 1/3 length (with `empty_row`, the last row
    all padding: padding_mask 0 everywhere).

    num_languages: also `lang_ids` (XLM), row r in language r, then r + 1 from a third on."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    for row in range(1, batch):
        n = max(1, length - row * length // batch)
        if left_pad:
            mask[row, : length - n] = 0
        else:
            mask[row, n:] = 0
    if empty_row:
        mask[-1] = 0
    ids[mask == 0] = pad_id
    segments = np.zeros_like(ids)
    segments[:, length // 2:] = num_segments - 1
    inputs = {"token_ids": ids, "padding_mask": mask, "segment_ids": segments * mask}
    if num_languages:
        langs = np.repeat(np.arange(batch)[:, None], length, axis=1)
        langs[:, length // 3:] += 1
        inputs["lang_ids"] = (langs % num_languages).astype("int32") * mask
    return inputs


@functools.lru_cache(maxsize=2)
def _reference_model(src, cls_name):
    import torch
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # no load report tables, no progress bars: kzoo's report says it
    transformers.logging.disable_progress_bar()
    try:
        return getattr(transformers, cls_name).from_pretrained(src, dtype=torch.float32).eval()
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def run_reference(src, task, spec, inputs):
    """Transformers' PyTorch model for `task` on `inputs`: {kzoo output name: array}."""
    import torch

    cls_name = next(c for c, t in spec.TASK_OF_CLASS.items() if t == task)
    ref = _reference_model(str(src), cls_name)
    with torch.no_grad():
        out = ref(
            input_ids=torch.as_tensor(inputs["token_ids"], dtype=torch.long),
            attention_mask=torch.as_tensor(inputs["padding_mask"], dtype=torch.long),
            token_type_ids=torch.as_tensor(inputs["segment_ids"], dtype=torch.long),
            output_hidden_states=True,
            **({"langs": torch.as_tensor(inputs["lang_ids"], dtype=torch.long)}
               if "lang_ids" in inputs else {}),
        )
    result = {ours: getattr(out, theirs).numpy() for ours, theirs in zip(TASKS[task].outputs, HF_OUTPUTS[task])
              if getattr(out, theirs, None) is not None}  # XLMModel has no pooler
    if task != "backbone":
        result["sequence_output"] = out.hidden_states[-1].numpy()
    return result


@functools.lru_cache(maxsize=2)
def _sentence_transformer(src):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise CheckpointError(f"{src}: verifying a sentence-transformers model needs the sentence-transformers "
                              "package (pip install sentence-transformers)") from None
    return SentenceTransformer(src, device="cpu").eval()


def run_sentence_transformer(src, inputs):
    """sentence-transformers' own model (its modules in order: Transformer, Pooling, Dense, Normalize) on
    `inputs`: sentence_embedding, and the Transformer's token embeddings as sequence_output."""
    import torch

    model = _sentence_transformer(str(src))
    features = {"input_ids": torch.as_tensor(inputs["token_ids"], dtype=torch.long),
                "attention_mask": torch.as_tensor(inputs["padding_mask"], dtype=torch.long),
                "token_type_ids": torch.as_tensor(inputs["segment_ids"], dtype=torch.long)}
    with torch.no_grad():
        out = model(features)
    return {"sentence_embedding": out["sentence_embedding"].numpy(), "sequence_output": out["token_embeddings"].numpy()}


def run_kzoo(model, task, inputs):
    result = {k: np.asarray(v) for k, v in outputs(model, inputs).items()}
    if task != "backbone":
        rows = {k: v.reshape(-1, v.shape[-1]) for k, v in inputs.items()}  # (choices: every one a row)
        result["sequence_output"] = np.asarray(model.backbone(rows)["sequence_output"])
    return result


def _check_reference(src, hf, family, spec, config):
    """A one-line error when the reference cannot be the model dir's source: another family, another
    architecture, a head the checkpoint has not, or a checkpoint that does not read."""
    if family.name != config.get("architecture"):
        raise CheckpointError(f"{src}: a {family.name} checkpoint; {config.get('architecture')} is what the model "
                              "dir holds")
    theirs, ours = architecture_key(spec.backbone_config(hf)), architecture_key(config["backbone"])
    if theirs != ours:
        name = next(k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise CheckpointError(f"{src}: another architecture than the model dir's ({name}: {theirs.get(name)!r} "
                              f"there, {ours.get(name)!r} here)")
    if config["task"] == "sentence_embedding":
        if not (Path(src) / "modules.json").is_file():
            raise CheckpointError(f"{src}: not a sentence-transformers model (no modules.json); the model dir holds "
                                  "one (sentence_embedding)")
    elif config["task"] not in spec.TASK_OF_CLASS.values():
        raise CheckpointError(f"{src}: Transformers has no {family.name} class for the task {config['task']!r}")
    with open_checkpoint(src):  # reads its header: a truncated or corrupt file fails here, in one line
        pass


def verify(model_dir, reference, *, model=None, batches=None):
    """Max abs diff of every output on padded batches; returns a report dict."""
    config = modeldir.read_config(model_dir)
    src = resolve_source(reference)
    hf = read_hf_config(src)
    hf.setdefault("_name_or_path", str(src))  # as convert reads it (XLM's clm checkpoints: by name)
    task = config["task"]
    family, spec = family_of(hf)
    _check_reference(src, hf, family, spec, config)
    model = model or load_model(model_dir)
    vocab = config["backbone"]["vocabulary_size"]
    pad = hf.get("pad_token_id", 0) or 0
    segments = min(2, config["backbone"].get("num_segments", 2))
    languages = config["backbone"].get("num_languages", 0)  # XLM models take lang_ids
    batches = batches or {
        "right-padded": reference_inputs(vocab, pad_id=pad, seed=0, num_segments=segments,
                                         num_languages=languages),
        "left-padded": reference_inputs(vocab, pad_id=pad, seed=1, left_pad=True, num_segments=segments,
                                        num_languages=languages),
        "padding-only row": reference_inputs(vocab, pad_id=pad, seed=2, num_segments=segments,
                                             num_languages=languages, empty_row=True),
    }
    if TASKS[task].choices:  # the batch's rows as the choices of one example: [1, C, S]
        batches = {name: {k: v[None] for k, v in inputs.items()} for name, inputs in batches.items()}
    rows = []
    for batch_name, inputs in batches.items():
        ours = run_kzoo(model, task, inputs)
        theirs = run_sentence_transformer(src, inputs) if task == "sentence_embedding" else \
            run_reference(src, task, spec, inputs)
        for key, want in theirs.items():
            if key == "pooled_output" and key not in ours:  # converted without one: the checkpoint had none
                continue
            diff = float(np.max(np.abs(ours[key] - want)))
            rows.append({"batch": batch_name, "output": key, "shape": list(want.shape),
                         "max_abs_diff": diff, "ok": diff <= BOUND})
    return {"model": str(model_dir), "reference": str(reference), "bound": BOUND,
            "ok": all(r["ok"] for r in rows), "rows": rows}
