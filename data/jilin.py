"""Jilin-189: satellite videos from the Jilin-1 constellation (189 clips), as used by MSTT.

Training layout "189_vime7" (the authors' Vimeo-style re-cut, 2,647 clips of 7 frames)::

    189_vime7/                          root
    ├── 189_vime7_train.txt             one key per line, relative to root (e.g. ``001/0001``)
    └── 001/
        └── 0001/
            └── im1.png .. im7.png      frame_pattern 'im{}.png', frame_start 1 (MSTT's code), or
                000.png .. 006.png      frame_pattern '{:03d}.png', frame_start 0 (MSTT's README)

Test layout (MSTT ``test_example``, ``jilin_test12``)::

    test/                               root
    └── 001/                            one folder per clip
        ├── truth/00000000.png ..       ground truth, 640x640
        └── input4/00000000.png ..      optional published LR, one per GT frame (MATLAB bicubic x4)

    test_LR/                            optional lq_root made by data_scripts/generate_lr.py: the mirror
    └── 001/truth/00000000.png ..       of root (160x160 for x4) with lr_manifest.json at its top

Frames are 8- or 16-bit PNG/TIFF; 16-bit files holding 12-bit data need ``bit_depth: 12`` to be scaled to
[0, 1] by 4095 instead of 65535. MSTT trained with PIL bicubic on the fly (``degradation: {type: PIL}``,
8-bit only) but its published ``input4`` is MATLAB bicubic rounded once: ``BI`` (``rounding: once``) of
``truth`` reproduces ``test_example/001/input4`` at 66.3 dB (per-pass rounding: 57.3 dB, PIL: 57 dB).
"""
from pathlib import Path

from utils.errors import DataError

from .frames import FrameFolders
from .io import natural_sort, read_list
from .registry import DATASETS
from .vimeo import SeptupletFolders


@DATASETS.register()
class Jilin189Septuplet(SeptupletFolders):
    """Jilin-189 "189_vime7" training clips (tree above).

    Args:
        root: the ``189_vime7`` folder. list_file: key list relative to ``root`` (or absolute).
        frame_pattern, frame_start: frame names, ``frame_pattern.format(frame_start + i)``, i = 0..6.
        degradation, lq_root, n_inputs, lq_size, use_flip, use_rot, use_time_reverse, use_vflip, skip_missing,
        bit_depth: as in :class:`data.vimeo.SeptupletFolders` (``lq_root`` mirrors ``root``). MSTT's augment
        (flip, mirror, rot180) is ``use_flip`` + ``use_vflip``.

    Items: ``{'lq': (N, 3, h, w), 'gt': (2N-1, 3, s*h, s*w)`` float32 in [0, 1], ``'key'}``.
    """

    def __init__(self, root, list_file='189_vime7_train.txt', frame_pattern='im{}.png', frame_start=1,
                 degradation=None, lq_root=None, n_inputs=4, lq_size=32, use_flip=False, use_rot=False,
                 use_time_reverse=False, skip_missing=False, bit_depth=None, use_vflip=False):
        super().__init__(root, list_file, '', frame_pattern, frame_start, degradation, lq_root, n_inputs,
                         lq_size, use_flip, use_rot, use_time_reverse, skip_missing, bit_depth, use_vflip)


@DATASETS.register()
class Jilin189Test(FrameFolders):
    """Jilin-189 test clips: ``<root>/<clip>/truth/`` frames, LR from ``<clip>/input4/`` or made on the fly.

    Args:
        root: folder of clip folders. clips: None (all), a list of names or a list file (as FrameFolders).
        degradation: ``{type: BI|BD|PIL, scale, sigma}`` (None: BI x4); the scale also applies to precomputed LR.
        lq_root: a precomputed LR mirror of ``root`` (``<lq_root>/<clip>/truth/``), or None.
        use_input4: read the published ``<clip>/input4/`` LR frames instead (true; not with ``lq_root``), never
            (false or null, the default: null because the option takes a bool or a word), or ``auto``: when
            every clip has an ``input4`` folder, else ``degradation`` on the fly (some clips with it and some
            without is an error, so one table never mixes the two).
        bit_depth: bits used in 16-bit files, or None.

    Items as :class:`data.frames.FrameFolders`. Without ``lq_root`` or ``input4`` the LR frames are
    made from ``truth`` on the fly.
    """

    def __init__(self, root, clips=None, degradation=None, lq_root=None, use_input4=None, bit_depth=None):
        if use_input4 not in (True, False, None, 'auto'):
            raise ValueError(f'use_input4 must be true, false or auto, got {use_input4!r}')
        if lq_root and use_input4 is True:
            raise ValueError('Jilin189Test: give lq_root or use_input4, not both')
        if use_input4 == 'auto':
            use_input4 = not lq_root and self._all_have_input4(Path(root), clips)
        super().__init__(root, clips, degradation, lq_root=root if use_input4 else lq_root, gt_subdir='truth',
                         lq_subdir='input4' if use_input4 else 'truth', bit_depth=bit_depth)
        if use_input4:
            self.description = f'published LR <clip>/input4 ({self.degradation["type"]} x{self.degradation["scale"]})'

    @staticmethod
    def _all_have_input4(root, clips):
        """Whether every clip (all folders of ``root``, or those ``clips`` names) has an ``input4`` folder."""
        if not root.is_dir():
            return False  # FrameFolders reports the missing root
        if clips is None:
            names = natural_sort(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith('.'))
        else:
            names = read_list(root / clips) if isinstance(clips, (str, Path)) else [str(c) for c in clips]
        have = [name for name in names if (root / name / 'input4').is_dir()]
        if have and len(have) != len(names):
            lacking = [name for name in names if name not in have]
            raise DataError(f'{root}: {len(have)} of {len(names)} clips have an input4 folder (not: '
                            f'{", ".join(lacking[:3])}); use_input4: auto needs all or none')
        return bool(have)
