"""One benchmark variant in its own process, driven by run.py over stdin/stdout (JSON lines).

    python benchmarks/worker.py VARIANT PRESET CACHE_DIR

On start it imports its framework, warms the framework up (the baseline), loads the model and
reports the load's time and peak RSS above that baseline. Then it answers commands:

    {"cmd": "shape", "batch": B, "seq": S, "warmup": N}  -> inputs of that shape; first call (XLA
                                                           compiles here) and N warm-up runs
    {"cmd": "time", "n": K, "warm": W}                   -> W runs (timed apart: "cold", the first after
                                                           idling) then K timed runs
    {"cmd": "dump", "path": P}                           -> outputs on the current inputs, to P (.npz)
    {"cmd": "exit"}                                      -> final memory figures

Only one worker computes at a time: run.py sends the next command when the last one answered, so the
variants take turns (interleaved) instead of competing for the two cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from prepare import paths  # noqa: E402

VARIANTS = ("torch", "ort-fp32", "ort-int8", "kzoo-function", "kzoo-xla", "savedmodel",
            "tflite-fp32", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8")
TF_VARIANTS = ("kzoo-function", "kzoo-xla", "savedmodel")


class Variant:
    def __init__(self, preset, cache):
        self.preset, self.p = preset, paths(cache, preset)

    def warm_framework(self):
        """Imports and one-time framework costs: what the load's memory is measured above."""

    def load(self):
        raise NotImplementedError

    def set_inputs(self, inputs):
        self.inputs = inputs

    def run(self):
        """One forward pass on the current inputs; returns {name: numpy array}."""
        raise NotImplementedError


class Torch(Variant):
    def warm_framework(self):
        import torch
        import transformers  # noqa: F401

        torch.set_num_threads(common.THREADS)
        torch.set_num_interop_threads(1)
        self.torch = torch

    def load(self):
        import transformers

        cls = getattr(transformers, common.MODELS[self.preset]["torch_class"])
        self.model = cls.from_pretrained(str(self.p["reference"])).eval()

    def set_inputs(self, inputs):
        self.feed = {k: self.torch.from_numpy(v) for k, v in common.torch_inputs(self.preset, inputs).items()}

    def run(self):
        with self.torch.inference_mode():
            out = self.model(**self.feed)
        result = {"sequence_output": out.last_hidden_state.numpy()}
        if getattr(out, "pooler_output", None) is not None:
            result["pooled_output"] = out.pooler_output.numpy()
        return result


class Ort(Variant):
    def __init__(self, preset, cache, int8):
        super().__init__(preset, cache)
        self.file = self.p["onnx-int8" if int8 else "onnx"]

    def warm_framework(self):
        import onnxruntime  # noqa: F401

    def load(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = common.THREADS
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.file), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def set_inputs(self, inputs):
        self.feed = common.torch_inputs(self.preset, inputs)

    def run(self):
        return dict(zip(self.outputs, self.session.run(None, self.feed)))


class _TF(Variant):
    def warm_framework(self):
        import kzoo  # noqa: F401  (sets the Keras backend)
        from kzoo.cli.output import import_tensorflow_quietly

        import_tensorflow_quietly()
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(common.THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.tf = tf
        # TF's first Keras build and trace cost ~150 MB once, whatever the model: framework baseline.
        from kzoo.models import build_model

        tiny = build_model({"architecture": "albert", "task": "backbone", "backbone": {
            "vocabulary_size": 10, "num_layers": 1, "num_heads": 1, "hidden_dim": 4, "intermediate_dim": 4,
            "embedding_dim": 4}})
        ones = {k: tf.ones((1, 4), tf.int32) for k in ("token_ids", "segment_ids", "padding_mask")}
        tf.function(lambda x: tiny(x, training=False))(ones)

    def set_inputs(self, inputs):
        names = self.input_names
        self.feed = {k: self.tf.constant(inputs[k]) for k in names}


class Kzoo(_TF):
    def __init__(self, preset, cache, jit_compile):
        super().__init__(preset, cache)
        self.jit_compile = jit_compile

    def load(self):
        import kzoo

        self.model = kzoo.load(self.p["convert"])
        self.input_names = sorted(self.model.input)
        model = self.model
        self.fn = self.tf.function(lambda x: model(x, training=False), jit_compile=self.jit_compile)

    def run(self):
        return {k: v.numpy() for k, v in self.fn(self.feed).items()}


class SavedModel(_TF):
    def load(self):
        from kzoo.io.layout import savedmodel_version_dir

        self.loaded = self.tf.saved_model.load(str(savedmodel_version_dir(self.p["savedmodel"])))
        self.fn = self.loaded.signatures["serving_default"]
        self.input_names = sorted(self.fn.structured_input_signature[1])

    def run(self):
        return {k: v.numpy() for k, v in self.fn(**self.feed).items()}


class TFLite(Variant):
    def __init__(self, preset, cache, step):
        super().__init__(preset, cache)
        self.file = self.p[step]

    def warm_framework(self):
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401

    def load(self):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(self.file), num_threads=common.THREADS)
        runner = self.interpreter.get_signature_runner("serving_default")
        self.in_details = runner.get_input_details()
        self.out_details = runner.get_output_details()
        del runner  # it holds references to the interpreter's buffers, which block resizing

    def set_inputs(self, inputs):
        it = self.interpreter
        for name, d in self.in_details.items():
            it.resize_tensor_input(d["index"], inputs[name].shape, strict=False)
        it.allocate_tensors()
        self.feed = {d["index"]: inputs[name] for name, d in self.in_details.items()}

    def run(self):
        it = self.interpreter
        for index, value in self.feed.items():
            it.set_tensor(index, value)
        it.invoke()
        return {name: it.get_tensor(d["index"]) for name, d in self.out_details.items()}


def make(variant, preset, cache):
    if variant == "torch":
        return Torch(preset, cache)
    if variant in ("ort-fp32", "ort-int8"):
        return Ort(preset, cache, int8=variant == "ort-int8")
    if variant in ("kzoo-function", "kzoo-xla"):
        return Kzoo(preset, cache, jit_compile=variant == "kzoo-xla")
    if variant == "savedmodel":
        return SavedModel(preset, cache)
    if variant.startswith("tflite-"):
        return TFLite(preset, cache, variant)
    raise SystemExit(f"unknown variant {variant!r}")


def main():
    variant, preset, cache = sys.argv[1:4]
    common.set_thread_env()
    # The protocol gets the real stdout; anything a library prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(**msg):
        proto.write(json.dumps(msg) + "\n")

    v = make(variant, preset, cache)
    try:
        v.warm_framework()
        base = common.reset_peak()
        t0 = time.perf_counter()
        v.load()
        load_s = time.perf_counter() - t0
        send(ok=True, load_s=load_s, baseline_rss=base, load_peak=common.hwm() - base, load_rss=common.rss() - base)
    except Exception as e:  # noqa: BLE001
        send(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        try:
            if cmd == "shape":
                import numpy as np  # noqa: F401

                v.set_inputs(common.make_inputs(preset, msg["batch"], msg["seq"]))
                t0 = time.perf_counter()
                v.run()
                first = time.perf_counter() - t0
                for _ in range(msg.get("warmup", 2)):
                    v.run()
                send(ok=True, first_s=first, rss=common.rss() - base, peak=common.hwm() - base)
            elif cmd == "time":
                times = []
                for _ in range(msg.get("warm", 0) + msg.get("n", 1)):
                    t0 = time.perf_counter()
                    v.run()
                    times.append(time.perf_counter() - t0)
                warm = msg.get("warm", 0)
                send(ok=True, cold=times[:warm], times=times[warm:])
            elif cmd == "dump":
                import numpy as np

                np.savez(msg["path"], **v.run())
                send(ok=True)
            elif cmd == "exit":
                send(ok=True, peak=common.hwm() - base, rss=common.rss() - base)
                break
            else:
                send(ok=False, error=f"unknown command {cmd!r}")
        except Exception as e:  # noqa: BLE001
            send(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()
