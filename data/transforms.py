"""The degradation dispatch, aligned LR/GT crops, augmentation, and the sample dicts all datasets return.

Every dataset takes the same ``degradation`` option::

    degradation: {type: BI, scale: 4}            # MATLAB imresize bicubic (utils.resize.imresize)
    degradation: {type: BD, scale: 4, sigma: 1.6}  # Gaussian blur 13x13 then every 4th pixel (bd_downsample)
    degradation: {type: PIL, scale: 4}           # PIL Image.BICUBIC (pil_bicubic_resize), 8-bit frames only

LR frames made on the fly are rounded to the ground truth's integer grid (8 or 16 bits), exactly as if they
had been written to disk by ``data_scripts/generate_lr.py``, so training on the fly or from a precomputed
LR tree (``lq_root``) gives the same numbers. A precomputed tree carries ``lr_manifest.json``::

    {"degradation": "BI", "scale": 4, "sigma": null, "code_version": "<sha256 of data/degradations.py>"}

and loaders warn loudly when it disagrees with the configured degradation.
"""
import hashlib
import json
import logging
import math
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.errors import DataError
from utils.resize import imresize_torch

from .degradations import bd_downsample, pil_bicubic_resize
from .io import max_value, to_float

logger = logging.getLogger(__name__)

DEGRADATION_TYPES = ('BI', 'BD', 'PIL')
MANIFEST_NAME = 'lr_manifest.json'


def parse_degradation(degradation=None):
    """Validate a degradation option; returns a new dict with every key filled in.

    ``{type: BI|BD|PIL, scale: 4, sigma: 1.6, kernel_size: 13, padding: reflect, offset: 0}``. ``None`` means
    BI x4, the protocol of most STVSR tables. ``sigma``, ``kernel_size``, ``padding`` and ``offset`` (see
    ``degradations.bd_downsample``) only apply to BD and are set to None for BI and PIL, so one config
    template can switch ``type`` without editing them.
    """
    spec = dict(degradation or {'type': 'BI', 'scale': 4})
    bd_defaults = {'sigma': 1.6, 'kernel_size': 13, 'padding': 'reflect', 'offset': 0}
    unknown = set(spec) - {'type', 'scale', *bd_defaults}
    if unknown:
        raise ValueError(f'degradation: unknown keys {sorted(unknown)}; expected type, scale, '
                         f'{", ".join(bd_defaults)}')
    kind = str(spec.get('type', 'BI')).upper()
    if kind not in DEGRADATION_TYPES:
        raise ValueError(f'degradation: type {spec.get("type")!r} is not one of {", ".join(DEGRADATION_TYPES)}')
    scale = spec.get('scale', 4)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f'degradation: scale must be a positive integer, got {scale!r}')
    out = {'type': kind, 'scale': scale, **{k: None for k in bd_defaults}}
    if kind == 'BD':
        out.update({k: bd_defaults[k] if spec.get(k) is None else spec[k] for k in bd_defaults})
        out['sigma'] = float(out['sigma'])
        if out['sigma'] <= 0:
            raise ValueError(f'degradation: sigma must be positive, got {out["sigma"]!r}')
        if not isinstance(out['kernel_size'], int) or out['kernel_size'] < 1 or out['kernel_size'] % 2 == 0:
            raise ValueError(f'degradation: kernel_size must be an odd positive integer, got {out["kernel_size"]!r}')
        if out['padding'] not in ('reflect', 'replicate'):
            raise ValueError(f'degradation: padding must be reflect or replicate, got {out["padding"]!r}')
        if not isinstance(out['offset'], int) or not 0 <= out['offset'] < scale:
            raise ValueError(f'degradation: offset must be an integer in [0, {scale}), got {out["offset"]!r}')
    return out


def describe_lr(degradation, lq_root=None):
    """How a clip dataset's LR frames are made, in words (the header of test.py's tables)."""
    if lq_root is not None:
        return f'LR from {lq_root} ({degradation["type"]} x{degradation["scale"]})'
    extra = (f', sigma {degradation["sigma"]:g}, {degradation["kernel_size"]} taps, {degradation["padding"]}, '
             f'offset {degradation["offset"]}' if degradation['type'] == 'BD' else '')
    return f'{degradation["type"]} x{degradation["scale"]}{extra}'


def check_n_inputs(n_inputs, max_inputs=None):
    """Validate ``n_inputs`` (LR frames per sample, at least 2); ``max_inputs`` is what a clip can hold."""
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 2:
        raise ValueError(f'n_inputs must be an integer >= 2, got {n_inputs!r}')
    if max_inputs is not None and n_inputs > max_inputs:
        raise ValueError(f'n_inputs={n_inputs} needs {2 * n_inputs - 1} GT frames per sample, but the clips '
                         f'have {2 * max_inputs - 1}; use n_inputs <= {max_inputs}')


def degrade(frame, degradation):
    """One GT frame ``(H, W, 3)`` uint8/uint16 -> LR frame ``(H/s, W/s, 3)`` of the same dtype.

    ``frame`` must already be modcropped to the scale. Integer frames are resized as MATLAB resizes them,
    rounding (half away from zero, saturating) back to the frame's dtype, which reproduces the official
    MATLAB-made LR sets; a 12-bit clip stored in 16 bits may thus hold bicubic overshoot above 4095, which
    :func:`~data.io.to_float` clips when ``bit_depth`` is given.
    """
    spec = parse_degradation(degradation)
    kind, scale = spec['type'], spec['scale']
    if frame.shape[0] % scale or frame.shape[1] % scale:
        raise DataError(f'frame of {frame.shape[1]}x{frame.shape[0]} is not modcropped to scale {scale}')
    if frame.dtype not in (np.uint8, np.uint16):
        raise DataError(f'expected a uint8 or uint16 frame, got {frame.dtype}')
    if kind == 'BI':
        return _matlab_bicubic(frame, scale)
    if kind == 'PIL':
        if frame.dtype != np.uint8:
            raise DataError(f'PIL degradation handles 8-bit frames only, got {frame.dtype}; use BI or BD')
        return pil_bicubic_resize(frame, 1 / scale)
    bd = {k: spec[k] for k in ('sigma', 'kernel_size', 'padding', 'offset')}
    if frame.dtype == np.uint8:
        return bd_downsample(frame, scale=scale, **bd)
    out = bd_downsample(frame.astype(np.float64), scale=scale, **bd)
    return np.clip(np.round(out), 0, np.iinfo(frame.dtype).max).astype(frame.dtype)


def _matlab_bicubic(frame, scale):
    """MATLAB ``imresize(frame, 1/scale, 'bicubic')`` on an integer frame, returning the same integer class.

    Computed with ``imresize_torch`` (same weights as ``imresize``, same result): numpy's BLAS cannot be
    limited to one thread and was 20-100x slower on crop-sized matrices on a busy machine, while torch runs
    single-threaded inside DataLoader workers (in the main process torch's own threads suffer the same way,
    so load training data with workers). As MATLAB does for integer images, the height is resized first and
    the result is rounded to the integer class after each 1-D pass.
    """
    white = np.iinfo(frame.dtype).max
    x = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).to(torch.float64)
    for pass_scale in ((1 / scale, 1), (1, 1 / scale)):
        x = imresize_torch(x, pass_scale).add_(0.5).floor_().clamp_(0, white)
    return x.permute(1, 2, 0).numpy().astype(frame.dtype)


def resize_to(frame, size, kind='BI'):
    """One integer frame ``(H, W, 3)`` -> ``size`` (h, w), same dtype, at any (non-integer) factor.

    ``BI``: MATLAB ``imresize(frame, [h w], 'bicubic')`` rounded to the integer class after each 1-D pass
    (as :func:`degrade`); ``PIL``: ``Image.resize`` bicubic (8-bit only). The any-scale training samples
    use it (BD, a blur and an integer subsampling step, has no non-integer form).
    """
    if kind == 'PIL':
        if frame.dtype != np.uint8:
            raise DataError(f'PIL degradation handles 8-bit frames only, got {frame.dtype}; use BI')
        return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BICUBIC))
    if kind != 'BI':
        raise ValueError(f'resize_to: kind must be BI or PIL, got {kind!r}')
    white = np.iinfo(frame.dtype).max
    x = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))).to(torch.float64)
    for pass_size in ((size[0], x.shape[2]), tuple(size)):  # height first, as MATLAB on square crops
        x = imresize_torch(x, size=pass_size).add_(0.5).floor_().clamp_(0, white)
    return x.permute(1, 2, 0).numpy().astype(frame.dtype)


def degrade_float(frames, degradation, bit_depth=None):
    """GT frames ``(T, H, W, 3)`` integer -> LR ``(T, h, w, 3)`` float32 in [0, 1] (see :func:`degrade`)."""
    return np.stack([to_float(degrade(f, degradation), bit_depth) for f in frames])


def modcrop_frames(frames, scale):
    """Modcrop every frame of a ``(T, H, W, 3)`` array, as ``degradations.modcrop`` does one (a view)."""
    h, w = frames.shape[1:3]
    return frames[:, :h - h % scale, :w - w % scale]


def _crop_margin(scale, kernel_size=13):
    """LR pixels of context that make a degraded crop equal to the crop of the degraded frame.

    MATLAB/PIL bicubic at 1/s reaches 2s GT pixels (+2 taps) from an LR pixel's centre, a BD k x k
    Gaussian k // 2; with this margin (a multiple of s in GT pixels, so BD keeps its sampling phase) the
    kernels never see the cut, and where the margin is clipped by the frame edge both see the same edge.
    """
    return math.ceil(max(2 * scale + 2, kernel_size // 2) / scale) + 1


def paired_crop(gt, lq_size, scale, rng=random, lq=None, degradation=None, key=''):
    """Random aligned crop: LR ``lq_size`` square at (y, x), GT ``lq_size * scale`` square at (s*y, s*x).

    gt: ``(2N-1, H, W, 3)`` integer frames, modcropped. lq: ``(N, H/s, W/s, 3)`` integer LR inputs read from
    disk, or None to degrade GT frames 0, 2, .. on the fly; only the crop plus a margin is degraded, which
    gives the same pixels as degrading the whole frame and cropping, at a fraction of the cost.
    ``lq_size`` None or 0 keeps whole frames. Returns ``(lq, gt)`` integer arrays.
    """
    h, w = gt.shape[1] // scale, gt.shape[2] // scale
    if not lq_size:
        y, x, size_h, size_w = 0, 0, h, w
    else:
        if h < lq_size or w < lq_size:
            raise DataError(f'{key}: LR frames of {w}x{h} are smaller than lq_size {lq_size}')
        y, x, size_h, size_w = rng.randint(0, h - lq_size), rng.randint(0, w - lq_size), lq_size, lq_size
    gt_crop = gt[:, scale * y:scale * (y + size_h), scale * x:scale * (x + size_w)]
    if lq is not None:
        return lq[:, y:y + size_h, x:x + size_w], gt_crop
    m = _crop_margin(scale, parse_degradation(degradation)['kernel_size'] or 0)
    y0, x0 = max(0, y - m), max(0, x - m)
    y1, x1 = min(h, y + size_h + m), min(w, x + size_w + m)
    region = gt[0::2, scale * y0:scale * y1, scale * x0:scale * x1]
    lq_crop = np.stack([degrade(f, degradation)[y - y0:y - y0 + size_h, x - x0:x - x0 + size_w]
                        for f in region])
    return lq_crop, gt_crop


def augment(clips, use_flip, use_rot, use_time_reverse, rng=random):
    """Apply one random flip/rotation/time-reversal identically to every ``(T, H, W, C)`` array in ``clips``.

    use_flip: horizontal flip (p 0.5). use_rot: vertical flip and H/W transpose (each p 0.5); with the
    horizontal flip they give all 8 rotations by 90 degrees and mirrorings. use_time_reverse: play the clip
    backwards (p 0.5), so LR inputs 0, 2, 4, 6 become GT frames 6, 4, 2, 0 and stay aligned.
    """
    hflip = use_flip and rng.random() < 0.5
    vflip = use_rot and rng.random() < 0.5
    transpose = use_rot and rng.random() < 0.5
    reverse = use_time_reverse and rng.random() < 0.5
    out = []
    for clip in clips:
        if hflip:
            clip = clip[:, :, ::-1]
        if vflip:
            clip = clip[:, ::-1]
        if transpose:
            clip = clip.transpose(0, 2, 1, 3)
        if reverse:
            clip = clip[::-1]
        out.append(clip)
    return out


def to_tensor(frames):
    """``(T, H, W, 3)`` float32 -> contiguous torch tensor ``(T, 3, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


def training_sample(gt, key, degradation, lq=None, lq_size=32, use_flip=False, use_rot=False,
                    use_time_reverse=False, bit_depth=None, rng=random):
    """Build a training sample from ``2N-1`` GT frames (as read) and optionally their ``N`` LR inputs.

    Returns ``{'lq': (N, 3, h, w), 'gt': (2N-1, 3, s*h, s*w), 'key': str}``, float32 tensors in [0, 1].
    """
    scale = parse_degradation(degradation)['scale']
    gt = modcrop_frames(gt, scale)
    if lq is not None:
        expected = (len(gt) // 2 + 1, gt.shape[1] // scale, gt.shape[2] // scale)
        if lq.shape[:3] != expected:
            raise DataError(f'{key}: LR inputs are {lq.shape[0]} x {lq.shape[2]}x{lq.shape[1]}, expected '
                            f'{expected[0]} x {expected[2]}x{expected[1]} (GT size / scale {scale})')
    lq, gt = paired_crop(gt, lq_size, scale, rng, lq=lq, degradation=degradation, key=key)
    lq, gt = augment([to_float(lq, bit_depth), to_float(gt, bit_depth)], use_flip, use_rot, use_time_reverse, rng)
    return {'lq': to_tensor(lq), 'gt': to_tensor(gt), 'key': key}


def clip_sample(name, gt, frame_names, degradation, lq=None, bit_depth=None):
    """Build a test-clip sample (see the clip datasets); ``gt`` ``(T, H, W, 3)`` integer frames as read.

    GT frames are modcropped to the scale; ``lq`` (one integer LR frame per GT frame, from an LR folder)
    must be exactly GT size / scale, otherwise the LR frames are made from GT with ``degradation``.
    """
    scale = parse_degradation(degradation)['scale']
    gt = modcrop_frames(gt, scale)
    if lq is None:
        lq = degrade_float(gt, degradation, bit_depth)
    else:
        expected = (len(gt), gt.shape[1] // scale, gt.shape[2] // scale)
        if lq.shape[:3] != expected:
            raise DataError(f'{name}: LR frames are {lq.shape[0]} x {lq.shape[2]}x{lq.shape[1]}, expected '
                            f'{expected[0]} x {expected[2]}x{expected[1]} (one per GT frame, GT size / {scale})')
        lq = to_float(lq, bit_depth)
    return {'name': name, 'gt': gt, 'lq': lq, 'max_value': max_value(gt.dtype, bit_depth),
            'frame_names': list(frame_names)}


def degradation_code_version():
    """First 12 hex digits of the SHA-256 of ``data/degradations.py``: which code made an LR tree."""
    source = Path(__file__).with_name('degradations.py').read_bytes()
    return hashlib.sha256(source).hexdigest()[:12]


def manifest(degradation):
    """The ``lr_manifest.json`` content for LR frames made with ``degradation``."""
    spec = parse_degradation(degradation)
    return {'degradation': spec['type'], 'scale': spec['scale'], 'sigma': spec['sigma'],
            'kernel_size': spec['kernel_size'], 'padding': spec['padding'], 'offset': spec['offset'],
            'code_version': degradation_code_version()}


def check_manifest(lq_root, degradation):
    """Warn when ``<lq_root>/lr_manifest.json`` disagrees with ``degradation`` or cannot be read.

    A mismatch does not stop the run but is reported through ``warnings.warn`` so it shows in every log; a
    missing manifest is only logged, since official LR downloads carry none.
    """
    path = Path(lq_root) / MANIFEST_NAME
    spec = parse_degradation(degradation)
    if not path.is_file():
        logger.info('%s: no %s; cannot check that the LR frames were made with %s x%d',
                    lq_root, MANIFEST_NAME, spec['type'], spec['scale'])
        return
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f'{path}: unreadable LR manifest ({err}); cannot check the degradation', stacklevel=2)
        return
    expected = manifest(degradation)
    differences = [f'{field}={found.get(field)!r} (config: {expected[field]!r})'
                   for field in ('degradation', 'scale', 'sigma', 'kernel_size', 'padding', 'offset')
                   if field in found and found[field] != expected[field]]
    if differences:
        warnings.warn(f'{path}: LR frames were made with {", ".join(differences)}; results will not match the '
                      f'configured protocol', stacklevel=2)
    if found.get('code_version') != expected['code_version']:
        logger.info('%s: LR frames were made by degradations.py version %s, this code is %s',
                    path, found.get('code_version'), expected['code_version'])
