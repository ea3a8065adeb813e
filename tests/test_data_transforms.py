"""Degradation dispatch, LR/GT crop alignment and augmentation (data/transforms.py)."""
import json
import random

import numpy as np
import pytest
import torch

from data.degradations import bd_downsample, bi_resize, pil_bicubic_resize
from data.io import read_frames
from data.transforms import (
    MANIFEST_NAME,
    augment,
    check_manifest,
    clip_sample,
    degrade,
    manifest,
    paired_crop,
    parse_degradation,
    training_sample,
)
from tests.conftest import require
from utils.errors import DataError
from utils.resize import imresize

DEGRADATIONS = [{'type': 'BI', 'scale': 4}, {'type': 'BD', 'scale': 4, 'sigma': 1.6}, {'type': 'PIL', 'scale': 4},
                {'type': 'BI', 'rounding': 'per_pass'}, {'type': 'BD', 'preset': 'basicvsr'},
                {'type': 'BD', 'preset': 'stdan'}]


def spec_id(spec):
    return '-'.join(str(spec[k]) for k in ('type', 'rounding', 'preset') if k in spec)


@pytest.fixture(scope='module')
def septuplet():
    folder = require('vimeo_septuplet/sequences/00001/0001')
    return read_frames([folder / f'im{i}.png' for i in range(1, 8)])


def test_parse_degradation_defaults_and_errors():
    no_bd = {'preset': None, 'sigma': None, 'kernel_size': None, 'padding': None, 'offset': None}
    assert parse_degradation(None) == {'type': 'BI', 'scale': 4, 'rounding': 'once', **no_bd}
    assert parse_degradation({'type': 'bd'}) == {'type': 'BD', 'scale': 4, 'rounding': None, 'preset': 'duf',
                                                 'sigma': 1.6, 'kernel_size': 13, 'padding': 'reflect', 'offset': 0}
    assert parse_degradation({'type': 'PIL', 'scale': 2, 'sigma': 1.6}) == {'type': 'PIL', 'scale': 2,
                                                                              'rounding': None, **no_bd}
    assert parse_degradation({'type': 'BD', 'kernel_size': 7, 'padding': 'replicate', 'offset': 2})['offset'] == 2
    assert parse_degradation({'type': 'BD', 'kernel_size': 8})['kernel_size'] == 8  # even kernels: MATLAB's centre
    for bad, match in [({'type': 'BX'}, 'BI, BD, PIL'), ({'scale': 2.5}, 'scale'), ({'type': 'BD', 'sigma': 0},
                       'sigma must be positive'), ({'kind': 'BI'}, 'unknown keys'),
                       ({'type': 'BD', 'kernel_size': 0}, 'positive integer'), ({'type': 'BD', 'padding': 'zeros'},
                       'reflect'), ({'type': 'BD', 'offset': 4}, r'\[0, 4\)'),
                       ({'type': 'BI', 'rounding': 'floor'}, 'once, per_pass')]:
        with pytest.raises(ValueError, match=match):
            parse_degradation(bad)


def test_bd_options_reach_the_degradation(septuplet):
    frame = septuplet[0]
    spec = {'type': 'BD', 'sigma': 1.2, 'kernel_size': 7, 'padding': 'replicate', 'offset': 1}
    expected = bd_downsample(frame, 4, 1.2, kernel_size=7, padding='replicate', offset=1)
    assert (degrade(frame, spec) == expected).all()
    assert not (degrade(frame, spec) == degrade(frame, {'type': 'BD'})).all()


def test_degrade_dispatches_to_the_named_function(septuplet):
    frame = septuplet[0]
    assert (degrade(frame, {'type': 'BI'}) == bi_resize(frame, 1 / 4)).all()
    assert (degrade(frame, {'type': 'BI', 'rounding': 'per_pass'}) == imresize(frame, 1 / 4)).all()
    assert (degrade(frame, {'type': 'BD', 'sigma': 1.6}) == bd_downsample(frame, 4, 1.6)).all()
    assert (degrade(frame, {'type': 'PIL'}) == pil_bicubic_resize(frame, 1 / 4)).all()
    assert not (degrade(frame, {'type': 'BI'}) == degrade(frame, {'type': 'BD'})).all()


def test_degrade_16bit_keeps_dtype_and_pil_refuses_it():
    rng = np.random.default_rng(0)
    frame = (rng.random((32, 40, 3)) * 4095).astype(np.uint16)
    for spec in DEGRADATIONS[:2]:
        out = degrade(frame, spec)
        assert out.dtype == np.uint16 and out.shape == (8, 10, 3)
        reference = imresize(frame.astype(np.float64), 1 / 4) if spec['type'] == 'BI' else \
            bd_downsample(frame.astype(np.float64), 4, 1.6)
        assert np.abs(out - reference).max() <= 1  # rounding only
    with pytest.raises(DataError, match='8-bit'):
        degrade(frame, {'type': 'PIL'})
    with pytest.raises(DataError, match='modcropped'):
        degrade(frame[:30], {'type': 'BI'})


def find_crop(full, crop, scale):
    """(y, x) in LR pixels where ``crop`` sits in ``full`` (first frames), at GT positions (s*y, s*x)."""
    size = crop.shape[1]
    for y in range(0, full.shape[1] - size + 1, scale):
        for x in range(0, full.shape[2] - size + 1, scale):
            if np.array_equal(full[0, y:y + size, x:x + size], crop[0]):
                return y // scale, x // scale
    raise AssertionError('GT crop not found at any position aligned to the LR grid')


@pytest.mark.parametrize('spec', DEGRADATIONS, ids=spec_id)
def test_random_crop_equals_crop_of_degraded_frame(septuplet, spec):
    full_lq = np.stack([degrade(f, spec) for f in septuplet[0::2]])
    rng = random.Random(3)
    for _ in range(4):  # random positions (seeded so that one touches a frame border)
        lq, gt = paired_crop(septuplet, 16, 4, rng, degradation=spec)
        y, x = find_crop(septuplet, gt, 4)
        assert (gt == septuplet[:, 4 * y:4 * y + 64, 4 * x:4 * x + 64]).all()
        assert (lq == full_lq[:, y:y + 16, x:x + 16]).all()


@pytest.mark.parametrize('spec', DEGRADATIONS, ids=spec_id)
def test_degrading_the_crop_footprint_matches_away_from_its_borders(septuplet, spec):
    frame = septuplet[3]
    y, x, size = 20, 40, 24  # LR pixels
    full = degrade(frame, spec)[y:y + size, x:x + size].astype(int)
    alone = degrade(frame[4 * y:4 * (y + size), 4 * x:4 * (x + size)], spec).astype(int)
    inner = slice(3, -3)
    assert (full[inner, inner] == alone[inner, inner]).all()
    assert not (full == alone).all()  # the borders do differ: the margin in paired_crop is needed


def test_precomputed_lr_crop_is_aligned(septuplet):
    spec = DEGRADATIONS[0]
    lq_full = np.stack([degrade(f, spec) for f in septuplet[0::2]])
    lq, gt = paired_crop(septuplet, 8, 4, random.Random(0), lq=lq_full)
    y, x = find_crop(septuplet, gt, 4)
    assert (lq == lq_full[:, y:y + 8, x:x + 8]).all()


class Always:
    """An rng whose coin flips all come up heads, to apply every augmentation."""

    def random(self):
        return 0.0


def block_mean(frames, s):
    t, h, w, c = frames.shape
    return frames.reshape(t, h // s, s, w // s, s, c).mean(axis=(2, 4))


def test_augment_applies_the_same_transform_to_lr_and_gt():
    gt = np.random.default_rng(0).random((7, 8, 12, 3))
    lq = block_mean(gt[0::2], 2)  # commutes with flips, transposes and frame order
    lq_aug, gt_aug = augment([lq, gt], True, True, True, Always())
    assert gt_aug.shape == (7, 12, 8, 3)
    assert np.allclose(lq_aug, block_mean(gt_aug[0::2], 2))
    assert np.array_equal(gt_aug[0], gt[6].transpose(1, 0, 2)[::-1, ::-1])  # reversed, flipped, transposed
    unchanged = augment([lq, gt], False, False, False, Always())
    assert np.array_equal(unchanged[1], gt)


def test_training_sample_shapes_types_and_full_frames(septuplet):
    sample = training_sample(septuplet, '00001/0001', None, lq_size=None, use_flip=True, use_rot=True,
                             use_time_reverse=True)
    lq_hw = tuple(sample['lq'].shape[2:])
    assert sample['lq'].shape[:2] == (4, 3) and lq_hw in {(64, 112), (112, 64)}  # may be transposed
    assert sample['gt'].shape == (7, 3, 4 * lq_hw[0], 4 * lq_hw[1])
    assert sample['lq'].dtype == sample['gt'].dtype == torch.float32
    assert 0 <= sample['lq'].min() and sample['gt'].max() <= 1 and sample['key'] == '00001/0001'
    with pytest.raises(DataError, match='00001/0001.*smaller than lq_size 80'):
        training_sample(septuplet, '00001/0001', None, lq_size=80)


def test_training_sample_rejects_lr_of_the_wrong_size(septuplet):
    with pytest.raises(DataError, match='k: LR inputs'):
        training_sample(septuplet, 'k', None, lq=np.zeros((4, 60, 112, 3), np.uint8))


def test_clip_sample_modcrops_and_reports_bit_depth():
    gt = np.full((3, 13, 10, 3), 4000, np.uint16)
    sample = clip_sample('c', gt, ['a', 'b', 'c'], {'type': 'BI', 'scale': 4}, bit_depth=12)
    assert sample['gt'].shape == (3, 12, 8, 3) and sample['lq'].shape == (3, 3, 2, 3)
    assert sample['max_value'] == 4095 and sample['lq'].dtype == np.float32
    assert np.allclose(sample['lq'], 4000 / 4095)
    with pytest.raises(DataError, match='c: LR frames are 2 x'):
        clip_sample('c', gt, 'abc', None, lq=np.zeros((2, 3, 2, 3), np.uint16))


def test_manifest_mismatch_warns(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest({'type': 'BD', 'scale': 4})))
    with pytest.warns(UserWarning, match="degradation='BD' \\(config: 'BI'\\), rounding=None \\(config: 'once'\\), "
                                         "preset='duf' \\(config: None\\), sigma=1.6"):
        check_manifest(tmp_path, {'type': 'BI', 'scale': 4})
    with pytest.warns(UserWarning, match=r'sigma=1.6 \(config: 2.0\); results'):
        check_manifest(tmp_path, {'type': 'BD', 'scale': 4, 'sigma': 2.0})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_manifest(tmp_path, {'type': 'BD', 'scale': 4})
