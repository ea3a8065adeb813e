"""Optical-flow backend and flow_warp: conventions, the official half-pixel quirk, real frames."""
import numpy as np
import pytest
import torch
from PIL import Image

from models.flow import clip_flows, compute_flow, flow_warp, resolve_backend, stack_clip_flows
from tests.conftest import SPECS, require

OPENCV = ('opencv_dis', 'opencv_farneback')


def bilinear_sample(img, xs, ys):
    """Direct bilinear sampling of (c, h, w) at float pixel positions, zeros outside."""
    c, h, w = img.shape
    out = np.zeros((c,) + xs.shape)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(xs - xi)) * (1 - np.abs(ys - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out += np.where(inside, img[:, yi.clip(0, h - 1), xi.clip(0, w - 1)], 0) * weight
    return out


@pytest.mark.parametrize('quirk', [True, False])
def test_flow_warp_matches_direct_sampling(quirk):
    rng = np.random.default_rng(0)
    h, w = 9, 13
    img = rng.random((3, h, w))
    flow = rng.normal(0, 2, (h, w, 2))
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    xs, ys = xs + flow[..., 0], ys + flow[..., 1]
    if quirk:
        # grid normalised with (W - 1), read back by grid_sample with align_corners=False
        xs, ys = xs * w / (w - 1) - 0.5, ys * h / (h - 1) - 0.5
    out = flow_warp(torch.from_numpy(img)[None], torch.from_numpy(flow)[None], align_corners_quirk=quirk)
    np.testing.assert_allclose(out[0].numpy(), bilinear_sample(img, xs, ys), atol=1e-10)


def test_zero_flow_is_identity_only_without_quirk():
    x = torch.rand(1, 2, 6, 8, dtype=torch.float64)
    zero = torch.zeros(1, 6, 8, 2, dtype=torch.float64)
    torch.testing.assert_close(flow_warp(x, zero, align_corners_quirk=False), x)
    assert (flow_warp(x, zero) - x).abs().max() > 1e-3


def test_integer_flow_shifts():
    x = torch.rand(1, 1, 6, 8)
    flow = torch.zeros(1, 6, 8, 2)
    flow[..., 0], flow[..., 1] = 2, -1  # read x at (col + 2, row - 1)
    out = flow_warp(x, flow, align_corners_quirk=False)
    torch.testing.assert_close(out[..., 1:, :6], x[..., :-1, 2:])
    # Reads from outside the frame are zero (up to the rounding of the normalised grid).
    assert out[..., 0, :].abs().max() < 1e-5 and out[..., :, 6:].abs().max() < 1e-5


def lr_frame(path, box=None):
    """PIL bicubic x1/4 of a ground-truth frame (optionally cropped first), uint8 RGB."""
    img = Image.open(path).convert('RGB')
    img = img.crop(box) if box else img
    return np.array(img.resize((img.width // 4, img.height // 4), Image.BICUBIC))


@pytest.mark.parametrize('backend', OPENCV)
def test_known_subpixel_translation(backend):
    """Ground truth shifted by whole pixels before the x1/4 gives an exact sub-pixel LR motion."""
    frame = require('Vid4/GT/calendar/Frame 001.png')
    sx, sy = 6, -5  # img2 sampled at (x + 1.5, y - 1.25) equals img1
    img1 = lr_frame(frame, (40, 40, 680, 520))
    img2 = lr_frame(frame, (40 - sx, 40 - sy, 680 - sx, 520 - sy))
    flow = compute_flow(img1, img2, backend)
    assert flow.shape == img1.shape[:2] + (2,) and flow.dtype == np.float32
    epe = np.linalg.norm(flow[8:-8, 8:-8] - (sx / 4, sy / 4), axis=-1).mean()
    assert epe < 0.2


@pytest.mark.parametrize('backend', OPENCV)
def test_flow_warp_aligns_real_consecutive_frames(backend):
    clip = require('vimeo_septuplet/sequences/00001/0001')
    img1, img2 = lr_frame(clip / 'im1.png'), lr_frame(clip / 'im3.png')
    flow = compute_flow(img1, img2, backend)

    def warp(img, f):
        x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
        out = flow_warp(x, torch.from_numpy(f)[None].double(), align_corners_quirk=False)
        return out[0].permute(1, 2, 0).numpy()

    def error(f):
        inside = warp(np.full_like(img2, 255), f)[..., 0] > 1 - 1e-6
        return np.abs(warp(img2, f) * 255 - img1)[inside].mean()

    assert error(flow) < 0.25 * error(np.zeros_like(flow))  # measured: 0.12 (DIS), 0.15 (Farneback)


def test_uint8_and_float_inputs_agree():
    rng = np.random.default_rng(0)
    img1 = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    img2 = np.roll(img1, 1, axis=1)
    for backend in OPENCV:
        np.testing.assert_array_equal(compute_flow(img1, img2, backend),
                                      compute_flow(img1 / 255., img2 / 255., backend))


def test_tiny_frames():
    rng = np.random.default_rng(0)
    img = rng.random((5, 7, 3))
    assert compute_flow(img, img, 'opencv_dis').shape == (5, 7, 2)


def test_backend_choice():
    try:
        import pyflow
        official = hasattr(pyflow, 'coarse2fine_flow')
    except ImportError:
        official = False
    assert resolve_backend('auto') == ('pyflow' if official else 'c2f')
    with pytest.raises(ValueError, match='unknown flow backend'):
        resolve_backend('raft')


def test_cache(tmp_path):
    rng = np.random.default_rng(0)
    img1, img2 = rng.random((20, 24, 3)), rng.random((20, 24, 3))
    flow = compute_flow(img1, img2, 'opencv_dis', cache_dir=tmp_path)
    assert len(list(tmp_path.glob('*.npy'))) == 1
    np.testing.assert_array_equal(compute_flow(img1, img2, 'opencv_dis', cache_dir=tmp_path), flow)
    compute_flow(img2, img1, 'opencv_dis', cache_dir=tmp_path)
    compute_flow(img1, img2, 'opencv_farneback', cache_dir=tmp_path)
    assert len(list(tmp_path.glob('*.npy'))) == 3


def test_clip_flows_layout():
    rng = np.random.default_rng(0)
    frames = [rng.random((20, 24, 3)) for _ in range(4)]
    forward, backward = clip_flows(frames, 'opencv_dis')
    assert len(forward) == len(backward) == 3
    np.testing.assert_array_equal(forward[1], compute_flow(frames[1], frames[2], 'opencv_dis'))
    np.testing.assert_array_equal(backward[1], compute_flow(frames[2], frames[1], 'opencv_dis'))
    stacked = stack_clip_flows(forward, backward)
    assert stacked.shape == (3, 2, 20, 24, 2)
    np.testing.assert_array_equal(stacked[2, 1], backward[2])


def test_compute_flow_c2f_is_pyflow_on_real_pairs():
    """The toolbox's entry point with backend c2f (uint8 frames in, as the loaders give them) gives
    pyflow's flows on the official-setting cases of ../shared/specs/pyflow/cases.npz."""
    path = SPECS / 'pyflow' / 'cases.npz'
    if not path.exists():
        pytest.skip(f'pyflow reference flows not found: {path} (the shared folder sits beside the repository)')
    cases = np.load(path)
    for i in (0, 6):  # Vimeo 64x112, Jilin-189 80x80
        flow = compute_flow(cases[f'img1_{i}'], cases[f'img2_{i}'], 'c2f')
        epe = np.sqrt(((flow - cases[f'flow_{i}']) ** 2).sum(-1))
        assert flow.dtype == np.float32 and epe.mean() < 1e-4, (i, epe.mean())


def test_c2f_below_pyflows_smallest_size_is_one_line():
    img = np.zeros((16, 16, 3))
    with pytest.raises(ValueError, match='below the smallest size pyflow accepts') as info:
        compute_flow(img, img, 'c2f')
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('spec', [{'type': 'MSTT', 'nf': 16, 'groups': 2, 'front_RBs': 1, 'back_RBs': 1,
                                   'patchsize': [8, 4, 2, 1], 'channel': 32},
                                  {'type': 'STARnet', 'base_filter': 16, 'feat': 8, 'num_stages': 2,
                                   'n_resblock': 1, 'unet_width': 4}])
def test_flow_networks_default_to_pyflows_flows(spec):
    """MSTT and STARnet, built with their defaults, compute the flows of a real LR clip as pyflow would
    (c2f without a pyflow build): predict equals predict given those flows."""
    from models import build_network
    clip = require('Jilin-189/test/001/truth')
    frames = [np.asarray(Image.open(clip / f'0000000{i}.png').convert('RGB').resize((40, 40), Image.BICUBIC))
              for i in (0, 2, 4, 6)]
    torch.manual_seed(0)
    net = build_network(spec).eval()
    assert net.extra_inputs().backend == 'auto' and resolve_backend('auto') in ('c2f', 'pyflow')
    lq = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None].float() / 255
    # from the float32 frames the network sees (their flows differ from the uint8 ones' by ~1e-7 px)
    flows = stack_clip_flows(*clip_flows(list(lq[0].permute(0, 2, 3, 1).numpy()), resolve_backend('auto')))
    with torch.no_grad():
        torch.testing.assert_close(net.predict(lq), net.predict(lq, {'flows': torch.from_numpy(flows)[None]}),
                                   rtol=0, atol=0)
