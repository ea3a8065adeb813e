"""Property-based tests (hypothesis) for GitHub issue #11: the options loader, the metrics, the degradations and
the readers of checkpoints and frames take any input and either work or raise their documented error
(OptionsError, ValueError, CheckpointError, DataError): never another exception, never a silently wrong result.
"""
import inspect
import math
import numbers

import cv2
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.degradations import bd_downsample, bd_downsample_torch, pil_bicubic_resize
from data.io import read_image
from engine.checkpoint import FORMAT, load_checkpoint
from engine.options import DEFAULTS, INJECTED, Arguments, Spec, dump_options, load_options, spec_kinds, validate
from utils.errors import CheckpointError, DataError, OptionsError
from utils.metrics import calculate_psnr, calculate_ssim
from utils.resize import imresize, imresize_torch

FUZZ = settings(max_examples=40, deadline=None)


def same(a, b):
    """Equal values of equal types, NaN equal to NaN (``==`` would let 1 pass for 1.0 and fail NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


# --------------------------------------------------------------------------------------------- options
def option_paths(defaults, prefix=''):
    """Every dotted key of DEFAULTS with its default, sections included."""
    for key, default in defaults.items():
        yield prefix + key, default
        if isinstance(default, dict) and not isinstance(default, (Spec, Arguments)):
            yield from option_paths(default, prefix + key + '.')


DEFAULT_AT = dict(option_paths(DEFAULTS))
PATHS = sorted(DEFAULT_AT)
KINDS = spec_kinds()
SIGNATURES = {name: inspect.signature(lookup(name)).parameters for lookup, known in KINDS.values() for name in known}
ARGUMENTS = sorted({argument for parameters in SIGNATURES.values() for argument in parameters})
# One-line messages are promised for what a YAML file or a --set spells on one line: no line breaks.
TEXT = st.text(st.characters(blacklist_categories=('Cc', 'Cs', 'Zl', 'Zp')), max_size=8)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40), st.floats(), TEXT,
    st.sampled_from(['2e-4', '1.0e-3', '-1e-4', 'auto', 'cpu', 'cuda:1', 'cuda:x', 'window7', 'septuplet', '.', '..',
                     'a.b', '', 'reflect', *SIGNATURES]))
ANYTHING = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(ARGUMENTS + PATHS) | TEXT, inner, max_size=3), max_leaves=6)


def like(default):
    """Values of the type of ``default`` (mostly in range), or anything at all."""
    if isinstance(default, bool):
        typed = st.booleans()
    elif isinstance(default, int):
        typed = st.integers(-2, 10 ** 6) | st.integers(0, 9).map(float)
    elif isinstance(default, float):
        typed = st.floats(-1, 1e6) | st.sampled_from(['2e-4', '1.0e-3', '3'])
    elif isinstance(default, str):
        typed = st.sampled_from(['auto', 'cpu', 'cuda', 'cuda:0', 'window7', 'zsm_legacy', 'septuplet', 'run-1.a'])
    elif isinstance(default, (list, tuple)):
        typed = st.lists(like(default[0]) if default else SCALARS, max_size=4)
    else:
        typed = SCALARS
    return typed | ANYTHING


def spec(kind):
    """``{type: Name, ...}`` specs of a registered ``kind``: the required arguments and a few optional ones."""
    names = KINDS[kind][1]

    @st.composite
    def build(draw):
        name = draw(st.sampled_from(names))
        parameters = {n: p for n, p in SIGNATURES[name].items()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in INJECTED.get(kind, ())}
        out = {'type': name}
        for n, p in parameters.items():
            required = p.default is p.empty
            if required or draw(st.sampled_from([False] * 4 + [True])):
                out[n] = draw(like(None if required else p.default))
        if draw(st.sampled_from([False] * 5 + [True])):
            out[draw(st.sampled_from(ARGUMENTS) | TEXT)] = draw(SCALARS)
        return out
    return build()


def values_for(path):
    default = DEFAULT_AT.get(path)
    if isinstance(default, Spec):
        return spec(default.kind) | st.none() | st.just({})
    if isinstance(default, Arguments):
        return st.dictionaries(TEXT, SCALARS, max_size=2) | ANYTHING
    if isinstance(default, dict):
        return st.just({}) | ANYTHING
    return like(default)


def put(tree, path, value):
    """``tree`` with ``value`` set at the dotted ``path``, creating (or replacing) mappings on the way."""
    node = tree
    *parents, last = path.split('.')
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value
    return tree


@st.composite
def option_trees(draw):
    """A valid minimal tree with a few keys set: known ones to values mostly of their type, sometimes unknown
    ones, sometimes anything YAML can hold."""
    tree = {'name': 'fuzz', 'network': {'type': 'BicubicBlend'}}
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS) if draw(st.sampled_from([True] * 4 + [False])) else TEXT)
        put(tree, path, draw(values_for(path)))
    return tree


def check_options_error(error, source):
    message = str(error)
    assert message.startswith(f'{source}: ') and '\n' not in message, message


@FUZZ
@given(tree=option_trees())
def test_options_validate_or_raise_options_error_and_round_trip(tree, tmp_path_factory):
    original = yaml.safe_dump(tree)
    try:
        opt = validate(tree, source='fuzz.yml')
    except OptionsError as e:
        check_options_error(e, 'fuzz.yml')
        opt = None
    assert yaml.safe_dump(tree) == original  # never changed in place
    if opt is None:
        return
    assert same(validate(opt), opt)  # resolved options are valid options and resolve to themselves
    path = tmp_path_factory.mktemp('options') / 'resolved.yml'
    dump_options(opt, path)  # as the trainer writes config.yml
    assert same(load_options(path), opt)


def one_line_yaml(value):
    return yaml.safe_dump([value], default_flow_style=True, width=10 ** 9).strip()[1:-1]


ASSIGNMENTS = st.builds('{}={}'.format, st.sampled_from(PATHS) | TEXT, ANYTHING.map(one_line_yaml) | TEXT)


@FUZZ
@given(tree=option_trees(), overrides=st.lists(ASSIGNMENTS, max_size=3))
def test_set_overrides_validate_or_raise_options_error(tree, overrides, tmp_path_factory):
    path = tmp_path_factory.mktemp('options') / 'opt.yml'
    path.write_text(yaml.safe_dump(tree))
    try:
        opt = load_options(path, overrides)
    except OptionsError as e:
        check_options_error(e, path)
        return
    assert same(validate(opt), opt)


@FUZZ
@given(content=st.text(max_size=40) | st.binary(max_size=40))
def test_any_file_content_is_an_options_error(content, tmp_path_factory):
    path = tmp_path_factory.mktemp('options') / 'opt.yml'
    if isinstance(content, str):
        path.write_text(content, encoding='utf-8')
    else:
        path.write_bytes(content)
    try:
        load_options(path, ['seed=1'])
    except OptionsError as e:
        assert str(e).startswith(f'{path}: ')


# --------------------------------------------------------------------------------------------- metrics
@st.composite
def image_pairs(draw):
    """Two images of one random shape, (h, w) or (h, w, c), uint8 or float64 on [0, 255], at least 17x17 (SSIM's
    11x11 window after a crop of up to 3); the second is random, equal to the first, constant, or the first with
    one pixel one level off."""
    h, w = draw(st.integers(17, 24)), draw(st.integers(17, 24))
    shape = (h, w) + draw(st.sampled_from([(), (1,), (3,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    dtype = draw(st.sampled_from([np.uint8, np.float64]))
    a = rng.integers(0, 256, shape).astype(dtype) if dtype == np.uint8 else rng.random(shape) * 255
    b = draw(st.sampled_from(['random', 'same', 'constant', 'nudged']))
    if b == 'same':
        b = a.copy()
    elif b == 'constant':
        b = np.full(shape, rng.integers(0, 256), dtype)
    elif b == 'nudged':
        b = a.astype(np.float64)
        pixel = tuple(rng.integers(0, n) for n in shape)
        b[pixel] += 1 if b[pixel] < 255 else -1
        b = b.astype(dtype)
    else:
        b = rng.integers(0, 256, shape).astype(dtype) if dtype == np.uint8 else rng.random(shape) * 255
    return a, b


@FUZZ
@given(pair=image_pairs(), crop=st.integers(0, 3), y=st.booleans())
def test_psnr_and_ssim_properties(pair, crop, y):
    a, b = pair
    y = y and a.ndim == 3 and a.shape[2] == 3
    inner = (slice(crop, a.shape[0] - crop), slice(crop, a.shape[1] - crop))
    identical = np.array_equal(a[inner], b[inner])
    psnr, ssim = calculate_psnr(a, b, crop, y), calculate_ssim(a, b, crop, y)
    assert psnr == calculate_psnr(b, a, crop, y) and ssim == pytest.approx(calculate_ssim(b, a, crop, y), abs=1e-12)
    assert (psnr == math.inf) if identical else math.isfinite(psnr)
    assert -1 - 1e-9 <= ssim <= 1 + 1e-9
    assert calculate_psnr(a, a, crop, y) == math.inf and calculate_ssim(a, a, crop, y) == pytest.approx(1, abs=1e-12)
    if identical:
        assert ssim == pytest.approx(1, abs=1e-12)
    # the dtype only stores the values: float64 copies score the same
    assert calculate_psnr(a.astype(np.float64), b.astype(np.float64), crop, y) == psnr


@FUZZ
@given(seed=st.integers(0, 2 ** 32 - 1), shape=st.sampled_from([(16, 12), (12, 14, 3)]),
       small=st.floats(0.01, 20), ratio=st.floats(1.01, 10), peak=st.sampled_from([1.0, 255.0, 65535.0]))
def test_psnr_falls_as_the_noise_grows(seed, shape, small, ratio, peak):
    rng = np.random.default_rng(seed)
    a, noise = rng.random(shape) * peak, rng.standard_normal(shape) * peak / 255
    near, far = (calculate_psnr(a, a + s * noise, max_value=peak) for s in (small, small * ratio))
    assert math.isfinite(near) and near > far
    assert near - far == pytest.approx(20 * math.log10(ratio), abs=1e-6)  # PSNR is 20 log10 of the noise scale


@FUZZ
@given(a=st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(0, 4)),
       b=st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(0, 4)))
def test_shape_mismatch_is_a_value_error(a, b):
    shape_a, shape_b = a[:2] + a[2:] * bool(a[2]), b[:2] + b[2:] * bool(b[2])
    if shape_a == shape_b:
        return
    for metric in (calculate_psnr, calculate_ssim):
        with pytest.raises(ValueError, match='same shape'):
            metric(np.zeros(shape_a), np.zeros(shape_b))


JUNK = st.one_of(st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2), st.booleans())


# Peaks are kept in a sane range: beyond about 1e75 SSIM's constants overflow, and 10 log10(peak^2 / mse) too.
@FUZZ
@given(crop=st.integers(-3, 12) | st.floats(allow_nan=True) | JUNK,
       peak=st.floats(1e-3, 1e6) | st.floats(max_value=0) | st.sampled_from([math.nan, math.inf]) | st.integers(-3, 3)
       | JUNK,
       side=st.integers(1, 24))
def test_metric_arguments_work_or_raise_value_error(crop, peak, side):
    img = np.arange(side * side * 3, dtype=np.float64).reshape(side, side, 3) % 256
    noisy = img + 1
    valid = (isinstance(crop, numbers.Integral) and 0 <= crop and 2 * crop < side
             and isinstance(peak, numbers.Real) and math.isfinite(peak) and peak > 0)
    for metric, fits in ((calculate_psnr, True), (calculate_ssim, side - 2 * crop >= 11 if valid else False)):
        if valid and fits:
            assert math.isfinite(metric(img, noisy, crop, max_value=peak))
        else:
            with pytest.raises(ValueError):
                metric(img, noisy, crop, max_value=peak)


# --------------------------------------------------------------------------------------------- degradations
def to_tensor(img):
    """(h, w) or (h, w, c) -> (c, h, w) tensor."""
    img = img[..., None] if img.ndim == 2 else img
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


@st.composite
def frames(draw, max_side=12):
    """A small (h, w) or (h, w, c) uint8 or float image, sometimes constant."""
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side))) + draw(st.sampled_from([(), (1,), (3,)]))
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if draw(st.booleans()):
        return np.full(shape, draw(st.integers(0, 255)), dtype)
    return rng.integers(0, 256, shape).astype(dtype) if dtype == np.uint8 else (rng.random(shape) * 255).astype(dtype)


SCALES = st.sampled_from([0.25, 0.5, 1 / 3, 0.7, 1.0, 1.5, 2.0, 4.0]) | st.floats(0.1, 5)


@FUZZ
@given(img=frames(), scale=SCALES | st.tuples(SCALES, SCALES), antialiasing=st.booleans())
def test_imresize_shapes_constants_and_torch(img, scale, antialiasing):
    sh, sw = scale if isinstance(scale, tuple) else (scale, scale)
    out = imresize(img, scale, antialiasing)
    h, w = img.shape[:2]
    assert out.shape == (math.ceil(h * sh), math.ceil(w * sw)) + img.shape[2:]
    assert out.dtype == (np.uint8 if img.dtype == np.uint8 else np.float64) and np.isfinite(out).all()
    if (img == img.flat[0]).all():
        np.testing.assert_allclose(out, img.flat[0], rtol=0, atol=1e-9 * 255)
    if img.dtype != np.uint8:
        x = to_tensor(img)
        expected = to_tensor(out)
        got = imresize_torch(x, scale, antialiasing)
        assert got.dtype == x.dtype and got.shape == expected.shape
        atol = 1e-9 if img.dtype == np.float64 else 255 * 1e-5
        np.testing.assert_allclose(got.double().numpy(), expected.numpy(), rtol=0, atol=atol)


def bd_arguments_valid(h, w, scale, sigma, kernel_size, padding, offset):
    """The rules bd_downsample documents, restated: when they hold it must work, otherwise raise ValueError."""
    integral = lambda v: isinstance(v, numbers.Integral)  # noqa: E731
    return (integral(scale) and scale >= 1 and integral(offset) and 0 <= offset < scale and offset < min(h, w)
            and integral(kernel_size) and not isinstance(kernel_size, bool) and kernel_size >= 1
            and isinstance(sigma, numbers.Real) and math.isfinite(sigma) and sigma > 0
            # MATLAB centres a k-tap kernel on tap floor((k + 1) / 2): it reaches k // 2 pixels on its far side
            and padding in ('reflect', 'replicate') and (padding == 'replicate' or min(h, w) > kernel_size // 2))


@FUZZ
@given(img=frames(), scale=st.integers(-1, 5) | st.sampled_from([2.0, None, '4']),
       sigma=st.floats(1e-3, 1e3) | st.floats(max_value=0) | st.sampled_from([math.nan, math.inf, 1.6, None, '1.6']),
       kernel_size=st.integers(-1, 15) | st.sampled_from([13.0, None]),
       padding=st.sampled_from(['reflect', 'replicate', 'zeros', None, ['reflect']]),
       offset=st.integers(-1, 4) | st.sampled_from([0.0, None]))
def test_bd_downsample_works_exactly_when_its_arguments_are_valid(img, scale, sigma, kernel_size, padding, offset):
    h, w = img.shape[:2]
    args = dict(scale=scale, sigma=sigma, kernel_size=kernel_size, padding=padding, offset=offset)
    if not bd_arguments_valid(h, w, **args):
        with pytest.raises(ValueError):
            bd_downsample(img, **args)
        with pytest.raises(ValueError):
            bd_downsample_torch(to_tensor(img.astype(np.float64)), **args)
        return
    out = bd_downsample(img, **args)
    assert out.shape == (len(range(offset, h, scale)), len(range(offset, w, scale))) + img.shape[2:]
    assert out.dtype == (np.uint8 if img.dtype == np.uint8 else np.float64) and np.isfinite(out).all()
    if (img == img.flat[0]).all():
        np.testing.assert_allclose(out, img.flat[0], rtol=0, atol=1e-9 * 255)
    if img.dtype != np.uint8:
        got = bd_downsample_torch(to_tensor(img), **args)
        atol = 1e-9 if img.dtype == np.float64 else 255 * 1e-5
        np.testing.assert_allclose(got.double().numpy(), to_tensor(out).numpy(), rtol=0, atol=atol)


FACTORS = st.floats(-8, 8).filter(lambda s: s == 0 or abs(s) > 0.05) | st.sampled_from(
    [math.nan, math.inf, -math.inf, True, False, None, '0.5'])


def positive_factor(s):
    return isinstance(s, numbers.Real) and math.isfinite(s) and s > 0


@FUZZ
@given(scale=FACTORS | st.lists(FACTORS, max_size=3) | st.tuples(FACTORS, FACTORS),
       shape=st.sampled_from([(6, 5), (6, 5, 3), (6,), (2, 6, 5, 3)]),
       dtype=st.sampled_from([np.uint8, np.float64, np.int16, np.bool_]))
def test_resize_arguments_work_or_raise_value_error(scale, shape, dtype):
    img = np.ones(shape, dtype)
    pair = scale if isinstance(scale, (list, tuple)) else (scale, scale)
    valid = len(pair) == 2 and all(positive_factor(s) for s in pair)
    if valid and len(shape) in (2, 3) and dtype in (np.uint8, np.float64):
        out = imresize(img, scale)
        assert out.shape[:2] == (math.ceil(6 * pair[0]), math.ceil(5 * pair[1]))
        assert imresize_torch(torch.ones(shape[:2]), scale).shape == out.shape[:2]
    else:
        with pytest.raises(ValueError):
            imresize(img, scale)
    factor = pair[0] if pair else None  # PIL takes one factor
    if (positive_factor(factor) and dtype == np.uint8 and len(shape) in (2, 3)
            and min(int(6 * factor), int(5 * factor)) >= 1):
        assert pil_bicubic_resize(img, factor).shape[:2] == (int(6 * factor), int(5 * factor))
    else:
        with pytest.raises(ValueError):
            pil_bicubic_resize(img, factor)


@pytest.mark.parametrize('x', [np.ones((4, 4)), torch.ones(4, 4, dtype=torch.int64), torch.ones(4), [[1.0]], None])
def test_tensor_functions_refuse_other_inputs(x):
    for fn in (lambda t: imresize_torch(t, 0.5), lambda t: bd_downsample_torch(t, 2, kernel_size=1)):
        with pytest.raises(ValueError, match='floating-point tensor'):
            fn(x)


# --------------------------------------------------------------------------------------------- damaged files
def damaged(data):
    """Truncations, bit flips and random bytes made from the bytes of a good file."""
    return st.one_of(
        st.integers(0, len(data) - 1).map(lambda n: data[:n]),
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)).map(
            lambda p: data[:p[0]] + bytes([data[p[0]] ^ (1 << p[1])]) + data[p[0] + 1:]),
        st.binary(max_size=200),
        st.binary(max_size=50).map(lambda tail: data[:8] + tail))


def png_bytes():
    img = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return cv2.imencode('.png', img)[1].tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged(png_bytes()))
def test_damaged_png_is_a_data_error_and_nothing_on_stderr(data, tmp_path, capfd):
    path = tmp_path / 'frame.png'
    path.write_bytes(data)
    try:
        img = read_image(path)
        assert img.shape == (12, 16, 3) and img.dtype == np.uint8  # a flip the decoder cannot see, e.g. in a pixel
    except DataError as e:
        assert str(e).startswith(f'{path}: ') and '\n' not in str(e)
    assert capfd.readouterr().err == ''  # libpng and OpenCV kept quiet: the DataError is the one message


def checkpoint_bytes(folder):
    path = folder / 'ckpt.pth'
    torch.save({'format': FORMAT, 'network': {'type': 'BicubicBlend'}, 'weights': {'w': torch.ones(3)}}, path)
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_checkpoint_is_a_checkpoint_error(data, tmp_path):
    good = checkpoint_bytes(tmp_path)
    path = tmp_path / 'damaged.pth'
    path.write_bytes(data.draw(damaged(good)))
    try:
        ckpt = load_checkpoint(path)
        assert isinstance(ckpt, dict)
    except CheckpointError as e:
        assert str(e).startswith(f'{path}: ') and '\n' not in str(e)
