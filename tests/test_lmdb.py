"""Vimeo-90K LMDBs in the official ZSM / STDAN / MSITF layout: data_scripts/create_lmdb.py writes them, the
LMDB datasets read them and give the folder datasets' samples bit for bit."""
import errno
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import cv2
import lmdb
import numpy as np
import pytest
import torch

from data import build_dataset
from data.io import read_image, write_image
from data.lmdb import FrameDatabase, read_meta, shared_env
from data.transforms import degrade
from engine import cli
from tests.conftest import ROOT, load_script, require
from tests.support import make_septuplets
from utils.errors import DataError, Interrupted

BI = {'type': 'BI', 'scale': 4}
FRAMES = [f'im{i}.png' for i in range(1, 8)]
AUGMENT = {'use_flip': True, 'use_rot': True, 'use_time_reverse': True}


@pytest.fixture(scope='module')
def create_lmdb():
    return load_script('data_scripts/create_lmdb.py', 'create_lmdb')


def items(env):
    with env.begin() as txn:
        return dict(txn.cursor().iternext())


def dump(path):
    """Every (key, value) of a database no dataset has open, read with an environment closed again (LMDB
    allows one per database and process, so a write after it can open the database)."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return items(env)
    finally:
        env.close()


def official_lmdb(folder, clips, dst, meta):
    """A database written as the official create_lmdb_mp.py writes one: for every listed clip and n = 1..7,
    key '<folder>_<sub>_<n>' -> the cv2.imread array itself (raw BGR bytes); ``meta`` pickled beside it."""
    frames = sorted(
        (f'{c.replace("/", "_")}_{n}', str(folder / c / f'im{n}.png')) for c in clips for n in range(1, 8))
    env = lmdb.open(str(dst), map_size=2 ** 30)
    with env.begin(write=True) as txn:
        for key, path in frames:
            txn.put(key.encode('ascii'), cv2.imread(path, cv2.IMREAD_UNCHANGED))
    env.close()
    with open(dst / 'Vimeo7_train_keys.pkl', 'wb') as f:
        pickle.dump(meta, f)
    return dst


@pytest.fixture(scope='module')
def vimeo(tmp_path_factory):
    """The real septuplets of sep_trainlist.txt, a BI x4 tree of them, and both written by create_lmdb.py."""
    root = require('vimeo_septuplet')
    tmp = tmp_path_factory.mktemp('lmdb')
    clips = sorted(f'{p.parent.name}/{p.name}' for p in (root / 'sequences').glob('*/*'))
    listed = [k for k in (root / 'sep_trainlist.txt').read_text().split() if k in clips]
    (tmp / 'train.txt').write_text(''.join(k + '\n' for k in listed))
    for key in listed:
        for name in FRAMES:
            write_image(tmp / 'lr/sequences' / key / name, degrade(read_image(root / 'sequences' / key / name), BI))
    script = load_script('data_scripts/create_lmdb.py', 'create_lmdb')
    for src, dst in ((root / 'sequences', tmp / 'vimeo7_train_GT.lmdb'),
                     (tmp / 'lr/sequences', tmp / 'vimeo7_train_LR7.lmdb')):
        assert script.main([str(src), str(dst), '--list', str(tmp / 'train.txt'), '--workers', '0']) == 0
    return {'root': root, 'tmp': tmp, 'list': tmp / 'train.txt', 'keys': listed,
            'gt': tmp / 'vimeo7_train_GT.lmdb', 'lr': tmp / 'vimeo7_train_LR7.lmdb'}


def assert_same_samples(folders, lmdbs, seeds=range(3)):
    assert folders.keys == lmdbs.keys and len(folders) == len(lmdbs)
    for seed in seeds:
        for index in range(len(folders)):
            random.seed(seed)
            want = folders[index]
            random.seed(seed)
            got = lmdbs[index]
            assert got['key'] == want['key']
            assert torch.equal(got['lq'], want['lq']) and torch.equal(got['gt'], want['gt'])


@pytest.mark.parametrize('options', [{}, {'n_inputs': 2}, {'n_inputs': 3, 'lq_size': None},
                                     {'degradation': {'type': 'BD', 'scale': 4, 'preset': 'basicvsr'}}],
                         ids=['bi', 'two_inputs', 'whole_frames', 'bd'])
def test_samples_equal_the_folder_dataset_on_the_fly(vimeo, options):
    folders = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(vimeo['root']), 'list_file': str(vimeo['list']),
                             **AUGMENT, **options})
    lmdbs = build_dataset({'type': 'Vimeo90KSeptupletLMDB', 'gt_lmdb': str(vimeo['gt']), **AUGMENT, **options})
    assert lmdbs.keys == vimeo['keys']
    assert_same_samples(folders, lmdbs, seeds=range(2))


@pytest.mark.parametrize('n_inputs', [4, 2])
def test_samples_equal_the_folder_dataset_with_lr_frames(vimeo, n_inputs):
    common = {'degradation': BI, 'n_inputs': n_inputs, 'use_vflip': True, **AUGMENT}
    folders = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(vimeo['root']), 'list_file': str(vimeo['list']),
                             'lq_root': str(vimeo['tmp'] / 'lr'), **common})
    lmdbs = build_dataset({'type': 'Vimeo90KSeptupletLMDB', 'gt_lmdb': str(vimeo['gt']), 'lq_lmdb': str(vimeo['lr']),
                           **common})
    assert_same_samples(folders, lmdbs)


def test_test_clips_equal_the_folder_test_set(vimeo):
    folders = build_dataset({'type': 'Vimeo90KTest', 'root': str(vimeo['root']), 'list_file': str(vimeo['list']),
                             'lq_root': str(vimeo['tmp'] / 'lr'), 'degradation': BI})
    lmdbs = build_dataset({'type': 'Vimeo90KTestLMDB', 'gt_lmdb': str(vimeo['gt']), 'lq_lmdb': str(vimeo['lr']),
                           'degradation': BI})
    fly = build_dataset({'type': 'Vimeo90KTestLMDB', 'gt_lmdb': str(vimeo['gt']), 'degradation': BI})
    assert lmdbs.keys == folders.keys and lmdbs.description.startswith('LR from')
    for index in (0, len(folders) - 1):
        want, got = folders[index], lmdbs[index]
        assert got['name'] == want['name'] and got['frame_names'] == want['frame_names']
        assert np.array_equal(got['gt'], want['gt']) and np.array_equal(got['lq'], want['lq'])
        assert np.array_equal(fly[index]['lq'], want['lq'])  # the LR tree is BI of the GT


def test_the_official_layout(vimeo, tmp_path):
    """create_lmdb.py writes what the official script writes, and the dataset reads what the official script
    wrote, with each meta info the official repositories carry."""
    folder = vimeo['root'] / 'sequences'
    clips = vimeo['keys'][:3]
    stdan = {'name': 'Vimeo7_train_GT', 'resolution': '3_256_448', 'keys': {c.replace('/', '_') for c in clips}}
    official = official_lmdb(folder, clips, tmp_path / 'official.lmdb', stdan)
    ours = items(shared_env(vimeo['gt']))
    theirs = dump(official)
    assert set(theirs) <= set(ours) and len(ours) == 7 * len(vimeo['keys'])
    assert all(ours[k] == v for k, v in theirs.items())
    assert b'00001_0001_4' in ours and len(ours[b'00001_0001_4']) == 256 * 448 * 3
    bgr = cv2.imread(str(folder / '00001/0001/im4.png'), cv2.IMREAD_UNCHANGED)
    assert ours[b'00001_0001_4'] == bgr.tobytes()
    with open(vimeo['gt'] / 'Vimeo7_train_keys.pkl', 'rb') as f:
        meta = pickle.load(f)
    assert meta == {'name': 'Vimeo7_train_GT', 'resolution': '3_256_448',
                    'keys': sorted(k.replace('/', '_') for k in vimeo['keys'])}
    with open(vimeo['lr'] / 'Vimeo7_train_keys.pkl', 'rb') as f:
        assert pickle.load(f) == {**meta, 'name': 'Vimeo7_train_LR7', 'resolution': '3_64_112'}
    assert len(items(shared_env(vimeo['lr']))[b'00001_0001_1']) == 64 * 112 * 3

    (tmp_path / 'clips.txt').write_text(''.join(c + '\n' for c in clips))
    folders = build_dataset({'type': 'Vimeo90KSeptuplet', 'root': str(vimeo['root']),
                             'list_file': str(tmp_path / 'clips.txt'), **AUGMENT})
    zsm_list = tmp_path / 'zsm_keys.pkl'  # ZSM's shipped datasets/meta_info/Vimeo7_train_keys.pkl: a bare list
    zsm_list.write_bytes(pickle.dumps([c.replace('/', '_') for c in clips], protocol=3))
    for meta_info in (None, zsm_list, tmp_path / 'clips.txt'):
        lmdbs = build_dataset({'type': 'Vimeo90KSeptupletLMDB', 'gt_lmdb': str(official), 'meta_info': meta_info,
                               **AUGMENT})
        assert_same_samples(folders, lmdbs, seeds=[0])


def test_meta_info_forms(tmp_path):
    keys = ['00001_0002', '00001_0001']
    for name, content, want in (('dict.pkl', {'name': 'x', 'resolution': '3_64_112', 'keys': keys}, (3, 64, 112)),
                                ('list.pkl', keys, None),
                                ('set.pkl', {'keys': set(keys), 'resolution': ['3_256_448']}, (3, 256, 448))):
        (tmp_path / name).write_bytes(pickle.dumps(content))
        clips, resolution = read_meta(tmp_path / name)
        assert resolution == want and clips == (sorted(keys) if name == 'set.pkl' else keys)


@pytest.fixture
def small(tmp_path, create_lmdb):
    """Three 64x96 synthetic clips, their tree and list, and a database of them."""
    clips = ['00001/0001', '00001/0002', '00002/0001']
    make_septuplets(tmp_path / 'sequences', clips, FRAMES)
    (tmp_path / 'list.txt').write_text('\n'.join(clips) + '\n')
    dst = tmp_path / 'small_GT.lmdb'
    assert create_lmdb.main([str(tmp_path / 'sequences'), str(dst), '--list', str(tmp_path / 'list.txt'),
                             '--workers', '0']) == 0
    return tmp_path, dst


def _list(tmp, extra):
    """The three clips of ``small`` and ``extra`` lines, as a list file."""
    path = tmp / 'extra.txt'
    path.write_text('00001/0001\n00001/0002\n00002/0001\n' + extra + '\n')
    return path


def test_resume_after_an_interrupted_write(small, create_lmdb, monkeypatch, capsys):
    tmp, complete = small
    args = [str(tmp / 'sequences'), str(tmp / 'part_GT.lmdb'), '--list', str(tmp / 'list.txt'), '--workers', '0',
            '--commit-every', '1']
    read_clip = create_lmdb.read_clip

    def interrupted(job):
        if job[1] == '00002_0001':
            raise KeyboardInterrupt
        return read_clip(job)

    monkeypatch.setattr(create_lmdb, 'read_clip', interrupted)
    with pytest.raises(Interrupted, match='2 of 3 clips were committed'):
        create_lmdb.main(args)
    assert sorted(dump(tmp / 'part_GT.lmdb')) == sorted(f'00001_000{c}_{n}'.encode() for c in (1, 2)
                                                        for n in range(1, 8))
    assert not (tmp / 'part_GT.lmdb/Vimeo7_train_keys.pkl').exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert create_lmdb.main(args) == 0
    assert '2 already in' in capsys.readouterr().out
    assert dump(tmp / 'part_GT.lmdb') == dump(complete)
    assert create_lmdb.main(args) == 0 and '3 already in' in capsys.readouterr().out


def test_resume_after_a_kill_inside_a_transaction(small, create_lmdb, capsys):
    """SIGKILL while clip 3's frames sit in an uncommitted transaction (the writer blocked reading clip 4 from
    a FIFO): the database keeps clips 1 and 2, and a second run completes it."""
    tmp, complete = small
    clips = ['00001/0001', '00001/0002', '00002/0001', '00002/0002']
    make_septuplets(tmp / 'sequences', clips[3:], FRAMES, seed=1)
    (tmp / 'list4.txt').write_text('\n'.join(clips) + '\n')
    fifo = tmp / 'sequences/00002/0002/im4.png'
    frame = fifo.read_bytes()
    fifo.unlink()
    os.mkfifo(fifo)
    dst = tmp / 'killed_GT.lmdb'
    args = [str(tmp / 'sequences'), str(dst), '--list', str(tmp / 'list4.txt'), '--workers', '0', '--commit-every', '2']
    proc = subprocess.Popen([sys.executable, str(ROOT / 'data_scripts/create_lmdb.py'), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:  # a FIFO opens for writing only once the script has opened it for reading
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as err:
                if err.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f'the script never read the FIFO: {proc.stderr.read()!r}') from None
                time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert sorted(dump(dst)) == sorted(f'00001_000{c}_{n}'.encode() for c in (1, 2) for n in range(1, 8))
    fifo.unlink()
    fifo.write_bytes(frame)
    capsys.readouterr()
    assert create_lmdb.main(args) == 0
    assert '2 already in' in capsys.readouterr().out
    stored = dump(dst)
    assert len(stored) == 28 and all(stored[k] == v for k, v in dump(complete).items())


def test_create_lmdb_refusals(small, create_lmdb, capsys):
    tmp, dst = small
    src, listed = str(tmp / 'sequences'), str(tmp / 'list.txt')

    def error(*args):
        assert cli.run(create_lmdb.main, [*map(str, args), '--workers', '0']) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith('error: ') and '\n' not in err
        return err

    assert 'must end in .lmdb' in error(src, tmp / 'out', '--list', listed)
    other = tmp / 'other'
    make_septuplets(other, ['00001/0001'], FRAMES, size=(32, 48))
    assert 'holds frames of 3_64_96, these are 3_32_48' in error(other, dst, '--list', listed, '--skip-missing')
    (tmp / 'notes.lmdb').mkdir()
    (tmp / 'notes.lmdb/readme.txt').write_text('x')
    assert 'not an LMDB database' in error(src, tmp / 'notes.lmdb', '--list', listed)
    assert '1 of 4 listed clips not found' in error(src, tmp / 'x.lmdb', '--list', _list(tmp, '00009/0001'))
    assert 'not <folder>/<sub-folder>' in error(src, tmp / 'x.lmdb', '--list', _list(tmp, '00001_0001'))
    write_image(tmp / 'sequences/00002/0001/im5.png', np.zeros((32, 48, 3), np.uint8))
    assert cli.run(create_lmdb.main, [src, str(tmp / 'y.lmdb'), '--list', listed, '--workers', '0']) == 2
    err = capsys.readouterr().err
    assert '00002/0001/im5.png: 48x32 uint8, but the first frame of the list is 96x64 uint8' in err
    assert '1 of 3 clips failed' in err and not (tmp / 'y.lmdb/Vimeo7_train_keys.pkl').exists()
    assert len(dump(tmp / 'y.lmdb')) == 14


def test_dataset_errors(small, tmp_path):
    tmp, dst = small

    def error(**options):
        with pytest.raises(DataError) as err:
            build_dataset({'type': 'Vimeo90KSeptupletLMDB', 'degradation': {'type': 'BI', 'scale': 4}, **options})
        assert '\n' not in str(err.value)
        return str(err.value)

    assert 'LMDB database not found' in error(gt_lmdb=str(tmp / 'missing.lmdb'))
    (tmp / 'empty.lmdb').mkdir()
    (tmp / 'empty.lmdb/Vimeo7_train_keys.pkl').write_bytes(pickle.dumps(['00001_0001']))
    assert 'no data.mdb' in error(gt_lmdb=str(tmp / 'empty.lmdb'))
    assert 'LMDB database not found' in error(gt_lmdb=str(dst), lq_lmdb=str(tmp / 'missing.lmdb'))

    bare = tmp_path / 'bare.lmdb'
    shutil.copytree(dst, bare)
    (bare / 'Vimeo7_train_keys.pkl').unlink()
    assert f'{bare}: key 00001_0001_1 holds 18,432 bytes, expected 1,152 (resolution 3_16_24' in error(
        gt_lmdb=str(dst), lq_lmdb=str(bare))
    assert 'no meta info' in error(gt_lmdb=str(bare))
    assert 'meta info not found' in error(gt_lmdb=str(bare), meta_info=str(tmp / 'nope.pkl'))
    bad = tmp / 'bad.pkl'
    for content, message in (({'name': 'x', 'resolution': '3_64_96'}, 'no "keys"'),
                             ({'keys': ['00001_0001_1']}, 'not clip keys such as 00001_0001'),
                             ({'keys': ['00001_0001'], 'resolution': '64x96'}, 'resolution must be C_H_W'),
                             ('00001_0001', 'must be a non-empty list or set')):
        bad.write_bytes(pickle.dumps(content))
        assert message in error(gt_lmdb=str(bare), meta_info=str(bad))
    bad.write_bytes(b'not a pickle')
    assert 'unreadable meta info' in error(gt_lmdb=str(bare), meta_info=str(bad))
    basicsr = tmp / 'meta_info.txt'
    basicsr.write_text('00001/0001/im1.png (64,96,3) 1\n')
    assert 'are not clip keys such as 00001/0001' in error(gt_lmdb=str(bare), meta_info=str(basicsr))
    shutil.copy(basicsr, bare / 'meta_info.txt')
    assert 'BasicSR LMDB layout' in error(gt_lmdb=str(bare))

    assert '(small_GT.lmdb): 2 of 5 listed clips not found (first: 00003_0001, 00003_0002)' in error(
        gt_lmdb=str(dst), meta_info=str(_list(tmp, '00003/0001\n00003/0002')))
    dataset = build_dataset({'type': 'Vimeo90KSeptupletLMDB', 'gt_lmdb': str(dst), 'skip_missing': True,
                             'meta_info': str(_list(tmp, '00003/0001')), 'lq_size': 8})
    assert len(dataset) == 3
    with pytest.raises(DataError, match=f'{dst}: key 00003_0001_1 not found'):
        FrameDatabase(dst, (3, 64, 96)).read(['00001_0001_1', '00003_0001_1'])

    (bare / 'meta_info.txt').unlink()
    (bare / 'Vimeo7_train_keys.pkl').write_bytes(pickle.dumps({'keys': ['00001_0001'], 'resolution': '3_256_448'}))
    assert 'key 00001_0001_1 holds 18,432 bytes, expected 344,064 (resolution 3_256_448' in error(gt_lmdb=str(bare))
    png = tmp_path / 'png.lmdb'
    env = lmdb.open(str(png), map_size=2 ** 26)
    with env.begin(write=True) as txn:
        for n in range(1, 8):
            txn.put(f'00001_0001_{n}'.encode(), cv2.imencode('.png', np.zeros((64, 96, 3), np.uint8))[1].tobytes())
    env.close()
    (png / 'meta_info.pkl').write_bytes(pickle.dumps({'keys': ['00001_0001'], 'resolution': '3_64_96'}))
    assert 'a PNG file: the BasicSR layout' in error(gt_lmdb=str(png))


def test_create_lmdb_help(create_lmdb, capsys):
    with pytest.raises(SystemExit) as exit_:
        create_lmdb.main(['--help'])
    assert exit_.value.code == 0 and 'usage:' in capsys.readouterr().out
