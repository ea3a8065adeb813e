"""benchmarks/gpu_check.py --smoke: the GPU check's code paths on the CPU (the script a lent GPU runs), on two
networks to keep it short. On the CPU the CUDA rows are skipped with their reason; what the CPU can check
(channels_last against contiguous, the two deformable-conv implementations) must agree."""
import json

from tests.support import run


def test_smoke_runs_every_section_and_the_cpu_checks_agree(tmp_path):
    out = tmp_path / 'gpu_check.json'
    result = run(['benchmarks/gpu_check.py', '--smoke', '--networks', 'bicubic_blend', 'msitf',
                  '--sections', 'correctness', 'speed', 'inference', 'official', '--json', str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report['sections']
    assert set(sections) >= {'correctness', 'speed', 'inference', 'official'}
    rows = {row['network']: row for row in sections['correctness']['networks']}
    assert set(rows) == {'bicubic_blend', 'msitf'}
    for row in rows.values():
        assert 'CUDA' in row['cuda_vs_cpu']['skipped']
        assert row['channels_last']['ok'] and row['channels_last']['rel_err'] <= 1e-4
    assert rows['msitf']['bf16']['deform_convs_fp32'] is True  # deformable convs stay float32 under autocast
    assert sections['correctness']['deform_conv'], 'no deformable-conv comparison'
    assert 'official-root' in sections['official']['skipped']
    assert '## 1. Correctness' in result.stdout and '## 4. Inference' in result.stdout
