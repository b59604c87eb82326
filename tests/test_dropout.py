"""The CPU dropout: its mask's statistics, expectation, gradient and reproducibility."""

import pytest
import torch

from seqattn.fast.dropout import FastDropout as Dropout
from seqattn.fast.dropout import cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3, 0.5])
def test_each_lane_of_a_draw_drops_with_probability_p(p):
    """Each 64-bit draw feeds four consecutive elements: every one of the four positions must drop with
    probability p (a lane from a draw with a fixed top bit, say, would not)."""
    torch.manual_seed(0)
    y = cpu_dropout(torch.ones(1 << 20, 4), p)                        # 4M elements, lanes are the columns
    kept = (y != 0).double().mean(0)
    assert torch.allclose(kept, torch.full((4,), 1 - p, dtype=torch.float64), atol=3e-3), kept
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)), rtol=1e-4)   # survivors scaled by 1/(1-p)
    assert abs(y.double().mean().item() - 1.0) < 3e-3                 # expectation kept


def test_gradient_is_the_mask_and_shapes_of_any_size_work():
    torch.manual_seed(1)
    x = torch.randn(7, 3, 5, requires_grad=True)                       # 105 elements: not a multiple of 4
    y = cpu_dropout(x, 0.25)
    y.sum().backward()
    mask = y.detach() / x.detach()
    assert y.shape == x.shape
    assert torch.allclose(x.grad, mask, atol=1e-5)
    assert torch.all((mask == 0) | torch.isclose(mask, torch.tensor(4 / 3)))


def test_masks_follow_the_global_seed_and_differ_between_calls():
    x = torch.ones(1000)
    torch.manual_seed(5)
    a, b = cpu_dropout(x, 0.2), cpu_dropout(x, 0.2)
    torch.manual_seed(5)
    assert torch.equal(cpu_dropout(x, 0.2), a)
    assert not torch.equal(a, b)


def test_module_is_identity_in_eval_and_at_p0_and_zero_at_p1():
    x = torch.randn(10, 10)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
