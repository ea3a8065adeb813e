"""MATLAB's bicubic ``imresize``, as pure functions on numpy arrays and torch tensors.

``imresize(img, scale)`` reproduces MATLAB ``imresize(img, scale, 'bicubic')``: Keys' cubic kernel (a = -0.5),
MATLAB's pixel mapping, antialiasing when shrinking, symmetric border mirroring, weight normalisation, pass
order (the dimension with the larger reduction first) and its conversion back to uint8 for uint8 input.
``imresize_torch`` computes the same weights on (..., c, h, w) tensors, differentiably, and also takes an
exact output ``size`` (MATLAB's ``imresize(img, [H W])``).

The resize kernels sit in this leaf layer because both sides use them: ``data/`` makes LR frames with
them, and ``models/baseline.py`` upscales with them.
"""
import functools
import math
import numbers

import numpy as np
import torch

# Keys' cubic convolution kernel with a = -0.5 is MATLAB's 'bicubic'; its support is [-2, 2].
_CUBIC_SUPPORT = 4.0


def _cubic(t):
    """Keys (1981) cubic kernel, a = -0.5, evaluated elementwise on a float64 array."""
    t = np.abs(t)
    near = (1.5 * t ** 3 - 2.5 * t ** 2 + 1.0) * (t <= 1)
    far = (-0.5 * t ** 3 + 2.5 * t ** 2 - 4.0 * t + 2.0) * ((t > 1) & (t <= 2))
    return near + far


def check_image(img):
    """Return ``img`` as an ndarray after checking it is an (h, w) or (h, w, c) uint8 or float image."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f'expected an (h, w) or (h, w, c) image, got shape {img.shape}')
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f'expected a uint8 or floating-point image, got dtype {img.dtype}')
    return img


def check_tensor(x):
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        desc = f'{x.dtype} tensor of shape {tuple(x.shape)}' if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f'expected a floating-point tensor (..., c, h, w), got {desc}')


def to_uint8_like_matlab(x):
    """float64 -> uint8 as MATLAB's uint8() does: clip to [0, 255], round half away from zero."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def _scale_pair(scale):
    """A scale factor, or an (h, w) pair of them, as a pair of positive floats."""
    pair = tuple(scale) if isinstance(scale, (tuple, list)) else (scale, scale)
    if len(pair) != 2 or not all(isinstance(s, numbers.Real) and math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(f'scale must be a positive number or an (h, w) pair of them, got {scale!r}')
    return tuple(float(s) for s in pair)


@functools.lru_cache(maxsize=32)
def _resize_matrix(in_length, scale, antialiasing, out_length=None):
    """The (out_length, in_length) float64 matrix of MATLAB's 1-D bicubic resize, out = ceil(in * scale)
    unless ``out_length`` is given (MATLAB's output-size form, where scale = out_length / in_length).

    Follows MATLAB ``imresize``'s ``contributions``: output pixel x (1-based) maps to input coordinate
    u = x / scale + 0.5 (1 - 1 / scale); when shrinking with antialiasing the kernel is stretched by
    1 / scale so it low-passes (MATLAB also multiplies it by ``scale``, which the normalisation cancels;
    kept to follow its arithmetic); weights are normalised per output pixel and indices outside the
    signal are mirrored with the edge sample repeated (symmetric padding). MATLAB then drops taps that
    are zero for every output pixel; in a dense matrix they add nothing, so that step is not needed.
    """
    out_length = math.ceil(in_length * scale) if out_length is None else out_length
    if scale < 1 and antialiasing:
        def kernel(t):
            return scale * _cubic(scale * t)
        kernel_width = _CUBIC_SUPPORT / scale
    else:
        kernel = _cubic
        kernel_width = _CUBIC_SUPPORT
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    indices = indices.astype(np.int64)
    # Mirror 1-based indices into [1, in_length]: the padded signal is periodic with period
    # 2 * in_length (x1..xn, xn..x1). Converted to 0-based here.
    period = np.mod(indices - 1, 2 * in_length)
    indices = np.where(period < in_length, period, 2 * in_length - 1 - period)
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), weights.shape[1]), indices.ravel()),
              weights.ravel())
    matrix.setflags(write=False)
    return matrix


def _resize_order(scale_h, scale_w):
    """MATLAB resizes the dimension with the smaller scale (larger reduction) first; H on ties."""
    return (0, 1) if scale_h <= scale_w else (1, 0)


def imresize(img, scale, antialiasing=True):
    """MATLAB ``imresize(img, scale, 'bicubic')``: the same kernel, pixel mapping, border mirroring,
    weights, pass order and uint8 conversion.

    img: (h, w, c) or (h, w), uint8 or float (any range). scale: a factor (< 1 shrinks, > 1 enlarges)
    or an (h, w) pair of factors. Returns (ceil(h * scale_h), ceil(w * scale_w)[, c]).
    Float input -> float64 output (not clipped: bicubic overshoots near edges). uint8 input -> uint8
    output, rounded after each 1-D pass, because MATLAB's per-dimension resize returns its input's class.
    antialiasing: widen the kernel when shrinking (MATLAB's default, true).
    """
    img = check_image(img)
    scales = _scale_pair(scale)
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    for axis in _resize_order(*scales):
        matrix = _resize_matrix(out.shape[axis], scales[axis], bool(antialiasing))
        out = np.moveaxis(np.tensordot(matrix, out, axes=(1, axis)), 0, axis)
        if is_uint8:
            out = to_uint8_like_matlab(out).astype(np.float64)
    return out.astype(np.uint8) if is_uint8 else out


@torch.compiler.disable  # numpy inside: torch.compile calls it as it is (a constant per input size)
@functools.lru_cache(maxsize=32)
def _resize_matrix_torch(in_length, scale, antialiasing, device, dtype, out_length=None):
    """``_resize_matrix`` as a tensor, cached so repeated calls (a training loop) skip the copy."""
    return torch.from_numpy(np.array(_resize_matrix(in_length, scale, antialiasing, out_length))).to(device, dtype)


def imresize_torch(x, scale=None, antialiasing=True, size=None):
    """``imresize`` on tensors: (..., c, h, w) floating -> (..., c, ceil(h * scale_h), ceil(w * scale_w)).

    ``size=(H, W)`` instead of ``scale`` is MATLAB's ``imresize(img, [H W], 'bicubic')``: the factors are
    H / h and W / w and the output is exactly H x W (any factor, e.g. the random scales of any-scale
    training). Same weights as the numpy version (built in float64, cast to x's dtype; cached per input
    length, scale, device and dtype). Differentiable; no rounding or clipping.
    """
    check_tensor(x)
    if (scale is None) == (size is None):
        raise ValueError('imresize_torch: give exactly one of scale and size')
    if size is not None:
        if len(size) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
            raise ValueError(f'size must be an (H, W) pair of positive integers, got {size!r}')
        scales, lengths = (size[0] / x.shape[-2], size[1] / x.shape[-1]), tuple(size)
    else:
        scales, lengths = _scale_pair(scale), (None, None)
    for axis in _resize_order(*scales):
        dim = x.ndim - 2 + axis
        matrix = _resize_matrix_torch(x.shape[dim], scales[axis], bool(antialiasing), x.device, x.dtype,
                                      lengths[axis])
        x = matrix @ x if axis == 0 else x @ matrix.T
    return x
