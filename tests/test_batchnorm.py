"""The reduction BatchNorm (pointseg/batchnorm.py) against ATen's, in float64: outputs, gradients, running stats."""

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from pointseg.batchnorm import use_reduction_batchnorm


def _pair(c: int):
    ref = nn.BatchNorm2d(c).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
        ref.running_mean.uniform_(-1, 1)
    fast = copy.deepcopy(ref)
    assert use_reduction_batchnorm(fast, max_channels=c) == 1
    return ref, fast


def _run(bn, x, g):
    x = x.clone().requires_grad_(True)
    y = bn(x)
    y.backward(g)
    return y.detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean.clone(), bn.running_var.clone()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 16), h=st.integers(1, 9), w=st.integers(1, 9),
       shift=st.floats(-50, 50), seed=st.integers(0, 2**16))
def test_equals_aten_in_float64(n, c, h, w, shift, seed):
    if n * h * w < 2:
        return  # ATen refuses one value per channel in training mode
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 3 + shift).contiguous(
        memory_format=torch.channels_last)
    dy = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    ref, fast = _pair(c)
    for a, b in zip(_run(ref, x, dy), _run(fast, x, dy)):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    assert int(fast.num_batches_tracked) == int(ref.num_batches_tracked) == 1


def test_output_is_not_a_view_so_inplace_relu_works():
    ref, fast = _pair(4)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    out_ref = nn.ReLU(inplace=True)(ref(x.requires_grad_()))
    out_fast = nn.ReLU(inplace=True)(fast(x))
    torch.testing.assert_close(out_fast, out_ref)
    assert out_fast.is_contiguous(memory_format=torch.channels_last)


def test_eval_mode_and_other_layouts_keep_aten():
    ref, fast = _pair(3)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)  # NCHW: not the fast path
    torch.testing.assert_close(fast(x), ref(x))
    ref.eval(), fast.eval()
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(xc), ref(xc))


def test_wide_layers_are_left_alone():
    bn = nn.BatchNorm2d(32)
    assert use_reduction_batchnorm(bn) == 0 and "forward" not in vars(bn)


@pytest.mark.parametrize("copied", [True, False])
def test_default_model_step_matches(copied):
    """The default network with its few-channel BatchNorms (timm's BatchNormAct2d among them) rerouted: one
    training step gives ATen's loss and gradients (float64: float32 rounding alone moves small gradients by
    1e-3 through 40 layers), and a deep copy (an EMA teacher) keeps the rerouting."""
    from pointseg.models import build_model

    torch.manual_seed(0)
    ref = build_model("unet", "tu-tf_efficientnet_lite0", 5, "none", [32, 16, 16, 8, 8]).double().to(
        memory_format=torch.channels_last)
    fast = copy.deepcopy(ref)
    assert use_reduction_batchnorm(fast) >= 4
    if copied:
        fast = copy.deepcopy(fast)
        assert all("forward" in vars(m) for m in fast.modules() if isinstance(m, nn.BatchNorm2d)
                   and m.num_features <= 16)
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (2, 64, 64))
    out = []
    for m in (ref, fast):
        m.train()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        out.append((loss.detach(), [p.grad for p in m.parameters()], [b.clone() for b in m.buffers()]))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(out[0][1] + out[0][2], out[1][1] + out[1][2]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
