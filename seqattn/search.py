"""Decoding from <sos> to <eos>, all in one place: batched greedy, sampling and beam search, and the
bookkeeping of which sentences are being decoded (finished ones leave the batch or hand their rows to
the next sentences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .data.tokenizer import EOS, SOS
from .model.seq2seq import Encoded, Seq2Seq


class Steps(Protocol):
    """What the searches decode with: `Seq2Seq` itself, `fast.Decoding` of it (the same results), or an
    `Ensemble` of several (whose encoded sources, states and feeds are tuples, one entry per model)."""

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Encoded: ...

    def initial_feed(self, rows: int, device: torch.device) -> torch.Tensor | None: ...

    def step(self, y_prev: torch.Tensor, state, enc: Encoded, feed: torch.Tensor | None = None,
             group: int = 1): ...


def _map(fn, tree):
    """Return tree (a tensor, None, or a tuple of trees: an LSTM's (h, c), an ensemble's members) with fn
    applied to every tensor."""
    if tree is None:
        return None
    return tuple(_map(fn, t) for t in tree) if isinstance(tree, tuple) else fn(tree)


def _put_rows(tree, dim: int, index: torch.Tensor, new) -> None:
    """Write new's tensors into tree's (same structure; None in new: nothing to write) at index along dim."""
    if new is None:
        return
    if isinstance(tree, tuple):
        for mine, theirs in zip(tree, new):
            _put_rows(mine, dim, index, theirs)
    else:
        tree.index_copy_(dim, index, new)


@dataclass
class Hypothesis:
    """One decoded output."""

    ids: list[int]                  # output ids, <eos> excluded
    score: float                    # sum of log-probabilities (<eos> included when reached), / length penalty
    attention: torch.Tensor | None  # out_len (+1 for <eos>) x src_len weights, or None without attention
    finished: bool                  # reached <eos> (else stopped at the length limit)


def _pick_rows(tree, index: torch.Tensor, dim: int = 0):
    """Return the rows `index` along dim of every tensor of tree (see `_map`)."""
    return _map(lambda t: t.index_select(dim, index), tree)


def _pick_state(state, index: torch.Tensor):
    """Return the rows `index` of a decoder state (h, c) or h, each layers x batch x hidden (or a tuple of
    them, an ensemble's)."""
    return _pick_rows(state, index, 1)


def _state_of(enc: Encoded | tuple):
    """Return enc's decoder state (an ensemble's tuple of Encoded: the tuple of their states)."""
    return tuple(_state_of(e) for e in enc) if isinstance(enc, tuple) else enc.state


def select(enc: Encoded | tuple, index: torch.Tensor) -> Encoded | tuple:
    """Return the rows `index` (batch' ids) of every tensor of enc (or of each Encoded of an ensemble's
    tuple), e.g. the sentences still being decoded."""
    if isinstance(enc, tuple):
        return tuple(select(e, index) for e in enc)
    memory = enc.memory.index_select(0, index)
    keys = memory if enc.keys is enc.memory else None if enc.keys is None else enc.keys.index_select(0, index)
    return Encoded(memory, keys, enc.mask.index_select(0, index), _pick_state(enc.state, index))


def join(parts: list, span: int = 0) -> Encoded | tuple:
    """Return the rows of all parts (Encoded, or an ensemble's tuples of them), in order, padded to the
    longest src_len or span (mask False there)."""
    if isinstance(parts[0], tuple):
        return tuple(join(list(member), span) for member in zip(*parts))
    span = max([span] + [p.mask.size(1) for p in parts])
    pad = lambda x: x if x.size(1) == span else torch.cat(   # noqa: E731 (batch x len x ... -> span)
        [x, x.new_zeros(x.size(0), span - x.size(1), *x.shape[2:])], 1)
    first = parts[0].state
    state = (tuple(torch.cat([p.state[i] for p in parts], 1) for i in range(len(first)))
             if isinstance(first, tuple) else torch.cat([p.state for p in parts], 1))
    memory = torch.cat([pad(p.memory) for p in parts])
    keys = (memory if all(p.keys is p.memory for p in parts) else None if parts[0].keys is None
            else torch.cat([pad(p.keys) for p in parts]))
    return Encoded(memory, keys, torch.cat([pad(p.mask) for p in parts]), state)


def put(enc: Encoded | tuple, index: torch.Tensor, part: Encoded | tuple) -> Encoded | tuple:
    """Return enc with rows `index` (part's batch ids) overwritten by part's rows, in place unless part's
    src_len is longer (then in a copy padded to it). Keys that are the memory stay so. An ensemble's
    tuples: each member's."""
    if isinstance(enc, tuple):
        return tuple(put(e, index, p) for e, p in zip(enc, part))
    target = enc if part.mask.size(1) <= enc.mask.size(1) else join([enc], span=part.mask.size(1))
    if part.mask.size(1) < target.mask.size(1):
        part = join([part], span=target.mask.size(1))
    target.memory.index_copy_(0, index, part.memory)
    if target.keys is not None and target.keys is not target.memory:
        target.keys.index_copy_(0, index, part.keys)
    target.mask.index_copy_(0, index, part.mask)
    _put_rows(target.state, 1, index, part.state)
    return target


def max_lengths(src_len: torch.Tensor, ratio: float) -> torch.Tensor:
    """Return each sentence's output limit (batch): ratio x source length (batch) + 10."""
    return (src_len.float() * ratio).long() + 10


def length_penalty(length: torch.Tensor | int, alpha: float):
    """Return GNMT's length penalty ((5 + length) / 6) ** alpha (1 when alpha is 0)."""
    return ((5.0 + length) / 6.0) ** alpha


def _start(steps: Steps, rows: int, device: torch.device):
    """Return (first input ids <sos> (rows), the initial input-feeding vectors: `steps.initial_feed`)."""
    return torch.full((rows,), SOS, dtype=torch.long, device=device), steps.initial_feed(rows, device)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Return logits (batch x vocab) with all but the top_k / the top_p nucleus set to -inf."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def row_argmax(x: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (each row's maximum, the first column holding it), both rows, of x (rows x V): what
    x.max(-1) returns, faster on the CPU.

    torch's max with indices runs scalar code (about 240 us for 64 x 3,963), its amax vector code
    (about 20 us): take the amax of each chunk of `chunk` columns, the first chunk holding the row's
    maximum, and the first maximum inside that chunk alone.
    """
    rows, v = x.shape
    whole = v // chunk
    if whole < 2 or not x.is_contiguous():
        return x.max(-1)
    peaks = x[:, : whole * chunk].view(rows, whole, chunk).amax(-1)            # rows x chunks
    if whole * chunk < v:
        peaks = torch.cat([peaks, x[:, whole * chunk :].amax(-1, keepdim=True)], 1)
    best, where = peaks.max(-1)
    cols = (where.unsqueeze(1) * chunk + torch.arange(chunk, device=x.device)).clamp_(max=v - 1)
    inside = x.gather(1, cols).argmax(-1, keepdim=True)     # the clamped repeats of column v-1 come after it
    return best, cols.gather(1, inside).squeeze(1)


def log_normaliser(logits: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
    """Return log sum_v exp(logits - row_max) per row (logsumexp(logits) - row_max); overwrites logits
    (rows x V; row_max: rows, each row's maximum). In place: no rows x V temporaries, as logsumexp has."""
    return logits.sub_(row_max.unsqueeze(1)).exp_().sum(-1).log_()


class _Sources:
    """Encodes src (batch x src_len, lengths on the CPU) `width` rows at a time, in its order, and hands
    out its rows as decoding makes room for them."""

    def __init__(self, steps: Steps, src: torch.Tensor, src_len: torch.Tensor, width: int):
        self.steps, self.src, self.src_len, self.width = steps, src, src_len, width
        self.next = 0                                  # first row not encoded yet
        self.enc: Encoded | None = None                # the last encoded rows: lo .. next-1
        self.lo = self.given = 0                       # their first row; the first not handed out yet

    def pending(self) -> bool:
        """Return whether rows remain to hand out."""
        return self.given < self.src.size(0)

    def take(self, n: int) -> tuple[Encoded, torch.Tensor]:
        """Return (the Encoded of the next n rows or fewer, their rows of src); at least one row is pending."""
        parts, rows = [], []
        while n > 0 and self.pending():
            if self.given == self.next:
                lo, hi = self.next, min(self.src.size(0), self.next + self.width)
                span = int(self.src_len[lo:hi].max())
                self.enc = self.steps.encode(self.src[lo:hi, :span], self.src_len[lo:hi])
                self.lo, self.next = lo, hi
            k = min(n, self.next - self.given)
            index = torch.arange(self.given, self.given + k, device=self.src.device)
            whole = k == self.next - self.lo
            parts.append(self.enc if whole else select(self.enc, index - self.lo))
            rows.append(index)
            self.given, n = self.given + k, n - k
        return (parts[0] if len(parts) == 1 else join(parts)), torch.cat(rows)


@torch.no_grad()
def greedy(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor, *,
           sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, attention: bool = True,
           steps: Steps | None = None, width: int = 0) -> list[Hypothesis]:
    """Return one output per sentence of src (batch x src_len, lengths src_len on CPU): the argmax at
    each step, or with sample=True a draw from softmax(logits / temperature) cut to top_k / top_p.

    Each sentence stops at its own <eos> or its limit max_len (batch). At most `width` sentences decode
    at once (0: all of src): src is encoded `width` rows at a time, in its order (sort it by length), and
    once an eighth of those decoding have finished, the next sentences take their places (only their
    rows are written), so the steps keep `width` rows; when none are left, the finished leave the batch.
    Each output is what decoding its sentence alone gives. Scores are the model's log-probabilities of
    the chosen tokens (before temperature and cuts). attention=False leaves Hypothesis.attention None;
    steps: what encodes and steps (default: the model itself; `fast.Decoding(model)`: the same, faster).
    """
    b, device = src.size(0), src.device
    if b == 0:
        return []
    width = b if width <= 0 else min(width, b)
    steps = steps or model
    sources = _Sources(steps, src, src_len, width)
    limit_of = max_len.to(device)
    spare = int(limit_of.max())   # a last column that finished rows write into while they wait for a place
    ids = torch.zeros(b, spare + 1, dtype=torch.long, device=device)   # row i's outputs, to out_len[i]
    att = None                                                       # b x steps x src_len once known
    out_len = limit_of.clone()
    score = torch.zeros(b, device=device)
    enc, rows = sources.take(width)            # each decoding sentence's row of src
    state = _state_of(enc)                     # its decoder state
    y, feed = _start(steps, len(rows), device)  # its last output id (<sos> first), input feeding's s~
    pos = torch.zeros_like(rows)               # its output position
    done = torch.zeros_like(rows, dtype=torch.bool)
    while True:
        logits, state, feed, alpha = steps.step(y, state, enc, feed)
        logits = logits.float()
        if sample:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            best = logits.gather(1, y.unsqueeze(1)).squeeze(1)
            logp = best - torch.logsumexp(logits, dim=-1)      # log-softmax of the chosen token only
        else:
            best, y = row_argmax(logits)
            logp = -log_normaliser(logits, best)               # the chosen token's log-softmax
        score.index_add_(0, rows, logp.masked_fill(done, 0.0))
        ids[rows, pos] = y
        if attention and alpha is not None:
            if att is None:
                att = alpha.new_zeros(b, ids.size(1), src.size(1))
            att[rows, pos, : alpha.size(-1)] = alpha
        pos += 1
        newly = ~done & ((y == EOS) | (pos >= limit_of[rows]))
        pos.clamp_(max=spare)   # only finished rows get past their limit; nothing reads what they write
        out_len[rows] = torch.where(newly, pos, out_len[rows])
        done |= newly
        n_done = int(done.sum())
        if n_done < max(1, len(rows) // 8) and n_done < len(rows):
            continue
        if sources.pending():          # the next sentences take the finished ones' places
            free = done.nonzero().squeeze(1)
            part, new_rows = sources.take(len(free))
            free = free[: len(new_rows)]
            enc = put(enc, free, part)
            _put_rows(state, 1, free, _state_of(part))
            new_y, new_feed = _start(steps, len(new_rows), device)
            rows[free], pos[free], y[free], done[free] = new_rows, 0, new_y, False
            _put_rows(feed, 0, free, new_feed)   # input feeding: s~_0 = 0
        elif n_done == len(rows):
            break
        else:                          # none left to join: the finished leave every per-row tensor
            keep = (~done).nonzero().squeeze(1)
            enc, state = select(enc, keep), _pick_state(state, keep)
            rows, pos, y, done = rows[keep], pos[keep], y[keep], done[keep]
            feed = _pick_rows(feed, keep)
    ids, out_len, score = ids.cpu(), out_len.cpu().tolist(), score.cpu().tolist()
    att = None if att is None else att.float().cpu()
    hyps = []
    for i in range(b):
        row = ids[i, : out_len[i]].tolist()
        finished = row[-1] == EOS
        n_src = int(src_len[i])
        hyps.append(Hypothesis(row[:-1] if finished else row, score[i],
                               None if att is None else att[i, : out_len[i], :n_src], finished))
    return hyps


def best_expansions(logits: torch.Tensor, scores: torch.Tensor, group: int, m: int, chunk: int = 64):
    """Return (scores, beam, token), each n x m, best first: the m best of log_softmax(logits[r])[v] +
    scores[r] over the `group` rows r of each of the n groups (logits: (n*group) x V, scores: n*group).

    torch's topk walks every logit at about 1.3 ns each (a beam step of 64 sentences x 5 beams: 1.7 ms);
    amax runs vector code. So: the maximum of each chunk of `chunk` logits, shifted by its row's offset
    (score - max - log-normaliser) ranks the chunks; the m best elements of a group lie in its m best chunks
    (m other chunks would otherwise hold m larger ones), and only those chunks' logits meet topk (0.9 ms).
    """
    rows, v = logits.shape
    n, whole = rows // group, v // chunk
    if whole * group < m or whole < 2:     # a small vocabulary: every candidate at once
        best, flat = (torch.log_softmax(logits, -1) + scores.unsqueeze(1)).view(n, group * v).topk(m, -1)
        return best, flat // v, flat % v
    peaks = logits[:, : whole * chunk].view(rows, whole, chunk).amax(-1)           # rows x chunks
    if whole * chunk < v:
        peaks = torch.cat([peaks, logits[:, whole * chunk :].amax(-1, keepdim=True)], 1)
    row_max = peaks.amax(-1)
    norm = (logits - row_max.unsqueeze(1)).exp_().sum(-1).log_()
    offset = (scores - row_max - norm).view(n, group)                               # log-softmax = logit + offset
    chunks = peaks.size(1)
    pick = (peaks.view(n, group, chunks) + offset.unsqueeze(-1)).view(n, -1).topk(m, -1).indices   # n x m
    beam = pick // chunks
    cols = ((pick % chunks) * chunk).unsqueeze(-1) + torch.arange(chunk, device=logits.device)     # n x m x chunk
    first_row = torch.arange(n, device=logits.device).unsqueeze(1) * group
    flat = ((first_row + beam) * v).unsqueeze(-1) + cols.clamp(max=v - 1)
    cand = logits.view(-1).index_select(0, flat.view(-1)).view(n, m, chunk) + offset.gather(1, beam).unsqueeze(-1)
    if whole * chunk < v:                  # the last chunk's columns past V
        cand.masked_fill_(cols >= v, float("-inf"))
    best, where = cand.view(n, -1).topk(m, -1)
    return best, beam.gather(1, where // chunk), cols.view(n, -1).gather(1, where)


def _cannot_improve(finished: list[Hypothesis], nbest: int, best_alive: float, length: int, limit: int,
                    alpha: float) -> bool:
    """Return whether no hypothesis still alive can enter a sentence's nbest finished ones (best first).

    Raw scores (sums of log-probabilities) only fall as a hypothesis grows, and an alive one of `length`
    tokens ends with between length + 1 tokens and `limit`; so the best it can reach is best_alive divided
    by the largest length penalty among those lengths (alpha >= 0: the one at the limit). This is the
    only rule that ends a sentence before its limit: counting finished hypotheses is not exact (in a
    confident model the weak beams finish first, while the best hypothesis is still alive).
    """
    if len(finished) < nbest:
        return False
    if best_alive == float("-inf"):
        return True
    reach = max(length_penalty(length + 1, alpha), length_penalty(limit, alpha))
    return finished[nbest - 1].score >= best_alive / reach


@torch.no_grad()
def beam_search(model: Seq2Seq, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor, beam: int,
                alpha: float = 0.0, nbest: int = 1, attention: bool = True,
                steps: Steps | None = None, width: int = 0) -> list[list[Hypothesis]]:
    """Return the nbest hypotheses of each sentence (best first), batched beam search of width beam.

    The sentences decoding and their beams run as one (sentences x beam) batch per step. A hypothesis
    that ends in <eos> among the top `beam` candidates is set aside with score
    logp / length_penalty(len, alpha) (a sentence keeps its nbest best), and the `beam` best that do not
    end go on; a sentence is done when no alive hypothesis can still enter its nbest (`_cannot_improve`)
    or when it reaches its limit max_len (batch), so the result is exactly what this search of width
    `beam` finds when every alive hypothesis is followed as far as it could matter. At most `width`
    sentences decode at once (0: all of src), encoded `width` at a time in src's order (sort it by
    length): the next sentence takes a done one's place, and when none are left the done ones' rows
    leave the batch. Each result is what searching its sentence alone gives.
    With beam 1 and alpha 0 this is exactly greedy search. attention=False skips tracking the weights
    (Hypothesis.attention is None); steps: what encodes and steps (default: the model itself;
    `fast.Decoding(model)`: the same, faster).
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in 1..beam ({beam}), got {nbest}")
    b, k, device = src.size(0), beam, src.device
    if b == 0:
        return []
    width = b if width <= 0 else min(width, b)
    steps = steps or model
    sources = _Sources(steps, src, src_len, width)
    beams = torch.arange(k, device=device)
    first_scores = torch.full((k,), float("-inf"), device=device)
    first_scores[0] = 0.0                               # all beams start equal: expand only the first

    def joining(part: Encoded, n: int):
        """Return (state, <sos> ids, scores n x k, input-feeding vectors) of n sentences joining: k rows each."""
        y, feed = _start(steps, n * k, device)
        state = _map(lambda s: s.repeat_interleave(k, dim=1), _state_of(part))
        return state, y, first_scores.repeat(n, 1), feed

    enc, joined = sources.take(width)                   # one row per sentence (slot), shared by its k beams
    state, y, scores, feed = joining(enc, len(joined))  # row = slot * k + beam
    sent_of, start_of = joined.tolist(), [0] * len(joined)   # each slot's sentence, the step it joined at
    limit = max_len.tolist()
    history = torch.empty(len(joined) * k, 0, dtype=torch.long, device=device)   # column c: step c + col0
    att_history, col0 = None, 0
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    n_src = src_len.tolist()

    def finalize(slot: int, row: int, logp: float, ended: bool) -> None:
        sent, first = sent_of[slot], start_of[slot] - col0
        length = history.size(1) - first + (1 if ended else 0)
        score, kept = logp / length_penalty(length, alpha), finished[sent]
        if len(kept) == nbest and score <= kept[-1].score:   # it would not enter the nbest
            return
        att = None if att_history is None else att_history[row, first : first + length, : n_src[sent]].float().cpu()
        kept.append(Hypothesis(history[row, first:].tolist(), score, att, ended))
        kept.sort(key=lambda h: -h.score)   # stable: of equal scores, the one finished first stays first
        del kept[nbest:]

    t = 0
    while True:
        n = len(sent_of)
        logits, state, feed, alpha_t = steps.step(y, state, enc, feed, group=k)
        # each sentence's 2k best continuations (at most k of them end in <eos>)
        top_scores, top_beam, top_tok = best_expansions(logits.float(), scores.view(-1), k, 2 * k)
        is_eos = top_tok == EOS
        if attention and alpha_t is not None:
            step_att = alpha_t.unsqueeze(1)
            if att_history is not None and att_history.size(-1) < step_att.size(-1):   # longer sources joined
                att_history = torch.cat([att_history, att_history.new_zeros(
                    *att_history.shape[:2], step_att.size(-1) - att_history.size(-1))], -1)
            att_history = step_att if att_history is None else torch.cat([att_history, step_att], 1)
        # hypotheses that end here: <eos> among the top k candidates (their history: before this step)
        for i, j in (is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero().tolist():
            finalize(i, i * k + int(top_beam[i, j]), float(top_scores[i, j]), True)
        # the k best that go on
        scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=-1)
        y = top_tok.gather(1, pick).view(-1)
        origin = (top_beam.gather(1, pick) + torch.arange(n, device=device).unsqueeze(1) * k).view(-1)
        history = torch.cat([history.index_select(0, origin), y.view(-1, 1)], 1)
        if att_history is not None:
            att_history = att_history.index_select(0, origin)
        state = _pick_state(state, origin)
        feed = _pick_rows(feed, origin)
        t += 1
        done = []
        best_alive = scores[:, 0].tolist()
        for i, sent in enumerate(sent_of):
            if _cannot_improve(finished[sent], nbest, best_alive[i], t - start_of[i], limit[sent], alpha):
                done.append(i)
            elif t - start_of[i] >= limit[sent]:   # out of length: the best alive ones end here, unfinished
                for j in range(k):
                    if torch.isfinite(scores[i, j]):
                        finalize(i, i * k + j, float(scores[i, j]), False)
                done.append(i)
        if done and sources.pending():       # the next sentences take done ones' places
            part, new = sources.take(len(done))
            slots = torch.tensor(done[: len(new)], device=device)
            rows = (slots.unsqueeze(1) * k + beams).view(-1)
            enc = put(enc, slots, part)
            new_state, new_y, new_scores, new_feed = joining(part, len(new))
            _put_rows(state, 1, rows, new_state)
            y[rows], scores[slots] = new_y, new_scores
            _put_rows(feed, 0, rows, new_feed)
            for slot, sent in zip(done, new.tolist()):
                sent_of[slot], start_of[slot] = sent, t
            done = done[len(new) :]
        if len(done) == n:
            break
        if done:                             # none left to join: done sentences leave the batch
            keep = [i for i in range(n) if i not in set(done)]
            kept = torch.tensor(keep, device=device)
            rows = (kept.unsqueeze(1) * k + beams).view(-1)
            enc = select(enc, kept)
            history, y, scores = history[rows], y[rows], scores.index_select(0, kept)
            att_history = None if att_history is None else att_history[rows]
            state = _pick_state(state, rows)
            feed = _pick_rows(feed, rows)
            sent_of, start_of = [sent_of[i] for i in keep], [start_of[i] for i in keep]
        first = min(start_of) - col0         # columns no decoding sentence reads any more
        if first >= 32:
            history, col0 = history[:, first:], col0 + first
            att_history = None if att_history is None else att_history[:, first:]
    return finished
