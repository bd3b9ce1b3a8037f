"""XLM generation (kzoo.pipelines.generation) against a step-by-step PyTorch greedy decode of the same weights.

The reference loop does what Transformers 5.23's `XLMWithLMHeadModel.generate` does at each step
(`prepare_inputs_for_generation`): the whole sequence so far plus `config.mask_token_id`,
`langs` = the language id everywhere, no attention mask; the next token is the argmax of the
logits at the appended position. One test checks that loop against `generate` itself.
"""

import json

import numpy as np
import pytest
import torch
import transformers

import kzoo
from kzoo.cli import main
from kzoo.converters.convert import convert
from kzoo.errors import TokenizerError
from kzoo.pipelines.generation import GenerationError, Generator
from xlm_fixtures import xlm_checkpoint

PROMPTS = ["Paris is the capital of", "Le petit prince"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_greedy(ref, prompt_ids, max_new_tokens, lang_id, eos=None):
    """Transformers' greedy `generate`, written out: one full forward per new token."""
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        inp = torch.tensor([ids + [ref.config.mask_token_id]])
        langs = torch.full_like(inp, lang_id)
        with torch.no_grad():
            logits = ref(input_ids=inp, langs=langs).logits[0, -1]
        ids.append(int(logits.argmax()))
        if ids[-1] == eos:
            break
    return ids


def reference_step_logits(ref, token_ids, lang_id):
    out = []
    for i in range(1, len(token_ids)):
        inp = torch.tensor([token_ids[:i] + [ref.config.mask_token_id]])
        with torch.no_grad():
            out.append(ref(input_ids=inp, langs=torch.full_like(inp, lang_id)).logits[0, -1].numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Same weights three ways: an MLM-style (causal=false) config, a causal one, and a hub-like
    clm config (causal=false, trained_causal=true: kzoo attends causally by default)."""
    root = tmp_path_factory.mktemp("xlm_gen")
    out = {}
    variants = {"mlm": {}, "clm": {"causal": True}, "clm-hub": {"config_json": {"trained_causal": True}}}
    for name, kwargs in variants.items():
        src = xlm_checkpoint(root / name, seed=1, **kwargs)
        convert(src, root / name / "out")
        out[name] = (src, root / name / "out")
    return out


@pytest.fixture(scope="module")
def refs(models):
    """PyTorch models: attention as the config says, and the same weights with causal=True."""
    loaded = {}
    for name, (src, _) in models.items():
        loaded[name] = transformers.XLMWithLMHeadModel.from_pretrained(src).eval()
    causal_config = transformers.XLMConfig.from_pretrained(models["clm-hub"][0], causal=True)
    loaded["clm-hub causal"] = transformers.XLMWithLMHeadModel.from_pretrained(
        models["clm-hub"][0], config=causal_config).eval()
    return loaded


_GENERATORS = {}


def generator(models, name, causal=None):
    if (name, causal) not in _GENERATORS:
        _GENERATORS[name, causal] = Generator(models[name][1], causal=causal)
    return _GENERATORS[name, causal]


@pytest.mark.parametrize("name", ["mlm", "clm"])
def test_greedy_equals_pytorch_token_for_token(models, refs, name):
    gen = generator(models, name)
    assert gen.causal == (name == "clm")
    ref = refs[name]
    tok = gen.tokenizer
    seen = set()
    for lang, lang_id in (("en", 0), ("fr", 1)):
        results = gen(PROMPTS, max_new_tokens=24, lang=lang, ignore_eos=True)  # a batch, lengths differ
        for prompt, result in zip(PROMPTS, results):
            prompt_ids = tok.encode(prompt, lang=lang)
            want = reference_greedy(ref, prompt_ids, 24, lang_id)
            assert result["token_ids"] == want
            assert result["prompt_length"] == len(prompt_ids) and len(result["generated_ids"]) == 24
            seen.add(tuple(result["generated_ids"]))
    assert len(seen) == 4  # language and prompt both matter
    assert any(len(set(ids)) > 2 for ids in seen)  # not one token over and over


def test_reference_loop_is_transformers_generate(models, refs):
    ref = refs["clm"]
    prompt = generator(models, "clm").tokenizer.encode(PROMPTS[1], lang="fr")
    ref.config.lang_id = 1
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert out[0].tolist() == reference_greedy(ref, prompt, 12, 1)


def test_trained_causal_attends_causally_unless_told(models, refs):
    """xlm-clm-enfr-1024-like: causal=false in the config, trained_causal=true."""
    prompt = generator(models, "clm-hub").tokenizer.encode(PROMPTS[0])
    default = generator(models, "clm-hub")(PROMPTS[0], max_new_tokens=16, ignore_eos=True)
    assert generator(models, "clm-hub").causal
    assert default["token_ids"] == reference_greedy(refs["clm-hub causal"], prompt, 16, 0)
    bidirectional = generator(models, "clm-hub", causal=False)(PROMPTS[0], max_new_tokens=16, ignore_eos=True)
    assert bidirectional["token_ids"] == reference_greedy(refs["clm-hub"], prompt, 16, 0)  # Transformers'
    assert default["token_ids"] != bidirectional["token_ids"]


def test_cached_logits_equal_uncached_and_pytorch(models, refs):
    gen = generator(models, "clm")
    ids = gen.tokenizer.encode("Le petit prince est à Paris, la capitale de la France.", lang="fr")
    ids = ids + [40, 41, 2, 42, 43]  # a <pad> inside: Transformers' length rule, the cache's fall-back
    cached = gen.step_logits([ids], lang="fr", cached=True)[0]
    uncached = gen.step_logits([ids], lang="fr", cached=False)[0]
    want = reference_step_logits(refs["clm"], ids, 1)
    assert np.max(np.abs(cached - uncached)) <= 1e-4
    assert np.max(np.abs(uncached - want)) <= 1e-4
    mlm = generator(models, "mlm").step_logits([ids], lang="fr")
    assert np.max(np.abs(mlm[0] - reference_step_logits(refs["mlm"], ids, 1))) <= 1e-4


def test_stops_at_eos(models, refs):
    gen, ref = generator(models, "clm"), refs["clm"]
    full = gen(PROMPTS[0], max_new_tokens=24, lang="en", ignore_eos=True)
    new = full["generated_ids"]
    stop = next(t for i, t in enumerate(new) if i >= 2 and t not in new[:i])  # a token first seen mid-way
    result = gen(PROMPTS[0], max_new_tokens=24, lang="en", eos_token_id=stop)
    assert result["finished"] and result["generated_ids"] == new[:new.index(stop) + 1]
    prompt = gen.tokenizer.encode(PROMPTS[0])
    assert result["token_ids"] == reference_greedy(ref, prompt, 24, 0, eos=stop)
    ref.config.lang_id = 0
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=stop)
    assert out[0].tolist() == result["token_ids"]
    short = gen(PROMPTS[0], max_new_tokens=3, lang="en")
    assert short["generated_ids"] == new[:3] and not short["finished"]


@pytest.mark.parametrize("name", ["mlm", "clm"])
def test_top_k_1_and_beam_1_equal_greedy(models, name):
    gen = generator(models, name)
    greedy = gen(PROMPTS, max_new_tokens=12, lang="fr", ignore_eos=True)
    top1 = gen(PROMPTS, max_new_tokens=12, lang="fr", ignore_eos=True, sampler="top-k", k=1, seed=3)
    beam1 = gen(PROMPTS, max_new_tokens=12, lang="fr", ignore_eos=True, sampler="beam", num_beams=1)
    assert [r["token_ids"] for r in top1] == [r["token_ids"] for r in greedy]
    assert [r["token_ids"] for r in beam1] == [r["token_ids"] for r in greedy]


def test_options_at_construction(models):
    """kzoo.pipeline("text-generation", model, **options): the call's defaults, as Transformers' pipelines
    take them; the call's own win; an unknown one is a one-line error."""
    want = generator(models, "clm")(PROMPTS, max_new_tokens=5, lang="fr", ignore_eos=True)
    pipe = kzoo.pipeline("text-generation", models["clm"][1], max_new_tokens=5, lang="fr", ignore_eos=True)
    assert [r["token_ids"] for r in pipe(PROMPTS)] == [r["token_ids"] for r in want]
    assert all(len(r["generated_ids"]) == 3 for r in pipe(PROMPTS, max_new_tokens=3))
    with pytest.raises(GenerationError, match="unknown option.*top_p"):
        pipe(PROMPTS, top_p=0.5)


def test_seeds_make_sampling_reproducible(models):
    gen = generator(models, "clm")
    for sampler, kwargs in (("top-k", {"k": 50}), ("top-p", {"p": 0.95})):
        runs = [gen(PROMPTS[0], max_new_tokens=12, lang="fr", ignore_eos=True, sampler=sampler, seed=seed,
                    temperature=2.0, **kwargs)["generated_ids"] for seed in (7, 7, 8)]
        assert runs[0] == runs[1] and runs[0] != runs[2], sampler


@pytest.mark.parametrize("name", ["mlm", "clm"])
def test_beam_search_equals_transformers(models, refs, name):
    """Transformers' `generate(num_beams=...)`: ended beams set aside, length penalty, its stopping
    heuristic; with and without an eos that ends beams part-way."""
    gen, ref = generator(models, name), refs[name]
    ref.config.lang_id = 1
    for prompt in PROMPTS:
        ids = gen.tokenizer.encode(prompt, lang="fr")
        greedy = gen(prompt, max_new_tokens=12, lang="fr", ignore_eos=True)["generated_ids"]
        for eos, num_beams, length_penalty in ((None, 3, 1.0), (greedy[3], 3, 1.0), (greedy[5], 4, 2.0),
                                               (greedy[2], 2, 0.5)):
            ours = gen(prompt, max_new_tokens=12, lang="fr", sampler="beam", num_beams=num_beams,
                       length_penalty=length_penalty, eos_token_id=eos, ignore_eos=eos is None)
            with torch.no_grad():
                want = ref.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, num_beams=num_beams,
                                    length_penalty=length_penalty, eos_token_id=eos, pad_token_id=2)
            assert ours["token_ids"] == want[0].tolist(), (prompt, eos, num_beams, length_penalty)
            assert ours["finished"] == (eos is not None and ours["generated_ids"][-1] == eos)


def test_beam_search_after_a_pad_beam_is_dropped(tmp_path):
    """A causal model (seed 2) where some of 8 beams hold <pad> at two steps: those steps take
    the full re-run (Transformers' pad rule); when the beams holding a <pad> are dropped the others
    read the cache again, which must have been kept current meanwhile (it was not: other tokens)."""
    src = xlm_checkpoint(tmp_path, seed=2, causal=True)
    convert(src, tmp_path / "out")
    gen = Generator(tmp_path / "out")
    ref = transformers.XLMWithLMHeadModel.from_pretrained(src).eval()
    ref.config.lang_id = 1
    ids = gen.tokenizer.encode(PROMPTS[0], lang="fr")
    ours = gen(ids, max_new_tokens=14, lang="fr", sampler="beam", num_beams=8, ignore_eos=True)
    with torch.no_grad():
        want = ref.generate(torch.tensor([ids]), max_new_tokens=14, do_sample=False, num_beams=8,
                            eos_token_id=None, pad_token_id=2)
    assert ours["token_ids"] == want[0].tolist()


def test_errors(models, tmp_path):
    gen = generator(models, "clm")
    with pytest.raises(TokenizerError, match="en, fr"):
        gen(PROMPTS[0], lang="de")
    with pytest.raises(GenerationError, match="96 positions"):
        gen(PROMPTS[0], max_new_tokens=200)
    with pytest.raises(GenerationError, match="unknown sampler"):
        gen(PROMPTS[0], sampler="nucleus")
    convert(models["clm"][0], tmp_path / "backbone", task="backbone")
    with pytest.raises(GenerationError, match="LM head"):
        Generator(tmp_path / "backbone")


def test_python_api_and_cli(models, capsys):
    src, out = models["clm"]
    api = kzoo.generate(out, PROMPTS[1], max_new_tokens=8, lang="fr", ignore_eos=True)
    assert isinstance(kzoo.pipeline("text-generation", out), Generator)
    capsys.readouterr()
    assert main(["generate", str(out), PROMPTS[1], "--max-new-tokens", "8", "--lang", "fr", "--ignore-eos",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["token_ids"] == api["token_ids"] and printed["text"] == api["text"]
    assert printed["generated_ids"] == api["generated_ids"] and printed["text"]
    assert main(["generate", str(out), PROMPTS[1], "--max-new-tokens", "8", "--lang", "fr", "--ignore-eos"]) == 0
    assert capsys.readouterr().out.strip() == api["generated_text"]
    assert api["generated_text"].startswith("le petit prince")
    beam = kzoo.generate(out, PROMPTS[1], max_new_tokens=8, lang="fr", sampler="beam", num_beams=3, length_penalty=2.0)
    assert main(["generate", str(out), PROMPTS[1], "--max-new-tokens", "8", "--lang", "fr", "--num-beams", "3",
                 "--length-penalty", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["token_ids"] == beam["token_ids"]
    assert main(["generate", str(out), PROMPTS[1], "--sampler", "top-p", "--num-beams", "3"]) == 2
    assert "beam search" in capsys.readouterr().err
    with pytest.raises(GenerationError, match="finite"):
        kzoo.generate(out, PROMPTS[1], sampler="beam", length_penalty=float("nan"))
    assert main(["generate", str(out), PROMPTS[1], "--lang", "de"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "en, fr" in err and "Traceback" not in err
