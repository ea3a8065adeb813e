"""TMNet: Temporal Modulation Network for controllable space-time video super-resolution (Xu et al., CVPR 2021).

Re-implementation of CS-GangXu/TMNet @69ef5b3 ``models/modules/STVSR.py::TMNet`` (with ``convlstm.py`` and
``module_util.py``), a Zooming Slow-Mo whose frame interpolation is modulated by the instant. Attribute names
follow the official ones, so the authors' ``tmnet_single_frame.pth`` / ``tmnet_multiple_frames.pth`` (482
entries, 12,263,523 parameters, 492,672 of them in the temporal modulation blocks) load with ``strict=True``.
The head, PCD, ConvLSTM and reconstruction are Zooming Slow-Mo's (``models.zsm``, ``models.alignment``).

Pipeline, for ``n`` LR frames and ``k`` instants t_1 .. t_k in (0, 1) (x4, nf = 64):
1. Zooming Slow-Mo's features: conv + LeakyReLU, ``front_RBs`` residual blocks, the L1/L2/L3 pyramid.
2. Controllable feature interpolation: for every pair of neighbouring frames and every t_j, bidirectional
   PCD alignment whose offsets are modulated by the Temporal Modulation Blocks at t_j (direction 1) and
   1 - t_j (direction 2), each mapped to [-1, 1] as 2t - 1; a 1x1 fusion gives the feature at t_j. The
   sequence is [F1, I(t_1), .., I(t_k), F2, ..., Fn], T = n + (n - 1) k frames. Without instants (``t=None``)
   the modulation is skipped and k = 1: Zooming Slow-Mo's midpoint frame.
3. Locally-temporal Feature Comparison (LFC): each frame's neighbours (the sequence's ends repeated) are
   aligned to it by a modulated deformable conv each (``layersAtB`` from the previous, ``layersCtB`` from the
   next, 8 groups), the three are fused by 1x1 convs (``layersFusion``) and added to the frame.
4. Zooming Slow-Mo's bidirectional deformable ConvLSTM, ``back_RBs`` residual blocks plus a skip from the
   interpolated features of step 2, and the x4 upsampling head.

Training, as the official two stages (``finetune_tmb``): stage 1 (False, ``configs/TMNet_single_frame.yaml``)
trains on Vimeo-90K septuplets without instants, where the modulation blocks are not used; they are frozen
here, as they receive no gradient officially. Stage 2 (True, ``configs/TMNet_multiple_frames.yaml``) trains
only the modulation blocks (every other parameter frozen, as ``VideoSR_base_model.py`` does) on
septuplets whose first and last LR frames are the input and whose 5 inner frames are the instants 1/6 .. 5/6
(``data/Vimeo7_dataset.py`` with ``use_time``, on Adobe240fps officially).

Any instant (``any_time``): ``render`` runs the network once at the union of the fractional parts of the
requested instants (every pair is interpolated at all of them; the official forward takes one set of
instants for all pairs) and picks the frames asked for. ``predict`` and instants at halves only are the
network without instants, which equals it at t = 1/2 (the modulation vector is exactly 0 there).

Official behaviour, reproduced:
- The official test scripts (``utils/evaluation_*.py`` ``single_forward``) zero-pad the LR input at the
  bottom/right to a multiple of 4 and crop the output; here inside ``forward``, for any size. (The bare
  official forward needs multiples of 4: its L3 reshape has a fallback that only a few sides of 2 mod 4,
  e.g. 14, reach; there ours, padded first, gives the test scripts' result.)
- The LFC's deformable convs have 8 groups whatever ``groups``; the modulation blocks, LFC and HR layers are
  64 channels wide officially (``nf`` and ``hr_nf`` here).
- The output is not clamped; ``nframes`` is accepted (official signature) but unused.
Not reproduced: ``ConvLSTMCell.init_hidden`` calls ``.cuda()`` (the official network runs on CUDA only); the
zero state is made on the input's device. ``test_single_frame``'s ``load_state_dict(strict=False)`` is the
caller's business (the checkpoints load strictly).
"""
import math

import torch
import torch.nn as nn

from .alignment import BiDeformableConvLSTM, PCDAlign, lrelu
from .base import VideoNetwork
from .common import ModulatedDeformConv2d, cpu_channels_last, pad_to_multiple
from .registry import NETWORKS
from .zsm import ZSM_PCD, add_head, add_reconstruction, head_features, interleave, neighbour_pairs, upsample

LFC_GROUPS = 8  # deformable groups of the LFC, hard-coded officially


def official_instants(t):
    """t (b, k) in (0, 1) -> (t', t_back') (b, k, 1, 1, 1): 2t - 1 and 2(1 - t) - 1 as the official forward
    computes them (t / 0.5 - 1), the inputs of the two directions' modulation blocks."""
    return ((t / 0.5) - 1)[..., None, None, None], (((1 - t) / 0.5) - 1)[..., None, None, None]


@NETWORKS.register('TMNet')
class TMNet(VideoNetwork):
    """TMNet: ``forward(x, t=None)``, x (b, n, 3, h, w) RGB in [0, 1], n >= 2, any h, w; t None or (b, k) instants
    in (0, 1) between neighbouring frames -> (b, T, 3, 4h, 4w), T = 2n - 1 without t, n + (n - 1) k with it:
    frames [I1, I1+t_1, .., I1+t_k, I2, ..., In], nominally [0, 1], not clamped.

    Args (defaults = the official configuration ``TMNet(64, 7, 8, 5, 40)`` of the test scripts and configs):
        nf, nframes (unused), groups, front_RBs, back_RBs: as Zooming Slow-Mo's (``models.zsm.ZSM``).
        hr_nf: width of the HR-resolution layers (64 officially, whatever nf).
        finetune_tmb: the official training stage (module docstring): False trains all but the modulation
            blocks, True only them.
    """

    any_time = True
    size_multiple = 4

    def __init__(self, nf=64, nframes=7, groups=8, front_RBs=5, back_RBs=40, hr_nf=64, finetune_tmb=False):
        super().__init__()
        add_head(self, nf, front_RBs)
        self.pcd_align = PCDAlign(nf, groups, time_modulation=True, **ZSM_PCD)
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.ConvBLSTM = BiDeformableConvLSTM(nf, groups, **ZSM_PCD)
        add_reconstruction(self, nf, back_RBs, hr_nf)
        lfc_dcn = dict(deformable_groups=LFC_GROUPS, offset_name='conv_offset_mask')
        self.layersAtBOffset = nn.Sequential(nn.Conv2d(2 * nf, nf, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(nf, nf, 3, 1, 1))
        self.layersAtB = ModulatedDeformConv2d(nf, nf, 3, 1, 1, **lfc_dcn)
        self.layersCtBOffset = nn.Sequential(nn.Conv2d(2 * nf, nf, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(nf, nf, 3, 1, 1))
        self.layersCtB = ModulatedDeformConv2d(nf, nf, 3, 1, 1, **lfc_dcn)
        fusion = []
        for _ in range(3):
            fusion += [nn.Conv2d(3 * nf, 3 * nf, 1), nn.LeakyReLU(0.1)]
        self.layersFusion = nn.Sequential(*fusion, nn.Conv2d(3 * nf, nf, 1))
        self.finetune_tmb = finetune_tmb
        for name, p in self.named_parameters():
            p.requires_grad_(('TMB' in name) == finetune_tmb)

    def interpolate(self, levels, t):
        """Features (b, n-1, k, nf, h, w) between neighbouring frames at the k instants t (b, k), or at the
        unmodulated midpoint (k = 1) when t is None."""
        b, n = levels[0].shape[:2]
        fea1, fea2 = neighbour_pairs(levels)
        if t is None:
            missing = self.fusion(self.pcd_align(fea1, fea2))
            return missing.view(b, n - 1, 1, *missing.shape[1:])
        k = t.shape[1]
        # every pair at every instant in one batch, ordered (clip, pair, instant)
        fea1, fea2 = ([level.repeat_interleave(k, 0) for level in fea] for fea in (fea1, fea2))
        t, t_back = (x.expand(b, n - 1, k, 1, 1, 1).reshape(-1, 1, 1, 1) for x in official_instants(t.unsqueeze(1)))
        missing = self.fusion(self.pcd_align(fea1, fea2, t, t_back))
        return missing.view(b, n - 1, k, *missing.shape[1:])

    def compare(self, seq):
        """LFC: (b, T, nf, h, w) -> the comparison features added to each frame, same shape."""
        b, frames = seq.shape[:2]
        previous = [max(i - 1, 0) for i in range(frames)]
        following = [min(i + 1, frames - 1) for i in range(frames)]
        f0, f1, f2 = (x.flatten(0, 1) for x in (seq[:, previous], seq, seq[:, following]))
        a = lrelu(self.layersAtB(f0, self.layersAtBOffset(torch.cat([f0, f1], 1))))
        c = lrelu(self.layersCtB(f2, self.layersCtBOffset(torch.cat([f2, f1], 1))))
        return self.layersFusion(torch.cat([a, f1, c], 1)).view_as(seq)

    def forward(self, x, t=None):
        x, (h, w) = pad_to_multiple(x, self.size_multiple)
        levels = head_features(self, x)
        seq = interleave(levels[0], self.interpolate(levels, t))
        b, frames = seq.shape[:2]
        feats = self.ConvBLSTM(seq + self.compare(seq)).flatten(0, 1)
        out = upsample(self, self.recon_trunk(cpu_channels_last(feats)) + seq.flatten(0, 1))
        return out.view(b, frames, 3, *out.shape[-2:])[..., :4 * h, :4 * w]

    # --- the toolbox interface (models/base.py) -------------------------------------------------------

    def render(self, lq, times=None, size=None, chunk=None):
        """(b, n, 3, h, w) -> (b, m, 3, 4h, 4w) at the m ``times`` (input-frame units, 0 <= tau <= n - 1; default
        0, 1/2, ..., n - 1). One forward at the sorted union of the instants' fractional parts (see the module
        docstring); without fractions other than 1/2, ``predict``. ``size`` must be the x4 size; ``chunk`` unused."""
        n, h, w = lq.shape[1], lq.shape[-2], lq.shape[-1]
        if size is not None and tuple(size) != (4 * h, 4 * w):
            raise ValueError(f'TMNet makes {4 * w}x{4 * h} frames from {w}x{h} (x4), not {size[1]}x{size[0]}; '
                             'other sizes need a network with any_scale')
        if times is None:
            return self.predict(lq)
        places = []  # (pair or frame, fraction or None) per requested instant
        for tau in times:
            if not -1e-9 <= tau <= n - 1 + 1e-9:
                raise ValueError(f'TMNet renders instants between its {n} input frames, 0 .. {n - 1}, not {tau:g}')
            if abs(tau - round(tau)) < 1e-9:
                places.append((round(tau), None))
            else:
                places.append((math.floor(tau), round(tau - math.floor(tau), 9)))
        fractions = sorted({f for _, f in places if f is not None})
        if fractions in ([], [0.5]):
            out = self.predict(lq)
            index = [2 * k + (f is not None) for k, f in places]
        else:
            out = self(lq, torch.tensor(fractions, dtype=lq.dtype, device=lq.device).expand(lq.shape[0], -1))
            step = len(fractions) + 1
            index = [k * step + (0 if f is None else 1 + fractions.index(f)) for k, f in places]
        return out[:, index]

    def training_losses(self, lq, gt, extras, criterion):
        """Stage 1: ``predict`` against the 2n - 1 frames. Stage 2 (``finetune_tmb``): the first and last LR
        frames in, the T - 2 inner frames of gt (b, T, ...) at instants i / (T - 1), as the official use_time
        samples (T = 7: t = 1/6 .. 5/6)."""
        if not self.finetune_tmb:
            return super().training_losses(lq, gt, extras, criterion)
        frames = gt.shape[1]
        t = (torch.arange(1, frames - 1, dtype=lq.dtype, device=lq.device) / (frames - 1)).expand(lq.shape[0], -1)
        pred = self(lq[:, [0, -1]], t)
        return pred, {'pixel': criterion(pred, gt)}
