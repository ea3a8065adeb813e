"""Inference without ground truth: a video or a folder of frames in, PNG frames and/or an MP4 out.

    python test.py --checkpoint experiments/demo/checkpoints/best.pth --input clip.mp4 --output out.mp4
    python test.py --network '{type: BicubicBlend}' --input frames/ --output out_frames/ --output out.mp4

How a clip goes through the network
- Time. N input frames give 2N-1 output frames (x2). Windows of 4 input frames are the ``window7`` windows
  of ``data/protocols.py`` on the output timeline (input frame k is output frame 2k): they step by 3 inputs,
  sharing one frame, and a last window aligned to the clip end covers the rest; an output frame produced by
  two windows is taken from the first. Frames are read one at a time, and only those of the current window
  are kept. A clip shorter than one window (N < 4) is padded at the end by repeating its last frame, and the
  outputs that fall on the padding are dropped (repeating works for N = 1 too, where reflecting cannot).
  Networks with ``render(lq, times, size, chunk=)`` (TemporalLIIF) take any time factor T (``--time``):
  output frame j is the instant j / T in input-frame units, j = 0 .. floor((N-1) T), each rendered by the
  first window that spans it.
- Space. Each window is cut into LR tiles (``--tile``) that overlap by at least ``--tile-overlap`` LR pixels;
  tile starts sit on multiples of 16 LR pixels, so the network's feature pyramid (x4) and Swin windows (8)
  fall on the same grid as for the whole frame (the last tile may be up to 15 pixels longer, to reach the
  border). Tile outputs are blended with weights that ramp linearly across each overlap, so seams fade.
  A convolutional network's tiled output equals the untiled one away from the seams up to float rounding
  when the overlap exceeds its receptive field; networks with wide context (deformable offsets, attention,
  ConvLSTMs) differ near the seams. Measured on real 720p frames (BI x4 LR crop, 64x64 tiles, overlap 16,
  random weights; ``tests/test_inference.py``): max |tiled - untiled| for tiny MSITF 7.6e-6 at 8 LR pixels
  or more from any tile edge, 6e-8 at 16 or more, 3.4e-3 (under one 8-bit level) at worst on a seam; for
  tiny STDAN 5.5e-4, 1.2e-6 and 7e-3. Trained networks, whose deformable offsets reach further, may need
  a wider overlap.
- Memory budget (``--max-memory GB``: GPU memory on CUDA, process memory on the CPU). The peak memory of
  one tile is modelled as ``k * pixels ** e``, fitted to two probe tiles of 32x32 and 64x64 LR pixels run
  before the clip, ``e`` clamped to [1, 2] (2 covers attention over all pixels). CUDA: growth of
  ``torch.cuda.max_memory_allocated``; CPU (Linux): growth of the peak resident set size after the C heap's
  free pages are given back (``malloc_trim``). The tile is the largest whose prediction times a safety
  factor fits in the budget minus what is in use (weights; on the CPU also the process itself and the
  output frames being blended, frames x 3 x H x W x 4 bytes), the whole frame when it fits. Safety factor
  1.25 on CUDA; 2 on the CPU, where allocator slack and oneDNN's per-shape caches made a tiled run grow to
  about twice the estimate in a long-lived process (the tests').
- Precision. fp16/bf16 run the network under ``torch.autocast`` on CUDA only; everything under
  ``torch.inference_mode``.

Outputs go to temporary names beside their destination and are renamed into place at the end, so an error
(an unreadable frame, a full disk, Ctrl-C) leaves nothing behind. PNG frames keep the input's bit depth
(16-bit PNG/TIFF in, 16-bit PNG out); MP4 (OpenCV, ``mp4v``) is 8-bit.
"""
import contextlib
import ctypes
import ctypes.util
import logging
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

from data.io import DataError, IMAGE_EXTENSIONS, list_images, read_image, to_float, to_integer, write_image
from data.protocols import make_windows
from data.video import resolve_video
from models.adapters import predict, unwrap
from utils.checkpoint import rebuild_network
from utils.options import OptionsError, validate

N_INPUTS = 4
TILE_ALIGN = 16
PROBE_SIDES = (32, 64)
MEMORY_SAFETY = {'cuda': 1.25, 'cpu': 2.0}
DEFAULT_FPS = 25.0
VIDEO_SUFFIX = '.mp4'
PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}

log = logging.getLogger('stvsr')


# ---------------------------------------------------------------------------------------------- network

def load_network(checkpoint=None, network=None):
    """The network to run and its checkpoint (None without one).

    ``checkpoint``: a toolbox checkpoint (the network is rebuilt from its spec) or a bare state_dict, whose
    spec ``network`` must give. ``network``: a spec as a dict or YAML text (``'{type: BicubicBlend}'``);
    alone, it must name a network without trainable weights.
    """
    spec = None
    if isinstance(network, str):
        try:
            network = yaml.safe_load(network)
        except yaml.YAMLError as e:
            raise OptionsError(f'--network {network}: not valid YAML ({getattr(e, "problem", e)})') from None
    if network is not None:
        spec = validate({'name': 'inference', 'network': network}, source='--network')['network']
    if checkpoint is None and spec is None:
        raise OptionsError('give --checkpoint (a trained network) or --network (e.g. "{type: BicubicBlend}")')
    net, _, ckpt = rebuild_network(checkpoint, spec, '--network', '--checkpoint')
    return net, ckpt


# ----------------------------------------------------------------------------------------------- inputs

class FrameFolder:
    """A folder of frames (PNG/TIFF/JPEG..., naturally sorted), read one at a time.

    Attributes: ``count``, ``height``, ``width``, ``dtype`` (of the first frame), ``fps`` (given, else 25).
    Every frame must match the first frame's size and dtype. ``max_frames`` keeps the first that many.
    """

    def __init__(self, folder, fps=None, max_frames=None):
        self.path = Path(folder)
        self.paths = list_images(self.path)[:max_frames]
        if not self.paths:
            raise DataError(f'{self.path}: no image files ({", ".join(IMAGE_EXTENSIONS)}) in this folder')
        first = read_image(self.paths[0])
        self.count, (self.height, self.width), self.dtype = len(self.paths), first.shape[:2], first.dtype
        self.fps = float(fps) if fps else DEFAULT_FPS

    def frames(self):
        """Yield ``(H, W, 3)`` uint8/uint16 RGB frames in order."""
        for path in self.paths:
            img = read_image(path)
            if img.shape[:2] != (self.height, self.width) or img.dtype != self.dtype:
                raise DataError(f'{path}: frame is {img.shape[1]}x{img.shape[0]} {img.dtype}, but the first frame '
                                f'({self.paths[0].name}) is {self.width}x{self.height} {self.dtype}')
            yield img


class VideoInput:
    """A video file (or ``demo:<name>``) decoded with OpenCV, 8-bit RGB, one frame at a time.

    The constructor decodes the whole file once without keeping frames (``grab``), so that the frame count
    used to plan the windows is the number of frames that really decode, and a file that does not decode
    at all fails before anything is written. ``fps`` comes from the header unless given; ``max_frames``
    keeps the first that many.
    """

    def __init__(self, path, fps=None, max_frames=None):
        self.path = resolve_video(path)
        capture = self._open()
        try:
            header_fps = capture.get(cv2.CAP_PROP_FPS)
            header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            ok, first = capture.read()
            if not ok:
                raise DataError(f'{self.path}: no frame could be decoded (corrupt or empty video)')
            count = 1
            while (max_frames is None or count < max_frames) and capture.grab():
                count += 1
        finally:
            capture.release()
        if header_count > count and max_frames is None:
            log.warning('%s: the header announces %d frames, %d decode; using those', self.path, header_count, count)
        if not fps and not (header_fps > 0 and math.isfinite(header_fps)):
            raise DataError(f'{self.path}: the video has no frame rate in its header; give --fps')
        self.count, (self.height, self.width), self.dtype = count, first.shape[:2], np.dtype(np.uint8)
        self.fps = float(fps) if fps else float(header_fps)

    def _open(self):
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise DataError(f'{self.path}: OpenCV cannot open this video (unsupported container/codec or corrupt file)')
        return capture

    def frames(self):
        capture = self._open()
        try:
            for index in range(self.count):
                ok, frame = capture.read()
                if not ok:
                    raise DataError(f'{self.path}: frame {index} no longer decodes (the file changed while reading?)')
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


def open_input(path, fps=None, max_frames=None):
    """A folder of frames or a video file / ``demo:<name>``; DataError naming the path otherwise."""
    text = str(path)
    if fps is not None and not fps > 0:
        raise OptionsError(f'--fps: must be > 0, got {fps}')
    if max_frames is not None and max_frames < 1:
        raise OptionsError(f'--max-frames: must be >= 1, got {max_frames}')
    if text.startswith('demo:'):
        return VideoInput(text, fps, max_frames)
    path = Path(text)
    if path.is_dir():
        return FrameFolder(path, fps, max_frames)
    if not path.exists():
        raise DataError(f'{path}: input not found (expected a video file or a folder of frames)')
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError(f'{path}: a single image; give the folder that holds the frames of the clip')
    return VideoInput(path, fps, max_frames)


# -------------------------------------------------------------------------------------------- schedule

@dataclass(frozen=True)
class Step:
    """One network call: ``inputs`` (N_INPUTS input frame indices, the last repeated for a short clip),
    ``outputs`` (output frame indices made here) and ``times`` (their instants in input-frame units,
    relative to ``inputs[0]``)."""
    inputs: tuple
    outputs: tuple
    times: tuple


def output_count(num_inputs, time_factor=2):
    """Output frames for ``num_inputs`` input frames: floor((N-1) T) + 1, i.e. 2N-1 for T = 2."""
    return math.floor((num_inputs - 1) * Fraction(time_factor)) + 1


def schedule(num_inputs, time_factor=2, n_inputs=N_INPUTS):
    """The windows that cover a clip of ``num_inputs`` frames (module docstring), as :class:`Step` objects.

    The windows are those of ``make_windows(2N-1, 'window7')``; ``time_factor`` (a number or Fraction)
    sets which instants each window outputs.
    """
    factor = Fraction(time_factor).limit_denominator(1000)
    if factor <= 0:
        raise OptionsError(f'--time: must be > 0, got {time_factor}')
    if num_inputs < n_inputs:
        windows = [tuple(range(num_inputs)) + (num_inputs - 1,) * (n_inputs - num_inputs)]
    else:
        windows = [tuple(i // 2 for i in w.inputs) for w in make_windows(2 * num_inputs - 1, 'window7', n_inputs)]
    steps, done = [], -1
    for inputs in windows:
        last = min(inputs[-1], num_inputs - 1)
        outputs = tuple(range(max(done + 1, math.ceil(inputs[0] * factor)), math.floor(last * factor) + 1))
        if outputs:
            steps.append(Step(inputs, outputs, tuple(float(j / factor - inputs[0]) for j in outputs)))
            done = outputs[-1]
    return steps


class WindowReader:
    """Input frames for consecutive steps, read lazily; frames before the current window are dropped."""

    def __init__(self, source):
        self.frames, self.cache, self.next = source.frames(), {}, 0

    def get(self, indices):
        """``(n, H, W, 3)`` integer frames at ``indices`` (increasing over calls)."""
        for index in list(self.cache):
            if index < indices[0]:
                del self.cache[index]
        while self.next <= max(indices):
            self.cache[self.next] = next(self.frames)
            self.next += 1
        return np.stack([self.cache[i] for i in indices])


# --------------------------------------------------------------------------------------------- network

class Upscaler:
    """Runs a network on one window of LR frames at the requested instants, scale and precision.

    Fixed networks (``predict(net, lq)``: 2n-1 frames at their own scale) accept only their scale and
    ``time_factor`` 2; networks with ``render(lq, times, size, chunk=)`` accept any. The constructor runs a
    16x16 probe window, which finds a fixed network's scale and shows early that it runs on this device.
    ``scale``/``time_factor`` None mean the network's own (its ``scale`` attribute, else x4, for a renderer)
    and 2.
    """

    def __init__(self, net, device, precision='fp32', scale=None, time_factor=None, chunk=65536):
        if precision not in PRECISIONS:
            raise OptionsError(f'--precision: expected one of {", ".join(PRECISIONS)}, got {precision!r}')
        device = torch.device(device)
        if precision != 'fp32' and device.type != 'cuda':
            raise OptionsError(f'--precision {precision}: half precision runs on CUDA only (device is {device})')
        if precision == 'bf16' and not torch.cuda.is_bf16_supported():
            raise OptionsError('--precision bf16: this GPU does not support bfloat16; use fp16')
        self.net, self.device, self.precision, self.chunk = net.eval().to(device), device, precision, chunk
        self.module = unwrap(net)
        self.renders = callable(getattr(self.module, 'render', None))
        name = type(self.module).__name__
        if self.renders:
            self.scale = float(getattr(self.module, 'scale', 4)) if scale is None else float(scale)
            self.time_factor = Fraction(2 if time_factor is None else time_factor).limit_denominator(1000)
            if not self.scale > 0 or not self.time_factor > 0:
                raise OptionsError(f'--scale/--time: must be > 0, got {self.scale} and {float(self.time_factor)}')
        else:
            probe = self.run(torch.zeros(1, N_INPUTS, 3, 16, 16), [i / 2 for i in range(2 * N_INPUTS - 1)])
            self.scale = probe.shape[-1] / 16
            if scale is not None and float(scale) != self.scale:
                raise OptionsError(f'--scale {float(scale):g}: {name} upscales x{self.scale:g} only; any scale '
                                   'needs a network with render() (TemporalLIIF)')
            if time_factor is not None and float(time_factor) != 2:
                raise OptionsError(f'--time {float(time_factor):g}: {name} makes 2x the frames only; any factor '
                                   'needs a network with render() (TemporalLIIF)')
            self.time_factor = Fraction(2)
        self.name = name

    def output_size(self, h, w):
        return round(self.scale * h), round(self.scale * w)

    def run(self, lq, times):
        """lq (1, n, 3, h, w) float in [0, 1], times: m instants (input-frame units, window-relative)
        -> (m, 3, H, W) float32 on the CPU, clamped to [0, 1]."""
        lq = lq.to(self.device)
        dtype = PRECISIONS[self.precision]
        autocast = torch.autocast('cuda', dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            if self.renders:
                out = self.module.render(lq, list(times), self.output_size(*lq.shape[-2:]), chunk=self.chunk)[0]
            else:
                positions = [round(2 * t) for t in times]
                out = predict(self.net, lq)[0, positions]
        return out.float().clamp_(0, 1).cpu()


# ---------------------------------------------------------------------------------------------- tiling

def tile_spans(length, tile, overlap, align=TILE_ALIGN):
    """``(start, end)`` spans covering ``[0, length)``: tiles of ``tile`` pixels overlapping by at least
    ``overlap``, starting on multiples of ``align``; the last one ends at ``length`` (up to ``align - 1``
    longer than ``tile``). One span when ``tile >= length``."""
    if tile >= length:
        return [(0, length)]
    if tile < align or tile <= overlap:
        raise OptionsError(f'--tile {tile}: must be >= {align} and larger than --tile-overlap {overlap}')
    step = max(align, (tile - overlap) // align * align)
    last = (length - tile) // align * align
    return [(start, start + tile) for start in range(0, last, step)] + [(last, length)]


def blend_weights(spans, index, scale):
    """1-D weights (output pixels) of tile ``index`` of ``spans`` (LR): linear ramps across the overlaps
    with its neighbours, 1 elsewhere."""
    start, end = spans[index]
    weights = torch.ones(round((end - start) * scale))
    if index > 0:
        width = round((spans[index - 1][1] - start) * scale)
        weights[:width] = torch.minimum(weights[:width], (torch.arange(width) + 0.5) / width)
    if index < len(spans) - 1:
        width = round((end - spans[index + 1][0]) * scale)
        ramp = (torch.arange(width) + 0.5).flip(0) / width
        weights[len(weights) - width:] = torch.minimum(weights[len(weights) - width:], ramp)
    return weights


def run_tiled(upscaler, lq, times, tile=None, overlap=16):
    """``upscaler.run`` over LR tiles of ``tile = (th, tw)`` (None: whole frame), blended; see the module
    docstring. lq (1, n, 3, h, w) -> (m, 3, H, W) float32 CPU."""
    h, w = lq.shape[-2:]
    if tile is None or (tile[0] >= h and tile[1] >= w):
        return upscaler.run(lq, times)
    if upscaler.scale != int(upscaler.scale):
        raise OptionsError(f'--tile: tiling needs an integer --scale, got {upscaler.scale:g}')
    scale = int(upscaler.scale)
    rows, cols = tile_spans(h, tile[0], overlap), tile_spans(w, tile[1], overlap)
    total = torch.zeros(len(times), 3, h * scale, w * scale)
    weight_sum = torch.zeros(h * scale, w * scale)
    for i, (y0, y1) in enumerate(rows):
        wy = blend_weights(rows, i, scale)
        for j, (x0, x1) in enumerate(cols):
            weight = wy[:, None] * blend_weights(cols, j, scale)[None, :]
            out = upscaler.run(lq[..., y0:y1, x0:x1], times)
            total[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] += out * weight
            weight_sum[y0 * scale:y1 * scale, x0 * scale:x1 * scale] += weight
    return total.div_(weight_sum)


# ---------------------------------------------------------------------------------------------- memory

def _proc_status(field):
    match = re.search(rf'^{field}:\s+(\d+) kB', Path('/proc/self/status').read_text(), re.M)
    return int(match.group(1)) * 1024


def _release_free_heap():
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``), so that the resident set size
    counts live memory only and a probe's allocations show as growth; a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim(0)


class MemoryMeter:
    """Peak memory of this run: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS on the CPU.

    ``current()`` is the memory in use now; ``measure(fn)`` the growth of the peak during ``fn()`` over it.
    On the CPU, both first return free heap pages to the OS, and ``measure`` resets Linux's peak-RSS counter
    (VmHWM), so the meter keeps the highest value seen itself for ``peak()``.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.seen = 0

    def current(self):
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        _release_free_heap()
        return _proc_status('VmRSS')

    def peak(self):
        if self.cuda:
            value = torch.cuda.max_memory_allocated(self.device)
        else:
            value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
        self.seen = max(self.seen, value)
        return self.seen

    def measure(self, fn):
        self.peak()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        before = self.current()
        if not self.cuda:
            try:
                Path('/proc/self/clear_refs').write_text('5')  # resets the peak RSS (VmHWM) to the current RSS
            except OSError:
                raise OptionsError('--max-memory on the CPU needs Linux /proc/self/clear_refs; give --tile') from None
        fn()
        grown = (torch.cuda.max_memory_allocated(self.device) if self.cuda else _proc_status('VmHWM')) - before
        self.peak()
        return max(grown, 0)


def choose_tile(upscaler, lq_size, budget_gb, meter, out_frames=None):
    """The LR tile ``(th, tw)`` for a budget of ``budget_gb`` GB, or None when the whole frame fits
    (estimate in the module docstring). ``out_frames``: output frames blended per window (CPU budget)."""
    h, w = lq_size
    budget = budget_gb * 1024 ** 3 - meter.current()
    if not upscaler.device.type == 'cuda' and out_frames:
        budget -= out_frames * 3 * 4 * math.prod(upscaler.output_size(h, w))
    times = [float(j / upscaler.time_factor) for j in range(output_count(N_INPUTS, upscaler.time_factor))]
    peaks = []
    for side in PROBE_SIDES:
        lq = torch.rand(1, N_INPUTS, 3, side, side, generator=torch.Generator().manual_seed(0))
        peaks.append(max(meter.measure(lambda: upscaler.run(lq, times)), 1))
    pixels = [side * side for side in PROBE_SIDES]
    exponent = min(max(math.log(peaks[1] / peaks[0]) / math.log(pixels[1] / pixels[0]), 1.0), 2.0)
    per_pixel = peaks[1] / pixels[1] ** exponent
    safety = MEMORY_SAFETY['cuda' if meter.cuda else 'cpu']
    fits = (max(budget, 0) / (safety * per_pixel)) ** (1 / exponent)
    log.info('memory estimate: %.0f MB per 64x64 LR tile, ~ pixels^%.2f; %.2f GB free of --max-memory %g GB',
             peaks[1] / 2 ** 20, exponent, budget / 1024 ** 3, budget_gb)
    if fits >= h * w:
        return None
    side = int(math.sqrt(fits)) // TILE_ALIGN * TILE_ALIGN
    if side < 2 * TILE_ALIGN:
        raise OptionsError(f'--max-memory {budget_gb:g}: too small for this network (a 64x64 LR tile needs '
                           f'{safety * peaks[1] / 2 ** 20:.0f} MB, {budget / 2 ** 20:.0f} MB are free)')
    th = min(h, side)
    return th, min(w, int(fits / th) // TILE_ALIGN * TILE_ALIGN)


# --------------------------------------------------------------------------------------------- outputs

def _created_parents(path):
    """The folders ``path.parent`` still needs, outermost first (to remove them again on failure)."""
    missing = []
    for parent in Path(path).absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing[::-1]


class _Output:
    def __init__(self, path, overwrite):
        self.path, self.overwrite, self.tmp = Path(path), overwrite, None
        self.new_dirs = _created_parents(self.path)

    def _make_parent(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def abort(self):
        self._discard()
        for folder in reversed(self.new_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()


class FramesOutput(_Output):
    """PNG frames ``00000000.png``.. written into a hidden temporary folder, renamed to ``path`` on commit.

    Frames are stored as ``dtype`` (the input's: uint8 or uint16) with the white level of ``bit_depth``.
    An existing ``path`` must be empty, or hold only image files and ``overwrite`` be set.
    """

    def __init__(self, path, dtype=np.uint8, bit_depth=None, overwrite=False):
        super().__init__(path, overwrite)
        self.dtype, self.bit_depth = dtype, bit_depth
        if self.path.exists():
            if not self.path.is_dir():
                raise OptionsError(f'{self.path}: exists and is not a folder; frames need a folder (or a .mp4 name)')
            entries = list(self.path.iterdir())
            if entries and not overwrite:
                raise OptionsError(f'{self.path}: folder is not empty; pass --overwrite to replace its frames')
            if any(e.is_dir() or e.suffix.lower() not in IMAGE_EXTENSIONS for e in entries):
                raise OptionsError(f'{self.path}: holds files other than frames; refusing to replace it')

    def write(self, index, frame):
        """Frame ``index``: (H, W, 3) float RGB in [0, 1]."""
        if self.tmp is None:
            self._make_parent()
            self.tmp = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.', suffix='.tmp', dir=self.path.parent))
        write_image(self.tmp / f'{index:08d}.png', to_integer(frame, self.dtype, self.bit_depth))

    def commit(self):
        old = None
        if self.path.exists():
            old = self.path.with_name(f'.{self.path.name}.old{os.getpid()}')
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old)

    def _discard(self):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class VideoOutput(_Output):
    """An MP4 (OpenCV, ``mp4v``, 8-bit) written to a hidden temporary file, renamed to ``path`` on commit."""

    def __init__(self, path, fps, overwrite=False):
        super().__init__(path, overwrite)
        if self.path.is_dir():
            raise OptionsError(f'{self.path}: is a folder; give a .mp4 file name')
        if self.path.exists() and not overwrite:
            raise OptionsError(f'{self.path}: already exists; pass --overwrite to replace it')
        self.fps, self.writer = fps, None

    def write(self, index, frame):
        """Frame ``index`` (consecutive from 0): (H, W, 3) float RGB in [0, 1]."""
        frame = to_integer(frame, np.uint8)
        if self.writer is None:
            self._make_parent()
            fd, tmp = tempfile.mkstemp(prefix=f'.{self.path.stem}.', suffix=VIDEO_SUFFIX, dir=self.path.parent)
            os.close(fd)
            self.tmp = Path(tmp)
            height, width = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*'mp4v'), self.fps, (width, height))
            if not self.writer.isOpened():
                raise DataError(f'{self.path}: OpenCV cannot write an mp4v video of {width}x{height} at '
                                f'{self.fps:g} fps')
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def commit(self):
        self.writer.release()
        os.replace(self.tmp, self.path)

    def _discard(self):
        if self.writer is not None:
            self.writer.release()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def make_outputs(paths, fps, dtype=np.uint8, bit_depth=None, overwrite=False):
    """One writer per ``--output``: a ``.mp4`` name is a video, anything else a folder of PNG frames
    (``dtype``, ``bit_depth``: see :class:`FramesOutput`)."""
    if not paths:
        raise OptionsError('--output: required with --input (a .mp4 file or a folder for PNG frames)')
    resolved = [Path(p).absolute() for p in paths]
    if len(set(resolved)) < len(resolved):
        raise OptionsError('--output: the same path is given twice')
    outputs = []
    for path in paths:
        path = Path(path)
        if path.suffix.lower() == VIDEO_SUFFIX:
            outputs.append(VideoOutput(path, fps, overwrite))
        elif path.suffix and not path.is_dir():
            raise OptionsError(f'--output {path}: expected a {VIDEO_SUFFIX} file or a folder for PNG frames')
        else:
            outputs.append(FramesOutput(path, dtype, bit_depth, overwrite))
    return outputs


# ----------------------------------------------------------------------------------------------- run

def format_bytes(n):
    return f'{n / 2 ** 30:.2f} GB' if n >= 2 ** 30 else f'{n / 2 ** 20:.0f} MB'


@torch.inference_mode()
def run_inference(net, source, outputs, device='cpu', scale=None, time_factor=None, keep_fps=False, tile=None,
                  tile_overlap=16, max_memory=None, precision='fp32', bit_depth=None, chunk=65536,
                  overwrite=False, progress=True):
    """Upscale ``source`` (:func:`open_input`) in space and time and write it to ``outputs`` (paths).

    ``tile``: LR tile (th, tw) or None; ``max_memory`` (GB) chooses one instead. Output fps is the input's
    times the time factor (same duration), or the input's with ``keep_fps`` (slow motion).
    Returns the summary: frames_in, frames_out, input/output sizes, fps, seconds, peak_memory (bytes), tile.
    """
    if tile is not None and max_memory is not None:
        raise OptionsError('--tile and --max-memory: give one (--max-memory chooses the tile)')
    if bit_depth is not None and (source.dtype != np.uint16 or not 8 < bit_depth <= 16):
        raise OptionsError(f'--bit-depth {bit_depth}: applies to 16-bit input frames holding 9 to 16 bits '
                           f'({source.path} is {source.dtype})')
    if chunk < 1:
        raise OptionsError(f'--chunk: must be >= 1, got {chunk}')
    if tile_overlap < 0:
        raise OptionsError(f'--tile-overlap: must be >= 0, got {tile_overlap}')
    if tile is not None:
        tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
        for side, length in zip(tile, (source.height, source.width)):
            tile_spans(length, side, tile_overlap)  # checks the tile size against the overlap
    meter = MemoryMeter(device)
    upscaler = Upscaler(net, device, precision, scale, time_factor, chunk)
    steps = schedule(source.count, upscaler.time_factor)
    frames_out = steps[-1].outputs[-1] + 1
    fps = source.fps if keep_fps else source.fps * float(upscaler.time_factor)
    writers = make_outputs(outputs, fps, source.dtype, bit_depth, overwrite)
    if max_memory is not None:
        if not max_memory > 0:
            raise OptionsError(f'--max-memory: must be > 0 GB, got {max_memory}')
        tile = choose_tile(upscaler, (source.height, source.width), max_memory, meter,
                           max(len(s.outputs) for s in steps))
    out_h, out_w = upscaler.output_size(source.height, source.width)
    log.info('%s: %d frames %dx%d at %.4g fps -> %s -> %d frames %dx%d at %.4g fps%s', source.path, source.count,
             source.width, source.height, source.fps, upscaler.name, frames_out, out_w, out_h, fps,
             f' | LR tiles {tile[0]}x{tile[1]}, overlap {tile_overlap}' if tile else '')

    start = time.time()
    reader = WindowReader(source)
    bar = tqdm(total=frames_out, unit='frame', desc='infer', disable=not progress, dynamic_ncols=True)
    try:
        for step in steps:
            frames = reader.get(step.inputs)
            lq = torch.from_numpy(to_float(frames, bit_depth)).permute(0, 3, 1, 2).unsqueeze(0)
            out = run_tiled(upscaler, lq, step.times, tile, tile_overlap)
            for index, frame in zip(step.outputs, out.permute(0, 2, 3, 1).numpy()):
                for writer in writers:
                    writer.write(index, frame)
                bar.update(1)
        for writer in writers:
            writer.commit()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        bar.close()
    seconds = time.time() - start
    summary = {'frames_in': source.count, 'frames_out': frames_out, 'input_size': (source.width, source.height),
               'output_size': (out_w, out_h), 'fps': fps, 'seconds': seconds, 'peak_memory': meter.peak(),
               'tile': tile, 'device': str(upscaler.device)}
    memory = 'GPU max allocated' if meter.cuda else 'peak RSS'
    log.info(f'{source.count} frames in -> {frames_out} frames out ({out_w}x{out_h}) in {seconds:.1f} s, '
             f'{frames_out / max(seconds, 1e-9):.2f} frames/s | {memory} {format_bytes(summary["peak_memory"])} '
             f'| {summary["device"]}, {precision} | written to {", ".join(str(p) for p in outputs)}')
    return summary
