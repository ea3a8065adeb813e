"""MSITF: Multi-Scale feature Interpolation and Temporal feature Fusion (carpenterChina/MSITF, 2024).

Re-implementation of the official ``models/modules/mystvsr07.py::Net`` (repository @007f117). The
official state_dict (432 entries, 5,585,611 parameters) loads with ``strict=True``, unconverted.

Pipeline, for ``n`` LR frames in and ``2n - 1`` HR frames out (x4):
1. Feature extraction: conv + LeakyReLU, zero padding of the features to a multiple of 8 (bottom/right),
   ``front_RBs`` residual blocks, an L1/L2/L3 pyramid (stride-2 convs).
2. Multi-scale feature interpolation: for each pair of neighbouring frames, a one-directional PCD
   alignment (modulated deformable convs, offsets bounded by 10*tanh) and a 1x1 fusion give the feature
   of the missing frame; the sequence is [F1, I12, F2, I23, ..., Fn].
3. Temporal feature fusion: a bidirectional deformable ConvLSTM (the same weights run forwards and
   backwards; h and c are aligned to the input by the same PCD before each step), then per-pixel
   multi-head attention over the ``2n - 1`` frames, added residually.
4. Reconstruction: a SwinV2 trunk (Swin2SR body) on each frame, crop of the padding, two
   conv + PixelShuffle(2) steps, HRconv, conv_last, plus a trilinear upsampling of the LR volume.

Quirks of the official code, reproduced by default:
- ``pcd_input='fea1'``: the deformable convs of every PCD alignment sample ``(fea1 + fea1) / 2``, i.e.
  the first frame's features alone, where ``(fea1 + fea2) / 2`` was surely meant (mystvsr07.py l.197,
  205, 215). The offsets still see both frames. ``pcd_input='mean'`` samples the average. Inside the
  ConvLSTM ``fea1`` is the current input and ``fea2`` the hidden (or cell) state, so with 'fea1' the
  state itself is never sampled, only its offsets are.
- The global residual is ``F.interpolate(..., mode='trilinear', align_corners=False)`` of the LR clip
  to (2n - 1, 4h, 4w): bilinear in space, and in time output frame 2k is *not* LR frame k (e.g. for
  n = 4 it is 0.07 * LR0 + 0.93 * LR1 at k = 1), the sampling grid of align_corners=False.
- The HR-resolution layers are 64 channels wide whatever ``nf`` (``upconv2`` outputs 64 * 4, ``HRconv``
  and ``conv_last`` take 64): ``hr_nf=64``.
- The output is not clamped.
- ``nframes`` and ``back_RBs`` are accepted (official signature) but unused: the output frame count
  follows the input, and the 40-RB trunk of ZSM was replaced by the SwinV2 trunk.
- The features are padded (zeros) before the residual blocks, so the padded border takes part in
  alignment and attention: the output at sizes that are not multiples of 8 depends on that padding,
  exactly as in the official network; at multiples of 8 nothing is padded.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .alignment import BiDeformableConvLSTM, PCDAlign, add_pyramid_convs, feature_pyramid, lrelu
from .base import VideoNetwork
from .common import ResidualBlockNoBN, make_layer, pad_to_multiple
from .registry import NETWORKS
from .swinv2 import Swin2SRBody
from .zsm import upsample


class TemporalAttention(nn.Module):
    """Multi-head self-attention over time at each pixel. (b, t, dim, h, w) -> (b, t, dim, h, w).

    Each pixel's ``t`` feature vectors are the tokens; qkv with bias, softmax(q k^T / sqrt(d)) v, ``proj``.
    """

    def __init__(self, dim, num_heads=8):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c, h, w = x.shape
        tokens = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        q, k, v = self.qkv(tokens).view(-1, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, t, c)
        return self.proj(out).view(b, h, w, t, c).permute(0, 3, 4, 1, 2)


@NETWORKS.register('MSITF')
class MSITF(VideoNetwork):
    """MSITF network: ``forward(x)``, x (b, n, 3, h, w) RGB in [0, 1] -> (b, 2n - 1, 3, 4h, 4w), RGB, nominally
    [0, 1], not clamped. Frames 0, 2, .., 2n - 2 of the output are the input instants. Any h, w.

    Official arguments (defaults = the official configuration, ``Net(64, 7, 8, 5, 40)``):
        nf: feature channels (also the SwinV2 trunk's width unless ``embed_dim`` is given).
        nframes: unused (number of output frames in the official training); kept for the signature.
        groups: deformable groups of every modulated deformable conv.
        front_RBs: residual blocks of the feature extraction.
        back_RBs: unused; the official trunk is the SwinV2 one, whatever its value.
    Options beyond the official code (defaults reproduce it):
        pcd_input: 'fea1' (official: the deformable convs sample the first frame's features only) or
            'mean' (the evidently intended (fea1 + fea2) / 2).
        embed_dim: SwinV2 trunk width (None: nf, official); ``upconv1`` takes that many channels.
        trunk_depths, trunk_heads: blocks and heads of each residual SwinV2 group (6 x depth 2, 4 heads).
        window_size: SwinV2 window (8); features are padded to a multiple of lcm(4, window_size),
            i.e. 8 officially (the pyramid needs 4).
        mlp_ratio: SwinV2 MLP expansion (2).
        img_size: feature size the trunk's stored shifted-window masks are built for (32, the LR training
            patch); other sizes compute their masks on the fly.
        drop_path_rate: stochastic depth of the trunk (0.1, Swin2SR's default, which MSITF keeps).
        hr_nf: width of the HR-resolution layers (64, hard-coded officially whatever nf).
    """

    def __init__(self, nf=64, nframes=7, groups=8, front_RBs=5, back_RBs=40, pcd_input='fea1', embed_dim=None,
                 trunk_depths=(2, 2, 2, 2, 2, 2), trunk_heads=(4, 4, 4, 4, 4, 4), window_size=8, mlp_ratio=2.,
                 img_size=32, drop_path_rate=0.1, hr_nf=64):
        super().__init__()
        if pcd_input not in ('fea1', 'mean'):
            raise ValueError(f"pcd_input must be 'fea1' or 'mean', got {pcd_input!r}")
        # one-directional PCD with offsets bounded by 10 tanh; 'fea1' samples the source pyramid alone
        pcd = {'directions': 1, 'offset_bound': 10., 'sample': 'src' if pcd_input == 'fea1' else 'mean'}
        embed_dim = embed_dim or nf
        self.size_multiple = math.lcm(4, window_size)
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.feature_extraction = make_layer(ResidualBlockNoBN, front_RBs, nf=nf)
        add_pyramid_convs(self, nf)
        self.pcd_align = PCDAlign(nf, groups, **pcd)
        self.fusion = nn.Conv2d(nf, nf, 1)
        self.ConvBLSTM = BiDeformableConvLSTM(nf, groups, **pcd)
        self.attn = TemporalAttention(nf, num_heads=8)
        self.recon_trunk = Swin2SRBody(in_chans=nf, embed_dim=embed_dim, depths=tuple(trunk_depths),
                                       num_heads=tuple(trunk_heads), window_size=window_size,
                                       mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, img_size=img_size)
        self.upconv1 = nn.Conv2d(embed_dim, nf * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, hr_nf * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.HRconv = nn.Conv2d(hr_nf, hr_nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(hr_nf, 3, 3, 1, 1)

    def forward(self, x):
        b, n, c, h, w = x.shape
        t = 2 * n - 1
        base = F.interpolate(x.transpose(1, 2), (t, 4 * h, 4 * w), mode='trilinear',
                             align_corners=False).transpose(1, 2)

        feat, _ = pad_to_multiple(lrelu(self.conv_first(x.reshape(b * n, c, h, w))), self.size_multiple)
        levels = feature_pyramid(self, self.feature_extraction(feat))
        levels = [l.view(b, n, *l.shape[1:]) for l in levels]

        # All n - 1 neighbouring pairs go through the alignment as one batch.
        fea1 = [l[:, :-1].flatten(0, 1) for l in levels]
        fea2 = [l[:, 1:].flatten(0, 1) for l in levels]
        l1 = levels[0]
        missing = self.fusion(self.pcd_align(fea1, fea2)).view(b, n - 1, *l1.shape[2:])
        seq = torch.cat([torch.stack([l1[:, :-1], missing], 2).flatten(1, 2), l1[:, -1:]], 1)

        feats = self.ConvBLSTM(seq)
        feats = feats + self.attn(feats)

        out = upsample(self, self.recon_trunk(feats.flatten(0, 1))[..., :h, :w])
        return out.view(b, t, 3, 4 * h, 4 * w) + base
