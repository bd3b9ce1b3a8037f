"""kzoo.io.keras_internals: every private Keras API kzoo uses is there and does what kzoo needs.

If Keras changes under the pinned version, these fail loudly (not a model that loads garbage)."""

import keras
import numpy as np
from keras.src.saving import saving_lib

from kzoo.io import keras_internals


def test_the_pinned_keras_has_everything():
    assert keras.__version__ == keras_internals.KERAS_VERSION
    assert keras_internals.check() == []


def tiny():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(5, name="d")(keras.layers.Dense(4, name="c")(inputs)))


def test_blockwise_save_and_adopting_load_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny()
    model.save_weights(tmp_path / "keras.weights.h5")
    keras_internals.save_weights_blockwise(model, tmp_path / "blocks.weights.h5", min_bytes=1, block_bytes=8)
    for file in ("keras.weights.h5", "blocks.weights.h5"):
        with keras_internals.deferred_variables():
            again = tiny()
        assert all(keras_internals.is_deferred(v) for v in again.variables)
        keras_internals.load_weights_adopting(again, tmp_path / file)
        for a, b in zip(model.variables, again.variables):
            assert a.path == b.path and np.array_equal(np.asarray(a), np.asarray(b))
    # the patches are gone again: Keras' own methods
    assert saving_lib.H5IOStore.__setitem__.__module__ == saving_lib.__name__
    assert saving_lib.H5IOStore.__getitem__.__module__ == saving_lib.__name__


def test_a_deferred_variable_takes_the_tensor_it_is_given():
    with keras_internals.deferred_variables():
        model = tiny()
    kernel = model.get_layer("c").kernel
    keras_internals.initialize_from(kernel, np.full((3, 4), 2.0, "float32"))
    keras_internals.initialize_rest(model.variables)
    assert np.array_equal(np.asarray(kernel), np.full((3, 4), 2.0))
    assert not any(keras_internals.is_deferred(v) for v in model.variables)


def test_first_call_outputs_are_the_functional_graphs():
    inputs = keras.Input((3,))
    layer = keras.layers.Dense(2)
    out = layer(inputs)
    keras.Model(inputs, out)
    layer(keras.Input((3,)))  # a second call: a user's graph
    (first,) = keras_internals.first_call_outputs(layer)
    assert first is out
