"""Vimeo-90K septuplets in LMDB, in the layout of the official Zooming Slow-Mo, STDAN and MSITF pipelines.

Written by their ``create_lmdb_mp.py`` (``codes/data_scripts/`` in ZSM and STDAN, ``data_scripts/`` in MSITF)
and by ``data_scripts/create_lmdb.py`` here; read by their ``Vimeo7_dataset.py``::

    vimeo7_train_GT.lmdb/               vimeo7_train_LR7.lmdb/
    ├── data.mdb, lock.mdb              ├── data.mdb, lock.mdb
    └── Vimeo7_train_keys.pkl           ├── Vimeo7_train_keys.pkl   (the meta info, see below)
                                        └── lr_manifest.json        (written here from a generate_lr.py tree)

- One entry per frame. Key: ``<folder>_<sub-folder>_<n>`` in ASCII for ``sequences/<folder>/<sub-folder>/im<n>.png``,
  n = 1..7 (``00001_0001_4``); the GT and the LR database both hold all 7 frames of every clip.
- Value: the frame as ``cv2.imread`` returns it, stored as its raw bytes: uint8, rows x columns x channels,
  BGR, no header and no compression; 256 * 448 * 3 = 344,064 bytes for GT, 64 * 112 * 3 = 21,504 for x4 LR.
- Meta info: a pickle of ``{'name': 'Vimeo7_train_GT', 'resolution': '3_256_448', 'keys': [...]}``, the
  resolution as ``C_H_W`` and the keys the clips (``00001_0001``). The official script writes it into the
  database folder as ``Vimeo7_train_keys.pkl``; their training option ``cache_keys`` may name a copy anywhere.
  Copies differ: STDAN's ``keys`` is a set (taken here in sorted order), and the file ZSM ships
  (``datasets/meta_info/Vimeo7_train_keys.pkl``) is a plain list of the 64,612 keys with no dict around it,
  hence no resolution. ZSM's and MSITF's current scripts stop with an error just before they write it, so a
  database of theirs may have none: name the keys file with ``meta_info``, or give the official list
  (``sep_trainlist.txt``, ``00001/0001`` per line). Without a resolution in that file, the one in the meta
  info of the database folder is used, else Vimeo's 3_256_448 for GT and GT / scale for LR.

The official readers ignore the resolution and reshape every value to 256x448 (GT) or 64x112 (LR); here a
value of any other length is a DataError naming the database and the key. Sample keys are ``00001/0001``, as
the folder datasets give them. BasicSR's Vimeo-90K LMDBs are another layout (PNG-encoded values under
``00001/0001/im1`` keys, a ``meta_info.txt``) and are refused with a message saying so.
"""
import logging
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from utils.errors import DataError

from .io import keep_existing, read_list
from .registry import DATASETS
from .transforms import check_manifest, check_n_inputs, clip_sample, describe_lr, parse_degradation, training_sample

logger = logging.getLogger(__name__)

META_NAMES = ('Vimeo7_train_keys.pkl', 'meta_info.pkl')
VIMEO_RESOLUTION = (3, 256, 448)
CLIP_FRAMES = 7
_CLIP_KEY = re.compile(r'^[^_/\s]+_[^_/\s]+$')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def frame_key(clip, n):
    """The database key of frame ``im<n>.png`` (n from 1) of clip ``00001_0001``."""
    return f'{clip}_{n}'


def clip_name(clip):
    """``00001_0001`` -> ``00001/0001``, the key the folder datasets give their samples."""
    return clip.replace('_', '/', 1)


def parse_resolution(value, source):
    """``'3_256_448'`` (or a list of one such string, as some meta files hold) -> ``(3, 256, 448)``."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    parts = value.split('_') if isinstance(value, str) else []
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise DataError(f'{source}: resolution must be C_H_W such as 3_256_448, got {value!r}')
    c, h, w = (int(p) for p in parts)
    if c != 3:
        raise DataError(f'{source}: resolution {value} has {c} channels; the frames must be 3-channel BGR')
    return c, h, w


def find_meta(db_path):
    """The meta-info pickle in a database folder, or None; BasicSR's ``meta_info.txt`` is refused."""
    for name in META_NAMES:
        if (db_path / name).is_file():
            return db_path / name
    if (db_path / 'meta_info.txt').is_file():
        raise DataError(f'{db_path}: has a meta_info.txt, the BasicSR LMDB layout (PNG-encoded values); this '
                        f'loader reads the ZSM/STDAN/MSITF layout (raw BGR values, a meta_info.pkl of clip keys)')
    return None


def read_meta(path):
    """A meta-info file -> (clip keys ``00001_0001`` in order, resolution ``(C, H, W)`` or None).

    ``path``: a pickle (the official dict, or a bare list or set of keys), or a text list of ``00001/0001``
    keys such as ``sep_trainlist.txt``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: meta info not found')
    if path.suffix != '.pkl':
        keys = read_list(path)
        bad = [k for k in keys if not _CLIP_KEY.match(k.replace('/', '_', 1)) or k.count('/') != 1]
        if bad:
            raise DataError(f'{path}: {len(bad)} lines are not clip keys such as 00001/0001 (first: {bad[0]!r}); '
                            f'a BasicSR meta_info.txt belongs to another LMDB layout')
        return [k.replace('/', '_', 1) for k in keys], None
    try:
        with open(path, 'rb') as f:
            meta = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as err:
        raise DataError(f'{path}: unreadable meta info ({type(err).__name__}: {err})') from None
    resolution = None
    if isinstance(meta, dict):
        if 'keys' not in meta:
            raise DataError(f'{path}: meta info has no "keys" (found {", ".join(map(str, meta)) or "nothing"}); '
                            f'expected the official {{name, resolution, keys}} dict or a list of clip keys')
        if meta.get('resolution') is not None:
            resolution = parse_resolution(meta['resolution'], path)
        meta = meta['keys']
    if isinstance(meta, (set, frozenset)):
        meta = sorted(meta)
    if not isinstance(meta, (list, tuple)) or not meta:
        raise DataError(f'{path}: meta info keys must be a non-empty list or set of clip keys, got '
                        f'{type(meta).__name__}')
    bad = [k for k in meta if not isinstance(k, str) or not _CLIP_KEY.match(k)]
    if bad:
        raise DataError(f'{path}: {len(bad)} of {len(meta)} keys are not clip keys such as 00001_0001 (first: '
                        f'{bad[0]!r}); this loader reads the ZSM/STDAN/MSITF layout')
    return list(meta), resolution


def stored_resolution(db_path):
    """The resolution in the meta info of a database folder, or None."""
    meta = find_meta(db_path)
    return read_meta(meta)[1] if meta else None


def open_env(path):
    """Open a database read-only as the official loaders do: no lock file (several processes read), no
    read-ahead (random access), no zeroed buffers."""
    try:
        import lmdb  # only the LMDB datasets need it
    except ImportError:
        raise DataError(f'{path}: reading an LMDB needs the lmdb package (pip install -r requirements.txt)') from None
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)


_ENVS = {}  # resolved database path -> (pid, environment)


def shared_env(path):
    """This process's environment of the database at ``path``, opened on first use.

    LMDB allows one environment per database and process, so every dataset of a process shares it. A
    DataLoader worker forked after its parent read a sample inherits the parent's, which LMDB forbids using
    across a fork: the worker closes its copy (the parent's stays open) and opens its own.
    """
    key = str(Path(path).resolve())
    pid, env = _ENVS.get(key, (None, None))
    if pid != os.getpid():
        if env is not None:
            env.close()
        env = open_env(key)
        _ENVS[key] = (os.getpid(), env)
    return env


class FrameDatabase:
    """One database of frames in the official layout; ``resolution`` ``(C, H, W)``."""

    def __init__(self, path, resolution):
        self.path = Path(path)
        if not (self.path / 'data.mdb').is_file():
            raise DataError(f'{self.path}: LMDB database not found (no data.mdb)')
        self.resolution = resolution

    def keys(self):
        """Every key in the database, as str (one pass over the keys, values untouched)."""
        with shared_env(self.path).begin() as txn:
            return {k.decode('ascii', 'replace') for k in txn.cursor().iternext(keys=True, values=False)}

    def read(self, keys):
        """Frames ``keys`` -> ``(T, H, W, 3)`` uint8 RGB."""
        c, h, w = self.resolution
        frames = []
        with shared_env(self.path).begin(buffers=True) as txn:
            for key in keys:
                value = txn.get(key.encode('ascii'))
                if value is None:
                    raise DataError(f'{self.path}: key {key} not found')
                if len(value) != c * h * w:
                    png = ' (a PNG file: the BasicSR layout)' if bytes(value[:8]) == _PNG_SIGNATURE else ''
                    raise DataError(f'{self.path}: key {key} holds {len(value):,} bytes{png}, expected '
                                    f'{c * h * w:,} (resolution {c}_{h}_{w}, raw uint8 BGR)')
                frames.append(np.frombuffer(value, np.uint8).reshape(h, w, c)[:, :, ::-1])
            return np.stack(frames)  # copies out of the map before the transaction ends


class SeptupletDatabases:
    """The GT database, its clip keys and the optional LR database: what both LMDB datasets share.

    ``frames``: 1-based numbers of the GT frames a sample may read; ``lq_frames`` those of the LR ones. Clips
    missing any of them raise DataError (or are dropped and logged with ``skip_missing``).
    """

    def __init__(self, gt_lmdb, lq_lmdb, meta_info, degradation, frames, lq_frames, skip_missing):
        self.degradation = parse_degradation(degradation)
        gt_path = Path(gt_lmdb)
        if not gt_path.is_dir():
            raise DataError(f'{gt_path}: LMDB database not found')
        meta_path = Path(meta_info) if meta_info else find_meta(gt_path)
        if meta_path is None:
            raise DataError(f'{gt_path}: no meta info ({" or ".join(META_NAMES)}); set meta_info to the keys '
                            f'pickle (cache_keys of the official options) or to sep_trainlist.txt')
        clips, resolution = read_meta(meta_path)
        self.gt = FrameDatabase(gt_path, resolution or stored_resolution(gt_path) or VIMEO_RESOLUTION)
        self.lq = None
        if lq_lmdb:
            lq_path = Path(lq_lmdb)
            if not lq_path.is_dir():
                raise DataError(f'{lq_path}: LMDB database not found')
            c, h, w = self.gt.resolution
            scale = self.degradation['scale']
            self.lq = FrameDatabase(lq_path, stored_resolution(lq_path) or (c, h // scale, w // scale))
            check_manifest(lq_path, self.degradation)
        source = f'{meta_path} ({gt_path.name}{" + " + Path(lq_lmdb).name if lq_lmdb else ""})'
        self.clips = self._present(clips, frames, lq_frames, source, skip_missing)

    def _present(self, clips, frames, lq_frames, source, skip_missing):
        """The clips whose frames are in the databases; the first one's values are read, to check the size."""
        needed = [(self.gt, frames)] + ([(self.lq, lq_frames)] if self.lq is not None else [])
        stored = [(db.keys(), numbers) for db, numbers in needed]

        def present(clip):
            return all(frame_key(clip, n) in keys for keys, numbers in stored for n in numbers)

        clips = keep_existing(clips, present, source, skip_missing, logger)
        for db, numbers in needed:
            db.read([frame_key(clips[0], numbers[0])])
        return clips


@DATASETS.register()
class Vimeo90KSeptupletLMDB(Dataset):
    """Vimeo-90K septuplet training set read from the official LMDBs (layout in the module docstring).

    The samples are those :class:`~data.vimeo.Vimeo90KSeptuplet` gives on the same clips for the same
    random state, bit for bit: the same draws of the sub-window, crop and augmentation
    (``transforms.training_sample``).

    Args:
        gt_lmdb: the GT database (``vimeo7_train_GT.lmdb``).
        lq_lmdb: the LR database (``vimeo7_train_LR7.lmdb``), or None to degrade the GT frames on the fly.
        meta_info: the clip keys: a pickle (official dict, or bare list) or a text list of ``00001/0001``
            keys; None takes ``Vimeo7_train_keys.pkl`` or ``meta_info.pkl`` from ``gt_lmdb``.
        degradation, n_inputs, lq_size, use_flip, use_rot, use_time_reverse, use_vflip, skip_missing: as
            :class:`~data.vimeo.Vimeo90KSeptuplet` (``degradation`` gives the scale, and the LR frames
            without ``lq_lmdb``).

    Items: ``{'lq': (N, 3, h, w), 'gt': (2N-1, 3, s*h, s*w)`` float32 in [0, 1], ``'key': '00001/0001'}``.
    """

    def __init__(self, gt_lmdb, lq_lmdb=None, meta_info=None, degradation=None, n_inputs=4, lq_size=32,
                 use_flip=False, use_rot=False, use_time_reverse=False, skip_missing=False, use_vflip=False):
        check_n_inputs(n_inputs, max_inputs=(CLIP_FRAMES + 1) // 2)
        self.length = 2 * n_inputs - 1
        starts = range(CLIP_FRAMES - self.length + 1)
        lq_frames = sorted({1 + s + i for s in starts for i in range(0, self.length, 2)})
        self.db = SeptupletDatabases(gt_lmdb, lq_lmdb, meta_info, degradation, list(range(1, CLIP_FRAMES + 1)),
                                     lq_frames, skip_missing)
        self.keys = [clip_name(c) for c in self.db.clips]
        self.options = {'lq_size': lq_size, 'use_flip': use_flip, 'use_rot': use_rot,
                        'use_time_reverse': use_time_reverse, 'use_vflip': use_vflip, 'bit_depth': None}

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index):
        clip = self.db.clips[index]
        start = random.randint(0, CLIP_FRAMES - self.length)  # the draw SeptupletFolders.read_clip makes
        numbers = range(start + 1, start + 1 + self.length)
        gt = self.db.gt.read([frame_key(clip, n) for n in numbers])
        lq = self.db.lq.read([frame_key(clip, n) for n in numbers[0::2]]) if self.db.lq is not None else None
        return training_sample(gt, self.keys[index], self.db.degradation, lq=lq, **self.options)


@DATASETS.register()
class Vimeo90KTestLMDB(Dataset):
    """Vimeo-90K septuplets as test clips, read from databases in the official layout (for instance made
    by ``data_scripts/create_lmdb.py --list sep_testlist.txt``); the clips of :class:`~data.vimeo.Vimeo90KTest`.

    Args:
        gt_lmdb, meta_info, degradation, skip_missing: as :class:`Vimeo90KSeptupletLMDB`.
        lq_lmdb: the LR database (one LR frame per GT frame), or None to degrade on the fly.

    Items: ``{'name': '00001/0266', 'gt': (7, 256, 448, 3) uint8, 'lq': (7, 64, 112, 3) float32 [0, 1],
    'max_value': 255, 'frame_names': ['im1.png', .., 'im7.png']}``.
    """

    def __init__(self, gt_lmdb, lq_lmdb=None, meta_info=None, degradation=None, skip_missing=False):
        numbers = list(range(1, CLIP_FRAMES + 1))
        self.db = SeptupletDatabases(gt_lmdb, lq_lmdb, meta_info, degradation, numbers, numbers, skip_missing)
        self.keys = [clip_name(c) for c in self.db.clips]
        self.frame_names = [f'im{n}.png' for n in numbers]
        self.description = describe_lr(self.db.degradation, lq_lmdb)

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index):
        keys = [frame_key(self.db.clips[index], n) for n in range(1, CLIP_FRAMES + 1)]
        gt = self.db.gt.read(keys)
        lq = self.db.lq.read(keys) if self.db.lq is not None else None
        return clip_sample(self.keys[index], gt, self.frame_names, self.db.degradation, lq=lq)
