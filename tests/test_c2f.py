"""models.c2f, the numba port of pyflow's coarse-to-fine flow, against pyflow's own outputs.

pyflow itself is not needed: ../shared/specs/pyflow/cases.npz holds its outputs on real LR pairs, and
PYFLOW_FINGERPRINTS below a few of its numbers (recorded with the build described in
benchmarks/bench_flow.py) for inputs the cases do not cover: grey images, RGB with col_type=1, odd sizes.
"""
import json

import numba
import numpy as np
import pytest

from models import c2f
from models.c2f import coarse2fine_flow
from tests.conftest import SPECS

CASES = SPECS / 'pyflow' / 'cases.npz'
PARAM_ORDER = ('alpha', 'ratio', 'minWidth', 'nOuterFPIterations', 'nInnerFPIterations', 'nSORIterations',
               'colType')
N_CASES = 8  # in cases.npz; the test fails if there are others, so that none goes unchecked

# pyflow at the defaults (0.012, 0.75, 20, 7, 1, 30): (mean u, mean v, mean |flow|, mean warped),
# then (row, column, u, v) at two pixels.
PYFLOW_FINGERPRINTS = {
    'grey_case0': ((-2.336248883270996, -2.939064955094298, 3.755497863905938, 0.8449513898669708),
                   [(32, 56, -2.283248929134772, -3.203597221103493),
                    (16, 84, -2.0378383800569893, -2.6185129633421154)]),
    'rgb_coltype1_case0': ((-2.298235924188325, -2.889532227090265, 3.692689226355523, 0.847041489531219),
                           [(32, 56, -2.2695646016724402, -3.2072702935231274),
                            (16, 84, -1.9785641730940036, -2.5063874482150648)]),
    'odd_37x53_case2': ((-3.49411367971989, -3.592771720836491, 5.017242017473709, 0.4687119582697263),
                        [(18, 26, -3.8712693367499202, -3.643319923152299),
                         (9, 39, -3.5824683071387877, -3.7471199372858526)]),
    'odd_63x111_case4': ((1.8860097586921618, 0.4252685627979121, 2.8061440314231896, 0.34668925488975383),
                         [(31, 55, 3.683163567293492, -0.7931153401885944),
                          (15, 83, 5.587021338743879, 0.6291486447892461)]),
}


@pytest.fixture(scope='module')
def cases():
    if not CASES.exists():
        pytest.skip(f'pyflow reference not found: {CASES} (the shared folder sits beside the repository)')
    data = np.load(CASES)
    return data, {m['index']: m for m in json.loads(str(data['meta']))}


def case_inputs(data, i):
    return data[f'img1_{i}'] / 255., data[f'img2_{i}'] / 255.


def grey(img):
    return (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114)[..., None]


def fingerprint_inputs(data, name):
    a, b = case_inputs(data, int(name[-1]))
    if name == 'grey_case0':
        return grey(a), grey(b), 1
    if name == 'rgb_coltype1_case0':
        return a, b, 1
    if name == 'odd_37x53_case2':
        return a[3:40, 5:58], b[3:40, 5:58], 0
    return a[1:, 1:], b[1:, 1:], 0


def test_cases_file_has_the_expected_cases(cases):
    assert sorted(cases[1]) == list(range(N_CASES))


@pytest.mark.parametrize('i', range(N_CASES))
def test_matches_pyflow_on_real_pairs(cases, i):
    data, meta = cases
    params = [meta[i]['params'][key] for key in PARAM_ORDER]
    a, b = case_inputs(data, i)
    u, v, warped = coarse2fine_flow(a, b, *params)
    assert u.shape == v.shape == a.shape[:2] and warped.shape == a.shape
    assert u.dtype == v.dtype == warped.dtype == np.float64
    epe = np.hypot(u - data[f'flow_{i}'][..., 0], v - data[f'flow_{i}'][..., 1])
    # Measured: 0 (bit-identical). The bound leaves room for another libm or compiler.
    assert epe.mean() <= 0.01, f'case {i} ({meta[i]["source"]}): mean EPE {epe.mean():.3g} px'
    assert epe.max() <= 0.1, f'case {i}: max EPE {epe.max():.3g} px'
    np.testing.assert_allclose(warped, data[f'warped_{i}'], rtol=0, atol=1e-3)


@pytest.mark.parametrize('name', PYFLOW_FINGERPRINTS)
def test_matches_pyflow_grey_coltype_and_odd_sizes(cases, name):
    a, b, col_type = fingerprint_inputs(cases[0], name)
    u, v, warped = coarse2fine_flow(a, b, col_type=col_type)
    assert u.shape == a.shape[:2] and warped.shape == a.shape
    means, points = PYFLOW_FINGERPRINTS[name]
    np.testing.assert_allclose((u.mean(), v.mean(), np.hypot(u, v).mean(), warped.mean()), means, atol=1e-3)
    for row, col, pu, pv in points:
        np.testing.assert_allclose((u[row, col], v[row, col]), (pu, pv), atol=0.01)


def test_grey_as_two_or_three_dimensions(cases):
    a, b = (grey(x) for x in case_inputs(cases[0], 0))
    u3, v3, w3 = coarse2fine_flow(a, b, col_type=1)
    u2, v2, w2 = coarse2fine_flow(a[..., 0], b[..., 0], col_type=1)
    assert w2.shape == w3.shape == a.shape
    assert np.array_equal(u2, u3) and np.array_equal(v2, v3) and np.array_equal(w2, w3)


def smooth_pair(h, w, shift):
    """A smooth random texture and the same texture moved by shift = (dy, dx) whole pixels."""
    rng = np.random.default_rng(0)
    dy, dx = shift
    big = rng.random((h + 20, w + 20, 3))
    for axis in (0, 1):  # a few box blurs: smooth enough for a variational method
        for _ in range(3):
            big = (np.roll(big, 1, axis) + big + np.roll(big, -1, axis)) / 3
    big = (big - big.min()) / (big.max() - big.min())
    return big[10:10 + h, 10:10 + w].copy(), big[10 - dy:10 - dy + h, 10 - dx:10 - dx + w].copy()


@pytest.mark.parametrize('size', [(27, 41), (37, 53), (50, 27), (3, 64)])
def test_odd_sizes_recover_a_translation(size):
    """im2 moved by (dy, dx) = (1, -2): im2 at (x - 2, y + 1) is im1 at (x, y), so u = -2, v = 1."""
    h, w = size
    a, b = smooth_pair(h, w, (1, -2))
    u, v, warped = coarse2fine_flow(a, b)
    assert u.shape == (h, w) and warped.shape == (h, w, 3)
    assert np.isfinite(u).all() and np.isfinite(v).all() and 0 <= warped.min() and warped.max() <= 1
    if h >= 20:  # a 3-pixel-high strip has no interior
        inner = (slice(4, -4), slice(4, -4))
        assert np.abs(u[inner] + 2).mean() < 0.05 and np.abs(v[inner] - 1).mean() < 0.05
        assert np.abs(warped - a)[inner].mean() < 0.1 * np.abs(b - a)[inner].mean()


@pytest.mark.parametrize('size, message', [((64, 26), 'width >= 27'), ((64, 19), 'width >= 27'),
                                           ((2, 64), 'height >= 3 at width 64'),
                                           ((2, 112), 'height >= 4 at width 112')])
def test_too_small_images_raise(size, message):
    """pyflow crashes on these (measured: segmentation fault or std::bad_alloc); the port says why."""
    img = np.zeros(size + (3,))
    with pytest.raises(ValueError, match=f'{size[0]}x{size[1]}.*{message}'):
        coarse2fine_flow(img, img)


@pytest.mark.parametrize('size', [(64, 27), (1, 27), (3, 64), (4, 112)])
def test_smallest_accepted_sizes_run(size):
    a, b = smooth_pair(*size, (0, 1))
    u, v, warped = coarse2fine_flow(a, b)
    assert u.shape == size and np.isfinite(u).all() and np.isfinite(warped).all()


def test_bad_arguments_raise():
    img = np.zeros((30, 40, 3))
    with pytest.raises(ValueError, match='different shapes'):
        coarse2fine_flow(img, img[:, :39])
    with pytest.raises(ValueError, match='must be float'):
        coarse2fine_flow(img.astype(np.uint8), img.astype(np.uint8))
    with pytest.raises(ValueError, match='col_type'):
        coarse2fine_flow(img, img, col_type=2)
    with pytest.raises(ValueError, match='ratio > 0'):
        coarse2fine_flow(img, img, ratio=0)


def test_prints_nothing(capfd):
    a, b = smooth_pair(30, 40, (0, 1))
    coarse2fine_flow(a, b)
    assert capfd.readouterr() == ('', '')


def test_kernels_are_cached_on_disk():
    """Compiled once per machine: every kernel caches to disk unless no location is writable."""
    kernels = [f for f in vars(c2f).values() if isinstance(f, numba.core.registry.CPUDispatcher)]
    assert len(kernels) >= 10
    caches = {type(f._cache).__name__ for f in kernels}
    if caches == {'NullCache'}:
        pytest.skip('numba finds no writable cache location here: the kernels compile in each process')
    assert caches == {'FunctionCache'}


def test_without_a_writable_cache_location_it_compiles_per_process(monkeypatch):
    # No cache locator at all: what numba meets when no candidate folder is writable.
    monkeypatch.setattr(numba.core.caching.CacheImpl, '_locator_classes', [])

    def double(x):
        return 2 * x
    kernel = c2f._jit(double)
    assert type(kernel._cache).__name__ == 'NullCache' and kernel(21) == 42
