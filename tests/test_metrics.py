"""PSNR/SSIM against scikit-image on real Vid4 frames, plus the protocol knobs (Y channel, border crop)."""
import cv2
import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.conftest import require
from utils.metrics import calculate_psnr, calculate_ssim, rgb_to_y, to_uint8

TOL = 1e-6


def skimage_ssim(a, b, data_range=255, channel_axis=-1):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=channel_axis)


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def frame():
    """Vid4 calendar frame 1, (576, 720, 3) uint8 RGB."""
    return read_rgb(require('Vid4/GT/calendar') / 'Frame 001.png')


def degraded_versions(img):
    """Three non-trivial distortions of a real frame: blur, JPEG, Gaussian noise (fixed seed)."""
    blurred = cv2.GaussianBlur(img, (7, 7), 1.5)
    _, jpeg = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 30])
    jpeg = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    noise = np.random.default_rng(0).normal(0, 10, img.shape)
    noisy = np.clip(img + noise, 0, 255).astype(np.uint8)
    return {'blur': blurred, 'jpeg': jpeg, 'noise': noisy}


@pytest.fixture(scope='module')
def pairs(frame):
    return degraded_versions(frame)


@pytest.mark.parametrize('kind', ['blur', 'jpeg', 'noise'])
def test_psnr_matches_skimage_on_real_frame(frame, pairs, kind):
    expected = peak_signal_noise_ratio(frame, pairs[kind], data_range=255)
    assert 20 < expected < 45  # a non-trivial pair
    assert abs(calculate_psnr(frame, pairs[kind]) - expected) < TOL


@pytest.mark.parametrize('kind', ['blur', 'jpeg', 'noise'])
def test_ssim_matches_skimage_on_real_frame(frame, pairs, kind):
    expected = skimage_ssim(frame, pairs[kind])
    assert 0.3 < expected < 0.99
    assert abs(calculate_ssim(frame, pairs[kind]) - expected) < TOL


def test_rgb_to_y_matches_skimage_bt601(frame):
    expected = rgb2ycbcr(frame)[..., 0]
    y = rgb_to_y(frame)
    assert y.dtype == np.float64 and y.shape == frame.shape[:2]
    assert np.abs(y - expected).max() < 1e-10
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255.0))[0, 0] == pytest.approx(235.0)


@pytest.mark.parametrize('kind', ['blur', 'noise'])
def test_y_channel_metrics_match_skimage(frame, pairs, kind):
    y, y2 = rgb2ycbcr(frame)[..., 0], rgb2ycbcr(pairs[kind])[..., 0]
    psnr = calculate_psnr(frame, pairs[kind], test_y_channel=True)
    ssim = calculate_ssim(frame, pairs[kind], test_y_channel=True)
    assert abs(psnr - peak_signal_noise_ratio(y, y2, data_range=255)) < TOL
    assert abs(ssim - skimage_ssim(y, y2, channel_axis=None)) < TOL
    # Y is a different protocol from RGB: the numbers must differ.
    assert abs(psnr - calculate_psnr(frame, pairs[kind])) > 0.1


def test_crop_border_matches_skimage_on_cropped_frames(frame, pairs):
    b = 4
    a, d = frame[b:-b, b:-b], pairs['jpeg'][b:-b, b:-b]
    assert abs(calculate_psnr(frame, pairs['jpeg'], crop_border=b)
               - peak_signal_noise_ratio(a, d, data_range=255)) < TOL
    assert abs(calculate_ssim(frame, pairs['jpeg'], crop_border=b) - skimage_ssim(a, d)) < TOL


def test_crop_border_ignores_changes_in_the_border(frame):
    changed = frame.copy()
    changed[:3] = 255 - changed[:3]
    changed[:, -3:] = 0
    assert calculate_psnr(frame, changed) < 30
    assert calculate_psnr(frame, changed, crop_border=3) == float('inf')
    assert calculate_ssim(frame, changed, crop_border=3) == pytest.approx(1.0, abs=1e-12)


def test_identical_images():
    img = np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    assert calculate_psnr(img, img) == float('inf')
    assert calculate_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert calculate_ssim(img, img, test_y_channel=True) == pytest.approx(1.0, abs=1e-12)


def test_known_psnr_value():
    # MSE = 1 on the 255 scale -> 20 log10(255) dB.
    img = np.zeros((8, 8), np.uint8)
    assert calculate_psnr(img, img + 1) == pytest.approx(20 * np.log10(255.0), abs=1e-12)


def test_other_value_scales(frame, pairs):
    """[0, 1] floats and uint16 score like the same image on [0, 255] once max_value says the scale."""
    a, d = frame[:64, :64], pairs['noise'][:64, :64]
    expected_psnr, expected_ssim = calculate_psnr(a, d), calculate_ssim(a, d)
    a1, d1 = a / 255.0, d / 255.0
    assert calculate_psnr(a1, d1, max_value=1.0) == pytest.approx(expected_psnr, abs=1e-9)
    assert calculate_ssim(a1, d1, max_value=1.0) == pytest.approx(expected_ssim, abs=1e-9)
    assert calculate_ssim(a1, d1, max_value=1.0) == pytest.approx(skimage_ssim(a1, d1, data_range=1.0),
                                                                  abs=TOL)
    a16, d16 = a.astype(np.uint16) * 257, d.astype(np.uint16) * 257
    assert calculate_psnr(a16, d16, max_value=65535.) == pytest.approx(expected_psnr, abs=1e-9)
    assert calculate_psnr(a1, d1, test_y_channel=True, max_value=1.0) == pytest.approx(
        calculate_psnr(a, d, test_y_channel=True), abs=1e-9)


def test_grayscale_and_single_channel(frame, pairs):
    a, d = frame[..., 1], pairs['blur'][..., 1]
    assert abs(calculate_ssim(a, d) - skimage_ssim(a, d, channel_axis=None)) < TOL
    assert calculate_ssim(a[..., None], d[..., None]) == pytest.approx(calculate_ssim(a, d), abs=1e-15)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r'\(10, 12, 3\).*\(10, 11, 3\)'):
        calculate_psnr(np.zeros((10, 12, 3)), np.zeros((10, 11, 3)))
    with pytest.raises(ValueError, match=r'\(16, 16\).*\(16, 16, 1\)'):
        calculate_ssim(np.zeros((16, 16)), np.zeros((16, 16, 1)))


def test_bad_inputs_raise():
    img = np.zeros((20, 20, 3))
    with pytest.raises(ValueError, match='crop_border'):
        calculate_psnr(img, img, crop_border=10)
    with pytest.raises(ValueError, match='RGB'):
        calculate_psnr(img[..., 0], img[..., 0], test_y_channel=True)
    with pytest.raises(ValueError, match='11x11'):
        calculate_ssim(img, img, crop_border=5)


def test_to_uint8_clips_and_rounds():
    x = np.array([-0.1, 0.0, 0.3 / 255, 0.5, 2.5 / 255, 254.6 / 255, 1.0, 1.2])
    # 127.5 and 2.5 are exact ties: np.round goes to the even neighbour, 128 and 2.
    expected = np.array([0, 0, 0, 128, 2, 255, 255, 255], np.uint8)
    out = to_uint8(x)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_to_uint8_round_trips_real_frame(frame):
    np.testing.assert_array_equal(to_uint8(frame / 255.0), frame)
