"""`kzoo train` against the same steps in PyTorch: Transformers' model on the same batches, torch.optim.AdamW
with Trainer's parameter groups (get_decay_parameter_names), its linear schedule with warmup
(get_linear_schedule_with_warmup) and clip_grad_norm_(1.0); dropout 0, no shuffle. Every step's loss and
the weights afterwards agree within 1e-5 (1e-4 where a gradient is at rounding-noise level: NOISE_FLOOR),
for each family and for the classifier and token-classifier heads; never compared with kzoo's own earlier
numbers. XLM's words are tokenized one by one, as
Transformers' Python tokenizers do with is_split_into_words (tested against it here)."""

import copy
import json

import numpy as np
import pytest
import torch
import transformers

import kzoo
from kzoo.converters.convert import convert
from kzoo.training import data
from reference import TINY_ALBERT, TINY_XLMR, model_with_tokenizer
from spm_fixtures import make_albert_tokenizer_dir, make_xlmr_tokenizer_dir
from xlm_fixtures import TINY_ENFR, tokenizer_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
                  classifier_dropout=0.0)
SENTIMENT = ["neg", "neu", "pos"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["Jean lives in Paris.", "the cat sat on the mat", "Bonjour tout le monde !", "a", "Marie Curie à Varsovie",
         "numbers 1,000 and 42", "quite a long sentence with many words in it , more than the others here", "ok"]
WORDS = [t.split() for t in TEXTS]


def family_checkpoint(tmp, family, head, labels):
    if family == "xlm":  # (its BPE tokenizer runs in Python: batches come from a generator)
        tokenizer, vocab_size = tokenizer_dir(tmp / "tokenizer")
        prefix, base = "XLM", {**TINY_ENFR, "vocab_size": vocab_size, "dropout": 0.0, "attention_dropout": 0.0,
                               "summary_first_dropout": 0.0}
        (tokenizer / "config.json").unlink(missing_ok=True)
    else:
        prefix, base = ("Albert", TINY_ALBERT) if family == "albert" else ("XLMRoberta", TINY_XLMR)
        tokenizer = make_albert_tokenizer_dir(tmp, True) if family == "albert" else make_xlmr_tokenizer_dir(tmp)
    config = {**base, **NO_DROPOUT, "id2label": dict(enumerate(labels)),
              "label2id": {name: i for i, name in enumerate(labels)}}
    # (Transformers' own initialisation: a fine-tuning start, attention far from saturated)
    return model_with_tokenizer(tmp, f"{prefix}For{head}", config, tokenizer, weights=lambda model, seed: model)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


# Adam moves an element by lr * m / (sqrt(v) + 1e-8). Where a gradient is near 0 (0 in exact arithmetic, as for
# attention key biases, or small by cancellation, common in tiny models at their initialisation), its last bits,
# which differ between CPUs' vector units and frameworks' summation orders, set the step: at |g| ~ 1e-8, a 2 %
# rounding difference moves the weight by ~lr / 200. Such elements (a reference gradient under NOISE_FLOOR, but
# not 0, at some step) are compared within LOOSE, the others within 1e-5 (see differs_from).
NOISE_FLOOR, LOOSE = 1e-7, 1e-4


def torch_steps(src, batches_per_step, *, lr, weight_decay, warmup, total, qa=False):
    """The reference: Trainer's optimizer and schedule on Transformers' model; the loss of each step. A step's
    batches add up their losses (classifiers) or average them (question answering), as Trainer does:
    test_trainer_itself shows it against transformers.Trainer."""
    config = transformers.AutoConfig.from_pretrained(src)
    cls = getattr(transformers, config.architectures[0])
    model = cls.from_pretrained(src).train()
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    groups = [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total)
    model.noise_floor = {name: np.zeros(p.shape, bool) for name, p in model.named_parameters()}
    losses = []
    for group in batches_per_step:
        optimizer.zero_grad()
        step_losses = []
        for batch in group:
            segments = np.asarray(batch["segment_ids"])  # (XLM's -1: none given, Transformers' None)
            labels = torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.long)
            targets = {"start_positions": labels[:, 0], "end_positions": labels[:, 1]} if qa else {"labels": labels}
            loss = model(input_ids=torch.as_tensor(np.asarray(batch["token_ids"]), dtype=torch.long),
                         attention_mask=torch.as_tensor(np.asarray(batch["padding_mask"]), dtype=torch.long),
                         token_type_ids=None if (segments < 0).all() else torch.as_tensor(segments, dtype=torch.long),
                         **targets).loss
            (loss / len(group) if qa else loss).backward()
            step_losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for name, p in model.named_parameters():  # (what Adam sees: after clipping)
            if p.grad is not None:
                model.noise_floor[name] |= ((p.grad != 0) & (p.grad.abs() < NOISE_FLOOR)).numpy()
        optimizer.step()
        schedule.step()
        losses.append(float(np.mean(step_losses) if qa else np.sum(step_losses)))
    return model, losses


def differs_from(trained, reference, tmp_path, leave_out=("key/bias",)):
    """The largest weight difference between kzoo's trained model dir and a trained Transformers model (saved and
    converted here), leaving out the weights whose paths end with one of `leave_out` (attention key biases: a
    gradient of 0 in exact arithmetic, so Adam steps on rounding noise alone). Where the reference comes from
    torch_steps, a difference counts 1e-5 / LOOSE times where its gradient was at the noise floor (NOISE_FLOOR;
    the map of those elements is converted as the weights are)."""
    def converted(model, name):
        model.save_pretrained(tmp_path / name)
        convert(tmp_path / name, tmp_path / f"{name}-converted")
        return {v.path: np.asarray(v) for v in kzoo.load(tmp_path / f"{name}-converted").weights}

    ours, theirs = {v.path: np.asarray(v) for v in kzoo.load(trained).weights}, converted(reference, "reference")
    assert ours.keys() == theirs.keys()
    if hasattr(reference, "noise_floor"):
        floor = copy.deepcopy(reference)
        with torch.no_grad():
            for name, p in floor.named_parameters():
                p.copy_(torch.as_tensor(reference.noise_floor[name], dtype=p.dtype))
        scale = {k: np.where(v != 0, 1e-5 / LOOSE, 1.0) for k, v in converted(floor, "noise-floor").items()}
    else:
        scale = {k: np.ones(v.shape) for k, v in ours.items()}
    scale = {k: 0 * v if k.endswith(leave_out) else v for k, v in scale.items()}
    diffs = {k: float((np.abs(ours[k] - theirs[k]) * scale[k]).max()) for k in ours}
    worst = max(diffs, key=diffs.get)
    print(f"largest weight difference (as counted): {worst} {diffs[worst]:.3g}")  # (shown on failure)
    return diffs[worst]


def moved(trained, start):
    """How far training moved the weights from the model dir `start`."""
    ours, before = ({v.path: np.asarray(v) for v in kzoo.load(d).weights} for d in (trained, start))
    return max(float(np.abs(ours[k] - before[k]).max()) for k in ours)


# 8 examples: batches of 3 + 3 + 2, 2 batches a step, so an epoch's last step has 1. (max_length 32: one
# length bucket, not the tiny models' two, so half the XLA compiles)
STEPS = dict(batch_size=3, gradient_accumulation=2, max_steps=3, learning_rate=2e-3, weight_decay=0.01,
             warmup_steps=1, shuffle=False, seed=0, max_length=32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """kzoo.train's run of STEPS on a (family, head) checkpoint, made once a module (test_trainer_itself checks
    the run test_train_equals_pytorch_step_for_step checks): (src, model dir, train file, report)."""
    runs = {}

    def run(family, head):
        if (family, head) not in runs:
            tmp = tmp_path_factory.mktemp(f"{family}-{head}")
            labels = SENTIMENT if head == "SequenceClassification" else TAGS
            src, model_dir = family_checkpoint(tmp, family, head, labels)
            rng = np.random.default_rng(0)
            if head == "SequenceClassification":
                rows = [{"text": t, "label": SENTIMENT[i % 3]} for i, t in enumerate(TEXTS)]
            else:
                rows = [{"tokens": w, "tags": [TAGS[int(x)] for x in rng.integers(0, len(TAGS), len(w))]}
                        for w in WORDS]
            train = write_jsonl(tmp / "train.jsonl", rows)
            runs[family, head] = src, model_dir, train, kzoo.train(model_dir, tmp / "trained", train, **STEPS)
        return runs[family, head]

    return run


@pytest.mark.parametrize("family, head", [("albert", "SequenceClassification"), ("albert", "TokenClassification"),
                                          ("xlm-roberta", "SequenceClassification"),
                                          ("xlm-roberta", "TokenClassification"), ("xlm", "SequenceClassification"),
                                          ("xlm", "TokenClassification")])
def test_train_equals_pytorch_step_for_step(trained, tmp_path, family, head):
    labels = SENTIMENT if head == "SequenceClassification" else TAGS
    src, model_dir, train, report = trained(family, head)
    assert report["total_steps"] == 3 and [r["step"] for r in report["log"]] == [1, 2, 3]

    # the same batches, as kzoo built them (its tokenizer's ids equal Transformers': tested elsewhere)
    task = "classifier" if head == "SequenceClassification" else "token_classifier"
    tokenizer = kzoo.load_tokenizer(model_dir)
    examples = data.read(train, task, labels)
    epoch = list(data.batches(examples, tokenizer, batch_size=STEPS["batch_size"], max_length=report["max_length"],
                              longest=report["max_length"]))
    assert len(epoch) == 3
    steps = [epoch[0:2], epoch[2:3], epoch[0:2]]
    reference, losses = torch_steps(src, steps, lr=STEPS["learning_rate"], weight_decay=STEPS["weight_decay"],
                                    warmup=STEPS["warmup_steps"], total=STEPS["max_steps"])
    assert np.abs(np.array([r["loss"] for r in report["log"]]) - losses).max() <= 1e-5, (report["log"], losses)

    # Attention key biases are left out: their gradient is 0 in exact arithmetic (a softmax does not change
    # when every key's score moves by the same q . b), so each framework's rounding noise is all Adam sees,
    # and Adam scales any gradient to a step of about the learning rate. They change no output. Elements whose
    # gradient is small by cancellation are compared more loosely (NOISE_FLOOR).
    worst = differs_from(report["out"], reference, tmp_path)
    assert worst <= 1e-5 and moved(report["out"], model_dir) > 1e-3, worst  # (and training did change them)


def test_one_batch_steps_equal_pytorch(tmp_path):
    """Without gradient accumulation a step is one XLA program (gradients applied as computed, no sums kept):
    the same numbers as PyTorch too."""
    src, model_dir = family_checkpoint(tmp_path, "albert", "TokenClassification", TAGS)
    rng = np.random.default_rng(1)
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": w, "tags": [TAGS[int(x)] for x in
                                                                          rng.integers(0, len(TAGS), len(w))]}
                                                   for w in WORDS])
    # (batches of 4 of the 8 examples: one batch shape, one XLA compile; the third step starts epoch 2)
    report = kzoo.train(model_dir, tmp_path / "trained", train, batch_size=4, max_steps=3, learning_rate=2e-3,
                        weight_decay=0.01, warmup_steps=1, shuffle=False, max_length=32)
    examples = data.read(train, "token_classifier", TAGS)
    epoch = list(data.batches(examples, kzoo.load_tokenizer(model_dir), batch_size=4, max_length=report["max_length"],
                              longest=report["max_length"]))
    assert len(epoch) == 2
    reference, losses = torch_steps(src, [[b] for b in epoch + epoch[:1]], lr=2e-3, weight_decay=0.01, warmup=1,
                                    total=3)
    assert np.abs(np.array([r["loss"] for r in report["log"]]) - losses).max() <= 1e-5
    assert differs_from(tmp_path / "trained", reference, tmp_path) <= 1e-5


def test_an_fp16_overflow_skips_the_step_and_clears_the_sums(tmp_path):
    """With accumulation, an overflowing step (inf in a gradient sum) is skipped, the loss scale halved and the
    sums zeroed (inf * 0 would be NaN for good): the next step trains."""
    import tensorflow as tf

    src, model_dir = family_checkpoint(tmp_path, "xlm-roberta", "SequenceClassification", SENTIMENT)
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": SENTIMENT[i % 3]} for i, t in enumerate(TEXTS)])
    from kzoo.training import Trainer, TrainOptions

    trainer = Trainer(kzoo.load(model_dir), kzoo.load_tokenizer(model_dir),
                      TrainOptions(gradient_accumulation=2, mixed_precision="fp16", shuffle=False))
    examples = trainer.read(train)
    group = list(trainer._batches(examples, 0, False))[:2]
    trainer._prepare(*group[0])
    before = [np.asarray(v) for v in trainer.variables]
    trainer.accumulated[0].assign(tf.fill(trainer.accumulated[0].shape, float("inf")))
    assert np.isinf(float(trainer._apply(tf.constant(1e-3))))
    assert float(trainer.loss_scale) == 2.0 ** 14
    assert all(np.all(np.asarray(g) == 0) for g in trainer.accumulated)
    assert all(np.array_equal(a, np.asarray(v)) for a, v in zip(before, trainer.variables))  # (skipped)
    loss, norm = trainer.step(group, 1e-3)
    assert np.isfinite(loss) and np.isfinite(norm)
    assert max(float(np.abs(a - np.asarray(v)).max()) for a, v in zip(before, trainer.variables)) > 1e-4


BOUND_MIXED = 1e-3  # README: the most a step's loss may differ from the float32 run's over 20 steps


def test_mixed_precision_stays_near_float32(tmp_path):
    """bf16 (Keras' mixed_bfloat16) and fp16 (mixed_float16, dynamic loss scaling): variables, softmax,
    LayerNorm and the loss in float32; 20 steps' losses within BOUND_MIXED of the float32 run's (measured
    ~7e-5 here), and not identical to it (the half-precision compute is really there)."""
    src, model_dir = family_checkpoint(tmp_path, "xlm-roberta", "SequenceClassification", SENTIMENT)
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": SENTIMENT[i % 3]} for i, t in enumerate(TEXTS)])
    losses = {}
    for precision in ("none", "bf16", "fp16"):
        report = kzoo.train(model_dir, tmp_path / precision, train, max_steps=20, batch_size=4, learning_rate=1e-3,
                            shuffle=False, mixed_precision=precision, max_length=32)  # (one length bucket)
        losses[precision] = np.array([row["loss"] for row in report["log"]])
    for precision in ("bf16", "fp16"):
        difference = np.abs(losses[precision] - losses["none"]).max()
        assert 0 < difference <= BOUND_MIXED, (precision, difference)
    assert all(np.asarray(v).dtype == np.float32 for v in kzoo.load(tmp_path / "bf16").weights)


def test_xlm_words_as_transformers_splits_them(tmp_path):
    """XLM's tokenizer runs in Python: `encode_words` equals Transformers' `tokenizer(words,
    is_split_into_words=True, truncation=True, max_length=...)`, and the training batches put each word's tag
    on its first token."""
    src, model_dir = family_checkpoint(tmp_path, "xlm", "TokenClassification", TAGS)
    ours, theirs = kzoo.load_tokenizer(model_dir), transformers.AutoTokenizer.from_pretrained(src)
    for words in [*WORDS, ["l'homme", "qu'il", "a", "vu", "!"], ["Dr.", "Smith's", "e-mail", "(x)"]]:
        for length in (None, 6):
            row, owners = ours.encode_words(words, length)
            assert row.ids == theirs(words, is_split_into_words=True, truncation=length is not None,
                                     max_length=length)["input_ids"], words
            assert owners[0] is None and owners[-1] is None and owners[1:-1] == sorted(owners[1:-1])
    rng = np.random.default_rng(0)
    tags = [[int(x) for x in rng.integers(0, len(TAGS), len(w))] for w in WORDS]
    examples = data.Examples("x", WORDS, None, tags, words=True)
    batch = next(iter(data.batches(examples, ours, batch_size=8, max_length=32, longest=32)))
    for r, words in enumerate(WORDS):
        row, owners = ours.encode_words(words, 32)
        firsts = [p for p, w in enumerate(owners) if w is not None and owners[p - 1] != w]
        labels = np.asarray(batch["labels"][r])
        assert [int(labels[p]) for p in firsts] == [tags[r][owners[p]] for p in firsts]
        assert (np.delete(labels, firsts) == -100).all()


def test_trainer_itself(trained, tmp_path):
    """kzoo train against transformers.Trainer (5.23) itself, on the same batches in the same order (a
    sequential sampler; a collator giving kzoo's batches): every step's logged loss and gradient norm, and the
    weights after. With gradient accumulation Trainer adds a step's batch losses up (it passes these models
    num_items_in_batch, which they ignore, so it does not divide): so does kzoo."""
    import torch

    src, model_dir, train, report = trained("xlm-roberta", "SequenceClassification")
    examples = data.read(train, "classifier", SENTIMENT)
    epoch = list(data.batches(examples, kzoo.load_tokenizer(model_dir), batch_size=STEPS["batch_size"],
                              max_length=report["max_length"], longest=report["max_length"]))

    def collate(indices):  # (the sequential sampler's batch k holds rows 3k..: kzoo's batch k)
        batch = epoch[indices[0] // 3]
        return {"input_ids": torch.as_tensor(np.asarray(batch["token_ids"]), dtype=torch.long),
                "attention_mask": torch.as_tensor(np.asarray(batch["padding_mask"]), dtype=torch.long),
                "labels": torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.long)}

    class Sequential(transformers.Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    arguments = transformers.TrainingArguments(
        str(tmp_path / "hf"), per_device_train_batch_size=3, gradient_accumulation_steps=2, max_steps=3,
        learning_rate=2e-3, weight_decay=0.01, warmup_steps=1, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, seed=0, dataloader_drop_last=False)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(src)
    trainer = Sequential(model=model, args=arguments, train_dataset=list(range(len(TEXTS))), data_collator=collate)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == [1, 2, 3]
    for ours, theirs in zip(report["log"], logged):
        assert abs(ours["loss"] - theirs["loss"]) <= 1e-5 and abs(ours["grad_norm"] - theirs["grad_norm"]) <= 1e-4, \
            (report["log"], logged)
    assert differs_from(report["out"], model, tmp_path) <= 1e-5
