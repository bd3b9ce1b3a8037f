"""Text generation with XLM: greedy, top-k, top-p and beam search, the whole loop one XLA program.

    import kzoo
    kzoo.generate("out/xlm-clm-enfr-1024", "Le chat", lang="fr", max_new_tokens=20)
    # {"generated_text", "text", "token_ids", "prompt_length", "generated_ids", "finished"}

    gen = kzoo.pipeline("text-generation", "out/xlm-clm-enfr-1024")   # a Generator: keeps its programs
    gen(["Hello", "Bonjour"], lang="fr", sampler="top-p", p=0.9, seed=0)

What Transformers 5.23 does, and kzoo with it
---------------------------------------------
`XLMWithLMHeadModel.generate` runs the whole model again at every step (no cache) on what its
`prepare_inputs_for_generation(ids)` makes of the text so far: it *appends one token*,

    input_ids = [*ids, config.mask_token_id]       # 0, i.e. <s>, on every hub config
    langs     = [config.lang_id] * len(input_ids)  # one language everywhere (None: no langs)
    no attention_mask, no token types, positions 0 .. len(ids)

and the next token is read from the logits *at that appended position*. So XLM predicts the
next word the way an MLM fills a mask at the end of the text, with `<s>` standing in for the
mask (not XLM's MLM mask `<special1>`, which is the config's `mask_index`). That holds for the
causal xlm-clm-* checkpoints too, although they were trained to predict the next word at the
last *real* position: Transformers' scheme is one position off from their training, and kzoo
follows Transformers. XLM's own masks apply (`get_masks`): causal attention sees keys <= query;
bidirectional attention sees every non-padding key, where, Transformers-style, "padding" is the
*last* n positions when the text holds n <pad> tokens (a degenerate case, reproduced here too).
A text prompt is encoded as `tokenizer(prompt)["input_ids"]`, i.e. `<s> prompt </s>`
(`add_special_tokens=False`: the prompt's tokens alone); a list of ids is used as given.
Generation stops at eos (`</s>`) unless `ignore_eos`; the eos is kept in the output.
`lang=None` is Transformers' default: the config's `lang_id` (the model's first language).

Attention (`causal`): None follows the model: causal if its config says `causal` or
`trained_causal` (xlm-clm-enfr-1024's config says causal=false although it was trained causally;
Transformers attends bidirectionally there, kzoo causally); True / False force it. kzoo's
results equal Transformers' with the same `config.causal`.

How
---
A buffer [batch, max_length] holds each prompt followed by room for the new tokens;
keras-hub's samplers run the loop with their `next(buffer, cache, index) -> logits at index`
protocol (prompt tokens are kept where prompts of a batch differ in length: every row gets
what Transformers gives for that prompt alone), and the whole loop, prefill included, is one
`tf.function(jit_compile=True)` program per (batch, max_length, sampler, k or num_beams).
The model runs through XLMMaskedLM's own entry points (`call_with_cache`, `generation_logits`);
this module holds the search loops only.
  causal attention: a key/value cache per layer, [B, 2, heads, max_length, head_dim]. Step
    `index` runs two tokens: the real token at index-1 (its keys/values stay) and the mask
    token at index (overwritten by the real one at the next step). A text holding <pad>
    falls back to the full re-run below (Transformers' padding rule moves with the length).
  bidirectional attention: no cache can be right (every position sees the new token): each
    step re-runs the whole buffer, keys after `index` hidden.
Samplers (keras_hub.samplers but beam; `temperature` divides the logits first, as Transformers' does):
  greedy  argmax: Transformers' do_sample=False, num_beams=1, token for token.
  top-k   a draw among the k likeliest tokens (Transformers' top_k: the same distribution).
  top-p   a draw from the likeliest tokens until their mass reaches p (Transformers' top_p;
          keras-hub keeps a token when the mass above it is <= p, Transformers when < p:
          they differ only on exact ties).
  beam    Transformers' beam search (num_beams, length_penalty=1.0, early_stopping=False),
          written out in `kzoo.pipelines.search.BeamSearch` (keras-hub's BeamSampler keeps extending
          ended beams: another function); one prompt at a time, temperature not applied.
Draws use Keras' stateless RNG from `seed`: reproducible in kzoo, not torch's draws.
"""

from __future__ import annotations

import inspect
import secrets

import numpy as np
from keras import ops

from kzoo.errors import GenerationError, TokenizerError
from kzoo.pipelines.base import as_runner, as_tokenizer
from kzoo.pipelines.search import BeamSearch, make_sampler

SAMPLERS = ("greedy", "top-k", "top-p", "beam")
BUCKET = 32  # buffer lengths are rounded up to a multiple of this: fewer programs to compile
__all__ = ["GenerationError", "Generator", "generate"]


def generate(model, prompt, *, tokenizer=None, causal=None, **kwargs):
    """`Generator(model, tokenizer, causal)(prompt, **kwargs)`; see `Generator.__call__`."""
    return Generator(model, tokenizer=tokenizer, causal=causal)(prompt, **kwargs)


class Generator:
    """Generation with an XLM LM-head model (`XLMMaskedLM`, i.e. `kzoo convert --task masked_lm`).

    model: a kzoo model dir or the Keras model; tokenizer: needed for text prompts (a model
    dir's own is loaded); causal: None (the model's config), True or False (see the module
    docstring). Compiled programs are kept, so reuse a Generator for repeated calls.
    """

    name = "text-generation"

    def __init__(self, model, tokenizer=None, causal=None, jit_compile=True, **defaults):
        self.defaults = self._checked(defaults)  # the call's options at construction, as Transformers' pipelines
        runner = as_runner(model)
        model = getattr(runner, "model", None)  # a Keras model: generation compiles its own programs
        if not hasattr(model, "call_with_cache"):
            what = runner.config.get("architecture") or type(model or runner).__name__
            task = runner.config.get("task")
            raise GenerationError(f"generation needs an XLM model with its LM head (masked_lm), as a model dir "
                                  f"or a Keras model; this is {what!r}" + (f" ({task})" if task else ""))
        self.model, self.backbone = model, model.backbone
        # no tokenizer stored: token-id prompts only
        self.tokenizer = as_tokenizer(tokenizer, runner) if tokenizer is not None or runner.has_tokenizer() else None
        self.causal = bool(self.backbone.causal or self.backbone.trained_causal) if causal is None else bool(causal)
        self.jit_compile = jit_compile
        self._programs = {}

    # ---- the model, step by step ---------------------------------------------------------------

    def _full_logits(self, buffer, index, lang_id):
        return self.model.generation_logits(buffer, index, lang_id, self.causal)

    def _new_cache(self, buffer):
        return self.model.new_cache(ops.shape(buffer)[0], ops.shape(buffer)[1])

    def _cached_logits(self, buffer, cache, index, lang_id):
        """Logits at `index` from the cache: runs buffer[:, index-1] and the mask token."""
        previous = ops.expand_dims(ops.take(buffer, index - 1, axis=1), 1)
        mask_token = ops.full_like(previous, self.backbone.generation_mask_token_id)
        x, cache = self.model.call_with_cache(ops.concatenate([previous, mask_token], axis=1), cache, index - 1,
                                              lang_id)
        return self.model.lm_logits(x[:, 1]), cache

    def _next(self, lang_id):
        """keras-hub's `next(buffer, cache, index) -> (logits, hidden_states, cache)`."""
        if not self.causal:
            return lambda buffer, cache, index: (self._full_logits(buffer, index, lang_id), None, cache)
        pad = self.backbone.pad_token_id
        if self.backbone.generation_mask_token_id == pad:  # the appended token is a <pad>: a full re-run
            return lambda buffer, cache, index: (self._full_logits(buffer, index, lang_id), None, cache)

        def next(buffer, cache, index):
            seen = ops.less(ops.arange(ops.shape(buffer)[1], dtype="int32"), index)
            has_pad = ops.any(ops.logical_and(ops.equal(buffer, pad), seen[None, :]))
            # The cache is written at every step, also where <pad> takes the full re-run: beam
            # search can drop the beams holding a <pad>, and the others then read the cache again.
            cached, cache = self._cached_logits(buffer, cache, index, lang_id)
            logits = ops.cond(has_pad, lambda: self._full_logits(buffer, index, lang_id), lambda: cached)
            return logits, None, cache

        return next

    def _prefill(self, buffer, lang_id):
        """Every position's keys and values, causally (the cache a causal search starts from)."""
        return self.model.call_with_cache(buffer, self._new_cache(buffer), 0, lang_id)[1]

    # ---- compiled programs ---------------------------------------------------------------------

    def _program(self, sampler, k):
        """(sampler, compiled program) for these settings; k fixes shapes, the
        rest (language, start, end, eos, temperature, p) are inputs of one program."""
        key = (sampler, k if sampler == "top-k" else None)
        if key not in self._programs:
            import tensorflow as tf

            chosen = make_sampler(sampler, k=k)

            def run(buffer, prompt_mask, lang_id, start, end, eos, temperature, p):
                chosen.end, chosen.temperature, chosen.p = end, temperature, p  # tensors, while tracing
                cache = self._prefill(buffer, lang_id) if self.causal else None
                return chosen(self._next(lang_id), buffer, cache=cache, index=start, mask=prompt_mask,
                              stop_token_ids=(eos,))  # eos -1: never stops early

            self._programs[key] = (chosen, tf.function(run, jit_compile=self.jit_compile))
        return self._programs[key]

    def _beam_program(self, num_beams):
        """Transformers' beam search for one prompt as one compiled program (see `BeamSearch`)."""
        key = ("beam-transformers", num_beams)
        if key not in self._programs:
            import tensorflow as tf

            def run(buffer, lang_id, start, end, eos, length_penalty):
                # buffer [n, L]: the prompt in every row, <pad> after; start: its length
                step = self._next(lang_id)
                search = BeamSearch(num_beams, self.backbone.vocabulary_size, start, end, eos, length_penalty)

                def body(state):
                    logits, _, cache = step(state.running, state.cache, state.index)
                    return (search.advance(state._replace(cache=cache), logits),)

                cache = self._prefill(buffer, lang_id) if self.causal else ()
                (final,) = tf.while_loop(search.go_on, body, (search.initial(buffer, cache),))
                return final.pool[0], final.pool_length[0]  # the best hypothesis and its generated length

            self._programs[key] = tf.function(run, jit_compile=self.jit_compile)
        return self._programs[key]

    def _beam_search(self, prompts, max_new_tokens, lang_id, num_beams, eos, length_penalty, max_length):
        program = self._beam_program(num_beams)
        sequences = []
        for ids in prompts:  # one at a time: Transformers' beam search of that prompt alone
            buffer = np.full((num_beams, max_length), self.backbone.pad_token_id, np.int32)
            buffer[:, :len(ids)] = ids
            best, length = program(buffer, np.int32(lang_id), np.int32(len(ids)),
                                   np.int32(len(ids) + max_new_tokens), np.int32(eos), np.float32(length_penalty))
            sequences.append(np.asarray(best)[len(ids):len(ids) + int(length)].tolist())
        return sequences

    # ---- public ----------------------------------------------------------------------------------

    def lang_id(self, lang=None):
        """(language id fed to the model, language code for the tokenizer) for `lang`."""
        languages = self.backbone.languages
        if lang is None:  # Transformers: config.lang_id
            lid = self.backbone.generation_lang_id
            code = languages[lid] if languages and lid is not None and 0 <= lid < len(languages) else None
            return (-1 if lid is None else int(lid)), code
        if not languages:
            raise GenerationError(f"this model has no languages; lang={lang!r} is not accepted")
        if lang not in languages:
            raise TokenizerError(f"unknown language {lang!r}; this model has: {', '.join(languages)}")
        return languages.index(lang), lang

    def encode(self, prompt, lang=None, add_special_tokens=True):
        """A prompt's ids: a text through the tokenizer (`<s> text </s>`), or ids as given."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise GenerationError("a text prompt needs a tokenizer: pass tokenizer=, or token ids")
            ids = self.tokenizer.encode(prompt, lang=lang, add_special_tokens=add_special_tokens)
        else:
            ids = [int(i) for i in np.asarray(prompt).reshape(-1)]
            bad = [i for i in ids if not 0 <= i < self.backbone.vocabulary_size]
            if bad:
                raise GenerationError(f"token id {bad[0]} is outside the vocabulary "
                                      f"(0..{self.backbone.vocabulary_size - 1})")
        if not ids:
            raise GenerationError("the prompt is empty (no tokens to start from)")
        return ids

    def generate_ids(self, prompts, max_new_tokens=20, lang_id=0, sampler="greedy", k=5, p=0.9, num_beams=4,
                     temperature=1.0, seed=None, ignore_eos=False, max_length=None, eos_token_id=None,
                     length_penalty=1.0):
        """Token-level generation: prompts, a list of id lists -> (full id lists, finished flags)."""
        if sampler not in SAMPLERS:
            raise GenerationError(f"unknown sampler {sampler!r}; kzoo has {', '.join(SAMPLERS)}")
        if not temperature > 0:
            raise GenerationError(f"temperature must be > 0, got {temperature}")
        if max_new_tokens < 0:
            raise GenerationError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if sampler == "top-k" and not 1 <= k <= self.backbone.vocabulary_size:
            raise GenerationError(f"k must be in 1..{self.backbone.vocabulary_size}, got {k}")
        if sampler == "top-p" and not 0 < p <= 1:
            raise GenerationError(f"p must be in (0, 1], got {p}")
        if sampler == "beam" and num_beams < 1:
            raise GenerationError(f"num_beams must be >= 1, got {num_beams}")
        if sampler == "beam" and not np.isfinite(length_penalty):
            raise GenerationError(f"length_penalty must be a finite number, got {length_penalty}")
        lengths = [len(ids) for ids in prompts]
        needed, limit = max(lengths) + max_new_tokens, self.backbone.max_sequence_length
        if needed > limit:
            raise GenerationError(f"the prompt ({max(lengths)} tokens) + max_new_tokens ({max_new_tokens}) "
                                  f"exceeds the model's {limit} positions")
        if max_length is None:
            max_length = min(limit, -(-needed // BUCKET) * BUCKET)
        elif not needed <= max_length <= limit:
            raise GenerationError(f"max_length must be in {needed}..{limit}, got {max_length}")
        if max_new_tokens == 0:
            return [list(ids) for ids in prompts], [False] * len(prompts)

        buffer = np.full((len(prompts), max_length), self.backbone.pad_token_id, np.int32)
        prompt_mask = np.zeros(buffer.shape, bool)
        for row, ids in enumerate(prompts):
            buffer[row, :len(ids)] = ids
            prompt_mask[row, :len(ids)] = True
        eos = int(self.backbone.eos_token_id if eos_token_id is None else eos_token_id)
        if sampler == "beam":
            new = self._beam_search(prompts, max_new_tokens, lang_id, num_beams, -1 if ignore_eos else eos,
                                    length_penalty, max_length)
            return ([list(ids) + ids_new for ids, ids_new in zip(prompts, new)],
                    [not ignore_eos and bool(ids_new) and ids_new[-1] == eos for ids_new in new])
        chosen, program = self._program(sampler, k)
        if hasattr(chosen, "seed_generator"):  # the draws start from `seed` at every call
            seed = secrets.randbelow(2**31) if seed is None else int(seed)
            chosen.seed_generator.state.assign(np.array([seed, 0], chosen.seed_generator.state.dtype))
        out = np.asarray(program(buffer, prompt_mask, np.int32(lang_id), np.int32(min(lengths)), np.int32(needed),
                                 np.int32(-1 if ignore_eos else eos), np.float32(temperature), np.float32(p)))
        sequences, finished = [], []
        for row, n in enumerate(lengths):
            new = out[row, n:n + max_new_tokens].tolist()
            done = not ignore_eos and eos in new
            if done:
                new = new[:new.index(eos) + 1]
            sequences.append(list(prompts[row]) + new)
            finished.append(done)
        return sequences, finished

    def __call__(self, prompts, **options):
        """Generates a continuation of each prompt (`generate_texts`; options at call, else the constructor's)."""
        return self.generate_texts(prompts, **{**self.defaults, **self._checked(options)})

    def _checked(self, options):
        takes = [name for name in inspect.signature(self.generate_texts).parameters if name != "prompts"]
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise GenerationError(f"text-generation: unknown option(s) {', '.join(unknown)}; it takes {', '.join(takes)}")
        return options

    def generate_texts(self, prompts, max_new_tokens=20, lang=None, sampler="greedy", k=5, p=0.9, num_beams=4,
                       temperature=1.0, seed=None, ignore_eos=False, add_special_tokens=True, max_length=None,
                       eos_token_id=None, length_penalty=1.0):
        """Generates a continuation of each prompt.

        prompts: a text, a list of token ids, or a list of either. lang: a language code of the
        model (None: Transformers' default, the config's lang_id). sampler: "greedy", "top-k"
        (k), "top-p" (p), "beam" (num_beams, length_penalty: Transformers' beam search, which
        ignores temperature); temperature; seed (None: a fresh one). Stops at
        eos unless ignore_eos, after max_new_tokens at most. max_length: the buffer's fixed
        length (default: prompt + max_new_tokens rounded up to a multiple of 32). eos_token_id:
        the token to stop at (default: the model's eos, `</s>`).

        Returns, per prompt (a list for a list of prompts), a dict: token_ids (prompt + new),
        prompt_length, generated_ids, finished (ended with eos), and with a tokenizer
        generated_text (all of it decoded, special tokens skipped) and text (the new part).
        """
        if isinstance(prompts, np.ndarray):
            single = prompts.ndim == 1
        else:
            single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], (int, np.integer)))
        prompts = [prompts] if single else list(prompts)
        if not prompts:
            raise GenerationError("no prompts given")
        lang_id, code = self.lang_id(lang)
        ids = [self.encode(prompt, code, add_special_tokens) for prompt in prompts]
        sequences, finished = self.generate_ids(
            ids, max_new_tokens, lang_id, sampler=sampler, k=k, p=p, num_beams=num_beams,
            temperature=temperature, seed=seed, ignore_eos=ignore_eos, max_length=max_length,
            eos_token_id=eos_token_id, length_penalty=length_penalty)
        results = []
        for prompt_ids, sequence, done in zip(ids, sequences, finished):
            item = {"token_ids": sequence, "prompt_length": len(prompt_ids),
                    "generated_ids": sequence[len(prompt_ids):], "finished": done}
            if self.tokenizer is not None:
                item["generated_text"] = self.tokenizer.decode(sequence, skip_special_tokens=True)
                item["text"] = self.tokenizer.decode(item["generated_ids"], skip_special_tokens=True)
            results.append(item)
        return results[0] if single else results

    def step_logits(self, token_ids, lang=None, cached=None):
        """The logits `generate` sees when teacher-forced on token_ids [B, n] (for tests):
        [B, n-1, V], row i predicting position i+1 from token_ids[:, :i+1] + the mask token.
        cached: use the key/value cache (default: when attention is causal)."""
        import tensorflow as tf

        cached = self.causal if cached is None else cached
        if cached and not self.causal:
            raise GenerationError("the cache needs causal attention")
        lang_id, _ = self.lang_id(lang)
        buffer = tf.constant(np.asarray(token_ids, np.int32))
        n = buffer.shape[1]

        def run(buffer):  # eagerly: a traced loop of n steps takes long to build
            out = []
            cache = self._prefill(buffer, lang_id) if cached else None
            for index in range(1, n):
                if cached:  # `next` as the samplers call it (with its fall-back for <pad>)
                    logits, _, cache = self._next(lang_id)(buffer, cache, tf.constant(index))
                else:
                    logits = self._full_logits(buffer, tf.constant(index), lang_id)
                out.append(logits)
            return ops.stack(out, axis=1)

        return np.asarray(run(buffer))
