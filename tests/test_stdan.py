"""STDAN-specific tests: the official-output fixture, strict loading of official state_dicts, the deformable
sampling op against a direct implementation of the CUDA kernel, padding, and Swin masks at any size.
Generic tests (shapes, gradients, training steps, spec names) run from tests/networks/stdan.yml."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

import models.stdan  # noqa: F401  (registers STDAN)
from models.common import modulated_deform_sample
from models.stdan import STDAN
from models.swinir import SwinTransformerBlock
from tests.conftest import spec_file
from tests.support import assert_close_to_scale, seeded_weights

FIXTURE = Path(__file__).parent / 'fixtures' / 'stdan_official.pt'
TINY = dict(nf=8, embed_dim=8, groups=2, num_heads=2, window_size=4, depths_extraction=[2], depths_recon=[2])


def test_matches_official_output():
    """tests/fixtures/stdan_official.pt: input (1, 4, 3, 8, 16) and the output of the official STTrans2
    (littlewhitesea/STDAN@1f10a1d, full configuration, ``seeded_weights(net, 0)``, eval mode, CPU float32,
    DCNv2 ops replaced by torchvision.ops.deform_conv2d). Outputs are of unit scale; float32 rounding
    differences through 62 Swin blocks stay near 1e-5 (measured 8.3e-6)."""
    fixture = torch.load(FIXTURE)
    torch.manual_seed(0)
    net = STDAN().eval()
    seeded_weights(net, fixture['weight_seed'])
    with torch.no_grad():
        out = net(fixture['input'])
    assert out.shape == fixture['output'].shape == (1, 7, 3, 32, 64)
    assert_close_to_scale(out, fixture['output'], rel=1e-4)


def test_official_state_dict_loads_strictly():
    """A state_dict with the official names, shapes and buffers (the spec file) loads with strict=True."""
    net = STDAN()
    reference = net.state_dict()
    official = {}
    for line in spec_file('stdan.txt').read_text().splitlines():
        if line.startswith('#'):
            continue
        name, shape, kind = line.split('\t')
        shape = tuple(int(s) for s in shape.split(',') if s)
        # buffers (relative position indices, shifted-window masks for img_size 32) depend only on the
        # configuration, so an official checkpoint holds the values ours computes; parameters are anything
        official[name] = reference[name].clone() if kind == 'buffer' else torch.randn(shape)
    net.load_state_dict(official, strict=True)
    torch.testing.assert_close(net.conv_last.weight, official['conv_last.weight'])


def direct_sample(x, offset, mask, k=3, pad=1):
    """The dsp_v2 CUDA kernel (DCNv2 modulated im2col) written out pixel by pixel, in float64."""
    b, c, h, w = x.shape
    g = offset.shape[1] // (2 * k * k)
    out = torch.zeros(b, c * k * k, h, w, dtype=torch.float64)
    for n in range(b):
        for ch in range(c):
            grp = ch // (c // g)
            for i in range(k):
                for j in range(k):
                    tap = i * k + j
                    for y in range(h):
                        for xx in range(w):
                            py = y - pad + i + offset[n, grp * 2 * k * k + 2 * tap, y, xx].item()
                            px = xx - pad + j + offset[n, grp * 2 * k * k + 2 * tap + 1, y, xx].item()
                            val = 0.0
                            if -1 < py < h and -1 < px < w:
                                y0, x0 = math.floor(py), math.floor(px)
                                ly, lx = py - y0, px - x0
                                for yy, xc, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                                                    (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
                                    if 0 <= yy < h and 0 <= xc < w:
                                        val += wgt * x[n, ch, yy, xc].item()
                            out[n, ch * k * k + tap, y, xx] = val * mask[n, grp * k * k + tap, y, xx].item()
    return out


def sampling_case(seed=0, b=2, c=4, h=5, w=6, g=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    offset = 2.5 * torch.randn(b, 2 * g * 9, h, w, generator=gen, dtype=torch.float64)
    offset[:, :6] = offset[:, :6].round()  # whole-pixel offsets, some landing exactly on the border
    mask = torch.rand(b, g * 9, h, w, generator=gen, dtype=torch.float64)
    return x, offset, mask


def test_deform_sample_matches_direct_kernel():
    x, offset, mask = sampling_case()
    expected = direct_sample(x, offset, mask)
    torch.testing.assert_close(modulated_deform_sample(x, offset, mask), expected, rtol=0, atol=1e-12)
    out32 = modulated_deform_sample(x.float(), offset.float(), mask.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), expected, rtol=0, atol=1e-5)


def test_deform_sample_equals_one_hot_deform_conv():
    """The stand-in used when running the official code: torchvision deform_conv2d with one-hot depthwise
    weights returns the same im2col columns."""
    x, offset, mask = sampling_case(seed=1)
    c = x.shape[1]
    weight = torch.eye(9, dtype=x.dtype).view(1, 9, 1, 3, 3).expand(c, 9, 1, 3, 3).reshape(c * 9, 1, 3, 3)
    expected = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    torch.testing.assert_close(modulated_deform_sample(x, offset, mask), expected, rtol=0, atol=1e-12)


def test_deform_sample_without_offsets_is_unfold():
    """Zero offsets and mask 1 give the plain 3x3 neighbourhoods, channel c*9 + tap (F.unfold's layout)."""
    x = torch.randn(2, 8, 7, 5)
    out = modulated_deform_sample(x, torch.zeros(2, 2 * 4 * 9, 7, 5), torch.ones(2, 4 * 9, 7, 5))
    torch.testing.assert_close(out, F.unfold(x, 3, padding=1).view(2, 72, 7, 5))


def test_padding_is_zero_padding_then_crop():
    """Sizes that are not multiples of lcm(4, window_size) are zero-padded at the bottom/right and cropped
    back (the official test script's protocol); sizes that are multiples pass unchanged."""
    torch.manual_seed(0)
    net = STDAN(**TINY).eval()
    x = torch.rand(1, 4, 3, 13, 18)
    with torch.no_grad():
        out = net(x)
        padded = net(F.pad(x.flatten(0, 1), (0, 2, 0, 3)).view(1, 4, 3, 16, 20))
    assert out.shape == (1, 7, 3, 52, 72)
    torch.testing.assert_close(out, padded[..., :52, :72], rtol=0, atol=1e-6)


def test_frame_count_follows_input():
    torch.manual_seed(0)
    net = STDAN(**TINY).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 3, 8, 8)).shape == (2, 5, 3, 32, 32)


def test_shifted_window_masks_at_any_size():
    """The stored mask is for img_size; another size gets its own mask (cached), and the block then computes
    what a block built for that size computes."""
    torch.manual_seed(0)
    block = SwinTransformerBlock(8, (16, 16), num_heads=2, window_size=4, shift_size=2).eval()
    other = SwinTransformerBlock(8, (8, 12), num_heads=2, window_size=4, shift_size=2).eval()
    other.load_state_dict({k: v for k, v in block.state_dict().items() if k != 'attn_mask'}, strict=False)
    assert block.attn_mask.shape == (16, 16, 16)
    assert block.masks(block.attn_mask, (16, 16), torch.device('cpu')) is block.attn_mask
    mask = block.masks(block.attn_mask, (8, 12), torch.device('cpu'))
    assert block.masks(block.attn_mask, (8, 12), torch.device('cpu')) is mask
    torch.testing.assert_close(mask, other.attn_mask)
    x = torch.randn(2, 8 * 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x, (8, 12)), other(x, (8, 12)))


def test_full_configuration_defaults():
    net = STDAN()
    assert sum(p.numel() for p in net.parameters()) == 8_292_843
    assert len(net.feature_extraction.layers) == 2 and len(net.feature_recon.layers) == 6
    block = net.feature_recon.layers[0].residual_group.blocks[1]
    assert (block.window_size, block.shift_size, block.attn.num_heads) == (8, 4, 6)
    assert net.conv_before_upsample[1].negative_slope == 0.01


@pytest.mark.parametrize('scale', [2, 3])
def test_other_scales(scale):
    net = STDAN(scale=scale, **TINY).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 2, 3, 6, 7)).shape == (1, 3, 3, 6 * scale, 7 * scale)
