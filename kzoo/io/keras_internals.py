"""Every use of Keras' private API in kzoo, in one place. Written against keras==3.15.1 (pinned).

Why each one is needed:
  * deferred variables (`StatelessScope`, `Variable._value` / `_initializer` / `_deferred_initialize`):
    a model is built without allocating its variables, and each variable is then created straight
    from its checkpoint tensor. Conversion and loading hold the weights once, not twice (random
    initial values beside the real ones).
  * `H5IOStore.__getitem__` / `__setitem__`, swapped for the duration of a `load_weights` /
    `save_weights` call: large datasets are read into aligned arrays TF adopts without a copy, and
    large variables are written in row blocks (Keras turns each whole variable into a numpy array
    first). Together: loading 1.38x -> 1.01x the weights, conversion 2.0x -> 1.02x.
  * `Layer._inbound_nodes`: the outputs of a layer's first call in a functional model, to cut a
    task model at its backbone's sequence output (a per-position head run at a few positions).
  * `Layer._flatten_layers`: every layer inside a model (Keras has no public recursive listing), to
    find the LayerNorm weights Trainer's weight decay leaves out.

`check()` lists what is missing when Keras changes under these; `tests/io/test_keras_internals.py`
fails loudly on it.
"""

from __future__ import annotations

import contextlib
import threading
import warnings

import keras
import numpy as np
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.saving import saving_lib

from kzoo.io.arrays import ADOPT_MIN_SIZE, aligned_empty, as_tensor

KERAS_VERSION = "3.15.1"


def check() -> list:
    """What this module relies on and the installed Keras lacks ([] when all is there)."""
    problems = [] if keras.__version__ == KERAS_VERSION else [f"keras {keras.__version__} (written for {KERAS_VERSION})"]
    variable = keras.Variable
    for owner, names in [(variable, ("_deferred_initialize",)),
                         (saving_lib.H5IOStore, ("__getitem__", "__setitem__", "_create_h5_group")),
                         (saving_lib, ("safe_get_h5_dataset",)),
                         (global_state, ("set_global_attribute",))]:
        problems += [f"{getattr(owner, '__name__', owner)}.{n}" for n in names if not hasattr(owner, n)]
    with deferred_variables():
        probe = keras.Variable(initializer="zeros", shape=(2,))
    for name in ("_value", "_initializer"):
        if not hasattr(probe, name):
            problems.append(f"Variable.{name}")
    initialize_from(probe, np.ones(2, "float32"))
    if not np.array_equal(np.asarray(probe), np.ones(2)):
        problems.append("a deferred variable did not take its initial tensor")
    layer, inputs = keras.layers.Dense(1), keras.Input((1,))
    keras.Model(inputs, layer(inputs))
    if not getattr(layer, "_inbound_nodes", None) or not hasattr(layer._inbound_nodes[0], "outputs"):
        problems.append("Layer._inbound_nodes[0].outputs")
    if not hasattr(layer, "_flatten_layers"):
        problems.append("Layer._flatten_layers")
    clear_uninitialized()
    return problems


# --- deferred variables -------------------------------------------------------------------------


@contextlib.contextmanager
def deferred_variables():
    """Models built inside have no values yet: `initialize_from` creates each one from a tensor."""
    with StatelessScope(initialize_variables=False):
        yield


def is_deferred(variable) -> bool:
    return variable._value is None


def initialize_from(variable, tensor):
    """Creates a deferred variable from `tensor` (adopted, not copied); assigns otherwise."""
    if variable._value is None:
        variable._initializer = lambda shape, dtype: tensor
        variable._deferred_initialize()
        variable._initializer = None
    else:
        variable.assign(tensor)


def initialize_rest(variables):
    """Variables still deferred get their own initializer (their values were not in a file)."""
    for v in variables:
        if v._value is None:
            v._deferred_initialize()
    clear_uninitialized()


def clear_uninitialized():
    """Forgets Keras' list of deferred variables (all of them have values now)."""
    global_state.set_global_attribute("uninitialized_variables", [])


def load_weights_adopting(model, file):
    """`model.load_weights(file)` for a model built under `deferred_variables`.

    Keras assigns each stored array to its variable; here that assignment creates the variable
    instead, from the array itself, read into an aligned buffer TF adopts (no copy beside it).
    Loading peaks at about the weights' size: xlm-roberta-base 1.01x, 3.5x with random init.
    """

    def create_from(variable):
        def assign(value):
            del variable.assign  # the class's own method again
            value = np.asarray(value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"{variable.path}: shape {tuple(value.shape)} in the file, "
                                 f"{tuple(variable.shape)} in the model")
            initialize_from(variable, as_tensor(value, variable.dtype))

        return assign

    pending = [v for v in model.variables if v._value is None]
    for v in pending:
        v.assign = create_from(v)
    try:
        # (on a file that does not fit, Keras warns once per container before it raises: the error says it)
        with _aligned_h5_reads(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(file)
    finally:
        for v in pending:
            v.__dict__.pop("assign", None)
        initialize_rest(pending)  # not in the file (or loading failed): their own initializer


def save_weights_blockwise(model, file, min_bytes=32 << 20, block_bytes=8 << 20):
    """`model.save_weights(file)`, large float32 variables written in row blocks of `block_bytes`.

    Keras turns each variable into a numpy array before writing it (two transient copies), which
    made saving the peak of a conversion: 2.0x the checkpoint for xlm-roberta-large. In blocks it
    stays at the variables' own size (1.02x). Same file as Keras' own (tests compare them).
    """
    with _blockwise_h5_writes(min_bytes, block_bytes):
        model.save_weights(file)


# The two patches below swap a method on Keras' class, for every thread: one at a time.
_H5_PATCH = threading.RLock()


@contextlib.contextmanager
def _patched(name, method):
    store = saving_lib.H5IOStore
    with _H5_PATCH:
        original = getattr(store, name)
        setattr(store, name, method(original))
        try:
            yield
        finally:
            setattr(store, name, original)


def _aligned_h5_reads():
    def wrap(original):
        def getitem(self, key):
            import h5py

            value = saving_lib.safe_get_h5_dataset(self._h5_entry_group, key)
            if (not isinstance(value, h5py.Dataset) or value.dtype != np.float32 or "dtype" in value.attrs
                    or value.size < ADOPT_MIN_SIZE):
                return original(self, key)
            out = aligned_empty(value.shape, np.float32)
            value.read_direct(out)
            return out

        return getitem

    return _patched("__getitem__", wrap)


def _blockwise_h5_writes(min_bytes, block_bytes):
    def wrap(original):
        def setitem(self, key, value):
            shape = tuple(getattr(value, "shape", ()))
            if (not isinstance(value, keras.Variable) or value.dtype != "float32" or not shape
                    or 4 * int(np.prod(shape)) < min_bytes):
                return original(self, key, value)
            if not self._h5_entry_initialized:
                self._create_h5_group(self._h5_entry_path)
            dataset = self._h5_entry_group.create_dataset(key, shape=shape, dtype="float32")
            rows = max(1, block_bytes // max(1, 4 * int(np.prod(shape[1:]))))
            for start in range(0, shape[0], rows):
                dataset[start:start + rows] = keras.ops.convert_to_numpy(value[start:start + rows])

        return setitem

    return _patched("__setitem__", wrap)


# --- functional graphs --------------------------------------------------------------------------


def first_call_outputs(layer) -> list:
    """The output tensors of `layer`'s first call in a functional graph (its task model's own call;
    later calls are the user's graphs)."""
    return list(layer._inbound_nodes[0].outputs)


def sublayers(model) -> list:
    """The model and every layer inside it, recursively."""
    return model._flatten_layers(include_self=True, recursive=True)
