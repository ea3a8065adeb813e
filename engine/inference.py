"""Inference without ground truth: a video or a folder of frames in, PNG frames and/or an MP4 out.

    python test.py --checkpoint experiments/demo/checkpoints/best.pth --input clip.mp4 --output out.mp4
    python test.py --network '{type: BicubicBlend}' --input frames/ --output out_frames/ --output out.mp4

How a clip goes through the network
- Time. N input frames give 2N-1 output frames (x2). Windows of 4 input frames are the ``window7`` windows
  of ``data/protocols.py`` on the output timeline (``stream_windows``; input frame k is output frame 2k):
  they step by 3 inputs,
  sharing one frame, and a last window aligned to the clip end covers the rest; an output frame produced by
  two windows is taken from the first. Frames are read one at a time, and only those of the current window
  are kept. A clip shorter than one window (N < 4) is padded at the end by repeating its last frame, and the
  outputs that fall on the padding are dropped (repeating works for N = 1 too, where reflecting cannot).
  Networks with ``any_time`` (TemporalLIIF, BicubicBlend) take any time factor T (``--time``):
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
  before the clip, ``e`` clamped to [1, 2] (2 covers attention over all pixels), as ``engine/memory.py``
  measures it. The tile is the largest whose prediction times a safety
  factor fits in the budget minus what is in use (weights; on the CPU also the process itself and the
  output frames being blended, frames x 3 x H x W x 4 bytes), the whole frame when it fits. Safety factor
  1.25 on CUDA; 2 on the CPU, where allocator slack and oneDNN's per-shape caches made a tiled run grow to
  about twice the estimate in a long-lived process (the tests').
- Precision. fp16/bf16 run the network under ``torch.autocast`` on CUDA only; everything under
  ``torch.inference_mode``.

Outputs go to temporary names beside their destination and are renamed into place at the end, so an error
(an unreadable frame, a full disk, Ctrl-C) leaves nothing behind. PNG frames keep the input's bit depth
(16-bit PNG/TIFF in, 16-bit PNG out); MP4 is 8-bit H.264 (``data.video.VideoWriter``).

Every option is one field of :class:`InferenceOptions`, with its default, checked in one place.
"""
import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import yaml

from data.frames import FrameReader
from data.io import IMAGE_EXTENSIONS, check_writable, publish, to_float, to_integer, write_image
from data.protocols import output_count, stream_windows
from data.video import VideoReader, VideoWriter
from utils.errors import DataError, OptionsError

from .checkpoint import rebuild_network, resolve_checkpoint
from .cli import signals_held
from .dist import resolve_device
from .logger import progress
from .memory import MemoryMeter, format_bytes
from .options import validate

N_INPUTS = 4
TILE_ALIGN = 16
PROBE_SIDES = (32, 64)
MEMORY_SAFETY = {'cuda': 1.25, 'cpu': 2.0}
DEFAULT_FPS = 25.0
VIDEO_SUFFIX = '.mp4'
PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}

log = logging.getLogger('stvsr')


@dataclass(frozen=True)
class InferenceOptions:
    """Every option of ``test.py --input``, with its default, checked on construction (OptionsError naming
    the flag). ``outputs``: .mp4 files and/or folders for PNG frames."""
    outputs: tuple = ()
    scale: float = None           # space factor: the network's own, or any for any_scale networks
    time: float = None            # time factor: 2, or any for any_time networks
    fps: float = None             # input frame rate (default: the video header; 25 for a frame folder)
    max_frames: int = None        # upscale only the first N input frames
    keep_fps: bool = False        # write at the input frame rate (slow motion) instead of fps x time factor
    tile: tuple = None            # LR tile (h, w); None: the whole frame (or what max_memory chooses)
    tile_overlap: int = 16        # minimum overlap of neighbouring tiles, LR pixels
    max_memory: float = None      # GB: choose the tile from a memory budget (module docstring)
    precision: str = 'fp32'       # fp32 | fp16 | bf16 (autocast, CUDA only)
    device: str = 'auto'          # auto | cpu | cuda | cuda:N
    bit_depth: int = None         # bits used in 16-bit input frames (e.g. 12); default: the file dtype
    chunk: int = None             # queries per render call (networks that decode queries); None: the network's
    overwrite: bool = False       # replace existing outputs
    progress: bool = True         # tqdm progress bar

    def __post_init__(self):
        def bad(flag, message):
            raise OptionsError(f'--{flag}: {message}')

        if not self.outputs:
            bad('output', 'required with --input (a .mp4 file or a folder for PNG frames)')
        resolved = [Path(p).absolute() for p in self.outputs]
        if len(set(resolved)) < len(resolved):
            bad('output', 'the same path is given twice')
        for name in ('scale', 'time', 'fps', 'max_memory'):
            value = getattr(self, name)
            if value is not None and not value > 0:
                bad(name.replace('_', '-'), f'must be > 0, got {value:g}')
        if self.max_frames is not None and self.max_frames < 1:
            bad('max-frames', f'must be >= 1, got {self.max_frames}')
        if self.tile is not None and (len(self.tile) != 2 or min(self.tile) < 1):
            bad('tile', f'expected N or H W (positive), got {" ".join(map(str, self.tile))}')
        if self.tile is not None and self.max_memory is not None:
            bad('tile', 'give --tile or --max-memory, not both (--max-memory chooses the tile)')
        if self.tile_overlap < 0:
            bad('tile-overlap', f'must be >= 0, got {self.tile_overlap}')
        if self.chunk is not None and self.chunk < 1:
            bad('chunk', f'must be >= 1, got {self.chunk}')
        if self.bit_depth is not None and not 8 < self.bit_depth <= 16:
            bad('bit-depth', f'applies to 16-bit input frames holding 9 to 16 bits, got {self.bit_depth}')
        if self.precision not in PRECISIONS:
            bad('precision', f'expected one of {", ".join(PRECISIONS)}, got {self.precision!r}')
        if not re.fullmatch(r'auto|cpu|cuda(:\d+)?', self.device):
            bad('device', f'must be auto, cpu, cuda or cuda:N, got {self.device!r}')

    @classmethod
    def from_args(cls, args):
        """From ``test.py``'s parsed arguments (the same names, ``--output`` as ``outputs``)."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != 'outputs' and hasattr(args, f.name)}
        if given.get('tile') is not None:
            given['tile'] = tuple(given['tile']) * (2 if len(given['tile']) == 1 else 1)
        return cls(outputs=tuple(args.output), **given)

    def torch_device(self):
        device = resolve_device(self.device)
        if self.precision != 'fp32' and device.type != 'cuda':
            raise OptionsError(f'--precision {self.precision}: half precision runs on CUDA only (device is {device})')
        if self.precision == 'bf16' and not torch.cuda.is_bf16_supported():
            raise OptionsError('--precision bf16: this GPU does not support bfloat16; use fp16')
        return device


def network_spec(network):
    """``--network``: a spec as a dict or YAML text (``'{type: BicubicBlend}'``), validated against the
    network's constructor; OptionsError (one line) otherwise."""
    if isinstance(network, str):
        try:
            network = yaml.safe_load(network)
        except yaml.YAMLError as e:
            raise OptionsError(f'--network {network}: not valid YAML ({getattr(e, "problem", e)})') from None
    return validate({'name': 'inference', 'network': network}, source='--network')['network']


def load_network(checkpoint=None, network=None):
    """The network to run and its checkpoint (None without one).

    ``checkpoint``: a toolbox checkpoint (the network is rebuilt from its spec) or a bare state_dict, whose
    spec ``network`` must give. ``network``: a spec as a dict or YAML text (``'{type: BicubicBlend}'``);
    alone, it must name a network without trainable weights.
    """
    spec = None if network is None else network_spec(network)
    if checkpoint is None and spec is None:
        raise OptionsError('give --checkpoint (a trained network) or --network (e.g. "{type: BicubicBlend}")')
    net, _, ckpt = rebuild_network(None if checkpoint is None else resolve_checkpoint(checkpoint), spec,
                                   '--network', '--checkpoint')
    return net, ckpt


@torch.inference_mode()
def upscale(net, lq, scale=None, time=None, tile=None, tile_overlap=16, device='cpu'):
    """A clip in memory through the network, as ``test.py --input`` runs a file: lq (n, 3, h, w) float in
    [0, 1] -> (m, 3, H, W) float32 in [0, 1] on the CPU, m = floor((n - 1) T) + 1 (2n - 1 at T = 2), the
    same windows (``stream_windows``), tiles and factors as ``run_inference``."""
    upscaler = Upscaler(net, device, scale=scale, time_factor=time)
    frames = []
    for window in stream_windows(len(lq), upscaler.time_factor, N_INPUTS):
        frames.append(run_tiled(upscaler, lq[list(window.inputs)].unsqueeze(0).float(), window.times, tile,
                                tile_overlap))
    return torch.cat(frames)


def open_input(path, fps=None, max_frames=None):
    """A folder of frames (``data.frames.FrameReader``) or a video file / ``demo:<name>``
    (``data.video.VideoReader``); DataError naming the path otherwise."""
    text = str(path)
    if not text.startswith('demo:'):
        path = Path(text)
        if path.is_dir():
            return FrameReader(path, fps, max_frames)
        if not path.exists():
            raise DataError(f'{path}: input not found (expected a video file or a folder of frames)')
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise DataError(f'{path}: a single image; give the folder that holds the frames of the clip')
    source = VideoReader(text, fps, max_frames)
    if max_frames is None and source.header_count > source.count:
        log.warning('%s: the header announces %d frames, %d decode; using those', source.path,
                    source.header_count, source.count)
    return source


class WindowReader:
    """Input frames for consecutive windows, read lazily; frames before the current window are dropped."""

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


class Upscaler:
    """Runs a network on one window of LR frames at the requested instants, scale and precision
    (``VideoNetwork.render``). ``scale``/``time_factor`` None mean the network's own (``net.scale``, 2);
    other factors need an any_scale / any_time network (one-line OptionsError naming the flag otherwise)."""

    def __init__(self, net, device, precision='fp32', scale=None, time_factor=None, chunk=None):
        self.net, self.device, self.chunk = net.eval().to(device), torch.device(device), chunk
        self.dtype = PRECISIONS[precision]
        for flag, check in (('scale', {'scale': scale}), ('time', {'time_factor': time_factor})):
            try:
                net.check_factors(**check)
            except ValueError as e:
                raise OptionsError(f'--{flag}: {e}') from None
        self.scale = float(net.scale if scale is None else scale)
        self.time_factor = Fraction(2 if time_factor is None else time_factor).limit_denominator(1000)
        self.name = net.label

    def output_size(self, h, w):
        return round(self.scale * h), round(self.scale * w)

    def run(self, lq, times):
        """lq (1, n, 3, h, w) float in [0, 1], times: m instants (input-frame units, window-relative)
        -> (m, 3, H, W) float32 on the CPU, clamped to [0, 1]."""
        lq = lq.to(self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            out = self.net.render(lq, list(times), self.output_size(*lq.shape[-2:]), chunk=self.chunk)[0]
        return out.float().clamp_(0, 1).cpu()


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
        free = (f'{budget / 2 ** 20:.0f} MB are free' if budget > 0 else
                f'the process already uses {meter.current() / 2 ** 30:.2f} GB')
        raise OptionsError(f'--max-memory {budget_gb:g}: too small for this network (a 64x64 LR tile needs '
                           f'{safety * peaks[1] / 2 ** 20:.0f} MB, {free})')
    th = min(h, side)
    return th, min(w, int(fits / th) // TILE_ALIGN * TILE_ALIGN)


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
        publish(self.tmp, directory=True)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old)

    def _discard(self):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class VideoOutput(_Output):
    """An MP4 (``data.video.VideoWriter``: H.264 yuv420p, 8-bit) written to a hidden temporary file, renamed
    to ``path`` on commit."""

    def __init__(self, path, fps, overwrite=False):
        super().__init__(path, overwrite)
        if self.path.is_dir():
            raise OptionsError(f'{self.path}: is a folder; give a .mp4 file name')
        if self.path.exists() and not overwrite:
            raise OptionsError(f'{self.path}: already exists; pass --overwrite to replace it')
        self.fps, self.writer = fps, None

    def write(self, index, frame):
        """Frame ``index`` (consecutive from 0): (H, W, 3) float RGB in [0, 1]."""
        if self.writer is None:
            self._make_parent()
            fd, tmp = tempfile.mkstemp(prefix=f'.{self.path.stem}.', suffix=VIDEO_SUFFIX, dir=self.path.parent)
            os.close(fd)
            self.tmp = Path(tmp)
            self.writer = VideoWriter(self.tmp, self.fps)
        self.writer.write(to_integer(frame, np.uint8))

    def commit(self):
        self.writer.close()
        publish(self.tmp)
        os.replace(self.tmp, self.path)

    def _discard(self):
        if self.writer is not None:
            self.writer.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def check_outputs(outputs, source):
    """Before any work: every output can be written, and none is the input, lies inside it or holds it
    (replacing a folder that holds the input would delete it), with or without --overwrite."""
    source = Path(source).resolve()
    for output in outputs:
        target = Path(output).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise OptionsError(f'--output {output}: is the input {source}, lies inside it or holds it; give an '
                               'output elsewhere (the input is never replaced)')
        check_writable(target)


def make_outputs(paths, fps, dtype=np.uint8, bit_depth=None, overwrite=False):
    """One writer per ``--output``: a ``.mp4`` name is a video, anything else a folder of PNG frames
    (``dtype``, ``bit_depth``: see :class:`FramesOutput`)."""
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


@torch.inference_mode()
def run_inference(net, source, options):
    """Upscale ``source`` (:func:`open_input`) in space and time and write it to ``options.outputs``.

    Output fps is the input's times the time factor (same duration), or the input's with ``keep_fps``
    (slow motion). Returns the summary: frames_in, frames_out, input/output sizes, fps, seconds,
    peak_memory (bytes), tile, device.
    """
    if options.bit_depth is not None and source.dtype != np.uint16:
        raise OptionsError(f'--bit-depth {options.bit_depth}: applies to 16-bit input frames ({source.path} is '
                           f'{source.dtype})')
    tile = options.tile
    if tile is not None:
        for side, length in zip(tile, (source.height, source.width)):
            tile_spans(length, side, options.tile_overlap)  # checks the tile size against the overlap
    check_outputs(options.outputs, source.path)
    device = options.torch_device()
    meter = MemoryMeter(device)
    upscaler = Upscaler(net, device, options.precision, options.scale, options.time, options.chunk)
    windows = stream_windows(source.count, upscaler.time_factor, N_INPUTS)
    frames_out = windows[-1].outputs[-1] + 1
    in_fps = source.fps or DEFAULT_FPS
    fps = in_fps if options.keep_fps else in_fps * float(upscaler.time_factor)
    writers = make_outputs(options.outputs, fps, source.dtype, options.bit_depth, options.overwrite)
    if options.max_memory is not None:
        if not meter.resettable:
            raise OptionsError('--max-memory on the CPU needs Linux /proc/self/clear_refs; give --tile')
        tile = choose_tile(upscaler, (source.height, source.width), options.max_memory, meter,
                           max(len(w.outputs) for w in windows))
    out_h, out_w = upscaler.output_size(source.height, source.width)
    log.info('%s: %d frames %dx%d at %.4g fps -> %s -> %d frames %dx%d at %.4g fps%s', source.path, source.count,
             source.width, source.height, in_fps, upscaler.name, frames_out, out_w, out_h, fps,
             f' | LR tiles {tile[0]}x{tile[1]}, overlap {options.tile_overlap}' if tile else '')

    start = time.time()
    reader = WindowReader(source)
    bar = progress(total=frames_out, enabled=options.progress, unit='frame', desc='infer', dynamic_ncols=True)
    committed = False
    try:
        for window in windows:
            frames = reader.get(window.inputs)
            lq = torch.from_numpy(to_float(frames, options.bit_depth)).permute(0, 3, 1, 2).unsqueeze(0)
            out = run_tiled(upscaler, lq, window.times, tile, options.tile_overlap)
            for index, frame in zip(window.outputs, out.permute(0, 2, 3, 1).numpy()):
                for writer in writers:
                    writer.write(index, frame)
                bar.update(1)
        with signals_held():  # a stop request waits until every output is in place (all or none)
            for writer in writers:
                writer.commit()
            committed = True
    except BaseException:
        if not committed:
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
             f'| {summary["device"]}, {options.precision} | written to {", ".join(str(p) for p in options.outputs)}')
    return summary
