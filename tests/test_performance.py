"""The ``performance`` options (engine/performance.py) on CPU: bf16 autocast and channels_last train the same
network to (nearly) the same losses as float32, fp16 is refused off CUDA with one line, deformable convs stay
float32 under autocast, and the trainer's wrapper of the network (for DDP and torch.compile) computes the
network's own training losses. (torch.compile itself is
measured by benchmarks/bench_networks.py --compile: compiling on 2 CPU cores takes minutes.)"""
import csv

import torch
import yaml

from engine.performance import prepare_network
from engine.training import TrainingStep
from models.common import ModulatedDeformConv2d
from models.losses import L1Loss
from models.temporal_liif import TemporalLIIF
from tests.support import options, run


def losses(tmp_path, name, performance):
    path = options(tmp_path, name, total_iter=3, val_every=3, save_every=3)
    tree = yaml.safe_load(path.read_text())
    tree['performance'] = performance
    path.write_text(yaml.safe_dump(tree))
    proc = run(['main.py', '-opt', str(path)])
    with open(tmp_path / 'experiments' / name / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    return proc, [float(r['loss']) for r in rows if r['loss']], float(rows[-1]['psnr_y'])


def test_bf16_and_channels_last_train_like_float32(tmp_path):
    _, reference, psnr = losses(tmp_path, 'fp32', {})
    proc, bf16, bf16_psnr = losses(tmp_path, 'bf16', {'amp': 'bf16'})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # bf16 keeps 8 bits of mantissa: the Charbonnier sums over a batch differ by well under 1 %
    assert len(bf16) == len(reference) == 3
    for a, b in zip(bf16, reference):
        assert abs(a - b) <= 1e-2 * b, (bf16, reference)
    assert abs(bf16_psnr - psnr) < 0.05
    proc, nhwc, _ = losses(tmp_path, 'nhwc', {'channels_last': True})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for a, b in zip(nhwc, reference):  # the same arithmetic in another memory order
        assert abs(a - b) <= 1e-5 * b, (nhwc, reference)


def test_fp16_off_cuda_is_a_one_line_error(tmp_path):
    path = options(tmp_path, 'fp16', total_iter=2)
    tree = yaml.safe_load(path.read_text())
    tree['performance'] = {'amp': 'fp16'}
    path.write_text(yaml.safe_dump(tree))
    proc = run(['main.py', '-opt', str(path)])
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1
    assert 'performance.amp: fp16 runs on CUDA only (device is cpu)' in proc.stderr
    assert not (tmp_path / 'experiments' / 'fp16').exists()  # refused before the run folder is made


def test_deformable_conv_stays_float32_under_autocast():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(8, 8, 3, padding=1, deformable_groups=2)
    torch.nn.init.normal_(dcn.conv_offset_mask.weight, std=0.3)  # offsets of a few pixels, masks away from 0.5
    x, feat = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 12, 12)
    reference = dcn(x, feat)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = dcn(x, feat)
    assert out.dtype == torch.float32
    # the offset/mask convolution runs in bf16 (relative 2^-9), the sampling and its sum in float32
    torch.testing.assert_close(out, reference, rtol=0, atol=0.05 * reference.abs().max().item())
    assert not torch.equal(out, reference)  # autocast was on


def test_training_step_is_the_networks_losses_and_leaves_the_network_bare():
    torch.manual_seed(0)
    net = TemporalLIIF(n_resblocks=1, n_feats=4, hidden_list=[8])
    step = TrainingStep(net, L1Loss())
    compiled = torch.compile(step)  # wraps without compiling until called
    assert compiled._orig_mod.net is net
    assert not [k for k in net.state_dict() if k.startswith(('module.', '_orig_mod.', 'net.'))]
    lq, gt = torch.rand(1, 4, 3, 6, 6), torch.rand(1, 7, 3, 24, 24)
    pred, losses = step(lq, gt, {})
    expected = net.training_losses(lq, gt, {}, L1Loss())
    torch.testing.assert_close(losses['pixel'], expected[1]['pixel'], rtol=0, atol=0)
    torch.testing.assert_close(losses['pixel'], torch.nn.functional.l1_loss(pred, gt), rtol=0, atol=0)


def test_channels_last_reformats_4d_weights_only():
    conv2d, conv3d = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(3, 4, 3)
    net = prepare_network(torch.nn.Sequential(conv2d, conv3d),
                          {'channels_last': True, 'cudnn_benchmark': False})
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[0].weight.is_contiguous() and net[1].weight.is_contiguous()
