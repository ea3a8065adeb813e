"""RSTT checks beyond the generic ones (tests/networks/rstt_{s,m,l}.yml): the official outputs, strict loading of
official state_dicts of the three sizes, the windows over frames and their masks, the reproduced quirks."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.rstt import RSTT, WindowAttention3D, frame_masks, frame_windows, frame_windows_reverse, window_and_shift
from tests.support import assert_close_to_scale, seeded_weights

FIXTURE = Path(__file__).parent / 'fixtures' / 'rstt_official.pt'
SPECS = Path(__file__).parent / 'fixtures' / 'params'
TINY = {'embed_dim': 8, 'depths': [2, 2, 2, 2], 'num_heads': [1, 2, 2, 1], 'window_sizes': [[4, 4]] * 4}


def test_matches_official_outputs():
    """tests/fixtures/rstt_official.pt: inputs and outputs of the official RSTT-S (llmpass/RSTT @44c9782,
    configs/RSTT-S.yml, eval mode, CPU float32) with ``seeded_weights(net, 0)``: a 32x32 clip and a 27x35 one
    (features padded to 32x40, windows padded inside the blocks), outputs subsampled [..., ::step, ::step].
    Outputs are of unit scale; measured max difference 3.1e-6 (float64 against float64 at 64x112: 1e-14)."""
    fixture = torch.load(FIXTURE)
    net = seeded_weights(RSTT(size=fixture['size']).eval(), fixture['weight_seed'])
    for case in fixture['cases']:
        with torch.no_grad():
            out = net(case['input'])[..., ::case['step'], ::case['step']]
        assert out.shape == case['output'].shape
        assert_close_to_scale(out, case['output'], rel=2e-5)


@pytest.mark.parametrize('size, count', [('S', 4_485_275), ('M', 6_079_895), ('L', 7_674_515)])
def test_official_state_dicts_load_strictly(size, count):
    """A state_dict with the official names and shapes (tests/fixtures/params/rstt_<size>.txt) loads with
    strict=True; buffers (relative-position indices) depend only on the configuration."""
    net = RSTT(size=size)
    assert sum(p.numel() for p in net.parameters()) == count
    reference, official = net.state_dict(), {}
    for line in (SPECS / f'rstt_{size.lower()}.txt').read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        name, shape, kind = line.split('\t')
        official[name] = reference[name].clone() if kind == 'buffer' else torch.randn(
            tuple(int(s) for s in shape.split(',') if s))
    net.load_state_dict(official, strict=True)
    torch.testing.assert_close(net.conv_last.weight, official['conv_last.weight'])


def test_sizes_and_their_arguments():
    assert [len(layer.blocks) for layer in RSTT(size='M').encoder_layers] == [6] * 4
    assert [len(layer.blocks) for layer in RSTT().decoder_layers] == [8] * 4  # the class defaults: RSTT-L
    with pytest.raises(ValueError, match='size'):
        RSTT(size='XL')
    with pytest.raises(ValueError, match='not both'):
        RSTT(size='S', depths=[2] * 8)
    with pytest.raises(ValueError, match='even'):
        RSTT(embed_dim=8, depths=[2] * 3, num_heads=[1] * 3, window_sizes=[[4, 4]] * 3)


def test_unused_downsample_is_frozen_and_unused():
    torch.manual_seed(0)
    net = RSTT(**TINY).eval()
    assert [p.requires_grad for d in net.downsample for p in d.parameters()] == [True, True, False, False]
    x = torch.rand(1, 4, 3, 8, 8)
    with torch.no_grad():
        out = net(x)
        net.downsample[-1].conv[0].weight.fill_(1e3)
        torch.testing.assert_close(net(x), out, rtol=0, atol=0)


def test_frame_count_is_fixed():
    with pytest.raises(ValueError, match='num_frames'):
        RSTT(**TINY)(torch.rand(1, 3, 3, 8, 8))


def test_global_residual_is_trilinear_upsampling():
    torch.manual_seed(0)
    net = RSTT(**TINY).eval()
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 4, 3, 6, 5)
    with torch.no_grad():
        out = net(x)
    base = F.interpolate(x.transpose(1, 2), (7, 24, 20), mode='trilinear', align_corners=False).transpose(1, 2)
    torch.testing.assert_close(out, base)


def test_window_and_shift_per_axis():
    assert window_and_shift((8, 16), (4, 4), (2, 2)) == ((4, 4), (2, 2))
    assert window_and_shift((4, 16), (4, 4), (2, 2)) == ((4, 4), (0, 2))  # not larger than the window: no shift
    assert window_and_shift((2, 1), (4, 4), (2, 2)) == ((2, 1), (0, 0))


def test_frame_windows_round_trip_and_layout():
    x = torch.rand(2, 3, 4, 8, 5)
    windows = frame_windows(x, (2, 4))
    assert windows.shape == (2 * 2 * 2, 3 * 2 * 4, 5)
    assert torch.equal(windows[1].view(3, 2, 4, 5), x[0, :, :2, 4:8])  # window (0, 1): every frame, frame-major
    assert torch.equal(frame_windows_reverse(windows, (2, 4), 2, 4, 8), x)


def test_frame_masks_against_labels_over_frames():
    """The official construction: a label per (frame, pixel) for the 9 shifted regions, windows over frames,
    -100 between different labels; here with a rectangular window and no shift along the rows."""
    d1, d2, (h, w), window, shift = 3, 2, (4, 10), (4, 4), (0, 2)
    labels = torch.zeros(1, 1, 4, 12, 1)
    cols = (slice(0, -4), slice(-4, -2), slice(-2, None))
    for j, cs in enumerate(cols):
        labels[:, :, :, cs] = 2 * 3 + j  # rows: a zero shift leaves one region
    q = frame_windows(labels.expand(1, d1, 4, 12, 1), window).squeeze(-1)
    kv = frame_windows(labels.expand(1, d2, 4, 12, 1), window).squeeze(-1)
    direct = (kv.unsqueeze(1) - q.unsqueeze(2)).ne(0).float() * -100
    assert torch.equal(frame_masks((h, w), window, shift, d1, d2, None), direct)


def test_shrunk_window_reads_the_bias_of_the_same_relative_positions():
    """Beyond the official code: a window shrunk to (2, 3) takes from the table what the built (4, 4) window
    gives the same pairs of (frame, row, column) tokens."""
    torch.manual_seed(0)
    attn = WindowAttention3D(8, 7, 4, (4, 4), 2)
    full = attn.position_bias((4, 4))  # (heads, 7*16, 4*16)
    small = attn.position_bias((2, 3))
    keep = torch.tensor([r * 4 + c for r in range(2) for c in range(3)])
    rows = (torch.arange(7)[:, None] * 16 + keep).flatten()
    cols = (torch.arange(4)[:, None] * 16 + keep).flatten()
    torch.testing.assert_close(small, full[:, rows][:, :, cols], rtol=0, atol=0)
    assert small.shape == (2, 7 * 6, 4 * 6)
