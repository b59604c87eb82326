"""The encoder-decoder: encode, bridge the context vector into the decoder, decode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..data.tokenizer import PAD
from .decoder import Decoder
from .encoder import Encoder


@dataclass
class Encoded:
    """What decoding needs from the source, computed once per batch."""

    memory: torch.Tensor          # attention's values h_1..h_N: batch x src_len x *
    keys: torch.Tensor | None     # attention's keys: batch x src_len x * (the memory itself for dot; None: none)
    mask: torch.Tensor            # batch x src_len, True at real tokens
    state: object                 # the decoder's initial state: h (and c), each layers x batch x dec_hidden


class Seq2Seq(nn.Module):
    """The RNN encoder-decoder with Luong attention: RNN encoder, context vector, RNN decoder attending over the
    encoder states."""

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(src_vocab, cfg.emb_size, cfg.enc_hidden_size, cfg.layers, cfg.bidirectional,
                               cfg.rnn, cfg.dropout)
        self.decoder = Decoder(tgt_vocab, cfg.emb_size, cfg.dec_hidden_size, cfg.layers, cfg.rnn, cfg.attention,
                               self.encoder.out_size, cfg.dropout, cfg.input_feeding, cfg.tie_embeddings)
        n_states = 2 if cfg.rnn == "lstm" else 1
        # The context vector starts the decoder as it is when sizes agree (the default), else via linear + tanh.
        self.bridge = None if self.encoder.out_size == cfg.dec_hidden_size else nn.ModuleList(
            nn.Linear(self.encoder.out_size, cfg.dec_hidden_size) for _ in range(n_states))
        if cfg.init_range > 0:   # every parameter uniform in [-r, r], as Luong et al. (2015) with r = 0.1
            for p in self.parameters():
                nn.init.uniform_(p, -cfg.init_range, cfg.init_range)
            with torch.no_grad():   # padding rows stay zero, as nn.Embedding leaves them
                for emb in (self.encoder.embed, self.decoder.embed):
                    emb.weight[PAD].zero_()

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Encoded:
        """Return the Encoded source of src (batch x src_len ids, lengths src_len on the CPU)."""
        memory, final = self.encoder(src, src_len)
        return Encoded(memory, self.decoder.keys(memory), src != PAD, self.initial_state(final))

    def initial_state(self, final):
        """Return the decoder's initial state (h, c) or h, each layers x batch x dec_hidden, from the
        encoder's final state: the context vector, through the bridge when the sizes differ."""
        states = final if isinstance(final, tuple) else (final,)
        if self.bridge is not None:
            states = tuple(torch.tanh(lin(s)) for lin, s in zip(self.bridge, states))
        return states if len(states) == 2 else states[0]

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor):
        """Return (logits batch x tgt_len x tgt_vocab, attention batch x tgt_len x src_len or None) under
        teacher forcing (tgt_in: batch x tgt_len, <sos> first)."""
        enc = self.encode(src, src_len)
        return self.decoder(tgt_in, enc.memory, enc.mask, enc.state, enc.keys)

    def initial_feed(self, rows: int, device: torch.device) -> torch.Tensor | None:
        """Return s~_0 for input feeding, zeros rows x dec_hidden (None without input feeding)."""
        return torch.zeros(rows, self.decoder.hidden_size, device=device) if self.decoder.input_feeding else None

    def step(self, y_prev: torch.Tensor, state, enc: Encoded, feed: torch.Tensor | None = None, group: int = 1,
             vocab: torch.Tensor | None = None):
        """One decoding step (`Decoder.step`) against the encoded source enc, one row of it per `group`
        rows of y_prev: return (logits rows x vocab, new state, s~_t rows x hidden, weights or None);
        vocab: a shortlist's target ids, the only logits computed."""
        return self.decoder.step(y_prev, state, enc.memory, enc.keys, enc.mask, feed, group, vocab)
