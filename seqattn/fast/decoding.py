"""Decoding with what inference derives once from fixed weights: the same results as the model's own
`encode` and `step`, faster.

- Decoder input table: the first RNN layer's input projection of every target id (embedding @ W_ih^T
  + biases); a step gathers one row per sentence instead of multiplying by W_ih (a third of the LSTM's
  product at the Multi30k size). The RNN then runs as torch's cell functions (nn.LSTM on one step spends
  more time preparing its weights than computing, about 2x slower), as it does where no table applies.
- Packed products (CPU, float32): W_hh, the output layer W_y and both halves of W_c reordered once for
  oneDNN (`onednn.PackedLinear`).
- The split of W_c: s~_t = tanh(W_cs s_t + b_c + W_ca a_t), and W_ca a_t = sum_i alpha_t,i (W_ca h_i), so
  W_ca multiplies the memory once per batch (`encode`) instead of a_t at every step and beam.
- Encoder tables (one-layer LSTM encoder, CPU, float32): each source id's input projection computed the
  first time it is met, both directions in one loop (`rnn.lstm_from_tables`).

The encoder path (the tables) and the step path (the rest) each apply whole or not at all: only to the
module types and the model code they were written for (`check.written_for`); elsewhere the model's own
code runs with the model's own state. What the step path derives from the source (W_ca h_i) travels in
its own type, `Prepared`, which only `Decoding.step` reads: an edited attention, for instance, turns the
step path off and the model's step gets the model's Encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tokenizer import PAD
from ..model.attention import Attention
from ..model.decoder import Decoder
from ..model.encoder import Encoder
from ..model.seq2seq import Encoded, Seq2Seq
from ..search import select
from .check import written_for
from .onednn import PackedLinear, pack
from .rnn import TABLE_MAX, FastGRU, FastLSTM, gate_order, in_rnn_precision, lstm_from_tables
from .search import join, pad_source, put
from .training import FastEncoder

LSTMS, GRUS = (nn.LSTM, FastLSTM), (nn.GRU, FastGRU)


class EncoderTables:
    """W_hh of each direction of a one-layer LSTM encoder, packed, and a table of every id's input
    projection, (directions*vocab) x 4*hidden, gates i f o g, whose rows are computed as ids first occur
    (`cover`): test2016 meets a quarter of the vocabulary (2,116 of 8,001)."""

    def __init__(self, embed: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, hh: list[PackedLinear]):
        self.embed, self.w_ih, self.bias, self.hh = embed, w_ih, bias, hh   # w_ih, bias: directions stacked
        self.gates = w_ih.size(0) // len(hh)
        self.table = embed.new_empty(len(hh) * embed.size(0), self.gates)
        self.filled = torch.zeros(embed.size(0), dtype=torch.bool, device=embed.device)

    @classmethod
    @torch.no_grad()
    def of(cls, encoder: nn.Module) -> EncoderTables | None:
        """Return the tables of encoder, or None where they do not apply: not seqattn's Encoder as written,
        not a one-layer LSTM with biases, not float32 on the CPU, a table over TABLE_MAX elements."""
        rnn = encoder.rnn
        if (type(encoder) not in (Encoder, FastEncoder) or not written_for("encoder") or type(rnn) not in LSTMS
                or rnn.num_layers != 1 or not rnn.bias or rnn.proj_size
                or encoder.embed.num_embeddings * 4 * rnn.hidden_size * encoder.directions > TABLE_MAX):
            return None
        suffixes = ("", "_reverse")[: encoder.directions]
        hh = [pack(gate_order(getattr(rnn, f"weight_hh_l0{x}"))) for x in suffixes]
        if any(h is None for h in hh):
            return None
        snapshot = lambda name: torch.cat([gate_order(getattr(rnn, f"{name}_l0{x}")) for x in suffixes])
        return cls(encoder.embed.weight.detach().clone(), snapshot("weight_ih"),
                   snapshot("bias_ih") + snapshot("bias_hh"), hh)

    def cover(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the table with the rows of ids (any shape) computed."""
        need = ids.unique()
        need = need[~self.filled[need]]
        if len(need):
            proj = torch.addmm(self.bias, self.embed.index_select(0, need), self.w_ih.t())
            vocab = self.embed.size(0)
            for d in range(len(self.hh)):
                self.table[d * vocab + need] = proj[:, d * self.gates : (d + 1) * self.gates]
            self.filled[need] = True
        return self.table

    def __call__(self, src: torch.Tensor, src_len: torch.Tensor):
        """Return what Encoder.forward returns (eval mode): (memory batch x src_len x out_size, (h, c))."""
        memory, h, c = lstm_from_tables(src, src_len, self.cover(src), self.hh)
        return memory, (h.unsqueeze(0), c.unsqueeze(0))


class Product:
    """x W^T + b, or x W^T + b + add: `onednn.PackedLinear`'s interface as plain operations (what an export
    traces); weight: out x in, bias: out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight.detach().contiguous(), None if bias is None else bias.detach()

    def __call__(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """Return x W^T + b (... x out) for x (... x in), plus add (... x out) when given."""
        y = F.linear(x, self.weight, self.bias)
        return y if add is None else y + add


@dataclass
class Prepared:
    """What `Decoding.encode` hands its own `step` when the W_c split applies: the model's Encoded and
    the memory multiplied by W_ca. Only `Decoding.step` reads `context`; whatever runs the model's code
    gets `enc`, the model's own."""

    enc: Encoded
    context: torch.Tensor          # W_ca h_i: batch x src_len x dec_hidden

    def decoder_state(self):
        """Return the decoder's initial state (the model's)."""
        return self.enc.state

    def select(self, index: torch.Tensor) -> Prepared:
        """Return the rows `index` (batch ids)."""
        return Prepared(select(self.enc, index), self.context.index_select(0, index))

    @staticmethod
    def join(parts: list[Prepared], span: int = 0) -> Prepared:
        """Return the rows of all parts in order, padded as `fast.search.join` pads."""
        enc = join([p.enc for p in parts], span)
        return Prepared(enc, torch.cat([pad_source(p.context, enc.mask.size(1)) for p in parts]))

    def put(self, index: torch.Tensor, part: Prepared) -> Prepared:
        """Return self with rows `index` overwritten by part's, as `fast.search.put` does."""
        enc = put(self.enc, index, part.enc)
        span = enc.mask.size(1)
        context = pad_source(self.context, span)
        context.index_copy_(0, index, pad_source(part.context, span))
        return Prepared(enc, context)


def _step_is_stock(model: Seq2Seq) -> bool:
    """Return whether the decoding step is the one `Decoding.step` re-expresses: seqattn's modules of
    exactly their types, and the model code of `check.REEXPRESSES["decoder_step"]` as written."""
    dec = model.decoder
    rnn = dec.rnn
    return (type(model) is Seq2Seq and type(dec) is Decoder and type(dec.embed) is nn.Embedding
            and type(rnn) in LSTMS + GRUS and not getattr(rnn, "proj_size", 0)
            and (dec.attention is None or type(dec.attention) is Attention)
            and (dec.combine is None or type(dec.combine) is nn.Linear) and type(dec.out) is nn.Linear
            and written_for("decoder_step"))


class Decoding:
    """The model's `encode` and `step` (the interface the searches call), from weights derived once.

    Two paths, each whole or not at all: the encoder (`EncoderTables`, giving the model's Encoded) and
    the step (input table, cells, packed products, the W_c split). A model they were not written for
    (another module type, edited model code: `check.py`) runs the model's own code there, with the
    model's own state. A snapshot: it does not follow later changes of the weights, so whoever knows they
    are fixed keeps it (`Translator`). It takes its own paths only in inference (eval mode, no
    gradients); `paths` names the parts that apply to this model. packed=False: plain products instead
    of oneDNN's, no encoder tables, every cell as its products (what `seqattn export` traces).
    """

    @torch.no_grad()
    def __init__(self, model: Seq2Seq, packed: bool = True):
        self.model, self.packed = model, packed
        dec, rnn = model.decoder, model.decoder.rnn
        self.encoder = EncoderTables.of(model.encoder) \
            if packed and type(model) is Seq2Seq and written_for("encode") else None
        self.fast_step = _step_is_stock(model)
        lstm = type(rnn) in LSTMS
        self.table = self.hh = self.context = self.combine = self.out = None
        product = pack if packed else (lambda weight, bias=None: None)   # None: the module's own product
        if self.fast_step:
            if not dec.input_feeding and rnn.bias and dec.embed.num_embeddings * rnn.weight_ih_l0.size(0) <= TABLE_MAX:
                self.hh = product(gate_order(rnn.weight_hh_l0) if lstm else rnn.weight_hh_l0,
                                  None if lstm else rnn.bias_hh_l0)
                self.table = self._input_table(ifog=self.hh is not None)
            if dec.attention is not None:
                w_ca, w_cs = dec.combine.weight.split([dec.combine.in_features - dec.hidden_size, dec.hidden_size], 1)
                if packed:
                    self.context, self.combine = pack(w_ca), pack(w_cs, dec.combine.bias)
                    if self.context is None or self.combine is None:
                        self.context = self.combine = None
                else:
                    self.context, self.combine = Product(w_ca), Product(w_cs, dec.combine.bias)
            self.out = product(dec.out.weight, dec.out.bias)
        names = {"encoder_tables": self.encoder, "decoder_cells": self.fast_step or None,
                 "decoder_table": self.table, "packed_hh": self.hh, "split_combine": self.combine,
                 "packed_out": self.out}
        self.paths = [name for name, part in names.items() if part is not None]
        self._shortlist = None   # (vocab tensor, its output layer) of the batch decoding

    def derived(self) -> list[torch.Tensor]:
        """Return the tensors this object derived from the model's weights and reads as they are (the input
        table, the W_c split's halves): not the packed ones, which oneDNN holds reordered."""
        products = [p for p in (self.context, self.combine) if isinstance(p, Product)]
        return ([self.table] if self.table is not None else []) + \
            [t for p in products for t in (p.weight, p.bias) if t is not None]

    def initial_feed(self, rows: int, device: torch.device) -> torch.Tensor | None:
        """Return `Seq2Seq.initial_feed(rows, device)`."""
        return self.model.initial_feed(rows, device)

    def _applies(self) -> bool:
        return not self.model.training and not torch.is_grad_enabled()

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Encoded | Prepared:
        """Return `Seq2Seq.encode(src, src_len)`, inside a `Prepared` with W_ca h_i when the W_c split
        applies (only this object's `step` reads it so)."""
        model = self.model
        if not self._applies():
            return model.encode(src, src_len)
        if self.encoder is None:
            enc = model.encode(src, src_len)
        else:
            memory, final = self.encoder(src, src_len)
            enc = Encoded(memory, model.decoder.keys(memory), src != PAD, model.initial_state(final))
        return self.prepare(enc)

    def prepare(self, enc: Encoded) -> Encoded | Prepared:
        """Return the model's Encoded enc as this object's `step` reads it: inside a `Prepared` with W_ca h_i
        when the W_c split applies, else enc."""
        return enc if self.context is None else Prepared(enc, self.context(enc.memory))

    def step(self, y_prev: torch.Tensor, state, enc: Encoded | Prepared, feed: torch.Tensor | None = None,
             group: int = 1, vocab: torch.Tensor | None = None):
        """Return `Seq2Seq.step(y_prev, state, enc, feed, group, vocab)` for enc from this object's `encode`
        (a shortlist's output rows packed once per vocab tensor)."""
        if not self._applies() or not self.fast_step:
            return self.model.step(y_prev, state, enc.enc if isinstance(enc, Prepared) else enc, feed, group, vocab)
        dec = self.model.decoder
        if self.table is not None:      # the first layer's input projection of y_prev, looked up
            s, state = in_rnn_precision(self._cells, y_prev, state)
        else:
            x = dec.embed(y_prev)
            if dec.input_feeding:
                x = torch.cat([x, feed], dim=-1)
            s, state = in_rnn_precision(self._cells, x, state)
        s = s.view(-1, group, s.size(-1))
        if isinstance(enc, Prepared):   # the split of W_c: the attention over W_ca h_i yields W_ca a_t
            model_enc = enc.enc
            a, alpha = dec.attention(s, model_enc.keys, enc.context, model_enc.mask)
            s_tilde = torch.tanh(self.combine(s, add=a))
        else:
            s_tilde, alpha = dec.attend(s, enc.memory, enc.keys, enc.mask)
        s_tilde = s_tilde.reshape(-1, s_tilde.size(-1))
        if vocab is not None:
            logits = self._out_rows(vocab)(s_tilde)
        else:
            logits = self.out(s_tilde) if self.out is not None else dec.out(s_tilde)
        return logits, state, s_tilde, None if alpha is None else alpha.reshape(-1, alpha.size(-1))

    def _out_rows(self, vocab: torch.Tensor):
        """Return `Decoder.out_rows` over the target ids vocab (s~ rows x hidden -> rows x V'): its rows taken
        once while the same vocab tensor comes (a batch's shortlist), packed where packing applies."""
        if self._shortlist is None or self._shortlist[0] is not vocab:
            out = self.model.decoder.out
            weight, bias = out.weight.index_select(0, vocab), out.bias.index_select(0, vocab)
            packed = pack(weight, bias) if self.out is not None else None
            self._shortlist = (vocab, packed or (lambda s: F.linear(s, weight, bias)))
        return self._shortlist[1]

    def _cells(self, x: torch.Tensor, state):
        """Return (top-layer output rows x hidden, new state) of the decoder RNN's cells on x (rows x in),
        or with the input table on x = the previous output ids (rows)."""
        rnn = self.model.decoder.rnn
        lstm = type(rnn) in LSTMS
        hs, cs = [], []
        for layer in range(rnn.num_layers):
            w = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] \
                if rnn.bias else [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh")]
            if layer == 0 and self.table is not None:
                h, c = _cell_from_projection(self.table.index_select(0, x), state[0][0] if lstm else state[0],
                                             state[1][0] if lstm else None, w[1], w[3], lstm, self.hh)
                if lstm:
                    cs.append(c)
            elif not self.packed:   # plain products, what an export traces (it has no cell operators)
                b_ih, b_hh = (w[2], w[3]) if rnn.bias else (None, None)
                gx = F.linear(x, w[0], b_ih + b_hh if lstm and rnn.bias else b_ih)
                h, c = _cell_from_projection(gx, state[0][layer] if lstm else state[layer],
                                             state[1][layer] if lstm else None, w[1], b_hh, lstm)
                if lstm:
                    cs.append(c)
            elif lstm:
                h, c = torch.lstm_cell(x, (state[0][layer], state[1][layer]), *w)
                cs.append(c)
            else:
                h = torch.gru_cell(x, state[layer], *w)
            hs.append(h)
            x = h
        stack = lambda xs: xs[0].unsqueeze(0) if len(xs) == 1 else torch.stack(xs)   # noqa: E731 (one layer: no copy)
        return x, ((stack(hs), stack(cs)) if lstm else stack(hs))

    def _input_table(self, ifog: bool) -> torch.Tensor:
        """Return the decoder RNN's first-layer input projection of every target id, vocab x gates*hidden
        (embedding @ W_ih^T + b_ih, and + b_hh for an LSTM), in float32; ifog: an LSTM's gates in the order
        i, f, o, g (`rnn.gate_order`) instead of torch's i, f, g, o."""
        dec = self.model.decoder
        rnn = dec.rnn
        params = (dec.embed.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        with torch.autocast(params[0].device.type, enabled=False):   # float32, as the RNN runs
            emb, w_ih, b_ih, b_hh = (p.float() for p in params)
            if type(rnn) not in LSTMS:
                return torch.addmm(b_ih, emb, w_ih.t())
            order = gate_order if ifog else (lambda w: w)
            return torch.addmm(order(b_ih + b_hh), emb, order(w_ih).t())


def _cell_from_projection(gx: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w_hh: torch.Tensor,
                          b_hh: torch.Tensor, lstm: bool, hh: PackedLinear | None = None):
    """Return the LSTM's (h, c) or the GRU's h after one step, given the input projection gx (batch x
    gates*hidden, with the biases the input table folds in) and the previous h, c (batch x hidden); hh:
    W_hh packed (an LSTM's gates then in the order i, f, o, g, in place: three fewer element-wise
    operations), else w_hh and b_hh multiply as they are."""
    if lstm and hh is not None:
        gates = hh(h, add=gx)
        size = gates.size(1) // 4
        gates[:, : 3 * size].sigmoid_()
        gates[:, 3 * size :].tanh_()
        i, f, o, g = gates.chunk(4, 1)
        c = torch.addcmul(f * c, i, g)
        return o * torch.tanh(c), c
    if lstm:
        i, f, g, o = torch.addmm(gx, h, w_hh.t()).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    x_r, x_z, x_n = gx.chunk(3, 1)
    h_r, h_z, h_n = (hh(h) if hh is not None else F.linear(h, w_hh, b_hh)).chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return n + z * (h - n), None
