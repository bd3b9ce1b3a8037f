"""The three runners behind `kzoo.runtime.load`: Keras (a model dir), SavedModel, TFLite (LiteRT)."""

from __future__ import annotations

import threading

import numpy as np

from kzoo.io import layout
from kzoo.traced import traced
from kzoo.runtime import Runner, RunnerError


class KerasRunner(Runner):
    """A kzoo model dir (or a Keras model in memory), run by Keras: each part (the model, its backbone,
    its per-position head) through one tf.function taking any batch size and length (one trace, no
    retracing per shape, safe to call from many threads)."""

    kind = "keras"

    def __init__(self, path, num_threads=None, model=None, config=None):
        if model is None:
            from kzoo.models import load_model

            model = load_model(path)
        from kzoo.models import output_names

        super().__init__(path, config if config is not None else getattr(model, "kzoo_config", None) or _config_of(model))
        self.model = model
        self.input_names = sorted(model.input)
        self._rank = len(model.input[self.input_names[0]].shape)
        self.output_names = output_names(model)
        self._functions = {}

    def _function(self, part):
        """The tf.function of `part`: "model", "backbone" or "head" (the per-position head; None when
        the model has no per-position output)."""
        with self._lock:
            if part not in self._functions:
                self._functions[part] = self._trace(part)
        return self._functions[part]

    def _trace(self, part):
        import tensorflow as tf

        from kzoo.models import outputs
        from kzoo.models.layers import per_position_head

        model = self.model.backbone if part == "backbone" else self.model
        rank = len(model.input["token_ids"].shape)  # ([batch, choices, length]: a multiple-choice model)
        ids = {name: tf.TensorSpec([None] * rank, tf.int32, name=name) for name in self.input_names}
        if part == "head":
            head = per_position_head(self.model)
            if head is None:
                return None
            hidden = tf.TensorSpec([None, None, self.model.backbone.hidden_dim], tf.float32)
            return traced(lambda x: head(x, training=False), [hidden])
        return traced(lambda batch: outputs(model, batch), [ids])

    def _run_ids(self, batch):
        return {k: v.numpy() for k, v in self._function("model")(batch).items()}

    def _run_at(self, batch, positions):
        """The backbone at every position, the head at `positions` only (XLM-R's 250k-wide decoder
        costs twice the backbone when run at every position)."""
        if not hasattr(self.model, "backbone"):
            return super()._run_at(batch, positions)
        head = self._function("head")
        if head is None:
            return {}
        sequence = self._function("backbone")(batch)["sequence_output"].numpy()
        gathered = sequence[np.arange(len(positions))[:, None], positions]  # [B, M, H]
        return {k: v.numpy() for k, v in head(gathered).items()}

    def backbone_outputs(self, inputs):
        part = "backbone" if hasattr(self.model, "backbone") else "model"
        return {k: v.numpy() for k, v in self._function(part)(self._ids(inputs)).items()}


def _config_of(model):
    """What a kzoo model built in memory (no model dir) says of itself: its family and backbone config."""
    from kzoo.families import FAMILIES

    backbone = getattr(model, "backbone", model)
    for family in FAMILIES.values():
        if isinstance(backbone, family.backbone_class()):
            return {"architecture": family.name, "backbone": backbone.get_config()}
    return {}


class SavedModelRunner(Runner):
    """A SavedModel export (kzoo export savedmodel), run by TensorFlow (XLA-compiled signatures)."""

    kind = "savedmodel"

    def __init__(self, path, num_threads=None):
        super().__init__(path)
        import tensorflow as tf

        try:  # registers the tokenizer ops serve_text uses; an ids-only export needs none
            import tensorflow_text  # noqa: F401
        except ImportError:
            pass
        self._tf = tf
        self.version_dir = layout.savedmodel_version_dir(path)
        try:
            self._loaded = tf.saved_model.load(str(self.version_dir))
        except Exception as e:  # TF's messages run to pages; name the dir and the gist
            hint = " (its serve_text needs tensorflow-text's ops: pip install tensorflow-text)" \
                if "TFText" in str(e) else ""
            raise RunnerError(f"{self.version_dir}: could not load the SavedModel ({str(e).splitlines()[0]}){hint}") \
                from None
        signatures = self._loaded.signatures
        if layout.IDS_SIGNATURE in signatures:
            fn = signatures[layout.IDS_SIGNATURE]
            self.input_names = sorted(fn.structured_input_signature[1])
            self.output_names = sorted(fn.structured_outputs)
            self._rank = fn.structured_input_signature[1][self.input_names[0]].shape.rank
        self.takes_text = layout.TEXT_SIGNATURE in signatures
        if self.takes_text:
            self.text_output_names = sorted(signatures[layout.TEXT_SIGNATURE].structured_outputs)
            self.text_input_names = tuple(signatures[layout.TEXT_SIGNATURE].structured_input_signature[1])

    def _run_ids(self, batch):
        fn = self._loaded.signatures[layout.IDS_SIGNATURE]
        out = fn(**{k: self._tf.constant(v) for k, v in batch.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _run_text(self, texts):
        signature = self._loaded.signatures[layout.TEXT_SIGNATURE]
        out = signature(**{name: self._tf.constant(value, self._tf.string) for name, value in texts.items()})
        return {k: v.numpy() for k, v in out.items()}


class TFLiteRunner(Runner):
    """A .tflite export (kzoo export tflite), run by LiteRT (ai-edge-litert) signature runners.

    Inputs of any batch size and length: the signature runner resizes the [-1, -1] inputs. A LiteRT
    interpreter is not thread-safe, so each thread gets its own (the file's pages are shared); one
    that failed is replaced, as its error reporter would repeat the old message in every later one.
    """

    kind = "tflite"

    def __init__(self, path, num_threads=None, model_content=None):
        super().__init__(path, config={} if model_content is not None else None)  # in memory: export's checks
        self._source = dict(model_path=None if model_content else str(path), model_content=model_content,
                            num_threads=num_threads)
        self._local = threading.local()
        signatures = self.interpreter.get_signature_list()  # (loads it now: a bad file fails here)
        _first_allocation_quietly(self.interpreter)
        if layout.IDS_SIGNATURE in signatures:
            self.input_names = sorted(signatures[layout.IDS_SIGNATURE]["inputs"])
            self.output_names = sorted(signatures[layout.IDS_SIGNATURE]["outputs"])
            details = self.interpreter.get_signature_runner(layout.IDS_SIGNATURE).get_input_details()
            self._rank = len(details[self.input_names[0]]["shape_signature"])
        self.takes_text = layout.TEXT_SIGNATURE in signatures
        if self.takes_text:
            self.text_output_names = sorted(signatures[layout.TEXT_SIGNATURE]["outputs"])
            self.text_input_names = tuple(signatures[layout.TEXT_SIGNATURE]["inputs"])

    @property
    def interpreter(self):
        """This thread's interpreter."""
        if getattr(self._local, "interpreter", None) is None:
            self._local.interpreter = make_interpreter(**self._source)
            self._local.signatures = {}
        return self._local.interpreter

    def _call(self, key, **inputs):
        interpreter = self.interpreter
        if key not in self._local.signatures:
            self._local.signatures[key] = interpreter.get_signature_runner(key)
        try:
            return {k: np.asarray(v) for k, v in self._local.signatures[key](**inputs).items()}
        except (RuntimeError, ValueError) as e:
            self._local.interpreter = None  # a fresh one next time: this one's reporter keeps the message
            raise RunnerError(f"{self.path}: LiteRT could not run it ({_last_line(e)})") from None

    def _run_ids(self, batch):
        return self._call(layout.IDS_SIGNATURE, **batch)

    def _run_text(self, texts):
        return self._call(layout.TEXT_SIGNATURE, **{name: np.asarray([t.encode("utf-8") for t in value], dtype=object)
                                                     for name, value in texts.items()})


_FIRST_ALLOCATION = threading.Lock()
_allocated = []


def _first_allocation_quietly(interpreter):
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to fd 2 once per process,
    at the first allocation of any interpreter: make that one without the notice (errors are the run's)."""
    with _FIRST_ALLOCATION:
        if _allocated:
            return
        from kzoo.io.stderr import native_quiet

        with native_quiet():
            try:
                interpreter.allocate_tensors()
            except (RuntimeError, ValueError):
                pass
        _allocated.append(True)


def _last_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def make_interpreter(model_path=None, model_content=None, num_threads=None):
    """A LiteRT interpreter with tf-text's TFLite kernels registered (FastSentencepieceTokenize, ...)."""
    import tensorflow_text
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    try:
        return InterpreterWithCustomOps(
            custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
            model_path=model_path, model_content=model_content, num_threads=num_threads,
        )
    except (ValueError, RuntimeError) as e:
        raise RunnerError(f"{model_path or 'model'}: LiteRT cannot load it ({str(e).splitlines()[0]})") from None
