"""Transformers' Trainer's optimizer, in TF: torch.optim.AdamW's update, its parameter groups (no weight decay
on biases and LayerNorm weights), the linear / constant schedule with warmup, and clip_grad_norm_.

Written out (not keras.optimizers.AdamW) because Keras' Adam adds epsilon before the bias correction of the
second moment (`lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`) where torch adds it after
(`lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`), and clip_by_global_norm scales by
`max_norm / max(norm, max_norm)` where torch scales by `max_norm / (norm + 1e-6)`: small differences that
grow over steps, and the point is the same weights as PyTorch.
"""

from __future__ import annotations

import tensorflow as tf


def decays(model) -> list:
    """Per trainable variable, whether weight decay applies: not to biases and LayerNorm weights
    (Transformers' get_decay_parameter_names)."""
    import keras

    from kzoo.io.keras_internals import sublayers

    norms = {id(v) for layer in sublayers(model) if isinstance(layer, keras.layers.LayerNormalization)
             for v in layer.weights}
    return [id(v) not in norms and v.name != "bias" for v in model.trainable_variables]


def learning_rate(step, base, total, warmup, scheduler):
    """The learning rate of optimizer step `step` (0-based; tensors), as Trainer's LambdaLR schedules:
    linear warmup from 0 over `warmup` steps, then linear to 0 at `total` ("linear") or constant."""
    step = tf.cast(step, tf.float32)
    warm = tf.cast(warmup, tf.float32)
    rising = step / tf.maximum(1.0, warm)
    if scheduler == "constant":
        after = tf.ones_like(step)
    else:
        after = tf.maximum(0.0, (tf.cast(total, tf.float32) - step) / tf.maximum(1.0, tf.cast(total, tf.float32) - warm))
    return base * tf.where(step < warm, rising, after)


class AdamW(tf.Module):
    """torch.optim.AdamW (amsgrad off) over `variables`, weight decay where `decay` says."""

    def __init__(self, variables, decay, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=0.0, name="adamw"):
        super().__init__(name=name)
        self.variables_ = list(variables)
        self.decay = list(decay)
        self.beta_1, self.beta_2, self.epsilon, self.weight_decay = beta_1, beta_2, epsilon, weight_decay
        with self.name_scope:
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            self.m = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="m") for v in self.variables_]
            self.v = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="v") for v in self.variables_]

    def apply(self, grads, lr, copy=lambda variable: variable):
        """One step with `grads` (already clipped) at learning rate `lr`, on `copy(v)` of every variable v
        (under tf.distribute: one replica's copies)."""
        iterations = copy(self.iterations)
        iterations.assign_add(1)
        t = tf.cast(iterations, tf.float32)
        correction_1 = 1.0 - tf.pow(self.beta_1, t)
        root_correction_2 = tf.sqrt(1.0 - tf.pow(self.beta_2, t))
        for variable, grad, m, v, decay in zip(map(copy, self.variables_), grads, map(copy, self.m), map(copy, self.v),
                                               self.decay):
            if decay and self.weight_decay:
                variable.assign(variable * (1.0 - lr * self.weight_decay))
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
            v.assign(self.beta_2 * v + (1.0 - self.beta_2) * grad * grad)
            denominator = tf.sqrt(v) / root_correction_2 + self.epsilon
            variable.assign_sub((lr / correction_1) * m / denominator)


def clip_by_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: every gradient times min(1, max_norm / (global norm + 1e-6));
    (the scaled gradients, the norm before)."""
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
    scale = tf.minimum(1.0, max_norm / (norm + 1e-6))
    return [g * scale for g in grads], norm
