"""Beam search finds what its width allows: against a plain reference search and an exhaustive one, and
the regression of a confident model whose best hypothesis a wider beam used to drop."""

import itertools
import math

import pytest
import torch
from conftest import assert_same, reverse_pairs, sources, write_tiny_config

from seqattn.config import ModelConfig, load_config
from seqattn.data.tokenizer import EOS, SOS
from seqattn.fast import search as engine
from seqattn.model.seq2seq import Encoded, Seq2Seq
from seqattn.search import Stopping, beam_search, greedy, length_penalty
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator


def tiny_model(att="dot", feed=False, rnn="lstm", layers=1, tgt_vocab=12, seed=7):
    torch.manual_seed(seed)
    cfg = ModelConfig(rnn=rnn, attention=att, input_feeding=feed, emb_size=16, enc_hidden_size=12,
                      dec_hidden_size=24, layers=layers, dropout=0.0)
    return Seq2Seq(cfg, 40, tgt_vocab).eval()


@torch.no_grad()
def reference_beam(model, src_ids: list[int], limit: int, k: int, alpha: float, nbest: int, beta: float = 0.0,
                   stopping: str = "exact", patience: float = 1.0):
    """Return the nbest (ids, score, finished) of one sentence: a beam of width k run to the length limit
    (stopping 'exact': without any early stop, which finds what the exact bound finds), its hypotheses in
    Python lists.

    Each step ranks every continuation of every alive hypothesis; those among the k best that end in
    <eos> finish (score / length penalty, plus beta * sum_i log(min(attention source position i received,
    1)) when beta > 0), the k best that do not end go on; at the limit the alive ones end unfinished.
    stopping 'heuristic' ends the search after a step where the nbest-th finished score reaches the best
    alive one's raw score / length penalty of its length; 'patience' once max(nbest, ceil(patience x k))
    hypotheses have finished."""
    enc = model.encode(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))
    state = enc.state
    feed = torch.zeros(1, model.decoder.hidden_size) if model.decoder.input_feeding else None
    alive, finished = [(0.0, [], 0, [0.0] * len(src_ids))], []     # (score, ids, its row of state, coverage)

    def final(score: float, length: int, received: list[float]) -> float:
        penalty = beta * sum(math.log(min(max(c, 1e-10), 1.0)) for c in received) if beta else 0.0
        return score / length_penalty(length, alpha) + penalty

    for _ in range(limit):
        n = len(alive)
        prev = torch.tensor([ids[-1] if ids else SOS for _, ids, _, _ in alive])
        rows = torch.tensor([row for _, _, row, _ in alive])
        state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        feed = None if feed is None else feed.index_select(0, rows)
        memory, keys, mask = (None if x is None else x.expand(n, *x.shape[1:])
                              for x in (enc.memory, enc.keys, enc.mask))
        logits, state, feed, weights = model.decoder.step(prev, state, memory, keys, mask, feed)   # one row each
        logp = torch.log_softmax(logits.float(), -1).tolist()
        received = [[c + w for c, w in zip(cov, weights[r].tolist())] if weights is not None else cov
                    for r, (_, _, _, cov) in enumerate(alive)]
        candidates = [(score + lp, ids + [v], r, received[r]) for r, (score, ids, _, _) in enumerate(alive)
                      for v, lp in enumerate(logp[r])]
        candidates.sort(key=lambda c: -c[0])
        finished += [(c[1][:-1], final(c[0], len(c[1]), c[3]), True) for c in candidates[:k] if c[1][-1] == EOS]
        alive = [c for c in candidates if c[1][-1] != EOS][:k]
        ranked = sorted(finished, key=lambda h: -h[1])
        if stopping == "heuristic" and len(ranked) >= nbest and \
                ranked[nbest - 1][1] >= alive[0][0] / length_penalty(len(alive[0][1]), alpha):
            return ranked[:nbest]
        if stopping == "patience" and len(finished) >= max(nbest, math.ceil(patience * k)):
            return ranked[:nbest]
    finished += [(ids, final(score, limit, cov), False) for score, ids, _, cov in alive]
    return sorted(finished, key=lambda h: -h[1])[:nbest]


@pytest.mark.parametrize("att,feed,rnn,layers", [("dot", False, "lstm", 1), ("concat", True, "gru", 1),
                                                 ("none", False, "lstm", 2), ("general", False, "gru", 2)])
def test_beam_search_equals_a_reference_search_of_the_same_width(att, feed, rnn, layers):
    model = tiny_model(att, feed, rnn, layers)
    src, src_len, limit = sources(8, seed=11)
    for k, alpha in itertools.product((1, 2, 5), (0.0, 1.0)):
        for nbest, width in ((1, 0), (k, 3)):   # the plain search, and the engine refilling `width` rows
            for got in (beam_search(model, src, src_len, limit, beam=k, alpha=alpha, nbest=nbest),
                        engine.beam_search(model, src, src_len, limit, beam=k, alpha=alpha, nbest=nbest, width=width)):
                for i, hyps in enumerate(got):
                    ids = src[i, : int(src_len[i])].tolist()
                    assert_same(hyps, reference_beam(model, ids, int(limit[i]), k, alpha, nbest))


@pytest.mark.parametrize("att,feed", [("dot", False), ("concat", True)])
def test_the_coverage_penalty_is_the_reference_searchs_and_stays_exact(att, feed):
    """With beta > 0 every finished score gains beta * sum_i log(min(coverage_i, 1)), computed here by hand
    from each hypothesis' weights; the search still stops early (the penalty is never positive) and finds
    what the reference run to the limit finds."""
    model = tiny_model(att, feed)
    src, src_len, limit = sources(8, seed=13)
    changed = 0
    for k, beta in itertools.product((2, 5), (0.2, 1.0)):
        got = beam_search(model, src, src_len, limit, beam=k, alpha=1.0, nbest=k, coverage=beta)
        plain = beam_search(model, src, src_len, limit, beam=k, alpha=1.0, nbest=k)
        for i, hyps in enumerate(got):
            ids = src[i, : int(src_len[i])].tolist()
            assert_same(hyps, reference_beam(model, ids, int(limit[i]), k, 1.0, k, beta))
            changed += hyps[0].ids != plain[i][0].ids
            assert all(h.score <= p.score + 1e-6 for h, p in zip(hyps, plain[i]))   # never above without it
    assert changed > 0                                            # the penalty changes some choices
    with pytest.raises(ValueError, match="needs a model with attention"):
        beam_search(tiny_model("none"), src, src_len, limit, beam=2, coverage=0.5)


@pytest.mark.parametrize("stopping,patience", [("heuristic", 1.0), ("patience", 1.0), ("patience", 0.5),
                                               ("patience", 2.0)])
def test_each_bounded_stopping_rule_is_the_reference_searchs(stopping, patience):
    """The bounded rules end a sentence where the reference, which applies them by hand after each step,
    ends it: the plain search and the engine (refilling 3 rows) find the same n-best, and none scores above
    exact's best (that they can score below it: `test_patience_one_stops_at_the_weak_beams...`)."""
    model = tiny_model("dot", False, "lstm", 1)
    src, src_len, limit = sources(12, seed=17)
    rule = Stopping(stopping, patience)
    for k, alpha in itertools.product((2, 5), (0.0, 1.0)):
        exact = beam_search(model, src, src_len, limit, beam=k, alpha=alpha)
        for nbest, width in ((1, 0), (2, 3)):
            for got in (beam_search(model, src, src_len, limit, beam=k, alpha=alpha, nbest=nbest, stopping=rule),
                        engine.beam_search(model, src, src_len, limit, beam=k, alpha=alpha, nbest=nbest,
                                           width=width, stopping=rule)):
                for i, hyps in enumerate(got):
                    ids = src[i, : int(src_len[i])].tolist()
                    assert_same(hyps, reference_beam(model, ids, int(limit[i]), k, alpha, nbest,
                                                     stopping=stopping, patience=patience))
                    assert hyps[0].score <= exact[i][0].score + 1e-5


def test_patience_one_stops_at_the_weak_beams_where_exact_goes_on():
    """Scripted's weak beams finish first: patience 1 (stop at `beam` finished) returns one of them, the
    heuristic and exact go on to GOOD."""
    src, src_len = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    for search in (beam_search, engine.beam_search):
        def run(mode, search=search):
            return search(Scripted(), src, src_len, torch.tensor([20]), beam=3, alpha=1.0, attention=False,
                          stopping=Stopping(mode))[0][0]

        assert run("exact").ids == Scripted.GOOD and run("heuristic").ids == Scripted.GOOD
        assert run("patience").ids != Scripted.GOOD and run("patience").score < run("exact").score


def test_a_beam_wide_enough_is_the_exhaustive_search():
    """Three output tokens and a limit of 3: every output, scored token by token, against a beam that
    keeps every prefix (6^2 = 36 alive after two steps)."""
    model = tiny_model(tgt_vocab=6, seed=3)
    src, src_len, _ = sources(4, seed=2)
    limit = torch.full((4,), 3)
    for alpha in (0.0, 1.0):
        got = beam_search(model, src, src_len, limit, beam=36, alpha=alpha, nbest=5)
        for i, hyps in enumerate(got):
            ids = src[i, : int(src_len[i])].tolist()
            enc = model.encode(torch.tensor([ids]), torch.tensor([len(ids)]))
            every = []
            for n in range(1, 4):
                for out in itertools.product(range(6), repeat=n):
                    if EOS in out[:-1]:
                        continue
                    state, total, prev = enc.state, 0.0, SOS
                    with torch.no_grad():
                        for tok in out:
                            logits, state, _, _ = model.decoder.step(torch.tensor([prev]), state, enc.memory,
                                                                     enc.keys, enc.mask)
                            total += torch.log_softmax(logits, -1)[0, tok].item()
                            prev = tok
                    ended = out[-1] == EOS
                    if ended or n == 3:
                        every.append((list(out[:-1] if ended else out), total / length_penalty(n, alpha), ended))
            assert_same(hyps, sorted(every, key=lambda h: -h[1])[:5])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_on_seeded_random_models_a_wider_beam_never_scores_below_greedy(seed):
    model = tiny_model(seed=seed)
    src, src_len, limit = sources(24, seed=seed)
    g = greedy(model, src, src_len, limit)
    for k in (2, 3, 4, 5):
        b = beam_search(model, src, src_len, limit, beam=k, alpha=0.0)
        assert all(n[0].score >= h.score - 1e-5 for n, h in zip(b, g))


class Scripted:
    """A stand-in model whose decoder is sure of one output, GOOD then <eos>, and whose other prefixes
    prefer to end: the weak beams finish early, with poor scores, while the best one is still alive."""

    GOOD, VOCAB = [4, 5, 6, 7, 8], 10

    class Decoder:
        hidden_size, input_feeding = 2, False

        def step(self, y, state, memory, keys, mask, feed=None, group=1):
            """Return (logits rows x VOCAB, state, None, None); state 1 x rows x 2: (on GOOD's path, position)."""
            on, pos = state[0, :, 0] > 0.5, state[0, :, 1].long()
            good = torch.tensor(Scripted.GOOD + [EOS])
            on = on & ((pos == 0) | (y == good[(pos - 1).clamp(min=0, max=len(Scripted.GOOD))]))
            logits = torch.full((len(y), Scripted.VOCAB), -8.0)
            logits[:, EOS] = 0.0                                              # off the path: end
            sure = torch.full((len(y), Scripted.VOCAB), -4.0)
            sure[torch.arange(len(y)), good[pos.clamp(max=len(Scripted.GOOD))]] = 0.0
            logits = torch.where(on.unsqueeze(1), sure, logits)
            return logits, torch.stack([on.float(), (pos + 1).float()], -1).unsqueeze(0), None, None

    decoder = Decoder()

    def step(self, y, state, enc, feed=None, group=1):
        return self.decoder.step(y, state, enc.memory, enc.keys, enc.mask, feed, group)

    def initial_feed(self, rows, device):
        return None

    def encode(self, src, src_len):
        n = src.size(0)
        return Encoded(torch.zeros(n, src.size(1), 2), None, src != 0, torch.tensor([[[1.0, 0.0]]]).repeat(1, n, 1))


def test_weak_beams_finishing_first_do_not_end_the_search():
    """The rule that a sentence is done once `beam` hypotheses finished returned a -4.2 hypothesis here,
    one of the weak beams' early <eos>s, while GOOD (-1.0 when it ends) was still being extended."""
    src, src_len = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    for k, alpha, search in itertools.product((1, 2, 3, 5), (0.0, 1.0), (beam_search, engine.beam_search)):
        (best, *_), = search(Scripted(), src, src_len, torch.tensor([20]), beam=k, alpha=alpha, nbest=1,
                             attention=False)
        assert best.ids == Scripted.GOOD and best.finished
        assert best.score == pytest.approx(6 * -torch.tensor([0.0] + [-4.0] * 9).logsumexp(0).item()
                                           / length_penalty(6, alpha), abs=1e-5)


@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    """The reversal model whose sentence 19 a beam of 4 or 5 used to end as 'cat goat bear apple'."""
    tmp = tmp_path_factory.mktemp("confident")
    pairs = reverse_pairs(20, seed=3)
    path = write_tiny_config(tmp, pairs, train__max_steps=100, train__valid_every=50, train__valid_metric="exact")
    assert Trainer(load_config(path)).run()["best"] == 100.0
    return Translator.load(tmp / "model", device="cpu"), pairs


def test_a_confident_model_keeps_its_best_hypothesis_at_every_beam(confident):
    tr, pairs = confident
    src, refs = [s for s, _ in pairs], [t for _, t in pairs]
    greedy_out = tr.translate(src, options=SearchOptions(beam=1))
    assert [o.text for o in greedy_out] == refs
    forced = tr.forced_scores(src, refs)
    for k in (2, 3, 4, 5):
        for alpha in (0.0, 0.6):
            out = tr.translate(src, options=SearchOptions(beam=k, alpha=alpha))
            assert [o.text for o in out] == refs, (k, alpha)
            raw = [o.score * length_penalty(len(tr.tok.tgt.encode([o.text])[0]) + 1, alpha) for o in out]
            assert raw == pytest.approx([f["logprob"] for f in forced], abs=1e-4)
    (best, *rest), = tr.translate_n([pairs[19][0]], options=SearchOptions(beam=4, nbest=4, alpha=0.0))
    assert best.text == refs[19] and best.score == pytest.approx(forced[19]["logprob"], abs=1e-4)
    assert len(rest) == 3 and all(h.score <= best.score for h in rest)


def test_empty_and_blank_lines_give_the_empty_output_without_decoding(confident):
    tr, pairs = confident
    calls = []
    steps = tr._decoding()                       # what the searches encode with
    real = steps.encode
    steps.encode = lambda src, *a, **kw: calls.append(src.size(0)) or real(src, *a, **kw)
    lines = ["", pairs[0][0], "   ", "\t \u3000", pairs[1][0]]
    for options in (SearchOptions(), SearchOptions(beam=3, nbest=2, alpha=0.6),
                    SearchOptions(sample=True, num_samples=3, seed=4)):
        for attention in (False, True):
            calls.clear()
            out = tr.translate_n(lines, attention=attention, options=options)
            assert sum(calls) == 2 * options.num_samples            # only the two real sentences were encoded
            for i in (0, 2, 3):
                assert len(out[i]) == options.num_samples
                for o in out[i]:
                    assert (o.text, o.score, o.tgt_tokens, o.truncated) == ("", 0.0, [], False)
                    assert o.attention == ([] if attention else None)
            assert out[1][0].text == pairs[0][1] and out[4][0].text == pairs[1][1]
    del steps.encode
    assert [o.text for o in tr.translate(["", ""], batch_size=1)] == ["", ""]
    assert tr.translate([]) == []

