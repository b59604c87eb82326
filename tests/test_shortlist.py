"""The vocabulary shortlist: Dice ranks by hand, the training data always covered, the vocabulary of a batch,
and the file round trip."""

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, random_model, reverse_pairs, run, sources, write_tiny_config
from fastapi.testclient import TestClient

from seqattn.config import load_config
from seqattn.fast import Decoding
from seqattn.fast import search as engine
from seqattn.search import Shortlisted, beam_search, greedy
from seqattn.train import Trainer
from seqattn.translator import SearchOptions, Translator
from seqattn_runtime.serve.app import create_app
from seqattn_runtime.shortlist import SPECIALS, Shortlist, build


def test_candidates_are_the_k_best_by_dice_computed_by_hand():
    # source piece 10 occurs in pairs 0-2, 11 in pair 3; target 20 in 0-2, 21 in 0 and 3, 22 everywhere
    src = [[10], [10], [10], [11]]
    tgt = [[20, 21, 22], [20, 22], [20, 22], [21, 22]]
    sl = build(src, tgt, 12, 23, k=1, frequent=0)
    # Dice(10, 20) = 2*3 / (3 + 3) = 1.0, Dice(10, 22) = 2*3 / (3 + 4) = 0.857, Dice(10, 21) = 2*1 / (3 + 2) = 0.4
    # Dice(11, 21) = 2*1 / (1 + 2) = 0.667, Dice(11, 22) = 2*1 / (1 + 4) = 0.4
    k1 = {s: sl.ids[sl.offsets[s] : sl.offsets[s + 1]].tolist() for s in (10, 11)}
    # k = 1 keeps 10 -> 20 and 11 -> 21; then pair 0 needs 21 and 22 from 10 (its only source piece),
    # pairs 1-2 need 22 from 10, pair 3 needs 22 from 11
    assert k1 == {10: [20, 21, 22], 11: [21, 22]}
    assert sl.frequent.tolist() == list(range(SPECIALS))
    wide = build(src, tgt, 12, 23, k=3, frequent=1)
    assert wide.frequent.tolist() == list(range(SPECIALS)) + [22]       # in every pair
    assert wide.ids[wide.offsets[10] : wide.offsets[11]].tolist() == [20, 21, 22]


def test_on_its_training_data_the_shortlist_always_holds_the_reference():
    rng = np.random.default_rng(0)
    src = [rng.integers(4, 60, rng.integers(1, 12)).tolist() for _ in range(400)]
    tgt = [rng.integers(4, 80, rng.integers(1, 12)).tolist() for _ in range(400)]
    for k, frequent in ((1, 0), (3, 5), (20, 10)):
        sl = build(src, tgt, 60, 80, k=k, frequent=frequent)
        for s, t in zip(src, tgt):
            assert set(t) <= set(sl.vocab([s]).tolist())
        batch = sl.vocab(src[:16])
        assert set(x for t in tgt[:16] for x in t) <= set(batch.tolist())
    assert len(build(src, tgt, 60, 80, k=1, frequent=0).ids) < len(build(src, tgt, 60, 80, k=20, frequent=0).ids)


def test_a_vocabulary_opens_with_the_specials_and_takes_extra_ids():
    sl = build([[5, 6], [7]], [[9, 10], [11]], 8, 12, k=2, frequent=0)
    v = sl.vocab([[5]], extra=[4])
    assert v[:SPECIALS].tolist() == list(range(SPECIALS))          # <eos> keeps its id inside the shortlist
    assert v.tolist() == [0, 1, 2, 3, 4, 9, 10]
    assert sl.vocab([]).tolist() == list(range(SPECIALS))
    assert np.all(np.diff(sl.vocab([[5, 6], [7]])) > 0)


def test_the_file_round_trip_and_a_file_that_is_not_one(tmp_path):
    sl = build([[5, 6], [7]], [[9, 10], [11]], 8, 12, k=2, frequent=1)
    sl.save(tmp_path / "shortlist.npz")
    back = Shortlist.load(tmp_path / "shortlist.npz")
    assert back.tgt_vocab == 12 and all(np.array_equal(getattr(back, f), getattr(sl, f))
                                        for f in ("offsets", "ids", "frequent"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a shortlist"):
        Shortlist.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "odd.npz", offsets=np.array([0, 5]), ids=np.array([1]), frequent=np.array([0]),
             tgt_vocab=np.int64(4))
    with pytest.raises(ValueError, match="odd.npz: not a shortlist .its offsets or ids are out of range"):
        Shortlist.load(tmp_path / "odd.npz")
    (tmp_path / "torn.npz").write_bytes((tmp_path / "shortlist.npz").read_bytes()[:40])
    with pytest.raises(ValueError, match="torn.npz: not a shortlist"):
        Shortlist.load(tmp_path / "torn.npz")
    with pytest.raises(ValueError, match="x.npz: built for 8 source and 12 target pieces, the model has 8 and 40"):
        back.check_fits(8, 40, "x.npz")
    with pytest.raises(ValueError, match="need k >= 1"):
        build([[5]], [[9]], 8, 12, k=0)


class Masked:
    """The reference for a shortlist: the model's full logits with every id outside keep at -inf."""

    def __init__(self, model, keep):
        self.model, self.keep = model, torch.as_tensor(keep)

    def encode(self, src, src_len):
        return self.model.encode(src, src_len)

    def initial_feed(self, rows, device):
        return self.model.initial_feed(rows, device)

    def step(self, y, state, enc, feed=None, group=1):
        logits, state, feed, alpha = self.model.step(y, state, enc, feed, group)
        masked = torch.full_like(logits, float("-inf"))
        masked[:, self.keep] = logits[:, self.keep]
        return masked, state, feed, alpha


@pytest.mark.parametrize("att,feed", [("dot", False), ("concat", True)])
def test_a_search_over_a_shortlist_is_the_search_over_the_masked_vocabulary(att, feed):
    """Scoring only vocab's rows (the model's `out_rows`, the fast path's packed rows) and searching over
    positions in it finds what the full model finds with every other id at -inf; the whole vocabulary as
    the shortlist changes nothing."""
    model = random_model(att, feed)
    src, src_len, limit = sources(10, seed=3)
    fast = Decoding(model)
    for keep in ([0, 1, 2, 3, 5, 6, 8, 9, 11], list(range(12))):
        vocab = torch.tensor(keep)
        for steps in (model, fast):
            cut = Shortlisted(steps, vocab)
            for got, want in ((greedy(model, src, src_len, limit, steps=cut), greedy(model, src, src_len, limit,
                                                                                     steps=Masked(model, keep))),
                              (engine.greedy(cut, src, src_len, limit), engine.greedy(Masked(model, keep), src,
                                                                                      src_len, limit))):
                assert [[keep[i] for i in h.ids] for h in got] == [h.ids for h in want]
                assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
            ref = Masked(model, keep)
            for got, want in ((beam_search(model, src, src_len, limit, beam=3, nbest=2, steps=cut),
                               beam_search(model, src, src_len, limit, beam=3, nbest=2, steps=ref)),
                              (engine.beam_search(cut, src, src_len, limit, beam=3, nbest=2),
                               engine.beam_search(ref, src, src_len, limit, beam=3, nbest=2))):
                for g_list, w_list in zip(got, want):
                    assert [[keep[i] for i in h.ids] for h in g_list] == [h.ids for h in w_list]
                    assert [h.score for h in g_list] == pytest.approx([h.score for h in w_list], abs=1e-5)


def test_the_cli_builds_a_shortlist_and_translate_decodes_within_it(tmp_path):
    pairs = reverse_pairs(60, seed=5)
    Trainer(load_config(write_tiny_config(tmp_path, pairs, train__max_steps=120, train__valid_every=60))).run()
    model = tmp_path / "model"
    lines = [s for s, _ in pairs[:12]]
    (tmp_path / "in.txt").write_text("".join(f"{s}\n" for s in lines))
    assert_one_line_error(run("translate", model, "--input", tmp_path / "in.txt", "--shortlist"),
                          "--shortlist: this model has no shortlist.npz (build one with `seqattn shortlist")
    answer = TestClient(create_app(Translator.load(model, device="cpu"))).post(
        "/translate", json={"text": lines[0], "shortlist": True})
    assert answer.status_code == 422 and "no shortlist" in answer.json()["error"]
    proc = run("shortlist", model, "--k", "2", "--frequent", "0")
    assert proc.returncode == 0 and "shortlist.npz:" in proc.stderr, proc.stderr
    translator = Translator.load(model, device="cpu")
    vocab = set(translator.shortlist.vocab(translator.tok.src.encode(lines)).tolist())
    for options in (SearchOptions(shortlist=True), SearchOptions(beam=3, nbest=2, shortlist=True)):
        for outs in translator.translate_n(lines, options=options):
            for out in outs:
                assert set(translator.tok.tgt.encode([out.text])[0]) <= vocab
    proc = run("translate", model, "--input", tmp_path / "in.txt", "--shortlist", "--beam", "3")
    assert proc.returncode == 0 and proc.stdout.splitlines() == \
        [o.text for o in translator.translate(lines, options=SearchOptions(beam=3, shortlist=True))]
    served = TestClient(create_app(translator)).post("/translate", json={"texts": lines, "beam": 3, "shortlist": True})
    assert [t["translation"] for t in served.json()["translations"]] == proc.stdout.splitlines()
    prefixed = translator.translate(lines[:2], prefixes=["lion hat", ""], options=SearchOptions(shortlist=True))
    assert prefixed[0].text.startswith("lion hat")                       # a prefix's pieces join the shortlist
    twice = Translator.load(model, device="cpu", ensemble=[str(model)])    # an ensemble scores the shortlist too
    assert [o.text for o in twice.translate(lines, options=SearchOptions(beam=3, shortlist=True))] == \
        proc.stdout.splitlines()
    int8 = Translator.load(model, device="cpu", quantize="int8")
    assert [o.text for o in int8.translate(lines, options=SearchOptions(beam=3, shortlist=True))] == \
        [o.text for o in int8.translate(lines, options=SearchOptions(beam=3))]
    everything = run("shortlist", model, "--k", "1000", "--frequent", "1000")
    assert everything.returncode == 0
    wide = Translator.load(model, device="cpu")
    assert [o.text for o in wide.translate(lines, options=SearchOptions(beam=3, shortlist=True))] == \
        [o.text for o in wide.translate(lines, options=SearchOptions(beam=3))]
    assert_one_line_error(run("shortlist", model, "--src", tmp_path / "in.txt"), "give both --src and --tgt")
    build([[5]], [[9]], 8, 12).save(model / "shortlist.npz")          # another model's sizes
    assert_one_line_error(run("translate", model, "--input", tmp_path / "in.txt", "--shortlist"),
                          "shortlist.npz: built for 8 source and 12 target pieces")
