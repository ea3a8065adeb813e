"""The ``performance`` options (utils/performance.py) on CPU: bf16 autocast and channels_last train the same
network to (nearly) the same losses as float32, fp16 is refused off CUDA with one line, deformable convs stay
float32 under autocast, and adapters see through torch.compile and DDP wrappers. (torch.compile itself is
measured by benchmarks/bench_networks.py --compile: compiling on 2 CPU cores takes minutes.)"""
import csv

import torch
import yaml

import models.temporal_liif  # noqa: F401  (registers TemporalLIIF)
from models.adapters import ADAPTERS, unwrap
from models.common import ModulatedDeformConv2d
from models.temporal_liif import TemporalLIIF
from tests.test_training import options, run
from utils.performance import prepare_network


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


def test_adapters_see_through_compile_and_ddp_wrappers():
    net = TemporalLIIF(n_resblocks=1, n_feats=4, hidden_list=[8])
    compiled = torch.compile(net)  # wraps without compiling until called
    assert unwrap(compiled) is net and type(unwrap(compiled)) in ADAPTERS

    class Wrapper(torch.nn.Module):  # DistributedDataParallel's attribute layout
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(torch.compile(Wrapper(net))) is net


def test_channels_last_reformats_4d_weights_only():
    conv2d, conv3d = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(3, 4, 3)
    net = prepare_network(torch.nn.Sequential(conv2d, conv3d),
                          {'channels_last': True, 'cudnn_benchmark': False})
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[0].weight.is_contiguous() and net[1].weight.is_contiguous()
