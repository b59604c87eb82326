"""The plain searches (seqattn.search) and their rules (seqattn_runtime.rules): beam search against
greedy, n-best, the exact stop, the length penalty, sampling, no sentences."""

import numpy as np
import pytest
import torch
from conftest import random_model, sources

from seqattn.fast import Decoding
from seqattn.fast import search as engine
from seqattn.search import Sampling, beam_search, greedy
from seqattn_runtime.rules import Hypothesis, cannot_improve, filter_logits


@pytest.mark.parametrize("att,feed,rnn", [("dot", False, "lstm"), ("concat", True, "gru"), ("none", False, "lstm")])
def test_beam_one_is_greedy(att, feed, rnn):
    model = random_model(att, feed, rnn)
    src, src_len, limit = sources()
    g = greedy(model, src, src_len, limit)
    b = beam_search(model, src, src_len, limit, beam=1)
    for x, (y,) in zip(g, b):
        assert x.ids == y.ids and x.finished == y.finished
        assert x.score == pytest.approx(y.score, abs=1e-5)
        if x.attention is not None:
            assert np.allclose(x.attention, y.attention)


def test_beam_finds_better_model_scores_and_sorted_distinct_nbest():
    model = random_model()
    src, src_len, limit = sources(40, seed=3)
    g = greedy(model, src, src_len, limit)
    b = beam_search(model, src, src_len, limit, beam=5, nbest=5)
    assert sum(n[0].score for n in b) > sum(h.score for h in g)
    assert sum(n[0].score >= h.score - 1e-5 for n, h in zip(b, g)) >= 0.9 * len(g)
    for nbest in b:
        assert len(nbest) == 5
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        assert len({tuple(h.ids) for h in nbest}) == 5
        for h in nbest:
            assert h.attention.shape == (len(h.ids) + h.finished, h.attention.shape[1])
            assert np.allclose(h.attention.sum(-1), 1.0, atol=1e-5)


def test_beam_search_stops_a_sentence_once_nothing_alive_can_win():
    assert not cannot_improve([], 1, -5.0, 3, 20, 0.0)                       # nothing finished yet
    finished = [Hypothesis([5], -1.0, None, True), Hypothesis([6], -2.0, None, True)]
    assert not cannot_improve(finished, 1, -0.9, 3, 20, 0.0)    # an alive one is still better than -1.0
    assert cannot_improve(finished, 1, -1.5, 3, 20, 0.0)        # raw scores only fall: -1.5 stays below -1.0
    assert not cannot_improve(finished, 2, -1.5, 3, 20, 0.0)    # ... but it can still beat the second, -2.0
    assert not cannot_improve(finished, 1, -2.0, 3, 13, 1.0)    # at length 13: -2.0 / ((5 + 13) / 6) = -0.67
    assert cannot_improve(finished, 1, -4.0, 3, 13, 1.0)        # -4.0 / 3 = -1.33 < -1.0
    # alpha < 0: the penalty 6 / (5 + length) is largest at the shortest end, length + 1
    assert cannot_improve(finished, 1, -0.8, 3, 20, -1.0)       # ending at 4: -0.8 * 9 / 6 = -1.2 < -1.0
    assert not cannot_improve(finished, 1, -0.8, 1, 20, -1.0)   # ending at 2: -0.8 * 7 / 6 = -0.93
    # the early stop returns what waiting for `beam` finished hypotheses returns (nbest=5 has to wait)
    model = random_model()
    src, src_len, limit = sources(40, seed=4)
    for alpha in (0.0, 1.0):
        first = [n[0] for n in beam_search(model, src, src_len, limit, beam=5, alpha=alpha, nbest=1)]
        waited = [n[0] for n in beam_search(model, src, src_len, limit, beam=5, alpha=alpha, nbest=5)]
        assert [h.ids for h in first] == [h.ids for h in waited]
        assert [h.score for h in first] == pytest.approx([h.score for h in waited], abs=1e-5)


def test_length_penalty_lengthens_outputs():
    model = random_model()
    src, src_len, limit = sources(40, seed=5)
    mean_len = lambda hyps: sum(len(n[0].ids) for n in hyps) / len(hyps)
    short = mean_len(beam_search(model, src, src_len, limit, beam=5, alpha=0.0))
    long = mean_len(beam_search(model, src, src_len, limit, beam=5, alpha=3.0))
    assert long > short


@pytest.mark.parametrize("top_k,top_p,temperature", [(0, 1.0, 1.0), (3, 1.0, 0.7), (0, 0.8, 1.5)])
def test_sampling_draws_each_sentence_alike_alone_in_a_batch_and_in_the_engine(top_k, top_p, temperature):
    """A draw is a function of (seed, key, step): the same seed gives the same samples, in the plain search
    and the engine, whatever the batch and its order; another seed other ones."""
    model = random_model()
    src, src_len, limit = sources(16, seed=1)
    cut = lambda seed: Sampling(temperature, top_k, top_p, seed)
    draws = lambda seed: [h.ids for h in greedy(model, src, src_len, limit, sampling=cut(seed))]
    assert draws(11) == draws(11)
    assert draws(11) != draws(12)
    plain = greedy(model, src, src_len, limit, sampling=cut(11))
    fast = engine.greedy(Decoding(model), src, src_len, limit, sampling=cut(11), width=5)
    assert [h.ids for h in fast] == [h.ids for h in plain]
    assert [h.score for h in fast] == pytest.approx([h.score for h in plain], abs=1e-4)
    for i in (0, 7, 15):   # alone, under its key
        n = int(src_len[i])
        (alone,) = greedy(model, src[i : i + 1, :n], src_len[i : i + 1], limit[i : i + 1], sampling=cut(11), keys=[i])
        assert alone.ids == plain[i].ids
    top1 = greedy(model, src, src_len, limit, sampling=Sampling(temperature, 1, top_p, 11))   # the argmax only
    assert [h.ids for h in top1] == [h.ids for h in greedy(model, src, src_len, limit)]


def test_filter_logits_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert np.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert np.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]


def test_searches_of_no_sentences_return_nothing():
    model = random_model()
    src, src_len, limit = sources(3)
    none = torch.zeros(0, dtype=torch.long)
    assert engine.greedy(model, src[:0], src_len[:0], limit[:0], width=2) == []
    assert engine.beam_search(model, src[:0], none, none, beam=3, width=2) == []
    assert greedy(model, src[:0], src_len[:0], limit[:0]) == [] and beam_search(model, src[:0], none, none, 3) == []


@pytest.mark.parametrize("chunk", [1, 3, 16, 32])
def test_best_of_is_a_stable_sorts_first_columns(chunk):
    """The chunked selection returns each row's m largest values' columns as a stable sort by value does:
    largest first, equal values (ties, -inf) in column order, on rows wider than the chunks and narrower."""
    from seqattn_runtime.search import best_of

    rng = np.random.default_rng(chunk)
    for _ in range(300):
        n, w = int(rng.integers(1, 6)), int(rng.integers(1, 700))
        m = int(rng.integers(1, min(w, 12) + 1))
        x = (rng.integers(-3, 3, (n, w)) * rng.choice([1.0, 10.0, 0.1])).astype(np.float32)   # many ties
        x[rng.random((n, w)) < rng.random()] = -np.inf
        assert np.array_equal(best_of(x, m, chunk), np.argsort(-x, axis=1, kind="stable")[:, :m])
    x = rng.standard_normal((4, 5000)).astype(np.float32)
    assert np.array_equal(best_of(x, 10), np.argsort(-x, axis=1, kind="stable")[:, :10])


def test_best_of_groups_wide_rows_and_ranks_ties_in_column_order():
    """Rows wider than 4 x m x depth go through the strided groups: with distinct values (no row falls back
    to the whole-row ranking), with ties inside the m best, with a group left out tying a chosen one at the
    boundary (a value of lower column must win), with -inf beams and with widths not a multiple of depth."""
    from seqattn_runtime.search import best_of

    rng = np.random.default_rng(7)
    for w in (5 * 10 * 32, 40000, 8000 * 5 + 17, 2 * 4 * 32 + 3):
        m = 10 if w > 2000 else 2
        x = rng.standard_normal((6, w)).astype(np.float32)
        x[1, rng.choice(w, 3 * m, replace=False)] = x[1].max() + 1.0           # ties among the best
        cols = rng.choice(w, 2, replace=False)
        x[2, cols] = np.sort(x[2])[-m]                                         # a tie at the m-th value
        x[3, w // 5 :] = -np.inf                                               # beams that are not alive
        x[4, :] = -np.inf
        x[4, rng.choice(w, m // 2 + 1, replace=False)] = 0.5                   # fewer finite values than m
        x[5, -1] = x[5].max() + 1.0                                            # the best in the last columns
        assert np.array_equal(best_of(x, m), np.argsort(-x, axis=1, kind="stable")[:, :m]), w


def _row_ranks(logp: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's m best log-probabilities and their ids as `Steps.step_ranked` gives them (a stable sort's)."""
    ids = np.argsort(-logp, axis=1, kind="stable")[:, :m]
    return np.take_along_axis(logp, ids, 1), ids


def test_merge_ranked_gives_best_ofs_candidates_or_steps_aside():
    """From each row's 2k + 1 best, the merge finds each sentence's 2k best of all k x V candidates exactly as
    best_of over the full sums does (ties in column order, beams that are not alive), and returns None, for
    the full ranking, where the float32 sums merge the 2k-th and next value of a row or too few are finite."""
    from seqattn_runtime.search import best_of, merge_ranked

    rng = np.random.default_rng(3)
    merged = 0
    for _ in range(300):
        n, k, v = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(12, 60))
        m = 2 * k
        logp = (rng.standard_normal((n * k, v)) * rng.choice([1.0, 0.01])).astype(np.float32)
        if rng.random() < 0.5:
            logp = np.round(logp, 1)                                               # ties within rows
        scores = (rng.standard_normal((n, k)) * rng.choice([1.0, 100.0])).astype(np.float32)
        scores[rng.random((n, k)) < 0.3] = -np.inf
        scores[:, 0] = np.where(np.isfinite(scores[:, 0]), scores[:, 0], 0.0)
        cand = (logp + scores.reshape(-1, 1)).reshape(n, k * v)
        want = best_of(cand, m)
        got = merge_ranked(*_row_ranks(logp, m + 1), scores, v, m)
        if got is not None:
            merged += 1
            assert np.array_equal(got[0], want) and np.array_equal(got[1], np.take_along_axis(cand, want, 1))
    assert merged > 150
    # a row whose sums round together: its best log-probabilities are not its best candidates in column order
    logp = np.array([[-0.003, -0.002, -0.001, 0.0]], np.float32)
    scores = np.array([[-1e6]], np.float32)
    assert merge_ranked(*_row_ranks(logp, 3), scores, 4, 2) is None
    assert best_of(logp + scores, 2).tolist() == [[0, 1]]
