"""Any scale, any time: the any-scale training samples (Vimeo90KAnyScale, utils/coords.py), MATLAB bicubic
to an exact size, time factors other than 2 in the protocols, the baseline's render(), and test.factors."""
import logging
import math
import random

import numpy as np
import pytest
import torch
import yaml

import models.temporal_liif  # noqa: F401  (registers TemporalLIIF)
from data import build_dataset
from data.io import read_image
from data.protocols import Protocol, centre_window, make_windows
from data.transforms import resize_to
from engine.evaluation import evaluate, score_frame
from models.base import VideoNetwork
from models.baseline import BicubicBlend
from models.temporal_liif import TemporalLIIF
from tests.conftest import SHARED_DATA, require
from utils.coords import pixel_queries
from utils.errors import DataError, OptionsError
from utils.resize import imresize, imresize_torch

VIMEO = SHARED_DATA / 'vimeo_septuplet'


def tiny_liif():
    torch.manual_seed(0)
    return TemporalLIIF(n_resblocks=1, n_feats=4, hidden_list=[8, 8]).eval()


def pixel_of(coord, n):
    """Invert the make_coord convention: index i of n cells has centre -1 + (2i + 1) / n."""
    return torch.round(((coord + 1) * n - 1) / 2).long()


# ------------------------------------------------------------------------------------------- MATLAB resize

def test_exact_output_size_where_the_scale_form_overshoots():
    """imresize(img, [h w]) gives exactly h x w; the factor h / H times H can round above h, and
    ceil(H * (h / H)) then asks for one pixel more (35 -> 29: 35 * (29 / 35) = 29.000000000000004)."""
    assert math.ceil(35 * (29 / 35)) == 30
    x = torch.rand(3, 35, 35, dtype=torch.float64)
    assert imresize_torch(x, size=(29, 29)).shape == (3, 29, 29)
    # Away from that rounding case the two forms are the same resize (numpy reference, MATLAB arithmetic).
    img = np.random.default_rng(0).random((48, 40, 3))
    np.testing.assert_allclose(imresize_torch(torch.from_numpy(img.transpose(2, 0, 1)), size=(36, 30))
                               .numpy().transpose(1, 2, 0), imresize(img, 0.75), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match='exactly one of scale and size'):
        imresize_torch(x, 0.5, size=(2, 2))
    with pytest.raises(ValueError, match='size must be'):
        imresize_torch(x, size=(0, 3))


def test_resize_to_an_integer_factor_is_the_bi_degradation():
    require(VIMEO)
    frame = read_image(VIMEO / 'sequences' / '00001' / '0001' / 'im1.png')
    from data.transforms import degrade
    assert np.array_equal(resize_to(frame, (64, 112)), degrade(frame, {'type': 'BI', 'scale': 4}))
    # PIL form: what PIL's own resize gives
    from PIL import Image
    expected = np.asarray(Image.fromarray(frame).resize((150, 85), Image.Resampling.BICUBIC))
    assert np.array_equal(resize_to(frame, (85, 150), 'PIL'), expected)


# --------------------------------------------------------------------------------------------- queries

def test_pixel_queries_address_their_pixels():
    gt = torch.rand(3, 3, 10, 13)
    coord, cell, values = pixel_queries(gt, [0, 0.5, 1], n_inputs=2, sample_q=200, rng=np.random.default_rng(1))
    assert coord.shape == cell.shape == values.shape == (200, 3)
    # t of instant tau with 2 inputs: -1 + (2 tau + 1) / 2 -> -0.5, 0, 0.5
    frame = torch.round((coord[:, 0] + 0.5) * 2).long()
    assert set(frame.tolist()) == {0, 1, 2}
    rows, cols = pixel_of(coord[:, 1], 10), pixel_of(coord[:, 2], 13)
    assert torch.equal(values, gt[frame, :, rows, cols])
    assert len(set(zip(frame.tolist(), rows.tolist(), cols.tolist()))) == 200  # without replacement
    assert torch.equal(cell[0], torch.tensor([2.0, 2 / 10, 2 / 13]))
    everything = pixel_queries(gt, [0, 0.5, 1], 2)[2]
    assert torch.equal(everything, gt.permute(0, 2, 3, 1).reshape(-1, 3))
    with pytest.raises(DataError, match='clip7: sample_q=391 queries asked of 3 GT frames of 13x10'):
        pixel_queries(gt, [0, 0.5, 1], 2, sample_q=391, key='clip7')


def test_query_answers_equal_the_rendered_video():
    """The training call (queries of utils/coords.py through the adapter) and render() agree pixel for pixel:
    the sample coordinates follow the network's convention."""
    net = tiny_liif()
    lq, gt = torch.rand(1, 4, 3, 6, 5), torch.zeros(7, 3, 15, 11)
    coord, cell, _ = pixel_queries(gt, [k / 2 for k in range(7)], 4, sample_q=300, rng=np.random.default_rng(2))
    with torch.no_grad():
        answers = net.predict(lq, {'coord': coord[None], 'cell': cell[None]})[0]
        video = net.render(lq, [k / 2 for k in range(7)], (15, 11))[0]
    frame = torch.round((coord[:, 0] + 1) * 4 - 1).long()  # t = -1 + (2 tau + 1) / 4 and frame = 2 tau
    expected = video[frame, :, pixel_of(coord[:, 1], 15), pixel_of(coord[:, 2], 11)]
    torch.testing.assert_close(answers, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------- the dataset

def any_scale(**kwargs):
    require(VIMEO)
    spec = {'type': 'Vimeo90KAnyScale', 'root': str(VIMEO), 'skip_missing': True, 'lq_size': 16, 'sample_q': 500,
            **kwargs}
    logger = logging.getLogger('data.vimeo')
    level = logger.level
    logger.setLevel(logging.ERROR)  # not the warning that 64,604 listed clips are not in the copy
    try:
        return build_dataset(spec)
    finally:
        logger.setLevel(level)


def seeded(dataset, index, seed):
    random.seed(seed)
    np.random.seed(seed)
    return dataset[index]


def test_any_scale_samples_hold_the_gt_pixels_they_name():
    dataset = any_scale(scale_min=2.0, scale_max=2.0)  # GT patch of 32
    sample = seeded(dataset, 0, 5)
    assert sample['lq'].shape == (4, 3, 16, 16) and sample['gt'].shape == (500, 3)
    assert torch.equal(sample['cell'][0], torch.tensor([2.0, 2 / 32, 2 / 32]))
    # Find the patch in the real frames: the queried colours are GT pixels of im1..im7 at the patch offset.
    frames = np.stack([read_image(VIMEO / 'sequences' / sample['key'] / f'im{i}.png') for i in range(1, 8)])
    frame = torch.round((sample['coord'][:, 0] + 0.75) * 4).long()  # t = -1 + (2 (k / 2) + 1) / 4
    rows, cols = pixel_of(sample['coord'][:, 1], 32).numpy(), pixel_of(sample['coord'][:, 2], 32).numpy()
    gt = np.round(sample['gt'].numpy() * 255).astype(np.uint8)
    first = frames[frame[0], :, :, :]
    candidates = [(y, x) for y in range(256 - 31) for x in range(448 - 31)
                  if np.array_equal(first[y + rows[0], x + cols[0]], gt[0])]
    matches = [(y, x) for y, x in candidates if np.array_equal(frames[frame, y + rows, x + cols], gt)]
    assert len(matches) == 1
    y, x = matches[0]
    # ... and the LR inputs are that patch of frames 1, 3, 5, 7 resized by MATLAB bicubic to 16 x 16.
    expected = np.stack([resize_to(np.ascontiguousarray(f[y:y + 32, x:x + 32]), (16, 16)) for f in frames[0::2]])
    assert np.array_equal(np.round(sample['lq'].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), expected)


def test_any_scale_samples_vary_in_scale_and_repeat_with_the_seed():
    dataset = any_scale(use_flip=True, use_rot=True, use_time_reverse=True)
    a, b = seeded(dataset, 3, 11), seeded(dataset, 3, 11)
    for key in ('lq', 'coord', 'cell', 'gt'):
        assert torch.equal(a[key], b[key])
    sides = {round(2 / float(seeded(dataset, 3, seed)['cell'][0, 1])) for seed in range(12)}
    assert len(sides) > 4 and min(sides) >= 16 and max(sides) <= 64
    batch = torch.utils.data.default_collate([seeded(dataset, i, i) for i in range(3)])  # fixed LR: batches
    assert batch['lq'].shape == (3, 4, 3, 16, 16) and batch['coord'].shape == (3, 500, 3)


def test_any_scale_options_are_checked():
    with pytest.raises(ValueError, match='BD'):
        any_scale(degradation={'type': 'BD'})
    with pytest.raises(ValueError, match='leave it out'):
        any_scale(degradation={'type': 'BI', 'scale': 4})
    with pytest.raises(ValueError, match=r'sample_q must be an integer in \[1, 1792\]'):
        any_scale(sample_q=5000)
    with pytest.raises(ValueError, match='scale_min <= scale_max'):
        any_scale(scale_min=3.0, scale_max=2.0)
    with pytest.raises(DataError, match='smaller than the GT patch'):
        seeded(any_scale(lq_size=100, scale_min=3.0, scale_max=3.0, sample_q=100), 0, 0)


def test_a_few_steps_on_any_scale_samples_lower_the_loss():
    dataset = any_scale(sample_q=256)
    net = tiny_liif().train()
    batch = torch.utils.data.default_collate([seeded(dataset, i, i) for i in range(4)])
    extras = {'coord': batch['coord'], 'cell': batch['cell']}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.l1_loss(net.predict(batch['lq'], extras), batch['gt'])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# ------------------------------------------------------------------------------- time factors, baseline

def test_time_factor_windows():
    windows = make_windows(30, 'window7', time_factor=4)  # windows of 13, inputs every 4th frame
    assert windows[0].inputs == (0, 4, 8, 12) and windows[0].outputs == tuple(range(13))
    assert windows[0].times == tuple(i / 4 for i in range(13))
    assert windows[1].inputs == (12, 16, 20, 24) and windows[-1].inputs == (17, 21, 25, 29)
    scored = [w.outputs[p] for w in windows for p in w.scored]
    assert sorted(scored) == list(range(30))
    assert make_windows(13, 'window7')[0].times is None  # factor 2: the fixed networks' windows, unchanged
    with pytest.raises(DataError, match='time factor 4 needs at least 13'):
        make_windows(12, 'window7', clip='walk', time_factor=4)
    window = centre_window(5)
    assert window.inputs == (0, 1, 2, 3, 4) and window.times == (2.0,)


def test_baseline_upscales_with_matlab_bicubic_and_blends_linearly():
    lq = torch.rand(1, 4, 3, 8, 6, dtype=torch.float64)
    net = BicubicBlend(4)
    # the numpy reference resize (MATLAB's arithmetic) of each input, blended by hand
    up = [imresize(f.permute(1, 2, 0).numpy(), 4) for f in lq[0]]
    for factor, out in ((2, net(lq)), (4, BicubicBlend(4, time_factor=4)(lq))):
        assert out.shape == (1, 3 * factor + 1, 3, 32, 24)
        for i, frame in enumerate(out[0]):
            k, a = divmod(i, factor)
            expected = up[k] if a == 0 else (1 - a / factor) * up[k] + (a / factor) * up[k + 1]
            np.testing.assert_allclose(frame.permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-12)
    assert torch.equal(net.render(lq, [0, 1.5, 3], (32, 24)), net(lq)[:, [0, 3, 6]])  # size given = x4
    flat = torch.stack([torch.full((3, 5, 5), v) for v in (0.2, 0.6)])[None]
    out = net.render(flat, [0, 0.25, 1], (10, 15))
    torch.testing.assert_close(out[0, :, :, 2:-2, 2:-2].mean((1, 2, 3)), torch.tensor([0.2, 0.3, 0.6]))
    with pytest.raises(ValueError, match='instant 1.5 outside'):
        net.render(flat, [1.5])


def clip(frames=13, size=(24, 20), scale=2):
    """A test clip in the dataset format: real Vimeo frames cut to 24 x 20, LR by BI."""
    require(VIMEO)
    folders = sorted((VIMEO / 'sequences' / '00001').iterdir())
    gt = np.stack([read_image(folders[i // 7] / f'im{i % 7 + 1}.png')[:size[0], :size[1]] for i in range(frames)])
    lq = np.stack([resize_to(f, (size[0] // scale, size[1] // scale)) for f in gt]).astype(np.float32) / 255
    return {'name': 'vimeo', 'gt': gt, 'lq': lq, 'max_value': 255, 'frame_names': [f'{i}.png' for i in range(frames)]}


def test_evaluate_at_other_time_factors_and_the_fixed_networks_refuse():
    data = [clip()]
    time4 = Protocol('window7', n_inputs=4, time_factor=4, crop_border=0, max_clips=0)
    result = evaluate(BicubicBlend(2), data, time4, 'cpu', progress=False)
    assert result['frames'] == 13
    liif = evaluate(tiny_liif(), data, time4, 'cpu', progress=False)
    assert liif['frames'] == 13 and liif['average']['psnr_y'] < result['average']['psnr_y']  # untrained

    class Fixed(VideoNetwork):
        scale = 2

        def forward(self, lq):
            return lq.repeat_interleave(2, 1)[:, :-1].repeat_interleave(2, -1).repeat_interleave(2, -2)

    window7 = Protocol('window7', n_inputs=4, time_factor=2, crop_border=0, max_clips=0)
    assert evaluate(Fixed(), data, window7, 'cpu', progress=False)['frames'] == 13
    with pytest.raises(OptionsError, match='protocol window7 time x4: Fixed makes 2x the frames in time only'):
        evaluate(Fixed(), data, time4, 'cpu', progress=False)
    centre = {'name': 's2', 'gt': data[0]['gt'][6:7], 'lq': data[0]['lq'][4:9], 'max_value': 255,
              'frame_names': ['t.png']}
    row = evaluate(BicubicBlend(), [centre], Protocol('centre', 4, 2, 0, 0), 'cpu', progress=False)['clips'][0]
    # the centre of 5 inputs is input 2 (clip frame 6): the baseline's answer is that frame upscaled
    expected = score_frame(imresize(data[0]['lq'][6].astype(np.float64), 2), data[0]['gt'][6], 255)
    assert row['frames'] == 1
    for metric in ('psnr_y', 'ssim_rgb'):
        assert row[metric] == pytest.approx(expected[metric], abs=1e-9)


def test_test_py_factor_table(tmp_path):
    """test.factors: one table, the network and the baseline at each [space, time] pair. With the baseline as
    the network the two rows of each pair must agree exactly."""
    from test import main as test_main
    options = {'name': 'factors', 'experiments_root': str(tmp_path), 'device': 'cpu',
               'network': {'type': 'BicubicBlend'},
               'data': {'test': {'type': 'VideoFile', 'paths': ['demo:carphone'], 'degradation': {'type': 'BI'},
                                 'max_frames': 13, 'max_side': 48}},
               'test': {'factors': [[2, 2], [3, 4]], 'results_dir': str(tmp_path / 'out')}}
    path = tmp_path / 'factors.yml'
    path.write_text(yaml.safe_dump(options))
    assert test_main(['-opt', str(path)]) == 0
    lines = (tmp_path / 'out' / 'factors_factors.csv').read_text().splitlines()
    assert lines[0] == 'space,time,method,frames,psnr_y,ssim_y,psnr_rgb,ssim_rgb'
    rows = [line.split(',') for line in lines[1:]]
    assert [r[:3] for r in rows] == [['2', '2', 'BicubicBlend']] * 2 + [['3', '4', 'BicubicBlend']] * 2
    assert rows[0][3:] == rows[1][3:] and rows[2][3:] == rows[3][3:] and rows[0][3:] != rows[2][3:]
    assert rows[0][3] == '13' and rows[2][3] == '13'
