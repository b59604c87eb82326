"""One sentence through the seed's model, step by step: the context vector, free decoding, teacher forcing.

Calls the model's own `Seq2Seq.encode` and `Seq2Seq.step` (`seqattn/model/`) one step at a time, the way
the seed explains it, and records what each step is fed, what it predicts and where it looks.
`seqattn explain` prints it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .data.batching import pad_sources
from .data.tokenizer import EOS, SOS
from .search import max_lengths
from .translator import Translator


@dataclass
class Step:
    """One decoder step t."""

    input: str                 # the token fed in: y_{t-1} (the model's own, or the reference's)
    output: str                # the most likely next token
    prob: float                # its probability
    reference: str | None      # teacher forcing: the reference token y_t the step is trained to predict
    reference_prob: float | None
    attends: str | None        # the source piece with the largest attention weight (None: no attention)
    weight: float | None       # that weight


@dataclass
class Explanation:
    source_pieces: list[str]   # the source as the encoder reads it, <eos> last
    memory_size: int           # numbers per encoder state h_i (both directions)
    context: list[float]       # the decoder's initial hidden state h_0 (top layer): the context vector
    cell: list[float] | None   # the LSTM's initial cell state c_0 (top layer); None for a GRU
    free: list[Step]           # test time: from <sos>, each step fed the model's previous output
    output: str                # what free decoding wrote
    forced: list[Step] | None  # training time: each step fed the reference's previous token
    forced_loss: float | None  # mean -log p(reference token) over the forced steps

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def explain(translator: Translator, text: str, reference: str | None = None) -> Explanation:
    """Return the Explanation of text (and of the reference under teacher forcing when given)."""
    model, tok = translator.model, translator.tok
    was_training = model.training
    model.eval()
    try:
        ids = tok.src.encode([text])[0][: translator.cfg.data.max_len]
        src, src_len = pad_sources([ids])
        enc = model.encode(src.to(translator.device), src_len)
        h0, c0 = enc.state if isinstance(enc.state, tuple) else (enc.state, None)
        pieces = tok.src.pieces(ids) + ["<eos>"]

        def run(feed_ids: list[int] | None, limit: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
            """Decode from <sos>: feed feed_ids (teacher forcing) or the argmax (free); return per step
            (fed id, argmax id, probabilities, attention weights or None)."""
            steps, state, feed = [], enc.state, model.initial_feed(1, translator.device)
            y = torch.tensor([SOS], device=translator.device)
            for t in range(limit):
                logits, state, feed, alpha = model.step(y, state, enc, feed)
                probs = torch.softmax(logits.float()[0], -1)
                best = int(probs.argmax())
                steps.append((int(y[0]), best, probs, None if alpha is None else alpha[0].float()))
                nxt = feed_ids[t] if feed_ids is not None else best
                if feed_ids is None and best == EOS:
                    break
                y = torch.tensor([nxt], device=translator.device)
            return steps

        def describe(raw, targets: list[int] | None) -> list[Step]:
            out = []
            for t, (fed, best, probs, alpha) in enumerate(raw):
                where = None if alpha is None else int(alpha.argmax())
                ref = None if targets is None else targets[t]
                out.append(Step(_piece(tok, fed), _piece(tok, best), float(probs[best]),
                                None if ref is None else _piece(tok, ref), None if ref is None else float(probs[ref]),
                                None if where is None else pieces[where],
                                None if where is None else float(alpha[where])))
            return out

        limit = int(max_lengths(src_len, translator.cfg.train.max_output_ratio)[0])
        free_raw = run(None, limit)
        written = [best for _, best, _, _ in free_raw if best != EOS]
        forced = loss = None
        if reference is not None:
            targets = tok.tgt.encode([reference])[0] + [EOS]
            forced_raw = run(targets, len(targets))
            forced = describe(forced_raw, targets)
            loss = -sum(float(torch.log(p[y])) for (_, _, p, _), y in zip(forced_raw, targets)) / len(targets)
        return Explanation(pieces, enc.memory.size(-1), [round(v, 4) for v in h0[-1, 0].tolist()],
                           None if c0 is None else [round(v, 4) for v in c0[-1, 0].tolist()],
                           describe(free_raw, None), tok.tgt.decode(written), forced, loss)
    finally:
        model.train(was_training)


def _piece(tok, i: int) -> str:
    return {SOS: "<sos>", EOS: "<eos>"}.get(i) or tok.tgt.pieces([i])[0]


def render(e: Explanation, numbers: int = 8) -> str:
    """Return the Explanation as the text `seqattn explain` prints."""
    norm = sum(v * v for v in e.context) ** 0.5
    shown = " ".join(f"{v:+.3f}" for v in e.context[:numbers])
    lines = [
        f"source: {len(e.source_pieces)} pieces, read by the encoder one by one: {' '.join(e.source_pieces)}",
        f"encoder states h_1..h_{len(e.source_pieces)}: {e.memory_size} numbers each (attention's keys and values)",
        f"context vector: the decoder's first state, made from the encoder's last one: {len(e.context)} numbers, "
        f"norm {norm:.2f}",
        f"  first {min(numbers, len(e.context))}: {shown}" + (" ..." if len(e.context) > numbers else ""),
        "",
        "free decoding (test time): each step is fed the model's own previous output",
        _table(e.free, forced=False),
        f"output: {e.output}",
    ]
    if e.forced is not None:
        lines += ["", "teacher forcing (training): each step is fed the reference's previous token",
                  _table(e.forced, forced=True),
                  f"loss: {e.forced_loss:.4f} (mean -log p of the reference tokens; training minimises it)"]
    return "\n".join(lines)


def _table(steps: list[Step], forced: bool) -> str:
    head = ["t", "fed", "predicts", "p"] + (["reference", "p(ref)"] if forced else []) + ["looks at (weight)"]
    rows = [head]
    for t, s in enumerate(steps, 1):
        look = "-" if s.attends is None else f"{s.attends} ({s.weight:.2f})"
        row = [str(t), s.input, s.output, f"{s.prob:.2f}"]
        if forced:
            row += [s.reference + ("" if s.reference == s.output else "  ≠"), f"{s.reference_prob:.2f}"]
        rows.append(row + [look])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
