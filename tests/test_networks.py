"""Generic checks of every registered network, through the interface every caller uses (models/base.py).

The list of networks is the registry (``models.NETWORKS``): a registered network without a configuration
in tests/networks/ fails here. Each tests/networks/<variant>.yml gives the official configuration
(``full``: must equal the spec <spec>, name by name and shape by shape, from tests/fixtures/params/ or else
../shared/specs/params/), a ``tiny``
configuration of the same class, and LR ``sizes`` the tiny network must accept; a network may have several
variants (STARnet with and without flow refinement).
"""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from models import NETWORKS, build_network
from models.base import VideoNetwork
from models.losses import CharbonnierLoss
from tests.conftest import SPECS, require
from tests.support import CONFIGS

VARIANTS = CONFIGS


def variants(name):
    """The tests/networks configurations of registered network ``name`` (a test fails without one)."""
    found = [stem for stem, c in VARIANTS.items() if c['tiny']['type'] == name]
    if not found:
        pytest.fail(f'{name} is registered but has no tests/networks/<variant>.yml with a tiny configuration')
    return found


def read_spec(name):
    path = Path(__file__).parent / 'fixtures' / 'params' / name
    if not path.exists():
        path = SPECS / 'params' / name
    if not path.exists():
        pytest.skip(f'spec not found: {path} (the shared folder sits beside the repository)')
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        key, shape, kind = line.split('\t')
        rows.append((key, tuple(int(s) for s in shape.split(',')) if shape else (), kind))
    return rows


def tiny(stem, seed=0):
    torch.manual_seed(seed)
    return build_network(VARIANTS[stem]['tiny'])


def trainable(net):
    if not any(p.requires_grad for p in net.parameters()):
        pytest.skip(f'{type(net).__name__} has no trainable parameters')
    return net


def real_clip(h, w, n=4):
    """n odd frames of a real Vimeo septuplet, LR by area averaging (any fixed downscale will do here)."""
    import cv2
    folder = require('vimeo_septuplet/sequences/00001/0001')
    frames = [cv2.imread(str(folder / f'im{i}.png'))[..., ::-1] for i in range(1, 2 * n, 1)]
    gt = np.stack([cv2.resize(f, (4 * w, 4 * h), interpolation=cv2.INTER_AREA) for f in frames])
    lq = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames[::2]])
    to_t = lambda a: torch.from_numpy(a.astype(np.float32) / 255).permute(0, 3, 1, 2).unsqueeze(0)  # noqa: E731
    return to_t(lq), to_t(gt)


NAMES = sorted(NETWORKS)


@pytest.mark.parametrize('name', NAMES)
def test_full_config_matches_official_spec(name):
    for stem in variants(name):
        if VARIANTS[stem]['spec'] is None:
            assert not list(build_network(VARIANTS[stem]['full']).state_dict()), f'{stem}: no spec, yet weights'
            continue
        spec = read_spec(VARIANTS[stem]['spec'])
        net = build_network(VARIANTS[stem]['full'])
        params = dict(net.named_parameters())
        ours = [(k, tuple(v.shape), 'param' if k in params else 'buffer') for k, v in net.state_dict().items()]
        assert ours == spec, stem
        count = sum(s[2] == 'param' and int(np.prod(s[1])) for s in spec)
        assert sum(p.numel() for p in net.parameters()) == count


@pytest.mark.parametrize('name', NAMES)
def test_the_interface(name):
    """What callers rely on: a VideoNetwork; render() at its own factors is predict(); its own factors pass
    check_factors; extra_inputs() (when there are any) survive pickling for loader workers and give what
    predict would compute itself."""
    for stem in variants(name):
        net = tiny(stem).eval()
        assert isinstance(net, VideoNetwork)
        net.check_factors(net.scale, 2)
        lq = torch.rand(1, 4, 3, 16, 16)
        with torch.no_grad():
            out = net.predict(lq)
            assert torch.equal(net.render(lq), out)
            assert torch.equal(net.render(lq, [0.5, 2], (16 * net.scale, 16 * net.scale)), out[:, [1, 4]])
        prepare = net.extra_inputs()
        if prepare is not None:
            prepare = pickle.loads(pickle.dumps(prepare))
            extras = prepare(lq[0])
            assert set(extras) == set(prepare.keys)
            with torch.no_grad():
                torch.testing.assert_close(net.predict(lq, {k: v[None] for k, v in extras.items()}), out,
                                           rtol=0, atol=0)


@pytest.mark.parametrize('name', NAMES)
def test_fixed_factor_networks_refuse_other_factors_in_one_line(name):
    for stem in variants(name):
        net = tiny(stem)
        for flag, kwargs in (('any_scale', {'scale': net.scale + 1.5}), ('any_time', {'time_factor': 3})):
            if getattr(net, flag):
                net.check_factors(**kwargs)
                continue
            with pytest.raises(ValueError, match=flag) as info:
                net.check_factors(**kwargs)
            assert '\n' not in str(info.value)
        if not net.any_time:
            with pytest.raises(ValueError, match='instants'):
                net.render(torch.rand(1, 4, 3, 8, 8), [0.25])


@pytest.mark.parametrize('name', NAMES)
def test_output_shapes(name):
    for stem in variants(name):
        net = tiny(stem).eval()
        for h, w in VARIANTS[stem]['sizes']:
            with torch.no_grad():
                out = net.predict(torch.rand(1, 4, 3, h, w))
            assert out.shape == (1, 7, 3, net.scale * h, net.scale * w), (stem, h, w)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize('name', NAMES)
def test_every_parameter_gets_a_gradient(name):
    """Through the training losses, on the batch the network trains on (``training_batch``)."""
    for stem in variants(name):
        net = trainable(tiny(stem).train())
        h, w = VARIANTS[stem]['sizes'][0]
        lq = torch.rand(1, 4, 3, h, w)
        gt, extras = net.training_batch(lq, torch.rand(1, 7, 3, 4 * h, 4 * w))

        def backward():
            _, losses = net.training_losses(lq, gt, extras, CharbonnierLoss())
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
        assert not missing, stem


@pytest.mark.parametrize('name', NAMES)
def test_a_few_steps_on_a_real_clip_lower_the_loss(name):
    for stem in variants(name):
        net = trainable(tiny(stem).train())
        lq, gt = real_clip(32, 32)
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)
        losses = []
        for _ in range(6):
            loss = torch.sqrt((net.predict(lq) - gt) ** 2 + 1e-6).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], stem


@pytest.mark.parametrize('name', NAMES)
def test_eval_mode_is_deterministic(name):
    for stem in variants(name):
        net = tiny(stem).eval()
        h, w = VARIANTS[stem]['sizes'][0]
        x = torch.rand(1, 4, 3, h, w)
        with torch.no_grad():
            assert torch.equal(net.predict(x), net.predict(x))
