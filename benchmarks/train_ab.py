"""Training of two seqattn versions, bit for bit (opt-in, not in CI): three small configurations trained in
each version's own process; equal hashes mean identical final weights, optimizer state and validation
history.

usage: python benchmarks/train_ab.py --old DIR [--steps 40]
--old: a checkout of the other version (e.g. `git worktree add /tmp/old COMMIT`); the new one is this
repository. The configurations: LSTM, dot attention, plateau schedule, dropout and label smoothing; GRU,
concat attention, input feeding, warm-up and cosine, keep_last; general attention with subword sampling.
Prints one JSON line per version, then whether every hash agrees (exit code 1 where one does not).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

from decode_ab import ROOT, alternate

CONFIGS = {
    "lstm-dot-plateau-dropout": dict(model__dropout=0.3, train__schedule="plateau", train__valid_every=10,
                                     train__label_smoothing=0.1),
    "gru-concat-feeding-warmup": dict(model__rnn="gru", model__attention="concat", model__input_feeding=True,
                                      train__schedule="warmup_decay", train__warmup_steps=5, train__valid_every=20,
                                      train__keep_last=2),
    "general-subword-sampling": dict(model__attention="general", data__sample_alpha=0.1, data__sample_nbest=8,
                                     train__valid_every=20),
}

CHILD = r'''
import hashlib, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import torch
from conftest import reverse_pairs, write_tiny_config
import seqattn
from seqattn.checkpoint import load_checkpoint
from seqattn.config import load_config
from seqattn.train import Trainer
configs, steps = json.loads(sys.argv[3]), int(sys.argv[4])
hashes = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, over in configs.items():
        d = Path(tmp) / name
        d.mkdir()
        Trainer(load_config(write_tiny_config(d, reverse_pairs(60, seed=3), train__max_steps=steps, **over))).run()
        state = load_checkpoint(d / "model" / "last.pt")
        h = hashlib.sha256()
        for key, value in sorted(state["model"].items()):
            h.update(key.encode())
            h.update(value.numpy().tobytes())
        for _, moments in sorted(state["optimizer"]["state"].items()):
            for _, value in sorted(moments.items()):
                h.update(torch.as_tensor(value).numpy().tobytes())
        history = [{k: v for k, v in r.items() if k != "minutes"} for r in state["progress"]["history"]]
        h.update(json.dumps(history, sort_keys=True).encode())
        hashes[name] = h.hexdigest()[:16]
print(json.dumps({"code": seqattn.__file__, "hashes": hashes}))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    out = io.StringIO()   # the child takes a checkout (alternate's), then the tests folder: the tiny data, configs
    with contextlib.redirect_stdout(out):
        alternate(a.old, 1, CHILD, [str(ROOT / "tests"), json.dumps(CONFIGS), str(a.steps)])
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    for row in rows:
        print(json.dumps(row))
    same = rows[0]["hashes"] == rows[1]["hashes"]
    print("identical weights, optimizer state and history in every configuration" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
