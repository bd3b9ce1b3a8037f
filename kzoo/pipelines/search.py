"""The search loops of text generation, in TF ops: keras-hub's samplers (greedy, top-k, top-p) bounded to
the requested length, and Transformers' beam search written out (`BeamSearch`). They run on any model
through keras-hub's `next(buffer, cache, index) -> (logits, hidden_states, cache)` protocol;
kzoo.pipelines.generation feeds them XLM."""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from kzoo.errors import GenerationError


class _Bounded:
    """Mixed into a keras-hub sampler: its loop also stops once `index` reaches `self.end`
    (keras-hub runs to the end of the buffer, whose length is fixed for XLA)."""

    end = None  # a scalar tensor, set while tracing

    def run_loop(self, cond, body, model=None, loop_vars=None, maximum_iterations=None):
        end = self.end

        def bounded(*state):  # state: (buffer, cache, index, ...) in every keras-hub sampler
            return ops.logical_and(cond(*state), state[2] < end)

        return super().run_loop(bounded, body, model=model, loop_vars=loop_vars,
                                maximum_iterations=maximum_iterations)


def make_sampler(sampler="greedy", k=5, p=0.9, temperature=1.0):
    """A keras-hub sampler (with `_Bounded`) for kzoo's sampler names (beam search is kzoo's own)."""
    from keras_hub import samplers

    table = {
        "greedy": (samplers.GreedySampler, {}),
        "top-k": (samplers.TopKSampler, {"k": k}),
        "top-p": (samplers.TopPSampler, {"p": p}),
    }
    if sampler not in table:
        raise GenerationError(f"no keras-hub sampler {sampler!r}; it serves {', '.join(table)}")
    if not temperature > 0:
        raise GenerationError(f"temperature must be > 0, got {temperature}")
    cls, kwargs = table[sampler]
    return type(f"Bounded{cls.__name__}", (_Bounded, cls), {})(temperature=temperature, **kwargs)


class Beams(NamedTuple):
    """The state of `BeamSearch` (tf.while_loop's loop variables)."""

    index: object  # the position being generated
    running: object  # [n, L] the running beams
    scores: object  # [n] their summed log-probabilities
    cache: object  # the key/value cache (a tuple per layer; () without one), rows following the beams
    pool: object  # [n, L] finished hypotheses
    pool_scores: object  # [n] their scores (sum / length ** length_penalty)
    pool_done: object  # [n] slots holding a hypothesis
    pool_length: object  # [n] their generated lengths
    improvable: object  # can a running beam still beat the pool's worst?
    all_hit: object  # did every continuation end at the last step?


class BeamSearch:
    """Transformers' beam search (`GenerationMixin._beam_search`, do_sample=False, early_stopping=False),
    in TF ops. keras-hub's BeamSampler computes another function once a beam ends (it keeps extending
    ended beams), so this one is written out: per step the 2 x n best continuations of all beams; those
    ending in eos (or at the last position) among the first n go to a pool of finished hypotheses scored
    by sum of log-probabilities / generated length ** length_penalty, the best n others continue; it
    stops when no running beam can beat the pool."""

    def __init__(self, n, vocabulary_size, start, end, eos, length_penalty):
        self.n, self.keep, self.vocab = n, 2 * n, vocabulary_size
        self.start, self.end, self.eos, self.length_penalty = start, end, eos, length_penalty

    def initial(self, buffer, cache):
        import tensorflow as tf

        n = self.n
        return Beams(self.start, buffer, tf.concat([[0.0], tf.fill([n - 1], -1e9)], 0), cache, buffer,
                     tf.fill([n], -1e9), tf.zeros([n], tf.bool), tf.zeros([n], tf.int32), tf.constant(True),
                     tf.constant(False))

    def go_on(self, state):
        """Transformers' stopping rule with early_stopping=False."""
        import tensorflow as tf

        return tf.logical_and(state.improvable, tf.logical_not(state.all_hit))

    def advance(self, state, logits):
        import tensorflow as tf

        n, keep, index = self.n, self.keep, state.index
        total = tf.nn.log_softmax(tf.cast(logits, tf.float32)) + state.scores[:, None]  # [n, V]
        top_scores, top = tf.math.top_k(tf.reshape(total, [-1]), keep)
        source, token = top // self.vocab, top % self.vocab
        columns = tf.range(tf.shape(state.running)[1])[None, :]
        candidates = tf.where(columns == index, token[:, None], tf.gather(state.running, source))
        hits = tf.logical_or(tf.equal(token, self.eos), index + 1 >= self.end)
        # the best continuations that did not end run on; each cache row follows its beam
        alive = top_scores + tf.cast(hits, tf.float32) * -1e9
        chosen = tf.math.top_k(alive, n).indices
        cache = tuple(tf.gather(c, tf.gather(source, chosen)) for c in state.cache) if state.cache else ()
        state = state._replace(running=tf.gather(candidates, chosen), scores=tf.gather(alive, chosen), cache=cache)
        # ended ones among the first n join the pool, which keeps its n best
        generated = index + 1 - self.start
        ended = tf.logical_and(hits, tf.range(keep) < n)
        final = top_scores / tf.cast(generated, tf.float32) ** self.length_penalty
        final += tf.cast(tf.logical_not(state.improvable), tf.float32) * -1e9
        final += tf.cast(tf.logical_not(ended), tf.float32) * -1e9
        merged = tf.concat([state.pool_scores, final], 0)
        best = tf.math.top_k(merged, n).indices
        pool_done = tf.gather(tf.concat([state.pool_done, ended], 0), best)
        pool_scores = tf.gather(merged, best)
        # can the best running beam still beat the pool's worst? (Transformers' heuristic)
        hope = state.scores[0] / tf.cast(index + 1 - self.start, tf.float32) ** self.length_penalty
        worst = tf.where(pool_done, tf.reduce_min(pool_scores), -1e9)
        return state._replace(
            index=index + 1, pool=tf.gather(tf.concat([state.pool, candidates], 0), best), pool_scores=pool_scores,
            pool_done=pool_done, pool_length=tf.gather(tf.concat([state.pool_length, tf.fill([keep], generated)], 0),
                                                       best),
            improvable=tf.logical_and(state.improvable, tf.reduce_any(hope > worst)), all_hit=tf.reduce_all(hits))
