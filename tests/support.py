"""Helpers several test files share (no tests here): network configurations, synthetic frames, and the
options and subprocess runs of the end-to-end tests."""
import glob
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from data.io import write_image

ROOT = Path(__file__).resolve().parents[1]

# tests/networks/<variant>.yml: {spec, full, tiny, sizes} of every registered network (tests/test_networks.py)
CONFIGS = {os.path.basename(p)[:-4]: yaml.safe_load(open(p)) for p in sorted(glob.glob(str(ROOT / 'tests/networks/*.yml')))}


def assert_close_to_scale(got, want, rel=1e-5):
    """Deep networks in float32 agree to rounding relative to the output's scale, whatever the build of
    torch: |got - want| <= rel * max|want| (1e-5 is about 100 float32 ulps at the largest value)."""
    torch.testing.assert_close(got, want, rtol=0, atol=rel * float(want.abs().max()))


def seeded_weights(net, seed=0):
    """Overwrite every parameter from a seed, by name, so that an official class and ours get the same
    weights without storing them (the official-output fixtures of the deformable and Swin networks): sorted names,
    float64 normals r; LayerNorm gains 1 + 0.1 r, position-bias tables 0.5 r, weights r / sqrt(fan_in)
    (x0.3 for offset convs), biases 0.1 r (1.0 r for offset convs), which gives deformable offsets of about
    a pixel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.1 * r)
            elif 'relative_position_bias_table' in name:
                p.copy_(0.5 * r)
            elif p.dim() > 1:
                gain = 0.3 if 'conv_offset' in name else 1.0
                p.copy_(gain * r / math.sqrt(p[0].numel()))
            else:
                p.copy_((1.0 if 'conv_offset' in name else 0.1) * r)
    return net


def smooth_frame(rng, h, w, dtype=np.uint8):
    """A natural-looking frame: random colours at low resolution, bicubically enlarged."""
    white = np.iinfo(dtype).max
    small = rng.random((max(2, h // 8), max(2, w // 8), 3)) * white
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, white).astype(dtype)


def make_septuplets(root, keys, names, size=(64, 96), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    for key in keys:
        for name in names:
            write_image(root / key / name, smooth_frame(rng, *size, dtype))


NETWORK = 'msitf'


def options(tmp_path, name, **train):
    if NETWORK not in CONFIGS:
        pytest.skip(f'tests/networks/{NETWORK}.yml not found')
    degradation = {'type': 'BD', 'scale': 4, 'sigma': 1.6}
    tree = {
        'name': name, 'experiments_root': str(tmp_path / 'experiments'), 'seed': 3, 'device': 'cpu',
        'num_threads': 1,
        'network': CONFIGS[NETWORK]['tiny'],
        'data': {'train': {'type': 'VideoSeptuplets', 'paths': ['demo:carphone'], 'degradation': degradation,
                           'max_frames': 24, 'lq_size': 16, 'use_flip': True, 'use_rot': True,
                           'use_time_reverse': True},
                 'val': {'type': 'VideoFile', 'paths': ['demo:carphone'], 'degradation': degradation,
                         'max_frames': 7, 'max_side': 96},
                 'batch_size': 2, 'num_workers': 0},
        'train': {'total_iter': 6, 'log_every': 1, 'val_every': 3, 'save_every': 2, 'keep_checkpoints': 2,
                  'progress_bar': False, 'optimizer': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'CosineAnnealingRestart', 'periods': [6], 'restart_weights': [1.0],
                                'eta_min': 1e-5}, **train},
        'val': {'compare_baseline': False},
    }
    path = tmp_path / f'{name}.yml'
    path.write_text(yaml.safe_dump(tree))
    return path


def run(args, **kw):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
                          **kw)


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)
