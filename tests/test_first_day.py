"""A newcomer's first day: what the README promises works as written (quick start, a run without validation,
`--set` with plain strings, the thread defaults, the Python API)."""
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
import torch
import yaml

from engine.inference import load_network, upscale
from engine.options import apply_override
from models import build_network
from tests.conftest import ROOT, SHARED_DATA
from tests.support import options, run


def test_set_takes_text_that_is_not_yaml_as_a_string():
    tree = apply_override({}, 'data.train.frame_pattern={:08d}.png')
    assert tree == {'data': {'train': {'frame_pattern': '{:08d}.png'}}}
    assert apply_override({}, 'a=[1, 2]') == {'a': [1, 2]}  # YAML still parses as YAML


@pytest.mark.parametrize('preset, expected', [(None, 'PASSIVE'), ('ACTIVE', 'ACTIVE')])
def test_openmp_threads_wait_passively_unless_told_otherwise(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if preset:
        env['OMP_WAIT_POLICY'] = preset
    for script in ('main', 'test'):
        code = f'import importlib.util, os; s = importlib.util.spec_from_file_location("m", "{script}.py"); ' \
               'm = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(os.environ["OMP_WAIT_POLICY"])'
        out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.stdout.strip() == expected, out.stderr


def test_auto_threads_leave_the_cores_other_tasks_use(monkeypatch):
    import engine.threads as threads
    default = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        auto = threads.CpuThreads(0)
        monkeypatch.setattr(threads, 'available_cores', lambda: 4)
        for busy, expected in ((0, 4), (1, 3), (3, 1), (9, 1)):
            monkeypatch.setattr(threads, 'busy_elsewhere', lambda busy=busy: busy)
            changed = auto.update()
            assert torch.get_num_threads() == expected
            assert changed is None or changed[1:] == (expected, busy)
        monkeypatch.setattr(threads, 'busy_elsewhere', lambda: 0)
        assert auto.update() == (1, 4, 0) and auto.update() is None  # back up to the most, then unchanged
        fixed = threads.CpuThreads(2)
        assert fixed.update() == (4, 2, 0) and fixed.update() is None
    finally:
        torch.set_num_threads(default)


def test_a_spinning_process_counts_as_busy():
    from engine.threads import busy_elsewhere
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.5)
        assert busy_elsewhere(samples=9) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_a_run_without_validation_tests_from_its_folder_and_prints_no_inf(tmp_path):
    path = options(tmp_path, 'noval', total_iter=2, val_every=1)
    tree = yaml.safe_load(path.read_text())
    val = tree['data'].pop('val')
    path.write_text(yaml.safe_dump(tree))
    proc = run(['main.py', '-opt', str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tmp_path / 'experiments' / 'noval'
    assert 'inf' not in proc.stdout and f'no validation set, so no best.pth: {folder}/checkpoints/latest.pth' \
        in proc.stdout
    (tmp_path / 'test.yml').write_text(yaml.safe_dump({'name': 'noval', 'device': 'cpu', 'data': {'test': val}}))
    tested = run(['test.py', '-opt', str(tmp_path / 'test.yml'), '--checkpoint', str(folder)])
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert '| average | 7 |' in tested.stdout and (folder / 'checkpoints' / 'noval_window7_latest_iter2.csv').exists()


def test_the_python_api_upscales_a_tensor():
    net, _ = load_network(network='{type: BicubicBlend}')
    lq = torch.rand(5, 3, 12, 16)
    hr = upscale(net, lq)
    assert hr.shape == (9, 3, 48, 64)
    with torch.no_grad():
        expected = torch.cat([build_network({'type': 'BicubicBlend'}).predict(lq[None, 0:4])[0],
                              build_network({'type': 'BicubicBlend'}).predict(lq[None, 1:5])[0, 5:]])
    torch.testing.assert_close(hr, expected.clamp(0, 1), rtol=0, atol=1e-6)
    assert upscale(net, lq, scale=2, time=4).shape == (17, 3, 24, 32)


def quick_start_lines():
    """The lines of the README's quick-start block (each: train, then test from the run folder)."""
    text = (ROOT / 'README.md').read_text()
    block = re.search(r'<!-- quick start -->\n```bash\n(.*?)```', text, re.S)
    if not block:
        return []
    return [line.split('#')[0].strip() for line in block.group(1).splitlines() if line.strip().startswith('python')]


def test_the_quick_start_block_trains_every_quick_start_recipe():
    trained = {args.split()[3] for args in quick_start_lines() if args.startswith('python main.py -opt')}
    recipes = {f'options/train/{p.name}' for p in (ROOT / 'options' / 'train').glob('quickstart_*.yml')}
    assert len(recipes) >= 6 and trained == recipes


@pytest.mark.parametrize('line', quick_start_lines(), ids=lambda line: line.split()[3].split('/')[-1][:-4])
def test_the_quick_start_block_runs_as_written(line, tmp_path):
    """One line of the README's quick-start block, every command on it, with the iterations cut to 1 and the
    run folders in a temporary place (the only changes)."""
    if not (SHARED_DATA / 'vimeo_septuplet').exists():
        pytest.skip(f'real data not found: {SHARED_DATA} (the shared folder sits beside the repository)')
    for command in line.split('&&'):
        args = shlex.split(command.strip().replace('experiments/', f'{tmp_path}/'))[1:]
        if args[0] == 'main.py':
            args += ['--set', 'train.total_iter=1', '--set', 'train.save_every=1', '--set', 'train.val_every=1',
                     '--set', f'experiments_root={tmp_path}']
        proc = run(args)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])


def test_tables_and_messages_say_the_registered_name():
    from data.protocols import Protocol
    from engine.evaluation import compare_with_baseline
    from tests.support import CONFIGS
    torch.manual_seed(0)
    net = build_network(CONFIGS['mstt']['tiny'])
    assert type(net).__name__ == 'MSTTr' and net.label == 'MSTT'
    rng = torch.Generator().manual_seed(0)
    gt = (torch.rand(7, 64, 64, 3, generator=rng) * 255).to(torch.uint8).numpy()
    clip = {'name': 'c', 'gt': gt, 'lq': torch.rand(7, 16, 16, 3, generator=rng).numpy(), 'max_value': 255,
            'frame_names': [f'{i}.png' for i in range(7)]}
    table = compare_with_baseline(net, [clip, clip], Protocol('window7', 4, 2, 0, 1), 'cpu')
    assert 'window7, 1 clips' in table and '| MSTT |' in table and 'MSTTr' not in table
    with pytest.raises(ValueError, match='^MSTT upscales x4'):
        net.check_factors(scale=3)


def test_eta_is_not_swung_by_a_slow_first_iteration(monkeypatch):
    from engine.training import StepTimer
    clock = iter([0.0, 0.0, 10.0] + [10.0 + 0.5 * i for i in range(1, 40)])
    monkeypatch.setattr('engine.training.time.time', lambda: next(clock))
    timer = StepTimer()
    for _ in range(10):
        timer.data_ready()
        timer.step_done()
    assert timer.eta(100) == '00:01:40'  # 100 iterations at the median 1 s, not at the mean 1.9 s (03:10)


def test_tensorboard_gets_validation_frames_and_a_short_schedule_is_warned(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    path = options(tmp_path, 'tb', total_iter=2, val_every=2, tensorboard=True)  # periods [6] for 2 iterations
    proc = run(['main.py', '-opt', str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'train.scheduler (CosineAnnealingRestart): its periods add up to 6 iterations, the run has 2' in proc.stdout
    events = EventAccumulator(str(tmp_path / 'experiments' / 'tb' / 'tb')).Reload()
    assert events.Tags()['images'] == ['val/carphone/00000003'] and 'val/psnr_y' in events.Tags()['scalars']
