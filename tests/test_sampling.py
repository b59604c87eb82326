"""Subword regularisation draws (seqattn.data.sampling)."""

import json
import subprocess
import sys

import numpy as np

from seqattn.data.sampling import Segmentations
from seqattn.data.tokenizer import UNK, TargetView, Tokenizer

TEXT = ["the quick brown fox jumps over the lazy dog", "a dog sleeps under the old tree", "",
        "two foxes and three dogs play in the garden"] * 20


def test_draws_follow_likelihood_to_the_power_alpha():
    """Line 0 has three candidates of log-likelihoods -1, -2, -4; line 1 one. Draw frequencies match
    P(x) ** alpha normalised, computed by hand."""
    seg = Segmentations(pieces=np.array([5, 6, 7, 8, 9, 10], np.int32),
                        start=np.array([[0, 1, 3], [5, 0, 0]]), length=np.array([[1, 2, 2], [1, 0, 0]], np.int32),
                        score=np.array([[-1.0, -2.0, -4.0], [-3.0, -np.inf, -np.inf]]))
    rng = np.random.default_rng(0)
    for alpha in (0.2, 1.0):
        draws = [seg.draw(alpha, rng) for _ in range(6000)]
        weights = np.exp(alpha * np.array([-1.0, -2.0, -4.0]))
        expected = weights / weights.sum()
        seen = np.array([sum(d[0] == cand for d in draws) for cand in ([5], [6, 7], [8, 9])]) / len(draws)
        assert np.abs(seen - expected).max() < 0.02, (alpha, seen, expected)
        assert all(d[1] == [10] for d in draws)


def test_the_n_best_list_starts_with_the_standard_segmentation_and_every_candidate_spells_the_line():
    tok = Tokenizer.train(TEXT, 60)
    seg = tok.segmentations(TEXT, 8)
    assert seg.score.shape == (len(TEXT), 8)
    for row, line in enumerate(TEXT[:4]):
        cands = [seg.pieces[s : s + n].tolist() for s, n, x in zip(seg.start[row], seg.length[row], seg.score[row])
                 if np.isfinite(x)]
        assert cands[0] == tok.encode([line])[0]
        assert all(tok.decode(c) == line for c in cands) and len({tuple(c) for c in cands}) == len(cands)
        scores = [x for x in seg.score[row] if np.isfinite(x)]
        assert scores == sorted(scores, reverse=True)
        by_hand = sum(tok.sp.GetScore(i) for i in cands[-1])
        assert abs(scores[-1] - by_hand) < 1e-9
    assert len(TEXT[0].split()) > 1 and np.isfinite(seg.score[0]).sum() == 8
    assert seg.draw(0.5, np.random.default_rng(1))[2] == []           # the empty line


def test_the_target_view_never_draws_a_piece_the_decoder_cannot_emit():
    """A view that keeps only the standard segmentations' pieces: every draw stays inside it."""
    tok = Tokenizer.train(TEXT, 60)
    view = TargetView.of(tok, tok.encode(TEXT[:4]))
    seg = view.segmentations(TEXT[:4], 16)
    assert np.isfinite(seg.score).sum() < np.isfinite(tok.segmentations(TEXT[:4], 16).score).sum()
    for seed in range(20):
        for line, ids in zip(TEXT[:4], seg.draw(0.1, np.random.default_rng(seed))):
            assert UNK not in ids and view.decode(ids) == line
    narrow = TargetView(tok, [0, 1, 2, 3] + sorted(set(tok.encode(TEXT[:1])[0])))   # lines 1-3 are outside it
    assert narrow.segmentations(TEXT[:2], 4).draw(1.0, np.random.default_rng(0))[1] == narrow.encode(TEXT[1:2])[0]


DRAW = """
import json, sys, numpy as np
from seqattn.data.tokenizer import Tokenizer
tok = Tokenizer(open(sys.argv[1], "rb").read())
lines = json.loads(sys.argv[2])
print(json.dumps(tok.segmentations(lines, 16).draw(0.3, np.random.default_rng([7, 2, 0]))))
"""


def test_the_same_seed_draws_the_same_segmentations_in_another_process(tmp_path):
    tok = Tokenizer.train(TEXT, 60)
    tok.save(tmp_path / "spm.model")
    here = tok.segmentations(TEXT, 16)
    np.random.default_rng(123).random(10)                               # other draws in between change nothing
    ours = here.draw(0.3, np.random.default_rng([7, 2, 0]))
    assert ours != tok.encode(TEXT) and ours != here.draw(0.3, np.random.default_rng([7, 3, 0]))
    out = subprocess.run([sys.executable, "-c", DRAW, str(tmp_path / "spm.model"), json.dumps(TEXT)],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ours
