"""TMNet checks beyond the generic ones (tests/networks/tmnet.yml): the official outputs with and without instants,
strict loading of an official state_dict, rendering at any instant (``test.py --time``), the two training stages."""
from pathlib import Path

import numpy as np
import pytest
import torch

from data.io import write_image
from data.protocols import stream_windows
from models.alignment import PCDAlign
from models.common import ModulatedDeformConv2d
from models.tmnet import TMNet
from tests.support import assert_close_to_scale, run, seeded_weights, smooth_frame

FIXTURE = Path(__file__).parent / 'fixtures' / 'tmnet_official.pt'
SPEC = Path(__file__).parent / 'fixtures' / 'params' / 'tmnet.txt'
TINY = {'nf': 8, 'groups': 2, 'front_RBs': 1, 'back_RBs': 1, 'hr_nf': 8}


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    net = TMNet(**{**TINY, **kwargs}).eval()
    # fresh modulation blocks would be all but inert next to the zero-initialised offsets: give the offsets and
    # the blocks weights that matter
    return seeded_weights(net, seed)


def test_matches_official_outputs():
    """tests/fixtures/tmnet_official.pt: inputs and outputs of the official TMNet(64, 7, 8, 5, 40)
    (CS-GangXu/TMNet @69ef5b3, eval mode, CPU float32, the DCNv2 forward replaced by torchvision's
    deform_conv2d, init_hidden's zeros on the CPU) with ``seeded_weights(net, 0)``, zero-padded to a multiple
    of 4 and cropped back as the official single_forward does: 4 frames of 8x12 without instants (the
    single-frame test), their first and last with t = 1/6 .. 5/6 (the multiple-frames test), and 2 clips of 4
    frames of 10x7 at t = 1/4, 1/2, 3/4; outputs subsampled [..., ::step, ::step]. Outputs reach about 780
    with these weights; measured max difference 2e-6 of that (float64 against float64 at 64x112: 1e-14)."""
    fixture = torch.load(FIXTURE)
    net = seeded_weights(TMNet().eval(), fixture['weight_seed'])
    for case in fixture['cases']:
        with torch.no_grad():
            out = net(case['input'], case['t'])[..., ::case['step'], ::case['step']]
        assert out.shape == case['output'].shape
        assert_close_to_scale(out, case['output'], rel=2e-5)


def test_official_state_dict_loads_strictly():
    net = TMNet()
    official = {}
    for line in SPEC.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        name, shape, _ = line.split('\t')
        official[name] = torch.randn(tuple(int(s) for s in shape.split(',') if s))
    net.load_state_dict(official, strict=True)
    torch.testing.assert_close(net.pcd_align.TMB_B_l3.t_process[4].weight, official['pcd_align.TMB_B_l3.t_process.4.weight'])


def test_built_from_the_shared_blocks():
    net = TMNet(**TINY)
    pcds = [m for m in net.modules() if isinstance(m, PCDAlign)]
    assert [m.time_modulation for m in pcds] == [True, False, False]  # interpolation; the ConvLSTM's h and c
    assert net.layersAtB.deformable_groups == net.layersCtB.deformable_groups == 8  # whatever groups
    assert all(m.conv_offset_mask.weight.shape[0] == 3 * m.deformable_groups * 9
               for m in net.modules() if isinstance(m, ModulatedDeformConv2d))
    assert sum(p.numel() for p in TMNet().parameters()) == 12_263_523


def test_midpoint_is_the_network_without_instants():
    """The modulation vector is exactly 0 at t = 1/2 (bias-free convs of 2t - 1 = 0), so t = [1/2] is forward(x)."""
    net = tiny()
    x = torch.rand(1, 3, 3, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([[0.5]])), net(x), rtol=0, atol=0)
        assert not torch.allclose(net(x, torch.tensor([[0.4]])), net(x))


def test_render_runs_one_forward_at_the_union_of_the_fractions():
    net = tiny()
    lq = torch.rand(2, 4, 3, 8, 8)
    with torch.no_grad():
        thirds = net(lq, torch.tensor([[1 / 3, 2 / 3]]).expand(2, -1))  # frames 0, 1/3, 2/3, 1, 4/3, ..., 3
        times = [j / 3 for j in range(10)]
        torch.testing.assert_close(net.render(lq, times), thirds, rtol=0, atol=0)
        mixed = net(lq, torch.tensor([[0.25, 0.5, 0.75]]).expand(2, -1))  # 4 frames per interval
        torch.testing.assert_close(net.render(lq, [0.25, 1.5, 2.75, 3]), mixed[:, [1, 6, 11, 12]], rtol=0, atol=0)
        whole = net.predict(lq)
        torch.testing.assert_close(net.render(lq, [3, 0, 1.5]), whole[:, [6, 0, 3]], rtol=0, atol=0)
    for bad in ([-0.5], [3.25]):
        with pytest.raises(ValueError, match='instants'):
            net.render(lq, bad)
    with pytest.raises(ValueError, match='any_scale'):
        net.render(lq, [0.5], (16, 16))


def test_stream_windows_at_time_factor_4():
    """The windows and instants test.py --time 4 renders (data.protocols.stream_windows): 4 outputs per input
    interval, each window's instants relative to its first frame."""
    net = tiny()
    lq = torch.rand(1, 6, 3, 8, 8)
    outputs = []
    with torch.no_grad():
        for window in stream_windows(6, 4):
            outputs.append(net.render(lq[:, list(window.inputs)], list(window.times)))
    assert sum(o.shape[1] for o in outputs) == 21 and all(o.shape[2:] == (3, 32, 32) for o in outputs)


def test_cli_upscales_at_time_factor_4(tmp_path):
    """``python test.py --time 4`` on a folder of 5 frames: 4 x 4 + 1 = 17 output frames, x4 in space."""
    rng = np.random.default_rng(0)
    frames = tmp_path / 'frames'
    for i in range(5):
        write_image(frames / f'{i:03d}.png', smooth_frame(rng, 12, 16))
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(tiny().state_dict(), checkpoint)
    spec = '{type: TMNet, nf: 8, groups: 2, front_RBs: 1, back_RBs: 1, hr_nf: 8}'
    result = run(['test.py', '--checkpoint', str(checkpoint), '--network', spec, '--input', str(frames),
                  '--output', str(tmp_path / 'out'), '--time', '4', '--device', 'cpu'])
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted((tmp_path / 'out').glob('*.png'))
    assert len(written) == 17


def test_training_stages():
    """Stage 1 trains everything but the modulation blocks (unused without instants); stage 2 only them, on the
    first and last LR frames against all 7 frames at t = 1/6 .. 5/6."""
    first, second = TMNet(**TINY), TMNet(finetune_tmb=True, **TINY)
    for net, trained in ((first, lambda k: 'TMB' not in k), (second, lambda k: 'TMB' in k)):
        assert all(p.requires_grad == trained(k) for k, p in net.named_parameters())
    net = seeded_weights(second.train())
    lq, gt = torch.rand(1, 4, 3, 8, 8), torch.rand(1, 7, 3, 32, 32)
    pred, losses = net.training_losses(lq, gt, {}, torch.nn.L1Loss())
    losses['pixel'].backward()
    assert pred.shape == gt.shape
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for k, p in net.named_parameters() if 'TMB' in k)
    with torch.no_grad():
        expected = net(lq[:, [0, 3]], torch.arange(1, 6.)[None] / 6)
    torch.testing.assert_close(pred.detach(), expected, rtol=0, atol=0)
