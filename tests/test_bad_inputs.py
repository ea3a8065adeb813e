"""Bad input through main.py and test.py (GitHub issue #11).

The contract: exit code 2, one stderr line ``error: ...`` naming the file, key or frame and what was expected,
no traceback, and nothing already written lost. The scripts' ``main(argv)`` run in-process, under ``capfd``, which
also sees what C libraries (libpng, OpenCV) print on file descriptor 2; one test runs real processes for the exit
status end to end. Errors a dataset raises while it is built are checked on the dataset itself.
"""
import csv
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

import main as train_cli
from data import build_dataset
from data.io import read_image, write_image
from engine.checkpoint import FORMAT, CheckpointManager, atomic_save
from models import build_network
from tests.conftest import ROOT, load_script
from tests.support import make_septuplets, smooth_frame
from utils.errors import CheckpointError, DataError

NET = {'type': 'MSITF', 'nf': 8, 'groups': 1, 'front_RBs': 1, 'trunk_depths': [2], 'trunk_heads': [2],
       'window_size': 4, 'hr_nf': 8}


test_cli = load_script('test.py', 'stvsr_test_cli_bad_inputs')


@pytest.fixture(autouse=True)
def close_run_logs():
    """The scripts attach handlers (a run's train.log, the captured stdout) to the 'stvsr' logger; drop them."""
    yield
    logger = logging.getLogger('stvsr')
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


def check_error(code, stderr, *fragments):
    """Exit code 2 and one line ``error: ...`` holding every fragment; returns the line.

    A progress bar erases itself with carriage returns: the terminal shows what follows the last one.
    """
    assert code == 2, stderr
    assert stderr.count('\n') == 1 and stderr.endswith('\n') and 'Traceback' not in stderr, stderr
    line = stderr.rsplit('\r', 1)[-1]
    assert line.startswith('error: '), stderr
    for fragment in fragments:
        assert str(fragment) in line, (fragment, line)
    return line


def cli(capfd, script, *args):
    """(exit code, stderr) of ``script.main(args)``."""
    code = script.main([str(a) for a in args])
    return code, capfd.readouterr().err


def write_options(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return path


def eval_options(tmp_path, data, network=None):
    """test.py options scoring BicubicBlend (or ``network``) on the clip dataset ``data``."""
    return write_options(tmp_path / 'test.yml', {
        'name': 'bad', 'experiments_root': str(tmp_path / 'experiments'), 'device': 'cpu',
        'network': network or {'type': 'BicubicBlend'}, 'data': {'test': data}})


def train_options(tmp_path, data, name='run', workers=0, **train):
    """main.py options: the tiny MSITF for 2 iterations on the training set ``data``."""
    return write_options(tmp_path / f'{name}.yml', {
        'name': name, 'experiments_root': str(tmp_path / 'experiments'), 'device': 'cpu', 'network': NET,
        'data': {'train': data, 'batch_size': 1, 'num_workers': workers},
        'train': {'total_iter': 2, 'progress_bar': False, **train}})


def make_clip(folder, n=7, seed=0):
    """``n`` smooth 48x32 8-bit frames 000.png, 001.png, ..; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = [folder / f'{i:03d}.png' for i in range(n)]
    for path in paths:
        write_image(path, smooth_frame(rng, 32, 48))
    return paths


def vimeo_tree(root, keys=('00001/0001',)):
    """A Vimeo-90K tree of 32x32 septuplets listing ``keys`` in sep_trainlist.txt (training with lq_size 8)."""
    make_septuplets(root / 'sequences', keys, [f'im{i}.png' for i in range(1, 8)], size=(32, 32))
    (root / 'sep_trainlist.txt').write_text(''.join(k + '\n' for k in keys))
    return {'type': 'Vimeo90KSeptuplet', 'root': str(root), 'lq_size': 8}


def files_of(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def msitf_weights():
    torch.manual_seed(0)
    return build_network(NET).state_dict()


# --------------------------------------------------------------------------------------------- broken frames
def garbage(path):
    path.write_bytes(b'GIF89a, or so it says')


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[data.find(b'IDAT') + 40] ^= 0x10
    path.write_bytes(bytes(data))


def shrink(path):
    write_image(path, np.zeros((40, 48, 3), np.uint8))


BROKEN_FRAMES = {
    'garbage': (garbage, 'not a readable image'),
    'truncated': (truncate, 'not a readable image (truncated PNG: the file ends after'),
    'bit flip': (flip_a_bit, 'not a readable image (corrupt PNG: CRC mismatch in its IDAT chunk'),
    'other size': (shrink, 'frame is 48x40 uint8, but the first frame of walk (000.png) is 48x32 uint8'),
}


@pytest.mark.parametrize('damage, message', BROKEN_FRAMES.values(), ids=BROKEN_FRAMES)
def test_broken_frame_in_a_clip_is_named(tmp_path, capfd, damage, message):
    frames = make_clip(tmp_path / 'clips' / 'walk')
    damage(frames[3])
    options = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(tmp_path / 'clips')})
    check_error(*cli(capfd, test_cli, '-opt', options), f'error: {frames[3]}: {message}')
    assert not (tmp_path / 'experiments').exists()


@pytest.mark.parametrize('damage, message', [BROKEN_FRAMES['bit flip'], BROKEN_FRAMES['truncated']],
                         ids=['bit flip', 'truncated'])
def test_broken_training_frame_is_named(tmp_path, capfd, damage, message):
    data = vimeo_tree(tmp_path / 'vimeo')
    frame = tmp_path / 'vimeo/sequences/00001/0001/im5.png'
    damage(frame)
    check_error(*cli(capfd, train_cli, '-opt', train_options(tmp_path, data)), f'error: {frame}: {message}')


def test_broken_training_frame_read_in_a_worker_is_one_line(tmp_path, capfd):
    data = vimeo_tree(tmp_path / 'vimeo')
    frame = tmp_path / 'vimeo/sequences/00001/0001/im5.png'
    truncate(frame)
    check_error(*cli(capfd, train_cli, '-opt', train_options(tmp_path, data, workers=1)), f'error: {frame}: ')


def write_gray(path, img):
    cv2.imwrite(str(path), img[..., 1])


def write_rgba(path, img):
    cv2.imwrite(str(path), np.dstack([img[..., ::-1], np.full(img.shape[:2], 255, img.dtype)]))


def test_gray_rgba_and_16bit_frames_are_scored(tmp_path, capfd):
    """Grayscale and RGBA frames are read as RGB, so they may sit in a clip of RGB frames; a 16-bit clip is scored
    on its own scale: the same frames at 16 bits score as they do at 8."""
    clips = tmp_path / 'clips'
    for path in make_clip(clips / 'rgb8'):
        write_image(clips / 'rgb16' / path.name, read_image(path).astype(np.uint16) * 257)
    mixed = make_clip(clips / 'mixed', seed=1)
    for path, writer in zip(mixed[1:], (write_gray, write_rgba, write_gray)):
        writer(path, read_image(path))
    options = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(clips)})
    code, stderr = cli(capfd, test_cli, '-opt', options, '--set', f'test.results_dir={tmp_path / "out"}')
    assert code == 0, stderr
    with open(tmp_path / 'out' / 'bad_window7.csv', newline='') as f:
        rows = {row['clip']: row for row in csv.DictReader(f)}
    assert sorted(rows) == ['average', 'mixed', 'rgb16', 'rgb8']
    for clip in ('mixed', 'rgb16', 'rgb8'):
        assert rows[clip]['frames'] == '7' and 15 < float(rows[clip]['psnr_rgb']) < 60
    assert float(rows['rgb16']['psnr_rgb']) == pytest.approx(float(rows['rgb8']['psnr_rgb']), abs=0.1)


# --------------------------------------------------------------------------------------------- folders and lists
@pytest.mark.parametrize('kind', ['FrameFolders', 'Vimeo90KSeptuplet', 'Vimeo90KTest', 'Jilin189Septuplet',
                                  'Jilin189Test'])
def test_missing_dataset_root_is_named(tmp_path, kind):
    with pytest.raises(DataError) as err:
        build_dataset({'type': kind, 'root': str(tmp_path / 'nowhere')})
    assert str(err.value) == f'{tmp_path / "nowhere"}: dataset root not found'


@pytest.mark.parametrize('kind, key', [('Vimeo90KSeptuplet', 'list_file'), ('Vimeo90KTest', 'list_file'),
                                       ('Jilin189Septuplet', 'list_file'), ('FrameFolders', 'clips')])
def test_missing_list_file_is_named(tmp_path, kind, key):
    with pytest.raises(DataError) as err:
        build_dataset({'type': kind, 'root': str(tmp_path), key: 'lists/absent.txt'})
    assert str(err.value) == f'{tmp_path / "lists/absent.txt"}: list file not found'


def test_clip_folders_through_the_cli(tmp_path, capfd):
    make_clip(tmp_path / 'clips' / 'a')
    (tmp_path / 'clips' / 'empty').mkdir()
    for data, fragments in [
            ({'root': str(tmp_path / 'nowhere')}, [f'error: {tmp_path / "nowhere"}: dataset root not found']),
            ({'root': str(tmp_path / 'clips'), 'clips': 'list.txt'},
             [f'error: {tmp_path / "clips/list.txt"}: list file not found']),
            ({'root': str(tmp_path / 'clips')}, [f'error: {tmp_path / "clips/empty"}: no frames (expected .png']),
            ({'root': str(tmp_path / 'clips'), 'clips': ['a', 'b']}, ['1 of 2 listed clips not found (first: b)'])]:
        options = eval_options(tmp_path, {'type': 'FrameFolders', **data})
        check_error(*cli(capfd, test_cli, '-opt', options), *fragments)


def test_vimeo_list_naming_missing_folders_stops_training(tmp_path, capfd):
    data = vimeo_tree(tmp_path / 'vimeo')
    (tmp_path / 'vimeo/sep_trainlist.txt').write_text('00001/0001\n00009/0001\n')
    check_error(*cli(capfd, train_cli, '-opt', train_options(tmp_path, data)),
                f'error: {tmp_path / "vimeo/sep_trainlist.txt"}: 1 of 2 listed clips not found (first: 00009/0001)')


@pytest.mark.parametrize('protocol', ['window7', 'zsm_legacy', 'septuplet'])
def test_clip_shorter_than_the_protocol(tmp_path, capfd, protocol):
    make_clip(tmp_path / 'clips' / 'short', n=5)
    options = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(tmp_path / 'clips')})
    check_error(*cli(capfd, test_cli, '-opt', options, '--set', f'test.protocol={protocol}'),
                f'5 frames, protocol {protocol} with 4 inputs needs at least 7')


def test_clip_shorter_than_the_protocol_is_named(tmp_path, capfd):
    make_clip(tmp_path / 'clips' / 'short', n=5)
    options = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(tmp_path / 'clips')})
    check_error(*cli(capfd, test_cli, '-opt', options), 'error: short: 5 frames')


def test_septuplet_protocol_wants_exactly_seven(tmp_path, capfd):
    make_clip(tmp_path / 'clips' / 'long', n=9)
    options = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(tmp_path / 'clips')})
    check_error(*cli(capfd, test_cli, '-opt', options, '--set', 'test.protocol=septuplet'),
                '9 frames, protocol septuplet expects exactly 7')


# --------------------------------------------------------------------------------------------- checkpoints
def checkpoint_cases(folder, weights):
    """{case: (checkpoint path, network named by the options, expected message)}."""
    full = folder / 'msitf.pth'
    atomic_save({'format': FORMAT, 'network': NET, 'weights': weights, 'config': {}}, full)
    bare = folder / 'bare.pth'
    torch.save(weights, bare)
    data = full.read_bytes()
    (folder / 'truncated.pth').write_bytes(data[:len(data) // 2])
    (folder / 'empty.pth').write_bytes(b'')
    (folder / 'picture.pth').write_bytes(cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    wider = {**NET, 'nf': 16}
    return {
        'another network': (full, {'type': 'BicubicBlend'}, 'holds a MSITF network, network asks for BicubicBlend'),
        'another shape': (bare, wider, f'{bare}: weights do not fit MSITF: 174 shape mismatch (e.g. conv_first.weight'),
        'truncated': (folder / 'truncated.pth', NET, 'unreadable or truncated checkpoint (RuntimeError: '
                                                      'PytorchStreamReader failed reading zip archive'),
        'empty': (folder / 'empty.pth', NET, 'unreadable or truncated checkpoint (EOFError)'),
        'not a checkpoint': (folder / 'picture.pth', NET, 'picture.pth: unreadable checkpoint (not a file torch.save'),
        'missing': (folder / 'absent.pth', NET, 'absent.pth: checkpoint not found'),
    }


CHECKPOINT_CASES = ['another network', 'another shape', 'truncated', 'empty', 'not a checkpoint', 'missing']


@pytest.mark.parametrize('case', CHECKPOINT_CASES)
def test_unusable_checkpoint_for_test_py(tmp_path, capfd, msitf_weights, case):
    folder = tmp_path / 'ckpt'
    folder.mkdir()
    path, network, message = checkpoint_cases(folder, msitf_weights)[case]
    make_clip(tmp_path / 'clips' / 'a')
    options = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(tmp_path / 'clips')}, network)
    before = files_of(folder)
    check_error(*cli(capfd, test_cli, '-opt', options, '--checkpoint', path), f'error: {path}: ', message)
    if case in ('truncated', 'empty', 'not a checkpoint', 'missing'):  # the same from the checkpoint alone
        check_error(*cli(capfd, test_cli, '--checkpoint', path), f'error: {path}: ', message)
    assert files_of(folder) == before  # no tables written beside it


@pytest.mark.parametrize('case', ['another network', 'truncated'])
def test_unusable_checkpoint_to_resume_from(tmp_path, capfd, msitf_weights, case):
    folder = tmp_path / 'ckpt'
    folder.mkdir()
    path = folder / 'other.pth'
    if case == 'another network':
        atomic_save({'format': FORMAT, 'network': {**NET, 'nf': 16}, 'weights': {}, 'config': {}}, path)
        message = "holds network {'type': 'MSITF', 'nf': 16"
    else:
        path = checkpoint_cases(folder, msitf_weights)['truncated'][0]
        message = 'unreadable or truncated checkpoint'
    options = train_options(tmp_path, vimeo_tree(tmp_path / 'vimeo'), resume=str(path))
    check_error(*cli(capfd, train_cli, '-opt', options), f'error: {path}: {message}')
    assert not (tmp_path / 'experiments/run').exists()  # made by this run, no checkpoint in it: removed again


def test_resume_falls_back_past_corrupt_checkpoints_and_refuses_when_none_loads(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for iteration in (2, 4):
        manager.save({'format': FORMAT, 'iteration': iteration}, iteration)
    truncate(tmp_path / 'latest.pth')
    truncate(tmp_path / 'iter_4.pth')
    skipped = []
    path, ckpt = manager.latest_valid(skipped.append)
    assert path == tmp_path / 'iter_2.pth' and ckpt['iteration'] == 2
    assert [m.split(': ')[1] for m in skipped] == [str(tmp_path / 'latest.pth'), str(tmp_path / 'iter_4.pth')]
    garbage(tmp_path / 'iter_2.pth')
    with pytest.raises(CheckpointError, match=r'no checkpoint loads \(latest.pth, iter_4.pth, iter_2.pth\)'):
        manager.latest_valid()
    assert CheckpointManager(tmp_path / 'fresh').latest_valid() == (None, None)


# --------------------------------------------------------------------------------------------- the run folder
def test_experiments_root_that_is_a_file(tmp_path, capfd):
    blocker = tmp_path / 'experiments'
    blocker.write_text('not a folder')
    options = train_options(tmp_path, vimeo_tree(tmp_path / 'vimeo'))
    check_error(*cli(capfd, train_cli, '-opt', options),
                f'error: {blocker / "run"}: experiments folder is not writable (Not a directory)')
    assert blocker.read_text() == 'not a folder'


@pytest.fixture
def previous_run(tmp_path):
    """experiments/run as a finished run leaves it; returns (folder, its files)."""
    run = tmp_path / 'experiments' / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    for name in ('iter_2.pth', 'latest.pth', 'best.pth'):
        (run / 'checkpoints' / name).write_bytes(b'weights of ' + name.encode())
    (run / 'metrics.csv').write_text('iter,loss\n1,0.5\n2,0.4\n')
    (run / 'config.yml').write_text('name: run\n')
    (run / 'train.log').write_text('2026-01-01 00:00:00 INFO done\n')
    return run, files_of(run)


@pytest.mark.parametrize('setting', [{}, {'resume': 'auto'}, {'overwrite': True}],
                         ids=['neither', 'resume', 'overwrite'])
def test_failed_run_keeps_the_previous_one(tmp_path, capfd, previous_run, setting):
    """A run stopped by bad data touches nothing of the run before it: every option is built before the
    run folder is created, archived (overwrite) or appended to (resume)."""
    run, before = previous_run
    options = train_options(tmp_path, {'type': 'Vimeo90KSeptuplet', 'root': str(tmp_path / 'nowhere')}, **setting)
    check_error(*cli(capfd, train_cli, '-opt', options), 'dataset root not found')
    assert files_of(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == ['run']


# --------------------------------------------------------------------------------------------- real processes
def test_exit_status_and_stderr_of_real_processes(tmp_path):
    """What a shell sees, including anything libpng or OpenCV would print: both scripts, started together."""
    frames = make_clip(tmp_path / 'clips' / 'clip')
    truncate(frames[2])
    eval_opt = eval_options(tmp_path, {'type': 'FrameFolders', 'root': str(tmp_path / 'clips')})
    data = vimeo_tree(tmp_path / 'vimeo')
    flip_a_bit(tmp_path / 'vimeo/sequences/00001/0001/im3.png')
    runs = [(['test.py', '-opt', eval_opt], f'error: {frames[2]}: not a readable image (truncated PNG'),
            (['main.py', '-opt', train_options(tmp_path, data)],
             f'error: {tmp_path / "vimeo/sequences/00001/0001/im3.png"}: not a readable image (corrupt PNG')]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    procs = [subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for (script, *args), _ in runs]
    for proc, (_, message) in zip(procs, runs):
        _, stderr = proc.communicate(timeout=300)
        check_error(proc.returncode, stderr.decode(), message)  # bytes: text mode would turn '\r' into '\n'
