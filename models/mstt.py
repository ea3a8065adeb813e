"""MSTT: multi-scale spatial-temporal transformer for satellite-video STVSR (Xiao et al., JAG 2022).

Re-implements ``MSTTr`` of XY-boy/MSTT-STVSR @62f1b7a (``models/Model_arch.py``, with
``Spatial_Temporal_Transformer.py::MSTT`` and ``base_networks.py::my_align``). Attribute names
follow the official ones, so official checkpoints load with ``strict=True`` as they are.

Pipeline for n LR frames (the official stack is hard-coded for n = 4; any n >= 2 works here and
gives 2n - 1 frames, identical to the official for n = 4):

1. ``conv_first`` + LReLU(0.1) + ``front_RBs`` residual blocks per frame (no feature pyramid).
2. For each adjacent pair (i, i+1), the missing frame's feature couples deformable alignment and
   optical flow: ``MSD_align`` (multi-scale deformable alignment: offset features from parallel
   3x3, 5x5, 7x7 convs, one modulated deformable conv with ``groups`` groups) aligns F_i; flows warp
   F_i+1 onto frame i and F_i onto frame i+1; ``fusion`` (1x1, used twice) and ``blending`` (1x1)
   merge them.
3. ``MSST_former``: the 2n-1 features, encoded at half resolution, go through ``stack_nums``
   transformer blocks whose heads each take a channel split with their own non-overlapping patch
   size (40, 20, 10, 5) and attend over the patches of all frames; decoded back, tanh, added to the
   input features.
4. ``back_RBs`` residual blocks, two pixel-shuffle x2 stages, ``HRconv``, ``conv_last``; no global
   skip connection.

Official quirks, reproduced by default:

- ``MSD_align(F_i+1, F_i)`` is computed for every pair and never used; it is skipped here (no
  effect on outputs or gradients).
- The attention returns ``x + attn`` and the transformer block adds ``x`` again: ``2x + attn``
  (``attn_residual_twice=False`` gives the usual ``x + attn``).
- ``flow_warp`` normalises the grid with (W - 1) but samples with align_corners=False, a
  half-pixel stretch (see ``models.flow.flow_warp``; ``warp_align_corners_quirk=False`` removes it).
- The transformer is built with ``init_weights=True`` that is never applied, and MSTTr calls no
  init: every conv keeps PyTorch's default init, except the residual blocks (Kaiming x 0.1, the
  ZSM block the official code imports) and the deformable conv (uniform weight, zero bias, zero
  offset conv).
- The flows are full-interval LR-pixel flows between the two input frames, not halved for the
  middle frame.

The official LR size must be a multiple of 80 (the transformer runs at H/2 x W/2 with patches up
to 40). Here frames and flows are padded inside by edge replication to a multiple of
``2 * lcm(patchsize)`` and the output cropped back; sizes that are already multiples run exactly
the official computation. Replication (not reflection) because it is valid for any pad size and
because a replicated flow field stays a plausible motion, while reflected flows would need their
sign flipped.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import VideoNetwork
from .common import ModulatedDeformConv2d, ResidualBlockNoBN, cpu_channels_last, make_layer, pad_to_multiple
from .flow import FlowInputs, flow_warp
from .registry import NETWORKS
from .zsm import add_reconstruction, upsample


class MultiScaleDeformableAlign(nn.Module):
    """The official ``my_align``: align ``neighbor`` using offsets from cat(neighbor, target).

    (b, nf, h, w) x 2 -> (b, nf, h, w).
    """

    def __init__(self, nf=64, groups=8):
        super().__init__()
        self.offset_conv1 = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.mul_scale1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.mul_scale2 = nn.Conv2d(nf, nf, 5, 1, 2)
        self.mul_scale3 = nn.Conv2d(nf, nf, 7, 1, 3)
        self.offset_conv2 = nn.Conv2d(3 * nf, nf, 3, 1, 1)
        self.dcnpack = ModulatedDeformConv2d(nf, nf, 3, 1, 1, deformable_groups=groups, offset_in_channels=nf)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, neighbor, target):
        offset1 = self.lrelu(self.offset_conv1(torch.cat((neighbor, target), dim=1)))
        scales = [self.lrelu(conv(offset1)) for conv in (self.mul_scale1, self.mul_scale2, self.mul_scale3)]
        offset2 = self.lrelu(self.offset_conv2(torch.cat(scales, dim=1)))
        return self.lrelu(self.dcnpack(neighbor, offset1 + offset2))


class MultiScaleAttention(nn.Module):
    """Multi-head attention where head k takes channel split k and patches of ``patchsize[k]``.

    (b * t, channel, h, w) -> (b * t, channel, h, w), the attention output alone (the caller adds
    the residual). A head's tokens are all t * (h/p) * (w/p) non-overlapping p x p patches of all
    frames, each flattened to (channel / heads) * p * p values; full softmax(QK^T / sqrt(d)) V.
    """

    def __init__(self, patchsize=(40, 20, 10, 5), channel=256):
        super().__init__()
        if channel % len(patchsize):
            raise ValueError(f'channel {channel} must split evenly over {len(patchsize)} heads')
        self.patchsize = tuple(patchsize)
        # Registration order query, value, key is the official state_dict order.
        self.query_embedding = nn.Conv2d(channel, channel, 1)
        self.value_embedding = nn.Conv2d(channel, channel, 1)
        self.key_embedding = nn.Conv2d(channel, channel, 1)
        self.output_linear = nn.Sequential(nn.Conv2d(channel, channel, 3, padding=1),
                                           nn.LeakyReLU(0.2, inplace=True))

    def forward(self, x, b):
        bt, c, h, w = x.shape
        t, heads = bt // b, len(self.patchsize)
        d = c // heads
        q, k, v = (emb(x).chunk(heads, dim=1)
                   for emb in (self.query_embedding, self.key_embedding, self.value_embedding))
        out = []
        for p, qh, kh, vh in zip(self.patchsize, q, k, v):
            oh, ow = h // p, w // p

            def tokens(z):
                z = z.reshape(b, t, d, oh, p, ow, p).permute(0, 1, 3, 5, 2, 4, 6)
                return z.reshape(b, 1, t * oh * ow, d * p * p)

            # one head of 4-d tensors (b, 1, tokens, dim): the form every SDPA kernel and ONNX translation takes
            y = F.scaled_dot_product_attention(tokens(qh), tokens(kh), tokens(vh))
            out.append(y.view(b, t, oh, ow, d, p, p).permute(0, 1, 4, 2, 5, 3, 6).reshape(bt, d, h, w))
        return self.output_linear(torch.cat(out, dim=1))


class FeedForward(nn.Module):
    """Dilated 3x3 conv + 3x3 conv, LReLU(0.2) after each: (n, c, h, w) -> (n, c, h, w)."""

    def __init__(self, channel=256):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channel, channel, 3, padding=2, dilation=2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channel, channel, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, x):
        return self.conv(x)


class TransformerBlock(nn.Module):
    """(b * t, channel, h, w) -> same; ``attn_residual_twice`` reproduces the official 2x + attn."""

    def __init__(self, patchsize=(40, 20, 10, 5), channel=256, attn_residual_twice=True):
        super().__init__()
        self.attention = MultiScaleAttention(patchsize, channel)
        self.feed_forward = FeedForward(channel)
        self.attn_residual_twice = attn_residual_twice

    def forward(self, x, b):
        # Official: MultiHeadedAttention returns x + attn, and the block adds x once more.
        x = (2 * x if self.attn_residual_twice else x) + self.attention(x, b)
        return x + self.feed_forward(x)


class UpsampleConv(nn.Module):
    """Bilinear x2 (align_corners=True) then a conv: (n, cin, h, w) -> (n, cout, 2h, 2w)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True))


class SpatialTemporalTransformer(nn.Module):
    """The official ``MSTT`` (``MSST_former``): (b, t, nf, h, w) -> (b, t, nf, h, w), h and w even.

    Encoder to ``channel`` features at h/2 x w/2 (each ``patchsize`` must divide h/2 and w/2),
    ``stack_nums`` transformer blocks, decoder back to nf at h x w, tanh, plus the input.
    """

    def __init__(self, nf=64, patchsize=(40, 20, 10, 5), channel=256, stack_nums=1, attn_residual_twice=True):
        super().__init__()
        self.transformer = nn.ModuleList(TransformerBlock(patchsize, channel, attn_residual_twice)
                                         for _ in range(stack_nums))
        self.encoder = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(nf, channel // 2, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channel // 2, channel, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
        self.decoder = nn.Sequential(
            UpsampleConv(channel, channel // 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channel // 2, nf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, feats):
        b, t, c, h, w = feats.shape
        x = self.encoder(feats.reshape(b * t, c, h, w))
        for block in self.transformer:
            x = block(x, b)
        return feats + torch.tanh(self.decoder(x)).view(b, t, c, h, w)


@NETWORKS.register('MSTT')
class MSTTr(VideoNetwork):
    """MSTT, x4 in space, x2 in time.

    ``forward(x, f_flow, b_flow)`` (the official signature):
        x       (b, n, 3, h, w) RGB in [0, 1], n >= 2 (the official n is 4), any h, w.
        f_flow  n-1 tensors (b, h, w, 2): f_flow[i] = flow(I_i -> I_i+1) in LR pixels, (u, v) with
                u along x and v along y, warping F_i+1 onto frame i (``models.flow.clip_flows``).
        b_flow  n-1 tensors (b, h, w, 2): b_flow[i] = flow(I_i+1 -> I_i), warping F_i onto frame i+1.
        returns (b, 2n-1, 3, 4h, 4w), nominally [0, 1], not clamped; frames [I_0, I_0.5, I_1, ...].

    Official configuration: nf=64, groups=8, front_RBs=5, back_RBs=20 (train.py; the official class
    default is back_RBs=10). ``nframes`` only keeps the official positional signature
    ``MSTTr(64, 3, 8, 5, 20)`` working: the official class stores it in attributes it never reads.
    ``patchsize``, ``channel`` (transformer width) and ``stack_nums`` are fixed inside the official
    transformer; they are arguments here for small configurations. ``flow_backend`` is the
    ``models.flow`` backend ``predict`` uses when a batch brings no flows.
    """

    def __init__(self, nf=64, nframes=3, groups=8, front_RBs=5, back_RBs=20, patchsize=(40, 20, 10, 5),
                 channel=256, stack_nums=1, attn_residual_twice=True, warp_align_corners_quirk=True,
                 flow_backend='auto'):
        super().__init__()
        self.warp_align_corners_quirk = warp_align_corners_quirk
        self.flow_backend = flow_backend
        # The transformer halves h, w and cuts non-overlapping patches of every size.
        self.size_multiple = 2 * math.lcm(*patchsize)
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.feature_extraction = make_layer(ResidualBlockNoBN, front_RBs, nf=nf, init_scale=0.1)
        self.MSD_align = MultiScaleDeformableAlign(nf, groups)
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.blending = nn.Conv2d(2 * nf, nf, 1)
        self.MSST_former = SpatialTemporalTransformer(nf, patchsize, channel, stack_nums, attn_residual_twice)
        # Zooming Slow-Mo's reconstruction; the official hard-codes 64 (= nf, the only width its transformer
        # accepts) for the HR layers
        add_reconstruction(self, nf, back_RBs, hr_nf=nf)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def extra_inputs(self, cache_dir=None):
        return FlowInputs(self.flow_backend, cache_dir)

    def predict(self, lq, extras=None):
        """lq (b, n, 3, h, w) in [0, 1] -> (b, 2n-1, 3, 4h, 4w).

        Flows come from ``extras['flows']`` when the batch has them (computed in the loader workers by
        ``extra_inputs()``): (b, n-1, 2, h, w, 2), dim 2 = forward, backward; last dim = (u, v). Otherwise
        the same ``FlowInputs`` computes them here, on the CPU.
        """
        flows = self.inputs_for(lq, extras)['flows'].to(lq.dtype)
        return self(lq, list(flows[:, :, 0].unbind(1)), list(flows[:, :, 1].unbind(1)))

    def interpolate_feature(self, feat1, feat2, flow12, flow21):
        """Feature of the frame between two inputs: (b, nf, h, w) x 2 and flows (b, h, w, 2) x 2."""
        aligned1 = self.MSD_align(feat1, feat2)
        warped2 = flow_warp(feat2, flow12, self.warp_align_corners_quirk)
        warped1 = flow_warp(feat1, flow21, self.warp_align_corners_quirk)
        blend1 = self.fusion(torch.cat((aligned1, warped2), dim=1))
        blend2 = self.fusion(torch.cat((warped1, warped2), dim=1))
        return self.blending(torch.cat((blend1, blend2), dim=1))

    def forward(self, x, f_flow, b_flow):
        b, n, c, h, w = x.shape
        if len(f_flow) != n - 1 or len(b_flow) != n - 1:
            raise ValueError(f'{n} frames need {n - 1} forward and backward flows, '
                             f'got {len(f_flow)} and {len(b_flow)}')
        x, _ = pad_to_multiple(x, self.size_multiple, mode='replicate')
        # Flows pad like images (per component, channels first): edge motion continues outward.
        flows = torch.stack((torch.stack(tuple(f_flow), 1), torch.stack(tuple(b_flow), 1)), 1)
        flows, _ = pad_to_multiple(flows.movedim(-1, -3).to(x.dtype), self.size_multiple, mode='replicate')
        flows = flows.movedim(-3, -1)
        hp, wp = x.shape[-2:]

        feats = self.lrelu(self.conv_first(x.reshape(b * n, c, hp, wp)))
        feats = self.feature_extraction(feats).view(b, n, -1, hp, wp)
        seq = [feats[:, 0]]
        for i in range(n - 1):
            seq.append(self.interpolate_feature(feats[:, i], feats[:, i + 1], flows[:, 0, i], flows[:, 1, i]))
            seq.append(feats[:, i + 1])
        feats = self.MSST_former(torch.stack(seq, dim=1))

        out = upsample(self, self.recon_trunk(cpu_channels_last(feats.flatten(0, 1))))
        return out.view(b, 2 * n - 1, -1, 4 * hp, 4 * wp)[..., :4 * h, :4 * w]
