"""STDAN: Spatio-Temporal Deformable Attention Network (Wang, Xiang, Tian et al., TNNLS 2023).

Re-implementation of littlewhitesea/STDAN @1f10a1d ``codes/models/modules/sttrans.py::STTrans2`` with its
parts ``dconv.py::PCD_Align_modified``, ``def_enc_dec.py::STDFA`` and ``trans_enc_dec.py::Spatial_decoder``
(here ``models.swinir.SwinIRBody``). Attribute names follow the official ones, so the authors' checkpoint
``STDAN_20220306.pth`` loads with ``strict=True`` and no conversion. The compiled DCNv2 ops are replaced by
``models.common.ModulatedDeformConv2d`` (the modulated deformable convs, in ``models.alignment``) and by
``models.common.modulated_deform_sample`` (the deformable sampling of STDFA, through ``grid_sample``).

Pipeline (nf = 64, embed_dim = 72):
  1. conv 3 -> nf + LeakyReLU(0.1), a SwinIR body (2 RSTB of depth 6) per LR frame, and a 3-level pyramid.
  2. LSTFI: ``LSTFIStep`` (bidirectional PCD between the two frames, then alignment of a hidden state onto
     the result) runs over the pairs (1,2), (2,3), (3,4) and, with the same weights and a fresh zero state,
     over the reversed sequence; a 1x1 conv fuses both directions into the features of the 3 missing frames.
  3. STDFA: every one of the 7 features attends to the 6 others through deformable sampling (``STDFA``).
  4. A SwinIR body (6 RSTB of depth 6), conv + LeakyReLU(0.01), 2 x (conv, PixelShuffle 2), conv nf -> 3.
     No global skip: the network predicts the frames themselves.
"""
import math

import torch
import torch.nn as nn

from .alignment import EasyPCD, PCDAlign, add_pyramid_convs, feature_pyramid, lrelu
from .base import VideoNetwork
from .common import modulated_deform_sample, pad_to_multiple, per_image, recomputed_in_backward
from .registry import NETWORKS
from .swinir import SwinIRBody


class DeformableSampling(nn.Module):
    """Offsets and masks from a guide feature, then ``modulated_deform_sample`` (official ``DSP_sep2``).

    forward(feat, *inputs): feat (b, c, h, w) predicts one set of offsets and masks (8 groups), with which
    each input (b, c, h, w) is sampled -> a tuple of (b, c*k*k, h, w). The offset conv is zero-initialised,
    so a fresh layer samples the plain 3x3 neighbourhood with mask 0.5.
    """

    def __init__(self, channels, kernel_size=3, deformable_groups=8):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_offset_mask = nn.Conv2d(channels, 3 * deformable_groups * kernel_size ** 2, kernel_size, 1,
                                          kernel_size // 2)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, feat, *inputs):
        o1, o2, m = torch.chunk(self.conv_offset_mask(feat), 3, dim=1)
        offset, mask = torch.cat((o1, o2), dim=1), torch.sigmoid(m)
        # in training the sampling's grid and unmasked samples (2.5x the size of its inputs) are not kept
        return tuple(recomputed_in_backward(modulated_deform_sample, x, offset, mask, self.kernel_size,
                                            self.kernel_size // 2) for x in inputs)


class LSTFIStep(PCDAlign):
    """One recurrent step of LSTFI (official ``PCD_Align_modified``); its deformable convs, and those of
    ``pcd_h``, start from detectron2's Kaiming init, which the official DCNv2Pack inherits.

    forward(hid, fea1, fea2): hidden state (b, nf, h, w), pyramids of two neighbouring frames
    -> (y, new hidden), both (b, nf, h, w), y being the feature of the frame between them:
    y = fusion(PCD(fea1, fea2)); hid = EasyPCD(y, hid); y = fusion_1x1(cat(hid, y));
    new hidden = conv_h2(LeakyReLU(conv_h1(y))).
    """

    def __init__(self, nf=64, groups=8):
        super().__init__(nf, groups, dcn_init='kaiming')
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.conv_h1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_h2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.fusion_1x1 = nn.Conv2d(2 * nf, nf, 1)
        self.pcd_h = EasyPCD(nf, groups, dcn_init='kaiming')  # the official Easy_PCD

    def forward(self, hid, fea1, fea2):
        y = self.fusion(super().forward(fea1, fea2))
        y = self.fusion_1x1(torch.cat((self.pcd_h(y, hid), y), dim=1))
        return y, self.conv_h2(lrelu(self.conv_h1(y)))


class QKVMaps(nn.Module):
    """Per-pixel linear maps to query, key and value: (b, t, e, h, w) -> three (b, t, e, h, w)."""

    def __init__(self, embed_dim=72):
        super().__init__()
        self.w_qs = nn.Linear(embed_dim, embed_dim)
        self.w_ks = nn.Linear(embed_dim, embed_dim)
        self.w_vs = nn.Linear(embed_dim, embed_dim)

    def forward(self, x):
        x = x.movedim(2, -1)
        return tuple(f(x).movedim(-1, 2) for f in (self.w_qs, self.w_ks, self.w_vs))


class DeformableAttention(nn.Module):
    """Attention of a query frame to one other frame through deformably sampled 3x3 neighbourhoods.

    forward(q, k, v): each (b, e, h, w) -> (score (b, h, w), value (b, e, h, w)).
    Offsets (8 groups) come from cat(q, k). At each pixel the 9 sampled keys are scored by their dot
    product with q, the ``topk`` best kept and softmax-weighted into one key and one value; the score of
    the frame is q . key. As in the official code, neither dot product is scaled by 1/sqrt(e).
    """

    def __init__(self, embed_dim=72, kernel_size=3, topk=2):
        super().__init__()
        self.topk = topk
        self.offset_conv1 = nn.Conv2d(2 * embed_dim, embed_dim, 3, 1, 1)
        self.offset_conv2 = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.dcn_attention = DeformableSampling(embed_dim, kernel_size)
        self.lrelu = nn.LeakyReLU(0.1)

    def forward(self, q, k, v):
        b, e, h, w = q.shape
        feat = self.lrelu(self.offset_conv1(torch.cat((q, k), dim=1)))
        feat = self.lrelu(self.offset_conv2(feat))
        # keys and values share one offset prediction (the official code computes it twice, identically)
        k_s, v_s = (t.view(b, e, -1, h, w) for t in self.dcn_attention(feat, k, v))
        relevance = (k_s * q.unsqueeze(2)).sum(1)  # (b, 9, h, w)
        top, idx = relevance.topk(self.topk, dim=1)
        weight = torch.softmax(top, dim=1).unsqueeze(1)  # (b, 1, topk, h, w)
        idx = idx.unsqueeze(1).expand(b, e, self.topk, h, w)
        k_agg = (k_s.gather(2, idx) * weight).sum(2)
        v_agg = (v_s.gather(2, idx) * weight).sum(2)
        return (q * k_agg).sum(1), v_agg


class STDFA(nn.Module):
    """Spatio-temporal deformable feature aggregation.

    forward(x): (b, t, nf, h, w) -> (b*t, nf, h, w). conv 3x3 nf -> embed_dim, q/k/v maps; for each frame j,
    ``DeformableAttention`` to every other frame i, a softmax over the t-1 frame scores per pixel weights
    their values; conv 3x3 embed_dim -> nf plus the input.
    """

    def __init__(self, in_chans=64, embed_dim=72, patch_size=3, topk=2):
        super().__init__()
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.qkv_maps = QKVMaps(embed_dim)
        self.deformable_corr = DeformableAttention(embed_dim, patch_size, topk)
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)

    def forward(self, x):
        b, t, c, h, w = x.shape
        x = x.reshape(b * t, c, h, w)
        q, k, v = self.qkv_maps(self.conv_first(x).view(b, t, -1, h, w))
        e = q.shape[2]
        out = []
        for j in range(t):
            # one other frame at a time, as the official code: batching them is no faster on the CPU and holds
            # t-1 frames of 9-tap sampled keys and values at once
            pairs = [self.deformable_corr(q[:, j], k[:, i], v[:, i]) for i in range(t) if i != j]
            weight = torch.softmax(torch.stack([score for score, _ in pairs], 1).unsqueeze(2), dim=1)
            out.append((torch.stack([value for _, value in pairs], 1) * weight).sum(1))
        return self.conv_last(torch.stack(out, dim=1).view(b * t, e, h, w)) + x


class Upsample(nn.Sequential):
    """SwinIR upsampler: (conv nf -> 4nf, PixelShuffle 2) per factor 2, or (conv nf -> 9nf, PixelShuffle 3).
    No activation in between."""

    def __init__(self, scale, nf):
        if scale & (scale - 1) == 0:
            layers = []
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(nf, 4 * nf, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers = [nn.Conv2d(nf, 9 * nf, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f'scale {scale} is not supported: use a power of 2 or 3')
        super().__init__(*layers)


@NETWORKS.register('STDAN')
class STDAN(VideoNetwork):
    """STDAN (official class ``STTrans2``): 4 LR frames -> 7 HR frames, x4 in space.

    forward(x) -> out
        x   (b, n, 3, h, w) RGB in [0, 1], any h, w (zero-padded at the bottom/right inside to a multiple
            of lcm(4, window_size), 8 by default, and cropped back, as the official test script does).
        out (b, 2n-1, 3, scale*h, scale*w), frames [I1, I1.5, I2, ..., In], nominally [0, 1], not clamped.

    Args (defaults = the official configuration, 8,292,843 parameters):
        scale: upsampling factor of the output head (2^k or 3); the official class ignores its ``scale``
            argument and always builds x4.
        nf: feature channels; embed_dim: channels of the Swin bodies and of STDFA.
        img_size: LR size the stored shifted-window masks of the extraction body are computed for (the
            reconstruction body always uses 32, as officially hard-coded); any size runs.
        groups: deformable groups of the PCD convs (STDFA's sampling always uses 8, as officially).
        window_size: Swin window (the official class ignores its ``window_size`` argument and uses 8).
        depths_extraction, depths_recon: Swin blocks per RSTB of the extraction and reconstruction bodies.
        num_heads: attention heads of every RSTB; mlp_ratio: hidden width of the Swin MLPs.
        drop_path_rate: stochastic depth of each Swin body (0.1 officially, active in training).
        topk: sampled neighbours kept per pixel in STDFA.
    The n input frames need not be 4: the recurrences run over whatever n the input has.
    """

    def __init__(self, scale=4, nf=64, embed_dim=72, img_size=32, groups=8, window_size=8,
                 depths_extraction=(6, 6), depths_recon=(6, 6, 6, 6, 6, 6), num_heads=6, mlp_ratio=2.0,
                 drop_path_rate=0.1, topk=2):
        super().__init__()
        self.scale, self.window_size = scale, window_size
        swin = dict(in_chans=nf, embed_dim=embed_dim, num_heads=num_heads, window_size=window_size,
                    mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
        self.size_multiple = math.lcm(4, window_size)
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        add_pyramid_convs(self, nf)
        self.pcd_align_modified = LSTFIStep(nf, groups)
        self.feature_extraction = SwinIRBody(depths=tuple(depths_extraction), img_size=img_size, **swin)
        self.stdfa = STDFA(nf, embed_dim, 3, topk)
        self.feature_recon = SwinIRBody(depths=tuple(depths_recon), img_size=32, **swin)
        self.lrelu = nn.LeakyReLU(0.1)
        # nn.LeakyReLU's default slope (0.01) here, unlike the 0.1 everywhere else: official
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU())
        self.upsample = Upsample(scale, nf)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.fusion_f_b = nn.Conv2d(2 * nf, nf, 1)

    def lstfi(self, pyramids):
        """LSTFI: per-level (b, n, nf, h', w') features -> (b, n-1, nf, h, w) for the frames in between."""
        n = pyramids[0].shape[1]
        frames = [[level[:, i].contiguous() for level in pyramids] for i in range(n)]

        def run(order):
            hid = torch.zeros_like(frames[0][0])
            out = []
            for i, j in zip(order[:-1], order[1:]):
                y, hid = self.pcd_align_modified(hid, frames[i], frames[j])
                out.append(y)
            return out

        forward = run(list(range(n)))
        backward = run(list(range(n - 1, -1, -1)))[::-1]
        fused = [self.fusion_f_b(torch.cat(pair, dim=1)) for pair in zip(forward, backward)]
        return torch.stack(fused, dim=1)

    def forward(self, x):
        x, (h, w) = pad_to_multiple(x, self.size_multiple)
        b, n, c, hp, wp = x.shape
        l1 = self.feature_extraction(self.lrelu(self.conv_first(x.reshape(b * n, c, hp, wp))))
        pyramids = [t.view(b, n, *t.shape[1:]) for t in feature_pyramid(self, l1)]
        mid = self.lstfi(pyramids)
        feats = torch.stack([pyramids[0][:, 0]] + [f for i in range(n - 1)
                                                   for f in (mid[:, i], pyramids[0][:, i + 1])], dim=1)
        feats = self.feature_recon(self.stdfa(feats))
        out = per_image(lambda f: self.conv_last(self.upsample(self.conv_before_upsample(f))), feats)
        s = self.scale
        return out.view(b, 2 * n - 1, 3, s * hp, s * wp)[..., :s * h, :s * w]
