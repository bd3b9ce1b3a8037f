"""`kzoo train` on tf.distribute and its checkpoints: MirroredStrategy over 2 logical CPU devices and
MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1 (TF_CONFIG) give the weights of training on
one device on the same global batches (no shuffle, dropout 0) within 1e-5; a run killed (SIGKILL) after a
checkpoint and started again ends with the weights of the uninterrupted run. Every reference is a
single-device or uninterrupted run made here, never kzoo's earlier output."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import kzoo
from kzoo.training import TrainError
from reference import TINY_XLMR, model_with_tokenizer
from spm_fixtures import make_xlmr_tokenizer_dir
from test_train import SENTIMENT, TAGS, TEXTS, WORDS, family_checkpoint, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# max_length 32: one length bucket (the tiny models take 38 tokens: buckets 32 and 38), half the XLA compiles
OPTIONS = dict(batch_size=3, gradient_accumulation=2, max_steps=3, learning_rate=2e-3, weight_decay=0.01,
               warmup_steps=1, shuffle=False, max_length=32)
BOUND = 1e-5
DEADLINE = 300  # seconds a training process may take before the test kills it
# 2 logical CPU devices: set before TensorFlow starts, so in a process of its own
MIRRORED = """import sys, tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from kzoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_args(options):
    args = []
    for name, value in options.items():
        if name == "shuffle":
            args += [] if value else ["--no-shuffle"]
        else:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def weights(path):
    return {v.path: np.asarray(v) for v in kzoo.load(path).weights}


def worst(a, b, every=False):
    """The largest difference between two model dirs' weights. Attention key biases are left out unless
    `every`: their gradient is 0 in exact arithmetic, so a sum's rounding order (one device's or the
    replicas' all-reduce) is all Adam sees, and it scales any gradient to a step of about the learning rate
    (test_train.py says more). They change no output."""
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a if every or not k.endswith("key/bias"))


def start(args, env=None, script=None):
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "kzoo"]
    return subprocess.Popen([*command, "train", *map(str, args), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            start_new_session=True)


def finish(process):
    try:
        out, err = process.communicate(timeout=DEADLINE)
    finally:
        stop(process)
    return process.returncode, out, err


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def report(process):
    code, out, err = finish(process)
    assert code == 0, err[-3000:]
    return json.loads(out)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def workers(model_dir, out, train, options, ports, only=None):
    """The cluster's worker processes (`only`: just those indices)."""
    cluster = [f"127.0.0.1:{p}" for p in ports]
    return [start([model_dir, out, "--train", train, "--strategy", "multi-worker", *cli_args(options)],
                  env={"TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})})
            for i in range(len(ports)) if only is None or i in only]


def data(tmp_path, head):
    if head == "SequenceClassification":
        return SENTIMENT, write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": SENTIMENT[i % 3]}
                                                                  for i, t in enumerate(TEXTS)])
    rng = np.random.default_rng(0)
    return TAGS, write_jsonl(tmp_path / "train.jsonl", [{"tokens": w, "tags": [TAGS[int(x)] for x in
                                                                               rng.integers(0, len(TAGS), len(w))]}
                                                         for w in WORDS])


@pytest.mark.parametrize("family, head", [("albert", "TokenClassification")])
def test_mirrored_equals_one_device(tmp_path, family, head):
    """Batches of 3 on 2 replicas (2 + 1 rows; token classification: weighted by labelled tokens), 2 batches a
    step, an epoch's last step of 1. (A sequence classifier's rows split the same way across workers: the
    multi-worker test below.)"""
    labels, train = data(tmp_path, head)
    _, model_dir = family_checkpoint(tmp_path, family, head, labels)
    one = kzoo.train(model_dir, tmp_path / "one", train, **OPTIONS)
    two = report(start([model_dir, tmp_path / "two", "--train", train, "--strategy", "mirrored", *cli_args(OPTIONS)],
                       script=MIRRORED))
    assert two["replicas"] == 2 and one["replicas"] == 1
    assert np.abs(np.array([r["loss"] for r in two["log"]]) - [r["loss"] for r in one["log"]]).max() <= BOUND
    assert worst(tmp_path / "one", tmp_path / "two") <= BOUND
    assert worst(tmp_path / "one", model_dir) > 1e-3  # (training moved them)


def test_multi_worker_resumes_after_a_worker_is_killed_and_equals_one_device(tmp_path):
    """2 workers (TF_CONFIG, 127.0.0.1) with --checkpoint-dir, worker 1 killed mid-run: worker 0 stops with a
    one-line error; workers that would resume from different checkpoints refuse; both started again resume
    from the last checkpoint, and the chief writes OUT, equal to one device's run."""
    labels, train = data(tmp_path, "SequenceClassification")
    _, model_dir = family_checkpoint(tmp_path, "xlm-roberta", "SequenceClassification", labels)
    options = {**OPTIONS, "max_steps": 10}  # (worker 1 is killed after step 3: 7 steps before 0 could end alone)
    kzoo.train(model_dir, tmp_path / "one", train, **options)

    checkpoints = tmp_path / "checkpoints"
    resumable = {**options, "checkpoint_dir": checkpoints, "save_steps": 1}
    processes = workers(model_dir, tmp_path / "resumed", train, resumable, free_ports(2))
    try:
        deadline = time.time() + DEADLINE
        while not (checkpoints / "ckpt-3.index").exists() and time.time() < deadline:
            time.sleep(0.02)
        stop(processes[1])
        code, _, err = finish(processes[0])
    finally:
        for p in processes:
            stop(p)
    assert code != 0, "worker 0 finished alone: worker 1 was killed too late"
    last = [line for line in err.splitlines() if line.startswith("kzoo: error:")]
    assert last and "a worker of the cluster stopped" in last[-1] and str(checkpoints) in last[-1], err[-2000:]
    assert not (tmp_path / "resumed").exists()

    # a worker that sees another checkpoint dir (none here) would resume elsewhere: both refuse
    cluster, other = free_ports(2), tmp_path / "elsewhere"
    refused = workers(model_dir, tmp_path / "resumed", train, resumable, cluster, only=[0]) + \
        workers(model_dir, tmp_path / "resumed", train, {**resumable, "checkpoint_dir": other}, cluster, only=[1])
    for process in refused:
        code, _, err = finish(process)
        assert code == 2 and "the workers resume from different steps" in err.splitlines()[-1], err[-2000:]

    chief, other = [report(p) for p in workers(model_dir, tmp_path / "resumed", train, resumable, free_ports(2))]
    assert chief["out"] == str(tmp_path / "resumed") and other["out"] is None and chief["replicas"] == 2
    assert chief["log"] == other["log"]
    assert chief["steps"] == 10 and [r["step"] for r in chief["log"]] == list(range(1, 11))
    assert worst(tmp_path / "one", tmp_path / "resumed") <= BOUND  # (summed across processes: rounding)
    assert not (tmp_path / "resumed-1").exists()
    assert not (checkpoints / ".workers" / "worker-1").exists()  # (the other worker's scratch saves: removed)


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    """Dropout on and a shuffled order: the resumed run sees the same batches and the same dropout masks (the
    seed state is in the checkpoint), so it ends exactly where the uninterrupted run does. A checkpoint dir
    of another run is refused."""
    labels, train = data(tmp_path, "SequenceClassification")
    config = {**TINY_XLMR, "id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    assert config["hidden_dropout_prob"] > 0
    _, model_dir = model_with_tokenizer(tmp_path, "XLMRobertaForSequenceClassification", config,
                                        make_xlmr_tokenizer_dir(tmp_path))
    options = dict(batch_size=2, max_steps=20, learning_rate=2e-3, save_steps=1, max_length=32)
    kzoo.train(model_dir, tmp_path / "whole", train, **{k: v for k, v in options.items() if k != "save_steps"})

    checkpoints = tmp_path / "checkpoints"
    args = [model_dir, tmp_path / "resumed", "--train", train, *cli_args({**options, "checkpoint_dir": checkpoints})]
    process = start(args)
    try:
        deadline = time.time() + DEADLINE
        while not (checkpoints / "ckpt-3.index").exists() and time.time() < deadline:
            time.sleep(0.02)
    finally:
        stop(process)
    assert process.returncode == -signal.SIGKILL and not (tmp_path / "resumed").exists()
    resumed = report(start(args))
    assert resumed["log"][0]["step"] == 1 and len(resumed["log"]) == 20
    assert worst(tmp_path / "whole", tmp_path / "resumed", every=True) == 0.0
    assert worst(tmp_path / "whole", model_dir) > 1e-3

    with pytest.raises(TrainError, match="holds the checkpoints of another run .*learning_rate"):
        kzoo.train(model_dir, tmp_path / "other", train, **{**options, "learning_rate": 1e-3,
                                                            "checkpoint_dir": checkpoints})
    train.write_text(train.read_text().replace('"neg"', '"pos"'))  # (as many examples, other labels)
    with pytest.raises(TrainError, match="holds the checkpoints of another run .*train_sha256"):
        kzoo.train(model_dir, tmp_path / "other", train, **{**options, "checkpoint_dir": checkpoints})


@pytest.mark.parametrize("tf_config, message", [(None, "reads its cluster from TF_CONFIG"),
                                                ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", '
                                                 '"index": 3}}', "not a cluster with this task in it"),
                                                ("{not json", "not a cluster with this task in it")])
def test_multi_worker_without_a_cluster_is_a_one_line_error(tmp_path, monkeypatch, tf_config, message):
    labels, train = data(tmp_path, "SequenceClassification")
    _, model_dir = family_checkpoint(tmp_path, "xlm-roberta", "SequenceClassification", labels)
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(TrainError, match=message):
        kzoo.train(model_dir, tmp_path / "trained", train, strategy="multi-worker", max_steps=1)
    with pytest.raises(TrainError, match="strategy must be one of default, mirrored, multi-worker, tpu"):
        kzoo.train(model_dir, tmp_path / "trained", train, strategy="horovod")
    assert not (tmp_path / "trained").exists()


# what worker 0 raised in a CI run when worker 1 was killed mid-step (the coordination service had marked a
# task in error): AbortedError, not the UnavailableError of a plain dropped connection
HEARTBEAT = """Graph execution error:

Detected at node CollectiveReduceV2 defined at (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main

Collective ops is aborted by: Unexpected heartbeat request from an already-in-error task: /job:worker/replica:0/task:0 \
with existing error: UNAVAILABLE: Task /job:worker/replica:0/task:0 heartbeat timeout.
The error could be from a previous operation. Restart your program to reset.
	 [[{{node CollectiveReduceV2}}]] [Op:__inference__distributed_micro_step_6121]"""


@pytest.mark.parametrize("error", ["UnavailableError", "CancelledError", "AbortedError"])
def test_a_peer_that_fails_mid_step_is_a_one_line_error(monkeypatch, error):
    """Each way TF's collectives report a stopped peer becomes the one-line error that says how to resume."""
    import types

    import tensorflow as tf

    from kzoo.training import distribute
    from kzoo.training.trainer import Trainer

    def fail(*args):
        raise getattr(tf.errors, error)(None, None, HEARTBEAT)

    trainer = Trainer.__new__(Trainer)
    trainer.variables, trainer.task, trainer.fused, trainer._micro = [], "classifier", False, fail
    trainer.options = types.SimpleNamespace(checkpoint_dir="/shared/checkpoints")
    trainer.strategy = tf.distribute.MultiWorkerMirroredStrategy.__new__(tf.distribute.MultiWorkerMirroredStrategy)
    monkeypatch.setattr(distribute, "split", lambda strategy, batch: batch)
    with pytest.raises(TrainError) as raised:
        trainer.step([({}, np.zeros(1))], 1e-3)
    assert str(raised.value) == (
        "a worker of the cluster stopped (Collective ops is aborted by: Unexpected heartbeat request from an "
        "already-in-error task: /job:worker/replica:0/task:0 with existing error: UNAVAILABLE: Task "
        "/job:worker/replica:0/task:0 heartbeat timeout.); start every worker again with the same command: "
        "they resume from /shared/checkpoints")
