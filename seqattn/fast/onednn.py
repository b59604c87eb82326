"""Linear layers with their weight reordered once into oneDNN's blocked layout, for CPU decoding.

torch's CPU `addmm` hands MKL the weight in its plain layout, and MKL repacks it on every call. With
the few dozen rows of a decoding step that repacking costs about as much as the product itself
(`python benchmarks/micro.py`, "decoding_gemm_ms", gives both on the Multi30k shapes). `PackedLinear`
keeps a copy reordered once and multiplies through the oneDNN operators that torch.compile's CPU backend
uses for frozen weights. `pack` returns None where they are missing or do not apply (not the CPU, not
float32): callers then use the module as it is.

oneDNN compiles a kernel for every new number of rows the first time it meets it, and decoding meets
dozens of small ones (the encoder's steps as sentences end, the last sentences of a batch). Rows in
BUCKETED (8 to 63) are therefore padded up to a multiple of ROW_BUCKET: a few zero rows in exchange for
four kernels per weight instead of dozens. Fewer rows stay as they are (one sentence would pay for 16),
and so do more: beam search's 5 x sentences rows would waste more in padding than the compiles cost.

A PackedLinear is a snapshot: it does not follow later changes of the weight it was made from, so it is
made by whoever knows the weights are fixed (`fast.Decoding`), never cached on a module.
"""

from __future__ import annotations

import torch

ROW_BUCKET, BUCKETED = 16, range(8, 64)   # 8 to 63 rows are padded up to a multiple of 16


def packing_available() -> bool:
    """Return whether this torch build has the oneDNN operators PackedLinear needs."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and all(
        hasattr(ops, name) for name in ("_reorder_linear_weight", "_linear_pointwise"))


class PackedLinear:
    """y = act(x W^T + b) or x W^T + b + add, with W (out x in) reordered once; x: ... x in, float32, CPU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"):
        self.out_features, self.in_features = weight.shape
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())
        self.bias = None if bias is None else bias.detach().contiguous()
        self.activation = activation     # "none" or "tanh", applied inside the same oneDNN call

    def __call__(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """Return act(x W^T + b) (... x out), or with `add` (... x out, only without an activation)
        x W^T + b + add, the addition fused into the product."""
        lead = x.shape[:-1]
        rows = lead.numel()
        padded = -(-rows // ROW_BUCKET) * ROW_BUCKET if rows in BUCKETED else rows
        if padded != rows:
            x = torch.cat([x.reshape(rows, self.in_features), x.new_zeros(padded - rows, self.in_features)])
        if add is not None:
            assert self.activation == "none", "add and an activation cannot be fused together"
            if padded != rows:
                add = torch.cat([add.reshape(rows, self.out_features), add.new_zeros(padded - rows, self.out_features)])
            y = torch.ops.mkldnn._linear_pointwise.binary(x, add, self.weight, self.bias, "add")
        else:
            y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], "")
        return y if padded == rows else y[:rows].view(*lead, self.out_features)


def pack(weight: torch.Tensor, bias: torch.Tensor | None = None, activation: str = "none") -> PackedLinear | None:
    """Return a PackedLinear of weight (out x in) and bias (out), or None where packing does not apply:
    tensors not float32 on the CPU, or a torch without oneDNN's linear operators."""
    tensors = [weight] + ([] if bias is None else [bias])
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) or not packing_available():
        return None
    return PackedLinear(weight, bias, activation)
