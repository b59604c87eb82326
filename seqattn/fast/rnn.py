"""Running the RNNs: float32 under autocast, a packed-sequence training path for the CPU, and the
one-layer LSTM encoder of inference from an input-projection table.

torch's own packed LSTM/GRU on the CPU computes the input projections of all steps at once and then
takes each step's rows with `narrow`; in the backward pass every one of those slices is turned into a
zero-filled gradient the size of all steps and added up, once per time step. `packed_rnn` computes the
same function with the per-step rows taken by `split`, whose backward is one concatenation (GRU). For an
LSTM, the leading steps every sequence of the batch is alive for go to torch's fused LSTM (oneDNN), and
the steps after them to a loop with a hand-written backward (`_LSTMDirection`). `pad_packed` replaces
pad_packed_sequence, whose backward copies time step by time step, with one row gather. What each saves
is measured by `python benchmarks/micro.py` (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .dropout import cpu_dropout

# packed LSTM training: leading steps shared by all rows go to torch's fused LSTM when there are at least
# this many (a fused call has a fixed cost above one step of the hand-written loop, forward + backward)
FUSED_MIN_STEPS = 4
TABLE_MAX = 32 * 2**20     # elements of an input-projection table (encoder or decoder; float32: 128 MiB)
# Under CUDA autocast torch runs cuDNN's RNNs in fp16 (not bf16), re-casting their weights on every call
# and without loss scaling; the fast RNNs run them in float32 instead (TF32 in cuDNN), the rest stays bf16.
RNN_FLOAT32_UNDER_AUTOCAST = True


class _FastRNN:
    """What FastLSTM and FastGRU add to torch's module: the same function, in float32 under autocast,
    and through `packed_rnn` for a packed input from a zero state on the CPU with gradients."""

    def forward(self, x, hx=None):
        """Return what nn.LSTM / nn.GRU return for (x, hx)."""
        return in_rnn_precision(self._forward, x, hx)

    def _forward(self, x, hx):
        if (isinstance(x, PackedSequence) and hx is None and x.data.device.type == "cpu" and torch.is_grad_enabled()
                and self.bias and not getattr(self, "proj_size", 0)):
            return packed_rnn(self, x)
        return super().forward(x, hx)


class FastLSTM(_FastRNN, nn.LSTM):
    """nn.LSTM, faster to train on the CPU (`packed_rnn`), in float32 under autocast."""


class FastGRU(_FastRNN, nn.GRU):
    """nn.GRU, faster to train on the CPU (`packed_rnn`), in float32 under autocast."""


def in_rnn_precision(fn, x, state):
    """Return fn(x, state); under autocast (when RNN_FLOAT32_UNDER_AUTOCAST) with autocast off and x (unless
    it holds ids) and the state (tensor or tuple of tensors) in float32, so an RNN's outputs and new state
    are float32."""
    data = x.data if isinstance(x, PackedSequence) else x
    if not (RNN_FLOAT32_UNDER_AUTOCAST and torch.is_autocast_enabled(data.device.type)):
        return fn(x, state)
    if state is not None:
        state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
    with torch.autocast(data.device.type, enabled=False):
        return fn(x.float() if data.is_floating_point() else x, state)


def packed_rnn(rnn: nn.LSTM | nn.GRU, packed: PackedSequence):
    """Return what rnn(packed) returns (an LSTM or GRU with biases, from a zero state): the output
    PackedSequence and the final state, h (and c), each (layers x directions) x batch x hidden in the
    batch's own order. Dropout between layers as nn.LSTM/nn.GRU apply it (rnn.dropout, in training)."""
    lstm = isinstance(rnn, nn.LSTM)
    sizes = packed.batch_sizes.tolist()    # rows of each time step, sorted longest first
    x, finals_h, finals_c = packed.data, [], []
    for layer in range(rnn.num_layers):
        if layer and rnn.dropout and rnn.training:
            x = cpu_dropout(x, rnn.dropout)
        outs = []
        for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
            weights = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih",
                                                                              "bias_hh")]
            out, h, c = _direction(x, sizes, *weights, lstm=lstm, reverse=bool(suffix))
            outs.append(out)
            finals_h.append(h)
            finals_c.append(c)
        x = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    order = packed.unsorted_indices
    restore = lambda states: torch.stack(states) if order is None else torch.stack(states).index_select(1, order)
    final = (restore(finals_h), restore(finals_c)) if lstm else restore(finals_h)
    return PackedSequence(x, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), final


def _direction(x: torch.Tensor, sizes: list[int], w_ih, w_hh, b_ih, b_hh, lstm: bool, reverse: bool):
    """Run one direction of one layer over packed rows x (sum(sizes) x in); return (outputs sum(sizes) x
    hidden, final h batch x hidden, final c or None), rows in the packed (longest first) order."""
    if lstm:
        return _lstm_direction(x, sizes, w_ih, w_hh, b_ih, b_hh, reverse)
    hidden = w_hh.size(1)
    # the input projection of every step at once (b_hn stays with the recurrent part: it sits inside r * (.))
    steps = torch.addmm(b_ih, x, w_ih.t()).split(sizes)
    w_hh_t = w_hh.t()
    h = x.new_zeros(sizes[-1] if reverse else sizes[0], hidden)
    out: list = [None] * len(sizes)
    ended = []
    for t in (range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))):
        rows = sizes[t]
        if rows < h.size(0):      # forward: the shortest sequences have ended
            ended.append(h[rows:])
            h = h[:rows]
        elif rows > h.size(0):    # reverse: longer sequences start here, from a zero state
            h = torch.cat([h, h.new_zeros(rows - h.size(0), hidden)])
        i_r, i_z, i_n = steps[t].chunk(3, 1)          # GRU gates r, z, n
        h_r, h_z, h_n = torch.addmm(b_hh, h, w_hh_t).chunk(3, 1)
        r, z = (i_r + h_r).sigmoid(), (i_z + h_z).sigmoid()
        n = (i_n + r * h_n).tanh()
        h = n + z * (h - n)
        out[t] = h
    return torch.cat(out), torch.cat([h, *ended[::-1]]), None   # the rows that ended first are the last rows


def _lstm_direction(x: torch.Tensor, sizes: list[int], w_ih, w_hh, b_ih, b_hh, reverse: bool):
    """Return (outputs N x hidden, final h, final c, each batch x hidden) of one LSTM direction over packed
    rows x (N x in, N = sum(sizes)), rows in the packed (longest first) order, from a zero state.

    The reverse direction reads each sequence reversed within its length (one row permutation in, the
    same one out), so both directions run forward. The first run of steps that every sequence is alive
    for (most of a batch sorted by length: the median Multi30k batch of 3,000 target tokens holds two
    source lengths) goes to torch's fused LSTM, oneDNN's kernel on the CPU; the steps after it, as rows
    end, to `_LSTMDirection` from the state it reached, so every final state is exact.
    """
    if reverse:
        flip = _reversal(sizes).to(x.device)
        out, h, c = _lstm_direction(x.index_select(0, flip), sizes, w_ih, w_hh, b_ih, b_hh, False)
        return out.index_select(0, flip), h, c
    rows, steps = sizes[0], len(sizes)
    head = next((t for t in range(steps) if sizes[t] != rows), steps)
    if head < FUSED_MIN_STEPS:
        return _LSTMDirection.apply(x, w_ih, w_hh, b_ih + b_hh, sizes, None, None)
    zero = x.new_zeros(1, rows, w_hh.size(1))
    xs = x[: head * rows].reshape(head, rows, -1)
    out, h, c = torch.lstm(xs, (zero, zero), (w_ih, w_hh, b_ih, b_hh), True, 1, 0.0, True, False, False)
    out, h, c = out.view(-1, out.size(-1)), h[0], c[0]
    if head == steps:
        return out, h, c
    alive = sizes[head]                     # the rows that go on; the others ended with the fused run
    tail, th, tc = _LSTMDirection.apply(x[head * rows :], w_ih, w_hh, b_ih + b_hh, sizes[head:], h[:alive], c[:alive])
    return torch.cat([out, tail]), torch.cat([th, h[alive:]]), torch.cat([tc, c[alive:]])


def _reversal(sizes: list[int]) -> torch.Tensor:
    """Return the permutation of packed rows (an involution; sum(sizes) ids, CPU) that reverses every
    sequence within its length: row (step t, sequence j) <-> row (step L_j - 1 - t, sequence j)."""
    where, length = packed_rows(torch.tensor(sizes))
    t = torch.arange(len(sizes))
    back = length.unsqueeze(1) - 1 - t                                  # batch x steps
    alive = back >= 0
    flip = torch.empty(sum(sizes), dtype=torch.long)
    flip[where[alive]] = where.gather(1, back.clamp(min=0))[alive]
    return flip


class _LSTMDirection(torch.autograd.Function):
    """One forward LSTM direction over packed rows, with a hand-written backward.

    Forward runs the time steps without recording a graph, writing gates, cell states and outputs into
    packed buffers. Backward precomputes, for all rows at once, every factor that does not depend on
    the incoming gradients, so that a time step costs five operations (output gate, cell gradient, the
    i/f/g gates, and the carries to the previous step through W_hh and f); the weight gradients are then
    one matrix product each over all steps, not one per step as autograd builds them. Same function as
    nn.LSTM (tests compare outputs, final states and all gradients).
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b, sizes, h0, c0):
        """Return (outputs N x hidden, final h batch x hidden, final c batch x hidden) for packed rows x
        (N x in, N = sum(sizes)), weights w_ih 4H x in, w_hh 4H x H, bias b = b_ih + b_hh (4H), from the
        state h0, c0 (each sizes[0] x H) or from zeros where they are None."""
        hid, n, steps = w_hh.size(1), x.size(0), len(sizes)
        where, length = packed_rows(torch.tensor(sizes))
        offs = where[0].tolist()                      # first packed row of each step (sequence 0 is alive)
        acts = torch.addmm(b, x, w_ih.t())            # N x 4H: pre-activations, then the gates in place
        out, cs, tcs = x.new_empty(n, hid), x.new_empty(n, hid), x.new_empty(n, hid)
        hp, cp = x.new_zeros(n, hid), x.new_zeros(n, hid)   # each row's previous h and c (0 at a start)
        w_hh_t = w_hh.t()
        if h0 is not None:
            hp[: sizes[0]], cp[: sizes[0]] = h0, c0
            acts[: sizes[0]].addmm_(h0, w_hh_t)
        for t in range(steps):
            lo, rows = offs[t], sizes[t]
            hi = lo + rows
            g = acts[lo:hi]
            if t:                                     # rows that carry a state from the previous step
                plo = offs[t - 1]
                hp[lo:hi] = out[plo : plo + rows]
                cp[lo:hi] = cs[plo : plo + rows]
                g.addmm_(out[plo : plo + rows], w_hh_t)
            g[:, : 2 * hid].sigmoid_()                # i, f
            g[:, 2 * hid : 3 * hid].tanh_()           # g
            g[:, 3 * hid :].sigmoid_()                # o
            i, f, gg, o = g.chunk(4, 1)
            torch.mul(i, gg, out=cs[lo:hi]).addcmul_(f, cp[lo:hi])
            torch.mul(o, torch.tanh(cs[lo:hi], out=tcs[lo:hi]), out=out[lo:hi])
        last = where.gather(1, (length - 1).unsqueeze(1)).squeeze(1).to(x.device)   # each sequence's last row
        ctx.save_for_backward(x, w_ih, w_hh, acts, tcs, hp, cp, last)
        ctx.sizes, ctx.offs, ctx.h0 = sizes, offs, h0 is not None
        return out, out.index_select(0, last), cs.index_select(0, last)

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):
        x, w_ih, w_hh, acts, tcs, hp, cp, last = ctx.saved_tensors
        sizes, offs = ctx.sizes, ctx.offs
        hid, steps, n = w_hh.size(1), len(sizes), x.size(0)
        i, f, gg, o = acts.chunk(4, 1)
        a_o = tcs * o * (1 - o)                                   # d h / d o_pre
        a_c = o * (1 - tcs * tcs)                                 # d h / d c
        a_ifg = torch.cat([gg * i * (1 - i), cp * f * (1 - f), i * (1 - gg * gg)], 1).view(n, 3, hid)
        dh_all = d_out.clone().index_add_(0, last, d_h)
        dc_all = torch.zeros_like(dh_all).index_add_(0, last, d_c)
        dg_all = torch.empty_like(acts)                           # gradients of the pre-activations
        dg_ifg = dg_all[:, : 3 * hid].view(n, 3, hid)
        for t in range(steps - 1, -1, -1):
            lo, rows = offs[t], sizes[t]
            hi = lo + rows
            dh, dc = dh_all[lo:hi], dc_all[lo:hi]
            torch.mul(dh, a_o[lo:hi], out=dg_all[lo:hi, 3 * hid :])
            dc.addcmul_(dh, a_c[lo:hi])
            torch.mul(dc.unsqueeze(1), a_ifg[lo:hi], out=dg_ifg[lo:hi])
            if t:                                                 # carry to the step before
                plo = offs[t - 1]
                dh_all[plo : plo + rows].addmm_(dg_all[lo:hi], w_hh)
                dc_all[plo : plo + rows].addcmul_(dc, f[lo:hi])
        d_h0 = d_c0 = None
        if ctx.h0:                                                # the carry into the given state
            first = sizes[0]
            d_h0, d_c0 = dg_all[:first].mm(w_hh), dc_all[:first] * f[:first]
        return dg_all.mm(w_ih), dg_all.t().mm(x), dg_all.t().mm(hp), dg_all.sum(0), None, d_h0, d_c0


def packed_rows(sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (where, lengths) for a PackedSequence's batch_sizes (steps, CPU, longest first): where is
    batch x steps, the packed row of sorted sequence j at step t, or N = sum(sizes) past its end;
    lengths (batch) are the sequences' lengths."""
    offsets = torch.cumsum(sizes, 0) - sizes                  # first packed row of each time step
    seq = torch.arange(int(sizes[0])).unsqueeze(1)            # sorted sequence j
    alive = seq < sizes
    return torch.where(alive, offsets + seq, int(sizes.sum())), alive.sum(1)


def pad_packed(packed: PackedSequence, total_length: int) -> torch.Tensor:
    """Return pad_packed_sequence(packed, batch_first=True, total_length=total_length)[0]: batch x
    total_length x features, zeros after each sequence's end, rows in the batch's own order. One gather
    from the packed rows and a zero row (its backward: one scatter-add), not a copy per time step."""
    data = packed.data                                        # rows x features
    where, _ = packed_rows(packed.batch_sizes)                # past a sequence's end: the zero row below
    batch = where.size(0)
    if where.size(1) < total_length:
        where = torch.cat([where, where.new_full((batch, total_length - where.size(1)), data.size(0))], 1)
    where = where.to(data.device)
    if packed.unsorted_indices is not None:
        where = where.index_select(0, packed.unsorted_indices)
    rows = torch.cat([data, data.new_zeros(1, *data.shape[1:])])
    return rows.index_select(0, where.flatten()).view(batch, total_length, *data.shape[1:])


def lstm_from_tables(ids: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor, hh: list):
    """Return (outputs batch x S x (D*hidden), final h and c, each batch x (D*hidden)) of a one-layer LSTM
    with D = len(hh) directions (forward, then reverse) over ids (batch x S, lengths batch on the CPU),
    in inference, from a zero state; zeros past each sequence's end.

    table: (D*vocab) x 4*hidden, each direction's input projection of every id with both biases, gates in
    the order i, f, o, g (`gate_order`); hh: each direction's W_hh in that order, as a PackedLinear or a
    plain 4*hidden x hidden weight. The directions run side by side: the reverse one reads each sequence
    reversed within its length, so at every step both hold the same rows (the sequences longer than the
    step, longest first) and one set of element-wise operations serves both, one call per gate kind.
    Same function as nn.LSTM on the packed batch (a test compares).
    """
    batch, span = ids.shape
    dirs, vocab, hid = len(hh), table.size(0) // len(hh), table.size(1) // 4
    lens, order = lengths.sort(descending=True, stable=True)        # sorted position -> original row
    rows_at = (lens.unsqueeze(0) > torch.arange(span).unsqueeze(1)).sum(1).tolist()   # rows alive at step t
    device = ids.device
    pos = torch.arange(span, device=device).unsqueeze(0)              # 1 x S
    length = lengths.to(device).unsqueeze(1)                          # batch x 1, original order
    sorted_ids = ids.index_select(0, order.to(device))
    rev = (length.index_select(0, order.to(device)) - 1 - pos).clamp(min=0)   # reversed position, sorted rows
    step_ids = [sorted_ids, sorted_ids.gather(1, rev) + vocab][:dirs]  # each batch x S: the id read at step t
    gx = table.index_select(0, torch.stack(step_ids).permute(2, 0, 1).flatten()).view(span, dirs, batch, 4 * hid)
    out = table.new_zeros(span + 1, dirs, batch, hid)                 # h at each step; step `span` stays zero
    cell = torch.empty_like(out)
    for t in range(int(lens[0])):
        n = rows_at[t]
        g = torch.stack([_hh(hh[d], out[t - 1, d, :n], gx[t, d, :n]) if t else gx[t, d, :n] for d in range(dirs)])
        g[..., : 3 * hid].sigmoid_()                                  # i, f, o
        g[..., 3 * hid :].tanh_()                                     # g
        i, f, o, gg = g.chunk(4, -1)
        c = cell[t, :, :n]
        if t:
            torch.mul(f, cell[t - 1, :, :n], out=c).addcmul_(i, gg)
        else:
            torch.mul(i, gg, out=c)
        torch.mul(o, torch.tanh(c), out=out[t, :, :n])
    # each original row's outputs (forward: step p; reverse: step L-1-p, past the end the zero step `span`)
    where = torch.empty_like(order)
    where[order] = torch.arange(batch)
    where = where.to(device).unsqueeze(1)                             # original row -> sorted position
    steps = [pos, torch.where(pos < length, length - 1 - pos, span)][:dirs]
    flat = lambda step, d: (step * dirs + d) * batch + where          # noqa: E731 (row of out viewed 2-D)
    memory = out.view(-1, hid).index_select(0, torch.stack([flat(st, d) for d, st in enumerate(steps)], -1).flatten())
    last = torch.stack([flat(length - 1, d) for d in range(dirs)], -1).flatten()
    finals = [x.view(-1, hid).index_select(0, last).view(batch, dirs * hid) for x in (out, cell)]
    return memory.view(batch, span, dirs * hid), finals[0], finals[1]


def gate_order(w: torch.Tensor) -> torch.Tensor:
    """Return an LSTM weight or bias (4*hidden rows, torch's gate order i, f, g, o) in the order i, f, o, g
    that `lstm_from_tables` reads (one sigmoid over the first three, one tanh over the last)."""
    i, f, g, o = w.chunk(4, 0)
    return torch.cat([i, f, o, g])


def _hh(hh, h: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
    """Return gx + h W_hh^T (rows x 4*hidden) through a PackedLinear or a plain weight."""
    return hh(h, add=gx) if callable(hh) else torch.addmm(gx, h, hh.t())
