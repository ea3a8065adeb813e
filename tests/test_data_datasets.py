"""Vimeo-90K, Jilin-189 and frame-folder datasets on the real data and on small broken trees."""
import json
import logging
import random
import shutil

import numpy as np
import pytest
import torch

from data import DATASETS, build_dataset
from data.io import read_frames, read_image, write_image
from data.protocols import Protocol
from data.transforms import MANIFEST_NAME, degrade, manifest
from tests.conftest import require
from tests.support import make_septuplets, smooth_frame
from utils.errors import DataError


def test_registry_holds_every_dataset():
    assert {'Vimeo90KSeptuplet', 'Vimeo90KTest', 'Jilin189Septuplet', 'Jilin189Test', 'FrameFolders',
            'VideoFile', 'VideoSeptuplets'} <= set(DATASETS)
    with pytest.raises(KeyError, match='FrameFolders'):
        build_dataset({'type': 'Vimeo90K'})


def test_vimeo_list_with_missing_folders(tmp_path, caplog):
    root = tmp_path / 'vimeo'
    make_septuplets(root / 'sequences', ['00001/0001', '00001/0002'], [f'im{i}.png' for i in range(1, 8)])
    (root / 'sep_trainlist.txt').write_text('00001/0001\n00009/0001\n00001/0002\n00009/0002\n00009/0003\n')
    with pytest.raises(DataError) as err:
        build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root)})
    message = str(err.value)
    assert 'sep_trainlist.txt: 3 of 5 listed clips not found (first: 00009/0001' in message
    assert 'skip_missing' in message
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root), 'skip_missing': True})
    assert dataset.keys == ['00001/0001', '00001/0002'] and 'skipped 3 of 5' in caplog.text


def test_vimeo_training_on_the_real_septuplets():
    root = require('vimeo_septuplet')
    dataset = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root), 'skip_missing': True,
                             'use_flip': True, 'use_rot': True, 'use_time_reverse': True})
    assert len(dataset) == 8 and dataset.keys[0] == '00001/0001'  # the 8 of 16 in sep_trainlist.txt
    sample = dataset[3]
    assert sample['lq'].shape == (4, 3, 32, 32) and sample['gt'].shape == (7, 3, 128, 128)
    assert sample['lq'].dtype == torch.float32 and 0 <= sample['lq'].min() and sample['gt'].max() <= 1
    assert sample['key'] == '00001/0004'


def test_vimeo_fewer_inputs_takes_a_consecutive_sub_window():
    root = require('vimeo_septuplet')
    dataset = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root), 'skip_missing': True,
                             'n_inputs': 2, 'lq_size': None})
    full = read_frames([root / 'sequences/00001/0001' / f'im{i}.png' for i in range(1, 8)]) / 255
    random.seed(5)
    gt = dataset[0]['gt'].permute(0, 2, 3, 1).numpy()
    assert gt.shape == (3, 256, 448, 3)
    starts = [s for s in range(5) if np.allclose(full[s:s + 3], gt)]
    assert len(starts) == 1
    with pytest.raises(ValueError, match='n_inputs <= 4'):
        build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root), 'skip_missing': True, 'n_inputs': 5})


def test_vimeo_precomputed_lr_equals_on_the_fly(tmp_path):
    root = require('vimeo_septuplet')
    lq_root = tmp_path / 'lr'
    key = '00001/0002'
    for i in range(1, 8):
        gt = read_frames([root / 'sequences' / key / f'im{i}.png'])[0]
        write_image(lq_root / 'sequences' / key / f'im{i}.png', degrade(gt, {'type': 'BI', 'scale': 4}))
    (tmp_path / 'list.txt').write_text(key + '\n')
    (lq_root / MANIFEST_NAME).write_text(json.dumps(manifest({'type': 'BI', 'scale': 4})))
    options = {'type': 'Vimeo90KSeptuplet', 'root': str(root), 'list_file': str(tmp_path / 'list.txt'),
               'use_flip': True, 'use_rot': True}
    fly, disk = build_dataset(options), build_dataset({**options, 'lq_root': str(lq_root)})
    for seed in range(3):
        random.seed(seed)
        a = fly[0]
        random.seed(seed)
        b = disk[0]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
    with pytest.warns(UserWarning, match="degradation='BI' \\(config: 'BD'\\)"):
        build_dataset({**options, 'lq_root': str(lq_root), 'degradation': {'type': 'BD'}})


def test_vimeo_lr_of_the_wrong_size_names_the_clip(tmp_path):
    root = tmp_path / 'vimeo'
    names = [f'im{i}.png' for i in range(1, 8)]
    make_septuplets(root / 'sequences', ['00001/0001'], names)
    make_septuplets(tmp_path / 'lr' / 'sequences', ['00001/0001'], names, size=(15, 24))
    (root / 'sep_trainlist.txt').write_text('00001/0001\n')
    dataset = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root), 'lq_root': str(tmp_path / 'lr'),
                             'lq_size': 8})
    with pytest.raises(DataError, match='00001/0001: LR inputs are 4 x 24x15, expected 4 x 24x16'):
        dataset[0]


def test_vimeo_corrupt_frame_names_the_file(tmp_path):
    root = tmp_path / 'vimeo'
    make_septuplets(root / 'sequences', ['00001/0001'], [f'im{i}.png' for i in range(1, 8)])
    bad = root / 'sequences/00001/0001/im5.png'
    bad.write_bytes(bad.read_bytes()[:100])
    (root / 'sep_trainlist.txt').write_text('00001/0001\n')
    with pytest.raises(DataError, match=str(bad)):
        build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(root)})[0]


def test_vimeo_test_clips_by_official_split():
    root = require('vimeo_septuplet')
    dataset = build_dataset({'type': 'Vimeo90KTest', 'root': str(root),
                             'list_file': 'meta_info/fast_testset.txt', 'skip_missing': True})
    assert dataset.keys == ['00002/0004']
    clip = dataset[0]
    assert clip['name'] == '00002/0004' and clip['frame_names'] == [f'im{i}.png' for i in range(1, 8)]
    assert clip['gt'].shape == (7, 256, 448, 3) and clip['gt'].dtype == np.uint8
    assert clip['lq'].shape == (7, 64, 112, 3) and clip['lq'].dtype == np.float32
    assert clip['max_value'] == 255
    assert np.array_equal(clip['lq'][2] * 255, degrade(clip['gt'][2], None).astype(np.float32))


def test_vid4_frame_folders(tmp_path):
    root = require('Vid4/GT')
    dataset = build_dataset({'type': 'FrameFolders', 'root': str(root)})
    assert [(name, len(gt)) for name, gt, _ in dataset.clips] == [
        ('calendar', 41), ('city', 34), ('foliage', 49), ('walk', 47)]
    names = [f'Frame {i:02d}.png' for i in range(1, 8)]
    for name in names:  # a short copy keeps the test fast; decoding all 171 frames takes seconds
        (tmp_path / 'foliage').mkdir(exist_ok=True)
        shutil.copy(root / 'foliage' / name, tmp_path / 'foliage' / name)
    clip = build_dataset({'type': 'FrameFolders', 'root': str(tmp_path)})[0]
    assert clip['name'] == 'foliage' and clip['frame_names'] == names
    assert clip['gt'].shape == (7, 480, 720, 3) and clip['lq'].shape == (7, 120, 180, 3)
    assert np.array_equal(clip['gt'][6], read_frames([root / 'foliage' / 'Frame 07.png'])[0])


def test_frame_folders_with_lr_folders_and_odd_sizes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 9):
        write_image(tmp_path / 'gt/clipA' / f'f{i}.png', smooth_frame(rng, 30, 45))
        write_image(tmp_path / 'lr/clipA' / f'f{i}.png', smooth_frame(rng, 7, 11))
    clip = build_dataset({'type': 'FrameFolders', 'root': str(tmp_path / 'gt'), 'lq_root': str(tmp_path / 'lr')})[0]
    assert clip['gt'].shape == (8, 28, 44, 3) and clip['lq'].shape == (8, 7, 11, 3)
    (tmp_path / 'lr/clipA/f8.png').unlink()
    with pytest.raises(DataError, match='clipA: 7 LR frames for 8 GT frames'):
        build_dataset({'type': 'FrameFolders', 'root': str(tmp_path / 'gt'), 'lq_root': str(tmp_path / 'lr')})


def test_frame_folders_mismatched_frame_size_names_the_frame(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 8):
        write_image(tmp_path / 'clipB' / f'Frame {i}.png', smooth_frame(rng, 32, 48 if i != 5 else 40))
    dataset = build_dataset({'type': 'FrameFolders', 'root': str(tmp_path)})
    with pytest.raises(DataError) as err:
        dataset[0]
    assert str(err.value).startswith(str(tmp_path / 'clipB' / 'Frame 5.png')) and '\n' not in str(err.value)


def test_frame_folders_clip_list_naming_missing_clip(tmp_path):
    write_image(tmp_path / 'a' / '1.png', np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'clips.txt').write_text('a\nb\n')
    with pytest.raises(DataError, match=r'clips.txt: 1 of 2 listed clips not found \(first: b\)'):
        build_dataset({'type': 'FrameFolders', 'root': str(tmp_path), 'clips': 'clips.txt'})
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='empty: no frames'):
        build_dataset({'type': 'FrameFolders', 'root': str(tmp_path)})


def test_jilin_test_clip_real_and_precomputed_input4(tmp_path):
    root = require('Jilin-189/test')
    clip = build_dataset({'type': 'Jilin189Test', 'root': str(root)})[0]
    assert clip['name'] == '001' and clip['gt'].shape == (7, 640, 640, 3) and clip['lq'].shape == (7, 160, 160, 3)
    copy = tmp_path / 'test'
    shutil.copytree(root, copy)
    for name in clip['frame_names']:
        write_image(copy / '001/input4' / name, np.zeros((160, 160, 3), np.uint8))
    clip = build_dataset({'type': 'Jilin189Test', 'root': str(copy), 'use_input4': True})[0]
    assert clip['lq'].shape == (7, 160, 160, 3) and clip['lq'].max() == 0


def test_jilin_16bit_septuplets_with_zero_based_names(tmp_path):
    names = [f'{i:03d}.png' for i in range(7)]
    make_septuplets(tmp_path, ['001/0001', '002/0001'], names, size=(48, 48), dtype=np.uint16)
    (tmp_path / '189_vime7_train.txt').write_text('001/0001\n002/0001\n')
    dataset = build_dataset({'type': 'Jilin189Septuplet', 'root': str(tmp_path), 'frame_pattern': '{:03d}.png',
                             'frame_start': 0, 'lq_size': 8, 'bit_depth': 16})
    sample = dataset[1]
    assert sample['lq'].shape == (4, 3, 8, 8) and sample['gt'].shape == (7, 3, 32, 32)
    assert sample['gt'].max() <= 1 and sample['gt'].max() > 0.2  # scaled by 65535, not by 255
    with pytest.raises(DataError, match='im1.png'):
        build_dataset({'type': 'Jilin189Septuplet', 'root': str(tmp_path)})[0]


def test_jilin_12bit_test_clip_max_value(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        write_image(tmp_path / '005/truth' / f'{i:08d}.png', (rng.random((16, 16, 3)) * 4095).astype(np.uint16))
    clip = build_dataset({'type': 'Jilin189Test', 'root': str(tmp_path), 'bit_depth': 12})[0]
    assert clip['max_value'] == 4095 and clip['gt'].dtype == np.uint16 and clip['lq'].max() <= 1


def triplet_tree(root, septuplets, keys, list_name, extra_keys=()):
    """A vimeo_triplet tree under ``root``: im1..im3 of real septuplets ``keys``, and a list naming them."""
    for key in keys:
        (root / 'sequences' / key).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(septuplets / key / f'im{i}.png', root / 'sequences' / key / f'im{i}.png')
    (root / list_name).write_text('\n'.join([*keys, *extra_keys]) + '\n')


def test_vimeo_triplets_from_a_triplet_tree(tmp_path):
    """A vimeo_triplet tree (made here from the first three frames of real septuplets): 2 in, 3 out."""
    keys = ['00001/0001', '00001/0002']
    triplet_tree(tmp_path, require('vimeo_septuplet/sequences'), keys, 'tri_trainlist.txt', ['00009/0001'])
    with pytest.raises(DataError, match='00009/0001'):
        build_dataset({'type': 'Vimeo90KTriplet', 'root': str(tmp_path)})
    data = build_dataset({'type': 'Vimeo90KTriplet', 'root': str(tmp_path), 'skip_missing': True, 'lq_size': 0})
    sample = data[1]
    assert len(data) == 2 and sample['lq'].shape == (2, 3, 64, 112) and sample['gt'].shape == (3, 3, 256, 448)
    gt_middle = read_image(tmp_path / 'sequences' / keys[1] / 'im2.png')
    assert torch.equal(sample['gt'][1], torch.from_numpy(gt_middle).permute(2, 0, 1).float() / 255)


def test_vimeo_triplet_test_clips_score_three_frames(tmp_path):
    """Triplet test clips with n_inputs 2: im1 and im3 in, all three scored (STARnet's eval.py setting)."""
    from engine.evaluation import evaluate
    from models import build_network
    triplet_tree(tmp_path, require('vimeo_septuplet/sequences'), ['00002/0004', '00002/0007'], 'tri_testlist.txt')
    clips = build_dataset({'type': 'Vimeo90KTest', 'root': str(tmp_path), 'list_file': 'tri_testlist.txt',
                           'clip_frames': 3, 'degradation': {'type': 'PIL', 'scale': 4}})
    assert clips[0]['gt'].shape == (3, 256, 448, 3) and clips[0]['frame_names'] == ['im1.png', 'im2.png', 'im3.png']
    result = evaluate(build_network({'type': 'BicubicBlend'}), clips, Protocol('septuplet', 2, 2, 0, 0), 'cpu',
                      progress=False)
    assert [r['frames'] for r in result['clips']] == [3, 3] and result['frames'] == 6
    assert result['average']['psnr_y'] == pytest.approx(np.mean([r['psnr_y'] for r in result['clips']]))
    # by output position: im1, im2, im3, each the mean over the two clips of that frame's score
    assert [(r['position'], r['frames']) for r in result['positions']] == [(1, 2), (2, 2), (3, 2)]
    middle = evaluate(build_network({'type': 'BicubicBlend'}), clips, Protocol('triplet_middle', 2, 2, 0, 0), 'cpu',
                      progress=False)
    assert middle['frames'] == 2 and middle['positions'][0]['position'] == 2
    assert middle['average']['psnr_rgb'] == pytest.approx(result['positions'][1]['psnr_rgb'])
    with pytest.raises(DataError, match='00002/0004: 3 frames, protocol septuplet with 4 inputs needs at least 7'):
        evaluate(build_network({'type': 'BicubicBlend'}), clips, Protocol('septuplet', 4, 2, 0, 0), 'cpu',
                 progress=False)
    with pytest.raises(ValueError, match='clip_frames'):
        build_dataset({'type': 'Vimeo90KTest', 'root': str(tmp_path), 'clip_frames': 5})
