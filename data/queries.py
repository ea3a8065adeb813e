"""Training queries for continuous (implicit) networks such as Temporal-LIIF.

Such a network is not asked for whole frames during training: it is asked for the colour of a random subset
of ground-truth pixels, each at its own (t, y, x). A training sample of this kind is::

    {'lq': (n, 3, h, w) float32 in [0, 1],   the LR input frames
     'coord': (Q, 3) float32,                 (t, y, x) of each queried GT pixel (the network's convention)
     'cell': (Q, 3) float32,                  (cell_t, 2/H, 2/W) of an H x W GT patch (official cell_t = 2)
     'gt': (Q, 3) float32 in [0, 1],          the GT colour of each query
     'key': str}

The trainer passes ``coord`` and ``cell`` on to the network's adapter, which then answers the queries
instead of whole frames (``models/temporal_liif.py``), and the loss compares (b, Q, 3) with (b, Q, 3).
Coordinates follow ``models.temporal_liif``: each axis of n samples spans [-1, 1] with sample i at its cell
centre, and an instant tau in input-frame units (input frame k at tau = k) sits at -1 + (2 tau + 1) / n.
"""
import numpy as np
import torch

from models.temporal_liif import instant_to_t, make_coord

from .io import DataError


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
