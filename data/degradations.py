"""Degradations that make low-resolution frames from ground truth, as pure functions.

Three protocols appear in the STVSR literature, and each has its own function here:

- ``imresize`` / ``imresize_torch``: MATLAB ``imresize(img, scale, 'bicubic')`` ("BI"), the protocol of
  Vimeo-90K and Vid4 LR frames in Zooming Slow-Mo, STDAN and most STVSR tables.
- ``bd_downsample`` / ``bd_downsample_torch``: Gaussian blur then subsampling ("BD"), as in DUF and
  BasicSR's ``duf_downsample``.
- ``pil_bicubic_resize``: PIL's ``Image.BICUBIC`` resize, what the official STARnet and MSTT code used.

numpy functions take (h, w, c) or (h, w) arrays and compute in float64: float input gives float64
output on the input's scale, not clipped; uint8 input gives uint8 output (rounded, ties away from zero,
and clipped to [0, 255], as MATLAB converts). torch functions take floating tensors (..., c, h, w) with
any leading dimensions, keep their dtype and device, and are differentiable.
"""
import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Keys' cubic convolution kernel with a = -0.5 is MATLAB's 'bicubic'; its support is [-2, 2].
_CUBIC_SUPPORT = 4.0


def _cubic(t):
    """Keys (1981) cubic kernel, a = -0.5, evaluated elementwise on a float64 array."""
    t = np.abs(t)
    near = (1.5 * t ** 3 - 2.5 * t ** 2 + 1.0) * (t <= 1)
    far = (-0.5 * t ** 3 + 2.5 * t ** 2 - 4.0 * t + 2.0) * ((t > 1) & (t <= 2))
    return near + far


def _check_numpy_image(img):
    """Return ``img`` as an ndarray after checking it is an (h, w) or (h, w, c) uint8 or float image."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f'expected an (h, w) or (h, w, c) image, got shape {img.shape}')
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f'expected a uint8 or floating-point image, got dtype {img.dtype}')
    return img


def _check_tensor(x):
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        desc = f'{x.dtype} tensor of shape {tuple(x.shape)}' if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f'expected a floating-point tensor (..., c, h, w), got {desc}')


def _to_uint8_like_matlab(x):
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
    img = _check_numpy_image(img)
    scales = _scale_pair(scale)
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    for axis in _resize_order(*scales):
        matrix = _resize_matrix(out.shape[axis], scales[axis], bool(antialiasing))
        out = np.moveaxis(np.tensordot(matrix, out, axes=(1, axis)), 0, axis)
        if is_uint8:
            out = _to_uint8_like_matlab(out).astype(np.float64)
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
    _check_tensor(x)
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


def bd_kernel(kernel_size=13, sigma=1.6):
    """(kernel_size, kernel_size) float64 Gaussian, sampled at integer offsets from the centre, sum 1."""
    g = _gaussian_1d(kernel_size, sigma)
    return np.outer(g, g)


def _gaussian_1d(kernel_size, sigma):
    """The separable factor of ``bd_kernel``: (kernel_size,) float64, sum 1."""
    if not isinstance(kernel_size, numbers.Integral) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be an odd positive integer, got {kernel_size!r}')
    if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f'sigma must be a finite positive number, got {sigma!r}')
    t = np.arange(kernel_size) - kernel_size // 2
    g = np.exp(-t ** 2 / (2.0 * sigma ** 2))
    return g / g.sum()


# Padding names follow torch; numpy spells 'replicate' as 'edge'.
_NUMPY_PAD_MODES = {'reflect': 'reflect', 'replicate': 'edge'}


def _check_bd_args(h, w, scale, kernel_size, padding, offset):
    if not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale!r}')
    if not isinstance(offset, numbers.Integral) or not 0 <= offset < scale:
        raise ValueError(f'offset must be an integer in [0, scale={scale}), got {offset!r}')
    if offset >= min(h, w):
        raise ValueError(f'offset {offset} leaves no pixels of a {h}x{w} image')
    if not isinstance(padding, str) or padding not in _NUMPY_PAD_MODES:
        raise ValueError(f'padding must be one of {sorted(_NUMPY_PAD_MODES)}, got {padding!r}')
    if padding == 'reflect' and min(h, w) <= kernel_size // 2:
        raise ValueError(f'reflect padding by {kernel_size // 2} needs an image larger than that, '
                         f'got {h}x{w}')


def bd_downsample(img, scale=4, sigma=1.6, kernel_size=13, padding='reflect', offset=0):
    """Blur-downsample ("BD"): Gaussian blur, then keep every ``scale``-th pixel.

    img: (h, w, c) or (h, w), uint8 or float. Returns img blurred with ``bd_kernel(kernel_size, sigma)``
    and sampled at rows and columns offset, offset + scale, ...: shape (ceil((h - offset) / scale),
    ceil((w - offset) / scale)[, c]), i.e. (h / scale, w / scale) when scale divides h and w.
    Float input -> float64 output; uint8 input -> uint8 output (rounded once, at the end).

    Defaults are DUF's (and BasicSR ``duf_downsample``'s for x4): sigma 1.6 (0.4 * scale), a 13x13
    kernel, 'reflect' padding (mirror without repeating the edge pixel; 'replicate' repeats it), and
    offset 0, i.e. the top-left pixel of each scale x scale block, as ``x[::s, ::s]``. offset =
    scale // 2 takes the centre pixel (for even scale, the lower-right of the four central ones).
    """
    img = _check_numpy_image(img)
    g = _gaussian_1d(kernel_size, sigma)
    _check_bd_args(img.shape[0], img.shape[1], scale, kernel_size, padding, offset)
    r = kernel_size // 2
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode=_NUMPY_PAD_MODES[padding])
        n = len(range(offset, out.shape[axis], scale))
        # Output i sees padded samples offset + i * scale + k, k = 0..kernel_size-1, i.e. the kernel
        # centred on input pixel offset + i * scale.
        samples = offset + scale * np.arange(n)
        out = sum(g[k] * np.take(padded, samples + k, axis=axis) for k in range(kernel_size))
    return _to_uint8_like_matlab(out) if img.dtype == np.uint8 else out


def bd_downsample_torch(x, scale=4, sigma=1.6, kernel_size=13, padding='reflect', offset=0):
    """``bd_downsample`` on tensors: (..., c, h, w) floating -> (..., c, ceil((h - offset) / scale),
    ceil((w - offset) / scale)). Same arguments and defaults; differentiable, keeps dtype and device."""
    _check_tensor(x)
    h, w = x.shape[-2:]
    g = torch.from_numpy(_gaussian_1d(kernel_size, sigma)).to(x.device, x.dtype)
    _check_bd_args(h, w, scale, kernel_size, padding, offset)
    r = kernel_size // 2
    planes = x.reshape(-1, 1, h, w)
    planes = F.pad(planes, (r, r, r, r), mode=padding)[..., offset:, offset:]
    planes = F.conv2d(planes, g.view(1, 1, -1, 1), stride=(scale, 1))
    planes = F.conv2d(planes, g.view(1, 1, 1, -1), stride=(1, scale))
    return planes.reshape(*x.shape[:-2], *planes.shape[-2:])


def pil_bicubic_resize(img, scale):
    """PIL ``Image.resize(..., Image.BICUBIC)``, the LR protocol of the official STARnet and MSTT code.

    img: (h, w, 3), (h, w, 1) or (h, w) uint8. Returns uint8 of shape (int(h * scale), int(w * scale)
    [, c]): sizes are truncated, as the official ``int(size / factor)`` does. PIL's bicubic is also
    Keys' a = -0.5 with antialiasing and the same pixel centres, but it clamps taps at the border
    instead of mirroring and resizes width first (``imresize`` does height first), rounding to 8 bits
    in between. On a Vid4 frame at x1/4 it differs from ``imresize``'s uint8 output by 0.3 grey levels
    on average, up to 4 inside and about 20 on the outermost pixels.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise ValueError(f'expected an (h, w), (h, w, 1) or (h, w, 3) uint8 image, '
                         f'got {img.dtype} of shape {img.shape}')
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(f'scale must be a finite positive number, got {scale!r}')
    h, w = img.shape[:2]
    size_hw = (int(h * scale), int(w * scale))
    if min(size_hw) < 1:
        raise ValueError(f'scale {scale} leaves no pixels of a {h}x{w} image')
    squeezed = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img
    out = np.asarray(Image.fromarray(squeezed).resize(size_hw[::-1], Image.Resampling.BICUBIC))
    return out.reshape(*size_hw, *img.shape[2:])


def modcrop(img, scale):
    """Crop an (h, w[, c]) array to (h - h % scale, w - w % scale[, c]), keeping the top-left part.

    Makes HR frames divisible by the SR scale so that HR and LR pixel grids line up exactly.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f'expected an (h, w) or (h, w, c) image, got shape {img.shape}')
    if not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale!r}')
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]
