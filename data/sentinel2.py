"""Sentinel-2 revisits of a site, the setting of the official Temporal-LIIF (ggcr/Super-Temporal-LIIF, liif-3d).

Folder tree (one folder per site, as the official ``data/lr_dataset``)::

    sentinel2_revisits/                          root
    └── Landcover-14956/                         site
        └── L2A/
            ├── Landcover-14956-1-L2A_data_adapted.png   revisit 1, RGB 8-bit (155x161 here)
            ├── Landcover-14956-1.metadata               its JSON metadata
            ├── Landcover-14956-2-L2A_data_adapted.png
            ├── Landcover-14956-2.metadata
            └── ..                                       revisits 1..K, all of one size

    hr_dataset/12bit/                            hr_root (optional): the SPOT 6/7 image of each site (the
    └── Landcover-14956/                         official data/hr_dataset/12bit; 8-bit RGB PNGs despite the name)
        └── Landcover-14956_adapted_x6.png       (also _x2, _x4; square: 1054, 314, 628 pixels)

A revisit is ``<prefix>-<k>.metadata`` with ``<prefix>-<k>-L2A_data_adapted.png`` beside it; other files
(cloud masks, TIFFs, ``INTER_*``) are ignored. The prefix of the metadata may hold spaces where the folder and
the images hold underscores (``Amnesty POI-13-1-1-1.metadata`` beside ``Amnesty_POI-13-1-1-1-L2A_data_adapted.png``
in ``Amnesty_POI-13-1-1/``); revisits are matched by their number. The metadata fields used are the revisit's
day ``lowres_date`` and the HR acquisition day ``highres_date`` (``datetime`` and ``target_date`` in the
Amnesty sites' files), ``YYYY-MM-DD``. A revisit may have metadata and no image (3 official sites: revisit 16).

Which revisits (``n_revisits``, official 5, in chronological order; revisit (n-1)/2 is the centre one):

- ``selection: official`` (default), ``utils/temporal-5-subset.py`` exactly: among all sets of n revisits
  with metadata, the one whose first and last days have their midpoint closest to the HR day ("Equation 5"
  of the thesis), the first such set met when the sets are enumerated (``itertools.combinations``) over the
  revisits in the order the script listed their metadata files. Only the two ends count, so many sets tie
  (21 of the 31 official sites, up to 242 sets), and that order decides. The script ran on macOS, whose file
  system (APFS, case-insensitive) lists a folder by a hash of each name (CRC-32C of the case-folded NFD name
  in UTF-32LE, low 22 bits, then the name's length); ``apfs_listing_key`` computes it, so the choice does not
  depend on the machine running this code. Each chosen day then maps to the first listed revisit of that day.
  This reproduces the official ``temporal_dataset`` for all 31 sites (tests/test_official_inputs.py, from
  their metadata); on Landcover-14956: revisits 4, 7, 6, 1, 8.
- ``selection: midpoint``: the same criterion with a tie-break that needs no file order: the smallest sum of
  ``|delta|`` (revisit minus HR day), then the revisit numbers; on Landcover-14956 revisits 4, 2, 6, 1, 8 (the
  same ends, midpoint 2019-10-18 for HR day 2019-10-20, the same centre revisit 6). Only revisits with images.
- ``selection: nearest``: the n revisits with the smallest ``|delta|`` (ties: lower revisit number); 7, 2, 6,
  1, 8 on Landcover-14956. Not the official rule; kept as an option.

All are then ordered by day (ties: as chosen).

The target. With ``hr_root`` the target is the SPOT image, as the official: read as RGB, for training
PIL-bicubic resized to the revisit grid (``image_folder.py``, ``wrappers.py`` ``sr-implicit-downsampled``), for
testing at its own size (``demo.py``). Without ``hr_root`` (a copy of the revisits without the official
repository's ``hr_dataset``, as in ``../shared/data``) the target is a **self-supervised stand-in**: the centre revisit itself, at its native resolution. Scores on that target
measure how well the network rebuilds a revisit from downscaled revisits, not Sentinel-2 -> SPOT
super-resolution, and are not comparable to the thesis.

Training items (``Sentinel2Revisits``)::

    {'lq': (n, 3, h, w) float32 in [0, 1],   the n revisit crops, PIL-bicubic downscaled
     'coord': (Q, 3), 'cell': (Q, 3),         queries of the target crop at the centre instant (t = 0 for n = 5)
     'gt': (Q, 3) float32 in [0, 1],          the target's colour at each query (utils.coords.pixel_queries)
     'key': site}

Test items (``Sentinel2Test``, the clip format of ``transforms.clip_sample``, for protocol ``centre``)::

    {'name': site, 'lq': (n, h, w, 3) float32 in [0, 1], 'gt': (1, H, W, 3) uint8, 'max_value': 255,
     'frame_names': [target file name]}
"""
import functools
import itertools
import json
import math
import random
import re
import unicodedata
from datetime import date
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from utils.coords import pixel_queries
from utils.errors import DataError

from .io import read_frames, read_image, to_float
from .registry import DATASETS
from .transforms import clip_sample, resize_to, to_tensor

REVISIT_NAME = re.compile(r'^(?P<prefix>.+)-(?P<number>\d+)-L2A_data_adapted\.png$')
METADATA_NAME = re.compile(r'^(?P<prefix>.+)-(?P<number>\d+)\.metadata$')
SELECTIONS = ('official', 'midpoint', 'nearest')


def read_revisits(site_dir):
    """Every revisit of a site folder with metadata: a list of ``{'number', 'path' (the image, or None), 'date',
    'hr_date', 'delta' (days), 'metadata' (file name)}`` in revisit order."""
    l2a = Path(site_dir) / 'L2A'
    if not l2a.is_dir():
        raise DataError(f'{site_dir}: no L2A folder (expected <site>/L2A/<site>-<k>-L2A_data_adapted.png revisits)')
    metadata, images = {}, {}
    for path in sorted(l2a.iterdir()):
        for pattern, found in ((METADATA_NAME, metadata), (REVISIT_NAME, images)):
            match = pattern.match(path.name)
            if match:
                number = int(match['number'])
                if number in found:
                    raise DataError(f'{l2a}: two files for revisit {number}: {found[number].name}, {path.name}')
                found[number] = path
    for number, path in images.items():
        if number not in metadata:
            prefix = REVISIT_NAME.match(path.name)['prefix']
            raise DataError(f'{l2a / f"{prefix}-{number}.metadata"}: metadata file not found for revisit {path.name}')
    revisits = []
    for number, meta_path in sorted(metadata.items()):
        try:
            meta = json.loads(meta_path.read_text())
            day = date.fromisoformat(meta['lowres_date'] if 'lowres_date' in meta else meta['datetime'])
            hr_day = date.fromisoformat(meta['highres_date'] if 'highres_date' in meta else meta['target_date'])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f'{meta_path}: not a revisit metadata file (needs lowres_date and highres_date, or '
                            f'datetime and target_date, as YYYY-MM-DD; {type(err).__name__}: {err})') from None
        revisits.append({'number': number, 'path': images.get(number), 'date': day, 'hr_date': hr_day,
                         'delta': (day - hr_day).days, 'metadata': meta_path.name})
    return revisits


@functools.lru_cache(maxsize=1)
def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


def apfs_listing_key(name):
    """Where macOS (APFS, case-insensitive) lists file ``name`` in its folder: folders are B-trees keyed by
    (hash << 10 | length of the UTF-8 name + 1), the hash the low 22 bits of CRC-32C (initial value ~0, no final
    inversion) of the case-folded, NFD-normalised name in UTF-32LE; the name itself breaks hash ties."""
    table, crc = _crc32c_table(), 0xFFFFFFFF
    for byte in unicodedata.normalize('NFD', name.casefold()).encode('utf-32-le'):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return ((crc & 0x3FFFFF) << 10) | ((len(name.encode()) + 1) & 0x3FF), name


def _official_choice(revisits, n):
    """temporal-5-subset.py's choice (module docstring): the first set in listing order whose first and last
    days have their midpoint nearest the HR day, each chosen day mapped to the first listed revisit of that day."""
    listed = sorted(revisits, key=lambda r: apfs_listing_key(r['metadata']))
    hr_day = listed[-1]['hr_date'].toordinal()  # the script keeps the HR day of the last file it reads
    best, best_gap = None, None
    for combo in itertools.combinations(listed, n):
        days = sorted(r['date'].toordinal() for r in combo)
        gap = abs(2 * hr_day - days[0] - days[-1])  # twice |HR day - midpoint|, in whole days
        if best_gap is None or gap < best_gap:
            best, best_gap = days, gap
    return [next(r for r in listed if r['date'].toordinal() == day) for day in best]


def select_revisits(revisits, n, selection, site='site'):
    """The n revisits chosen by ``selection`` (module docstring), in chronological order."""
    usable = revisits if selection == 'official' else [r for r in revisits if r['path'] is not None]
    if len(usable) < n:
        raise DataError(f'{site}: {len(usable)} revisits found, n_revisits={n} needs at least {n}')
    if selection == 'official':
        chosen = _official_choice(usable, n)
        missing = [r['number'] for r in chosen if r['path'] is None]
        if missing:
            raise DataError(f'{site}: the official selection takes revisit {missing[0]}, which has metadata but no '
                            f'image (<site>-{missing[0]}-L2A_data_adapted.png)')
        return sorted(chosen, key=lambda r: r['date'])  # stable: same-day revisits keep the order chosen
    if selection == 'nearest':
        chosen = sorted(usable, key=lambda r: (abs(r['delta']), r['number']))[:n]
    else:
        def score(combo):  # combo is chronological, so its ends are the first and last days
            return (abs(combo[0]['delta'] + combo[-1]['delta']), sum(abs(r['delta']) for r in combo),
                    sorted(r['number'] for r in combo))
        chronological = sorted(usable, key=lambda r: (r['date'], r['number']))
        chosen = min(itertools.combinations(chronological, n), key=score)
    return sorted(chosen, key=lambda r: (r['date'], r['number']))


def site_names(root, sites):
    """``sites`` checked against ``root``, or every folder of ``root`` holding an L2A folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f'{root}: dataset root not found')
    if sites is None:
        sites = sorted(p.name for p in root.iterdir() if not p.name.startswith('.') and (p / 'L2A').is_dir())
        if not sites:
            raise DataError(f'{root}: no site folders with an L2A folder of revisits')
    elif isinstance(sites, str) or not sites:
        raise ValueError(f'sites must be a non-empty list of site folder names or None, got {sites!r}')
    return list(sites)


def flip(clip, rows, cols, diagonal):
    """Reverse the rows and/or columns of a ``(T, H, W, C)`` clip, then transpose H and W if ``diagonal``."""
    if rows:
        clip = clip[:, ::-1]
    if cols:
        clip = clip[:, :, ::-1]
    return clip.transpose(0, 2, 1, 3) if diagonal else clip


def check_n_revisits(n_revisits, selection):
    if isinstance(n_revisits, bool) or not isinstance(n_revisits, int) or n_revisits < 1 or n_revisits % 2 == 0:
        raise ValueError(f'n_revisits must be an odd positive integer (the target is the centre revisit\'s '
                         f'instant), got {n_revisits!r}')
    if selection not in SELECTIONS:
        raise ValueError(f'selection must be one of {", ".join(SELECTIONS)}, got {selection!r}')


class SiteRevisits:
    """The chosen revisits of one site (module docstring): ``paths`` in chronological order, ``centre`` index."""

    def __init__(self, root, site, n_revisits, selection):
        self.site = site
        chosen = select_revisits(read_revisits(Path(root) / site), n_revisits, selection, site)
        self.paths = [r['path'] for r in chosen]
        self.centre = (n_revisits - 1) // 2

    def read(self):
        """``(n, H, W, 3)`` uint8 revisits; DataError for an unreadable, 16-bit or differently sized one."""
        frames = read_frames(self.paths, what=f'site {self.site}')
        if frames.dtype != np.uint8:
            raise DataError(f'{self.paths[0]}: expected 8-bit revisits, got {frames.dtype}')
        return frames


def hr_path(hr_root, hr_name, site):
    path = Path(hr_root) / site / hr_name.format(site=site)
    if not path.is_file():
        raise DataError(f'{path}: HR image of site {site} not found')
    return path


def read_hr(path):
    img = read_image(path)
    if img.dtype != np.uint8:
        raise DataError(f'{path}: expected an 8-bit HR image, got {img.dtype}')
    return img


@DATASETS.register()
class Sentinel2Revisits(Dataset):
    """Training samples of the official Temporal-LIIF (``wrappers.py`` ``sr-implicit-downsampled`` with
    ``temporal_strat: complete``): n revisits of a site in, the target at the centre instant queried.

    Each sample: a random square crop at one place of every revisit and of the target; a scale
    s ~ U(scale_min, scale_max) (``random.uniform``); each revisit crop PIL-bicubic resized to the LR side;
    with ``augment`` one random h/v/diagonal flip shared by LR and target plus a time flip of the LR only
    (the centre instant is its own mirror image); then ``sample_q`` target pixels drawn without replacement
    at the centre instant, cell (2, 2/side, 2/side). Randomness comes from ``random`` and ``np.random``.

    Args:
        root: folder of site folders (tree in the module docstring).
        sites: site folder names; None: every folder of ``root`` that has an ``L2A`` folder.
        n_revisits: revisits per sample (odd; official 5). selection: ``official`` (default), ``midpoint`` or
            ``nearest`` (module docstring).
        hr_root, hr_name: ``<hr_root>/<site>/<hr_name>`` is the target, PIL-bicubic resized to the revisit
            size (official ``_adapted_x6.png``); hr_root None: the centre revisit (self-supervised stand-in).
        inp_size: the official crop: target crop side on the revisit grid, LR side floor(inp_size / s). The
            LR size then changes from sample to sample, so the DataLoader batch must be 1 (as the official).
        lq_size_from: with ``inp_size``, what the LR size is computed from: ``crop`` (floor(inp_size / s)
            square, the evident intent) or ``revisit`` (the default, None, with ``inp_size``): floor(H / s) x
            floor(W / s) of the whole H x W revisit, what the official code does (``h_lr = floor(cropped_lrs.shape[-2] / s)`` where ``cropped_lrs``
            is the uncropped stack), so on 155x161 revisits a 128 crop goes to 38x40 at s = 4 and 155x161 at
            s = 1: s ~ U(1, 4) acts as about U(0.8, 3.2) with a slightly non-square LR.
        lq_size: instead of ``inp_size``, for batches > 1: LR side fixed, target crop side round(lq_size * s).
            Exactly one of ``inp_size`` and ``lq_size`` is given (``inp_size: null`` with ``lq_size``).
        scale_min, scale_max: range of s (1 <= scale_min <= scale_max).
        sample_q: queries per sample (official 16384 = 128^2, every pixel of the crop in random order), at
            most the smallest crop's pixels; None: every pixel, in order (with ``lq_size`` then batch 1 only).
        augment: the flips above. repeat: passes over the sites per epoch (official 20).

    The revisits and targets of every site are read once, here (the official ``cache: in_memory``).
    """

    def __init__(self, root, sites=None, n_revisits=5, selection='official', hr_root=None,
                 hr_name='{site}_adapted_x6.png', inp_size=128, lq_size=None, lq_size_from=None, scale_min=1.0,
                 scale_max=4.0, sample_q=16384, augment=True, repeat=1):
        check_n_revisits(n_revisits, selection)
        if (inp_size is None) == (lq_size is None):
            raise ValueError(f'give exactly one of inp_size (official) and lq_size (with lq_size, set inp_size: '
                             f'null), got inp_size={inp_size!r}, lq_size={lq_size!r}')
        if lq_size_from is None:  # the official arithmetic with the official crop
            lq_size_from = 'revisit' if inp_size is not None else 'crop'
        if lq_size_from not in ('crop', 'revisit') or (lq_size is not None and lq_size_from != 'crop'):
            raise ValueError(f'lq_size_from must be crop or revisit (revisit only with inp_size), got '
                             f'{lq_size_from!r}')
        if not 1 <= scale_min <= scale_max:
            raise ValueError(f'need 1 <= scale_min <= scale_max, got {scale_min!r}, {scale_max!r}')
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f'repeat must be a positive integer, got {repeat!r}')
        self.n_revisits, self.inp_size, self.lq_size, self.lq_size_from = n_revisits, inp_size, lq_size, lq_size_from
        self.scale_min, self.scale_max = scale_min, scale_max
        self.sample_q, self.augment, self.repeat = sample_q, augment, repeat
        max_side = inp_size if inp_size is not None else round(lq_size * scale_max)
        min_side = inp_size if inp_size is not None else round(lq_size * scale_min)
        if sample_q is not None and sample_q > min_side ** 2:
            raise ValueError(f'sample_q={sample_q} is more than the {min_side}x{min_side} pixels of the smallest '
                             f'target crop')
        self.sites = site_names(root, sites)
        self.frames, self.targets = [], []
        for site in self.sites:
            revisits = SiteRevisits(root, site, n_revisits, selection)
            frames = revisits.read()
            height, width = frames.shape[1:3]
            if hr_root is None:
                target = frames[revisits.centre]
            else:
                target = resize_to(read_hr(hr_path(hr_root, hr_name, site)), (height, width), 'PIL')
            if max_side > min(height, width):
                size = f'inp_size {inp_size}' if inp_size is not None else f'round(lq_size * scale_max) {max_side}'
                raise DataError(f'{site}: revisits of {width}x{height} are smaller than the {max_side}x{max_side} '
                                f'crop ({size})')
            self.frames.append(frames)
            self.targets.append(target)

    def __len__(self):
        return len(self.sites) * self.repeat

    def __getitem__(self, index):
        index %= len(self.sites)
        frames, target = self.frames[index], self.targets[index]
        height, width = target.shape[:2]
        if self.inp_size is not None:  # the official order: the crop, then the scale
            side = self.inp_size
            y, x = random.randint(0, height - side), random.randint(0, width - side)
            scale = random.uniform(self.scale_min, self.scale_max)
            base_h, base_w = (side, side) if self.lq_size_from == 'crop' else (height, width)
            lq_h, lq_w = math.floor(base_h / scale + 1e-9), math.floor(base_w / scale + 1e-9)
        else:
            side = round(self.lq_size * random.uniform(self.scale_min, self.scale_max))
            y, x = random.randint(0, height - side), random.randint(0, width - side)
            lq_h = lq_w = self.lq_size
        lq = np.stack([resize_to(f[y:y + side, x:x + side], (lq_h, lq_w), 'PIL') for f in frames])
        gt = target[None, y:y + side, x:x + side]
        if self.augment:  # drawn in the official order, so that equal seeds give the official sample
            rows, cols, diagonal, time = (random.random() < 0.5 for _ in range(4))
            lq, gt = (flip(clip, rows, cols, diagonal) for clip in (lq, gt))
            if time:
                lq = lq[::-1]
        n = self.n_revisits
        coord, cell, values = pixel_queries(to_tensor(to_float(gt)), times=[(n - 1) / 2], n_inputs=n,
                                            sample_q=self.sample_q, key=self.sites[index], rng=np.random)
        return {'lq': to_tensor(to_float(lq)), 'coord': coord, 'cell': cell, 'gt': values, 'key': self.sites[index]}


@DATASETS.register()
class Sentinel2Test(Dataset):
    """Test clips of n revisits and one target at the centre instant (protocol ``centre``).

    With ``hr_root`` (the official ``demo.py``): the n revisits at their native size in, the HR image
    ``<hr_root>/<site>/<hr_name>`` at its own size as the target (``_adapted_x2/_x4/_x6.png``).
    Without it (self-supervised stand-in, module docstring): the revisits, cropped at the top left to a
    multiple of ``scale`` so that both grids line up, are PIL-bicubic downscaled by ``scale`` (LR side
    floor(side / scale)), and the target is the centre revisit so cropped, at native size (scale x LR size).

    Args: root, sites, n_revisits, selection, hr_root, hr_name as :class:`Sentinel2Revisits`;
        scale: the downscaling factor without ``hr_root`` (ignored with it).

    Items: ``{'name': site, 'lq': (n, h, w, 3) float32 [0, 1], 'gt': (1, H, W, 3) uint8, 'max_value': 255,
    'frame_names': [target file name]}``.
    """

    def __init__(self, root, sites=None, n_revisits=5, selection='official', hr_root=None,
                 hr_name='{site}_adapted_x4.png', scale=4):
        check_n_revisits(n_revisits, selection)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f'scale must be a positive integer, got {scale!r}')
        self.hr_root, self.scale = hr_root, scale
        self.sites = site_names(root, sites)
        self.revisits = [SiteRevisits(root, site, n_revisits, selection) for site in self.sites]
        if hr_root is not None:
            self.hr_paths = [hr_path(hr_root, hr_name, site) for site in self.sites]
        # for the header of test.py's tables
        self.description = (f'{n_revisits} revisits at native size, targets {hr_name}' if hr_root is not None else
                            f'{n_revisits} revisits PIL x{scale}, target the centre revisit (self-supervised stand-in)')

    def __len__(self):
        return len(self.sites)

    def __getitem__(self, index):
        site, revisits = self.sites[index], self.revisits[index]
        frames = revisits.read()
        if self.hr_root is not None:
            path = self.hr_paths[index]
            return {'name': site, 'lq': to_float(frames), 'gt': read_hr(path)[None], 'max_value': 255,
                    'frame_names': [path.name]}
        if min(frames.shape[1:3]) < self.scale:
            raise DataError(f'{site}: revisits of {frames.shape[2]}x{frames.shape[1]} are smaller than scale '
                            f'{self.scale}')
        sample = clip_sample(site, frames, [p.name for p in revisits.paths], {'type': 'PIL', 'scale': self.scale})
        centre = revisits.centre
        sample['gt'] = sample['gt'][centre:centre + 1]
        sample['frame_names'] = sample['frame_names'][centre:centre + 1]
        return sample
