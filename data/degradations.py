"""Degradations that make low-resolution frames from ground truth, as pure functions.

Three protocols appear in the STVSR literature, and each has its own function here:

- ``bi_resize``: MATLAB ``imresize(img, scale, 'bicubic')`` ("BI") of an integer frame, the protocol of the
  Vimeo-90K, Vid4 and Jilin-1 LR sets in Zooming Slow-Mo, STDAN, MSTT and most STVSR tables. The kernels are
  ``utils.resize.imresize`` / ``imresize_torch`` (in the leaf layer, as the baseline network upscales with
  them too); this function adds the conversion back to the frame's integer type (``ROUNDINGS``).
- ``bd_downsample`` / ``bd_downsample_torch``: Gaussian blur then subsampling ("BD"), with the three
  published recipes as ``BD_PRESETS`` (DUF / BasicSR ``duf_downsample``, BasicVSR's ``BD_degradation.m``,
  STDAN's MATLAB ``imresize_BD``).
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

from utils.resize import check_image, check_tensor, imresize_torch, to_uint8_like_matlab

# How BI converts its float result back to the frame's integer type. 'once' (the default): the float resize of
# the frame, rounded once at the end, half away from zero; what the official LR sets hold, made by
# im2double -> imresize -> imwrite in MATLAB, or imresize_np -> cv2.imwrite in the ZSM/STDAN Python scripts
# (MSTT's published Jilin-1 input4 frames: 66.3 dB to it, 57.3 dB to per_pass). 'per_pass': rounded to the
# integer type after each 1-D pass, what MATLAB's imresize returns when given the uint8 array itself.
ROUNDINGS = ('once', 'per_pass')

# The published BD recipes, by name (arguments of bd_downsample). All blur with sigma 1.6 at x4.
# - duf: DUF's DownSample (VSR-DUF utils.py) and BasicSR's duf_downsample: 13 taps, mirror padding without
#   repeating the edge pixel, the top-left pixel of each 4x4 block.
# - basicvsr: BasicVSR/IconVSR's BD_degradation.m (also RDN's and RCAN's test scripts): fspecial('gaussian',
#   12, 1.6), imfilter(.., 'replicate'), lq = hq(2:4:end-2, 2:4:end-2): rows 1, 5, 9, .. (0-based) of a kernel
#   whose centre is half a pixel below-right of its output pixel, i.e. the blur centred on each block's centre.
# - stdan: the BD branch of STDAN's codes/data_scripts/generate_LR_Vimeo90K.m (imresize_BD): fspecial('gaussian',
#   7, 1.6), imfilter(.., 'replicate'), imresize(.., 1/4, 'nearest'), which keeps rows 2, 6, 10, .. (0-based).
BD_PRESETS = {
    'duf': {'sigma': 1.6, 'kernel_size': 13, 'padding': 'reflect', 'offset': 0},
    'basicvsr': {'sigma': 1.6, 'kernel_size': 12, 'padding': 'replicate', 'offset': 1},
    'stdan': {'sigma': 1.6, 'kernel_size': 7, 'padding': 'replicate', 'offset': 2},
}


def bd_kernel(kernel_size=13, sigma=1.6):
    """(kernel_size, kernel_size) float64 Gaussian, MATLAB ``fspecial('gaussian', kernel_size, sigma)``: sampled
    at offsets -(k-1)/2 .. (k-1)/2 from its centre (half-integers for an even size), sum 1."""
    g = _gaussian_1d(kernel_size, sigma)
    return np.outer(g, g)


def _gaussian_1d(kernel_size, sigma):
    """The separable factor of ``bd_kernel``: (kernel_size,) float64, sum 1 (fspecial's 2-D kernel is this
    outer product: the exponential factorises and so does its sum)."""
    if not isinstance(kernel_size, numbers.Integral) or isinstance(kernel_size, bool) or kernel_size < 1:
        raise ValueError(f'kernel_size must be a positive integer, got {kernel_size!r}')
    if not (isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f'sigma must be a finite positive number, got {sigma!r}')
    t = np.arange(kernel_size) - (kernel_size - 1) / 2
    g = np.exp(-t ** 2 / (2.0 * sigma ** 2))
    return g / g.sum()


def _kernel_reach(kernel_size):
    """Input pixels the kernel reaches before and after its output pixel: MATLAB imfilter puts the centre of a
    k-tap kernel on tap floor((k + 1) / 2) (1-based), so an even kernel reaches one pixel further after."""
    before = (kernel_size - 1) // 2
    return before, kernel_size - 1 - before


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
    if padding == 'reflect' and min(h, w) <= max(_kernel_reach(kernel_size)):
        raise ValueError(f'reflect padding by {max(_kernel_reach(kernel_size))} needs an image larger than that, '
                         f'got {h}x{w}')


def bd_downsample(img, scale=4, sigma=1.6, kernel_size=13, padding='reflect', offset=0):
    """Blur-downsample ("BD"): Gaussian blur, then keep every ``scale``-th pixel.

    img: (h, w, c) or (h, w), uint8 or float. Returns img filtered as MATLAB ``imfilter(img, bd_kernel(
    kernel_size, sigma), padding)`` (correlation) and sampled at rows and columns offset, offset + scale, ...:
    shape (ceil((h - offset) / scale), ceil((w - offset) / scale)[, c]), i.e. (h / scale, w / scale) when
    scale divides h and w. Float input -> float64 output; uint8 input -> uint8 output (rounded once, at the
    end, as imfilter returns uint8 from uint8).

    Defaults are DUF's (``BD_PRESETS['duf']``, BasicSR ``duf_downsample`` for x4): sigma 1.6 (0.4 * scale), a
    13x13 kernel, 'reflect' padding (mirror without repeating the edge pixel; 'replicate' repeats it), and
    offset 0, i.e. the top-left pixel of each scale x scale block, as ``x[::s, ::s]``. An odd kernel is
    centred on the sampled pixel; an even one (MATLAB's centre tap k/2, 1-based) half a pixel below and
    right of it, so ``kernel_size=12, offset=1`` centres the blur of every sample on its 4x4 block's centre.
    """
    img = check_image(img)
    g = _gaussian_1d(kernel_size, sigma)
    _check_bd_args(img.shape[0], img.shape[1], scale, kernel_size, padding, offset)
    out = img.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = _kernel_reach(kernel_size)
        padded = np.pad(out, pad, mode=_NUMPY_PAD_MODES[padding])
        n = len(range(offset, out.shape[axis], scale))
        # Output i sees padded samples offset + i * scale + k, k = 0..kernel_size-1, i.e. input pixels
        # offset + i * scale - before .. offset + i * scale + after.
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
    before, after = _kernel_reach(kernel_size)
    planes = x.reshape(-1, 1, h, w)
    planes = F.pad(planes, (before, after, before, after), mode=padding)[..., offset:, offset:]
    planes = F.conv2d(planes, g.view(1, 1, -1, 1), stride=(scale, 1))
    planes = F.conv2d(planes, g.view(1, 1, 1, -1), stride=(1, scale))
    return planes.reshape(*x.shape[:-2], *planes.shape[-2:])


def bi_resize(frame, scale=None, size=None, rounding='once'):
    """MATLAB bicubic ``imresize`` of an integer frame ("BI"), back to the frame's integer type.

    frame: (h, w, c) or (h, w) uint8 or uint16. Give ``scale`` (a factor, 1/4 for the x4 LR of STVSR; output
    ceil(h * scale) x ceil(w * scale)) or ``size`` (h', w'), MATLAB's ``imresize(frame, [h' w'])``, any factor.
    white is the type's maximum. rounding (``ROUNDINGS``): 'once' resizes ``frame / white`` (``im2double``) in
    float64 and rounds ``white`` times the result, half away from zero, clipped to the type's range (what
    ``imwrite`` writes); 'per_pass' rounds after each 1-D pass, in MATLAB's pass order (the smaller factor
    first, height on ties), as MATLAB's imresize does on the integer array itself and as
    ``utils.resize.imresize`` does on uint8 input.

    Computed with ``imresize_torch`` (the same weights as ``imresize``): numpy's BLAS cannot be limited to one
    thread and was 20-100x slower on crop-sized matrices on a busy machine, while torch runs single-threaded
    inside DataLoader workers (in the main process torch's own threads suffer the same way, so load training
    data with workers).
    """
    frame = np.asarray(frame)
    if frame.dtype not in (np.uint8, np.uint16) or frame.ndim not in (2, 3):
        raise ValueError(f'expected an (h, w) or (h, w, c) uint8 or uint16 frame, got {frame.dtype} of shape '
                         f'{frame.shape}')
    if rounding not in ROUNDINGS:
        raise ValueError(f'rounding must be one of {", ".join(ROUNDINGS)}, got {rounding!r}')
    if (scale is None) == (size is None):
        raise ValueError('bi_resize: give exactly one of scale and size')
    white = np.iinfo(frame.dtype).max
    planes = frame[..., None] if frame.ndim == 2 else frame
    x = torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1))).to(torch.float64)
    h, w = x.shape[-2:]
    if size is None:
        scale_h = scale_w = float(scale)
        size = (math.ceil(h * scale_h), math.ceil(w * scale_w))
    else:
        scale_h, scale_w = size[0] / h, size[1] / w
    if rounding == 'once':  # on im2double's scale, [0, 1], so exact ties round as MATLAB's im2uint8 sees them
        x = imresize_torch(x.div_(white), size=tuple(size)).mul_(white)
    else:
        passes = [(size[0], w), tuple(size)] if scale_h <= scale_w else [(h, size[1]), tuple(size)]
        for pass_size in passes:
            x = imresize_torch(x, size=pass_size).clamp_(0, white).add_(0.5).floor_()
    x = x.clamp_(0, white).add_(0.5).floor_()
    out = x.permute(1, 2, 0).numpy().astype(frame.dtype)
    return out[..., 0] if frame.ndim == 2 else out


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
