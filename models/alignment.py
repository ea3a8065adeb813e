"""Zooming Slow-Mo's alignment blocks, shared by its descendants (MSITF, STDAN, and Zooming Slow-Mo itself).

- ``add_pyramid_convs`` / ``feature_pyramid``: the L1 -> L2 -> L3 feature pyramid (stride-2 conv + conv, each
  followed by LeakyReLU(0.1)) under the official names ``fea_L{2,3}_conv{1,2}`` of the module that owns it.
- :class:`PCDAlign`: Pyramid, Cascading and Deformable alignment (EDVR's, as Zooming Slow-Mo's ``PCD_Align``
  uses it), in one or both directions, optionally with TMNet's temporal modulation of the offsets
  (:class:`TemporalModulation`).
- :class:`EasyPCD`: a pyramid of each of two features, PCD, and a 1x1 fusion (``Easy_PCD``).
- :class:`BiDeformableConvLSTM`: a ConvLSTM whose state is aligned to each input by two EasyPCDs, run over
  a sequence and its reverse with the same weights (``BiDeformableConvLSTM``).

The official classes differ in a few constants, which are arguments here (defaults: Zooming Slow-Mo's):
how many directions PCD aligns (MSITF: one), a bound on the offsets (MSITF: 10 tanh), what the deformable
convs sample (MSITF's quirk samples the first frame's features alone), the initialisation of the
deformable weights (STDAN inherits detectron2's Kaiming init), and the name of their offset convs
(``offset_name``: 'conv_offset' in MSITF and STDAN, 'conv_offset_mask' in Zooming Slow-Mo's ``DCN_sep``).
Attribute names are the official ones.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import ModulatedDeformConv2d


def lrelu(x):
    return F.leaky_relu(x, 0.1)


def lrelu_(x):
    """``lrelu`` in place, for a fresh tensor that no backward needs (autograd then keeps only the output)."""
    return F.leaky_relu(x, 0.1, inplace=True)


def up2(x):
    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)


def add_pyramid_convs(m, nf):
    """Give module ``m`` the pyramid convs ``fea_L2_conv1/2`` and ``fea_L3_conv1/2`` (nf -> nf)."""
    m.fea_L2_conv1 = nn.Conv2d(nf, nf, 3, 2, 1)
    m.fea_L2_conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
    m.fea_L3_conv1 = nn.Conv2d(nf, nf, 3, 2, 1)
    m.fea_L3_conv2 = nn.Conv2d(nf, nf, 3, 1, 1)


def feature_pyramid(m, l1):
    """L1 (b, c, h, w) -> [L1, L2 (h/2), L3 (h/4)] through ``m``'s pyramid convs (``add_pyramid_convs``)."""
    l2 = lrelu(m.fea_L2_conv2(lrelu(m.fea_L2_conv1(l1))))
    l3 = lrelu(m.fea_L3_conv2(lrelu(m.fea_L3_conv1(l2))))
    return [l1, l2, l3]


class TemporalModulation(nn.Module):
    """TMNet's Temporal Modulation Block (official ``TMB``): ``forward(x, t)``, x (b, nf, h, w) offset features,
    t (b, 1, 1, 1) the instant mapped to [-1, 1] -> (b, nf, h, w) = f_process(x) * t_process(t).

    ``t_process``: three bias-free 1x1 convs (1 -> nf -> nf -> nf), each followed by LeakyReLU(0.1): a vector
    that is exactly 0 at t = 0 (the midpoint) and positively homogeneous in t. ``f_process``: two 3x3 convs
    with LeakyReLU(0.1). The official block is 64 channels wide (``nf`` here).
    """

    def __init__(self, nf=64):
        super().__init__()
        self.t_process = nn.Sequential(nn.Conv2d(1, nf, 1, bias=False), nn.LeakyReLU(0.1),
                                       nn.Conv2d(nf, nf, 1, bias=False), nn.LeakyReLU(0.1),
                                       nn.Conv2d(nf, nf, 1, bias=False), nn.LeakyReLU(0.1))
        self.f_process = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.1),
                                       nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.1))

    def forward(self, x, t):
        return self.f_process(x) * self.t_process(t)


class PCDAlign(nn.Module):
    """3-level PCD alignment of two pyramids: ``forward(fea1, fea2, t=None, t_back=None)``, each [L1 (b, nf, h, w),
    L2 (h/2), L3 (h/4)] -> (b, directions * nf, h, w).

    Direction 1 aligns fea1 towards fea2 (modules ``*_1``), direction 2 fea2 towards fea1 (``*_2``); their
    outputs are concatenated. At each level, coarse to fine, offsets are predicted from the pair and the
    upsampled, doubled offset features of the coarser level, and a modulated deformable conv (``groups``
    groups) samples the source features (``sample='src'``) or the mean of both (``sample='mean'``).

    ``time_modulation`` (TMNet's ``use_time``) adds a :class:`TemporalModulation` per level and direction
    (``TMB_A_l{1,2,3}`` for direction 1, ``TMB_B_l*`` for direction 2, registered after the PCD layers): given
    instants ``t`` (b, 1, 1, 1) for direction 1 and ``t_back`` for direction 2, each level's offset features
    become lrelu(last offset conv(o)) + TMB(o, t), o the input of that conv. Without instants the blocks are
    skipped (TMNet's forward without t).

    Args beyond the official ones: ``offset_bound`` (offsets = bound * tanh, MSITF's 10; None: unbounded),
    ``dcn_init`` ('uniform': DCNv2's own init; 'kaiming': detectron2's ``kaiming_uniform_``, as STDAN's
    DCNv2Pack), ``offset_name`` (attribute name of each deformable conv's offset conv).
    """

    def __init__(self, nf=64, groups=8, directions=2, offset_bound=None, sample='src', dcn_init='uniform',
                 offset_name='conv_offset', time_modulation=False):
        super().__init__()
        if sample not in ('src', 'mean'):
            raise ValueError(f"sample must be 'src' or 'mean', got {sample!r}")
        if dcn_init not in ('uniform', 'kaiming'):
            raise ValueError(f"dcn_init must be 'uniform' or 'kaiming', got {dcn_init!r}")
        if directions not in (1, 2):
            raise ValueError(f'directions must be 1 or 2, got {directions!r}')
        self.directions, self.sample = directions, sample
        for d in range(1, directions + 1):
            for level in (3, 2, 1):
                setattr(self, f'L{level}_offset_conv1_{d}', nn.Conv2d(2 * nf, nf, 3, 1, 1))
                if level < 3:
                    setattr(self, f'L{level}_offset_conv2_{d}', nn.Conv2d(2 * nf, nf, 3, 1, 1))
                    setattr(self, f'L{level}_offset_conv3_{d}', nn.Conv2d(nf, nf, 3, 1, 1))
                else:
                    setattr(self, f'L{level}_offset_conv2_{d}', nn.Conv2d(nf, nf, 3, 1, 1))
                dcn = ModulatedDeformConv2d(nf, nf, 3, 1, 1, deformable_groups=groups, offset_in_channels=nf,
                                            offset_name=offset_name, offset_bound=offset_bound)
                if dcn_init == 'kaiming':
                    nn.init.kaiming_uniform_(dcn.weight, nonlinearity='relu')
                setattr(self, f'L{level}_dcnpack_{d}', dcn)
                if level < 3:
                    setattr(self, f'L{level}_fea_conv_{d}', nn.Conv2d(2 * nf, nf, 3, 1, 1))
        self.time_modulation = time_modulation
        if time_modulation:
            for level in (1, 2, 3):
                for d in range(1, directions + 1):
                    setattr(self, f'TMB_{"AB"[d - 1]}_l{level}', TemporalModulation(nf))

    def align(self, d, src, ref, t=None):
        """Align pyramid ``src`` towards ``ref`` with the modules of direction ``d`` (modulated at instants t)."""
        def m(name):
            return getattr(self, f'{name}_{d}')

        def last_offset_conv(level, conv, o):
            out = lrelu(m(f'L{level}_offset_{conv}')(o))
            return out if t is None else out + getattr(self, f'TMB_{"AB"[d - 1]}_l{level}')(o, t)

        x = src if self.sample == 'src' else [(a + b) / 2 for a, b in zip(src, ref)]
        offset = lrelu(m('L3_offset_conv1')(torch.cat((src[2], ref[2]), dim=1)))
        offset = last_offset_conv(3, 'conv2', offset)
        fea = lrelu(m('L3_dcnpack')(x[2], offset))
        for level in (2, 1):
            i = level - 1
            new = lrelu(m(f'L{level}_offset_conv1')(torch.cat((src[i], ref[i]), dim=1)))
            offset = lrelu(m(f'L{level}_offset_conv2')(torch.cat((new, up2(offset) * 2), dim=1)))
            offset = last_offset_conv(level, 'conv3', offset)
            fea = m(f'L{level}_fea_conv')(torch.cat((m(f'L{level}_dcnpack')(x[i], offset), up2(fea)), dim=1))
            if level == 2:  # the finest level's output stays linear
                fea = lrelu(fea)
        return fea

    def forward(self, fea1, fea2, t=None, t_back=None):
        if (t is not None or t_back is not None) and not self.time_modulation:
            raise ValueError('instants given to a PCDAlign built without time_modulation')
        aligned = [self.align(1, fea1, fea2, t)]
        if self.directions == 2:
            aligned.append(self.align(2, fea2, fea1, t_back))
        return torch.cat(aligned, dim=1) if len(aligned) > 1 else aligned[0]


class EasyPCD(nn.Module):
    """``forward(f1, f2)``: (b, nf, h, w) each, h and w multiples of 4 -> (b, nf, h, w): a pyramid of each
    feature, :class:`PCDAlign` (same arguments), and a 1x1 ``fusion`` of its output."""

    def __init__(self, nf=64, groups=8, **pcd):
        super().__init__()
        add_pyramid_convs(self, nf)
        self.pcd_align = PCDAlign(nf, groups, **pcd)
        self.fusion = nn.Conv2d(self.pcd_align.directions * nf, nf, 1)

    def forward(self, f1, f2):
        b = f1.shape[0]
        levels = feature_pyramid(self, torch.cat((f1, f2), dim=0))
        return self.fusion(self.pcd_align([t[:b] for t in levels], [t[b:] for t in levels]))


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell: one conv on [input, h] gives the i, f, o, g gates. -> (h', c'), each (b, hidden, h, w)."""

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
    """One-layer ConvLSTM whose h and c are aligned to the current input (:class:`EasyPCD`, the input as
    ``f1``) before each step. ``forward(x)``: (b, t, nf, h, w) -> hidden states (b, t, nf, h, w); the state
    starts at zero. ``cell_list`` holds the one cell (the official class allowed several layers)."""

    def __init__(self, nf=64, groups=8, **pcd):
        super().__init__()
        self.cell_list = nn.ModuleList([ConvLSTMCell(nf, nf)])
        self.pcd_h = EasyPCD(nf, groups, **pcd)
        self.pcd_c = EasyPCD(nf, groups, **pcd)

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

    def __init__(self, nf=64, groups=8, **pcd):
        super().__init__()
        self.forward_net = DeformableConvLSTM(nf, groups, **pcd)
        self.conv_1x1 = nn.Conv2d(2 * nf, nf, 1)

    def forward(self, x):
        b, t, c, h, w = x.shape
        both = self.forward_net(torch.cat([x, x.flip(1)], 0))
        fused = self.conv_1x1(torch.cat([both[:b], both[b:].flip(1)], 2).view(b * t, 2 * c, h, w))
        return fused.view(b, t, c, h, w)
