"""`accelerate`: the model's modules swapped, in place, for faster ones that compute the same function.

- nn.LSTM / nn.GRU -> FastLSTM / FastGRU (`rnn.py`): the packed CPU training path, float32 under autocast.
- nn.Dropout -> FastDropout (`dropout.py`): a cheaper CPU mask, the same distribution.
- the Encoder -> FastEncoder: embeddings and dropout on the real tokens only (the ids are packed
  first), and the memory unpadded by one gather (`rnn.pad_packed`) instead of pad_packed_sequence,
  whose backward copies time step by time step.

A swap changes the module's class only: its parameters, state_dict and results stay (tests compare
outputs and gradients with torch's modules). Only modules of exactly the types a fast class was written
for are swapped, and the encoder only while `Encoder.forward` is the code FastEncoder re-expresses
(`check.written_for`): a subclass or an edited encoder keeps its own code.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..model.encoder import Encoder
from .check import written_for
from .dropout import FastDropout
from .rnn import FastGRU, FastLSTM, pad_packed

SWAPS = {nn.LSTM: FastLSTM, nn.GRU: FastGRU, nn.Dropout: FastDropout}


class FastEncoder(Encoder):
    """Encoder.forward on the packed tokens: no embedding or dropout of padding, the memory unpadded by
    `pad_packed` (the same values and gradients; dropout draws its masks over other tensors)."""

    def forward(self, src, src_len):
        """Return what Encoder.forward returns: (memory batch x src_len x out_size, final state, each
        layers x batch x out_size)."""
        ids = pack_padded_sequence(src, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(ids._replace(data=self.dropout(self.embed(ids.data))))
        out = out._replace(data=self.dropout(out.data))
        memory = pad_packed(out, src.size(1))
        final = tuple(map(self.merge_directions, final)) if isinstance(final, tuple) else self.merge_directions(final)
        return memory, final


def accelerate(model: nn.Module) -> list[str]:
    """Swap model's modules (in place) for the fast ones written for them; return the names of the kinds
    swapped, e.g. ['FastLSTM', 'FastDropout', 'FastEncoder']."""
    swapped = []
    for module in model.modules():
        fast = SWAPS.get(type(module))
        if fast is None and type(module) is Encoder and written_for("encoder"):
            fast = FastEncoder
        if fast is not None:
            module.__class__ = fast
            if fast.__name__ not in swapped:
                swapped.append(fast.__name__)
    return swapped
