"""One callable over every form a kzoo model takes: a model dir, a SavedModel export, a .tflite export.

    from kzoo import runtime
    run = runtime.load("out/albert.tflite")       # or "out/albert-sm" (SavedModel), or "out/albert"
    out = run(tokenizer(["Hello [MASK]."]))       # ids in: dict of int32 [B, S] -> dict of numpy
    out = run(["Hello [MASK]."])                  # text in, when the export has a text signature

`kzoo.pipeline("fill-mask", path)` / `FillMask(path)` accept any of the three paths. The tokenizer of
an export is the copy `kzoo export` stores with it (config.json + tokenizer files):

    SavedModel   OUT/1/assets.extra/kzoo/
    .tflite      OUT.tflite.kzoo/   (beside the file)

or a model dir passed as `tokenizer=`. TFLite runs on ai-edge-litert (LiteRT) signature runners, with
tf-text's custom ops registered (a `--with-tokenizer` model needs them; others ignore them).
This module never imports kzoo.export: running an export needs none of the export machinery.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kzoo.errors import KzooError

SIDE_DIR = "kzoo"  # the sidecar dir's name inside a SavedModel's assets.extra/
IDS_SIGNATURE = "serving_default"
TEXT_SIGNATURE = "serve_text"


class RunnerError(KzooError):
    """A one-line, user-facing problem with running an export."""


def kind_of(path) -> str:
    """"tflite", "savedmodel" or "modeldir" (by what is on disk)."""
    path = Path(path)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise RunnerError(f"{path}: no such .tflite file")
        return "tflite"
    if path.is_dir() and ((path / "saved_model.pb").is_file() or _versions(path)):
        return "savedmodel"
    return "modeldir"  # (a missing or wrong path gets the model dir's own one-line error)


def _versions(path: Path):
    return sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                  key=lambda p: int(p.name))


def savedmodel_version_dir(path) -> Path:
    """The dir holding saved_model.pb: `path` itself, or its highest numbered version (Serving layout)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = _versions(path)
    if not versions:
        raise RunnerError(f"{path}: no saved_model.pb (nor a numbered version dir holding one)")
    return versions[-1]


def tokenizer_dir(path) -> Path:
    """Where the tokenizer of `path` lives: the model dir itself, or the copy stored with an export."""
    kind = kind_of(path)
    if kind == "modeldir":
        return Path(path)
    if kind == "savedmodel":
        return savedmodel_version_dir(path) / "assets.extra" / SIDE_DIR
    return Path(f"{path}.kzoo")


def load_model(path):
    """What a pipeline runs: the Keras model of a model dir (as `kzoo.load`), a Runner for an export."""
    if kind_of(path) == "modeldir":
        from kzoo import modeldir

        return modeldir.load(path)
    return load(path)


def load(path, *, num_threads=None) -> "Runner":
    """A Runner for a model dir, a SavedModel dir or a .tflite file."""
    kind = kind_of(path)
    return {"modeldir": KerasRunner, "savedmodel": SavedModelRunner, "tflite": TFLiteRunner}[kind](
        path, num_threads=num_threads)


class Runner:
    """`runner(inputs)`: a dict of int32 [B, S] arrays -> the model's outputs (dict of numpy);
    `runner(texts)`: str or list of str -> the export's text signature (when it has one).

    `predict_on_batch(inputs)` answers like Keras' (the array for a single "logits" output), so a
    Runner stands in for the Keras model in kzoo's pipelines. `kzoo_config` is the model dir's config.
    """

    kind = "?"
    input_names: list = []  # the ids signature's inputs; [] when there is none
    output_names: list = []
    takes_text = False

    def __init__(self, path, num_threads=None):
        self.path = Path(path)
        self.kzoo_config = _read_config(tokenizer_dir(path) / "config.json")

    def __call__(self, inputs):
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
            if not self.takes_text:
                raise RunnerError(f"{self.path}: takes ids, not text (export it with a text signature, or "
                                  "tokenize first: kzoo.load_tokenizer)")
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            return self._run_text(np.asarray(texts, dtype=object))
        if not self.input_names:
            raise RunnerError(f"{self.path}: takes text only (exported --with-tokenizer); call it with strings")
        batch = {k: np.asarray(v) for k, v in dict(inputs).items()}
        if "token_ids" not in batch:
            raise RunnerError(f"expected token_ids among the inputs, got {sorted(batch)}")
        zeros = np.zeros_like(batch["token_ids"], dtype=np.int32)
        # Inputs the caller's tokenizer does not make (e.g. XLM's lang_ids) are 0; extras are dropped.
        batch = {name: np.asarray(batch.get(name, zeros), np.int32) for name in self.input_names}
        return self._run_ids(batch)

    def predict_on_batch(self, inputs):
        out = self(inputs)
        return out["logits"] if list(out) == ["logits"] else out

    def _run_ids(self, batch):
        raise NotImplementedError

    def _run_text(self, texts):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.path} inputs={self.input_names} outputs={self.output_names}>"


def _read_config(file: Path):
    try:
        return json.loads(file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class KerasRunner(Runner):
    """A kzoo model dir, run by Keras."""

    kind = "keras"

    def __init__(self, path, num_threads=None):
        from kzoo import modeldir

        self.path = Path(path)
        self.model = modeldir.load(path)
        self.kzoo_config = self.model.kzoo_config
        self.input_names = sorted(self.model.input)
        out = self.model.output
        self.output_names = sorted(out) if isinstance(out, dict) else ["logits"]

    def _run_ids(self, batch):
        out = self.model(batch, training=False)
        out = out if isinstance(out, dict) else {"logits": out}
        return {k: np.asarray(v) for k, v in out.items()}


class SavedModelRunner(Runner):
    """A SavedModel export (kzoo export savedmodel), run by TensorFlow (XLA-compiled signatures)."""

    kind = "savedmodel"

    def __init__(self, path, num_threads=None):
        super().__init__(path)
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops that serve_text uses)

        self._tf = tf
        self.version_dir = savedmodel_version_dir(path)
        try:
            self._loaded = tf.saved_model.load(str(self.version_dir))
        except Exception as e:  # TF's messages run to pages; name the dir and the gist
            raise RunnerError(f"{self.version_dir}: could not load the SavedModel ({str(e).splitlines()[0]})") from None
        signatures = self._loaded.signatures
        if IDS_SIGNATURE in signatures:
            fn = signatures[IDS_SIGNATURE]
            self.input_names = sorted(fn.structured_input_signature[1])
            self.output_names = sorted(fn.structured_outputs)
        self.takes_text = TEXT_SIGNATURE in signatures

    def _run_ids(self, batch):
        fn = self._loaded.signatures[IDS_SIGNATURE]
        out = fn(**{k: self._tf.constant(v) for k, v in batch.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _run_text(self, texts):
        out = self._loaded.signatures[TEXT_SIGNATURE](text=self._tf.constant(texts.astype(str).tolist()))
        return {k: v.numpy() for k, v in out.items()}


class TFLiteRunner(Runner):
    """A .tflite export (kzoo export tflite), run by LiteRT (ai-edge-litert) signature runners.

    Inputs of any batch size and length: the signature runner resizes the [-1, -1] inputs.
    """

    kind = "tflite"

    def __init__(self, path, num_threads=None, model_content=None):
        if model_content is None:
            super().__init__(path)
        else:  # in-memory (export's own checks)
            self.path, self.kzoo_config = Path(str(path)), {}
        self.interpreter = make_interpreter(model_path=None if model_content else str(path),
                                            model_content=model_content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if IDS_SIGNATURE in signatures:
            self.input_names = sorted(signatures[IDS_SIGNATURE]["inputs"])
            self.output_names = sorted(signatures[IDS_SIGNATURE]["outputs"])
        self.takes_text = TEXT_SIGNATURE in signatures
        self._runners = {}

    def _signature(self, key):
        if key not in self._runners:
            self._runners[key] = self.interpreter.get_signature_runner(key)
        return self._runners[key]

    def _run_ids(self, batch):
        return {k: np.asarray(v) for k, v in self._signature(IDS_SIGNATURE)(**batch).items()}

    def _run_text(self, texts):
        out = self._signature(TEXT_SIGNATURE)(text=np.asarray([t.encode("utf-8") for t in texts], dtype=object))
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
