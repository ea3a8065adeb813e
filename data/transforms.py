"""The degradation dispatch, aligned LR/GT crops, augmentation, and the sample dicts all datasets return.

Every dataset takes the same ``degradation`` option::

    degradation: {type: BI, scale: 4}                  # MATLAB imresize bicubic, rounded once (bi_resize)
    degradation: {type: BI, scale: 4, rounding: per_pass}   # rounded after each 1-D pass (MATLAB on uint8)
    degradation: {type: BD, scale: 4}                  # DUF's Gaussian blur (preset duf), every 4th pixel
    degradation: {type: BD, scale: 4, preset: basicvsr}     # BD_degradation.m (degradations.BD_PRESETS)
    degradation: {type: PIL, scale: 4}                 # PIL Image.BICUBIC (pil_bicubic_resize), 8-bit only

LR frames made on the fly are rounded to the ground truth's integer grid (8 or 16 bits), exactly as if they
had been written to disk by ``data_scripts/generate_lr.py``, so training on the fly or from a precomputed
LR tree (``lq_root``) gives the same numbers. A precomputed tree carries ``lr_manifest.json``::

    {"degradation": "BI", "scale": 4, "rounding": "once", "sigma": null, ..., "code_version": "<sha256>"}

and loaders warn loudly when it disagrees with the configured degradation (a BI manifest without
``rounding`` was written before the option existed, when BI rounded after each pass: it reads as per_pass).
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

from .degradations import BD_PRESETS, ROUNDINGS, bd_downsample, bi_resize, pil_bicubic_resize
from .io import max_value, to_float

logger = logging.getLogger(__name__)

DEGRADATION_TYPES = ('BI', 'BD', 'PIL')
MANIFEST_NAME = 'lr_manifest.json'
BD_KEYS = ('sigma', 'kernel_size', 'padding', 'offset')
# The fields of a degradation that change the LR pixels (the manifest records them all).
SPEC_FIELDS = ('degradation', 'scale', 'rounding', 'preset') + BD_KEYS


def parse_degradation(degradation=None):
    """Validate a degradation option; returns a new dict with every key filled in.

    ``{type: BI|BD|PIL, scale: 4, rounding: once, preset: duf, sigma: 1.6, kernel_size: 13, padding: reflect,
    offset: 0}``. ``None`` means BI x4, the protocol of most STVSR tables.

    - ``rounding`` (BI only; ``degradations.ROUNDINGS``): ``once`` (default, the official LR sets) or
      ``per_pass`` (MATLAB's imresize on a uint8 array).
    - ``preset`` (BD only; ``degradations.BD_PRESETS``: duf, basicvsr, stdan) fills ``sigma``, ``kernel_size``,
      ``padding`` and ``offset`` (see ``degradations.bd_downsample``). Without a preset they default to duf's
      and each may be set; with one, a key that contradicts it is an error. The parsed ``preset`` names the
      preset the four values equal, or None.

    Keys that do not apply to the type are set to None, so one config template can switch ``type`` without
    editing them.
    """
    spec = dict(degradation or {'type': 'BI', 'scale': 4})
    unknown = set(spec) - {'type', 'scale', 'rounding', 'preset', *BD_KEYS}
    if unknown:
        raise ValueError(f'degradation: unknown keys {sorted(unknown)}; expected type, scale, rounding, preset, '
                         f'{", ".join(BD_KEYS)}')
    kind = str(spec.get('type', 'BI')).upper()
    if kind not in DEGRADATION_TYPES:
        raise ValueError(f'degradation: type {spec.get("type")!r} is not one of {", ".join(DEGRADATION_TYPES)}')
    scale = spec.get('scale', 4)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f'degradation: scale must be a positive integer, got {scale!r}')
    out = {'type': kind, 'scale': scale, 'rounding': None, 'preset': None, **{k: None for k in BD_KEYS}}
    if kind == 'BI':
        out['rounding'] = spec.get('rounding') or 'once'
        if out['rounding'] not in ROUNDINGS:
            raise ValueError(f'degradation: rounding must be one of {", ".join(ROUNDINGS)}, got {spec["rounding"]!r}')
    if kind == 'BD':
        preset = spec.get('preset')
        if preset is not None and preset not in BD_PRESETS:
            raise ValueError(f'degradation: preset must be one of {", ".join(BD_PRESETS)}, got {preset!r}')
        if preset is not None and scale != 4:
            raise ValueError(f'degradation: preset {preset} is an x4 recipe; at scale {scale} give sigma, '
                             f'kernel_size, padding and offset instead')
        base = BD_PRESETS[preset or 'duf']
        given = {k: spec[k] for k in BD_KEYS if spec.get(k) is not None}
        if preset is not None:
            clash = [f'{k}={v!r} (preset {preset}: {base[k]!r})' for k, v in given.items() if v != base[k]]
            if clash:
                raise ValueError(f'degradation: {", ".join(clash)}; drop the key or the preset')
        out.update({**base, **given})
        out['sigma'] = float(out['sigma'])
        if out['sigma'] <= 0:
            raise ValueError(f'degradation: sigma must be positive, got {out["sigma"]!r}')
        if not isinstance(out['kernel_size'], int) or isinstance(out['kernel_size'], bool) or out['kernel_size'] < 1:
            raise ValueError(f'degradation: kernel_size must be a positive integer, got {out["kernel_size"]!r}')
        if out['padding'] not in ('reflect', 'replicate'):
            raise ValueError(f'degradation: padding must be reflect or replicate, got {out["padding"]!r}')
        if not isinstance(out['offset'], int) or not 0 <= out['offset'] < scale:
            raise ValueError(f'degradation: offset must be an integer in [0, {scale}), got {out["offset"]!r}')
        out['preset'] = next((name for name, values in BD_PRESETS.items()
                              if scale == 4 and all(out[k] == v for k, v in values.items())), None)
    return out


def describe_lr(degradation, lq_root=None):
    """How a clip dataset's LR frames are made, in words (the header of test.py's tables)."""
    if lq_root is not None:
        return f'LR from {lq_root} ({degradation["type"]} x{degradation["scale"]})'
    extra = ''
    if degradation['type'] == 'BD':
        name = f'{degradation["preset"]}: ' if degradation['preset'] else ''
        extra = (f' ({name}sigma {degradation["sigma"]:g}, {degradation["kernel_size"]} taps, '
                 f'{degradation["padding"]}, offset {degradation["offset"]})')
    elif degradation['type'] == 'BI' and degradation['rounding'] != 'once':
        extra = f' (rounded {degradation["rounding"].replace("_", " ")})'
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

    ``frame`` must already be modcropped to the scale. BI and BD compute in float64 and round once (half
    away from zero, saturating) to the frame's dtype, as the official MATLAB-made LR sets were written
    (``rounding: per_pass`` rounds BI after each 1-D pass instead); a 12-bit clip stored in 16 bits may thus
    hold bicubic overshoot above 4095, which :func:`~data.io.to_float` clips when ``bit_depth`` is given.
    """
    spec = parse_degradation(degradation)
    kind, scale = spec['type'], spec['scale']
    if frame.shape[0] % scale or frame.shape[1] % scale:
        raise DataError(f'frame of {frame.shape[1]}x{frame.shape[0]} is not modcropped to scale {scale}')
    if frame.dtype not in (np.uint8, np.uint16):
        raise DataError(f'expected a uint8 or uint16 frame, got {frame.dtype}')
    if kind == 'BI':
        return bi_resize(frame, 1 / scale, rounding=spec['rounding'])
    if kind == 'PIL':
        if frame.dtype != np.uint8:
            raise DataError(f'PIL degradation handles 8-bit frames only, got {frame.dtype}; use BI or BD')
        return pil_bicubic_resize(frame, 1 / scale)
    bd = {k: spec[k] for k in BD_KEYS}
    if frame.dtype == np.uint8:
        return bd_downsample(frame, scale=scale, **bd)
    out = bd_downsample(frame.astype(np.float64), scale=scale, **bd)
    return np.clip(np.round(out), 0, np.iinfo(frame.dtype).max).astype(frame.dtype)


def resize_to(frame, size, kind='BI', rounding='once'):
    """One integer frame ``(H, W, 3)`` -> ``size`` (h, w), same dtype, at any (non-integer) factor.

    ``BI``: MATLAB ``imresize(frame, [h w], 'bicubic')`` rounded as :func:`degrade` rounds (``rounding``, BI
    only); ``PIL``: ``Image.resize`` bicubic (8-bit only). The any-scale training samples use it (BD, a blur
    and an integer subsampling step, has no non-integer form).
    """
    if kind == 'PIL':
        if frame.dtype != np.uint8:
            raise DataError(f'PIL degradation handles 8-bit frames only, got {frame.dtype}; use BI')
        return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BICUBIC))
    if kind != 'BI':
        raise ValueError(f'resize_to: kind must be BI or PIL, got {kind!r}')
    return bi_resize(frame, size=tuple(size), rounding=rounding)


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
    if lq_size is not None and (isinstance(lq_size, bool) or not isinstance(lq_size, int) or lq_size < 0):
        raise ValueError(f'lq_size must be a positive number of LR pixels (0 or null: whole frames), got {lq_size!r}')
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


def augment(clips, use_flip, use_rot, use_time_reverse, rng=random, use_vflip=False):
    """Apply one random flip/rotation/time-reversal identically to every ``(T, H, W, C)`` array in ``clips``.

    use_flip: horizontal flip, left-right (p 0.5). use_rot: vertical flip and H/W transpose (each p 0.5);
    with the horizontal flip they give all 8 rotations by 90 degrees and mirrorings (the ZSM/EDVR augment).
    use_vflip: a vertical flip alone (p 0.5), without the transposes; with use_flip the 4 orientations
    identity, mirror, flip, rot180, each p 1/4, which is what STARnet's and MSTT's augment (flip, mirror and
    rot180, each p 0.5) amounts to; the frames keep their shape. use_time_reverse: play the clip backwards
    (p 0.5), so LR inputs 0, 2, 4, 6 become GT frames 6, 4, 2, 0 and stay aligned. Draws are made only for
    the options that are on, so turning one on leaves the others' draws as they were.
    """
    hflip = use_flip and rng.random() < 0.5
    vflip = use_rot and rng.random() < 0.5
    transpose = use_rot and rng.random() < 0.5
    reverse = use_time_reverse and rng.random() < 0.5
    vflip ^= bool(use_vflip) and rng.random() < 0.5
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
                    use_time_reverse=False, bit_depth=None, rng=random, use_vflip=False):
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
    lq, gt = augment([to_float(lq, bit_depth), to_float(gt, bit_depth)], use_flip, use_rot, use_time_reverse, rng,
                     use_vflip)
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
    """First 12 hex digits of the SHA-256 of ``data/degradations.py`` and ``utils/resize.py``, the code that
    computes LR pixels: which code made an LR tree."""
    digest = hashlib.sha256()
    for path in (Path(__file__).with_name('degradations.py'), Path(__file__).parents[1] / 'utils' / 'resize.py'):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def manifest(degradation):
    """The ``lr_manifest.json`` content for LR frames made with ``degradation``."""
    spec = parse_degradation(degradation)
    return {'degradation': spec['type'], **{k: spec[k] for k in SPEC_FIELDS[1:]},
            'code_version': degradation_code_version()}


def manifest_differences(found, degradation):
    """``field=found (config: expected)`` for every field of a manifest that disagrees with ``degradation``.

    Fields a manifest lacks are not compared, except BI's ``rounding``: manifests written before it was
    recorded come from code that rounded after each pass, so a missing value reads as ``per_pass``.
    """
    expected = manifest(degradation)
    found = dict(found)
    if found.get('degradation') == 'BI' and 'rounding' not in found:
        found['rounding'] = 'per_pass'
    return [f'{field}={found.get(field)!r} (config: {expected[field]!r})' for field in SPEC_FIELDS
            if field in found and found[field] != expected[field]]


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
    differences = manifest_differences(found, degradation)
    if differences:
        warnings.warn(f'{path}: LR frames were made with {", ".join(differences)}; results will not match the '
                      f'configured protocol', stacklevel=2)
    version = degradation_code_version()
    if found.get('code_version') != version:
        logger.info('%s: LR frames were made by degradation code version %s, this code is %s',
                    path, found.get('code_version'), version)
