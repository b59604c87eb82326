"""Token-based batches of similar lengths, and padding them into tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import EOS, PAD, SOS


@dataclass
class Batch:
    """Padded tensors of one batch (padding id 0)."""

    src: torch.Tensor       # batch x src_len, each row ends with <eos>
    src_len: torch.Tensor   # batch (int64, on CPU)
    tgt_in: torch.Tensor    # batch x tgt_len: <sos> y_1 .. y_M
    tgt_out: torch.Tensor   # batch x tgt_len: y_1 .. y_M <eos>
    n_tokens: int           # target tokens, <eos> included, padding excluded

    def rows(self, start: int, step: int) -> Batch:
        """Return rows start, start+step, ... (one rank's share), cut to their own longest lengths."""
        return _rows(self, start, step)

    def to(self, device: torch.device) -> Batch:
        """Return the batch on device (src_len stays on the CPU for packing)."""
        return Batch(self.src.to(device, non_blocking=True), self.src_len, self.tgt_in.to(device, non_blocking=True),
                     self.tgt_out.to(device, non_blocking=True), self.n_tokens)


def _rows(batch: Batch, start: int, step: int) -> Batch:
    idx = torch.arange(start, batch.src.size(0), step)
    real = batch.tgt_out[idx] != PAD
    src_max = int(batch.src_len[idx].max()) if len(idx) else 0
    tgt_max = int(real.sum(1).max()) if len(idx) else 0
    return Batch(batch.src[idx, :src_max], batch.src_len[idx], batch.tgt_in[idx, :tgt_max],
                 batch.tgt_out[idx, :tgt_max], int(real.sum()))


def pad_sources(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (src batch x max_len+1 with <eos> appended, lengths batch)."""
    lens = torch.tensor([len(s) + 1 for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lens.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s) + 1] = torch.tensor(s + [EOS], dtype=torch.long)
    return out, lens


def collate(src: list[list[int]], tgt: list[list[int]]) -> Batch:
    """Return the padded Batch of parallel id sequences."""
    s, s_len = pad_sources(src)
    m = max(len(t) for t in tgt) + 1
    tgt_in = torch.full((len(tgt), m), PAD, dtype=torch.long)
    tgt_out = torch.full((len(tgt), m), PAD, dtype=torch.long)
    for i, t in enumerate(tgt):
        tgt_in[i, : len(t) + 1] = torch.tensor([SOS] + t, dtype=torch.long)
        tgt_out[i, : len(t) + 1] = torch.tensor(t + [EOS], dtype=torch.long)
    return Batch(s, s_len, tgt_in, tgt_out, sum(len(t) + 1 for t in tgt))


def token_batches(src_lens: list[int], tgt_lens: list[int], batch_tokens: int) -> list[list[int]]:
    """Return index lists of similar-length pairs, each padded batch within batch_tokens target tokens.

    Pairs are sorted by (target, source) length, so padding stays small; the cost of a batch is
    rows x (longest target + 1), the padded size the decoder actually computes.
    """
    order = sorted(range(len(src_lens)), key=lambda i: (tgt_lens[i], src_lens[i], i))
    batches, cur, longest = [], [], 0
    for i in order:
        new_longest = max(longest, tgt_lens[i] + 1)
        if cur and new_longest * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, new_longest = [], tgt_lens[i] + 1
        cur.append(i)
        longest = new_longest
    if cur:
        batches.append(cur)
    return batches
