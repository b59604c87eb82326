"""The search engine: greedy, sampling and beam search as `seqattn.search` decodes them, with the
machinery that keeps a batch full and each step cheap.

- Refilling: src is encoded `width` rows at a time (`_Sources`), and the next sentences take the places
  of finished ones (`put`, `join`), so every step runs about `width` rows until the last have joined.
- `row_argmax`, `best_expansions`: the argmax and the beam's best candidates from vectorised chunk
  maxima instead of torch's scalar max-with-indices and full top-k.
- Beam history: columns that no decoding sentence reads any more are dropped.

The rules (ids, limits, length penalty, order of finished hypotheses, stopping bound, sampling draw) are
`seqattn_runtime.rules`'; tests hold every output to the plain search's (`seqattn.search`).
"""

from __future__ import annotations

import torch

from seqattn_runtime.rules import EOS, EXACT, SOS, Hypothesis, Stopping, draw, enters, keep, length_penalty, uniforms
from seqattn_runtime.search import Sampling

from ..model.seq2seq import Encoded
from ..search import Steps, pick_rows, pick_state, select, state_of, tree_map


def put_rows(tree, dim: int, index: torch.Tensor, new) -> None:
    """Write new's tensors into tree's (same structure; None in new: nothing to write) at index along dim."""
    if new is None:
        return
    if isinstance(tree, tuple):
        for mine, theirs in zip(tree, new):
            put_rows(mine, dim, index, theirs)
    else:
        tree.index_copy_(dim, index, new)


def pad_source(x: torch.Tensor, span: int) -> torch.Tensor:
    """Return x (batch x src_len x ...) padded with zeros (False) to span positions."""
    return x if x.size(1) == span else torch.cat([x, x.new_zeros(x.size(0), span - x.size(1), *x.shape[2:])], 1)


def join(parts: list, span: int = 0):
    """Return the rows of all parts (Encoded, an ensemble's tuples of them, or a `Steps`' own encoded
    type, which joins its own), in order, padded to the longest src_len or span (mask False there)."""
    if isinstance(parts[0], tuple):
        return tuple(join(list(member), span) for member in zip(*parts))
    if not isinstance(parts[0], Encoded):
        return type(parts[0]).join(parts, span)
    span = max([span] + [p.mask.size(1) for p in parts])
    pad = lambda x: pad_source(x, span)
    first = parts[0].state
    state = (tuple(torch.cat([p.state[i] for p in parts], 1) for i in range(len(first)))
             if isinstance(first, tuple) else torch.cat([p.state for p in parts], 1))
    memory = torch.cat([pad(p.memory) for p in parts])
    keys = (memory if all(p.keys is p.memory for p in parts) else None if parts[0].keys is None
            else torch.cat([pad(p.keys) for p in parts]))
    return Encoded(memory, keys, torch.cat([pad(p.mask) for p in parts]), state)


def put(enc, index: torch.Tensor, part):
    """Return enc with rows `index` (part's batch ids) overwritten by part's rows, in place unless part's
    src_len is longer (then in a copy padded to it). Keys that are the memory stay so. An ensemble's
    tuples: each member's; a `Steps`' own encoded type puts its own."""
    if isinstance(enc, tuple):
        return tuple(put(e, index, p) for e, p in zip(enc, part))
    if not isinstance(enc, Encoded):
        return enc.put(index, part)
    target = enc if part.mask.size(1) <= enc.mask.size(1) else join([enc], span=part.mask.size(1))
    if part.mask.size(1) < target.mask.size(1):
        part = join([part], span=target.mask.size(1))
    target.memory.index_copy_(0, index, part.memory)
    if target.keys is not None and target.keys is not target.memory:
        target.keys.index_copy_(0, index, part.keys)
    target.mask.index_copy_(0, index, part.mask)
    put_rows(target.state, 1, index, part.state)
    return target


def _start(steps: Steps, rows: int, device: torch.device):
    """Return (first input ids <sos> (rows), the initial input-feeding vectors: `steps.initial_feed`)."""
    return torch.full((rows,), SOS, dtype=torch.long, device=device), steps.initial_feed(rows, device)


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
def greedy(steps: Steps, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor, *,
           sampling: Sampling | None = None, keys: torch.Tensor | None = None, attention: bool = True,
           width: int = 0) -> list[Hypothesis]:
    """Return what `seqattn.search.greedy` returns (the argmax, or with sampling the draw of
    `rules.draw` keyed by keys (batch), default the row of src), decoding with steps (a `Seq2Seq`, its
    `fast.Decoding`, an `Ensemble`).

    At most `width` sentences decode at once (0: all of src): src is encoded `width` rows at a time, in
    its order (sort it by length), and once an eighth of those decoding have finished, the next sentences
    take their places (only their rows are written), so the steps keep `width` rows; when none are left,
    the finished leave the batch. Each output is what decoding its sentence alone gives.
    """
    b, device = src.size(0), src.device
    if b == 0:
        return []
    width = b if width <= 0 else min(width, b)
    sources = _Sources(steps, src, src_len, width)
    keys = (torch.arange(b) if keys is None else torch.as_tensor(keys)).cpu().numpy()
    limit_of = max_len.to(device)
    spare = int(limit_of.max())   # a last column that finished rows write into while they wait for a place
    ids = torch.zeros(b, spare + 1, dtype=torch.long, device=device)   # row i's outputs, to out_len[i]
    att = None                                                       # b x steps x src_len once known
    out_len = limit_of.clone()
    score = torch.zeros(b, device=device)
    enc, rows = sources.take(width)            # each decoding sentence's row of src
    state = state_of(enc)                     # its decoder state
    y, feed = _start(steps, len(rows), device)  # its last output id (<sos> first), input feeding's s~
    pos = torch.zeros_like(rows)               # its output position
    done = torch.zeros_like(rows, dtype=torch.bool)
    while True:
        logits, state, feed, alpha = steps.step(y, state, enc, feed)
        logits = logits.float()
        if sampling is not None:
            all_logp = torch.log_softmax(logits, -1)
            u = uniforms(sampling.seed, keys[rows.cpu().numpy()], pos.cpu().numpy())
            y = torch.from_numpy(draw(all_logp.cpu().numpy(), u, sampling.temperature, sampling.top_k,
                                      sampling.top_p)).to(device)
            logp = all_logp.gather(1, y.unsqueeze(1)).squeeze(1)
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
            put_rows(state, 1, free, state_of(part))
            new_y, new_feed = _start(steps, len(new_rows), device)
            rows[free], pos[free], y[free], done[free] = new_rows, 0, new_y, False
            put_rows(feed, 0, free, new_feed)   # input feeding: s~_0 = 0
        elif n_done == len(rows):
            break
        else:                          # none left to join: the finished leave every per-row tensor
            going = (~done).nonzero().squeeze(1)
            enc, state = select(enc, going), pick_state(state, going)
            rows, pos, y, done = rows[going], pos[going], y[going], done[going]
            feed = pick_rows(feed, going)
    ids, out_len, score = ids.cpu(), out_len.cpu().tolist(), score.cpu().tolist()
    att = None if att is None else att.float().cpu().numpy()
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


@torch.no_grad()
def beam_search(steps: Steps, src: torch.Tensor, src_len: torch.Tensor, max_len: torch.Tensor, beam: int,
                alpha: float = 0.0, nbest: int = 1, attention: bool = True, width: int = 0,
                stopping: Stopping = EXACT) -> list[list[Hypothesis]]:
    """Return what `seqattn.search.beam_search` returns, decoding with steps, the sentences decoding and
    their beams as one (sentences x beam) batch per step.

    At most `width` sentences decode at once (0: all of src), encoded `width` at a time in src's order
    (sort it by length): the next sentence takes a done one's place, and when none are left the done
    ones' rows leave the batch. Each result is what searching its sentence alone gives. attention=False
    skips tracking the weights (Hypothesis.attention is None).
    """
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in 1..beam ({beam}), got {nbest}")
    b, k, device = src.size(0), beam, src.device
    if b == 0:
        return []
    width = b if width <= 0 else min(width, b)
    sources = _Sources(steps, src, src_len, width)
    beams = torch.arange(k, device=device)
    first_scores = torch.full((k,), float("-inf"), device=device)
    first_scores[0] = 0.0                               # all beams start equal: expand only the first

    def joining(part: Encoded, n: int):
        """Return (state, <sos> ids, scores n x k, input-feeding vectors) of n sentences joining: k rows each."""
        y, feed = _start(steps, n * k, device)
        state = tree_map(lambda s: s.repeat_interleave(k, dim=1), state_of(part))
        return state, y, first_scores.repeat(n, 1), feed

    enc, joined = sources.take(width)                   # one row per sentence (slot), shared by its k beams
    state, y, scores, feed = joining(enc, len(joined))  # row = slot * k + beam
    sent_of, start_of = joined.tolist(), [0] * len(joined)   # each slot's sentence, the step it joined at
    limit = max_len.tolist()
    history = torch.empty(len(joined) * k, 0, dtype=torch.long, device=device)   # column c: step c + col0
    att_history, col0 = None, 0
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    ended = [0] * b                                     # each sentence's hypotheses that reached <eos>
    n_src = src_len.tolist()

    def finalize(slot: int, row: int, logp: float, ended_here: bool) -> None:
        sent, first = sent_of[slot], start_of[slot] - col0
        length = history.size(1) - first + (1 if ended_here else 0)
        score = logp / length_penalty(length, alpha)
        ended[sent] += ended_here
        if enters(finished[sent], score, nbest):
            att = None if att_history is None else \
                att_history[row, first : first + length, : n_src[sent]].float().cpu().numpy()
            keep(finished[sent], Hypothesis(history[row, first:].tolist(), score, att, ended_here), nbest)

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
        state = pick_state(state, origin)
        feed = pick_rows(feed, origin)
        t += 1
        done = []
        best_alive = scores[:, 0].tolist()
        for i, sent in enumerate(sent_of):
            if stopping.done(finished[sent], ended[sent], nbest, k, best_alive[i], t - start_of[i], limit[sent],
                             alpha):
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
            put_rows(state, 1, rows, new_state)
            y[rows], scores[slots] = new_y, new_scores
            put_rows(feed, 0, rows, new_feed)
            for slot, sent in zip(done, new.tolist()):
                sent_of[slot], start_of[slot] = sent, t
            done = done[len(new) :]
        if len(done) == n:
            break
        if done:                             # none left to join: done sentences leave the batch
            staying = [i for i in range(n) if i not in set(done)]
            kept = torch.tensor(staying, device=device)
            rows = (kept.unsqueeze(1) * k + beams).view(-1)
            enc = select(enc, kept)
            history, y, scores = history[rows], y[rows], scores.index_select(0, kept)
            att_history = None if att_history is None else att_history[rows]
            state = pick_state(state, rows)
            feed = pick_rows(feed, rows)
            sent_of, start_of = [sent_of[i] for i in staying], [start_of[i] for i in staying]
        first = min(start_of) - col0         # columns no decoding sentence reads any more
        if first >= 32:
            history, col0 = history[:, first:], col0 + first
            att_history = None if att_history is None else att_history[:, first:]
    return finished
