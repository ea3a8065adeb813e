"""benchmarks/bench_official.py without official checkouts: the import sandbox for a checkout whose top-level
names shadow ours, the one-line errors, the table's equality cell, and ours-only timing rows."""
import sys

import pytest
import torch

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
import bench_official as bench  # noqa: E402
from official import OfficialUnavailable, cuda_calls_to, official_import  # noqa: E402


def fake_checkout(root, body):
    (root / 'models').mkdir(parents=True)
    (root / 'models' / '__init__.py').write_text(body)
    return root


def test_a_checkout_shadows_our_models_only_inside_the_block(tmp_path):
    import models
    root = fake_checkout(tmp_path / 'repo', 'WHO = "official"\n')
    with official_import(root, 'fake'):
        import models as inside
        assert inside.WHO == 'official'
    assert sys.modules['models'] is models and not hasattr(models, 'WHO')
    assert sys.modules['_official_fake.models'].WHO == 'official'
    assert str(root) not in sys.path


def test_a_missing_checkout_or_dependency_is_one_line(tmp_path):
    with pytest.raises(OfficialUnavailable, match='official checkout not found'):
        with official_import(tmp_path / 'nowhere', 'fake'):
            pass
    root = fake_checkout(tmp_path / 'repo', 'import dcn_v2_compiled_op\n')
    with pytest.raises(OfficialUnavailable, match="needs the module 'dcn_v2_compiled_op'") as error:
        with official_import(root, 'fake2'):
            import models  # noqa: F401
    assert '\n' not in str(error.value)
    assert hasattr(sys.modules['models'], 'NETWORKS')  # ours is back


@pytest.mark.parametrize('name', sorted(bench.ADAPTERS))
def test_every_adapter_refuses_a_missing_checkout(name, tmp_path):
    with pytest.raises(OfficialUnavailable, match='not found'):
        bench.ADAPTERS[name].build(tmp_path / 'nowhere', {'type': name})


@pytest.mark.skipif(torch.cuda.is_available(), reason='on a CUDA machine .cuda() is left as it is')
def test_cuda_calls_stay_on_the_cpu_inside_the_block():
    with cuda_calls_to('cpu'):
        assert torch.ones(2).cuda().device.type == 'cpu'
    with pytest.raises((AssertionError, RuntimeError)):  # no CUDA build or no device: .cuda() fails again
        torch.ones(2).cuda()


@pytest.mark.parametrize('diff, dtype, cell', [(1.9e-15, 'float64', '1.9e-15'),
                                               (2e-6, 'float64', '2.0e-06 DIFFERENT'),
                                               (5.9e-8, 'float32', '5.9e-08 (float32)'),
                                               (3e-3, 'float32', '3.0e-03 (float32) DIFFERENT')])
def test_the_equality_cell_says_the_dtype_and_marks_a_difference(diff, dtype, cell):
    results = {'forward': {'seconds': {'ours': [2.0, 1.0, 3.0], 'official': [4.0, 4.0, 4.0]},
                           'max_diff': diff, 'diff_dtype': dtype},
               'train': {'seconds': {'ours': [1.0]}}}
    cells = dict(zip(bench.HEADER, bench.row_cells('MSITF', results, {('official', 'forward'): 900.0})))
    assert cells['max diff (rel.)'] == cell
    assert (cells['ours fwd s'], cells['official fwd s'], cells['fwd ratio']) == ('2', '4', '2.00')
    assert (cells['official train s'], cells['train ratio']) == ('-', '-')
    assert cells['fwd peak MiB official / ours'] == '900 / -'


def test_ours_alone_times_a_training_step():
    threads = torch.get_num_threads()
    try:
        result = bench.compare('TemporalLIIF', None, 'train', threads=threads, warmup=0, repeat=1)
    finally:
        torch.set_num_threads(threads)  # compare() sets the process's threads (and cv2's)
    assert sorted(result) == ['ceiling', 'gflop', 'seconds'] and list(result['seconds']) == ['ours']
    assert result['seconds']['ours'][0] > 0 and result['ceiling'] > 0
    assert list(result['gflop']) == ['ours'] and result['gflop']['ours'] > 0


def test_flops_are_counted_and_rates_set_beside_the_ceiling():
    def conv():
        torch.nn.functional.conv2d(torch.zeros(1, 8, 10, 12), torch.zeros(16, 8, 3, 3), padding=1)
    assert bench.counted_gflop(conv) == 2 * 8 * 16 * 9 * 10 * 12 / 1e9  # multiply-adds of a 3x3 convolution, x2
    results = {'forward': {'seconds': {'ours': [2.0, 3.0, 1.0], 'official': [4.0]}, 'ceiling': 300.0,
                           'gflop': {'ours': 10.0, 'official': 12.0}},
               'train': {'seconds': {'ours': [1.0]}, 'gflop': {'ours': 30.0}, 'ceiling': 200.0}}
    cells = dict(zip(bench.HEADER, bench.row_cells('STARnet', results, {})))
    assert cells['fwd GFLOP/s official / ours'] == '3 / 5'
    assert cells['train GFLOP/s official / ours'] == '- / 30'
    assert cells['conv ceiling GFLOP/s'] == '250'
