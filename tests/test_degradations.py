"""Degradations against hand-derived MATLAB weights, outside implementations (PIL, OpenCV, SciPy) and
real Vid4 frames; numpy and torch versions against each other."""
import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from data.degradations import bd_downsample, bd_downsample_torch, bd_kernel, modcrop, pil_bicubic_resize
from tests.conftest import require
from utils.resize import imresize, imresize_torch

SCALES = [0.25, 0.5, 1 / 3, 0.7, 1.0, 1.5, 2.0, 4.0]


@pytest.fixture(scope='module')
def frame():
    """Vid4 calendar frame 1, (576, 720, 3) uint8 RGB."""
    path = require('Vid4/GT/calendar') / 'Frame 001.png'
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def to_tensor(img):
    """(h, w, c) numpy -> (1, c, h, w) float64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64)).permute(2, 0, 1)[None]


def to_numpy(x):
    return x[0].permute(1, 2, 0).double().numpy()


# --- An independent reading of MATLAB's imresize, one scalar at a time ----------------------------

def keys_cubic(t):
    """Keys (1981) cubic convolution kernel with a = -0.5, MATLAB's 'bicubic'."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t ** 3 - 2.5 * t ** 2 + 1
    if t <= 2:
        return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    return 0.0


def mirror(j, n):
    """1-based index j folded into 1..n by symmetric padding: ... x2 x1 | x1 x2 ... xn | xn x(n-1) ..."""
    while not 1 <= j <= n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def matlab_matrix(n, scale):
    """(ceil(n * scale), n) matrix of MATLAB imresize's 1-D bicubic pass with antialiasing, built from
    the documented mapping u = x / scale + (1 - 1 / scale) / 2 and a kernel stretched by 1 / scale
    when shrinking."""
    width = 4 / scale if scale < 1 else 4
    m = np.zeros((math.ceil(n * scale), n))
    for x in range(1, m.shape[0] + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        for j in range(left, left + math.ceil(width) + 2):
            w = scale * keys_cubic(scale * (u - j)) if scale < 1 else keys_cubic(u - j)
            m[x - 1, mirror(j, n) - 1] += w
        m[x - 1] /= m[x - 1].sum()
    return m


def matlab_round(x):
    """MATLAB uint8(): clip to [0, 255], round half away from zero."""
    return np.floor(np.clip(x, 0, 255) + 0.5)


# --- imresize ----------------------------------------------------------------------------------------

def test_half_scale_weights_by_hand():
    # x1/2: u = 2x - 1/2; the kernel 0.5 * cubic(0.5 t) at t = +-0.5, 1.5, 2.5, 3.5 gives
    # 0.43359375, 0.11328125, -0.03515625, -0.01171875 (they already sum to 1).
    w = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]
    interior = np.zeros(12)
    interior[1:9] = w  # output pixel 3 (1-based): u = 5.5, taps on input pixels 2..9
    # output pixel 1: u = 1.5, taps on -2..5; -2, -1, 0 mirror onto 3, 2, 1.
    first = np.array([w[3] + w[2], w[4] + w[1], w[5] + w[0], w[6], w[7], 0, 0, 0, 0, 0, 0, 0])
    for row, expected in ((2, interior), (0, first)):
        impulse_responses = np.stack([imresize(np.eye(12)[:, [j]], 0.5)[row, 0] for j in range(12)])
        np.testing.assert_allclose(impulse_responses, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize('n', [1, 2, 5, 8, 13, 30])
@pytest.mark.parametrize('scale', SCALES)
def test_1d_matches_matlab_formula(n, scale):
    x = np.random.default_rng(n).random(n)
    out = imresize(x[:, None], scale)[:, 0]
    np.testing.assert_allclose(out, matlab_matrix(n, scale) @ x, rtol=0, atol=1e-13)


@pytest.mark.parametrize('scale', [0.25, 1 / 3, 0.5, 2.0, 3.0])
def test_2d_is_separable_matlab_resize(scale):
    img = np.random.default_rng(0).random((19, 26, 2))
    expected = np.einsum('ij,jkc,lk->ilc', matlab_matrix(19, scale), img, matlab_matrix(26, scale))
    np.testing.assert_allclose(imresize(img, scale), expected, rtol=0, atol=1e-13)


def test_ramp_interior_lands_on_block_centres():
    ramp = np.arange(1.0, 33.0)[:, None]  # value = 1-based MATLAB index
    # x1/2: the centre of output pixel i's 2-pixel block, the mean of its two inputs.
    half = imresize(ramp, 0.5)[:, 0]
    np.testing.assert_allclose(half[3:-3], (ramp[0::2, 0] + ramp[1::2, 0])[3:-3] / 2, rtol=0, atol=1e-12)
    # x1/4: MATLAB maps output pixels 1, 2, 3, ... to input coordinates u = 2.5, 6.5, 10.5, ...
    # (S. Eddins, "Image resizing geometry", MATLAB blog, 2015); 3..6 are clear of the borders.
    quarter = imresize(ramp, 0.25)[:, 0]
    np.testing.assert_allclose(quarter[2:6], [10.5, 14.5, 18.5, 22.5], rtol=0, atol=1e-12)


def test_upscaling_reproduces_linear_and_quadratic_interior():
    """Keys' a = -1/2 kernel is exact for polynomials up to degree 2 (third-order accurate)."""
    n, s = 20, 4
    out_coord = (np.arange(n * s) + 0.5) / s - 0.5  # 0-based input coordinate of each output pixel
    interior = (out_coord >= 1) & (out_coord <= n - 3)  # the 4 taps stay inside the signal
    r = np.arange(n, dtype=np.float64)
    plane = 3.0 * r[:, None] - 2.0 * r[None, :] + 7.0
    quadratic = (r ** 2)[:, None] + 0.5 * (r ** 2)[None, :]
    up_plane, up_quadratic = imresize(plane, s), imresize(quadratic, s)
    u = out_coord[interior]
    np.testing.assert_allclose(up_plane[np.ix_(interior, interior)], 3 * u[:, None] - 2 * u[None, :] + 7,
                               rtol=0, atol=1e-11)
    np.testing.assert_allclose(up_quadratic[np.ix_(interior, interior)],
                               (u ** 2)[:, None] + 0.5 * (u ** 2)[None, :], rtol=0, atol=1e-10)


def test_scale_one_is_identity():
    img = np.random.default_rng(0).random((7, 9, 3))
    np.testing.assert_array_equal(imresize(img, 1.0), img)


@pytest.mark.parametrize('scale', [0.25, 1 / 3, 0.5, 1.5, 4.0])
def test_constant_image_stays_constant(scale):
    img = np.full((13, 17, 3), 0.37)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(13 * scale), math.ceil(17 * scale), 3)
    np.testing.assert_allclose(out, 0.37, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(imresize(np.full((13, 17), 173, np.uint8), scale), 173)
    np.testing.assert_allclose(imresize_torch(to_tensor(img), scale), 0.37, rtol=0, atol=1e-14)


def test_output_sizes_for_sizes_not_divisible_by_scale():
    img = np.zeros((13, 17, 3))
    assert imresize(img, 0.25).shape == (4, 5, 3)
    assert imresize(img, 1 / 3).shape == (5, 6, 3)
    assert imresize(img[..., 0], 2).shape == (26, 34)
    assert imresize(img, (0.5, 0.25)).shape == (7, 5, 3)
    assert imresize_torch(torch.zeros(2, 5, 3, 13, 17), 0.25).shape == (2, 5, 3, 4, 5)


@pytest.mark.parametrize('scale,order', [(0.5, 'hw'), ((0.5, 0.25), 'wh'), ((0.25, 0.5), 'hw')])
def test_uint8_rounds_after_each_pass_in_matlab_order(frame, scale, order):
    """MATLAB resizes the more reduced dimension first (H on ties) and returns uint8 from each pass."""
    img = frame[:96, :128]
    sh, sw = scale if isinstance(scale, tuple) else (scale, scale)
    mh, mw = matlab_matrix(96, sh), matlab_matrix(128, sw)
    if order == 'hw':
        expected = matlab_round(np.einsum('jkc,lk->jlc', matlab_round(np.einsum('ij,jkc->ikc', mh, img)), mw))
    else:
        expected = matlab_round(np.einsum('ij,jkc->ikc', mh, matlab_round(np.einsum('jkc,lk->jlc', img, mw))))
    out = imresize(img, scale)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('scale', [0.25, 0.5, 2.0, 4.0])
def test_interior_matches_pil_float_bicubic(frame, scale):
    """PIL's BICUBIC (mode 'F') is an independent implementation of the same antialiased Keys kernel and
    pixel-centre mapping; only the borders differ (PIL clamps taps instead of mirroring)."""
    img = frame[:64, :96, 1].astype(np.float32)
    out = imresize(img, scale)
    pil = np.asarray(Image.fromarray(img, mode='F').resize(out.shape[::-1], Image.Resampling.BICUBIC))
    m = 3 if scale < 1 else math.ceil(2 * scale) + 2
    assert np.abs(out - pil)[m:-m, m:-m].max() < 1e-4  # float32 rounding inside PIL


@pytest.mark.parametrize('scale', [0.25, 0.5, 2.0])
def test_uint8_interior_matches_pil_exactly_in_pil_pass_order(frame, scale):
    """PIL also rounds to 8 bits between its two passes, but resizes width first: on the transposed
    frame imresize does the same passes in the same order, and away from the borders (where PIL clamps
    instead of mirroring) the two independent implementations agree exactly."""
    img = frame[:128, :160]
    ours = imresize(img.transpose(1, 0, 2), scale).transpose(1, 0, 2)
    pil = np.asarray(Image.fromarray(img).resize(ours.shape[1::-1], Image.Resampling.BICUBIC))
    m = 3 if scale < 1 else math.ceil(2 * scale) + 2
    np.testing.assert_array_equal(ours[m:-m, m:-m], pil[m:-m, m:-m])


@pytest.mark.parametrize('scale', SCALES + [(0.5, 0.25), (2.0, 0.5)])
def test_torch_matches_numpy(scale):
    img = np.random.default_rng(0).random((23, 30, 3))
    expected = imresize(img, scale)
    np.testing.assert_allclose(to_numpy(imresize_torch(to_tensor(img), scale)), expected, rtol=0, atol=1e-13)
    out32 = imresize_torch(to_tensor(img).float(), scale)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(to_numpy(out32), expected, rtol=0, atol=1e-6)


def test_torch_matches_numpy_on_real_frame(frame):
    img = frame / 255.0
    for scale in (0.25, 4.0):
        small = img if scale < 1 else img[:72, :90]
        expected = imresize(small, scale)
        out = imresize_torch(to_tensor(small).float(), scale)
        assert np.abs(to_numpy(out) - expected).max() < 1e-6


def test_torch_keeps_leading_dims_and_is_differentiable():
    x = torch.rand(2, 3, 1, 9, 10, dtype=torch.float64)
    out = imresize_torch(x, 0.5)
    assert out.shape == (2, 3, 1, 5, 5)
    np.testing.assert_allclose(out[1, 2, 0].numpy(), imresize(x[1, 2, 0].numpy(), 0.5), rtol=0, atol=1e-13)
    small = torch.rand(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize_torch(t, 0.5), (small,))
    assert torch.autograd.gradcheck(lambda t: imresize_torch(t, 2.0), (small,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_torch_on_cuda_matches_cpu():
    x = torch.rand(2, 3, 40, 44, dtype=torch.float64)
    for fn in (lambda t: imresize_torch(t, 0.25), lambda t: bd_downsample_torch(t, 4)):
        np.testing.assert_allclose(fn(x.cuda()).cpu().numpy(), fn(x).numpy(), rtol=0, atol=1e-12)


def test_imresize_bad_input():
    with pytest.raises(ValueError, match='scale'):
        imresize(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError, match='scale'):
        imresize(np.zeros((4, 4)), (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match='dtype int16'):
        imresize(np.zeros((4, 4), np.int16), 0.5)
    with pytest.raises(ValueError, match='shape'):
        imresize(np.zeros((2, 4, 4, 3)), 0.5)
    with pytest.raises(ValueError, match='floating-point tensor'):
        imresize_torch(torch.zeros(3, 4, 4, dtype=torch.uint8), 0.5)


# --- BD: Gaussian blur + subsampling ---------------------------------------------------------------

def test_bd_kernel_is_a_normalised_sampled_gaussian():
    k = bd_kernel(13, 1.6)
    assert k.shape == (13, 13)
    assert k.sum() == pytest.approx(1.0, abs=1e-15)
    t = np.arange(-6, 7)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.6 ** 2))
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-14, atol=0)


def test_bd_kernel_matches_duf_construction():
    """DUF builds its kernel as scipy.ndimage.gaussian_filter of a 13x13 impulse with sigma 1.6."""
    ndimage = pytest.importorskip('scipy.ndimage')
    impulse = np.zeros((13, 13))
    impulse[6, 6] = 1
    np.testing.assert_allclose(bd_kernel(13, 1.6), ndimage.gaussian_filter(impulse, 1.6), rtol=0, atol=1e-15)


@pytest.mark.parametrize('padding,border', [('reflect', cv2.BORDER_REFLECT_101),
                                            ('replicate', cv2.BORDER_REPLICATE)])
@pytest.mark.parametrize('offset', [0, 2])
def test_bd_matches_opencv_blur_then_stride(frame, padding, border, offset):
    img = frame[:101, :150] / 255.0  # sizes not divisible by 4
    blurred = cv2.filter2D(img, cv2.CV_64F, bd_kernel(13, 1.6), borderType=border)
    expected = blurred[offset::4, offset::4]
    out = bd_downsample(img, 4, padding=padding, offset=offset)
    assert out.shape == expected.shape == (math.ceil((101 - offset) / 4), math.ceil((150 - offset) / 4), 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('offset', [0, 1, 2, 3])
def test_bd_offset_picks_the_sampled_pixel(offset):
    """A symmetric kernel that sums to 1 leaves a plane unchanged, so interior outputs are the plane's
    values at the sampled pixels (offset + 4 i, offset + 4 j)."""
    r = np.arange(48, dtype=np.float64)
    plane = 5.0 * r[:, None] + r[None, :]
    out = bd_downsample(plane, 4, offset=offset)
    rows = offset + 4 * np.arange(out.shape[0])
    interior = (rows >= 6) & (rows <= 41)
    expected = 5.0 * rows[:, None] + rows[None, :]
    np.testing.assert_allclose(out[np.ix_(interior, interior)], expected[np.ix_(interior, interior)],
                               rtol=0, atol=1e-11)


@pytest.mark.parametrize('padding', ['reflect', 'replicate'])
def test_bd_constant_stays_constant(padding):
    img = np.full((17, 22, 3), 0.61)
    np.testing.assert_allclose(bd_downsample(img, 4, padding=padding), 0.61, rtol=0, atol=1e-14)
    out = bd_downsample_torch(to_tensor(img), 4, padding=padding)
    np.testing.assert_allclose(out, 0.61, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(bd_downsample(np.full((17, 22), 200, np.uint8), 3, padding=padding), 200)


def test_bd_uint8_rounds_the_float_result(frame):
    img = frame[:64, :64]
    out = bd_downsample(img)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, matlab_round(bd_downsample(img.astype(np.float64))))


@pytest.mark.parametrize('scale,offset,padding', [(4, 0, 'reflect'), (4, 2, 'reflect'), (3, 1, 'replicate'),
                                                  (2, 1, 'reflect')])
def test_bd_torch_matches_numpy(frame, scale, offset, padding):
    img = frame[:61, :90] / 255.0
    kwargs = dict(sigma=0.4 * scale, padding=padding, offset=offset)
    expected = bd_downsample(img, scale, **kwargs)
    out = bd_downsample_torch(to_tensor(img), scale, **kwargs)
    assert out.shape[-2:] == expected.shape[:2]
    np.testing.assert_allclose(to_numpy(out), expected, rtol=0, atol=1e-13)
    out32 = bd_downsample_torch(to_tensor(img).float(), scale, **kwargs)
    np.testing.assert_allclose(to_numpy(out32), expected, rtol=0, atol=1e-6)


def test_bd_torch_batches_and_gradients():
    x = torch.rand(2, 3, 3, 20, 24, dtype=torch.float64)
    assert bd_downsample_torch(x).shape == (2, 3, 3, 5, 6)
    small = torch.rand(1, 1, 9, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: bd_downsample_torch(t, 2, kernel_size=5), (small,))


def test_bd_bad_input():
    img = np.zeros((20, 20))
    with pytest.raises(ValueError, match='offset'):
        bd_downsample(img, 4, offset=4)
    with pytest.raises(ValueError, match='positive integer'):
        bd_downsample(img, 4, kernel_size=0)
    with pytest.raises(ValueError, match='padding'):
        bd_downsample(img, 4, padding='zeros')
    with pytest.raises(ValueError, match='no pixels'):
        bd_downsample(np.zeros((1, 20)), 4, padding='replicate', offset=1)
    with pytest.raises(ValueError, match='reflect padding'):
        bd_downsample(np.zeros((6, 20)), 4)
    with pytest.raises(ValueError, match='scale'):
        bd_downsample_torch(torch.zeros(1, 1, 20, 20), 2.5)


# --- PIL bicubic, modcrop ------------------------------------------------------------------------------

def test_pil_bicubic_matches_pil_on_real_frame(frame):
    img = frame[:575, :717]  # not divisible by 4: sizes truncate
    out = pil_bicubic_resize(img, 0.25)
    assert out.shape == (143, 179, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(img).resize((179, 143), Image.BICUBIC)))
    gray = pil_bicubic_resize(img[..., 0], 0.25)
    np.testing.assert_array_equal(gray, out[..., 0])
    assert pil_bicubic_resize(img[..., :1], 0.25).shape == (143, 179, 1)


def test_pil_bicubic_constant_and_errors():
    np.testing.assert_array_equal(pil_bicubic_resize(np.full((21, 30, 3), 91, np.uint8), 0.25), 91)
    with pytest.raises(ValueError, match='uint8'):
        pil_bicubic_resize(np.zeros((8, 8, 3)), 0.5)
    with pytest.raises(ValueError, match='no pixels'):
        pil_bicubic_resize(np.zeros((3, 8, 3), np.uint8), 0.25)


def test_modcrop():
    img = np.arange(13 * 17 * 3).reshape(13, 17, 3)
    out = modcrop(img, 4)
    assert out.shape == (12, 16, 3)
    np.testing.assert_array_equal(out, img[:12, :16])
    assert modcrop(img[..., 0], 1).shape == (13, 17)
    with pytest.raises(ValueError, match='scale'):
        modcrop(img, 0)


# --- properties on random small inputs ------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 3), scale=st.sampled_from(SCALES),
       value=st.floats(-10, 10), seed=st.integers(0, 2 ** 16))
def test_imresize_properties(h, w, c, scale, value, seed):
    img = np.random.default_rng(seed).random((h, w, c))
    out = imresize(img, scale)
    assert out.shape == (math.ceil(h * scale), math.ceil(w * scale), c)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(to_numpy(imresize_torch(to_tensor(img), scale)), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(imresize(np.full((h, w, c), value), scale), value, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), scale=st.integers(1, 4), data=st.data())
def test_bd_properties(h, w, scale, data):
    offset = data.draw(st.integers(0, min(scale, h, w) - 1))
    img = np.random.default_rng(h * w).random((h, w, 2))
    out = bd_downsample(img, scale, padding='replicate', offset=offset)
    assert out.shape == (len(range(offset, h, scale)), len(range(offset, w, scale)), 2)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1  # a positive kernel averages
    torch_out = bd_downsample_torch(to_tensor(img), scale, padding='replicate', offset=offset)
    np.testing.assert_allclose(to_numpy(torch_out), out, rtol=0, atol=1e-12)
