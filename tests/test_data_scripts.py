"""data_scripts/ end to end on tiny trees in tmp_path."""
import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data import build_dataset
from data.io import read_image, read_list, write_image
from data.transforms import MANIFEST_NAME, degrade
from tests.conftest import ROOT
from utils.errors import DataError

SCRIPTS = ['generate_lr', 'check_dataset', 'make_lists', 'video_to_frames', 'frames_to_video']


def script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'data_scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the Pool pickles worker functions by module name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vimeo(tmp_path):
    """A 2-clip Vimeo-style tree, 32x48 frames, and its list file."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'vimeo'
    for key in ('00001/0001', '00001/0002'):
        for i in range(1, 8):
            small = rng.random((4, 6, 3)) * 255
            write_image(root / 'sequences' / key / f'im{i}.png',
                        cv2.resize(small, (48, 32), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8))
    (root / 'sep_trainlist.txt').write_text('00001/0001\n00001/0002\n')
    return root


@pytest.mark.parametrize('name', SCRIPTS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        script(name).main(['--help'])
    assert exit_.value.code == 0 and 'usage:' in capsys.readouterr().out


def run_script(name, *args):
    """The script in a process of its own: its worker pool then forks a process without this test process's
    torch and OpenCV threads, as it does for a user (forking those can hang the children)."""
    return subprocess.run([sys.executable, f'data_scripts/{name}.py', *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_generate_lr_then_load_it(vimeo, tmp_path, capsys):
    lr = tmp_path / 'lr'
    proc = run_script('generate_lr', vimeo, lr, '--type', 'BD', '--workers', '2')
    assert proc.returncode == 0, proc.stderr
    assert json.loads((lr / MANIFEST_NAME).read_text())['degradation'] == 'BD'
    made = read_image(lr / 'sequences/00001/0002/im3.png')
    assert made.shape == (8, 12, 3)
    assert (made == degrade(read_image(vimeo / 'sequences/00001/0002/im3.png'), {'type': 'BD'})).all()
    assert script('generate_lr').main([str(vimeo), str(lr), '--type', 'BD', '--workers', '0']) == 0
    assert '14 already done, 0 to make' in capsys.readouterr().out
    dataset = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(vimeo), 'lq_root': str(lr),
                             'degradation': {'type': 'BD'}, 'lq_size': 4})
    assert dataset[1]['lq'].shape == (4, 3, 4, 4)
    with pytest.raises(DataError, match='already holds LR frames made with'):
        script('generate_lr').main([str(vimeo), str(lr), '--type', 'BI'])


def test_generate_lr_listed_folders_only(vimeo, tmp_path):
    (tmp_path / 'one.txt').write_text('00001/0002\n')
    script('generate_lr').main([str(vimeo), str(tmp_path / 'lr'), '--list', str(tmp_path / 'one.txt'),
                                '--list-prefix', 'sequences', '--workers', '0'])
    assert sorted(p.parent.name for p in (tmp_path / 'lr').rglob('*.png')) == ['0002'] * 7


def test_generate_lr_from_the_repo_root_exits_2_naming_a_bad_frame(vimeo, tmp_path):
    bad = vimeo / 'sequences/00001/0001/im4.png'
    bad.write_bytes(bad.read_bytes()[:60])
    result = subprocess.run([sys.executable, 'data_scripts/generate_lr.py', str(vimeo), str(tmp_path / 'lr'),
                             '--workers', '0'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f'error: {bad}' in result.stderr
    assert len(list((tmp_path / 'lr').rglob('*.png'))) == 13


def test_check_dataset_clean_then_broken(vimeo, tmp_path, capsys):
    check = script('check_dataset').main
    lr = tmp_path / 'lr'
    script('generate_lr').main([str(vimeo), str(lr), '--workers', '0'])
    args = [str(vimeo), '--list', str(vimeo / 'sep_trainlist.txt'), '--list-prefix', 'sequences',
            '--pattern', 'im{}.png', '--lq-root', str(lr), '--workers', '2']
    assert check(args) == 0
    assert 'problems: none' in capsys.readouterr().out
    clip = vimeo / 'sequences/00001/0001'
    (clip / 'im2.png').write_bytes((clip / 'im2.png').read_bytes()[:80])
    write_image(clip / 'im6.png', np.zeros((32, 40, 3), np.uint8))
    (clip / 'im7.png').unlink()
    (vimeo / 'sep_trainlist.txt').write_text('00001/0001\n00001/0002\n00001/0003\n')
    assert check(args) == 1
    out = capsys.readouterr().out
    assert f'{clip / "im2.png"}: not a readable image' in out
    assert f'{clip / "im6.png"}: 40x32 uint8, but im1.png is 48x32 uint8' in out
    assert f'{clip / "im7.png"}: frame missing' in out
    assert 'sequences/00001/0003: listed in' in out and 'lr 1' in out
    assert 'problems: lr 1, missing-clip 1, missing-frame 1, size 1, unreadable 1' in out


def test_check_dataset_missing_root(tmp_path):
    with pytest.raises(DataError, match='nowhere: dataset root not found'):
        script('check_dataset').main([str(tmp_path / 'nowhere')])


def test_make_lists(vimeo, tmp_path):
    make = script('make_lists').main
    assert make([str(vimeo / 'sequences'), str(tmp_path / 'all.txt'), '--min-frames', '7', '--workers', '0']) == 0
    assert read_list(tmp_path / 'all.txt') == ['00001/0001', '00001/0002']
    (tmp_path / 'official.txt').write_text('00001/0002\n00001/0009\n00001/0001\n')
    (vimeo / 'sequences/00001/0001/im7.png').unlink()
    proc = run_script('make_lists', vimeo / 'sequences', tmp_path / 'kept.txt', '--filter', tmp_path / 'official.txt',
                      '--min-frames', '7')
    assert proc.returncode == 0, proc.stderr
    assert read_list(tmp_path / 'kept.txt') == ['00001/0002']


def test_video_to_frames_and_back(tmp_path):
    frames = np.stack([np.full((24, 40, 3), 25 * i, np.uint8) for i in range(6)])
    writer = cv2.VideoWriter(str(tmp_path / 'in.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (40, 24))
    for frame in frames:
        writer.write(frame)
    writer.release()
    proc = run_script('video_to_frames', tmp_path / 'in.avi', tmp_path / 'frames', '--max-frames', '4')
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in (tmp_path / 'frames').iterdir())
    assert written == ['00000000.png', '00000001.png', '00000002.png', '00000003.png']
    assert abs(int(read_image(tmp_path / 'frames/00000003.png').mean()) - 75) <= 3
    proc = run_script('frames_to_video', tmp_path / 'frames', tmp_path / 'out.mp4')
    assert proc.returncode == 0, proc.stderr
    capture = cv2.VideoCapture(str(tmp_path / 'out.mp4'))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4 and capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 40


def test_frames_to_video_mismatched_size_names_the_frame(tmp_path):
    for i, w in enumerate([16, 16, 20]):
        write_image(tmp_path / 'f' / f'{i}.png', np.zeros((16, w, 3), np.uint8))
    with pytest.raises(DataError, match=f'{tmp_path / "f" / "2.png"}: frame is 20x16'):
        script('frames_to_video').main([str(tmp_path / 'f'), str(tmp_path / 'o.mp4'), '--workers', '0'])
    assert not list(tmp_path.glob('*.mp4')) and not list(tmp_path.glob('.*'))
