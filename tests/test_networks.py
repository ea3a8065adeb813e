"""Generic checks run on every network described in tests/networks/<model>.yml.

Each file gives the official configuration (``full``: must equal the spec in
../shared/specs/params/<spec>, name by name and shape by shape), a ``tiny`` configuration of the
same class, and LR ``sizes`` the tiny network must accept.
"""
import glob
import os

import numpy as np
import pytest
import torch
import yaml

import models  # noqa: F401  (fills the registry)
from models import build_network
from models.adapters import predict, training_losses
from models.losses import CharbonnierLoss
from tests.conftest import ROOT, SPECS, require

CONFIGS = {os.path.basename(p)[:-4]: yaml.safe_load(open(p)) for p in sorted(glob.glob(str(ROOT / 'tests/networks/*.yml')))}


def read_spec(name):
    path = SPECS / 'params' / name
    if not path.exists():
        pytest.skip(f'spec not found: {path}')
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        key, shape, kind = line.split('\t')
        rows.append((key, tuple(int(s) for s in shape.split(',')) if shape else (), kind))
    return rows


def tiny(name, seed=0):
    torch.manual_seed(seed)
    return build_network(CONFIGS[name]['tiny'])


def real_clip(h, w, n=4):
    """n odd frames of a real Vimeo septuplet, LR by area averaging (any fixed downscale will do here)."""
    import cv2
    folder = require('vimeo_septuplet/sequences/00001/0001')
    frames = [cv2.imread(str(folder / f'im{i}.png'))[..., ::-1] for i in range(1, 2 * n, 1)]
    gt = np.stack([cv2.resize(f, (4 * w, 4 * h), interpolation=cv2.INTER_AREA) for f in frames])
    lq = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames[::2]])
    to_t = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(0, 3, 1, 2).unsqueeze(0)  # noqa: E731
    return to_t(lq), to_t(gt)


needs_configs = pytest.mark.skipif(not CONFIGS, reason='no network configs in tests/networks yet')


@needs_configs
@pytest.mark.parametrize('name', list(CONFIGS))
def test_full_config_matches_official_spec(name):
    spec = read_spec(CONFIGS[name]['spec'])
    net = build_network(CONFIGS[name]['full'])
    params = dict(net.named_parameters())
    ours = [(k, tuple(v.shape), 'param' if k in params else 'buffer') for k, v in net.state_dict().items()]
    assert len(ours) == len(spec)
    for got, want in zip(ours, spec):
        assert got == want
    count = sum(s[2] == 'param' and int(np.prod(s[1])) for s in spec)
    assert sum(p.numel() for p in net.parameters()) == count


@needs_configs
@pytest.mark.parametrize('name', list(CONFIGS))
def test_output_shapes(name):
    net = tiny(name).eval()
    for h, w in CONFIGS[name]['sizes']:
        with torch.no_grad():
            out = predict(net, torch.rand(1, 4, 3, h, w))
        assert out.shape == (1, 7, 3, 4 * h, 4 * w), (h, w)
        assert torch.isfinite(out).all()


@needs_configs
@pytest.mark.parametrize('name', list(CONFIGS))
def test_every_parameter_gets_a_gradient(name):
    """Through the training losses (the network's loss hook if it has one, else Charbonnier)."""
    net = tiny(name).train()
    h, w = CONFIGS[name]['sizes'][0]
    lq, gt = torch.rand(1, 4, 3, h, w), torch.rand(1, 7, 3, 4 * h, 4 * w)

    def backward():
        _, losses = training_losses(net, lq, gt, {}, CharbonnierLoss())
        sum(losses.values()).backward()

    # Zero-initialised layers (DCN offset convs, as officially) block the gradient of what feeds them
    # until one step has moved them: check after one small optimizer step (Adam: every weight moves by
    # about lr, whatever the scale of its gradient).
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    backward()
    opt.step()
    opt.zero_grad()
    backward()
    missing = [k for k, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing


@needs_configs
@pytest.mark.parametrize('name', list(CONFIGS))
def test_a_few_steps_on_a_real_clip_lower_the_loss(name):
    net = tiny(name).train()
    lq, gt = real_clip(32, 32)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    losses = []
    for _ in range(6):
        loss = torch.sqrt((predict(net, lq) - gt) ** 2 + 1e-6).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@needs_configs
@pytest.mark.parametrize('name', list(CONFIGS))
def test_eval_mode_is_deterministic(name):
    net = tiny(name).eval()
    h, w = CONFIGS[name]['sizes'][0]
    x = torch.rand(1, 4, 3, h, w)
    with torch.no_grad():
        assert torch.equal(predict(net, x), predict(net, x))
