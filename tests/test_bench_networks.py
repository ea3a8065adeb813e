"""Smoke test of benchmarks/bench_networks.py on tiny configurations and tiny inputs."""
import json
import sys

import pytest
import torch

from models.base import VideoNetwork
from models.common import ModulatedDeformConv2d
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
import bench_networks as bench  # noqa: E402


class OneDeformConv(VideoNetwork):
    """lq (b, n, 3, h, w) -> one modulated deformable conv of the first frame, offsets from itself."""

    def __init__(self, impl):
        super().__init__()
        self.dcn = ModulatedDeformConv2d(3, 5, deformable_groups=1, impl=impl)

    def forward(self, lq):
        return self.dcn(lq[:, 0], lq[:, 0])


def test_network_spec(monkeypatch):
    assert bench.network_spec('MSITF', 'official') == ({'type': 'MSITF'}, None)
    spec, note = bench.network_spec('MSITF', 'tiny')
    assert spec['type'] == 'MSITF' and spec['nf'] == 8 and note is None
    with monkeypatch.context() as patched:
        patched.setattr(bench, 'network_configs', dict)
        spec, note = bench.network_spec('MSITF', 'tiny')
        assert spec == {'type': 'MSITF'} and 'no tiny config' in note
    assert bench.parse_size('64x112') == (64, 112)
    for stem, config in bench.network_configs().items():
        assert bench.network_spec(stem, 'official') == (config['full'], None)
        assert bench.network_spec(stem, 'tiny') == (config['tiny'], None)
        name = config['tiny']['type']
        if config['full'] == {'type': name} and name in bench.NETWORKS:  # not a variant such as starnet_noref
            assert bench.network_spec(name, 'tiny') == (config['tiny'], None)
    with pytest.raises(KeyError, match='unknown network'):
        bench.network_spec('NoSuchNet', 'tiny')


def test_peak_memory_sees_torch_allocations():
    mib = bench.peak_memory_mib(lambda: torch.ones(2 ** 25), torch.device('cpu'))  # 128 MiB, touched
    assert 120 < mib < 200


@pytest.mark.parametrize('impl', ['torchvision', 'sampled'])
def test_deformable_conv_flops_counted_like_a_conv(impl):
    h, w = 6, 7
    flops, uncounted = bench.count_flops(OneDeformConv(impl), torch.rand(1, 1, 3, h, w), {})
    offset_conv = 2 * h * w * (3 * 9) * (3 * 1 * 9)  # 3 * groups * taps outputs
    deform_conv = 2 * h * w * 5 * (3 * 9)
    assert flops == offset_conv + deform_conv
    assert uncounted == (['grid_sample'] if impl == 'sampled' else [])


def test_forward_and_train_step_with_flows():
    spec, _ = bench.network_spec('MSTT', 'tiny')
    result = bench.forward_benchmark(spec, (16, 16), threads=1, warmup=1, repeat=2)
    assert result['params'] == sum(p.numel() for p in bench.build_network(spec).parameters())
    assert len(result['seconds']) == 2 and result['fwd_s'] > 0
    assert len(result['flow_seconds']) == 2 and result['flow_s'] > 0  # MSTT's flows are timed apart
    assert result['peak_mem_mib'] >= 0 and result['flops'] > 0
    assert result['uncounted_ops'] == ['grid_sample']
    train = bench.train_benchmark(spec, patch=16, batch=1, threads=1, warmup=1, repeat=1)
    assert train['patch'] == 16 and train['batch'] == 1 and train['train_s'] > 0 and train['peak_mem_mib'] >= 0
    assert bench.train_benchmark({'type': 'BicubicBlend'}, patch=8, batch=1) == {'skipped': 'no trainable parameters'}


def test_main_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / 'bench.json'
    report = bench.main(['--config', 'tiny', '--networks', 'BicubicBlend', 'STDAN', '--sizes', '8x8', '12x16',
                         '--repeat', '1', '--train-patch', '8', '--threads', '1', '--in-process', '--json', str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))
    machine = report['machine']
    assert machine['device'] == 'cpu' and machine['threads'] == 1 and machine['torch'] == torch.__version__
    assert machine['cpu'] and machine['cpu_count'] >= 1
    assert report['official_cpu_forward_s']['STDAN'] == '26.4'
    blend, stdan = report['results']
    assert [blend['network'], stdan['network']] == ['BicubicBlend', 'STDAN']
    assert blend['params'] == 0 and blend['train'] == {'skipped': 'no trainable parameters'}
    assert stdan['spec'] == bench.network_spec('STDAN', 'tiny')[0] and stdan['params'] > 0 and stdan['flops'] > 0
    assert set(stdan['forward']) == {'8x8', '12x16'}
    assert all(r['fwd_s'] > 0 and 'error' not in r for r in stdan['forward'].values())
    assert stdan['train']['train_s'] > 0 and stdan['train']['batch'] == 1

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('|')]
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    assert header[:6] == ['network', 'config', 'params', 'GFLOPs 8x8', 'fwd 8x8 s', 'peak MiB']
    assert 'fwd 12x16 s' in header and 'flow s' in header and header[-1] == 'notes'
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[2:]]
    assert len(rows) == 2 and all(len(r) == len(header) for r in rows)
    assert rows[1][:3] == ['STDAN', 'tiny', f'{stdan["params"]:,}']
    # the official times are of the full-size configurations: none beside a tiny row
    assert rows[1][header.index('official CPU fwd s (spec, not re-measured)')] == '-'
    assert rows[1][header.index('train step s (patch, batch)')].endswith('(8, 1)')


def test_isolated_run_returns_result_or_timeout():
    kwargs = {'spec': {'type': 'BicubicBlend'}, 'size': (8, 8), 'threads': 1, 'repeat': 1}
    result = bench.run_isolated(bench.forward_benchmark, kwargs, timeout=300)
    assert result['params'] == 0 and result['fwd_s'] > 0 and result['peak_mem_mib'] >= 0
    assert bench.run_isolated(bench.forward_benchmark, kwargs, timeout=0.5) == {'error': 'timeout after 0.5 s'}
