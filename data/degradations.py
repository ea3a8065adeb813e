"""Degradations that make low-resolution frames from ground truth, as pure functions.

Three protocols appear in the STVSR literature, and each has its own function here:

- ``utils.resize.imresize`` / ``imresize_torch``: MATLAB ``imresize(img, scale, 'bicubic')`` ("BI"), the
  protocol of Vimeo-90K and Vid4 LR frames in Zooming Slow-Mo, STDAN and most STVSR tables (in the leaf
  layer, as the baseline network upscales with it too).
- ``bd_downsample`` / ``bd_downsample_torch``: Gaussian blur then subsampling ("BD"), as in DUF and
  BasicSR's ``duf_downsample``.
- ``pil_bicubic_resize``: PIL's ``Image.BICUBIC`` resize, what the official STARnet and MSTT code used.

numpy functions take (h, w, c) or (h, w) arrays and compute in float64: float input gives float64
output on the input's scale, not clipped; uint8 input gives uint8 output (rounded, ties away from zero,
and clipped to [0, 255], as MATLAB converts). torch functions take floating tensors (..., c, h, w) with
any leading dimensions, keep their dtype and device, and are differentiable.
"""
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.resize import check_image, check_tensor, to_uint8_like_matlab


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
    img = check_image(img)
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
    return to_uint8_like_matlab(out) if img.dtype == np.uint8 else out


def bd_downsample_torch(x, scale=4, sigma=1.6, kernel_size=13, padding='reflect', offset=0):
    """``bd_downsample`` on tensors: (..., c, h, w) floating -> (..., c, ceil((h - offset) / scale),
    ceil((w - offset) / scale)). Same arguments and defaults; differentiable, keeps dtype and device."""
    check_tensor(x)
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
