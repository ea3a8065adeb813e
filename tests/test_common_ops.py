"""Shared ops against outside references: the grid_sample deformable conv against torchvision's."""
import contextlib
import weakref

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from models.common import (
    DropPath,
    FrameConv3d,
    ModulatedDeformConv2d,
    deform_conv2d_sampled,
    pad_to_multiple,
    recomputable,
    recomputed_outputs,
)


@pytest.mark.parametrize('groups,kernel,padding,dilation,size', [(1, 3, 1, 1, (9, 11)), (4, 3, 1, 1, (16, 16)),
                                                                  (2, 3, 2, 2, (7, 12)), (8, 1, 0, 1, (5, 6)),
                                                                  (2, 3, 0, 1, (10, 9)), (2, 3, 1, 1, (1, 2))])
def test_sampled_deform_conv_equals_torchvision(groups, kernel, padding, dilation, size):
    g = torch.Generator().manual_seed(0)
    b, c, o = 2, 8 * groups // groups * 2, 5
    h, w = size
    ho, wo = h + 2 * padding - dilation * (kernel - 1), w + 2 * padding - dilation * (kernel - 1)
    k = kernel * kernel
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    # offsets of several pixels, so that many taps fall between pixels and some outside the image
    offset = (4 * torch.randn(b, 2 * groups * k, ho, wo, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(b, groups * k, ho, wo, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(o, c, kernel, kernel, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(o, generator=g, dtype=torch.float64, requires_grad=True)
    ref = deform_conv2d(x, offset, weight, bias, padding=padding, dilation=dilation, mask=mask)
    got = deform_conv2d_sampled(x, offset, weight, bias, padding, dilation, mask)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    inputs = (x, offset, mask, weight, bias)
    for a, b_ in zip(torch.autograd.grad((ref * upstream).sum(), inputs),
                     torch.autograd.grad((got * upstream).sum(), inputs)):
        torch.testing.assert_close(b_, a, rtol=1e-8, atol=1e-8)


def test_module_implementations_agree_and_keep_dtype():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(16, 8, deformable_groups=4, offset_in_channels=6, offset_name='conv_offset',
                                  offset_bound=10.)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.5)
    x, feat = torch.randn(2, 16, 12, 13), torch.randn(2, 6, 12, 13)
    outs = []
    for impl in ('torchvision', 'sampled'):
        layer.impl = impl
        outs.append(layer(x, feat))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    assert layer.double()(x.double(), feat.double()).dtype == torch.float64
    assert 'conv_offset.weight' in layer.state_dict() and 'weight' in layer.state_dict()


def test_fresh_layer_is_a_plain_conv_with_half_mask():
    layer = ModulatedDeformConv2d(4, 3, deformable_groups=2)
    x = torch.randn(1, 4, 8, 8)
    plain = torch.nn.functional.conv2d(x, layer.weight * 0.5, None, padding=1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x, x), plain, rtol=1e-5, atol=1e-6)


def test_pad_to_multiple():
    x = torch.randn(2, 3, 4, 10, 13)
    y, size = pad_to_multiple(x, 8)
    assert y.shape == (2, 3, 4, 16, 16) and size == (10, 13)
    assert torch.equal(y[..., :10, :13], x) and not y[..., 10:, :].any()
    assert pad_to_multiple(x[..., :8, :8], 8)[0].shape == (2, 3, 4, 8, 8)


def test_drop_path_drops_whole_samples_in_training_only():
    x = torch.ones(1000, 3, 2)
    layer = DropPath(0.5).eval()
    assert torch.equal(layer(x), x)
    per_sample = layer.train()(x).flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 350 < (per_sample[:, 0] == 0).sum() < 650


def test_offset_magnitude_is_recorded_in_training_only():
    from models.common import mean_offset_magnitude
    torch.manual_seed(0)
    net = torch.nn.ModuleList([ModulatedDeformConv2d(4, 4, deformable_groups=2, offset_bound=10.) for _ in range(2)])
    for layer in net:
        torch.nn.init.normal_(layer.conv_offset_mask.weight, std=0.3)
    x = torch.randn(1, 4, 9, 9)
    assert mean_offset_magnitude(net) is None
    net.eval()
    for layer in net:
        layer(x, x)
    assert mean_offset_magnitude(net) is None
    net.train()
    expected = [layer.offset_and_mask(x)[0].detach().abs().mean() for layer in net]
    for layer in net:
        layer(x, x)
    assert mean_offset_magnitude(net) == pytest.approx(float(torch.stack(expected).mean()))
    assert mean_offset_magnitude(torch.nn.Linear(2, 2)) is None


def test_recomputed_outputs_frees_the_activation_and_keeps_the_gradients():
    """An activation that the next convolution saves is not kept alive by autograd inside
    ``recomputed_outputs``: it is rebuilt from its input in backward, and the gradients are bitwise those of
    the plain graph. Outside the context (or without autograd) ``recomputable`` is the plain call."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 9, generator=g, requires_grad=True)
    slope = torch.full((1,), 0.25, requires_grad=True)
    w1, w2 = (torch.randn(4, 4, 3, 3, generator=g, requires_grad=True) for _ in range(2))
    w3 = torch.randn(4, 8, 3, 3, generator=g, requires_grad=True)

    def step(context):
        with context():
            a = F.conv2d(x, w1, padding=1)
            y = recomputable(F.prelu, a, slope)
            z = recomputable(lambda p, q: torch.cat((p, q), 1), a, x)
            out = F.conv2d(y, w2, padding=1) + F.conv2d(z, w3, padding=1)  # each conv saves its input
        refs = (weakref.ref(y), weakref.ref(z))
        del a, y, z
        alive = [r() is not None for r in refs]  # held by autograd for backward, or not
        return alive, torch.autograd.grad(out.square().sum(), (x, slope, w1, w2, w3))

    kept_plain, plain = step(contextlib.nullcontext)
    kept, recomputed = step(recomputed_outputs)
    assert kept_plain == [True, True] and kept == [False, False]
    for a, b in zip(plain, recomputed):
        assert torch.equal(a, b)


def test_recomputed_outputs_refuses_an_input_changed_in_place():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, requires_grad=True)
    with recomputed_outputs():
        a = x * 1.
        out = F.conv2d(recomputable(torch.relu, a), w, padding=1)
    with torch.no_grad():
        a.add_(1.)
    with pytest.raises(RuntimeError, match='modified in place'):
        out.sum().backward()


@pytest.mark.parametrize('in_channels, t, size', [(3, 4, (9, 7)), (8, 1, (5, 6)), (8, 5, (4, 4))])
def test_frame_conv3d_is_torchs_conv3d(in_channels, t, size):
    """FrameConv3d (3x3x3 as one 2-D convolution over the instants) against torch's 3-D convolution of the
    same weights: output and every gradient, in float64 to 1e-12 of their scale."""
    torch.manual_seed(0)
    conv = FrameConv3d(in_channels, 6, 3, padding=1).double()
    x = torch.randn(2, in_channels, t, *size, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    want = F.conv3d(x, conv.weight, conv.bias, padding=1)
    assert out.shape == want.shape == (2, 6, t, *size)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12 * float(want.detach().abs().max()))
    g = torch.randn_like(want)
    for got, ref in zip(torch.autograd.grad(out, (x, conv.weight, conv.bias), g),
                        torch.autograd.grad(want, (x, conv.weight, conv.bias), g)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))


def test_frame_conv3d_leaves_other_configurations_to_conv3d():
    conv = FrameConv3d(4, 4, (1, 3, 3), padding=(0, 1, 1))
    x = torch.randn(1, 4, 3, 5, 5)
    assert torch.equal(conv(x), F.conv3d(x, conv.weight, conv.bias, padding=(0, 1, 1)))
