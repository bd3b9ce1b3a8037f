"""The training loop: Transformers' Trainer's defaults and update, in one XLA-compiled step.

Per optimizer step: `gradient_accumulation` batches, each one's mean loss differentiated (dropout on) and
the gradients added up (classifiers) or averaged (question answering) over the step's batches, as
Transformers 5.23's Trainer does (see `step`); clipped to a global norm of 1.0 (clip_grad_norm_); then
AdamW (torch's update, no weight decay on biases and LayerNorm weights) at the schedule's learning rate
(linear warmup, then linear to 0 or constant). Batches keep the file's order (or a seeded shuffle per
epoch), each padded to a length bucket: XLA compiles one program per bucket.

Losses, in float32 (Transformers' per problem_type): mean cross-entropy (single label, and per token over
the labels that are not -100), MSE (regression: one output), binary cross-entropy on logits (multi-label).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from kzoo.training import data, metrics
from kzoo.training.optimizer import AdamW, clip_by_norm, decays, learning_rate
from kzoo.training.options import TrainError, TrainOptions


TASKS = ("classifier", "token_classifier", "question_answering")
QA_LENGTH = 384  # question answering's default window (run_qa's max_seq_length); --doc-stride apart
N_BEST, MAX_ANSWER_LENGTH = 20, 30  # run_qa's evaluation: best starts and ends per window, longest answer


class Trainer:
    """Trains a kzoo Keras task model (classifier, token classifier, question answering) in place."""

    def __init__(self, model, tokenizer, options: TrainOptions, strategy=None):
        """`strategy`: a tf.distribute strategy the model was built under (kzoo.training.distribute), or None
        for one device."""
        options.check()
        self.model, self.tokenizer, self.options, self.strategy = model, tokenizer, options, strategy
        self._traced_encoders = {}  # (kzoo.training.data.batches: traced once a run, not once an epoch)
        config = getattr(model, "kzoo_config", None) or {}
        self.task = config.get("task")
        if self.task not in TASKS:
            raise TrainError(f"kzoo train trains {', '.join(TASKS)} models; this is a {self.task!r} model (kzoo convert "
                             "SRC OUT --task classifier --labels A,B,... makes one)")
        from kzoo.tasks.classification import label_names

        self.qa = self.task == "question_answering"
        self.names = None if self.qa else label_names(config, int(model.output.shape[-1]))
        self.problem_type = config.get("problem_type") or (
            "regression" if self.task == "classifier" and len(self.names) == 1 else None)
        longest = config.get("max_seq_length") or self._longest(config)
        self.max_length = min(options.max_length or (min(longest, QA_LENGTH) if self.qa else longest), longest)
        if options.max_length and options.max_length > longest:  # (run_glue.py's warning, and its cap)
            warnings.warn(f"The max_length passed ({options.max_length}) is larger than the maximum length for the "
                          f"model ({longest}). Using max_length={longest}.", UserWarning, stacklevel=2)
        self.longest = longest
        with self._scope():
            self.trained = None if not options.lora_rank else self._enable_lora(options.lora_rank)
        self.variables = None  # the trainable variables the loss reaches (`_prepare`)
        self._predict = None  # (evaluate: traced at its first batch)

    def _scope(self):
        import contextlib

        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _prepare(self, inputs, labels):
        """The optimizer over the variables the loss reaches (torch's AdamW skips a parameter without a
        gradient: no update, no decay), their gradient sums (with accumulation or replicas), and the compiled
        steps."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, _ = self.loss(self.model(inputs, training=False), labels)
        grads = tape.gradient(loss, self.model.trainable_variables)
        used = [g is not None and (self.trained is None or id(v) in self.trained)
                for g, v in zip(grads, self.model.trainable_variables)]
        self.variables = [v for v, u in zip(self.model.trainable_variables, used) if u]
        decay = [d for d, u in zip(decays(self.model), used) if u]
        self.frozen_rows = self._padding_rows()
        o = self.options
        # one batch a step on one device: one XLA program computes and applies the gradients, no sums kept
        self.fused = self.strategy is None and o.gradient_accumulation == 1
        with self._scope():
            self.optimizer = AdamW(self.variables, decay, o.beta_1, o.beta_2, o.epsilon, o.weight_decay)
            self.accumulated = [] if self.fused else [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                                                      for v in self.variables]
            # fp16: dynamic loss scaling (Keras' LossScaleOptimizer's rule: halve on an overflow and skip the
            # step, double after 2,000 finite steps)
            self.loss_scale = tf.Variable(2.0 ** 15 if o.mixed_precision == "fp16" else 1.0, trainable=False)
            self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        # traced once for every batch shape (reduce_retracing would trace twice: at the first shape, then
        # relaxed; a trace of the backward pass costs seconds), XLA compiling per bucket. autograph=False:
        # the steps branch on tensors with tf.cond only, and converting them took ~3 s a run
        batch = any_shape(inputs, labels, tf.constant(0.0))
        function = functools.partial(tf.function, autograph=False)
        if self.fused:
            self._fused = function(self._fused_step, jit_compile=True, input_signature=batch)
        elif self.strategy is None:
            self._micro = function(self._micro_step, jit_compile=True, input_signature=batch)
        else:
            self._gradients = function(self._replica_gradients, jit_compile=True, input_signature=batch)
            self._micro = function(self._distributed_micro_step, reduce_retracing=True)
        self._apply = function(self._apply_step, jit_compile=True)

    def _padding_rows(self):
        """{index in self.variables: the padding id}: the embedding tables whose padding row PyTorch never
        trains (nn.Embedding(padding_idx)); their gradient there is zeroed. It matters where padding positions
        reach the loss (question answering's start / end over every position)."""
        from kzoo.families import get_family

        config = self.model.kzoo_config
        pad = config["backbone"].get("pad_token_id", getattr(self.tokenizer, "pad_token_id", None))
        if pad is None:
            return {}
        tables = {id(self.model.backbone.get_layer(name).embeddings)
                  for name in get_family(config["architecture"]).padding_rows}
        return {i: int(pad) for i, variable in enumerate(self.variables) if id(variable) in tables}

    def _enable_lora(self, rank):
        """Keras' own LoRA (Dense.enable_lora, as keras-hub applies it) on every attention layer's query and
        value projections; returns the ids of what trains: the LoRA weights and the head (not the backbone).
        Keras merges them into the kernels when the model is saved."""
        from kzoo.io.keras_internals import sublayers
        from kzoo.models.layers import TransformerLayer

        lora = []
        for layer in sublayers(self.model.backbone):
            if isinstance(layer, TransformerLayer):
                for projection in (layer.query, layer.value):
                    projection.enable_lora(rank)
                    lora += [projection.lora_kernel_a, projection.lora_kernel_b]
        backbone = {id(v) for v in self.model.backbone.weights}
        return {id(v) for v in lora} | {id(v) for v in self.model.trainable_variables if id(v) not in backbone}

    @staticmethod
    def _longest(config):
        from kzoo.models import input_limits

        return input_limits(config["architecture"], config["backbone"])[1]

    # ---- the steps (XLA) -----------------------------------------------------------------------

    def loss(self, logits, labels):
        """(the batch's mean loss, the number of terms it is the mean of: examples, or labelled tokens)."""
        import tensorflow as tf

        if self.qa:  # (Transformers': the mean of the start and end positions' cross-entropies)
            start, end = (tf.cast(logits[k], tf.float32) for k in ("start_logits", "end_logits"))
            errors = (tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 0], start) +
                      tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:, 1], end)) / 2.0
            rows = tf.cast(tf.shape(start)[0], tf.float32)
            return tf.reduce_sum(errors) / tf.maximum(rows, 1.0), rows
        logits = tf.cast(logits, tf.float32)
        rows = tf.cast(tf.shape(logits)[0], tf.float32)
        if self.task == "token_classifier":
            valid = tf.not_equal(labels, -100)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.where(valid, labels, 0), logits)
            weights = tf.cast(valid, tf.float32)
            count = tf.reduce_sum(weights)
            return tf.reduce_sum(losses * weights) / tf.maximum(count, 1.0), count
        if self.problem_type == "regression":
            errors = tf.square(tf.reshape(logits, [-1]) - tf.reshape(tf.cast(labels, tf.float32), [-1]))
        elif self.problem_type == "multi_label_classification":
            errors = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), logits), -1)
        else:
            errors = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return tf.reduce_sum(errors) / tf.maximum(rows, 1.0), rows  # (a replica's slice may be empty)

    def _micro_step(self, inputs, labels, share):
        """One batch: its loss, its gradients times `share` (1, or 1 / the step's batches: see `step`) added to
        the step's (fp16: of the loss times the loss scale, divided back)."""
        loss, _, grads = self._replica_gradients(inputs, labels, share)
        for total, grad in zip(self.accumulated, grads):
            total.assign_add(grad)
        return loss

    def _replica_gradients(self, inputs, labels, share):
        """(the batch's mean loss, its count, the gradients of the mean loss times `share`)."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, count = self.loss(self.model(inputs, training=True), labels)
            scaled = loss * self.loss_scale
        grads = [tf.cast(g, v.dtype) * (share / self.loss_scale) for g, v in zip(tape.gradient(scaled, self.variables),
                                                                                   self.variables)]
        for i, pad in self.frozen_rows.items():  # (one row written, not the table multiplied by a mask)
            grads[i] = tf.tensor_scatter_nd_update(grads[i], [[pad]], tf.zeros([1, grads[i].shape[1]], grads[i].dtype))
        return loss, count, grads

    def _distributed_micro_step(self, inputs, labels, share):
        """`_micro_step` across replicas: each replica's mean loss and gradients weighted by its share of the
        global batch's count, summed across replicas, added to every replica's copy of the step's sums."""
        import tensorflow as tf

        from kzoo.training.distribute import component

        def replica(inputs, labels):
            loss, count, grads = self._gradients(inputs, labels, share)
            context = tf.distribute.get_replica_context()
            weight = count / tf.maximum(context.all_reduce("sum", count), 1.0)
            return context.all_reduce("sum", [loss * weight, *[g * weight for g in grads]])

        summed = self.strategy.run(replica, args=(inputs, labels))
        for i, values in enumerate(self.strategy.experimental_local_results(summed)):
            for total, grad in zip(self.accumulated, values[1:]):
                component(total, i).assign_add(grad)
        return self.strategy.experimental_local_results(summed)[0][0]

    def _fused_step(self, inputs, labels, lr):
        """A step of one batch: (its loss, the gradient norm)."""
        loss, _, grads = self._replica_gradients(inputs, labels, 1.0)
        return loss, self._update(grads, lr)

    def _apply_step(self, lr, replica=None):
        """The optimizer step on the step's gradient sums (then zeroed); under tf.distribute, on local
        replica `replica`'s copies of every variable (each replica makes the same update)."""
        import tensorflow as tf

        from kzoo.training.distribute import component

        copy = (lambda v: v) if replica is None else (lambda v: component(v, replica))  # noqa: E731
        accumulated = list(map(copy, self.accumulated))
        norm = self._update([g.read_value() for g in accumulated], lr, copy)
        for g in accumulated:
            g.assign(tf.zeros_like(g))  # (not g * 0: after an fp16 overflow inf * 0 is NaN, and stays)
        return norm

    def _update(self, grads, lr, copy=lambda v: v):
        """Clipping, AdamW and (fp16) the loss scale's rule, on `copy(v)` of every variable: the norm."""
        import tensorflow as tf

        loss_scale, finite_steps = copy(self.loss_scale), copy(self.finite_steps)

        def step():
            clipped, norm = clip_by_norm(grads, self.options.max_grad_norm)
            self.optimizer.apply(clipped, lr, copy)
            if self.options.mixed_precision == "fp16":
                finite_steps.assign_add(1)
                grow = tf.equal(finite_steps % 2000, 0)
                loss_scale.assign(tf.where(grow, loss_scale * 2.0, loss_scale))
            return norm

        def skip():  # an fp16 overflow: no update, a smaller scale
            loss_scale.assign(loss_scale / 2.0)
            finite_steps.assign(0)
            return tf.constant(float("inf"))

        if self.options.mixed_precision == "fp16":
            return tf.cond(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]), step, skip)
        return step()

    # ---- the loop ------------------------------------------------------------------------------

    def read(self, path):
        """The file's examples; for question answering its questions' windows (kzoo.training.data.Windows:
        Trainer counts those as the examples)."""
        examples = data.read(path, self.task, self.names, self.problem_type)
        if self.qa:
            return data.windows(examples, self.tokenizer, self.max_length, self.options.doc_stride)
        return examples

    def _batches(self, examples, epoch, shuffle, skip=0):
        import tensorflow as tf

        model_inputs = sorted(self.model.input)
        for batch in data.batches(examples, self.tokenizer, batch_size=self.options.batch_size,
                                  max_length=self.max_length, longest=self.longest, shuffle=shuffle,
                                  seed=self.options.seed, epoch=epoch, skip=skip, traced=self._traced_encoders):
            inputs = {name: batch[name] if name in batch else tf.zeros_like(batch["token_ids"]) for name in model_inputs}
            yield inputs, batch["labels"]

    def plan(self, examples):
        """(optimizer steps per epoch, total steps, warmup steps), as Trainer counts them."""
        o = self.options
        per_epoch = max(math.ceil(math.ceil(len(examples) / o.batch_size) / o.gradient_accumulation), 1)
        total = o.max_steps if o.max_steps > 0 else math.ceil(o.epochs * per_epoch)
        warmup = o.warmup_steps if o.warmup_steps else math.ceil(o.warmup_ratio * total)
        return per_epoch, total, warmup

    def step(self, group, lr):
        """One optimizer step on `group`, a list of (inputs, labels) batches, at learning rate `lr`: (the
        step's loss, the gradient norm before clipping). The batches' losses and gradients add up
        (classifiers) or average (question answering), as Trainer's (below)."""
        import tensorflow as tf

        if self.variables is None:
            self._prepare(*group[0])
        # Trainer (Transformers 5.23) divides a batch's loss by the step's batches only where it cannot pass
        # the model num_items_in_batch: these classifiers take it (their forward has **kwargs) and ignore
        # it, so their batches' losses and gradients add up; question answering's (no "labels") average
        summed = self.task in ("classifier", "token_classifier")
        share = tf.constant(1.0 if summed else 1.0 / len(group))
        combine = np.sum if summed else np.mean
        lr = tf.constant(lr, tf.float32)
        if self.fused:
            assert len(group) == 1, "one batch a step without gradient accumulation"
            loss, norm = self._fused(*group[0], lr)
            return float(loss), float(norm)
        if self.strategy is None:
            losses = [float(self._micro(inputs, labels, share)) for inputs, labels in group]
            return float(combine(losses)), float(self._apply(lr))
        from kzoo.training.distribute import split

        try:
            losses = [float(self._micro(*split(self.strategy, (inputs, labels)), share)) for inputs, labels in group]
        # (a peer's collective gave up: unavailable, cancelled, or aborted when the coordination service has
        # marked a task in error, e.g. a heartbeat timeout)
        except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as e:
            why = _first_cause(e)
            if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
                raise TrainError(f"the replicas' gradient sum failed ({why})") from None
            resume = ("; start every worker again with the same command: they resume from "
                      f"{self.options.checkpoint_dir}" if self.options.checkpoint_dir else
                      " (with --checkpoint-dir, starting every worker again resumes the run)")
            raise TrainError(f"a worker of the cluster stopped ({why}){resume}") from None
        norms = []
        for i, device in enumerate(self.strategy.extended.worker_devices):
            with tf.device(device):  # (an XLA program reaches variables on its own device only)
                norms.append(float(self._apply(lr, i)))
        return float(combine(losses)), norms[0]

    def train(self, examples, evaluation=None, progress=None, on_step=None, run=None):
        """Runs the plan; returns the log ({step, epoch, loss, learning_rate, grad_norm} per optimizer step)
        and the evaluation's metrics. `on_step(log_row)`: called after every step. With the option
        checkpoint_dir, the run's state is saved there every save_steps steps and at the end, and a run that
        finds a checkpoint there resumes from it (the same batches follow: their order is the seed's);
        `run`: what identifies the run (its model and files), kept beside the checkpoints to refuse another."""
        o = self.options
        per_epoch, total, warmup = self.plan(examples)
        n_batches = math.ceil(len(examples) / o.batch_size)
        self._check_even_slices(len(examples))
        if self.variables is None:
            self._prepare(*next(iter(self._batches(examples, 0, False))))
        state = Checkpoints(self, o.checkpoint_dir, run) if o.checkpoint_dir else None
        log = state.restore() if state else []
        step, seen, started = len(log), 0, time.time()
        if state:
            self._same_step_everywhere(step)
        advance = progress(total) if progress else (lambda n=1, status=None: None)
        if step:
            advance(min(step, total), f"resumed at step {step} from {o.checkpoint_dir}")
        epoch, done_in_epoch = divmod(step, per_epoch)
        while step < total:
            skipped = done_in_epoch * o.gradient_accumulation
            batches = iter(self._batches(examples, epoch, o.shuffle, skip=skipped))
            for first in range(skipped, n_batches, o.gradient_accumulation):
                size = min(o.gradient_accumulation, n_batches - first)  # (an epoch's last step: what is left)
                lr = float(learning_rate(step, o.learning_rate, total, warmup, o.scheduler))
                group = [next(batches) for _ in range(size)]
                loss, norm = self.step(group, lr)
                seen += sum(int(labels.shape[0]) for _, labels in group)
                row = {"step": step + 1, "epoch": round(epoch + (first + size) / n_batches, 4),
                       "loss": loss, "learning_rate": lr, "grad_norm": norm}
                log.append(row)
                step += 1
                if state and (step % o.save_steps == 0 or step >= total):
                    state.save(log)
                advance(1, f"loss {row['loss']:.4f}  {seen / (time.time() - started):.1f} examples/s")
                if on_step:
                    on_step(row)
                if step >= total:
                    break
            done_in_epoch = 0
            epoch += 1
        result = {"steps": step, "epochs": round(log[-1]["epoch"], 4) if log else 0.0, "log": log,
                  "examples_per_second": seen / max(time.time() - started, 1e-9)}
        if evaluation is not None:
            result["eval"] = self.evaluate(evaluation)
        return result

    def _check_even_slices(self, count):
        """TPUs replicate one program of static shapes: every batch (the last one too) must cut into equal
        slices (GPUs and CPUs take unequal ones)."""
        import tensorflow as tf

        if not isinstance(self.strategy, tf.distribute.TPUStrategy):
            return
        n, size, last = self.strategy.num_replicas_in_sync, self.options.batch_size, count % self.options.batch_size
        if size % n or last % n:
            raise TrainError(f"--strategy tpu cuts every batch into {n} equal slices: --batch-size {size} with "
                             f"{count} examples leaves a batch of {last or size}; give a batch size and a number of "
                             f"examples that {n} divides")

    def _same_step_everywhere(self, step):
        """Every worker resumes from the same step (a checkpoint dir not shared by all of them would mix
        batches and weights of different steps without an error)."""
        import tensorflow as tf

        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        mean = self.strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            "mean", tf.constant(float(step))))
        if float(self.strategy.experimental_local_results(mean)[0]) != step:
            raise TrainError(f"the workers resume from different steps (this one: step {step}); --checkpoint-dir "
                             f"{self.options.checkpoint_dir} must be one directory every worker sees")

    def evaluate(self, examples) -> dict:
        """The task's metrics on `examples` (model in inference mode)."""
        import tensorflow as tf

        predictions, golds = [], []
        for inputs, labels in self._batches(examples, 0, False):
            if self._predict is None:
                self._predict = tf.function(lambda batch: self.model(batch, training=False), jit_compile=True,
                                            autograph=False, input_signature=any_shape(inputs))
            out = self._predict(inputs)
            predictions.append({k: np.asarray(v, np.float32) for k, v in out.items()} if self.qa else
                               np.asarray(out, np.float32))
            golds.append(np.asarray(labels))
        if self.qa:
            return self._squad(examples, predictions)
        if self.task == "token_classifier":
            predicted, gold = [], []
            for logits, labels in zip(predictions, golds):
                for row_logits, row_labels in zip(logits, labels):
                    keep = row_labels != -100
                    predicted.append([self.names[i] for i in row_logits[keep].argmax(-1)])
                    gold.append([self.names[i] for i in row_labels[keep]])
            return metrics.token_classification(predicted, gold)
        logits, labels = np.concatenate(predictions), np.concatenate(golds)
        if self.problem_type == "regression":
            return metrics.regression(logits.reshape(-1), labels.reshape(-1))
        if self.problem_type == "multi_label_classification":
            return metrics.multi_label(1 / (1 + np.exp(-logits)), labels)
        return metrics.classification(logits.argmax(-1), labels)

    def _squad(self, windows, predictions):
        """SQuAD's exact match and F1 of the answers Transformers' run_qa post-processing picks
        (postprocess_qa_predictions): over a question's windows the best start + end logit sum among the
        N_BEST starts and ends of each, inside the context, at most MAX_ANSWER_LENGTH tokens; when some
        question has no answer (SQuAD v2) the empty answer where <cls>'s start + end is higher. XLM (no
        offsets): the answer is its tokens' whole words, as its pipeline gives them."""
        start_logits = [row for batch in predictions for row in batch["start_logits"]]
        end_logits = [row for batch in predictions for row in batch["end_logits"]]
        questions = windows.questions
        v2 = any(not answers for answers in questions.labels)
        best = {}  # question -> (score, text); null -> the lowest <cls> score over its windows
        null = {}
        for w, (row, first, i) in enumerate(zip(windows.rows, windows.context_at, windows.example)):
            n = len(row.ids)  # (ranked over the padded row, as utils_qa does; padding is no answer)
            start, end = start_logits[w], end_logits[w]
            null[i] = min(null.get(i, np.inf), float(start[0] + end[0]))
            context = questions.pairs[i]
            for s in np.argsort(start)[::-1][:N_BEST]:
                for e in np.argsort(end)[::-1][:N_BEST]:
                    if not (first <= s <= e < n - 1) or e - s + 1 > MAX_ANSWER_LENGTH:
                        continue
                    score = float(start[s] + end[e])
                    if score > best.get(i, (-np.inf, ""))[0]:  # (XLM: the tokens' whole words)
                        spans = row.spans if windows.words is None else [None] * first + windows.words[w]
                        best[i] = (score, context[spans[s][0]:spans[e][1]])
        answers = {}
        for i, id_ in enumerate(questions.ids):
            score, text = best.get(i, (-np.inf, ""))
            answers[id_] = "" if v2 and null.get(i, -np.inf) > score else text
        return metrics.squad(answers, {id_: [text for _, text in gold] for id_, gold in zip(questions.ids,
                                                                                        questions.labels)})


def _first_cause(error) -> str:
    """The line of a TF runtime error that says what happened (its message starts with "Graph execution
    error:" and the Python frames of the op when raised from a tf.function)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node", "File "))
            and not line.endswith(":")]
    return (said or lines or [type(error).__name__])[0]


class Checkpoints:
    """A training run's state in a directory: the model's variables (dropout's seed state too), the
    optimizer's moments and step, the loss scale; and the log so far. tf.train.CheckpointManager keeps the
    last two; under multi-worker training every worker saves (as tf.distribute asks) but only the chief
    into the directory, the others into a scratch directory they remove."""

    KEEP = 2
    LOG = "log.json"
    RUN = "run.json"  # what the run is: a different one must not resume from these

    def __init__(self, trainer, directory, run):
        import tensorflow as tf

        from kzoo.training.distribute import is_chief, task

        self.directory, self.run = Path(directory), dict(run or {})
        self.chief = is_chief(trainer.strategy)
        scratch = self.directory / ".workers" / "-".join(map(str, task(trainer.strategy)))
        self.writes = writes = self.directory if self.chief else scratch
        t = trainer
        # (the model's tf variables, listed: a Keras 3 model is not a tf.train checkpoint's trackable)
        self.checkpoint = tf.train.Checkpoint(model=[v.value for v in t.model.variables], optimizer=t.optimizer,
                                              loss_scale=t.loss_scale, finite_steps=t.finite_steps)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(writes), max_to_keep=self.KEEP)

    def restore(self) -> list:
        """The log of the steps the directory's latest checkpoint holds ([] when there is none), its state
        restored into the trainer's variables."""
        import tensorflow as tf

        recorded = self.directory / self.RUN
        if recorded.is_file():
            before = json.loads(recorded.read_text())
            changed = sorted(k for k in set(before) | set(self.run) if before.get(k) != self.run.get(k))
            if changed:
                raise TrainError(f"{self.directory} holds the checkpoints of another run ({', '.join(changed)} "
                                 "differ); give another --checkpoint-dir or remove it")
        latest = tf.train.latest_checkpoint(str(self.directory))
        if latest is None:
            return []
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        if not (self.directory / self.LOG).is_file():
            raise TrainError(f"{self.directory}: a checkpoint without its {self.LOG}: not a kzoo train checkpoint dir")
        log = json.loads((self.directory / self.LOG).read_text())
        steps = int(latest.rsplit("-", 1)[1])
        if len(log) < steps:
            raise TrainError(f"{self.directory}: its log has {len(log)} steps, its checkpoint {steps}: not one run's")
        return log[:steps]

    def save(self, log):
        from kzoo.io.atomic import atomic_file

        if self.chief:  # (the log before the checkpoint: a kill between them leaves a longer log, cut on restore)
            for name, text in ((self.RUN, json.dumps(self.run, indent=1)), (self.LOG, json.dumps(log))):
                with atomic_file(self.directory / name, overwrite=True) as tmp:
                    tmp.write_text(text)
        self.manager.save(checkpoint_number=len(log))
        if not self.chief:
            shutil.rmtree(self.writes, ignore_errors=True)


def any_shape(*example):
    """The input signature of tensors like `example`'s, every dimension unknown."""
    import tensorflow as tf

    return list(tf.nest.map_structure(lambda t: tf.TensorSpec([None] * t.shape.rank, t.dtype), example))
