"""Helpers several test files share (no tests here): network configurations, synthetic frames, and the
options and subprocess runs of the end-to-end tests."""
import glob
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
