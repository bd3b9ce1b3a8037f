"""Functions traced once, quietly.

kzoo builds one `tf.function` per object (a runner's model, a tokenizer's graph) with an input signature
that takes any batch, so each is traced exactly once. TensorFlow counts the traces of every function made
from the same code together and, from the fifth object of a process on, warns "triggered tf.function
retracing": a warning that says nothing here, so the one trace runs with TensorFlow's logger quiet.
"""

from __future__ import annotations

import threading

_QUIET = threading.Lock()  # the logger's level is global: one trace at a time changes it


def traced(function, input_signature):
    """`tf.function(function, input_signature)` traced now: its ConcreteFunction."""
    import tensorflow as tf

    compiled = tf.function(function, input_signature=input_signature, autograph=False)
    logger = tf.get_logger()
    with _QUIET:
        level = logger.level
        logger.setLevel("ERROR")
        try:
            return compiled.get_concrete_function()
        finally:
            logger.setLevel(level)
