"""The decoding engine (seqattn.fast.search): a batch decodes as each sentence alone while finished
sentences leave it or hand their places on, encoded rows joined and overwritten, and the chunked
argmax, normaliser and expansion ranking against torch's."""

import numpy as np
import pytest
import torch
from conftest import assert_same, random_model, sources

from seqattn.data.batching import pad_sources
from seqattn.fast import Decoding
from seqattn.fast import search as engine
from seqattn.fast.search import best_expansions, join, log_normaliser, put, row_argmax
from seqattn.search import beam_search, greedy, max_lengths, select


class _Counted:
    """steps (a model or its Decoding) whose `step` also appends the rows it decodes to `rows`."""

    def __init__(self, steps):
        self.inner, self.rows = steps, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, y, *args, **kwargs):
        self.rows.append(len(y))
        return self.inner.step(y, *args, **kwargs)


def counted(steps) -> tuple[_Counted, list[int]]:
    """Return (steps counting its rows, the list of each step's rows)."""
    wrapped = _Counted(steps)
    return wrapped, wrapped.rows


@pytest.mark.parametrize("att,feed,width,prep", [("dot", False, 0, False), ("general", True, 0, False),
                                                 ("dot", False, 7, True), ("general", True, 5, False),
                                                 ("dot", False, 1, True)])
def test_greedy_on_a_batch_equals_each_sentence_alone(att, feed, width, prep):
    """Finished sentences leave the batch as it decodes, or (width) hand their places to the next ones,
    encoded `width` at a time and of other lengths: nothing of the others may move with them."""
    model = random_model(att, feed)
    src, src_len, limit = sources(40, seed=5)
    steps, rows_per_step = counted(Decoding(model) if prep else model)
    together = engine.greedy(steps, src, src_len, limit, width=width)
    if width:   # full steps of `width` rows until the last sentences joined
        assert max(rows_per_step) == width and rows_per_step[: len(rows_per_step) // 2].count(width) > 5
    assert len({len(h.ids) for h in together}) > 3             # they finish at many different steps
    for i in range(len(together)):
        n = int(src_len[i])
        (alone,) = greedy(model, src[i : i + 1, :n], src_len[i : i + 1], limit[i : i + 1])
        assert together[i].ids == alone.ids and together[i].finished == alone.finished
        assert together[i].score == pytest.approx(alone.score, abs=1e-4)
        assert np.allclose(together[i].attention, alone.attention, atol=1e-5)
    assert all(h.attention is None for h in engine.greedy(model, src, src_len, limit, attention=False, width=width))


@pytest.mark.parametrize("prep", [False, True])
def test_sentences_that_run_to_the_limit_while_the_last_ones_join(prep):
    """A model that never writes <eos>: every sentence runs to its limit. With 10 sentences of one length
    and 4 rows, the last refill fills 2 of 4 places; the 2 finished rows stay in the batch while the
    others decode, and their steps must not write past the outputs (an IndexError once)."""
    from seqattn.data.tokenizer import EOS

    model = random_model()
    steps = Decoding(model) if prep else model
    real_step = steps.step

    def never_ends(y, *a, **k):
        logits, *rest = real_step(y, *a, **k)
        return (logits.index_fill(1, torch.tensor([EOS]), float("-inf")), *rest)

    steps.step = never_ends
    src, src_len = pad_sources([[5, 6, 7]] * 10)
    limit = max_lengths(src_len, 1.5)
    out = engine.greedy(steps, src, src_len, limit, width=4)
    del steps.step
    assert [len(h.ids) for h in out] == limit.tolist() and not any(h.finished for h in out)
    assert all(h.ids == out[0].ids and h.attention.shape == (limit[0], 4) for h in out)


def test_encoded_rows_join_and_are_overwritten_across_source_lengths():
    """join pads shorter sources (mask False, zero memory); put writes rows in place, or into a
    longer copy when the newcomers' sources are longer."""
    model = random_model()
    src, src_len, _ = sources(6, seed=3)
    order = src_len.argsort()
    src, src_len = src[order], src_len[order]
    short, long = (model.encode(src[i : i + 3, : int(src_len[i : i + 3].max())], src_len[i : i + 3]) for i in (0, 3))
    spans = short.mask.size(1), long.mask.size(1)
    assert spans[0] < spans[1]
    both = join([short, long])
    assert both.mask.shape == (6, spans[1]) and torch.equal(both.mask, src[:, : spans[1]] != 0)
    assert both.keys is both.memory                                     # dot attention: the keys are the memory
    assert both.memory[:3, spans[0]:].abs().sum() == 0 and torch.equal(both.state[0][:, 3:], long.state[0])
    put_ = put(short, torch.tensor([2, 0]), select(long, torch.tensor([1, 0])))   # longer newcomers: a copy
    assert put_.mask.shape == (3, spans[1]) and put_.keys is put_.memory
    assert torch.equal(put_.memory[0], long.memory[0]) and torch.equal(put_.mask[2], both.mask[4])
    assert torch.equal(put_.memory[1], both.memory[1]) and torch.equal(put_.state[1][:, 2], long.state[1][:, 1])
    again = put(put_, torch.tensor([1]), select(short, torch.tensor([2])))         # shorter: in place, padded
    assert again is put_ and torch.equal(again.memory[1], both.memory[2]) and torch.equal(again.mask[1], both.mask[2])


@pytest.mark.parametrize("att,feed,width,prep", [("dot", False, 0, False), ("general", True, 0, False),
                                                 ("dot", False, 4, True), ("general", True, 3, False),
                                                 ("dot", False, 1, False)])
def test_beam_on_a_batch_equals_each_sentence_alone(att, feed, width, prep):
    """A sentence's beams share its one row of encoder states, and done sentences leave the batch or (width)
    hand their places to the next ones: every sentence must still decode as it does alone."""
    model = random_model(att, feed)
    src, src_len, limit = sources(30, seed=6)
    steps, rows_per_step = counted(Decoding(model) if prep else model)
    together = engine.beam_search(steps, src, src_len, limit, beam=3, nbest=3, alpha=1.0, width=width)
    if width:
        assert max(rows_per_step) == 3 * width and rows_per_step[: len(rows_per_step) // 2].count(3 * width) > 5
    assert len({len(h.ids) for n in together for h in n}) > 3          # hypotheses end at many steps
    for i in range(len(together)):
        n = int(src_len[i])
        (alone,) = beam_search(model, src[i : i + 1, :n], src_len[i : i + 1], limit[i : i + 1], beam=3, nbest=3,
                               alpha=1.0)
        assert_same(together[i], [(h.ids, h.score, h.finished) for h in alone])
        assert all(np.allclose(a.attention, b.attention, atol=1e-5)
                   for a, b in zip(together[i], alone) if a.ids == b.ids)


@pytest.mark.parametrize("width", [5, 64, 128, 200, 3963])
def test_row_argmax_is_torch_max_ties_included(width):
    """row_argmax returns max(-1)'s values and first indices, with ties inside and across chunks and the
    maximum in the last, partial chunk."""
    g = torch.Generator().manual_seed(width)
    x = torch.randint(-3, 4, (40, width), generator=g).float()      # many ties
    x[0], x[1, -1] = 0.0, 9.0                                        # all equal; the maximum in the last column
    x[2, : min(width, 130)] = -5.0
    x[2, width // 2] = x[2, width - 1] = 8.0                         # two maxima, across chunks
    best, idx = row_argmax(x)
    ref_best, ref_idx = x.max(-1)
    assert torch.equal(best, ref_best) and torch.equal(idx, ref_idx)
    assert idx[0] == 0 and idx[1] == width - 1 and idx[2] == width // 2


def test_log_normaliser_gives_logsumexp():
    x = torch.randn(7, 300) * 4
    x[3, :299] = float("-inf")                                       # one finite entry
    ref = torch.logsumexp(x, -1) - x.amax(-1)
    assert torch.allclose(log_normaliser(x.clone(), x.amax(-1)), ref, atol=1e-5)
    assert log_normaliser(x.clone(), x.amax(-1))[3] == 0.0


@pytest.mark.parametrize("vocab,chunk", [(12, 64), (300, 64), (256, 32), (1000, 128)])
def test_best_expansions_are_the_best_of_all_candidates(vocab, chunk):
    """The chunked selection returns what ranking every (beam, token) continuation of a sentence gives,
    the last partial chunk and beams not started yet (score -inf) included."""
    g = torch.Generator().manual_seed(vocab)
    n, k = 6, 4
    logits = torch.randn(n * k, vocab, generator=g) * 3
    logits[0, -1] = 30.0                                             # the best token in the last, partial chunk
    scores = torch.randn(n * k, generator=g) * 2
    scores.view(n, k)[:2, 1:] = float("-inf")                        # first step: only beam 0 is alive
    best, beam, tok = best_expansions(logits, scores, k, 2 * k, chunk=chunk)
    ref_best, ref_flat = (torch.log_softmax(logits, -1) + scores.unsqueeze(1)).view(n, k * vocab).topk(2 * k, -1)
    assert torch.allclose(best, ref_best, atol=1e-5)
    assert torch.equal(beam, ref_flat // vocab) and torch.equal(tok, ref_flat % vocab)
    assert tok[0, 0] == vocab - 1 and (beam[:2] == 0).all()
