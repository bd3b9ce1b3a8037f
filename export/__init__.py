"""kzoo.export: one export path for every kzoo model dir (ALBERT, XLM-RoBERTa, XLM).

    from kzoo.export import export_savedmodel, export_tflite
    export_savedmodel("out/albert", "out/albert-sm")                  # out/albert-sm/1/saved_model.pb
    export_tflite("out/albert", "out/albert.tflite", quantize="int8")  # + albert.tflite.report.json

Nothing here knows a family. An export reads what the Keras model declares (its int32 [B, S] inputs,
its outputs) and what the model dir's task declares (kzoo.tasks: its text signature), and builds the
same functions for all of them:

  ids signature  (`serving_default`)  the model's inputs -> the model's outputs ("logits" when the
                 model has a single output, else its own names);
  text signature (`serve_text`)       strings -> the tokenizer's `tf_encode` inside the graph -> the
                 model -> the task's text signature.

    common.py      the model, its signatures' inputs, length buckets, the tokenizer in the graph
    data.py        calibration and evaluation texts, and batches of ids from them
    check.py       the parity check and report both formats share (against Keras fp32)
    savedmodel.py  `kzoo export savedmodel`
    tflite.py      `kzoo export tflite`; tflite_model.py reads and repairs .tflite flatbuffers
The on-disk layout is kzoo.io.layout's, which kzoo.runtime reads.
"""

from __future__ import annotations

from kzoo.export.common import ExportError

__all__ = ["ExportError", "export_savedmodel", "export_tflite"]


def export_savedmodel(model_dir, out, **kwargs):
    """See `kzoo.export.savedmodel.export_savedmodel`."""
    from kzoo.export.savedmodel import export_savedmodel as export

    return export(model_dir, out, **kwargs)


def export_tflite(model_dir, out, **kwargs):
    """See `kzoo.export.tflite.export_tflite`."""
    from kzoo.export.tflite import export_tflite as export

    return export(model_dir, out, **kwargs)
