"""Label-smoothed cross-entropy that keeps one vocabulary-sized tensor instead of four."""

from __future__ import annotations

import torch


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Summed loss over non-padding rows; the gradient (softmax - smoothed one-hot) is made in forward.

    torch's cross_entropy materialises log-softmax, a zero-filled one-hot gradient, their sum and the
    log-softmax backward, each vocabulary-sized (tokens x V); here log-softmax is turned into the
    gradient in place, which takes about 5% off a training step of the Multi30k model on a CPU.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, smoothing: float, pad: int) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)                      # N x V
        real = target != pad
        v = logp.size(-1)
        nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)               # N
        per_row = (1.0 - smoothing) * nll - (smoothing / v) * logp.sum(-1)
        loss = per_row.masked_fill(~real, 0.0).sum()
        grad = logp.exp_().sub_(smoothing / v)                               # softmax - smoothing / V
        grad.scatter_add_(1, target.unsqueeze(1), torch.full_like(nll, smoothing - 1.0).unsqueeze(1))
        ctx.save_for_backward(grad, real)
        ctx.dtype, ctx.spent = logits.dtype, False
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # the padding rows' zeros and grad_out go in with one in-place pass over the saved N x V tensor
        if ctx.spent:
            raise RuntimeError("smoothed_cross_entropy: backward through the same loss twice is not supported")
        ctx.spent = True
        grad, real = ctx.saved_tensors
        return grad.mul_(real.unsqueeze(1) * grad_out).to(ctx.dtype), None, None, None


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float, pad: int) -> torch.Tensor:
    """Return sum over rows with target != pad of (1-e) * -log p(target) + e * mean_v -log p(v) (a scalar).

    logits: N x V (any float dtype, computed in float32), target: N ids. The same value and gradient as
    F.cross_entropy(logits, target, ignore_index=pad, label_smoothing=e, reduction='sum').
    """
    if not (torch.is_grad_enabled() and logits.requires_grad):   # e.g. validation: no gradient to prepare
        return torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=pad,
                                                 label_smoothing=smoothing, reduction="sum")
    return _SmoothedCrossEntropy.apply(logits, target, smoothing, pad)
