"""The model dir round-trips exactly: every weight equals the checkpoint's tensor bit for bit."""

import json

import h5py
import numpy as np
from safetensors.numpy import load_file

import kzoo
from kzoo.io import keras_internals
from kzoo.converters.convert import convert
from reference import TINY_ALBERT, make_checkpoint


def test_round_trip_is_exact(tmp_path):
    # Embedding 5000 x 16 and FFN 32 x 2048: over 2**16 elements, so conversion and loading take
    # their zero-copy paths (aligned reads and transposes adopted by TF, h5 read_direct).
    config = {**TINY_ALBERT, "vocab_size": 5000, "intermediate_size": 2048}
    src = make_checkpoint(tmp_path / "ref", "AlbertForPreTraining", config)
    convert(src, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == "albert" and config["task"] == "pretraining"

    model = kzoo.load(tmp_path / "out")
    weights = {v.path: np.asarray(v) for v in model.weights}
    tensors = load_file(src / "model.safetensors")
    assert np.array_equal(weights["token_embedding/embeddings"], tensors["albert.embeddings.word_embeddings.weight"])
    assert np.array_equal(weights["group_0_inner_1/intermediate/kernel"],
                          tensors["albert.encoder.albert_layer_groups.0.albert_layers.1.ffn.weight"].T)
    assert np.array_equal(weights["mlm_bias/bias"], tensors["predictions.bias"])
    assert np.array_equal(weights["sop_classifier/kernel"], tensors["sop_classifier.classifier.weight"].T)
    assert model.count_params() == sum(t.size for t in tensors.values())

    again = kzoo.load(tmp_path / "out")
    for a, b in zip(model.weights, again.weights):
        assert a.path == b.path and np.array_equal(np.asarray(a), np.asarray(b))


def test_as_tensor_adopts_only_what_dlpack_can_carry():
    import ml_dtypes

    from kzoo.io.arrays import aligned_empty
    from kzoo.io.arrays import as_tensor

    for dtype in ("float32", "int64", ml_dtypes.bfloat16):  # bfloat16 (a model saved under that policy): copied
        value = aligned_empty((2**16 + 3,), dtype)
        value[...] = np.arange(value.size) % 251
        tensor = as_tensor(value, dtype)
        assert tensor.shape == value.shape and np.array_equal(np.asarray(tensor), value)
    strided = np.arange(2**18, dtype=np.float32)[::2]  # not contiguous: copied
    assert np.array_equal(np.asarray(as_tensor(strided, "float32")), strided)


def test_blockwise_save_writes_the_file_keras_writes(tmp_path):
    # kzoo saves large variables in row blocks (a lower conversion peak); force it for every
    # float32 variable, with blocks of a few rows, and compare with Keras' own file.
    src = make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM", TINY_ALBERT)
    convert(src, tmp_path / "out")
    model = kzoo.load(tmp_path / "out")
    model.save_weights(tmp_path / "keras.weights.h5")
    keras_internals.save_weights_blockwise(model, tmp_path / "blocks.weights.h5", min_bytes=1, block_bytes=100)

    def datasets(file):
        found = {}
        with h5py.File(file) as f:
            f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
        return found

    keras_file, blocks = datasets(tmp_path / "keras.weights.h5"), datasets(tmp_path / "blocks.weights.h5")
    assert sorted(keras_file) == sorted(blocks) and len(blocks) == len(model.weights)
    for name, value in keras_file.items():
        assert value.dtype == blocks[name].dtype and np.array_equal(value, blocks[name]), name
    from keras.src.saving import saving_lib
    assert saving_lib.H5IOStore.__setitem__.__module__ == saving_lib.__name__  # Keras' own again


def test_keras_fit_trains_every_weight(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    src = make_checkpoint(tmp_path / "ref", "AlbertForSequenceClassification", TINY_ALBERT)
    convert(src, tmp_path / "out")
    model = kzoo.load(tmp_path / "out")
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, 99, (8, 12)).astype("int32"),
         "segment_ids": np.zeros((8, 12), "int32"), "padding_mask": np.ones((8, 12), "int32")}
    y = rng.integers(0, 2, (8,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {v.path: np.asarray(v).copy() for v in model.trainable_weights}
    loss_before = model.evaluate(x, y, verbose=0)  # no dropout: a fair comparison
    model.fit(x, y, epochs=10, batch_size=4, verbose=0)
    assert model.evaluate(x, y, verbose=0) < loss_before
    assert len(before) == len(model.weights)  # everything loaded is trainable
    unchanged = [v.path for v in model.trainable_weights if np.array_equal(before[v.path], np.asarray(v))]
    # A key bias adds q·b to every score of a query: softmax ignores it, its gradient is 0.
    assert all(p.endswith("/key/bias") for p in unchanged), unchanged
