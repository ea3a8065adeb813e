"""The failures a hostile sweep found, one test per class: data loss, silent or wrong results, tracebacks.

Each test is what a user did (a command, a signal, a damaged file) and what must come of it: the input and
every earlier result intact, a correct result or one line naming what is wrong, exit code 2 (130/143 after
a signal), nothing left behind. The numbers in the test names are the classes of the sweep's report.
"""
import csv
import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import main
from data.io import UMASK, list_images, write_image
from engine.checkpoint import FORMAT, CheckpointManager, load_checkpoint
from engine.inference import InferenceOptions, open_input, run_inference
from engine.logger import MetricsLog
from engine.training import RunLock
from models import build_network
from tests.conftest import ROOT, load_script
from tests.support import CONFIGS, NETWORK, options, run, smooth_frame, weights
from utils.errors import CheckpointError, Interrupted, OptionsError

TEST_CLI = load_script('test.py', 'stvsr_test_cli_hostile')
BICUBIC = {'type': 'BicubicBlend'}


def one_line_error(proc, *fragments, code=2):
    assert proc.returncode == code, proc.stderr[-3000:]
    assert proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


def frames_folder(folder, n=4, size=(24, 32)):
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(folder / f'{i:03d}.png', smooth_frame(rng, *size))
    return folder


def tree_of(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob('*'))


# ------------------------------------------------------------------------------------------- data loss

def test_1_output_that_is_the_input_or_inside_it_is_refused(tmp_path):
    clip = frames_folder(tmp_path / 'clip')
    before = tree_of(tmp_path)
    for output in (clip, clip / 'up', tmp_path):  # the input, inside it, holding it
        for overwrite in (False, True):
            with pytest.raises(OptionsError, match='is the input .* lies inside it or holds it'):
                run_inference(build_network(BICUBIC), open_input(clip),
                              InferenceOptions(outputs=(output,), overwrite=overwrite, progress=False))
    video = tmp_path / 'clip.mp4'
    run_inference(build_network(BICUBIC), open_input(clip), InferenceOptions(outputs=(video,), progress=False))
    before = tree_of(tmp_path)
    with pytest.raises(OptionsError, match='is the input'):
        run_inference(build_network(BICUBIC), open_input(video),
                      InferenceOptions(outputs=(video,), overwrite=True, progress=False))
    assert tree_of(tmp_path) == before


def test_1_lr_frames_are_never_written_into_their_ground_truth(tmp_path):
    clip = frames_folder(tmp_path / 'gt' / 'clip')
    before = tree_of(tmp_path)
    for dst in (tmp_path / 'gt', tmp_path / 'gt' / 'lr', tmp_path):
        proc = run(['data_scripts/generate_lr.py', str(tmp_path / 'gt'), str(dst)])
        one_line_error(proc, 'is the GT root', 'lies inside it or holds it')
    assert tree_of(tmp_path) == before and clip.exists()


def test_2_a_second_trainer_on_a_run_folder_stops_naming_the_holder(tmp_path):
    """The lock is the kernel's: held while its process lives, gone the moment it dies, even by kill -9."""
    folder = tmp_path / 'experiments' / 'run'
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]);'
                               'from engine.training import RunLock; RunLock(sys.argv[2]); print("held", flush=True);'
                               'time.sleep(600)', str(ROOT), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        proc = run(['main.py', '-opt', str(options(tmp_path, 'run', total_iter=2, resume='auto'))])
        one_line_error(proc, f'another process (pid {holder.pid}) is training in this run folder')
        assert not (folder / 'config.yml').exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(folder).release()  # free again


def test_3_best_survives_damage_to_latest(tmp_path):
    ckpts = CheckpointManager(tmp_path, keep=2)
    state = {'format': FORMAT, 'weights': {'w': torch.arange(1000.)}}
    ckpts.save(state, 2, is_best=True)
    inodes = {p.name: p.stat().st_ino for p in tmp_path.iterdir()}
    assert len(set(inodes.values())) == 3  # iter_2, best and latest are three files, no hard links
    with open(tmp_path / 'latest.pth', 'r+b') as f:
        f.seek(200)
        f.write(b'\xff' * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / 'latest.pth')
    for name in ('best.pth', 'iter_2.pth'):
        assert torch.equal(load_checkpoint(tmp_path / name)['weights']['w'], state['weights']['w'])


def test_4_metrics_history_survives_an_error_while_it_is_rewritten(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path)
    for it in (1, 2, 3):
        log.add(it, lr=1e-3, loss=0.5)
    history = (tmp_path / 'metrics.csv').read_text()

    def full_disk(self, rows):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(csv.DictWriter, 'writerows', full_disk)
    with pytest.raises(OSError):
        MetricsLog(tmp_path, start_iter=2)
    assert (tmp_path / 'metrics.csv').read_text() == history


# 5 (two checkpoints, two tables) is in tests/test_training.py::test_train_kill_resume_test.


def test_6_7_8_resume_keeps_the_first_config_applies_a_new_lr_and_refuses_going_back(tmp_path):
    schedule = {'optimizer': {'type': 'Adam', 'lr': 1e-3}, 'save_every': 2, 'val_every': 100,
                'scheduler': {'type': 'CosineAnnealingRestart', 'periods': [6], 'restart_weights': [1.0],
                              'eta_min': 1e-5}}
    path = options(tmp_path, 'run', total_iter=4, **schedule)
    folder = tmp_path / 'experiments' / 'run'
    assert main.main(['-opt', str(path)]) == 0
    first = (folder / 'config.yml').read_text()
    assert main.main(['-opt', str(path), '--set', 'train.resume=auto', '--set', 'train.total_iter=6',
                      '--set', 'train.optimizer.lr=2e-4']) == 0
    assert (folder / 'config.yml').read_text() == first  # 6: the original options are kept
    resumed = yaml.safe_load((folder / 'config_resume_4.yml').read_text())
    assert resumed['train']['optimizer']['lr'] == 2e-4 and resumed['train']['total_iter'] == 6
    log = (folder / 'train.log').read_text()
    assert 'train.optimizer.lr: 0.001 -> 0.0002' in log and 'train.total_iter: 4 -> 6' in log
    assert 'train.optimizer.lr changed on resume: 0.001 -> 0.0002' in log
    # 7: 2e-4 is the base of the rest of the schedule: lr(i) = eta_min + (2e-4 - eta_min) (1 + cos(pi i / 6)) / 2
    # (the row of iteration i logs the rate of the step after it), down to eta_min at the end
    with open(folder / 'metrics.csv') as f:
        lrs = {int(r['iter']): float(r['lr']) for r in csv.DictReader(f) if r['lr']}
    for it in (5, 6):
        expected = 1e-5 + (2e-4 - 1e-5) * (1 + np.cos(np.pi * it / 6)) / 2
        assert lrs[it] == pytest.approx(expected, rel=1e-4), it
    assert weights(folder / 'checkpoints' / 'latest.pth')['scheduler']['base_lrs'] == [2e-4]
    # 8: a total below the checkpoint's iteration is an error naming both numbers
    proc = run(['main.py', '-opt', str(path), '--set', 'train.resume=auto', '--set', 'train.total_iter=3'])
    one_line_error(proc, 'train.total_iter: 3', 'is at iteration 6')


NAN_AT = """
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


def test_9_a_run_whose_last_steps_are_non_finite_fails_without_saving_them(tmp_path):
    path = options(tmp_path, 'nan', total_iter=4, save_every=1, val_every=100, max_bad_steps=5)
    proc = run(['-c', NAN_AT, '3,4', '-opt', str(path)])
    one_line_error(proc, 'the last 2 step(s) were non-finite', 'iter_2.pth')
    folder = tmp_path / 'experiments' / 'nan' / 'checkpoints'
    assert sorted(p.name for p in folder.glob('iter_*.pth')) == ['iter_1.pth', 'iter_2.pth']
    assert weights(folder / 'latest.pth')['iteration'] == 2
    assert 'error: the last 2 step(s) were non-finite' in (folder.parent / 'train.log').read_text()


def test_10_weights_that_give_nan_are_an_error_naming_the_checkpoint(tmp_path):
    net = build_network(CONFIGS[NETWORK]['tiny'])
    state = {k: v * float('nan') if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path = tmp_path / 'nan.pth'
    torch.save(state, path)
    spec = yaml.safe_dump(CONFIGS[NETWORK]['tiny'], default_flow_style=True).strip()
    proc = run(['test.py', '--checkpoint', str(path), '--set', f'network={spec}', '--set', 'name=nan',
                '--set', 'data.test={type: VideoFile, paths: [demo:carphone], max_frames: 7, max_side: 64}',
                '--set', f'test.results_dir={tmp_path / "out"}', '-opt', str(ROOT / 'options/test/demo.yml')])
    one_line_error(proc, f'{path}: clip carphone: the network\'s output is not finite')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('scheduler, message', [
    ({'type': 'CosineAnnealingRestart', 'periods': [-6], 'restart_weights': [1.0]}, 'periods must be'),
    ({'type': 'CosineAnnealingRestart', 'periods': [6], 'restart_weights': [-1.0]}, 'restart_weights must be'),
    ({'type': 'CosineAnnealingRestart', 'periods': [6], 'restart_weights': [1.0], 'eta_min': -1}, 'eta_min must'),
    ({'type': 'MultiStepLR', 'milestones': [0, -3]}, 'milestones must be'),
    ({'type': 'MultiStepLR', 'milestones': [3], 'gamma': 0}, 'gamma must be')])
def test_11_schedules_are_validated(tmp_path, capfd, scheduler, message):
    assert main.main(['-opt', str(options(tmp_path, 's', scheduler=scheduler))]) == 2
    err = capfd.readouterr().err
    assert err.count('\n') == 1 and f'train.scheduler ({scheduler["type"]}): {message}' in err
    assert not (tmp_path / 'experiments' / 's').exists()


def test_12_advice_and_key_names_are_right_and_outputs_follow_the_umask(tmp_path, capfd):
    root = frames_folder(tmp_path / 'clips' / 'a').parent
    (tmp_path / 'list.txt').write_text('a\nb\n')
    tree = {'name': 'x', 'experiments_root': str(tmp_path), 'device': 'cpu', 'network': BICUBIC,
            'data': {'test': {'type': 'FrameFolders', 'root': str(root), 'clips': str(tmp_path / 'list.txt')}}}
    (tmp_path / 't.yml').write_text(yaml.safe_dump(tree))
    assert TEST_CLI.main(['-opt', str(tmp_path / 't.yml')]) == 2
    err = capfd.readouterr().err
    assert '1 of 2 listed clips not found' in err and 'skip_missing' not in err
    clip = frames_folder(tmp_path / 'clip')
    assert TEST_CLI.main(['--network', '{type: BicubicBlend, scale: 0}', '--input', str(clip),
                          '--output', str(tmp_path / 'o.mp4')]) == 2
    err = capfd.readouterr().err
    assert err.startswith('error: --network (BicubicBlend): scale') and '--scale' not in err
    assert TEST_CLI.main(['--network', '{type: BicubicBlend}', '--input', str(clip), '--output', str(tmp_path / 'up'),
                          '--output', str(tmp_path / 'up.mp4')]) == 0
    assert (tmp_path / 'up').stat().st_mode & 0o777 == 0o777 & ~UMASK
    for path in [tmp_path / 'up.mp4', *list_images(tmp_path / 'up')]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK, path


# --------------------------------------------------------------------------------------------- tracebacks

def start_training(tmp_path, name, **train):
    path = options(tmp_path, name, total_iter=400, log_every=1, save_every=100, val_every=1000, **train)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.Popen([sys.executable, 'main.py', '-opt', str(path)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / 'experiments' / name / 'train.log'
    deadline = time.time() + 120
    while not (log.exists() and 'iter       2/' in log.read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, path


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_13_a_signal_stops_training_with_a_checkpoint_and_one_line(tmp_path, signum):
    proc, path = start_training(tmp_path, 'sig')
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert err.count('\n') == 1 and 'Traceback' not in err and f'stopped by {signal.Signals(signum).name} at ' \
        'iteration' in err, err
    it = int(err.split('at iteration ')[1].split(';')[0])
    ckpt = weights(tmp_path / 'experiments' / 'sig' / 'checkpoints' / 'latest.pth')
    assert ckpt['iteration'] == it and f'iter_{it}.pth' in err
    resumed = run(['main.py', '-opt', str(path), '--set', 'train.resume=auto', '--set', f'train.total_iter={it + 1}'])
    assert resumed.returncode == 0 and f'at iteration {it}' in resumed.stdout, resumed.stderr[-2000:]


def test_13_a_signal_stops_inference_leaving_nothing(tmp_path):
    clip = frames_folder(tmp_path / 'clip', n=40, size=(72, 96))
    spec = yaml.safe_dump(CONFIGS[NETWORK]['tiny'], default_flow_style=True).strip()
    net = build_network(CONFIGS[NETWORK]['tiny'])
    torch.save(net.state_dict(), tmp_path / 'w.pth')
    before = tree_of(tmp_path)
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, 'test.py', '--checkpoint', str(tmp_path / 'w.pth'), '--network', spec,
                                 '--input', str(clip), '--output', str(tmp_path / 'out'), '--output',
                                 str(tmp_path / 'out.mp4')], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        deadline = time.time() + 60
        while not any(p.name.startswith('.out') for p in tmp_path.iterdir()):  # frames being written
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum and err.count('\n') == 1 and 'stopped' in err, err
        assert tree_of(tmp_path) == before


def test_13_a_signal_during_the_final_renames_waits_until_every_output_is_in_place(tmp_path, monkeypatch):
    """SIGTERM while the first of two outputs is renamed into place: both are completed, then the run stops
    with a message saying so (not "nothing was written"), and the handler in force before is back."""
    import engine.inference
    from engine.cli import raise_on_sigterm
    clip = frames_folder(tmp_path / 'clip')
    outputs = (tmp_path / 'up', tmp_path / 'up.mp4')
    commit = engine.inference.FramesOutput.commit

    def commit_and_signal(self):
        os.kill(os.getpid(), signal.SIGTERM)
        commit(self)

    monkeypatch.setattr(engine.inference.FramesOutput, 'commit', commit_and_signal)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        raise_on_sigterm()
        handler = signal.getsignal(signal.SIGTERM)
        with pytest.raises(Interrupted, match='after every output was written') as stop:
            run_inference(build_network(BICUBIC), open_input(clip), InferenceOptions(outputs=outputs, progress=False))
        assert stop.value.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert len(list_images(outputs[0])) == 7 and outputs[1].stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['clip', 'up', 'up.mp4']


def test_14_unwritable_outputs_are_found_before_the_work(tmp_path):
    (tmp_path / 'file').write_text('x')
    start = time.time()
    proc = run(['test.py', '-opt', str(ROOT / 'options/test/demo.yml'), '--set', 'test.checkpoint=null',
                '--set', 'network={type: BicubicBlend}', '--set', f'test.results_dir={tmp_path / "file" / "out"}'])
    one_line_error(proc, f'{tmp_path / "file" / "out"}: cannot be written, {tmp_path / "file"} is a file')
    clip = frames_folder(tmp_path / 'clip')
    proc = run(['test.py', '--network', '{type: BicubicBlend}', '--input', str(clip), '--output',
                str(tmp_path / 'file' / 'o.mp4')])
    one_line_error(proc, 'cannot be written')
    assert time.time() - start < 60


def test_15_a_full_disk_during_a_checkpoint_names_the_one_still_good(tmp_path, monkeypatch):
    ckpts = CheckpointManager(tmp_path, keep=2)
    ckpts.save({'format': FORMAT, 'iteration': 2}, 2)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b'partial')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(CheckpointError, match=r'iter_4.pth: cannot write the checkpoint \(No space left on device\); '
                                              'the newest checkpoint kept is latest.pth') as info:
        ckpts.save({'format': FORMAT, 'iteration': 4}, 4)
    assert '\n' not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2.pth', 'latest.pth']


def test_16_mismatches_and_odd_values_are_one_line(tmp_path):
    folder = tmp_path / 'experiments'
    proc = run(['main.py', '-opt', str(options(tmp_path, 'x3')), '--set', 'data.train.degradation={type: BI, scale: 3}'])
    one_line_error(proc, 'data.train: samples are 16x16 LR for 48x48 GT, but the network upscales x4')
    proc = run(['main.py', '-opt', str(options(tmp_path, 'nf0')), '--set', 'network.nf=0'])
    one_line_error(proc, 'network (MSITF): a deformable conv needs channels >= 1', '0 in, 0 out')
    proc = run(['main.py', '-opt', str(options(tmp_path, 'negative')), '--set', 'data.train.lq_size=-4'])
    one_line_error(proc, 'data.train: lq_size must be a positive number of LR pixels')
    proc = run(['main.py', '-opt', str(options(tmp_path, 'long')), '--set', 'name=' + 'n' * 300])
    one_line_error(proc, 'name: must be at most 200 bytes')
    ckpt = tmp_path / 'noconfig.pth'
    torch.save({'format': FORMAT, 'network': CONFIGS[NETWORK]['tiny'],
                'weights': build_network(CONFIGS[NETWORK]['tiny']).state_dict()}, ckpt)
    proc = run(['test.py', '--checkpoint', str(ckpt)])
    one_line_error(proc, f'{ckpt}: damaged training checkpoint, it lacks', 'config')
    assert not folder.exists() or not any(folder.iterdir())


def test_17_late_data_errors_leave_no_run_folder(tmp_path):
    # a validation clip too short for its protocol: found before the run folder is made
    path = options(tmp_path, 'short')
    proc = run(['main.py', '-opt', str(path), '--set', 'data.val.max_frames=5'])
    one_line_error(proc, 'carphone: 5 frames, protocol window7 with 4 inputs needs at least 7')
    assert not (tmp_path / 'experiments' / 'short').exists()
    # a broken frame that only a later sample reads: the folder this run made (no checkpoint yet) goes
    root = tmp_path / 'frames'
    rng = np.random.default_rng(0)
    for clip in ('a', 'b'):
        for i in range(7):
            write_image(root / clip / f'{i}.png', smooth_frame(rng, 64, 64))
    (root / 'b' / '3.png').write_bytes(b'\x89PNG broken')
    proc = run(['-c', LATE_ERROR, str(path), str(root)])
    one_line_error(proc, '3.png: not a readable image')
    assert not (tmp_path / 'experiments' / 'late').exists()


LATE_ERROR = """
import sys, yaml
import main
from data.registry import DATASETS
from data.io import read_frames
from data.transforms import training_sample
from torch.utils.data import Dataset

@DATASETS.register()
class TwoClips(Dataset):
    def __init__(self, root):
        self.clips = [[f'{root}/{c}/{i}.png' for i in range(7)] for c in ('a', 'b')]
    def __len__(self):
        return 2
    def __getitem__(self, i):
        return training_sample(read_frames(self.clips[i]), str(i), {'type': 'BI', 'scale': 4}, lq_size=8)

tree = yaml.safe_load(open(sys.argv[1]))
tree.update(name='late', seed=0)
tree['data'].update(train={'type': 'TwoClips', 'root': sys.argv[2]}, val=None, batch_size=1)
tree['train'].update(total_iter=4, save_every=4)
open(sys.argv[1], 'w').write(yaml.safe_dump(tree))
sys.exit(main.main(['-opt', sys.argv[1]]))
"""


def test_18_an_experiments_root_with_dots_is_resolved_and_said(tmp_path):
    (tmp_path / 'a').mkdir()
    path = options(tmp_path, 'dots', total_iter=1, val_every=100)
    proc = run(['main.py', '-opt', str(path), '--set', f'experiments_root={tmp_path / "a" / ".." / "runs"}'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == f'run folder {tmp_path / "runs" / "dots"}'
    assert (tmp_path / 'runs' / 'dots' / 'checkpoints' / 'latest.pth').exists()
