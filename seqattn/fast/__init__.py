"""What makes the model fast, kept beside it: the model (`seqattn/model/`) never asks for it.

- `accelerate(model)`: swaps the modules training runs through for faster ones that compute the same
  function (the packed CPU RNN training path, the CPU dropout, the encoder's unpadding); the trainer
  and the translator call it.
- `Decoding(model)`: the model's `encode` and `step` from weights derived once (input tables, packed
  products, the split of W_c, the encoder's tables); the translator builds one per set of fixed weights
  and hands it to the searches.
- `search` (`fast.search`): the search engine: the plain search's outputs with refilled batches,
  chunked top-k and trimmed beam history; the translator decodes with it.
- `cross_entropy`: the label-smoothed loss with one vocabulary-sized tensor instead of four.

Every path checks that it applies (the module types, options, device and model code it was written
for, `check.py`) and otherwise leaves the model's own code in place: correctness never depends on this
package, and tests hold each path to the plain model's outputs and gradients.
"""

from .decoding import Decoding
from .loss import smoothed_cross_entropy as cross_entropy
from .training import accelerate

__all__ = ["Decoding", "accelerate", "cross_entropy"]
