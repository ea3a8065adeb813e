"""Image quality metrics as pure functions: PSNR and SSIM with BasicSR's names and conventions.

Images are numpy arrays, (h, w, c) with RGB channel order or (h, w), on the [0, max_value] scale
(uint8, uint16 or float). Every computation runs in float64. The protocol knobs are explicit:

- ``crop_border``: pixels dropped from each of the four sides before scoring (usually the SR scale).
- ``test_y_channel``: score the luma Y of BT.601 as MATLAB's ``rgb2ycbcr`` computes it (not rounded),
  the convention of published STVSR/VSR tables.
- SSIM: 11x11 Gaussian window, sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2, averaged only over
  positions where the whole window fits in the image ("valid"), then over channels. This equals
  scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``, and BasicSR's ``calculate_ssim``.
"""
import math
import numbers

import cv2
import numpy as np

# MATLAB rgb2ycbcr, Y row: Y = 16 + (65.481 R + 128.553 G + 24.966 B) for R, G, B in [0, 1].
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])

_SSIM_WINDOW_SIZE = 11
_SSIM_SIGMA = 1.5


def rgb_to_y(img):
    """BT.601 luma of an RGB image, as MATLAB ``rgb2ycbcr`` computes it.

    img: (h, w, 3) RGB on the [0, 255] scale (uint8 or float). Returns (h, w) float64 Y in
    [16, 235], not rounded.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'rgb_to_y expects an (h, w, 3) RGB image, got shape {img.shape}')
    return 16.0 + (img.astype(np.float64) / 255.0) @ _Y_WEIGHTS


def to_uint8(x):
    """Float image in [0, 1] -> uint8 in [0, 255]: clip, scale, round (``np.round``, ties to even).

    Scoring the rounded image is the published protocol: methods are compared on the 8-bit frames
    they would save, so call this on network outputs before ``calculate_psnr``/``calculate_ssim``.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _prepare_pair(img, img2, crop_border, test_y_channel, max_value):
    """Check a pair of images and return them as float64 (h, w, c) arrays, cropped (and as Y if asked),
    together with the peak value of the scale they are now on."""
    img, img2 = np.asarray(img), np.asarray(img2)
    if img.shape != img2.shape:
        raise ValueError(f'images must have the same shape, got {img.shape} and {img2.shape}')
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f'expected non-empty (h, w) or (h, w, c) images, got shape {img.shape}')
    if not (isinstance(max_value, numbers.Real) and math.isfinite(max_value) and max_value > 0):
        raise ValueError(f'max_value must be a finite positive number, got {max_value!r}')
    if not isinstance(crop_border, numbers.Integral):
        raise ValueError(f'crop_border must be an integer, got {crop_border!r}')
    if crop_border < 0 or 2 * crop_border >= min(img.shape[:2]):
        raise ValueError(f'crop_border must be >= 0 and leave pixels of a {img.shape[:2]} image, '
                         f'got {crop_border}')
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    img, img2 = img.astype(np.float64), img2.astype(np.float64)
    if test_y_channel:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'test_y_channel needs (h, w, 3) RGB images, got shape {img.shape}')
        # rgb_to_y works on the 255 scale; PSNR and SSIM are unchanged when the images and the peak
        # are scaled together, so rescaling other ranges to 255 keeps the result exact.
        img = rgb_to_y(img * (255.0 / max_value))
        img2 = rgb_to_y(img2 * (255.0 / max_value))
        max_value = 255.0
    if img.ndim == 2:
        img, img2 = img[..., None], img2[..., None]
    return img, img2, float(max_value)


def calculate_psnr(img, img2, crop_border=0, test_y_channel=False, max_value=255.):
    """Peak signal-to-noise ratio in dB: 10 log10(max_value^2 / MSE), inf for identical images.

    img, img2: (h, w, c) RGB or (h, w) arrays of the same shape on the [0, max_value] scale.
    crop_border: pixels removed from each side before scoring. test_y_channel: score BT.601 Y only.
    """
    img, img2, max_value = _prepare_pair(img, img2, crop_border, test_y_channel, max_value)
    mse = np.mean((img - img2) ** 2)
    if mse == 0:
        return float('inf')
    return float(10.0 * np.log10(max_value ** 2 / mse))


def _gaussian_window_1d():
    """The normalised 1-D factor of SSIM's separable 11x11 Gaussian window (sigma 1.5)."""
    x = np.arange(_SSIM_WINDOW_SIZE) - _SSIM_WINDOW_SIZE // 2
    g = np.exp(-x ** 2 / (2.0 * _SSIM_SIGMA ** 2))
    return g / g.sum()


def _filter_valid(x, g):
    """Filter a (h, w) float64 map with the separable window g and keep only full-window positions:
    (h, w) -> (h - 10, w - 10). The border mode is irrelevant because the border is cut away."""
    r = len(g) // 2
    filtered = cv2.sepFilter2D(np.ascontiguousarray(x), cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
    return filtered[r:-r, r:-r]


def _ssim_single_channel(x, y, max_value):
    """Mean SSIM of two (h, w) float64 maps over the valid window positions."""
    c1 = (0.01 * max_value) ** 2
    c2 = (0.03 * max_value) ** 2
    g = _gaussian_window_1d()
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    # Population (not sample) variances and covariance, as in Wang et al. 2004 and MATLAB ssim.
    var_x = _filter_valid(x * x, g) - mu_x ** 2
    var_y = _filter_valid(y * y, g) - mu_y ** 2
    cov_xy = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
                / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    return ssim_map.mean()


def calculate_ssim(img, img2, crop_border=0, test_y_channel=False, max_value=255.):
    """Structural similarity (Wang et al. 2004), 1.0 for identical images.

    img, img2: (h, w, c) RGB or (h, w) arrays of the same shape on the [0, max_value] scale, at least
    11x11 after cropping. crop_border: pixels removed from each side before scoring.
    test_y_channel: score BT.601 Y only. For several channels, the per-channel SSIMs are averaged.
    """
    img, img2, max_value = _prepare_pair(img, img2, crop_border, test_y_channel, max_value)
    if min(img.shape[:2]) < _SSIM_WINDOW_SIZE:
        raise ValueError(f'SSIM needs images of at least {_SSIM_WINDOW_SIZE}x{_SSIM_WINDOW_SIZE} '
                         f'after cropping, got {img.shape[:2]}')
    channels = [_ssim_single_channel(img[..., c], img2[..., c], max_value) for c in range(img.shape[2])]
    return float(np.mean(channels))
