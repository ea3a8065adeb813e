"""Zooming Slow-Mo: one-stage space-time video super-resolution (Xiang, Tian et al., CVPR 2020).

Re-implementation of Mukosame/Zooming-Slow-Mo-CVPR-2020 @a053e08
``codes/models/modules/Sakuya_arch.py::LunaTokis`` (with ``convlstm.py`` and ``module_util.py``), the
ancestor of MSITF, STDAN and TMNet. Attribute names follow the official ones, so the authors' checkpoint
``experiments/pretrained_models/xiang2020zooming.pth`` (416 entries, 11,102,771 parameters) loads with
``strict=True``, unconverted. Every block but the reconstruction is the shared one of ``models.alignment``.

Pipeline, for ``n`` LR frames in and ``2n - 1`` HR frames out (x4, nf = 64):
1. Feature extraction: conv + LeakyReLU(0.1), ``front_RBs`` residual blocks, an L1/L2/L3 pyramid.
2. Feature temporal interpolation: for each pair of neighbouring frames, PCD alignment in both directions
   (two sets of modulated deformable convs, 8 groups) and a 1x1 fusion of the 2 x nf result give the
   feature of the missing frame; the sequence is [F1, I12, F2, I23, ..., Fn].
3. A bidirectional deformable ConvLSTM (``BiDeformableConvLSTM``: the same weights forwards and backwards;
   h and c aligned to each input by an EasyPCD), outputs fused by a 1x1 conv.
4. Reconstruction: ``back_RBs`` residual blocks, 2 x (conv nf -> 4 * 64, PixelShuffle 2, LeakyReLU),
   HRconv + LeakyReLU, conv_last. No global skip: the network predicts the frames themselves.

Official behaviour, reproduced:
- The pyramid needs LR sizes that are multiples of 4 (the official forward fails otherwise). As the
  official ``codes/test.py`` does (``single_forward``), other sizes are zero-padded at the bottom/right to
  the next multiple of 4 and the output cropped back; here inside ``forward``, so any size runs and the
  result is the official test script's.
- The output is not clamped (``test.py`` clamps and rounds to 8 bits afterwards).
- ``nframes`` is accepted (official signature) but unused: the output frame count follows the input.
- The HR-resolution layers are 64 channels wide whatever ``nf`` (``upconv2`` outputs 64 * 4, ``HRconv`` and
  ``conv_last`` take 64): ``hr_nf=64``.
Not reproduced: ``ConvLSTMCell.init_hidden`` calls ``.cuda()`` (the official network runs on CUDA only);
the zero state is made on the input's device and dtype, which is the same value. The official forward
loops over the pairs and the two ConvLSTM directions; here they run as batches (same function).
"""
import torch
import torch.nn as nn

from .alignment import BiDeformableConvLSTM, PCDAlign, add_pyramid_convs, feature_pyramid, lrelu, lrelu_
from .base import VideoNetwork
from .common import ResidualBlockNoBN, cpu_channels_last, make_layer, pad_to_multiple, per_image
from .registry import NETWORKS

# Zooming Slow-Mo's deformable convs are DCNv2's ``DCN_sep``, whose offset conv is ``conv_offset_mask``.
ZSM_PCD = {'offset_name': 'conv_offset_mask'}


def add_head(m, nf=64, front_RBs=5):
    """Give ``m`` the feature extraction of Zooming Slow-Mo and TMNet under the official names: ``conv_first``,
    ``front_RBs`` residual blocks ``feature_extraction``, the pyramid convs (registered in that order)."""
    m.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
    m.feature_extraction = make_layer(ResidualBlockNoBN, front_RBs, nf=nf)
    add_pyramid_convs(m, nf)


def head_features(m, x):
    """x (b, n, 3, h, w), h and w multiples of 4 -> [L1 (b, n, nf, h, w), L2 (h/2), L3 (h/4)] (``add_head``):
    conv_first + LeakyReLU(0.1), the residual blocks, the pyramid."""
    b, n, c, h, w = x.shape
    levels = feature_pyramid(m, m.feature_extraction(lrelu(m.conv_first(x.reshape(b * n, c, h, w)))))
    return [level.view(b, n, *level.shape[1:]) for level in levels]


def add_reconstruction(m, nf=64, back_RBs=40, hr_nf=64):
    """Give ``m`` Zooming Slow-Mo's x4 reconstruction under the official names (also TMNet's and RSTT's):
    ``back_RBs`` residual blocks ``recon_trunk``, ``upconv1`` (nf -> 4 nf), ``upconv2`` (nf -> 4 hr_nf),
    ``pixel_shuffle``, ``HRconv``, ``conv_last`` (hr_nf -> 3)."""
    m.recon_trunk = make_layer(ResidualBlockNoBN, back_RBs, nf=nf)
    m.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
    m.upconv2 = nn.Conv2d(nf, hr_nf * 4, 3, 1, 1)
    m.pixel_shuffle = nn.PixelShuffle(2)
    m.HRconv = nn.Conv2d(hr_nf, hr_nf, 3, 1, 1)
    m.conv_last = nn.Conv2d(hr_nf, 3, 3, 1, 1)


def upsample(m, x):
    """(b, nf, h, w) -> (b, 3, 4h, 4w) contiguous, through the layers of ``add_reconstruction`` after the trunk
    (also MSTT's and MSITF's): 2 x (conv, PixelShuffle 2, LeakyReLU 0.1), HRconv + LeakyReLU, conv_last; in
    channels_last memory on the CPU (``cpu_channels_last``), one frame at a time without autograd
    (``per_image``)."""
    def layers(x):
        # in place: the shuffled and convolved maps are fresh and no backward needs them, so autograd keeps one
        # tensor per activation (its output, which the next convolution saves too) instead of two
        x = lrelu_(m.pixel_shuffle(m.upconv1(cpu_channels_last(x))))
        x = lrelu_(m.pixel_shuffle(m.upconv2(x)))
        return m.conv_last(lrelu_(m.HRconv(x))).contiguous()
    return per_image(layers, x)


def neighbour_pairs(levels):
    """Pyramids of the n - 1 neighbouring pairs, batched: (fea1, fea2), each [L1, L2, L3] of (b * (n-1), ...)."""
    return [level[:, :-1].flatten(0, 1) for level in levels], [level[:, 1:].flatten(0, 1) for level in levels]


def interleave(frames, missing):
    """frames (b, n, c, h, w), missing (b, n-1, k, c, h, w) -> (b, n + (n-1) k, c, h, w):
    [F1, M1 (k of them), F2, M2, ..., Fn]."""
    inner = torch.cat([frames[:, :-1, None], missing], 2).flatten(1, 2)
    return torch.cat([inner, frames[:, -1:]], 1)


@NETWORKS.register('ZSM')
class ZSM(VideoNetwork):
    """Zooming Slow-Mo (official class ``LunaTokis``): ``forward(x)``, x (b, n, 3, h, w) RGB in [0, 1], n >= 2,
    any h, w -> (b, 2n - 1, 3, 4h, 4w), frames [I1, I1.5, I2, ..., In], nominally [0, 1], not clamped.

    Args (defaults = the official configuration ``LunaTokis(64, 7, 8, 5, 40)`` of codes/test.py and
    train_zsm.yml; no official script uses the class defaults nframes=3, back_RBs=10):
        nf: feature channels; nframes: unused (official signature); groups: deformable groups;
        front_RBs / back_RBs: residual blocks before the pyramid / in the reconstruction trunk;
        hr_nf: width of the HR-resolution layers (64 officially, whatever nf).
    """

    size_multiple = 4

    def __init__(self, nf=64, nframes=7, groups=8, front_RBs=5, back_RBs=40, hr_nf=64):
        super().__init__()
        add_head(self, nf, front_RBs)
        self.pcd_align = PCDAlign(nf, groups, **ZSM_PCD)
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.ConvBLSTM = BiDeformableConvLSTM(nf, groups, **ZSM_PCD)
        add_reconstruction(self, nf, back_RBs, hr_nf)

    def forward(self, x):
        x, (h, w) = pad_to_multiple(x, self.size_multiple)
        b, n = x.shape[:2]
        levels = head_features(self, x)
        missing = self.fusion(self.pcd_align(*neighbour_pairs(levels)))
        seq = interleave(levels[0], missing.view(b, n - 1, 1, *missing.shape[1:]))
        out = upsample(self, self.recon_trunk(cpu_channels_last(self.ConvBLSTM(seq).flatten(0, 1))))
        return out.view(b, 2 * n - 1, 3, *out.shape[-2:])[..., :4 * h, :4 * w]
