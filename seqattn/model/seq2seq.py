"""The encoder-decoder: encode, bridge the context vector into the decoder, decode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..data.tokenizer import PAD
from .decoder import Decoder, DecoderPrepared
from .encoder import Encoder, EncoderPrepared


@dataclass
class Encoded:
    """What decoding needs from the source, computed once per batch."""

    memory: torch.Tensor          # the attention values, batch x src_len x *: h_i (enc_out wide), or
                                  # W_ca h_i when encoded with prepared weights (Decoder.project_memory)
    keys: torch.Tensor | None     # batch x src_len x * (projected for general/concat)
    mask: torch.Tensor            # batch x src_len, True at real tokens
    state: object                 # decoder initial state: h (and c) layers x batch x dec_hidden

    def select(self, index: torch.Tensor) -> Encoded:
        """Return the rows `index` (batch' ids) of every tensor, e.g. the sentences still being decoded."""
        pick = lambda s: s.index_select(1, index)
        state = tuple(pick(s) for s in self.state) if isinstance(self.state, tuple) else pick(self.state)
        memory = self.memory.index_select(0, index)
        keys = memory if self.keys is self.memory else None if self.keys is None else self.keys.index_select(0, index)
        return Encoded(memory, keys, self.mask.index_select(0, index), state)

    def put(self, index: torch.Tensor, part: Encoded) -> Encoded:
        """Return this Encoded with rows `index` (part's batch ids) overwritten by part's rows, in place
        unless part's src_len is longer (then in a copy padded to it). Keys that are the memory stay so."""
        target = self if part.mask.size(1) <= self.mask.size(1) else Encoded.join([self], span=part.mask.size(1))
        if part.mask.size(1) < target.mask.size(1):
            part = Encoded.join([part], span=target.mask.size(1))
        target.memory.index_copy_(0, index, part.memory)
        if target.keys is not None and target.keys is not target.memory:
            target.keys.index_copy_(0, index, part.keys)
        target.mask.index_copy_(0, index, part.mask)
        for mine, theirs in zip(*((e.state if isinstance(e.state, tuple) else (e.state,)) for e in (target, part))):
            mine.index_copy_(1, index, theirs)
        return target

    @staticmethod
    def join(parts: list[Encoded], span: int = 0) -> Encoded:
        """Return the rows of all parts, in order, padded to the longest src_len or span (mask False there)."""
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


@dataclass
class Prepared:
    """What inference derives once from fixed weights (`Seq2Seq.prepare`): the same results, faster."""

    encoder: EncoderPrepared | None
    decoder: DecoderPrepared


class Seq2Seq(nn.Module):
    """The seed's model: RNN encoder, context vector, RNN decoder with Luong attention."""

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(src_vocab, cfg.emb_size, cfg.enc_hidden_size, cfg.layers, cfg.bidirectional,
                               cfg.rnn, cfg.dropout)
        self.decoder = Decoder(tgt_vocab, cfg.emb_size, cfg.dec_hidden_size, cfg.layers, cfg.rnn, cfg.attention,
                               self.encoder.out_size, cfg.dropout, cfg.input_feeding, cfg.tie_embeddings)
        n_states = 2 if cfg.rnn == "lstm" else 1
        # The context vector starts the decoder as it is when sizes agree (the seed), else via linear + tanh.
        self.bridge = None if self.encoder.out_size == cfg.dec_hidden_size else nn.ModuleList(
            nn.Linear(self.encoder.out_size, cfg.dec_hidden_size) for _ in range(n_states))
        if cfg.init_range > 0:   # every parameter uniform in [-r, r], as Luong et al. (2015) with r = 0.1
            for p in self.parameters():
                nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
            with torch.no_grad():   # padding rows stay zero, as nn.Embedding leaves them
                for emb in (self.encoder.embed, self.decoder.embed):
                    emb.weight[PAD].zero_()

    def prepare(self) -> Prepared:
        """Return what decoding derives once from the weights (`Encoder.prepare`, `Decoder.prepare`); the
        modules keep no copy: the caller keeps it while the weights do not change."""
        return Prepared(self.encoder.prepare(), self.decoder.prepare())

    def encode(self, src: torch.Tensor, src_len: torch.Tensor, prepared: Prepared | None = None) -> Encoded:
        """Return the Encoded source of src batch x src_len (lengths src_len, on CPU); prepared: `prepare()`."""
        memory, final = self.encoder(src, src_len, None if prepared is None else prepared.encoder)
        states = final if isinstance(final, tuple) else (final,)
        if self.bridge is not None:
            states = tuple(torch.tanh(lin(s)) for lin, s in zip(self.bridge, states))
        state = states if len(states) == 2 else states[0]
        state = tuple(s.contiguous() for s in state) if isinstance(state, tuple) else state.contiguous()
        values = self.decoder.project_memory(memory, None if prepared is None else prepared.decoder)
        return Encoded(values, self.decoder.keys(memory), src != PAD, state)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor):
        """Return (logits batch x tgt_len x tgt_vocab, attention batch x tgt_len x src_len or None)."""
        enc = self.encode(src, src_len)
        return self.decoder(tgt_in, enc.memory, enc.mask, enc.state, enc.keys)
