"""The training loop: Transformers' Trainer's defaults and update, in one XLA-compiled step.

Per optimizer step: `gradient_accumulation` batches, each one's mean loss differentiated (dropout on) and
the gradients averaged over the step's batches; clipped to a global norm of 1.0 (clip_grad_norm_); then
AdamW (torch's update, no weight decay on biases and LayerNorm weights) at the schedule's learning rate
(linear warmup, then linear to 0 or constant). Batches keep the file's order (or a seeded shuffle per
epoch), each padded to a length bucket: XLA compiles one program per bucket.

Losses, in float32 (Transformers' per problem_type): mean cross-entropy (single label, and per token over
the labels that are not -100), MSE (regression: one output), binary cross-entropy on logits (multi-label).
"""

from __future__ import annotations

import math
import time

import numpy as np

from kzoo.training import data, metrics
from kzoo.training.optimizer import AdamW, clip_by_norm, decays, learning_rate
from kzoo.training.options import TrainError, TrainOptions


class Trainer:
    """Trains a kzoo Keras task model (classifier or token classifier) in place."""

    def __init__(self, model, tokenizer, options: TrainOptions):
        import tensorflow as tf

        options.check()
        self.model, self.tokenizer, self.options = model, tokenizer, options
        config = getattr(model, "kzoo_config", None) or {}
        self.task = config.get("task")
        if self.task not in ("classifier", "token_classifier"):
            raise TrainError(f"kzoo train trains classifier and token_classifier models; this is a {self.task!r} "
                             "model (kzoo convert SRC OUT --task classifier --labels A,B,... makes one)")
        from kzoo.tasks.classification import label_names

        self.names = label_names(config, int(model.output.shape[-1]))
        self.problem_type = config.get("problem_type") or (
            "regression" if self.task == "classifier" and len(self.names) == 1 else None)
        longest = config.get("max_seq_length") or self._longest(config)
        self.max_length = min(options.max_length or longest, longest)
        self.longest = longest
        self.trained = None if not options.lora_rank else self._enable_lora(options.lora_rank)
        self.variables = None  # the trainable variables the loss reaches (`_prepare`)
        self._predict = tf.function(lambda batch: model(batch, training=False), jit_compile=True,
                                    reduce_retracing=True)

    def _prepare(self, inputs, labels):
        """The optimizer over the variables the loss reaches (torch's AdamW skips a parameter without a
        gradient: no update, no decay), their gradient sums, and the compiled steps."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self.loss(self.model(inputs, training=False), labels)
        grads = tape.gradient(loss, self.model.trainable_variables)
        used = [g is not None and (self.trained is None or id(v) in self.trained)
                for g, v in zip(grads, self.model.trainable_variables)]
        self.variables = [v for v, u in zip(self.model.trainable_variables, used) if u]
        decay = [d for d, u in zip(decays(self.model), used) if u]
        o = self.options
        self.optimizer = AdamW(self.variables, decay, o.beta_1, o.beta_2, o.epsilon, o.weight_decay)
        self.accumulated = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self.variables]
        # fp16: dynamic loss scaling (Keras' LossScaleOptimizer's rule: halve on an overflow and skip the step,
        # double after 2,000 finite steps)
        self.loss_scale = tf.Variable(2.0 ** 15 if o.mixed_precision == "fp16" else 1.0, trainable=False)
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._micro = tf.function(self._micro_step, jit_compile=True, reduce_retracing=True)
        self._apply = tf.function(self._apply_step, jit_compile=True)

    def _enable_lora(self, rank):
        """Keras' own LoRA (Dense.enable_lora, as keras-hub applies it) on every attention layer's query and
        value projections; returns the ids of what trains: the LoRA weights and the head (not the backbone).
        Keras merges them into the kernels when the model is saved."""
        from kzoo.io.keras_internals import sublayers
        from kzoo.models.layers import TransformerLayer

        lora = []
        for layer in sublayers(self.model.backbone):
            if isinstance(layer, TransformerLayer):
                for projection in (layer.query, layer.value):
                    projection.enable_lora(rank)
                    lora += [projection.lora_kernel_a, projection.lora_kernel_b]
        backbone = {id(v) for v in self.model.backbone.weights}
        return {id(v) for v in lora} | {id(v) for v in self.model.trainable_variables if id(v) not in backbone}

    @staticmethod
    def _longest(config):
        from kzoo.models import input_limits

        return input_limits(config["architecture"], config["backbone"])[1]

    # ---- the steps (XLA) -----------------------------------------------------------------------

    def loss(self, logits, labels):
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32)
        if self.task == "token_classifier":
            valid = tf.not_equal(labels, -100)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(valid, labels, 0), logits)
            weights = tf.cast(valid, tf.float32)
            return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        if self.problem_type == "regression":
            return tf.reduce_mean(tf.square(tf.reshape(logits, [-1]) - tf.reshape(tf.cast(labels, tf.float32), [-1])))
        if self.problem_type == "multi_label_classification":
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), logits))
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    def _micro_step(self, inputs, labels, share):
        """One batch: its loss, its gradients times `share` (1 / the step's batches) added to the step's (fp16:
        of the loss times the loss scale, divided back)."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self.loss(self.model(inputs, training=True), labels)
            scaled = loss * self.loss_scale
        for total, grad in zip(self.accumulated, tape.gradient(scaled, self.variables)):
            total.assign_add(tf.cast(grad, total.dtype) * (share / self.loss_scale))
        return loss

    def _apply_step(self, lr):
        import tensorflow as tf

        grads = [g.read_value() for g in self.accumulated]

        def step():
            clipped, norm = clip_by_norm(grads, self.options.max_grad_norm)
            self.optimizer.apply(clipped, lr)
            if self.options.mixed_precision == "fp16":
                self.finite_steps.assign_add(1)
                grow = tf.equal(self.finite_steps % 2000, 0)
                self.loss_scale.assign(tf.where(grow, self.loss_scale * 2.0, self.loss_scale))
            return norm

        def skip():  # an fp16 overflow: no update, a smaller scale
            self.loss_scale.assign(self.loss_scale / 2.0)
            self.finite_steps.assign(0)
            return tf.constant(float("inf"))

        if self.options.mixed_precision == "fp16":
            norm = tf.cond(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]), step, skip)
        else:
            norm = step()
        for g in self.accumulated:
            g.assign(g * 0.0)
        return norm

    # ---- the loop ------------------------------------------------------------------------------

    def read(self, path):
        return data.read(path, self.task, self.names, self.problem_type)

    def _batches(self, examples, epoch, shuffle):
        import tensorflow as tf

        model_inputs = sorted(self.model.input)
        for batch in data.batches(examples, self.tokenizer, batch_size=self.options.batch_size,
                                  max_length=self.max_length, longest=self.longest, shuffle=shuffle,
                                  seed=self.options.seed, epoch=epoch):
            inputs = {name: batch[name] if name in batch else tf.zeros_like(batch["token_ids"]) for name in model_inputs}
            yield inputs, batch["labels"]

    def plan(self, examples):
        """(optimizer steps per epoch, total steps, warmup steps), as Trainer counts them."""
        o = self.options
        per_epoch = max(math.ceil(math.ceil(len(examples) / o.batch_size) / o.gradient_accumulation), 1)
        total = o.max_steps if o.max_steps > 0 else math.ceil(o.epochs * per_epoch)
        warmup = o.warmup_steps if o.warmup_steps else math.ceil(o.warmup_ratio * total)
        return per_epoch, total, warmup

    def step(self, group, lr):
        """One optimizer step on `group`, a list of (inputs, labels) batches (gradients averaged over them), at
        learning rate `lr`: (the batches' mean loss, the gradient norm before clipping)."""
        import tensorflow as tf

        if self.variables is None:
            self._prepare(*group[0])
        share = tf.constant(1.0 / len(group))
        losses = [float(self._micro(inputs, labels, share)) for inputs, labels in group]
        return float(np.mean(losses)), float(self._apply(tf.constant(lr, tf.float32)))

    def train(self, examples, evaluation=None, progress=None, on_step=None):
        """Runs the plan; returns the log ({step, epoch, loss, learning_rate, grad_norm} per optimizer step)
        and the evaluation's metrics. `on_step(log_row)`: called after every step."""
        o = self.options
        per_epoch, total, warmup = self.plan(examples)
        advance = progress(total) if progress else (lambda n=1, status=None: None)
        log, step, seen, started = [], 0, 0, time.time()
        n_batches = math.ceil(len(examples) / o.batch_size)
        epoch = 0
        while step < total:
            batches = iter(self._batches(examples, epoch, o.shuffle))
            for first in range(0, n_batches, o.gradient_accumulation):
                size = min(o.gradient_accumulation, n_batches - first)  # (an epoch's last step: what is left)
                lr = float(learning_rate(step, o.learning_rate, total, warmup, o.scheduler))
                group = [next(batches) for _ in range(size)]
                loss, norm = self.step(group, lr)
                seen += sum(int(labels.shape[0]) for _, labels in group)
                row = {"step": step + 1, "epoch": round(epoch + (first + size) / n_batches, 4),
                       "loss": loss, "learning_rate": lr, "grad_norm": norm}
                log.append(row)
                step += 1
                advance(1, f"loss {row['loss']:.4f}  {seen / (time.time() - started):.1f} examples/s")
                if on_step:
                    on_step(row)
                if step >= total:
                    break
            epoch += 1
        result = {"steps": step, "epochs": round(log[-1]["epoch"], 4) if log else 0.0, "log": log,
                  "examples_per_second": seen / max(time.time() - started, 1e-9)}
        if evaluation is not None:
            result["eval"] = self.evaluate(evaluation)
        return result

    def evaluate(self, examples) -> dict:
        """The task's metrics on `examples` (model in inference mode)."""
        predictions, golds = [], []
        for inputs, labels in self._batches(examples, 0, False):
            predictions.append(np.asarray(self._predict(inputs), np.float32))
            golds.append(np.asarray(labels))
        if self.task == "token_classifier":
            predicted, gold = [], []
            for logits, labels in zip(predictions, golds):
                for row_logits, row_labels in zip(logits, labels):
                    keep = row_labels != -100
                    predicted.append([self.names[i] for i in row_logits[keep].argmax(-1)])
                    gold.append([self.names[i] for i in row_labels[keep]])
            return metrics.token_classification(predicted, gold)
        logits, labels = np.concatenate(predictions), np.concatenate(golds)
        if self.problem_type == "regression":
            return metrics.regression(logits.reshape(-1), labels.reshape(-1))
        if self.problem_type == "multi_label_classification":
            return metrics.multi_label(1 / (1 + np.exp(-logits)), labels)
        return metrics.classification(logits.argmax(-1), labels)
