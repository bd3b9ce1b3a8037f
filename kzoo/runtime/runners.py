"""The three runners behind `kzoo.runtime.load`: Keras (a model dir), SavedModel, TFLite (LiteRT)."""

from __future__ import annotations

import numpy as np

from kzoo.io import layout
from kzoo.runtime import Runner, RunnerError


class KerasRunner(Runner):
    """A kzoo model dir (or a Keras model in memory), run by Keras."""

    kind = "keras"

    def __init__(self, path, num_threads=None, model=None, config=None):
        if model is None:
            from kzoo.io import modeldir

            model = modeldir.load(path)
        from kzoo.models import output_names

        super().__init__(path if path is not None else model.name,
                         config if config is not None else getattr(model, "kzoo_config", {}))
        self.model = model
        self.input_names = sorted(model.input)
        self.output_names = output_names(model)
        self._head = None  # the per-position head, cut out at the first call with positions

    def tokenizer(self):
        if self._tokenizer is None and not (self.path / "config.json").is_file():
            raise RunnerError("a Keras model in memory has no stored tokenizer: pass tokenizer=")
        return super().tokenizer()

    def _run_ids(self, batch):
        out = self.model.predict_on_batch(batch)
        out = out if isinstance(out, dict) else {"logits": out}
        return {k: np.asarray(v) for k, v in out.items()}

    def _run_at(self, batch, positions):
        """The backbone at every position, the head at `positions` only (XLM-R's 250k-wide decoder
        costs twice the backbone when run at every position)."""
        from kzoo.models.layers import per_position_head

        if not hasattr(self.model, "backbone"):
            return super()._run_at(batch, positions)
        if self._head is None:
            self._head = per_position_head(self.model) or False
        if self._head is False:
            return {}
        sequence = np.asarray(self.model.backbone.predict_on_batch(batch)["sequence_output"])
        gathered = sequence[np.arange(len(positions))[:, None], positions]  # [B, M, H]
        return {k: np.asarray(v) for k, v in self._head.predict_on_batch(gathered).items()}

    def backbone_outputs(self, inputs):
        backbone = getattr(self.model, "backbone", self.model)
        return {k: np.asarray(v) for k, v in backbone.predict_on_batch(self._ids(inputs)).items()}


class SavedModelRunner(Runner):
    """A SavedModel export (kzoo export savedmodel), run by TensorFlow (XLA-compiled signatures)."""

    kind = "savedmodel"

    def __init__(self, path, num_threads=None):
        super().__init__(path)
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops that serve_text uses)

        self._tf = tf
        self.version_dir = layout.savedmodel_version_dir(path)
        try:
            self._loaded = tf.saved_model.load(str(self.version_dir))
        except Exception as e:  # TF's messages run to pages; name the dir and the gist
            raise RunnerError(f"{self.version_dir}: could not load the SavedModel ({str(e).splitlines()[0]})") from None
        signatures = self._loaded.signatures
        if layout.IDS_SIGNATURE in signatures:
            fn = signatures[layout.IDS_SIGNATURE]
            self.input_names = sorted(fn.structured_input_signature[1])
            self.output_names = sorted(fn.structured_outputs)
        self.takes_text = layout.TEXT_SIGNATURE in signatures

    def _run_ids(self, batch):
        fn = self._loaded.signatures[layout.IDS_SIGNATURE]
        out = fn(**{k: self._tf.constant(v) for k, v in batch.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _run_text(self, texts):
        signature = self._loaded.signatures[layout.TEXT_SIGNATURE]
        out = signature(**{layout.TEXT_INPUT: self._tf.constant(texts.astype(str).tolist())})
        return {k: v.numpy() for k, v in out.items()}


class TFLiteRunner(Runner):
    """A .tflite export (kzoo export tflite), run by LiteRT (ai-edge-litert) signature runners.

    Inputs of any batch size and length: the signature runner resizes the [-1, -1] inputs.
    """

    kind = "tflite"

    def __init__(self, path, num_threads=None, model_content=None):
        super().__init__(path, config={} if model_content is not None else None)  # in memory: export's checks
        self.interpreter = make_interpreter(model_path=None if model_content else str(path),
                                            model_content=model_content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if layout.IDS_SIGNATURE in signatures:
            self.input_names = sorted(signatures[layout.IDS_SIGNATURE]["inputs"])
            self.output_names = sorted(signatures[layout.IDS_SIGNATURE]["outputs"])
        self.takes_text = layout.TEXT_SIGNATURE in signatures
        self._signatures = {}

    def _signature(self, key):
        if key not in self._signatures:
            self._signatures[key] = self.interpreter.get_signature_runner(key)
        return self._signatures[key]

    def _run_ids(self, batch):
        return {k: np.asarray(v) for k, v in self._signature(layout.IDS_SIGNATURE)(**batch).items()}

    def _run_text(self, texts):
        text = np.asarray([t.encode("utf-8") for t in texts], dtype=object)
        out = self._signature(layout.TEXT_SIGNATURE)(**{layout.TEXT_INPUT: text})
        return {k: np.asarray(v) for k, v in out.items()}


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
