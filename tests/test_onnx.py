"""ONNX export (data_scripts/export_onnx.py): for every network listed as exportable, its tiny configuration
(tests/networks/*.yml) exported with a dynamic batch, run in onnxruntime at batch 2 and 1, agrees with PyTorch
relative to the output's scale; a graph with an op ONNX cannot express fails with a one-line reason.

Inputs are as small as the graphs allow, 2 frames of 16x16 (RSTT is built for 2 frames): the export time
grows with the unrolled recurrences over frames, not with the pixels.
"""
import importlib.util
import os
import sys

import pytest
import torch

from models import build_network
from models.base import VideoNetwork
from tests.support import CONFIGS, ROOT, run

for package in ('onnx', 'onnxscript', 'onnxruntime'):
    pytest.importorskip(package, reason=f'{package} is not installed (pip install onnx onnxruntime onnxscript)')

# Exported and checked here on every run (the quick ones, 2-16 s each on 2 cores).
EXPORTABLE = ['bicubic_blend', 'mstt', 'rstt_s', 'starnet_noref', 'temporal_liif']
# These export too (the same test passed on each, 24-57 s apiece on 2 cores: too slow for every CI run);
# RUN_SLOW_ONNX=1 includes them.
SLOW = ['msitf', 'starnet', 'stdan', 'tmnet', 'zsm']
# The three RSTT sizes are one class with more blocks: rstt_s stands for them (the report lists all three).
SAME_CLASS = {'rstt_m': 'rstt_s', 'rstt_l': 'rstt_s'}
FRAMES, SIZE = 2, (16, 16)
TOLERANCE = 1e-4  # float32 through two runtimes, relative to max |output| (STDAN's top-k sums: 2e-5)


def export_onnx():
    spec = importlib.util.spec_from_file_location('export_onnx', ROOT / 'data_scripts' / 'export_onnx.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['export_onnx'] = module
    spec.loader.exec_module(module)
    return module


def tiny(name):
    spec = dict(CONFIGS[name]['tiny'])
    if spec['type'] == 'RSTT':
        spec['num_frames'] = FRAMES  # its position-bias tables are sized by the frame count
    return build_network(spec)


def test_every_network_is_listed():
    assert sorted([*EXPORTABLE, *SLOW, *SAME_CLASS]) == sorted(CONFIGS)


@pytest.mark.parametrize('name', EXPORTABLE + (SLOW if os.environ.get('RUN_SLOW_ONNX') else []))
def test_onnxruntime_matches_pytorch(name, tmp_path):
    module = export_onnx()
    path = tmp_path / f'{name}.onnx'
    _, results = module.export_and_check(tiny(name), path, FRAMES, SIZE, 'batch', tolerance=TOLERANCE)
    assert path.stat().st_size > 0
    assert [shape[0] for _, _, shape in results] == [2, 1]  # the dynamic batch, both sizes
    for difference, scale, _ in results:
        assert difference <= TOLERANCE * scale


class Bessel(VideoNetwork):
    """A network whose graph holds an op without an ONNX translation (Bessel J0), upscaled by repetition."""

    def predict(self, lq, extras=None):
        out = torch.special.bessel_j0(lq).repeat_interleave(2, dim=1)[:, :-1]
        return out.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)


def test_an_op_onnx_cannot_express_fails_in_one_line(tmp_path):
    module = export_onnx()
    with pytest.raises(module.ExportError, match='^Bessel: the ONNX translation failed .*bessel_j0') as error:
        module.export_and_check(Bessel(), tmp_path / 'net.onnx', FRAMES, SIZE, 'batch')
    assert '\n' not in str(error.value) and not list(tmp_path.iterdir())


def test_cli_writes_the_file_and_prints_the_difference(tmp_path):
    out = tmp_path / 'bicubic.onnx'
    result = run(['data_scripts/export_onnx.py', '--network', '{type: BicubicBlend}', '--output', str(out),
                  '--size', '8', '12', '--frames', '2'])
    assert result.returncode == 0, result.stderr
    assert out.is_file() and 'max |onnxruntime - PyTorch| 0 ' in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ['bicubic.onnx']  # no temporary file left


def test_cli_errors_are_one_line(tmp_path):
    out = tmp_path / 'msitf.onnx'
    trained = run(['data_scripts/export_onnx.py', '--network', '{type: MSITF}', '--output', str(out)])
    assert trained.returncode == 2 and trained.stderr.count('\n') == 1 and '--checkpoint' in trained.stderr
    out.write_bytes(b'')
    exists = run(['data_scripts/export_onnx.py', '--network', '{type: BicubicBlend}', '--output', str(out)])
    assert exists.returncode == 2 and '--overwrite' in exists.stderr
