"""A run SIGKILLed again and again, at different points, ends bitwise equal to an uninterrupted one.

Each killed run is tests/kill_runner.py (main.py with one function patched to SIGKILL the process at a
chosen point); each restart uses ``resume: auto``. On CPU with one thread the weights, the optimizer
and scheduler states and the logged losses, learning rates and validation scores must then be exactly
those of the uninterrupted run: data order, augmentation and the schedule all resume where they were.
"""
import csv
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.support import options, run, weights

# 8 iterations: checkpoints at 2, 4, 6, 8; validations at 3, 6, 8; the learning rate falls over all 8.
SETTING = {'total_iter': 8, 'save_every': 2, 'val_every': 3,
           'scheduler': {'type': 'CosineAnnealingRestart', 'periods': [8], 'restart_weights': [1.0], 'eta_min': 1e-5}}
TIMING = ('data_time', 'iter_time')
# One loader worker: samples come from another process, so the trainer's own random numbers (stochastic depth)
# must not depend on when the loader starts (main.py gives the loader its own generator).
WORKERS = ['--set', 'data.num_workers=1']


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The uninterrupted run, started in the background to use the second core while the killed runs go on;
    the fixture's value waits for it and returns its run folder."""
    tmp = tmp_path_factory.mktemp('reference')
    with open(tmp / 'stderr.txt', 'w') as stderr:
        proc = subprocess.Popen([sys.executable, 'main.py', '-opt', str(options(tmp, 'run', **SETTING)), *WORKERS], cwd=ROOT,
                                env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.DEVNULL, stderr=stderr)

    def finished():
        assert proc.wait(timeout=600) == 0, (tmp / 'stderr.txt').read_text()[-2000:]
        return tmp / 'experiments' / 'run'
    yield finished
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class Run:
    """One run folder trained by successive processes; ``start`` runs one and returns the new log lines."""

    def __init__(self, tmp_path):
        self.path = options(tmp_path, 'run', resume='auto', **SETTING)
        self.dir = tmp_path / 'experiments' / 'run'
        self.log_size = 0

    def start(self, kill=None):
        args = ['tests/kill_runner.py', '--kill', kill] if kill else ['main.py']
        proc = run([*args, '-opt', str(self.path), *WORKERS])
        if kill:
            assert proc.returncode == -9, f'{kill}: exit {proc.returncode}\n{proc.stderr[-2000:]}'
            assert f'kill_runner: SIGKILL at {kill} (' in proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr[-2000:]
        text = (self.dir / 'train.log').read_text()
        new, self.log_size = text[self.log_size:], len(text)
        return proc, new


def it(n):
    return f'iter {n:>7d}/8'


def val(n):
    return f'val {n:>7d}'


def said(log, *lines):
    """Each entry of ``lines`` (a string, or a tuple of strings on one line) on a line of ``log``, in order."""
    rest = iter(log.splitlines())
    for entry in lines:
        parts = (entry,) if isinstance(entry, str) else entry
        if not any(all(part in line for part in parts) for line in rest):
            return False
    return True


def assert_same(a, b, where='checkpoint'):
    """Exact equality of nested checkpoint contents: tensors with torch.equal, the rest with ==."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        assert same, f'{where}: tensors differ'
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def assert_matches_reference(run_dir, ref_dir):
    """Same final, kept and best checkpoints (all but the config, which names another folder), and the
    same metrics.csv rows but for the timings."""
    for name in ('latest.pth', 'iter_6.pth', 'iter_8.pth', 'best.pth'):
        ours, ref = weights(run_dir / 'checkpoints' / name), weights(ref_dir / 'checkpoints' / name)
        assert ours['iteration'] == ref['iteration']
        assert_same({k: v for k, v in ours.items() if k != 'config'},
                    {k: v for k, v in ref.items() if k != 'config'}, name)
    assert weights(run_dir / 'checkpoints' / 'latest.pth')['iteration'] == 8
    rows = [[{k: v for k, v in row.items() if k not in TIMING}
             for row in csv.DictReader((d / 'metrics.csv').read_text().splitlines())] for d in (run_dir, ref_dir)]
    assert rows[0] == rows[1]
    assert [r['iter'] for r in rows[0] if r['psnr_y']] == ['3', '6', '8']


@pytest.mark.xdist_group('uninterrupted_reference_run')
def test_killed_at_save_validation_step_and_final_save_resumes_bitwise(tmp_path, reference):
    job = Run(tmp_path)
    ckpt_dir = job.dir / 'checkpoints'

    # Killed while writing the first checkpoint: only a half-written temporary file, no checkpoint.
    _, log = job.start('save:1')
    assert said(log, it(2)) and 'saved' not in log
    leftovers = list(ckpt_dir.glob('.iter_2.pth.tmp*'))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    assert not list(ckpt_dir.glob('*.pth'))

    # Killed in the middle of the first validation (iteration 3), after its iter_2 checkpoint.
    _, log = job.start('validation:1')
    assert said(log, 'found no checkpoint; starting from scratch', it(1), ('saved', 'iter_2.pth'), it(3))
    assert val(3) not in log
    assert sorted(p.name for p in ckpt_dir.glob('*.pth')) == ['iter_2.pth', 'latest.pth']

    # Killed inside its third step (iteration 5), after the update of iteration 4 was saved.
    _, log = job.start('step:3')
    assert said(log, ('resumed from', 'latest.pth at iteration 2'), it(3), val(3), it(4), ('saved', 'iter_4.pth'))
    assert it(5) not in log
    assert weights(ckpt_dir / 'latest.pth')['iteration'] == 4

    # Killed while writing the final checkpoint (iteration 8), after iter_6 was saved.
    _, log = job.start('save:2')
    assert said(log, ('resumed from', 'latest.pth at iteration 4'), it(5), it(6), val(6), ('saved', 'iter_6.pth'),
                it(7), it(8), val(8))
    assert 'iter_8.pth' not in log and 'done' not in log
    assert len(list(ckpt_dir.glob('.iter_8.pth.tmp*'))) == 1
    assert weights(ckpt_dir / 'latest.pth')['iteration'] == 6

    # Restarted without a kill: the last two iterations, then done.
    _, log = job.start()
    assert said(log, ('resumed from', 'latest.pth at iteration 6'), it(7), it(8), val(8), ('saved', 'iter_8.pth'),
                'done: 8 iterations')
    assert_matches_reference(job.dir, reference())


@pytest.mark.xdist_group('uninterrupted_reference_run')
def test_truncated_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, reference):
    job = Run(tmp_path)
    ckpt_dir = job.dir / 'checkpoints'
    job.start('step:5')
    assert weights(ckpt_dir / 'latest.pth')['iteration'] == 4

    # latest.pth is a hard link to iter_4.pth where the file system allows: cut both, whichever it is.
    sizes = {name: (ckpt_dir / name).stat().st_size for name in ('latest.pth', 'iter_4.pth')}
    for name, size in sizes.items():
        os.truncate(ckpt_dir / name, size // 2)

    proc, log = job.start()
    assert said(log, ('WARNING', 'skipping unusable checkpoint', 'latest.pth', 'truncated checkpoint'),
                ('WARNING', 'skipping unusable checkpoint', 'iter_4.pth', 'truncated checkpoint'),
                ('resumed from', 'iter_2.pth at iteration 2'), it(3), 'done: 8 iterations')
    assert 'skipping unusable checkpoint' in proc.stdout  # on the console too
    assert_matches_reference(job.dir, reference())


def test_flipped_bytes_inside_a_checkpoint_are_detected(tmp_path):
    """torch.load does not check the zip members' CRC-32: a bit flipped inside a tensor would load as a wrong
    weight. load_checkpoint checks them, and resume: auto falls back past such a file."""
    from engine.checkpoint import CheckpointManager, atomic_save, load_checkpoint
    from utils.errors import CheckpointError
    state = {'format': 'x', 'weights': {'w': torch.arange(4096, dtype=torch.float32)}}
    manager = CheckpointManager(tmp_path)
    manager.save(state, 1)
    manager.save({**state, 'iteration': 2}, 2)
    data = bytearray((tmp_path / 'latest.pth').read_bytes())
    at = data.find(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[4000:4016])
    assert at > 0  # stored, not compressed: the weight's bytes are in the file
    data[at] ^= 0x01
    (tmp_path / 'latest.pth').unlink()  # a hard link to iter_2.pth: break it so only latest is damaged
    (tmp_path / 'latest.pth').write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r'latest.pth: corrupt checkpoint \(CRC mismatch in .*data/0\)'):
        load_checkpoint(tmp_path / 'latest.pth')
    warnings = []
    path, ckpt = manager.latest_valid(warnings.append)
    assert path.name == 'iter_2.pth' and ckpt['iteration'] == 2 and 'CRC mismatch' in warnings[0]
    atomic_save(state, tmp_path / 'ok.pth')
    assert torch.equal(load_checkpoint(tmp_path / 'ok.pth')['weights']['w'], state['weights']['w'])


def test_best_weights_are_saved_when_validation_is_not_a_save_point(tmp_path):
    """Validation at 3 (best so far) between saves at 2 and 4: best.pth holds iteration 3; partial files of a
    killed write are removed when the next run starts."""
    path = options(tmp_path, 'best', total_iter=4, save_every=2, val_every=3)
    stale = tmp_path / 'experiments' / 'best' / 'checkpoints' / '.iter_2.pth.tmp12345'
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b'half a checkpoint')
    proc = run(['main.py', '-opt', str(path), '--set', 'train.resume=auto'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (tmp_path / 'experiments' / 'best' / 'train.log').read_text()
    assert said(log, 'removed .iter_2.pth.tmp12345', ('saved', 'iter_2.pth'), val(3).replace('/8', ''),
                ('saved', 'checkpoints/best.pth'), ('saved', 'iter_4.pth'))
    # best.pth holds the weights of the best validation, whichever it was (3, or 4 if that beat it)
    best = weights(tmp_path / 'experiments' / 'best' / 'checkpoints' / 'best.pth')
    assert best['iteration'] == best['best']['iteration'] in (3, 4)
    assert not stale.exists()
