"""Coordinates of continuous (implicit) networks: where a query sits in (t, y, x), and query sets.

The convention is the official Temporal-LIIF ``make_coord``: each axis of n samples spans [-1, 1] and sample i
sits at its cell centre -1 + (2i + 1) / n; an instant tau in input-frame units (input frame k at tau = k) of
n input frames sits at -1 + (2 tau + 1) / n. ``models/temporal_liif.py`` answers such queries, and the any-scale
datasets of ``data/`` make them for training: both import them from here.

Training queries. Such a network is not asked for whole frames during training: it is asked for the colour of a
random subset of ground-truth pixels, each at its own (t, y, x). A training sample of this kind is::

    {'lq': (n, 3, h, w) float32 in [0, 1],   the LR input frames
     'coord': (Q, 3) float32,                 (t, y, x) of each queried GT pixel
     'cell': (Q, 3) float32,                  (cell_t, 2/H, 2/W) of an H x W GT patch (official cell_t = 2)
     'gt': (Q, 3) float32 in [0, 1],          the GT colour of each query
     'key': str}

The trainer passes ``coord`` and ``cell`` to the network with the LR frames, and the loss compares (b, Q, 3)
with (b, Q, 3).
"""
import numpy as np
import torch

from .errors import DataError


def make_coord(n, device=None):
    """Centres of n cells spanning [-1, 1]: -1 + (2i + 1) / n, float32, with the official arithmetic
    (``utils.make_coord``), so that relative coordinates agree with it to the bit."""
    r = 1 / n
    return -1 + r + (2 * r) * torch.arange(n, device=device).float()


def instant_to_t(times, n):
    """Instants in input-frame units (frame k at k) -> the t coordinate over n input frames."""
    return [-1 + (2 * tau + 1) / n for tau in times]


def video_queries(n, times, size, cell_t=2.0, device=None):
    """Queries of every pixel of an output video: ``coord`` (m*H*W, 3) over (t, y, x), instants outer,
    rows, then columns (the official flattening), and ``cell`` (m*H*W, 3) = (cell_t, 2/H, 2/W), an expanded
    view. ``times`` are m instants in input-frame units (n input frames), ``size`` = (H, W)."""
    height, width = size
    t = torch.tensor(instant_to_t(times, n), dtype=torch.float32, device=device)
    m, hw = len(t), height * width
    yx = torch.stack(torch.meshgrid(make_coord(height, device), make_coord(width, device), indexing='ij'), -1)
    coord = torch.cat((t.view(m, 1, 1).expand(m, hw, 1), yx.view(1, hw, 2).expand(m, hw, 2)), -1)
    cell = torch.tensor((cell_t, 2 / height, 2 / width), device=device)
    return coord.view(m * hw, 3), cell.expand(m * hw, 3)


def pixel_queries(gt, times, n_inputs, sample_q=None, cell_t=2.0, key='sample', rng=np.random):
    """Queries over the pixels of GT frames.

    gt: (m, 3, H, W) float tensor, GT frames at ``times`` (m instants in input-frame units, n_inputs LR
    frames); sample_q: how many (frame, pixel) pairs to draw without replacement among the m*H*W, or None
    for all of them in order (instants outer, rows, then columns). Returns ``coord``, ``cell``, ``values``,
    each (Q, 3) float32.
    """
    m, _, height, width = gt.shape
    if len(times) != m:
        raise ValueError(f'{len(times)} instants for {m} GT frames')
    total = m * height * width
    if sample_q is None:
        index = torch.arange(total)
    else:
        if sample_q > total:
            raise DataError(f'{key}: sample_q={sample_q} queries asked of {m} GT frames of {width}x{height} '
                            f'({total} pixels); lower sample_q or raise the patch size')
        index = torch.from_numpy(rng.choice(total, sample_q, replace=False))
    frame, pixel = index // (height * width), index % (height * width)
    row, col = pixel // width, pixel % width
    t = torch.tensor(instant_to_t(times, n_inputs), dtype=torch.float32)
    coord = torch.stack((t[frame], make_coord(height)[row], make_coord(width)[col]), dim=-1)
    cell = torch.tensor((cell_t, 2 / height, 2 / width), dtype=torch.float32).expand(len(index), 3).clone()
    values = gt[frame, :, row, col]
    return coord, cell, values
