"""STARnet-specific tests: the official-output fixture (both variants, x2/x4/x8), checkpoint loading, the
padding inside (U-Net minimum size, x2 even sizes), official quirks, predict and the official training loss.
Generic tests (shapes, gradients, training steps, spec names) run from tests/networks/starnet*.yml.

Expected values are computed here, independently of models/starnet.py: the ImageNet normalisation, the
official flow units and the LR targets (PIL's bicubic on float images) have their own definitions below."""
import contextlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from engine.checkpoint import load_weights
from models.flow import clip_flows, stack_clip_flows
from models import starnet
from models.starnet import STARnet, assemble_clip, denormalise, lr_targets, normalise, official_flow
from tests.support import assert_close_to_scale

# torchvision's ImageNet normalisation, which the official STARnet dataset applies to every frame
MEAN, STD = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


def imagenet(x):
    return (x - MEAN) / STD


def imagenet_inverse(x):
    return x * STD + MEAN


def official_units(flow):
    """(..., h, w, 2) pixel flow -> the official (..., 2, h, w): clip to +-150 px, then -flow / 150
    (dataset.rescale_flow(flow, -1, 1) with its argument order)."""
    return torch.stack([-torch.clamp(flow[..., i], -150, 150) / 150 for i in range(2)], dim=-3)


def pil_bicubic(x, size):
    """(b, 3, H, W) float -> (b, 3, h, w): PIL's bicubic resize of each float plane ('F' mode)."""
    planes = [[np.asarray(Image.fromarray(c.numpy().astype(np.float32), 'F').resize(size[::-1], Image.BICUBIC))
               for c in frame] for frame in x]
    return torch.from_numpy(np.array(planes))


def losses_of(net, lq, gt, extras, **options):
    """STARnet's official objective with ``train.network_loss`` options."""
    net.configure_loss(**options)
    return net.training_losses(lq, gt, extras)

FIXTURE = Path(__file__).parent / 'fixtures' / 'starnet_official.pt'
TINY = dict(base_filter=16, feat=8, num_stages=2, n_resblock=1, unet_width=4)


def seeded_state(state_dict, seed=0):
    """Deterministic weights for the names and shapes of ``state_dict``, the rule the fixture was made with.

    In state_dict order, from one ``torch.Generator`` seeded with ``seed``, u = float64 uniform in [-1, 1):
    weights of dim > 1: u * sqrt(3 / fan_in) with fan_in = numel / shape[0]; PReLU slopes ('act.weight')
    0.25 + 0.1 u; BatchNorm running_var 1 + 0.5 u, gains 1 + 0.1 u; biases and running means 0.1 u;
    integer buffers (num_batches_tracked) kept. Cast to the entry's dtype. Outputs are of unit scale.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in state_dict.items():
        if not value.is_floating_point():
            out[name] = value.clone()
            continue
        u = torch.rand(value.shape, generator=g, dtype=torch.float64) * 2 - 1
        if value.dim() > 1:
            v = u * math.sqrt(3 / (value.numel() // value.shape[0]))
        elif name.endswith('act.weight'):
            v = 0.25 + 0.1 * u
        elif name.endswith('running_var'):
            v = 1 + 0.5 * u
        elif name.endswith('weight'):
            v = 1 + 0.1 * u
        else:
            v = 0.1 * u
        out[name] = v.to(value.dtype)
    return out


def seeded_inputs(b, h, w, seed=1, flow_scale=0.02):
    """Deterministic official inputs (t_im1, t_im2, t_flow_f, t_flow_b): frames uniform in [0, 1) then
    roughly normalised ((x - 0.45) / 0.226), flows a float64 normal (2b, 2, 4, 4) grid times
    ``flow_scale`` (about 3 px in official units), bilinearly resized (align_corners=False) to (h, w)."""
    g = torch.Generator().manual_seed(seed)
    ims = (torch.rand((2, b, 3, h, w), generator=g, dtype=torch.float64).float() - 0.45) / 0.226
    grid = torch.randn((2 * b, 2, 4, 4), generator=g, dtype=torch.float64).float() * flow_scale
    flows = F.interpolate(grid, size=(h, w), mode='bilinear', align_corners=False).view(2, b, 2, h, w)
    return ims[0], ims[1], flows[0], flows[1]


def seeded_net(seed=0, **kw):
    net = STARnet(**kw).eval()
    net.load_state_dict(seeded_state(net.state_dict(), seed), strict=True)
    return net


def flat(outputs):
    return [t for x in outputs for t in (x if isinstance(x, list) else [x])]


def test_official_fixture_star():
    """Plain STAR (``fbpn_sr_rbpn_v4.Net``) at x4, x2, x8 against the official outputs.

    tests/fixtures/starnet_official.pt, made by running alterzero/STARnet@cf7a0bc's class on CPU (float32,
    torch 2.15, eval mode, ``forward(..., train=True)``: both stages of all four outputs) with
    ``seeded_state`` weights and ``seeded_inputs``, in a reduced configuration (base_filter 32, feat 16,
    num_stages 3, n_resblock 2; the official constructor takes these). Measured difference: 0 (bit-exact),
    also for the full configuration (256, 64, 3, 5) at 32x32, not stored (1.7 s per forward).
    """
    fixture = torch.load(FIXTURE, weights_only=True)
    for case in fixture['star']:
        net = seeded_net(fixture['weight_seed'], **case['config'], flow_refinement=False)
        with torch.no_grad():
            out = flat(net(*seeded_inputs(*case['size'], seed=fixture['input_seed']), train=True))
        assert len(out) == len(case['outputs']) == 8
        for got, want in zip(out, case['outputs']):
            assert_close_to_scale(got, want)


def test_official_fixture_flow_refined():
    """STAR with flow refinement (``fbpn_sr_rbpn_v4_ref.Net``): the reduced STAR above with the official
    full-width U-Net (53.5 M parameters, fixed in the official), LR 32x36 (odd sizes inside the U-Net),
    ``forward(..., train=True)``: every 4th pixel of the six HR outputs, the two LR outputs and the two
    refined flows in full. Measured difference: 0 (also for the full configuration at 32x32)."""
    fixture = torch.load(FIXTURE, weights_only=True)
    case = fixture['star_ref']
    net = seeded_net(fixture['weight_seed'], **case['config'])
    with torch.no_grad():
        out = flat(net(*seeded_inputs(*case['size'], seed=fixture['input_seed']), train=True))
    stride = case['stride']
    hr = [x[..., ::stride, ::stride] for x in out[:6]]
    for got, want in zip(hr + out[6:], case['hr'] + case['lr'] + case['flows']):
        assert_close_to_scale(got, want)


def test_official_checkpoints_load_with_module_prefix():
    """Official .pth files come from nn.DataParallel ('module.' keys); load_weights strips the prefix. A plain
    STAR checkpoint is the ``model`` part of the flow-refined network (STAR_V4_RBPN.pth is loaded that way)."""
    ref = STARnet(**TINY)
    state = seeded_state(ref.state_dict())
    load_weights(ref, {f'module.{k}': v for k, v in state.items()}, 'official.pth')
    torch.testing.assert_close(ref.flow_net.outc.conv.weight, state['flow_net.outc.conv.weight'])
    plain = STARnet(**TINY, flow_refinement=False)
    plain.load_state_dict({k[len('model.'):]: v for k, v in state.items() if k.startswith('model.')}, strict=True)


def test_nothing_is_loaded_and_init_is_kaiming():
    """The official constructor loads pretrained RBPN weights by default; here every STAR conv is
    Kaiming-normal with zero bias (the official init loop) and the U-Net keeps PyTorch's default init."""
    torch.manual_seed(0)
    net = STARnet(**TINY)
    assert net.model.motion_feat.conv.bias.abs().max() == 0
    assert net.model.RBPN.DBPN.up1.up_conv1.deconv.bias.abs().max() == 0
    assert net.flow_net.inc.conv.conv[0].bias.abs().max() > 0


def test_unet_pads_small_frames_to_32():
    """The U-Net needs h, w >= 32: smaller inputs are replicate-padded inside, which equals padding outside."""
    net = seeded_net(**TINY)
    flow, im_a, im_b = torch.randn(1, 2, 20, 24) * 0.02, torch.randn(1, 3, 20, 24), torch.randn(1, 3, 20, 24)
    with torch.no_grad():
        refined = net.refine_flow(flow, im_a, im_b)
        padded = F.pad(torch.cat((flow, im_a, im_b), dim=1), (0, 8, 0, 12), mode='replicate')
        ref = flow + net.flow_net(padded)[..., :20, :24]
    torch.testing.assert_close(refined, ref, rtol=0, atol=0)


def test_sizes_that_need_no_padding_run_unpadded():
    net = seeded_net(**TINY)
    shapes = []
    net.flow_net.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape[-2:])))
    with torch.no_grad():
        net(*seeded_inputs(1, 33, 47), train=False)
    assert shapes == [(33, 47), (33, 47)]


def test_training_a_single_small_clip_works():
    """The official fails in training on one 32x32 pair (1x1 bottleneck: BatchNorm needs more than one
    value per channel); here the width is padded to 64 then, and only then."""
    net = seeded_net(**TINY).train()
    shapes = []
    net.flow_net.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape)))
    net(*seeded_inputs(1, 32, 32))
    net(*seeded_inputs(2, 32, 32))
    net.eval()
    with torch.no_grad():
        net(*seeded_inputs(1, 32, 32), train=False)
    assert [s[-2:] for s in shapes] == [(32, 64)] * 2 + [(32, 32)] * 4


def test_x2_pads_odd_sizes_to_even():
    """At x2 the pyramid module halves 2h twice, so odd LR sizes fail officially; they are padded inside."""
    net = seeded_net(**TINY, scale_factor=2, flow_refinement=False)
    inputs = seeded_inputs(1, 7, 9)
    with torch.no_grad():
        out = net(*inputs, train=False)
        ref = net(*(F.pad(x, (0, 1, 0, 1), mode='replicate') for x in inputs), train=False)
    assert [tuple(x.shape[-2:]) for x in out] == [(14, 18)] * 3 + [(7, 9)]
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want[..., :got.shape[-2], :got.shape[-1]], rtol=0, atol=0)


def test_unused_rbpn_branch_is_frozen_and_skipped():
    """``RBPN.res_feat3`` prepares a next neighbour that STAR never has: kept for checkpoints, not run, frozen."""
    net = STARnet(**TINY)
    calls = []
    net.model.RBPN.res_feat3.register_forward_hook(lambda *args: calls.append(1))
    net(*seeded_inputs(1, 8, 8))
    assert not calls
    assert not any(p.requires_grad for p in net.model.RBPN.res_feat3.parameters())
    frozen = [k for k, p in net.named_parameters() if not p.requires_grad]
    assert frozen and all(k.startswith('model.RBPN.res_feat3.') for k in frozen)


def test_flow_refinement_residual_is_positive():
    """The U-Net ends in a sigmoid: the refined flow is always the input flow plus something in (0, 1)."""
    net = STARnet(**TINY).eval()
    inputs = seeded_inputs(1, 32, 32)
    with torch.no_grad():
        refined = net(*inputs, train=True)[4]
    residual = refined - inputs[2]
    assert residual.min() > 0 and residual.max() < 1


def test_official_flow_units():
    flow = torch.tensor([[[[3., -1.5], [200., -400.]]]])  # (1, 1, 2, 2): two pixels' (u, v)
    out = official_flow(flow)
    assert out.shape == (1, 2, 1, 2)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-0.02, 0.01]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([-1., 1.]))
    x = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(denormalise(normalise(x)), x)


def clip_and_flows(b, n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand((b, n, 3, h, w), generator=g)
    flows = torch.randn((b, n - 1, 2, h, w, 2), generator=g)
    return lq, flows


def test_adapter_two_frames_is_one_official_call():
    net = seeded_net(**TINY)
    lq, flows = clip_and_flows(2, 2, 12, 16)
    with torch.no_grad():
        out = net.predict(lq, {'flows': flows})
        ht, h1, h2, _ = net(imagenet(lq[:, 0]), imagenet(lq[:, 1]), official_units(flows[:, 0, 0]),
                            official_units(flows[:, 0, 1]), train=False)
    assert out.shape == (2, 3, 3, 48, 64)
    torch.testing.assert_close(out, imagenet_inverse(torch.stack((h1, ht, h2), dim=1)), rtol=0, atol=1e-6)


def test_adapter_four_frames_averages_the_two_estimates_of_inner_frames():
    net = seeded_net(**TINY)
    lq, flows = clip_and_flows(1, 4, 12, 16)
    with torch.no_grad():
        out = net.predict(lq, {'flows': flows})
        pairs = [[imagenet_inverse(x) for x in net(imagenet(lq[:, i]), imagenet(lq[:, i + 1]),
                                                   official_units(flows[:, i, 0]), official_units(flows[:, i, 1]),
                                                   train=False)[:3]] for i in range(3)]
    assert out.shape == (1, 7, 3, 48, 64)
    expected = [pairs[0][1], pairs[0][0], (pairs[0][2] + pairs[1][1]) / 2, pairs[1][0],
                (pairs[1][2] + pairs[2][1]) / 2, pairs[2][0], pairs[2][2]]
    for i, frame in enumerate(expected):
        torch.testing.assert_close(out[:, i], frame, rtol=0, atol=1e-5, msg=f'frame {i}')


def test_assemble_clip_order():
    ht, h1, h2 = (torch.full((1, 2, 1, 1, 1), v) + torch.arange(2.).view(1, 2, 1, 1, 1) for v in (10., 0., 1.))
    # pair i: h1 = i, ht = 10 + i, h2 = 1 + i
    assert assemble_clip(ht, h1, h2).flatten().tolist() == [0., 10., 1., 11., 2.]


def test_adapter_computes_flows_when_the_batch_has_none():
    net = seeded_net(**TINY, flow_backend='opencv_dis')
    lq = torch.rand(1, 3, 3, 16, 16)
    flows = torch.from_numpy(stack_clip_flows(*clip_flows(list(lq[0].permute(0, 2, 3, 1).numpy()), 'opencv_dis')))
    with torch.no_grad():
        torch.testing.assert_close(net.predict(lq), net.predict(lq, {'flows': flows[None]}), rtol=0, atol=0)


def test_lr_targets_are_pil_bicubic_without_rounding():
    """The official LR middle frame is PIL's bicubic downscale; ours is the same filter in torch."""
    gt = torch.rand(2, 3, 32, 40)
    assert_close_to_scale(lr_targets(gt, (8, 10)), pil_bicubic(gt, (8, 10)), rel=1e-5)


def test_official_loss_pixel_term_follows_main_py():
    """Two frames = one official sample: 0.4/1.0 stage weights, target weights ht 1, h1 0.5, h2 0.5, lr 1."""
    net = seeded_net(**TINY, flow_refinement=False)
    lq, flows = clip_and_flows(1, 2, 8, 8)
    gt = torch.rand(1, 3, 3, 32, 32)
    with torch.no_grad():
        pred, losses = losses_of(net, lq, gt, {'flows': flows})
        outs = net(imagenet(lq[:, 0]), imagenet(lq[:, 1]), official_units(flows[:, 0, 0]),
                   official_units(flows[:, 0, 1]), train=True)
    targets = [imagenet(gt[:, 1]), imagenet(gt[:, 0]), imagenet(gt[:, 2]), imagenet(pil_bicubic(gt[:, 1], (8, 8)))]
    expected = sum(w * (0.4 * F.l1_loss(stages[0], t) + F.l1_loss(stages[1], t))
                   for w, stages, t in zip((1., .5, .5, 1.), outs, targets))
    assert set(losses) == {'pixel'}
    torch.testing.assert_close(losses['pixel'], expected, rtol=1e-5, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(pred, net.predict(lq, {'flows': flows}))
    with torch.no_grad():
        _, only_lr = losses_of(net, lq, gt, {'flows': flows}, train_obj='STAR-T-LR')
    expected_lr = 0.4 * F.l1_loss(outs[3][0], targets[3]) + F.l1_loss(outs[3][1], targets[3])
    torch.testing.assert_close(only_lr['pixel'], expected_lr, rtol=1e-5, atol=0)


def test_official_loss_trains_every_parameter():
    """With the official losses (deep supervision, LR output, flow term) every trainable parameter gets a
    gradient, including the LR and RBPN output heads, which the 7-frame output alone does not reach."""
    net = STARnet(**TINY, flow_backend='opencv_dis').train()
    lq, gt = torch.rand(1, 4, 3, 32, 32), torch.rand(1, 7, 3, 128, 128)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).requires_grad_(False)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(2):  # the second pass checks gradients after one step, as the generic test does
        opt.zero_grad()
        pred, losses = losses_of(net, lq, gt, {}, feature_extractor=features)
        assert set(losses) == {'pixel', 'feature', 'flow'} and pred.shape == gt.shape
        sum(losses.values()).backward()
        opt.step()
    missing = [k for k, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing


def test_official_loss_flow_targets_from_the_batch():
    net = seeded_net(**TINY)
    lq, flows = clip_and_flows(1, 3, 8, 8)
    gt = torch.rand(1, 5, 3, 32, 32)
    flow_gt = torch.zeros(1, 2, 2, 2, 8, 8)
    with torch.no_grad():
        _, losses = losses_of(net, lq, gt, {'flows': flows, 'flow_targets': flow_gt})
        refined_f = net.refine_flow(official_units(flows[:, :, 0].flatten(0, 1)), imagenet(lq[:, :-1].flatten(0, 1)),
                                    imagenet(lq[:, 1:].flatten(0, 1)))
        refined_b = net.refine_flow(official_units(flows[:, :, 1].flatten(0, 1)), imagenet(lq[:, 1:].flatten(0, 1)),
                                    imagenet(lq[:, :-1].flatten(0, 1)))
    torch.testing.assert_close(losses['flow'], 0.1 * (refined_f.square().mean() + refined_b.square().mean()))


@pytest.mark.parametrize('scale', [2, 8])
def test_other_scales_build_and_run(scale):
    net = STARnet(**TINY, scale_factor=scale).eval()
    with torch.no_grad():
        out = net.predict(torch.rand(1, 2, 3, 9, 11), {'flows': torch.zeros(1, 1, 2, 9, 11, 2)})
    assert out.shape == (1, 3, 3, 9 * scale, 11 * scale)
    with pytest.raises(ValueError, match='scale_factor'):
        STARnet(**TINY, scale_factor=3)


def test_single_frame_is_rejected():
    with pytest.raises(ValueError, match='at least 2 frames'):
        STARnet(**TINY).predict(torch.rand(1, 1, 3, 8, 8), {'flows': torch.zeros(1, 0, 2, 8, 8, 2)})


def test_perceptual_option_builds_the_vgg_once_and_fails_clearly(monkeypatch):
    import models.starnet as starnet
    built = []

    def fake_vgg():
        built.append(1)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).requires_grad_(False)

    monkeypatch.setattr(starnet, '_PERCEPTUAL', {})
    monkeypatch.setattr(starnet, 'vgg19_features', fake_vgg)
    net = STARnet(**TINY, flow_refinement=False, flow_backend='opencv_dis')
    lq, gt = torch.rand(1, 2, 3, 16, 16), torch.rand(1, 3, 3, 64, 64)
    for _ in range(2):
        _, losses = losses_of(net, lq, gt, {}, perceptual=True)
        assert 'feature' in losses and torch.isfinite(losses['feature'])
    assert built == [1]
    assert 'loss_options' not in dict(net.named_modules()) and not any('vgg' in k for k in net.state_dict())

    def offline():
        raise OSError('no network')

    monkeypatch.setattr(starnet, '_PERCEPTUAL', {})
    monkeypatch.setattr(starnet, 'vgg19_features', offline)
    with pytest.raises(ValueError, match='perceptual: the VGG19 ImageNet weights could not be loaded'):
        net.configure_loss(perceptual=True)


def test_training_step_recomputes_activations_without_changing_a_gradient(monkeypatch):
    """STARnet's forward keeps its PReLU outputs and concatenations out of the memory held for backward
    (``recomputed_outputs``); the gradients are bitwise those of the plain graph."""
    def gradients():
        net = seeded_net(**TINY).train()
        outputs = net(*seeded_inputs(2, 32, 32), train=True)
        sum(o.abs().mean() for stages in outputs[:4] for o in stages).backward()
        return {k: p.grad for k, p in net.named_parameters() if p.grad is not None}

    recomputed = gradients()
    monkeypatch.setattr(starnet, 'recomputed_outputs', contextlib.nullcontext)
    plain = gradients()
    assert recomputed.keys() == plain.keys() and len(plain) > 100
    for k in plain:
        assert torch.equal(recomputed[k], plain[k]), k
