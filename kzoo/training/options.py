"""`kzoo train`'s options and their defaults (Transformers' TrainingArguments'), readable without TensorFlow
(the CLI's parser shows them)."""

from __future__ import annotations

import dataclasses

import numpy as np

from kzoo.errors import KzooError

SCHEDULERS = ("linear", "constant")
PRECISIONS = ("none", "bf16", "fp16")  # fp32; Keras' mixed_bfloat16; mixed_float16 with dynamic loss scaling
STRATEGIES = ("default", "mirrored", "multi-worker", "tpu")  # tf.distribute: see kzoo.training.distribute


class TrainError(KzooError):
    """A one-line problem with a training run's options or model."""


@dataclasses.dataclass
class TrainOptions:
    """Trainer's defaults (TrainingArguments), kzoo's names for the CLI's options."""

    epochs: float = 3.0
    max_steps: int = -1  # > 0: that many optimizer steps, whatever `epochs` says
    batch_size: int = 8  # the global batch (per optimizer step: batch_size x gradient_accumulation examples)
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    scheduler: str = "linear"
    gradient_accumulation: int = 1
    max_length: int | None = None  # None: the model's longest input (question answering: at most 384)
    doc_stride: int = 128  # question answering: tokens a context's windows overlap (run_qa's default; XLM: tokens
    # from one window's start to the next, as Transformers' SQuAD features for Python tokenizers count it)
    seed: int = 42
    shuffle: bool = True
    max_grad_norm: float = 1.0
    mixed_precision: str = "none"  # PRECISIONS: variables, softmax, LayerNorm and the loss stay float32
    lora_rank: int = 0  # > 0: LoRA of that rank on the attention query and value projections; only it and
    # the head train, and the saved model holds the merged weights
    strategy: str = "default"  # STRATEGIES
    checkpoint_dir: str | None = None  # the run's state every `save_steps` steps; a rerun resumes from it
    save_steps: int = 500
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def check(self):
        whole = {"batch_size": 1, "gradient_accumulation": 1, "warmup_steps": 0, "lora_rank": 0, "save_steps": 1,
                 "doc_stride": 0, **({"max_length": 1} if self.max_length is not None else {})}
        for name, low in whole.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise TrainError(f"{name.replace('_', '-')} must be a whole number >= {low}, got {value!r}")
        if self.mixed_precision not in PRECISIONS:
            raise TrainError(f"mixed-precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        if self.strategy not in STRATEGIES:
            raise TrainError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.scheduler not in SCHEDULERS:
            raise TrainError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if not (self.epochs > 0 or self.max_steps > 0):
            raise TrainError("give epochs > 0 or max-steps > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainError(f"warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise TrainError("learning-rate must be > 0 and weight-decay >= 0")
