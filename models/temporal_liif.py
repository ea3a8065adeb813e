"""Temporal-LIIF: a local implicit image function over (t, y, x) (C. Gutiérrez, UAB bachelor thesis 2023).

Re-implementation of ggcr/Super-Temporal-LIIF @0253720 ``liif-3d/liif.py::LIIF`` as configured by
``liif-3d/configs/train-tfg-complete.yaml``: encoder ``edsr-baseline`` (``liif-3d/models/edsr.py``, every
convolution a 3x3x3 ``Conv3d``, no upsampler) and decoder ``mlp`` (``liif-3d/models/mlp.py``, 582 -> 256 x 4
-> 3). Attribute names follow the official ones, so its checkpoints (``sv_file['model']['sd']``) load with
``strict=True`` and no conversion. Officially it reads 5 Sentinel-2 revisits of a site and is queried at the
centre instant only (one HR image); here it serves as a video network as well.

The network is continuous in space and time: ``forward(inp, coord, cell)`` answers any set of (t, y, x)
queries (the official call, normalised values); ``render(lq, times, size)`` answers a whole video in the
toolbox layout, in chunks of queries; ``predict`` gives the toolbox's 4 -> 7 frames x4 call.

Coordinates (the official ``make_coord`` convention). Each axis of n samples spans [-1, 1] and sample i sits
at its cell centre -1 + (2i + 1) / n. For the time axis of n input frames, frame k (0-based) therefore sits
at t_k = -1 + (2k + 1) / n, and an instant tau in input-frame units (tau = 0.5: halfway between frames 0 and 1)
at -1 + (2 tau + 1) / n, linear in tau. The cell of a query is the size of its output pixel: (2/H, 2/W)
in y and x for an H x W output, and cell_t = 2 in time by default, whatever the instants. Every official
query had cell_t = 2 (``datasets/wrappers.py`` and ``demo.py`` compute 2/t_q for t_q = 1 queried slice), and
the alternative 2/m for m instants would make an instant's output depend on which other instants are
queried with it (and assumes instants on a make_coord grid of m, which the video instants are not).
``render(..., cell_t=)`` sets another value; the toolbox-trained network learns with the default.

Quirks of the official code kept here:
- ``MeanShift`` layers (``encoder.sub_mean``, ``encoder.add_mean``) hold 24 frozen parameters that the
  forward never applies; their weight is 4-D (3, 3, 1, 1) although the class is a ``Conv3d``.
- The 3x3 feature unfold is 2-D, per time slice (zero padded in y and x, not across time): the thesis
  describes a 3x3xt neighbourhood.
- The local ensemble shifts every query by +1e-6 on all three axes whichever corner it looks for, then
  clamps it to [-1 + 1e-6, 1 - 1e-6]; the relative coordinate is taken from the unshifted query.

Corrected: ``local_ensemble=False`` crashes in the official code (it unpacks three lists into four
names); here it decodes the single nearest feature with weight 1, as the 2-D LIIF does.
"""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.coords import make_coord, pixel_queries, video_queries

from .base import VideoNetwork
from .common import FrameConv3d
from .registry import NETWORKS

QUERY_CHUNK = 8192  # queries decoded at a time by render (see its docstring)


def nearest_index(coord, n):
    """Index of the cell of n holding each coordinate: what ``F.grid_sample(mode='nearest',
    align_corners=False)`` looks up (unnormalise, then round half to even)."""
    return torch.round(((coord + 1) * n - 1) / 2).long()


class MeanShift(nn.Module):
    """EDSR's mean-shift layer, frozen and never applied by the official forward: kept only so that
    checkpoints load. Weight identity (3, 3, 1, 1), bias sign * (0.4488, 0.4371, 0.4040)."""

    def __init__(self, sign=-1):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(3).view(3, 3, 1, 1), requires_grad=False)
        self.bias = nn.Parameter(sign * torch.tensor((0.4488, 0.4371, 0.4040)), requires_grad=False)


class ResBlock(nn.Module):
    """conv3d-ReLU-conv3d, scaled by ``res_scale``, plus identity: (b, c, t, h, w) -> same."""

    def __init__(self, n_feats, res_scale=1):
        super().__init__()
        self.body = nn.Sequential(FrameConv3d(n_feats, n_feats, 3, padding=1), nn.ReLU(True),
                                  FrameConv3d(n_feats, n_feats, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x).mul(self.res_scale) + x


class EDSRBaseline3D(nn.Module):
    """EDSR-baseline without upsampler, every conv 3x3x3: (b, 3, t, h, w) -> (b, n_feats, t, h, w)."""

    def __init__(self, n_resblocks=16, n_feats=64, res_scale=1):
        super().__init__()
        self.sub_mean = MeanShift(sign=-1)
        self.add_mean = MeanShift(sign=1)
        self.head = nn.Sequential(FrameConv3d(3, n_feats, 3, padding=1))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  FrameConv3d(n_feats, n_feats, 3, padding=1))

    def forward(self, x):
        x = self.head(x)
        return self.body(x) + x


class MLP(nn.Module):
    """Linear-ReLU stack on the last dimension: (..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim, out_dim, hidden_list):
        super().__init__()
        layers, last = [], in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU(inplace=True)]  # in place: a linear output is fresh
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


@NETWORKS.register('TemporalLIIF')
class TemporalLIIF(VideoNetwork):
    """Temporal-LIIF: 3-D EDSR features of the LR frames, decoded at continuous (t, y, x) by an MLP.

    Args (official names; defaults = the official configuration, 4,004,315 parameters):
        n_resblocks, n_feats, res_scale: encoder depth, width and residual scale (edsr-baseline: 16, 64, 1).
        hidden_list: MLP hidden sizes (official [256, 256, 256, 256]).
        local_ensemble: blend the 8 (t, y, x) neighbouring features, each weighted by the volume between the
            query and the opposite neighbour (official True; False is the corrected single-feature variant).
        feat_unfold: each feature carries its 3x3 spatial neighbourhood (official True).
        cell_decode: the query cell is an MLP input (official True).

    ``forward(inp, coord, cell)``, the official call:
        inp (b, 3, T, h, w): T LR frames, RGB in [0, 1] normalised as (x - 0.5) / 0.5;
        coord (b, Q, 3): queries (t, y, x), each in [-1, 1] (see the module docstring);
        cell (b, Q, 3): (cell_t, 2/H, 2/W) for H x W output pixels (official cell_t = 2).
        Returns (b, Q, 3), normalised: rgb = out * 0.5 + 0.5.
    """

    def __init__(self, n_resblocks=16, n_feats=64, res_scale=1, hidden_list=(256, 256, 256, 256),
                 local_ensemble=True, feat_unfold=True, cell_decode=True):
        super().__init__()
        self.local_ensemble, self.feat_unfold, self.cell_decode = local_ensemble, feat_unfold, cell_decode
        self.encoder = EDSRBaseline3D(n_resblocks, n_feats, res_scale)
        in_dim = n_feats * (9 if feat_unfold else 1) + 3 + (3 if cell_decode else 0)
        self.imnet = MLP(in_dim, 3, list(hidden_list))

    any_time = any_scale = True

    def forward(self, inp, coord, cell):
        return self.query(self.encode(inp), coord, cell)

    def predict(self, lq, extras=None):
        """lq (b, n, 3, h, w) in [0, 1] -> (b, 2n-1, 3, 4h, 4w): instants 0, 0.5, ..., n-1 at 4x the size.

        With ``extras['coord']`` and ``extras['cell']`` (b, Q, 3) (the any-scale training samples of
        ``utils/coords.py``) it answers those queries instead: (b, Q, 3) in [0, 1], the official training
        call. With gradients the whole video goes through the official forward in one call, so that
        DistributedDataParallel sees the call (chunks would save no memory there, all activations being
        kept); without, it is ``render``ed in chunks. Training on whole frames therefore decodes every pixel
        of all 2n-1 GT frames of the patch, where the official training decoded one 128x128 slice at the
        centre instant (``Vimeo90KAnyScale`` and the Sentinel-2 sets make query samples instead).
        """
        extras = extras or {}
        if 'coord' in extras:
            return self(normalise(lq), extras['coord'], extras['cell']) * 0.5 + 0.5
        b, n, _, h, w = lq.shape
        times, size = [i / 2 for i in range(2 * n - 1)], (self.scale * h, self.scale * w)
        if not torch.is_grad_enabled():
            return self.render(lq, times, size)
        coord, cell = video_queries(n, times, size, device=lq.device)
        return to_video(self(normalise(lq), coord.expand(b, -1, 3), cell.expand(b, -1, 3)), len(times), size)

    def training_batch(self, lq, gt, queries=4096):
        """``queries`` random (frame, pixel) queries of each clip's 2n-1 GT frames, as ``Vimeo90KAnyScale``
        makes them (its ``sample_q`` default): (b, Q, 3) colours, {'coord', 'cell'}."""
        n = lq.shape[1]
        times = [k / 2 for k in range(2 * n - 1)]
        samples = [pixel_queries(g.cpu(), times, n, queries) for g in gt]
        coord, cell, values = (torch.stack([s[i] for s in samples]).to(gt.device) for i in range(3))
        return values, {'coord': coord, 'cell': cell}

    def encode(self, inp):
        """(b, 3, T, h, w) normalised -> features (b, n_feats, T, h, w) (official ``gen_feat``, which
        keeps them on the module; here they are returned, so that queries can come in chunks)."""
        return self.encoder(inp)

    def query(self, feat, coord, cell=None):
        """Decode features (b, c, T, h, w) at coord (b, Q, 3) with cell (b, Q, 3) -> (b, Q, 3) normalised
        (official ``query_rgb``).

        The MLP's first layer is linear in the unfolded 3x3 neighbourhood of the looked-up feature, so its
        feature part is applied once per feature position (a 3x3 convolution of each time slice, zero
        padded as ``F.unfold``) and gathered per query, instead of gathering 9c values per query and
        multiplying them 8 times (once per ensemble corner): the same function, 40 % fewer multiply-adds
        for the official network, and no (Q, 9c) unfolded copy."""
        b, c, t, h, w = feat.shape
        q = coord.shape[1]
        sizes = coord.new_tensor((t, h, w))
        k = 3 if self.feat_unfold else 1
        first, rest = self.imnet.layers[0], self.imnet.layers[1:]
        hidden = first.out_features
        per_voxel = F.conv2d(feat.transpose(1, 2).reshape(b * t, c, h, w),
                             first.weight[:, :c * k * k].view(hidden, c, k, k), padding=k // 2)
        table = per_voxel.view(b, t, hidden, h * w).transpose(2, 3).reshape(b, t * h * w, hidden)
        w_rest = first.weight[:, c * k * k:]  # rel_coord (3), then rel_cell (3) with cell_decode
        batch = torch.arange(b, device=feat.device).unsqueeze(1)
        centres = [make_coord(n, feat.device).to(coord.dtype) for n in (t, h, w)]
        rel_cell = cell * sizes if self.cell_decode else None

        if self.local_ensemble:
            corners, eps_shift = list(itertools.product((-1, 1), repeat=3)), 1e-6
        else:
            corners, eps_shift = [(0, 0, 0)], 0
        preds, areas = [], []
        for corner in corners:
            # half a cell towards the corner (radius 1/n on an axis of n cells)
            shift = coord.new_tensor([v / n + eps_shift for v, n in zip(corner, (t, h, w))])
            shifted = (coord + shift).clamp(-1 + 1e-6, 1 - 1e-6)
            index = [nearest_index(shifted[..., i], n) for i, n in enumerate((t, h, w))]
            q_coord = torch.stack([centres[i][index[i]] for i in range(3)], -1)
            rel_coord = (coord - q_coord) * sizes
            # float32 coordinates meet float16/bfloat16 features in the first layer
            tail = torch.cat([rel_coord] + ([rel_cell] if self.cell_decode else []), dim=-1).to(table.dtype)
            x = torch.addmm(first.bias, tail.view(b * q, -1), w_rest.t()).view(b, q, hidden)
            x = x.add_(table[batch, (index[0] * h + index[1]) * w + index[2]])
            preds.append(rest(x))
            areas.append(torch.abs(rel_coord[..., 0] * rel_coord[..., 1] * rel_coord[..., 2]) + 1e-9)
        if not self.local_ensemble:
            return preds[0]

        tot_area = torch.stack(areas).sum(dim=0)
        out = 0
        # corner i is weighted by the volume of the opposite corner 7 - i (itertools.product order)
        for pred, area in zip(preds, reversed(areas)):
            out = out + pred * (area / tot_area).unsqueeze(-1)
        return out

    def render(self, lq, times=None, size=None, chunk=None, cell_t=2.0):
        """A video at any instants and size, the queries decoded ``chunk`` at a time.

        lq (b, n, 3, h, w) in [0, 1]; ``times``: m instants in input-frame units (default 0, 0.5, ..., n-1,
        i.e. 2n-1 frames); ``size``: output (H, W) (default (4h, 4w)); ``cell_t``: see the module docstring.
        Returns (b, m, 3, H, W) in [0, 1] (unclamped).

        Chunks run one after another, so peak memory is the encoder's or one chunk's. Smaller chunks cost
        little: 8192 queries (the default) decode faster on the CPU than 65536, whose tensors (tens of MB
        each) the C allocator maps and unmaps from the OS at every step (a third of the time went to page
        faults at 32x32 -> 7 x 128x128).
        """
        b, n, _, h, w = lq.shape
        times = [i / 2 for i in range(2 * n - 1)] if times is None else list(times)
        size = (4 * h, 4 * w) if size is None else tuple(size)
        chunk = chunk or QUERY_CHUNK
        feat = self.encode(normalise(lq))
        # coordinates in float32, or float64 for a float64 network (never coarser: bf16 would misplace queries)
        dtype = torch.promote_types(torch.float32, lq.dtype)
        coord, cell = (x.to(dtype) for x in video_queries(n, times, size, cell_t, lq.device))
        out = torch.cat([self.query(feat, coord[i:i + chunk].expand(b, -1, 3), cell[i:i + chunk].expand(b, -1, 3))
                         for i in range(0, len(coord), chunk)], dim=1)
        return to_video(out, len(times), size)


def normalise(lq):
    """(b, n, 3, h, w) in [0, 1] -> the official input (b, 3, n, h, w), (x - 0.5) / 0.5."""
    return (lq.transpose(1, 2) - 0.5) / 0.5


def to_video(out, m, size):
    """(b, m*H*W, 3) normalised -> (b, m, 3, H, W) in [0, 1]."""
    return (out * 0.5 + 0.5).view(out.shape[0], m, *size, 3).permute(0, 1, 4, 2, 3)
