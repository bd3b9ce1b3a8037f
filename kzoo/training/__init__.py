"""Fine-tuning: `kzoo.train(model_dir, out, train=FILE, ...)` and `kzoo train`.

Transformers' Trainer's defaults (AdamW 0.9 / 0.999 / 1e-8, no weight decay on biases and LayerNorm
weights, a linear schedule, gradient clipping at 1.0, mean cross-entropy), an XLA-compiled step, the
model dir's in-graph tokenizer; OUT is a model dir every other command takes. See kzoo.training.trainer
for the loop and kzoo.training.data for the files it reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

from kzoo.io.atomic import overlaps
from kzoo.training.data import DataError
from kzoo.training.options import PRECISIONS, SCHEDULERS, STRATEGIES, TrainError, TrainOptions

__all__ = ["train", "Trainer", "TrainOptions", "TrainError", "DataError", "SCHEDULERS", "PRECISIONS", "STRATEGIES"]


def __getattr__(name):  # (Trainer imports TensorFlow: only when asked for)
    if name == "Trainer":
        from kzoo.training.trainer import Trainer

        return Trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(model_dir, out, train, eval=None, *, overwrite=False, progress=None, **options) -> dict:
    """Fine-tunes the task model at `model_dir` on the file `train` (kzoo.training.data's formats) and writes
    the result to `out` as a model dir; `eval`: a file to report the task's metrics on after training.
    options: TrainOptions' fields (epochs, max_steps, batch_size, learning_rate, weight_decay, warmup_steps,
    warmup_ratio, scheduler, gradient_accumulation, max_length, doc_stride, seed, shuffle, mixed_precision,
    lora_rank, strategy, checkpoint_dir, save_steps). Returns the report: the plan, the per-step log (loss, learning
    rate, gradient norm), examples/s and the metrics. Under strategy "multi-worker" every worker runs this
    and only the chief writes `out` (the others' reports say "out": None)."""
    from pathlib import Path

    from kzoo.training.distribute import is_chief, make_strategy

    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(TrainOptions)})
    if unknown:
        raise TrainError(f"unknown training option(s) {', '.join(unknown)}")
    settings = TrainOptions(**options)
    settings.check()
    _check_out(out, overwrite, model_dir)
    if settings.checkpoint_dir is not None and (overlaps(settings.checkpoint_dir, model_dir) or
                                                 overlaps(settings.checkpoint_dir, out)):
        raise TrainError(f"{settings.checkpoint_dir}: the checkpoint dir must be apart from the model dir and OUT")
    strategy = make_strategy(settings.strategy)  # (first: MultiWorkerMirroredStrategy must come before other ops)
    import keras

    from kzoo.models import load_model, save_model
    from kzoo.tokenizers import load_tokenizer
    from kzoo.training.trainer import Trainer

    keras.utils.set_random_seed(settings.seed)
    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(settings.mixed_precision, "float32")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # (the model is built under it: float32 variables, half compute)
    try:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = load_model(model_dir)
    finally:
        keras.config.set_dtype_policy(previous)
    tokenizer = load_tokenizer(model_dir)
    trainer = Trainer(model, tokenizer, settings, strategy)
    examples = trainer.read(train)
    evaluation = trainer.read(eval) if eval is not None else None
    per_epoch, total, warmup = trainer.plan(examples)
    # (what a checkpoint dir's run is: another model, file or option must not resume from it; how it is run may)
    kept = {k: v for k, v in dataclasses.asdict(settings).items()
            if k not in ("strategy", "checkpoint_dir", "save_steps")}
    run = {"model": str(Path(model_dir).resolve()), "train": str(Path(train).resolve()), "examples": len(examples),
           "train_sha256": hashlib.sha256(Path(train).read_bytes()).hexdigest(), **kept}
    result = trainer.train(examples, evaluation, progress=progress, run=run)
    chief = is_chief(strategy)
    if chief:
        save_model(model, out, tokenizer=model_dir, overwrite=overwrite)
    return {"model": str(model_dir), "out": str(out) if chief else None, "task": trainer.task, "train": str(train),
            "examples": len(examples), "eval": str(eval) if eval is not None else None,
            "replicas": strategy.num_replicas_in_sync if strategy is not None else 1, "steps_per_epoch": per_epoch,
            "total_steps": total, "warmup_steps": warmup, "max_length": trainer.max_length,
            "options": dataclasses.asdict(settings), **result}


def _check_out(out, overwrite, model_dir):
    from pathlib import Path

    if overlaps(out, model_dir):
        raise TrainError(f"{out}: that is where the model dir {model_dir} is; write the trained model elsewhere")
    if Path(out).exists() and not overwrite:
        raise TrainError(f"{out} already exists (pass --overwrite to replace it)")
