"""Vimeo-90K septuplets (Xue et al., "Video Enhancement with Task-Oriented Flow"), for training and testing.

Folder tree (the official download, plus the ZSM test splits)::

    vimeo_septuplet/
    ├── sep_trainlist.txt           64,612 keys
    ├── sep_testlist.txt             7,824 keys
    ├── meta_info/                  Vimeo-Fast / Medium / Slow (1,225 / 4,977 / 1,613 keys, ZSM)
    │   └── fast_testset.txt, medium_testset.txt, slow_testset.txt
    └── sequences/
        ├── 00001/
        │   ├── 0001/
        │   │   └── im1.png .. im7.png   448x256 RGB, 7 consecutive frames
        │   └── 0002/ ..
        └── 00002/ ..

List format: one key ``<folder>/<sub-folder>`` per line (``00001/0001``); blank lines and ``#`` comments are
ignored. A precomputed LR tree (``lq_root``, made by ``data_scripts/generate_lr.py`` or the official MATLAB
scripts) mirrors ``sequences/``: ``<lq_root>/sequences/00001/0001/im1.png .. im7.png``, 112x64 for x4.

Training samples take GT frames im1..im7 and LR inputs im1, im3, im5, im7 (0-based 0, 2, 4, 6), as ZSM,
STDAN and MSITF do.
"""
import logging
import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from utils.coords import pixel_queries
from utils.errors import DataError

from .io import folder_exists, keep_existing, read_frames, read_list, to_float
from .registry import DATASETS
from .transforms import (
    augment,
    check_manifest,
    check_n_inputs,
    clip_sample,
    describe_lr,
    parse_degradation,
    resize_to,
    to_tensor,
    training_sample,
)

logger = logging.getLogger(__name__)


def listed_clips(list_path, gt_dir, lq_dir, lq_root, degradation, skip_missing):
    """The keys of ``list_path`` whose folders exist under ``gt_dir`` (missing ones: DataError, or dropped
    and logged with ``skip_missing``); checks the LR tree, when there is one, and its manifest."""
    keys = keep_existing(read_list(list_path), folder_exists(gt_dir), list_path, skip_missing, logger)
    if lq_dir is not None:
        if not lq_dir.is_dir():
            raise DataError(f'{lq_dir}: LR folder not found')
        check_manifest(lq_root, degradation)
    return keys


class SeptupletFolders(Dataset):
    """Training samples from a list of 7-frame clip folders; the layout is given by the arguments.

    Args:
        root: dataset root. list_file: list of clip keys, relative to ``root`` or absolute.
        sequences_dir: folder under ``root`` (and under ``lq_root``) the keys are relative to ('' = root).
        frame_pattern, frame_start: frame file names, ``frame_pattern.format(frame_start + i)`` for
            i = 0..6 (``im{}.png`` from 1, or ``{:03d}.png`` from 0).
        degradation: ``{type: BI|BD|PIL, scale, sigma}`` (None: BI x4); used on the fly unless ``lq_root`` is given, and
            always for the scale (and checked against ``<lq_root>/lr_manifest.json``).
        lq_root: precomputed LR tree mirroring ``root`` (same keys and frame names), or None.
        n_inputs: LR frames per sample (2..4); GT frames = 2 * n_inputs - 1. With fewer than 4 a random
            sub-window of the septuplet is taken each time.
        lq_size: LR crop side (GT crop = lq_size * scale); None or 0 keeps whole frames.
        use_flip, use_rot, use_time_reverse, use_vflip: augmentation, identical for LR and GT
            (``transforms.augment``): use_flip + use_rot all 8 orientations (ZSM/EDVR), use_flip + use_vflip the
            4 of STARnet's and MSTT's flip / mirror / rot180.
        skip_missing: drop listed clips that are not on disk (logged) instead of raising DataError.
        bit_depth: bits used in 16-bit files (e.g. 12), or None to scale by the dtype's maximum.
    """
    clip_frames = 7

    def __init__(self, root, list_file, sequences_dir, frame_pattern, frame_start, degradation, lq_root,
                 n_inputs, lq_size, use_flip, use_rot, use_time_reverse, skip_missing, bit_depth, use_vflip=False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f'{self.root}: dataset root not found')
        self.gt_dir = self.root / sequences_dir
        self.lq_dir = Path(lq_root) / sequences_dir if lq_root else None
        self.frame_names = [frame_pattern.format(frame_start + i) for i in range(self.clip_frames)]
        self.degradation = parse_degradation(degradation)
        check_n_inputs(n_inputs, max_inputs=(self.clip_frames + 1) // 2)
        self.length = 2 * n_inputs - 1
        self.options = {'lq_size': lq_size, 'use_flip': use_flip, 'use_rot': use_rot,
                        'use_time_reverse': use_time_reverse, 'use_vflip': use_vflip, 'bit_depth': bit_depth}
        list_path = self.root / list_file
        self.keys = listed_clips(list_path, self.gt_dir, self.lq_dir, lq_root, self.degradation, skip_missing)

    def __len__(self):
        return len(self.keys)

    def read_clip(self, index):
        """(key, frame names, GT frames) of a random ``length``-frame sub-window of clip ``index``."""
        key = self.keys[index]
        start = random.randint(0, self.clip_frames - self.length)
        names = self.frame_names[start:start + self.length]
        return key, names, read_frames([self.gt_dir / key / n for n in names], what=key)

    def __getitem__(self, index):
        key, names, gt = self.read_clip(index)
        lq = None
        if self.lq_dir is not None:
            lq = read_frames([self.lq_dir / key / n for n in names[0::2]], what=f'LR {key}')
        return training_sample(gt, key, self.degradation, lq=lq, **self.options)


@DATASETS.register()
class Vimeo90KSeptuplet(SeptupletFolders):
    """Vimeo-90K septuplet training set (tree and list format in the module docstring).

    Args:
        root: the ``vimeo_septuplet`` folder.
        list_file: key list relative to ``root`` (or absolute); default the official training split.
        degradation, lq_root, n_inputs, lq_size, use_flip, use_rot, use_time_reverse, use_vflip, skip_missing:
            as in :class:`SeptupletFolders`.

    Items: ``{'lq': (N, 3, h, w), 'gt': (2N-1, 3, s*h, s*w)`` float32 in [0, 1], ``'key': '00001/0001'}``.
    """

    def __init__(self, root, list_file='sep_trainlist.txt', degradation=None, lq_root=None, n_inputs=4,
                 lq_size=32, use_flip=False, use_rot=False, use_time_reverse=False, skip_missing=False,
                 use_vflip=False):
        super().__init__(root, list_file, 'sequences', 'im{}.png', 1, degradation, lq_root, n_inputs, lq_size,
                         use_flip, use_rot, use_time_reverse, skip_missing, bit_depth=None, use_vflip=use_vflip)


@DATASETS.register()
class Vimeo90KAnyScale(SeptupletFolders):
    """Vimeo-90K septuplets as any-scale query samples, for continuous networks (Temporal-LIIF, LIIF's recipe
    with time added). Per sample:

    1. a space factor s ~ U(scale_min, scale_max) and a GT patch of G = round(lq_size * s) pixels square at
       a random place of all 2N-1 GT frames (a random sub-window of the septuplet when N < 4);
    2. flips, 90-degree rotations and time reversal as options, the same for every frame;
    3. the LR inputs: GT frames 0, 2, .., 2N-2 of the patch resized to ``lq_size`` square by the
       degradation (``BI``: MATLAB bicubic to an exact size, rounded to 8 bits once, or per pass with
       ``rounding: per_pass``; ``PIL``: PIL bicubic);
    4. ``sample_q`` queries drawn without replacement among all (frame, pixel) pairs of the 2N-1 GT
       frames, so the query instants are random among the GT frames (input frames and the ones between),
       and the pixels a random subset: ``utils/coords.py`` gives their (t, y, x), cells (2, 2/G, 2/G) and
       GT colours.

    Args:
        root, list_file, n_inputs, use_flip, use_rot, use_time_reverse, use_vflip, skip_missing: as
            :class:`Vimeo90KSeptuplet`.
        degradation: ``{type: BI}`` (optionally ``rounding: per_pass``) or ``{type: PIL}``; its scale is the random
            s, so give none. BD (a blur and an integer subsampling) has no form at non-integer factors.
        lq_size: LR side (fixed, so samples batch); the GT patch side varies with s.
        scale_min, scale_max: range of s (LIIF and the official Temporal-LIIF: 1 to 4). scale_max * lq_size
            must fit in the 448x256 frames.
        sample_q: queries per sample; at most (2N-1) * round(lq_size * scale_min) ** 2, the pixels of the
            smallest patch (7,168 for 32 and s >= 1).

    Items: ``{'lq': (N, 3, lq_size, lq_size), 'coord': (Q, 3), 'cell': (Q, 3), 'gt': (Q, 3), 'key'}`` float32,
    colours in [0, 1] (see ``utils/coords.py``).
    """

    def __init__(self, root, list_file='sep_trainlist.txt', degradation=None, n_inputs=4, lq_size=32,
                 scale_min=1.0, scale_max=4.0, sample_q=4096, use_flip=False, use_rot=False,
                 use_time_reverse=False, skip_missing=False, use_vflip=False):
        degradation = dict(degradation or {'type': 'BI'})
        if 'scale' in degradation:
            raise ValueError('degradation.scale: any-scale samples draw the scale from [scale_min, scale_max]; '
                             'leave it out')
        kind = str(degradation.pop('type', 'BI')).upper()
        rounding = degradation.pop('rounding', None) if kind == 'BI' else None
        if kind not in ('BI', 'PIL') or degradation:
            raise ValueError(f'degradation: any-scale samples support {{type: BI, rounding}} and {{type: PIL}}, got '
                             f'{ {"type": kind, **degradation} }')
        self.rounding = parse_degradation({'type': 'BI', 'rounding': rounding})['rounding']
        if not isinstance(lq_size, int) or isinstance(lq_size, bool) or lq_size < 1:
            raise ValueError(f'lq_size must be a positive integer, got {lq_size!r}')
        if not 1 <= scale_min <= scale_max:
            raise ValueError(f'scale range must satisfy 1 <= scale_min <= scale_max, got [{scale_min}, {scale_max}]')
        smallest = (2 * n_inputs - 1) * round(lq_size * scale_min) ** 2 if isinstance(n_inputs, int) else 0
        if not isinstance(sample_q, int) or isinstance(sample_q, bool) or not 1 <= sample_q <= smallest:
            raise ValueError(f'sample_q must be an integer in [1, {smallest}] (the pixels of the smallest GT '
                             f'patch, {2 * n_inputs - 1} x {round(lq_size * scale_min)}^2), got {sample_q!r}')
        super().__init__(root, list_file, 'sequences', 'im{}.png', 1, {'type': 'BI', 'scale': 1}, None, n_inputs,
                         lq_size, use_flip, use_rot, use_time_reverse, skip_missing, bit_depth=None,
                         use_vflip=use_vflip)
        self.kind, self.lq_size, self.scale_range, self.sample_q = kind, lq_size, (scale_min, scale_max), sample_q

    def __getitem__(self, index):
        key, _, gt = self.read_clip(index)
        side = round(self.lq_size * random.uniform(*self.scale_range))
        height, width = gt.shape[1:3]
        if height < side or width < side:
            raise DataError(f'{key}: frames of {width}x{height} are smaller than the GT patch of {side} '
                            f'(lq_size {self.lq_size} x scale); lower scale_max or lq_size')
        y, x = random.randint(0, height - side), random.randint(0, width - side)
        (patch,) = augment([gt[:, y:y + side, x:x + side]], self.options['use_flip'], self.options['use_rot'],
                           self.options['use_time_reverse'], use_vflip=self.options['use_vflip'])
        lq = np.stack([resize_to(np.ascontiguousarray(f), (self.lq_size, self.lq_size), self.kind, self.rounding)
                       for f in patch[0::2]])
        n_inputs = len(lq)
        coord, cell, values = pixel_queries(to_tensor(to_float(patch)), [k / 2 for k in range(len(patch))],
                                            n_inputs, self.sample_q, key=key, rng=np.random)
        return {'lq': to_tensor(to_float(lq)), 'coord': coord, 'cell': cell, 'gt': values, 'key': key}


@DATASETS.register()
class Vimeo90KTriplet(SeptupletFolders):
    """Vimeo-90K triplets (STARnet's training set): 2 LR frames in (im1, im3), 3 GT frames.

    Tree: ``vimeo_triplet/sequences/00001/0001/im1.png .. im3.png`` (448x256) with ``tri_trainlist.txt``
    (51,313 keys) and ``tri_testlist.txt`` (3,782), the same list format as the septuplets.

    Args: as :class:`Vimeo90KSeptuplet`, without ``n_inputs`` (always 2).
    Items: ``{'lq': (2, 3, h, w), 'gt': (3, 3, s*h, s*w)`` float32 in [0, 1], ``'key'}``.
    """
    clip_frames = 3

    def __init__(self, root, list_file='tri_trainlist.txt', degradation=None, lq_root=None, lq_size=32,
                 use_flip=False, use_rot=False, use_time_reverse=False, skip_missing=False, use_vflip=False):
        super().__init__(root, list_file, 'sequences', 'im{}.png', 1, degradation, lq_root, 2, lq_size,
                         use_flip, use_rot, use_time_reverse, skip_missing, bit_depth=None, use_vflip=use_vflip)


@DATASETS.register()
class Vimeo90KTest(Dataset):
    """Vimeo-90K septuplets as test clips (protocol ``septuplet``: im1, im3, im5, im7 in, all 7 scored), or
    triplets (``clip_frames: 3`` with ``n_inputs: 2`` in the test options: im1, im3 in, all 3 scored).

    Args:
        root: the ``vimeo_septuplet`` (or ``vimeo_triplet``) folder.
        list_file: key list relative to ``root`` (or absolute): ``sep_testlist.txt`` (default) or
            ``meta_info/{fast,medium,slow}_testset.txt``; ``tri_testlist.txt`` for triplets.
        clip_frames: frames per clip, im1..im<clip_frames> (7 septuplets, 3 triplets).
        degradation: ``{type: BI|BD|PIL, scale, sigma}`` (None: BI x4), used on the fly unless ``lq_root`` is given.
        lq_root: precomputed LR tree, ``<lq_root>/sequences/<key>/im1..im7.png`` (one LR per GT frame).
        skip_missing: drop listed clips that are not on disk (logged) instead of raising DataError.

    Items: ``{'name': '00001/0266', 'gt': (7, 256, 448, 3) uint8, 'lq': (7, 64, 112, 3) float32 [0, 1],
    'max_value': 255, 'frame_names': ['im1.png', .., 'im7.png']}``.
    """

    def __init__(self, root, list_file='sep_testlist.txt', degradation=None, lq_root=None, skip_missing=False,
                 clip_frames=7):
        if not Path(root).is_dir():
            raise DataError(f'{root}: dataset root not found')
        if clip_frames not in (3, 7):
            raise ValueError(f'clip_frames must be 7 (septuplets) or 3 (triplets), got {clip_frames!r}')
        self.gt_dir = Path(root) / 'sequences'
        self.lq_dir = Path(lq_root) / 'sequences' if lq_root else None
        self.degradation = parse_degradation(degradation)
        self.frame_names = [f'im{i}.png' for i in range(1, clip_frames + 1)]
        list_path = Path(root) / list_file
        self.keys = listed_clips(list_path, self.gt_dir, self.lq_dir, lq_root, self.degradation, skip_missing)
        self.description = describe_lr(self.degradation, lq_root)

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index):
        key = self.keys[index]
        gt = read_frames([self.gt_dir / key / n for n in self.frame_names], what=key)
        lq = None
        if self.lq_dir is not None:
            lq = read_frames([self.lq_dir / key / n for n in self.frame_names], what=f'LR {key}')
        return clip_sample(key, gt, self.frame_names, self.degradation, lq=lq)
