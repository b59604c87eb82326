"""One sentence through the model, step by step: the context vector, free decoding, teacher forcing,
and every quantity of one attention step.

Calls the model's own `Seq2Seq.encode` and `Seq2Seq.step` (`seqattn/model/`) one step at a time, the way
the equations read, and records what each step is fed, what it predicts and where it looks. For one
step t it also records, from the model's own modules as they run (forward hooks), the decoder state s_t,
the attention scores e_t (`Attention.scores`), the distribution alpha_t, the attention value a_t,
[a_t; s_t], the attentional state s~_t and the output distribution. `seqattn explain` prints it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from .data.batching import pad_sources
from .data.tokenizer import EOS, SOS
from .errors import SeqattnError
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
class Candidate:
    """One of the most likely next tokens of a step."""

    piece: str
    id: int
    prob: float


@dataclass
class StepDetail:
    """Every quantity of decoder step t (full vectors, as the model computed them)."""

    step: int                          # t, from 1
    teacher_forcing: bool              # fed the reference's previous token (else the model's own)
    input: str                         # y_{t-1}, the token fed in
    input_id: int
    score: str                         # the attention score: dot, general, concat, or none
    state: list[float]                 # s_t: the decoder RNN's output (top layer), the query
    scores: list[float] | None         # e_t,i = score(s_t, h_i), one per source piece
    weights: list[float] | None        # alpha_t = softmax(e_t): the attention distribution
    value: list[float] | None          # a_t = sum_i alpha_t,i h_i: the attention value
    joined: list[float] | None         # [a_t; s_t]
    attentional: list[float]           # s~_t = tanh(W_c [a_t; s_t] + b_c) (s_t itself without attention)
    top: list[Candidate]               # the most likely y_t under softmax(W_y s~_t + b_y)


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
    detail: StepDetail | None = None   # every quantity of one step (`--step`)

    def to_dict(self) -> dict:
        return asdict(self)


SCORES = {"dot": "s_t · h_i", "general": "s_t · W_a h_i", "concat": "v_a · tanh(W_a [s_t; h_i])"}


@contextmanager
def _recording(model):
    """Record, while the block runs one decoder step, what the decoder's modules take and give: s_t (the
    RNN's output), the attention's query, keys and outputs, W_c's input and the output layer's input and
    output. Yields the dict that fills in."""
    seen: dict = {}
    dec = model.decoder
    hooks = [dec.rnn.register_forward_hook(lambda m, i, o: seen.__setitem__("s", o[0])),
             dec.out.register_forward_hook(lambda m, i, o: seen.update(s_tilde=i[0], logits=o))]
    if dec.attention is not None:
        hooks += [dec.attention.register_forward_hook(lambda m, i, o: seen.update(query=i[0], keys=i[1], a=o[0],
                                                                                   alpha=o[1])),
                  dec.combine.register_forward_hook(lambda m, i, o: seen.__setitem__("joined", i[0]))]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def _detail(model, tok, seen: dict, t: int, fed: int, forced: bool, top: int) -> StepDetail:
    """Return the StepDetail of step t from what `_recording` saw (one sentence, one step: each tensor
    flattens to its vector)."""
    def vec(name: str) -> list[float] | None:
        return None if seen.get(name) is None else seen[name].float().reshape(-1).tolist()

    attention = model.decoder.attention
    if attention is not None:
        seen["e"] = attention.scores(seen["query"], seen["keys"])           # the model's own score function
    probs = torch.softmax(seen["logits"].float().reshape(-1), -1)
    best = probs.topk(min(top, probs.numel()))
    return StepDetail(t, forced, _piece(tok, fed), fed, "none" if attention is None else attention.score,
                      vec("s"), vec("e"), vec("alpha"), vec("a"), vec("joined"), vec("s_tilde"),
                      [Candidate(_piece(tok, int(i)), int(i), float(p)) for p, i in zip(best.values, best.indices)])


@torch.no_grad()
def explain(translator: Translator, text: str, reference: str | None = None, step: int | None = None,
            top: int = 5) -> Explanation:
    """Return the Explanation of text (and of the reference under teacher forcing when given); with step,
    also every quantity of that step (from 1) of the reference's decoding, or of free decoding without
    one, and its `top` most likely next tokens."""
    model, tok = translator.model, translator.tok
    was_training = model.training
    model.eval()
    try:
        ids = tok.src.encode([text])[0][: translator.cfg.data.max_len]
        src, src_len = pad_sources([ids])
        enc = model.encode(src.to(translator.device), src_len)
        h0, c0 = enc.state if isinstance(enc.state, tuple) else (enc.state, None)
        pieces = tok.src.pieces(ids) + ["<eos>"]

        details: list[StepDetail] = []

        def run(feed_ids: list[int] | None, limit: int, at: int | None = None):
            """Decode from <sos>: feed feed_ids (teacher forcing) or the argmax (free); return per step
            (fed id, argmax id, probabilities, attention weights or None); record every quantity of step
            `at` (from 1) in details."""
            steps, state, feed = [], enc.state, model.initial_feed(1, translator.device)
            y = torch.tensor([SOS], device=translator.device)
            for t in range(limit):
                if t + 1 == at:
                    with _recording(model) as seen:
                        logits, state, feed, alpha = model.step(y, state, enc, feed)
                    details.append(_detail(model, tok, seen, at, int(y[0]), feed_ids is not None, top))
                else:
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

        limit = int(max_lengths(src_len, translator.cfg.decode.max_output_ratio)[0])
        free_raw = run(None, limit, step if reference is None else None)
        written = [best for _, best, _, _ in free_raw if best != EOS]
        forced = loss = None
        if reference is not None:
            targets = tok.tgt.encode([reference])[0] + [EOS]
            forced_raw = run(targets, len(targets), step)
            forced = describe(forced_raw, targets)
            loss = -sum(float(torch.log(p[y])) for (_, _, p, _), y in zip(forced_raw, targets)) / len(targets)
        if step is not None and not details:
            kind, steps = ("teacher forcing", len(forced_raw)) if reference is not None else ("free decoding",
                                                                                              len(free_raw))
            raise SeqattnError(f"--step {step}: {kind} of this sentence has steps 1 to {steps}")
        return Explanation(pieces, enc.memory.size(-1), [round(v, 4) for v in h0[-1, 0].tolist()],
                           None if c0 is None else [round(v, 4) for v in c0[-1, 0].tolist()],
                           describe(free_raw, None), tok.tgt.decode(written), forced, loss,
                           details[0] if details else None)
    finally:
        model.train(was_training)


def _piece(tok, i: int) -> str:
    return {SOS: "<sos>", EOS: "<eos>"}.get(i) or tok.tgt.pieces([i])[0]


def render(e: Explanation, numbers: int = 8) -> str:
    """Return the Explanation as the text `seqattn explain` prints."""
    lines = [
        f"source: {len(e.source_pieces)} pieces, read by the encoder one by one: {' '.join(e.source_pieces)}",
        f"encoder states h_1..h_{len(e.source_pieces)}: {e.memory_size} numbers each (attention's keys and values)",
        f"context vector: the decoder's first state, made from the encoder's last one: {len(e.context)} numbers, "
        f"norm {_norm(e.context):.2f}",
        _numbers(e.context, numbers),
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


def _numbers(v: list[float], numbers: int) -> str:
    shown = " ".join(f"{x:+.3f}" for x in v[:numbers])
    return f"  first {min(numbers, len(v))}: {shown}" + (" ..." if len(v) > numbers else "")


def _prob(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def _norm(v: list[float]) -> float:
    return sum(x * x for x in v) ** 0.5


def render_step(e: Explanation, numbers: int = 8) -> str:
    """Return the text `seqattn explain --step T` prints: the source pieces, then each quantity of the
    step, named by its equation."""
    d, pieces = e.detail, e.source_pieces
    how, whose = ("teacher forcing", "the reference's previous token") if d.teacher_forcing else \
        ("free decoding", "the model's own previous output")
    lines = [f"source: {' '.join(pieces)}", "",
             f"step t = {d.step} of {how}: fed y_{d.step - 1} = {d.input}, {whose}",
             f"s_t = RNN(y_{{t-1}}, s_{{t-1}}): the decoder state{'' if d.scores is None else ', the query'}: "
             f"{len(d.state)} numbers, "
             f"norm {_norm(d.state):.2f}", _numbers(d.state, numbers)]
    if d.scores is None:
        lines += ["no attention (the plain seq2seq): s~_t = s_t"]
    else:
        rows = [["i", "h_i", "e_t,i", "alpha_t,i"]]
        rows += [[str(i), p, f"{e:+.3f}", _prob(a)]
                 for i, (p, e, a) in enumerate(zip(pieces, d.scores, d.weights), 1)]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines += [f"attention score e_t,i = {SCORES[d.score]}, one per source piece i;",
                  "attention distribution alpha_t = softmax(e_t):"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [f"  sum of alpha_t: {sum(d.weights):.6f}",
                  f"attention value a_t = sum_i alpha_t,i h_i: {len(d.value)} numbers, norm {_norm(d.value):.2f}",
                  _numbers(d.value, numbers),
                  f"[a_t; s_t]: a_t and s_t joined, {len(d.joined)} numbers",
                  f"s~_t = tanh(W_c [a_t; s_t] + b_c): the attentional hidden state: {len(d.attentional)} numbers, "
                  f"norm {_norm(d.attentional):.2f}", _numbers(d.attentional, numbers)]
    width = max(len(c.piece) for c in d.top)
    lines += [f"p(y_t) = softmax(W_y s~_t + b_y), the {len(d.top)} most likely y_t:"]
    lines += [f"  {c.piece.ljust(width)}  {_prob(c.prob)}" for c in d.top]
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
