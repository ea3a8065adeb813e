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

from .common import ModulatedDeformConv2d, ResidualBlockNoBN, make_layer, pad_to_multiple
from .registry import NETWORKS
from .swinv2 import Swin2SRBody


def lrelu(x):
    return F.leaky_relu(x, 0.1)


def up2(x):
    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)


def feature_pyramid(m, l1):
    """L1 (b, c, h, w) -> [L1, L2 (h/2), L3 (h/4)] with ``m``'s ``fea_L2_conv1/2`` and ``fea_L3_conv1/2``.

    The network and each Easy-PCD own such a pyramid under these official names.
    """
    l2 = lrelu(m.fea_L2_conv2(lrelu(m.fea_L2_conv1(l1))))
    l3 = lrelu(m.fea_L3_conv2(lrelu(m.fea_L3_conv1(l2))))
    return [l1, l2, l3]


def add_pyramid_convs(m, nf):
    m.fea_L2_conv1 = nn.Conv2d(nf, nf, 3, 2, 1)
    m.fea_L2_conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
    m.fea_L3_conv1 = nn.Conv2d(nf, nf, 3, 2, 1)
    m.fea_L3_conv2 = nn.Conv2d(nf, nf, 3, 1, 1)


class PCDAlign(nn.Module):
    """One-directional Pyramid, Cascading and Deformable alignment (the ``_1`` half of ZSM's PCD_Align).

    ``forward(fea1, fea2)``: two pyramids [L1 (b, nf, h, w), L2 (h/2), L3 (h/4)] -> (b, nf, h, w).
    Offsets come from both frames, coarse to fine; the deformable convs sample ``fea1`` (official) or
    ``(fea1 + fea2) / 2`` (``pcd_input='mean'``), see the module docstring.
    """

    def __init__(self, nf=64, groups=8, pcd_input='fea1'):
        super().__init__()
        if pcd_input not in ('fea1', 'mean'):
            raise ValueError(f"pcd_input must be 'fea1' or 'mean', got {pcd_input!r}")
        self.pcd_input = pcd_input

        def dcn():
            return ModulatedDeformConv2d(nf, nf, 3, 1, 1, deformable_groups=groups, offset_in_channels=nf,
                                         offset_name='conv_offset', offset_bound=10.)

        self.L3_offset_conv1_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.L3_offset_conv2_1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.L3_dcnpack_1 = dcn()
        self.L2_offset_conv1_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.L2_offset_conv2_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.L2_offset_conv3_1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.L2_dcnpack_1 = dcn()
        self.L2_fea_conv_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.L1_offset_conv1_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.L1_offset_conv2_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.L1_offset_conv3_1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.L1_dcnpack_1 = dcn()
        self.L1_fea_conv_1 = nn.Conv2d(nf * 2, nf, 3, 1, 1)

    def forward(self, fea1, fea2):
        x = fea1 if self.pcd_input == 'fea1' else [(a + b) / 2 for a, b in zip(fea1, fea2)]
        l3_off = lrelu(self.L3_offset_conv1_1(torch.cat([fea1[2], fea2[2]], 1)))
        l3_off = lrelu(self.L3_offset_conv2_1(l3_off))
        l3_fea = lrelu(self.L3_dcnpack_1(x[2], l3_off))

        l2_off = lrelu(self.L2_offset_conv1_1(torch.cat([fea1[1], fea2[1]], 1)))
        l2_off = lrelu(self.L2_offset_conv2_1(torch.cat([l2_off, up2(l3_off) * 2], 1)))
        l2_off = lrelu(self.L2_offset_conv3_1(l2_off))
        l2_fea = self.L2_dcnpack_1(x[1], l2_off)
        l2_fea = lrelu(self.L2_fea_conv_1(torch.cat([l2_fea, up2(l3_fea)], 1)))

        l1_off = lrelu(self.L1_offset_conv1_1(torch.cat([fea1[0], fea2[0]], 1)))
        l1_off = lrelu(self.L1_offset_conv2_1(torch.cat([l1_off, up2(l2_off) * 2], 1)))
        l1_off = lrelu(self.L1_offset_conv3_1(l1_off))
        l1_fea = self.L1_dcnpack_1(x[0], l1_off)
        return self.L1_fea_conv_1(torch.cat([l1_fea, up2(l2_fea)], 1))


class EasyPCD(nn.Module):
    """Pyramid of both inputs, :class:`PCDAlign`, 1x1 ``fusion``: (b, nf, h, w) x 2 -> (b, nf, h, w), h, w % 4 == 0."""

    def __init__(self, nf=64, groups=8, pcd_input='fea1'):
        super().__init__()
        add_pyramid_convs(self, nf)
        self.pcd_align = PCDAlign(nf, groups, pcd_input)
        self.fusion = nn.Conv2d(nf, nf, 1)

    def forward(self, f1, f2):
        b = f1.shape[0]
        levels = feature_pyramid(self, torch.cat([f1, f2], 0))
        return self.fusion(self.pcd_align([l[:b] for l in levels], [l[b:] for l in levels]))


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell: one 3x3 conv on [input, h] gives the i, f, o, g gates. -> (h', c'), each (b, hidden, h, w)."""

    def __init__(self, input_dim, hidden_dim, kernel_size=3):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size, 1, kernel_size // 2)

    def forward(self, x, state):
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden_dim, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class DeformableConvLSTM(nn.Module):
    """One-layer ConvLSTM whose h and c are aligned to the current input (Easy-PCD) before each step.

    ``forward(x)``: (b, t, nf, h, w) -> hidden states (b, t, nf, h, w); the state starts at zero.
    ``cell_list`` holds the one cell (the official class allowed several layers; MSITF uses one).
    """

    def __init__(self, nf=64, groups=8, pcd_input='fea1'):
        super().__init__()
        self.cell_list = nn.ModuleList([ConvLSTMCell(nf, nf)])
        self.pcd_h = EasyPCD(nf, groups, pcd_input)
        self.pcd_c = EasyPCD(nf, groups, pcd_input)

    def forward(self, x):
        b, t, c, h, w = x.shape
        state_h = state_c = x.new_zeros(b, c, h, w)
        outputs = []
        for i in range(t):
            frame = x[:, i]
            state_h, state_c = self.cell_list[0](frame, (self.pcd_h(frame, state_h), self.pcd_c(frame, state_c)))
            outputs.append(state_h)
        return torch.stack(outputs, 1)


class BiDeformableConvLSTM(nn.Module):
    """The same :class:`DeformableConvLSTM` over the sequence and its reverse, outputs fused by a 1x1 conv.

    ``forward(x)``: (b, t, nf, h, w) -> (b, t, nf, h, w). Both directions run as one batch (same weights).
    """

    def __init__(self, nf=64, groups=8, pcd_input='fea1'):
        super().__init__()
        self.forward_net = DeformableConvLSTM(nf, groups, pcd_input)
        self.conv_1x1 = nn.Conv2d(2 * nf, nf, 1)

    def forward(self, x):
        b, t, c, h, w = x.shape
        both = self.forward_net(torch.cat([x, x.flip(1)], 0))
        fused = self.conv_1x1(torch.cat([both[:b], both[b:].flip(1)], 2).view(b * t, 2 * c, h, w))
        return fused.view(b, t, c, h, w)


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
class MSITF(nn.Module):
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
        embed_dim = embed_dim or nf
        self.pad_multiple = math.lcm(4, window_size)
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.feature_extraction = make_layer(ResidualBlockNoBN, front_RBs, nf=nf)
        add_pyramid_convs(self, nf)
        self.pcd_align = PCDAlign(nf, groups, pcd_input)
        self.fusion = nn.Conv2d(nf, nf, 1)
        self.ConvBLSTM = BiDeformableConvLSTM(nf, groups, pcd_input)
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

        feat, _ = pad_to_multiple(lrelu(self.conv_first(x.reshape(b * n, c, h, w))), self.pad_multiple)
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

        out = self.recon_trunk(feats.flatten(0, 1))[..., :h, :w]
        out = lrelu(self.pixel_shuffle(self.upconv1(out)))
        out = lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(lrelu(self.HRconv(out)))
        return out.view(b, t, 3, 4 * h, 4 * w) + base
