"""Folders of frames as test clips: Vid4, SPMC-style sets and users' own clips.

Folder tree (real Vid4 shown; any image names work, sorted naturally by their numbers)::

    Vid4/GT/                      root
    ├── calendar/                 one folder per clip
    │   └── Frame 001.png .. Frame 041.png    720x576
    ├── city/     Frame 001.png .. Frame 034.png    704x576
    ├── foliage/  Frame 01.png  .. Frame 49.png     720x480
    └── walk/     Frame 01.png  .. Frame 47.png     720x480

    Vid4/BIx4/                    optional lq_root: the same clip names, one LR frame per GT frame,
    └── calendar/ ..              matched to GT frames by position in natural order; 180x144 for x4

Natural order compares digit runs as numbers, so ``Frame 2.png`` < ``Frame 10.png`` whatever the zero
padding; that order is the temporal order. With ``gt_subdir``/``lq_subdir`` the frames sit one level down
(``<clip>/truth/``, ``<clip>/input4/``), the layout of SPMC and Jilin-189 test clips. A clip list file holds
one clip name per line.
"""
import logging
from pathlib import Path

from torch.utils.data import Dataset

from utils.errors import DataError

from .io import (
    IMAGE_EXTENSIONS,
    folder_exists,
    iter_frames,
    keep_existing,
    list_images,
    natural_sort,
    read_frames,
    read_image,
    read_list,
)
from .registry import DATASETS
from .transforms import check_manifest, clip_sample, describe_lr, parse_degradation

logger = logging.getLogger(__name__)


@DATASETS.register()
class FrameFolders(Dataset):
    """Test clips stored as one folder of frames per clip (tree in the module docstring).

    Args:
        root: folder holding one sub-folder per clip.
        clips: None for every sub-folder of ``root`` (hidden ones skipped, natural order), a list of clip
            names, or the path of a list file (one name per line; relative paths are taken from ``root``).
        degradation: ``{type: BI|BD|PIL, scale, sigma}`` (None: BI x4); LR frames are made from the modcropped GT frames
            unless ``lq_root`` is given (the scale is always taken from here).
        lq_root: folder with the same clip names holding precomputed LR frames, or None.
        gt_subdir, lq_subdir: sub-folder of each clip folder holding its GT / LR frames ('' = the clip
            folder itself).
        bit_depth: bits used in 16-bit files (e.g. 12 for Jilin-1 data), or None for the dtype's maximum.

    Items: ``{'name': 'calendar', 'gt': (T, H, W, 3)`` uint8/uint16 as read and modcropped, ``'lq': (T, H/s,
    W/s, 3)`` float32 [0, 1], ``'max_value'`` 255 / 65535 / 2**bit_depth - 1, ``'frame_names'`` the GT file
    names}. Frames of one clip must share size and bit depth (DataError naming the odd frame).
    """

    def __init__(self, root, clips=None, degradation=None, lq_root=None, gt_subdir='', lq_subdir='',
                 bit_depth=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f'{self.root}: dataset root not found')
        self.degradation = parse_degradation(degradation)
        self.bit_depth = bit_depth
        if clips is None:
            names = natural_sort(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith('.'))
            if not names:
                raise DataError(f'{self.root}: no clip folders found')
            source = self.root
        else:
            if isinstance(clips, (str, Path)):
                source = self.root / clips
                names = read_list(source)
            else:
                source, names = self.root, [str(c) for c in clips]
            names = keep_existing(names, folder_exists(self.root), source, False, logger, can_skip=False)
        self.clips = []
        for name in names:
            gt_paths = list_images(self.root / name / gt_subdir)
            if not gt_paths:
                raise DataError(f'{self.root / name / gt_subdir}: no frames (expected .png/.tif/.jpg files)')
            lq_paths = None
            if lq_root is not None:
                lq_paths = list_images(Path(lq_root) / name / lq_subdir)
                if len(lq_paths) != len(gt_paths):
                    raise DataError(f'{Path(lq_root) / name / lq_subdir}: {len(lq_paths)} LR frames for '
                                    f'{len(gt_paths)} GT frames; expected one LR frame per GT frame')
            self.clips.append((name, gt_paths, lq_paths))
        if lq_root is not None:
            check_manifest(lq_root, self.degradation)
        self.description = describe_lr(self.degradation, lq_root)

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        name, gt_paths, lq_paths = self.clips[index]
        gt = read_frames(gt_paths, what=name)
        lq = read_frames(lq_paths, what=f'LR {name}') if lq_paths else None
        return clip_sample(name, gt, [p.name for p in gt_paths], self.degradation, lq=lq, bit_depth=self.bit_depth)


class FrameReader:
    """A folder of frames (PNG/TIFF/JPEG..., naturally sorted) read one at a time, for inference on a clip
    without ground truth (``engine/inference.py``).

    Attributes: ``path``, ``count``, ``height``, ``width``, ``dtype`` (of the first frame) and ``fps`` (given;
    None when not: a folder has no frame rate). ``max_frames`` keeps the first that many. Every frame must
    match the first frame's size and dtype (DataError naming the odd one, when it is read).
    """

    def __init__(self, folder, fps=None, max_frames=None):
        self.path = Path(folder)
        self.paths = list_images(self.path)[:max_frames]
        if not self.paths:
            raise DataError(f'{self.path}: no image files ({", ".join(IMAGE_EXTENSIONS)}) in this folder')
        first = read_image(self.paths[0])
        self.count, (self.height, self.width), self.dtype = len(self.paths), first.shape[:2], first.dtype
        self.fps = fps

    def frames(self):
        """Yield ``(H, W, 3)`` uint8/uint16 RGB frames in order."""
        return iter_frames(self.paths, what=str(self.path))
