"""MSITF-specific checks: the official outputs, the reproduced quirks, the SwinV2 ops against direct maths."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models.msitf  # noqa: F401  (registers MSITF)
from models.alignment import PCDAlign
from models.common import shifted_window_mask, window_partition, window_reverse
from models.msitf import MSITF, TemporalAttention
from models.swinv2 import SwinV2Block, WindowAttentionV2
from tests.support import assert_close_to_scale

FIXTURE = Path(__file__).parent / 'fixtures' / 'msitf_official.pt'
TINY = dict(nf=8, groups=1, front_RBs=1, trunk_depths=[2], trunk_heads=[2], window_size=4, hr_nf=8)


def seeded_(net, seed=0):
    """The fixture's weights: every parameter, in state_dict order, uniform(-1, 1) / sqrt(fan_in) drawn in
    float64 from one CPU generator seeded with ``seed`` (fan_in = numel / shape[0]; 1 for 1-d tensors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) / fan_in ** 0.5)
    return net


def test_matches_official_outputs():
    """tests/fixtures/msitf_official.pt holds inputs and outputs of the official mystvsr07.Net(64, 7, 8, 5, 40)
    (carpenterChina/MSITF @007f117, run in float64 on CPU, eval mode) with the weights of ``seeded_``:
    a 12x10 clip (features padded to 16x16, masks computed on the fly) and a 32x32 clip (no padding, the
    stored 32x32 masks), the latter's output subsampled [..., ::3, ::5] to keep the file small."""
    fixture = torch.load(FIXTURE)
    net = seeded_(MSITF(), fixture['seed']).eval()
    for case in fixture['cases']:
        with torch.no_grad():
            out = net(case['input'])[..., ::case['step'][0], ::case['step'][1]]
        assert out.shape == case['output'].shape
        # float32 against the float64 reference: measured max error about 1e-6 (outputs of magnitude ~1.4).
        assert_close_to_scale(out, case['output'])


def test_pcd_quirk_samples_only_the_first_frame():
    """Officially the deformable convs sample (fea1 + fea1) / 2; with offsets fixed (a fresh PCD has
    zero offset convs), the second frame then has no influence at all, while 'mean' samples both."""
    torch.manual_seed(0)
    pyramid = lambda: [torch.rand(1, 8, 8 // 2 ** i, 8 // 2 ** i) for i in range(3)]  # noqa: E731
    fea1, fea2, other = pyramid(), pyramid(), pyramid()
    msitf = {'directions': 1, 'offset_bound': 10.}
    quirk, mean = PCDAlign(8, 2, **msitf), PCDAlign(8, 2, sample='mean', **msitf)
    mean.load_state_dict(quirk.state_dict())
    assert torch.equal(quirk(fea1, fea2), quirk(fea1, other))
    assert not torch.allclose(mean(fea1, fea2), mean(fea1, other))
    with pytest.raises(ValueError, match='pcd_input'):
        MSITF(pcd_input='fea2', **TINY)


def test_pcd_input_option_reaches_every_alignment():
    net = MSITF(pcd_input='mean', **TINY)
    modes = [(m.sample, m.directions) for m in net.modules() if isinstance(m, PCDAlign)]
    assert modes == [('mean', 1)] * 3  # frame interpolation, and the ConvLSTM's h and c alignment


def test_global_residual_is_trilinear_upsampling():
    torch.manual_seed(0)
    net = MSITF(**TINY).eval()
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 4, 3, 6, 5)
    with torch.no_grad():
        out = net(x)
    base = F.interpolate(x.transpose(1, 2), (7, 24, 20), mode='trilinear', align_corners=False).transpose(1, 2)
    torch.testing.assert_close(out, base)
    # align_corners=False in time: output frame 2, the instant of LR frame 1, samples the LR clip at
    # (2 + 0.5) * 4/7 - 0.5 = 13/14, a blend of LR frames 0 and 1.
    bilinear1 = F.interpolate(x[:, 1], scale_factor=4, mode='bilinear', align_corners=False)
    bilinear0 = F.interpolate(x[:, 0], scale_factor=4, mode='bilinear', align_corners=False)
    torch.testing.assert_close(out[:, 2], bilinear0 / 14 + bilinear1 * 13 / 14)


def test_features_padded_to_the_window_and_pyramid_multiple():
    """Officially padded to a multiple of 8 (= lcm(4, window 8)); sizes already multiples are not padded."""
    for window, (h, w), padded in [(8, (16, 24), (16, 24)), (8, (12, 10), (16, 16)), (4, (12, 10), (12, 12)),
                                   (4, (3, 5), (4, 8))]:
        net = MSITF(**{**TINY, 'window_size': window}).eval()
        seen = []
        net.feature_extraction.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
        with torch.no_grad():
            out = net(torch.rand(1, 2, 3, h, w))
        assert seen == [padded] and out.shape == (1, 3, 3, 4 * h, 4 * w)


def test_official_hyper_parameters_and_unused_arguments():
    net = MSITF()
    block = net.recon_trunk.layers[0].residual_group.blocks[1]
    assert len(net.recon_trunk.layers) == 6 and len(net.recon_trunk.layers[0].residual_group.blocks) == 2
    assert (block.window_size, block.shift_size, block.attn.num_heads) == (8, 4, 4)
    assert block.mlp.fc1.out_features == 128 and net.attn.num_heads == 8
    assert [round(b.drop_path.p, 6) for b in net.recon_trunk.layers[-1].residual_group.blocks] == [0.090909, 0.1]
    assert MSITF(back_RBs=1, nframes=3, **TINY).state_dict().keys() == MSITF(**TINY).state_dict().keys()
    assert MSITF(nf=16, front_RBs=1).HRconv.weight.shape == (64, 64, 3, 3)  # 64 wide whatever nf


def test_temporal_attention_against_direct_softmax():
    torch.manual_seed(0)
    attn = TemporalAttention(16, num_heads=8)
    x = torch.rand(2, 5, 16, 3, 4)
    tokens = x.permute(0, 3, 4, 1, 2).reshape(-1, 5, 16)
    q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
    heads = lambda t: t.reshape(-1, 5, 8, 2).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(2), dim=-1)
    direct = attn.proj((weights @ heads(v)).transpose(1, 2).reshape(-1, 5, 16))
    torch.testing.assert_close(attn(x), direct.view(2, 3, 4, 5, 16).permute(0, 3, 4, 1, 2))


def test_window_partition_round_trip():
    x = torch.rand(2, 8, 12, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (12, 16, 3)
    assert torch.equal(windows[1].view(4, 4, 3), x[0, :4, 4:8])
    assert torch.equal(window_reverse(windows, 4, 8, 12), x)


def test_shifted_window_mask_against_brute_force():
    """Pixels of one shifted window may attend to each other iff neither pair wrapped around a border."""
    h, w, ws, s = 16, 24, 8, 4
    mask = shifted_window_mask(h, w, ws, s)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    region = torch.stack([(rows < h - s), (cols < w - s)], -1).float()
    region = window_partition(region.unsqueeze(0), ws)  # (nW, ws*ws, 2)
    same = (region.unsqueeze(2) == region.unsqueeze(1)).all(-1)
    assert torch.equal(mask == 0, same) and set(mask.unique().tolist()) == {0., -100.}


def test_window_attention_against_direct_formula():
    """Cosine attention, clamped learnt temperature, and the position bias recomputed from its definition."""
    torch.manual_seed(0)
    ws, heads, dim = 4, 2, 8
    attn = WindowAttentionV2(dim, ws, heads)
    with torch.no_grad():
        for p in (attn.q_bias, attn.v_bias, attn.logit_scale):
            p.uniform_(-1, 6)  # logit_scale above log(100) for some heads: the clamp matters
    x = torch.rand(3, ws * ws, dim)
    mask = torch.where(torch.rand(1, ws * ws, ws * ws) > 0.3, 0., -100.)
    q = x @ attn.qkv.weight[:dim].T + attn.q_bias
    k = x @ attn.qkv.weight[dim:2 * dim].T
    v = x @ attn.qkv.weight[2 * dim:].T + attn.v_bias
    pos = torch.tensor([(i // ws, i % ws) for i in range(ws * ws)], dtype=torch.float32)
    delta = (pos[:, None] - pos[None]) / (ws - 1) * 8  # (n, n, 2) relative offsets scaled to [-8, 8]
    bias = 16 * torch.sigmoid(attn.cpb_mlp(torch.sign(delta) * torch.log2(delta.abs() + 1) / 3))  # (n, n, heads)
    out = []
    for h in range(heads):
        sl = slice(h * dim // heads, (h + 1) * dim // heads)
        cos = F.cosine_similarity(q[:, :, None, sl], k[:, None, :, sl], dim=-1)
        logits = cos * math.exp(min(attn.logit_scale[h].item(), math.log(100)))
        out.append(torch.softmax(logits + bias[..., h] + mask, dim=-1) @ v[..., sl])
    direct = attn.proj(torch.cat(out, -1))
    torch.testing.assert_close(attn(x, mask), direct, atol=1e-5, rtol=1e-5)


def test_swin_block_runs_at_any_size_with_the_same_result():
    """The stored mask (built at input_resolution) and a mask built on the fly give the same block."""
    torch.manual_seed(0)
    built_16 = SwinV2Block(8, 2, window_size=4, shift_size=2, input_resolution=(16, 16)).eval()
    built_32 = SwinV2Block(8, 2, window_size=4, shift_size=2, input_resolution=(32, 32)).eval()
    weights = {k: v for k, v in built_16.state_dict().items() if k != 'attn_mask'}  # a buffer of another shape
    built_32.load_state_dict(weights, strict=False)
    x = torch.rand(2, 16 * 16, 8)
    assert built_16.attn_mask.shape == (16, 16, 16)
    torch.testing.assert_close(built_16(x, (16, 16)), built_32(x, (16, 16)))
