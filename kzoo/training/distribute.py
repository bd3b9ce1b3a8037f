"""Training across devices and workers, on tf.distribute.

    default       one device (what TensorFlow places on)
    mirrored      MirroredStrategy over the visible GPUs, else over every logical CPU device
    multi-worker  MultiWorkerMirroredStrategy, its cluster from the standard TF_CONFIG environment variable
    tpu           TPUStrategy on the TPU TPU_NAME names (a TPU VM's own when unset); never run here

The global batch (--batch-size) is cut into one slice per replica (every worker reads the same file and
builds the same batches, then takes its replicas' rows); each replica's loss is weighted by its share of
the global batch's examples (its tokens, for token classification), the gradients summed across replicas:
the same step as one device on the whole batch. Every replica then runs the same optimizer update on its
own copy of the variables.
"""

from __future__ import annotations

import json
import os

from kzoo.training.options import STRATEGIES, TrainError


def make_strategy(name):
    """The tf.distribute strategy `name` names (None: the default, one device). Made before anything else
    runs in TensorFlow (MultiWorkerMirroredStrategy must be)."""
    import tensorflow as tf

    if name == "default":
        return None
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi-worker":
        _tf_config()  # (a clear error before TensorFlow's own)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", "local"))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise TrainError(f"--strategy tpu found no TPU (TPU_NAME={os.environ.get('TPU_NAME', '')!r}): "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return tf.distribute.TPUStrategy(resolver)
    raise TrainError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def _tf_config():
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise TrainError('--strategy multi-worker reads its cluster from TF_CONFIG (e.g. {"cluster": {"worker": '
                         '["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}); it is not set')
    try:
        config = json.loads(text)
        task = config["task"]
        config["cluster"][task["type"]][task["index"]]
    except (ValueError, KeyError, IndexError, TypeError):
        raise TrainError(f"TF_CONFIG is not a cluster with this task in it: {text}") from None
    return config


def task(strategy):
    """This process' (type, index) in its cluster; ("chief", 0) when it is the only one."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "chief", 0
    config = _tf_config()
    return config["task"]["type"], int(config["task"]["index"])


def is_chief(strategy) -> bool:
    """Whether this process writes the outputs: the only process, or the cluster's chief (worker 0 where
    TF_CONFIG names no chief)."""
    kind, index = task(strategy)
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in _tf_config()["cluster"])


def split(strategy, batch):
    """A global batch (a structure of tensors with the examples on axis 0) as per-replica slices: replica i
    of n gets rows [i * rows // n, (i + 1) * rows // n)."""
    import tensorflow as tf

    rows = int(tf.nest.flatten(batch)[0].shape[0])
    n = strategy.num_replicas_in_sync

    def rows_of(context):
        i = context.replica_id_in_sync_group
        return tf.nest.map_structure(lambda t: t[i * rows // n:(i + 1) * rows // n], batch)

    return strategy.experimental_distribute_values_from_function(rows_of)


def component(variable, replica):
    """Local replica `replica`'s copy of `variable` (a Keras or tf variable, mirrored or not)."""
    import keras

    if isinstance(variable, keras.Variable):
        variable = variable.value  # (the tf.Variable, or MirroredVariable, under it)
    return variable.values[replica] if hasattr(variable, "values") else variable
