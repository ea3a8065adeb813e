"""STARnet: Space-Time-Aware multi-Resolution network (Haris, Shakhnarovich, Ukita, CVPR 2020).

Re-implements alterzero/STARnet @cf7a0bc: ``fbpn_sr_rbpn_v4.py::Net`` (STAR, "V4", trained by
``main.py``) and ``fbpn_sr_rbpn_v4_ref.py::Net`` (STAR with flow refinement, "V4_REF", the network
``eval.py`` loads), with ``rbpn.py``, ``dbpns_rbpn.py``, ``autoencoder_v4.py`` and the blocks of
``base_networks.py``. Attribute names follow the official ones, so official checkpoints load with
``strict=True``; their 'module.' prefix (DataParallel) is stripped by ``engine.checkpoint.load_weights``.

One pair of LR frames (I_t, I_t+1) and the flows between them give HR I_t, I_t+1/2, I_t+1 and LR I_t+1/2:

1. (flow refinement only) a 6-level U-Net adds a residual to each flow, from cat(flow, I_a, I_b).
2. Spatial SR: one RBPN (a single neighbour, DBPN-S core), shared by both directions, gives the HR
   features H1 = RBPN(I_t, I_t+1, f) and H2 = RBPN(I_t+1, I_t, b); ``motion_down`` takes them to LR
   features L1, L2.
3. Motion: ``motion(motion_feat(cat(f, b)))`` gives M, the same on the halved flows gives M_half.
4. Interpolation: ``interp_block`` on cat(L1, L2, M) gives the HR feature Ht; it is back-projected
   against ``t_net_hr`` (a pyramid module on cat(H1, H2, bilinear-up M)), then taken down to L and
   back-projected against ``t_net_lr`` (on cat(L1, L2, M)). Stage-1 outputs: ``reconstruction_h``
   (Ht), ``reconstruction_l`` (L) and the RBPN's own output heads (H1, H2).
5. One round of up/down back-projection between (H1, L1), (H2, L2) and (Ht, L) through
   ``motion_up_f``/``motion_up_b`` (on cat of two LR features and M_half) and ``motion_down``;
   stage-2 (final) outputs from ``reconstruction_h`` and ``reconstruction_l``.

Everything lives in ImageNet-normalised RGB, as the official dataset feeds it; flows are given as the
official dataset makes them (see ``STARnet``). ``STARnet.predict`` does both conversions.

Official quirks, reproduced:

- The flows are in units of -150 LR pixels: ``dataset.rescale_flow(flow, -1, 1)`` clips pyflow's
  (u, v) to +-150 px and maps it to -flow / 150 (its argument order flips the sign).
- The refinement U-Net ends in a sigmoid: the residual added to each flow is always in (0, 1), i.e.
  0 to -150 px, whatever the motion (typical input flows are +-0.01..0.05).
- The U-Net keeps BatchNorm and runs once per direction, so in training each forward updates its
  running statistics twice.
- ``fbpn_sr_rbpn_v4.Net`` builds its RBPN with ``n_resblock=5`` whatever its own ``n_resblock``.
- DBPN-S hard-codes three up-projection units (up1, down1, up2, down2, up3) and uses ``num_stages``
  only to size its ``output`` conv, so the official runs with ``num_stages=3`` only. Here
  ``num_stages`` up-projection units are built (identical at 3), so small configurations can use fewer.
- RBPN computes ``res_feat3`` to prepare the next neighbour, but with one neighbour (``nFrames=2``)
  the result is discarded: its weights are in the checkpoints but never trained. It is not run here,
  and its parameters have ``requires_grad=False`` (the official optimiser skips them for lack of a
  gradient; DistributedDataParallel would fail on parameters without one).
- ``forward(..., train=False)`` computes the stage-1 outputs and drops them; here only the RBPN's
  output conv (part of its forward) still runs.

Sizes: the official STAR runs at any LR size for x4 and x8 (x2 needs even sizes: its pyramid module
halves 2h twice); the U-Net needs h, w >= 32 (five 2x2 max-pools; odd sizes are handled by its
padding in the up path), and in training its bottleneck BatchNorm needs more than one value per
channel (the official fails in training on one 32x32 clip). Frames and flows are replicate-padded at
the bottom/right inside (for the U-Net: to 32, and the width to 64 where the bottleneck would hold a
single value in training; for x2: to even sizes) and outputs cropped back; sizes that need no padding
run exactly the official computation.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import VideoNetwork
from .common import cpu_channels_last, recomputable, recomputed_outputs
from .flow import FlowInputs, compute_flow
from .registry import NETWORKS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_FLOW = 150.  # dataset.py: flows are clipped to +-150 LR pixels, then divided by -150

# Deconvolution kernel, stride and padding of every x-scale step (the official table).
KERNEL_STRIDE_PADDING = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}


class PReLU(nn.PReLU):
    """``nn.PReLU`` whose output, when the next layer saves it for backward, is recomputed from the input
    (which PReLU keeps anyway) instead of kept: inside STARnet's forward (``recomputed_outputs``) a
    training step holds one tensor per activation, not two. Same parameters, outputs and gradients."""

    def forward(self, x):
        return recomputable(F.prelu, x, self.weight)


def _cat(*xs):
    """torch.cat along channels; through ``recomputable`` the concatenation a convolution saves is rebuilt
    from its parts in backward instead of kept beside them."""
    return torch.cat(xs, dim=1)


def _activation(kind):
    """The official activations: PReLU (one shared slope), LeakyReLU(0.1) or none."""
    if kind == 'prelu':
        return PReLU()
    if kind == 'lrelu':
        return nn.LeakyReLU(0.1, inplace=True)
    if kind is None:
        return None
    raise ValueError(f'unknown activation {kind!r}')


class ConvBlock(nn.Module):
    """Conv2d + optional activation (official ``ConvBlock``, norm=None)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, activation='prelu'):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.act = _activation(activation)

    def forward(self, x):
        x = self.conv(x)
        return x if self.act is None else self.act(x)


class DeconvBlock(nn.Module):
    """ConvTranspose2d + optional activation (official ``DeconvBlock``, norm=None)."""

    def __init__(self, in_channels, out_channels, kernel_size=4, stride=2, padding=1, activation='prelu'):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding)
        self.act = _activation(activation)

    def forward(self, x):
        x = self.deconv(x)
        return x if self.act is None else self.act(x)


class ResnetBlock(nn.Module):
    """act(conv2(act(conv1(x))) + x), one activation module used twice (official ``ResnetBlock``)."""

    def __init__(self, num_filter, activation='prelu'):
        super().__init__()
        self.conv1 = nn.Conv2d(num_filter, num_filter, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_filter, num_filter, 3, 1, 1)
        self.act = _activation(activation)

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x))) + x)


class UpBlock(nn.Module):
    """DBPN up-projection unit: (b, c, h, w) -> (b, c, s*h, s*w)."""

    def __init__(self, num_filter, kernel_size, stride, padding):
        super().__init__()
        self.up_conv1 = DeconvBlock(num_filter, num_filter, kernel_size, stride, padding)
        self.up_conv2 = ConvBlock(num_filter, num_filter, kernel_size, stride, padding)
        self.up_conv3 = DeconvBlock(num_filter, num_filter, kernel_size, stride, padding)

    def forward(self, x):
        h0 = self.up_conv1(x)
        return self.up_conv3(self.up_conv2(h0) - x) + h0


class DownBlock(nn.Module):
    """DBPN down-projection unit: (b, c, s*h, s*w) -> (b, c, h, w)."""

    def __init__(self, num_filter, kernel_size, stride, padding):
        super().__init__()
        self.down_conv1 = ConvBlock(num_filter, num_filter, kernel_size, stride, padding)
        self.down_conv2 = DeconvBlock(num_filter, num_filter, kernel_size, stride, padding)
        self.down_conv3 = ConvBlock(num_filter, num_filter, kernel_size, stride, padding)

    def forward(self, x):
        l0 = self.down_conv1(x)
        return self.down_conv3(self.down_conv2(l0) - x) + l0


class DBPNS(nn.Module):
    """DBPN-S core of RBPN (``dbpns_rbpn.py``): (b, base_filter, h, w) -> (b, feat, s*h, s*w).

    ``num_stages`` up-projection units with down-projections between them (up1, down1, up2, ...);
    ``output`` fuses their HR maps, newest first. The official hard-codes three units.
    """

    def __init__(self, base_filter, feat, num_stages, scale_factor):
        super().__init__()
        kernel, stride, padding = KERNEL_STRIDE_PADDING[scale_factor]
        self.num_stages = num_stages
        self.feat1 = ConvBlock(base_filter, feat, 1, 1, 0)
        for i in range(1, num_stages + 1):  # registration order = the official state_dict order
            setattr(self, f'up{i}', UpBlock(feat, kernel, stride, padding))
            if i < num_stages:
                setattr(self, f'down{i}', DownBlock(feat, kernel, stride, padding))
        self.output = ConvBlock(num_stages * feat, feat, 1, 1, 0, activation=None)

    def forward(self, x):
        h = self.up1(self.feat1(x))
        hr = [h]
        for i in range(2, self.num_stages + 1):
            h = getattr(self, f'up{i}')(getattr(self, f'down{i - 1}')(h))
            hr.insert(0, h)
        return self.output(recomputable(_cat, *hr))


class RBPN(nn.Module):
    """RBPN with one neighbour (``rbpn.py::Net``, nFrames=2).

    ``forward(x, neighbor, flow)``: (b, 3, h, w), (b, 3, h, w), (b, 2, h, w) ->
    (output (b, 3, s*h, s*w) from the ``output`` head, HR feature (b, feat, s*h, s*w)).
    """

    def __init__(self, base_filter, feat, num_stages, n_resblock, scale_factor, num_channels=3):
        super().__init__()
        kernel, stride, padding = KERNEL_STRIDE_PADDING[scale_factor]
        self.feat0 = ConvBlock(num_channels, base_filter, 3, 1, 1)
        self.feat1 = ConvBlock(2 * num_channels + 2, base_filter, 3, 1, 1)  # cat(frame, neighbour, flow)
        self.DBPN = DBPNS(base_filter, feat, num_stages, scale_factor)
        self.res_feat1 = nn.Sequential(*[ResnetBlock(base_filter) for _ in range(n_resblock)],
                                       DeconvBlock(base_filter, feat, kernel, stride, padding))
        self.res_feat2 = nn.Sequential(*[ResnetBlock(feat) for _ in range(n_resblock)],
                                       ConvBlock(feat, feat, 3, 1, 1))
        # Prepares the next neighbour's input; with a single neighbour the official discards it.
        self.res_feat3 = nn.Sequential(*[ResnetBlock(feat) for _ in range(n_resblock)],
                                       ConvBlock(feat, base_filter, kernel, stride, padding))
        self.res_feat3.requires_grad_(False)
        self.output = ConvBlock(feat, num_channels, 3, 1, 1, activation=None)

    def forward(self, x, neighbor, flow):
        h0 = self.DBPN(self.feat0(x))
        h1 = self.res_feat1(self.feat1(recomputable(_cat, x, neighbor, flow)))
        h = h0 + self.res_feat2(h0 - h1)
        return self.output(h), h


class PyramidModule(nn.Module):
    """Three-level residual pyramid (``base_networks.PyramidModule``): (b, c, h, w) -> same, h, w % 4 == 0."""

    def __init__(self, num_inchannels, activation='lrelu'):
        super().__init__()
        c, act = num_inchannels, activation
        for i in range(1, 6):
            setattr(self, f'l1_{i}', ResnetBlock(c, act))
        for i in range(1, 5):
            setattr(self, f'l2_{i}', ResnetBlock(2 * c, act))
        for i in range(1, 4):
            setattr(self, f'l3_{i}', ResnetBlock(4 * c, act))
        self.down1 = ConvBlock(c, 2 * c, 4, 2, 1, act)
        self.down2 = ConvBlock(2 * c, 4 * c, 4, 2, 1, act)
        self.up1 = DeconvBlock(2 * c, c, 4, 2, 1, act)
        self.up2 = DeconvBlock(4 * c, 2 * c, 4, 2, 1, act)
        self.final = ConvBlock(c, c, 3, 1, 1, act)

    def forward(self, x):
        x1 = self.l1_1(x)
        x2 = self.l2_1(self.down1(x1))
        x3 = self.l3_1(self.down2(x2))
        # Each round updates the three levels in turn from their neighbours; level 3 stops after
        # round 3 and level 2 after round 4, as in the official.
        for i in range(2, 6):
            x1 = getattr(self, f'l1_{i}')(x1 + self.up1(x2))
            if i < 5:
                x2 = getattr(self, f'l2_{i}')(x2 + self.down1(x1) + self.up2(x3))
            if i < 4:
                x3 = getattr(self, f'l3_{i}')(x3 + self.down2(x2))
        return self.final(x1)


class DoubleConv(nn.Module):
    """(conv 3x3 -> BatchNorm -> ReLU) x 2 (``autoencoder_v4.double_conv``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class UNetIn(nn.Module):
    """First U-Net level; the wrapper only reproduces the official names (``inc.conv.conv.*``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x):
        return self.conv(x)


class UNetDown(nn.Module):
    """2x2 max-pool then DoubleConv (``autoencoder_v4.down``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))

    def forward(self, x):
        return self.mpconv(x)


class UNetUp(nn.Module):
    """Bilinear x2 (align_corners=True), zero-pad to the skip's size, DoubleConv(cat(skip, x))."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2., mode='bilinear', align_corners=True)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
        return self.conv(torch.cat((skip, x), dim=1))


class UNetOut(nn.Module):
    """1x1 conv; the wrapper only reproduces the official names (``outc.conv.*``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x):
        return self.conv(x)


class FlowRefinementUNet(nn.Module):
    """The flow-refinement U-Net (``autoencoder_v4.UNet(8, 2)``), widths w, 2w, 4w, 8w, 16w, 16w.

    (b, in_channels, h, w) with h, w >= 32 -> (b, out_channels, h, w) in (0, 1) (sigmoid). The
    official width is 64 (53.5 M parameters); ``width`` scales it for small configurations.
    """

    def __init__(self, in_channels=8, out_channels=2, width=64):
        super().__init__()
        w = width
        self.inc = UNetIn(in_channels, w)
        self.down1 = UNetDown(w, 2 * w)
        self.down2 = UNetDown(2 * w, 4 * w)
        self.down3 = UNetDown(4 * w, 8 * w)
        self.down4 = UNetDown(8 * w, 16 * w)
        self.down5 = UNetDown(16 * w, 16 * w)
        self.up1 = UNetUp(32 * w, 8 * w)
        self.up2 = UNetUp(16 * w, 4 * w)
        self.up3 = UNetUp(8 * w, 2 * w)
        self.up4 = UNetUp(4 * w, w)
        self.up5 = UNetUp(2 * w, w)
        self.outc = UNetOut(w, out_channels)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in (self.down1, self.down2, self.down3, self.down4, self.down5):
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in (self.up1, self.up2, self.up3, self.up4, self.up5):
            x = up(x, skips.pop())
        return torch.sigmoid(self.outc(x))


def _pad_bottom_right(x, h, w):
    """Replicate-pad (b, c, h0, w0) at the bottom/right to (b, c, max(h0, h), max(w0, w))."""
    ph, pw = max(h - x.shape[-2], 0), max(w - x.shape[-1], 0)
    return F.pad(x, (0, pw, 0, ph), mode='replicate') if ph or pw else x


@NETWORKS.register('STARnet')
class STARnet(VideoNetwork):
    """STARnet, x``scale_factor`` in space, x2 in time, on one pair of LR frames.

    ``forward(t_im1, t_im2, t_flow_f, t_flow_b, train=True)`` (the official signature):
        t_im1, t_im2  (b, 3, h, w) LR frames I_t, I_t+1: RGB in [0, 1], ImageNet-normalised,
                      (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225). Any h, w.
        t_flow_f      (b, 2, h, w) flow(I_t -> I_t+1) in LR pixels (channels u along x, v along y,
                      ``models.flow`` convention), clipped to +-150 and divided by -150.
        t_flow_b      (b, 2, h, w) flow(I_t+1 -> I_t), the same way.
        train=False -> (pred_ht, pred_h1, pred_h2, pred_l): HR I_t+1/2, HR I_t, HR I_t+1, each
                      (b, 3, s*h, s*w), and LR I_t+1/2 (b, 3, h, w); ImageNet-normalised, not clamped.
        train=True  -> the same four as lists [stage 1, stage 2] (deep supervision; stage 2 is what
                      train=False returns); with flow refinement followed by the refined t_flow_f and
                      t_flow_b (6 entries).

    Official configuration: base_filter=256, feat=64, num_stages=3, n_resblock=5, scale_factor=4
    (``eval.py``, ``main.py``; scale_factor 2 and 8 are supported). ``flow_refinement=True`` is
    ``fbpn_sr_rbpn_v4_ref.Net`` (111,610,863 parameters): it nests the plain network as ``model``
    beside ``flow_net``, hence its checkpoint names; ``False`` is ``fbpn_sr_rbpn_v4.Net``
    (58,092,269). ``unet_width`` is fixed to 64 in the official U-Net; it is an argument for small
    configurations. The RBPN always has 5 residual blocks per body, as officially. ``flow_backend``
    is the ``models.flow`` backend ``predict`` uses when a batch brings no flows. Nothing is loaded
    implicitly (the official constructor loads pretrained RBPN weights by default).
    """

    def __init__(self, base_filter=256, feat=64, num_stages=3, n_resblock=5, scale_factor=4,
                 flow_refinement=True, unet_width=64, flow_backend='auto'):
        super().__init__()
        if scale_factor not in KERNEL_STRIDE_PADDING:
            raise ValueError(f'scale_factor must be one of {sorted(KERNEL_STRIDE_PADDING)}, got {scale_factor}')
        self.scale_factor = self.scale = scale_factor
        self.flow_refinement = flow_refinement
        self.flow_backend = flow_backend
        self.configure_loss()
        if flow_refinement:
            self.model = STARnet(base_filter, feat, num_stages, n_resblock, scale_factor, flow_refinement=False)
            self.flow_net = FlowRefinementUNet(8, 2, unet_width)
            return

        kernel, stride, padding = KERNEL_STRIDE_PADDING[scale_factor]
        lrelu = 'lrelu'  # STAR's own layers use LeakyReLU(0.1); the RBPN keeps its PReLUs
        self.motion_feat = ConvBlock(4, base_filter, 3, 1, 1, lrelu)
        self.motion = nn.Sequential(ResnetBlock(base_filter, lrelu), ResnetBlock(base_filter, lrelu),
                                    ConvBlock(base_filter, feat, 3, 1, 1, lrelu))
        self.t_net_lr = nn.Sequential(ResnetBlock(5 * feat, lrelu), ResnetBlock(5 * feat, lrelu),
                                      ConvBlock(5 * feat, 2 * feat, 3, 1, 1, lrelu))
        self.t_net_hr = nn.Sequential(ConvBlock(3 * feat, feat, 1, 1, 0, lrelu), PyramidModule(feat, lrelu),
                                      ConvBlock(feat, feat, 3, 1, 1, lrelu))
        self.interp_block = self._lr_to_hr(5 * feat, feat, n_resblock)
        self.motion_up_f = self._lr_to_hr(5 * feat, feat, n_resblock)
        self.motion_up_b = self._lr_to_hr(5 * feat, feat, n_resblock)
        self.motion_down = nn.Sequential(ResnetBlock(feat, lrelu), ResnetBlock(feat, lrelu),
                                         ConvBlock(feat, 2 * feat, kernel, stride, padding, lrelu))
        self.relu_bp = nn.LeakyReLU(0.1)
        self.reconstruction_l = ConvBlock(2 * feat, 3, 3, 1, 1, activation=None)
        self.reconstruction_h = ConvBlock(feat, 3, 3, 1, 1, activation=None)
        self.RBPN = RBPN(base_filter, feat, num_stages, 5, scale_factor)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def _lr_to_hr(self, channels, feat, n_resblock):
        kernel, stride, padding = KERNEL_STRIDE_PADDING[self.scale_factor]
        return nn.Sequential(*[ResnetBlock(channels, 'lrelu') for _ in range(n_resblock)],
                             DeconvBlock(channels, feat, kernel, stride, padding, 'lrelu'))

    def back_project(self, x, estimate):
        """x + LReLU(x - estimate): the official residual update of every refinement step."""
        return x + self.relu_bp(x - estimate)

    def refine_flow(self, flow, im_a, im_b):
        """flow + U-Net(cat(flow, im_a, im_b)), padded inside to the U-Net's minimum size."""
        b, _, h, w = flow.shape
        hp, wp = max(h, 32), max(w, 32)
        if self.training and b * (hp // 32) * (wp // 32) == 1:
            wp = 64  # BatchNorm's batch statistics need more than one bottleneck value per channel
        x = _pad_bottom_right(torch.cat((flow, im_a, im_b), dim=1), hp, wp)
        return flow + self.flow_net(x)[..., :h, :w]

    def forward(self, t_im1, t_im2, t_flow_f, t_flow_b, train=True):
        with recomputed_outputs():  # the activations and concatenations the next layer saves: recomputed
            return self._forward(t_im1, t_im2, t_flow_f, t_flow_b, train)

    def _forward(self, t_im1, t_im2, t_flow_f, t_flow_b, train):
        if self.flow_refinement:
            t_flow_f = self.refine_flow(t_flow_f, t_im1, t_im2)
            t_flow_b = self.refine_flow(t_flow_b, t_im2, t_im1)
            outputs = self.model(t_im1, t_im2, t_flow_f, t_flow_b, train=train)
            return (*outputs, t_flow_f, t_flow_b) if train else outputs

        h, w = t_im1.shape[-2:]
        if self.scale_factor == 2:  # the pyramid module halves 2h twice
            t_im1, t_im2, t_flow_f, t_flow_b = (_pad_bottom_right(x, h + h % 2, w + w % 2)
                                                for x in (t_im1, t_im2, t_flow_f, t_flow_b))
        stages = self.star(t_im1, t_im2, t_flow_f, t_flow_b, train)
        s = self.scale_factor
        stages = [[x[..., :s * h, :s * w] for x in stage[:3]] + [stage[3][..., :h, :w]] for stage in stages]
        if train:
            return tuple(list(per_output) for per_output in zip(*stages))
        return tuple(stages[-1])

    def star(self, t_im1, t_im2, t_flow_f, t_flow_b, train=True):
        """The official STAR forward; returns [stage 1, stage 2] (stage 2 only if not ``train``),
        each (ht, h1, h2, l)."""
        stages = []
        aux_h1, H1 = self.RBPN(t_im1, t_im2, t_flow_f)
        aux_h2, H2 = self.RBPN(t_im2, t_im1, t_flow_b)
        L1, L2 = self.motion_down(H1), self.motion_down(H2)

        M = self.motion(self.motion_feat(torch.cat((t_flow_f, t_flow_b), dim=1)))
        M_half = self.motion(self.motion_feat(torch.cat((t_flow_f / 2., t_flow_b / 2.), dim=1)))

        Ht = self.interp_block(recomputable(_cat, L1, L2, M))
        M_up = F.interpolate(M, scale_factor=self.scale_factor, mode='bilinear', align_corners=True)
        Ht = self.back_project(Ht, self.t_net_hr(recomputable(_cat, H1, H2, M_up)))
        L = self.motion_down(Ht)
        L = self.back_project(L, self.t_net_lr(recomputable(_cat, L1, L2, M)))
        if train:
            stages.append((self.reconstruction_h(Ht), aux_h1, aux_h2, self.reconstruction_l(L)))

        H_b = self.motion_up_b(recomputable(_cat, L1, L, M_half))
        H1 = self.back_project(H1, H_b)
        L1 = self.back_project(L1, self.motion_down(H_b))
        H_f = self.motion_up_f(recomputable(_cat, L, L2, M_half))
        H2 = self.back_project(H2, H_f)
        L2 = self.back_project(L2, self.motion_down(H_f))
        H_t_f = self.motion_up_f(recomputable(_cat, L1, L, M_half))
        Ht = self.back_project(Ht, H_t_f)
        L = self.back_project(L, self.motion_down(H_t_f))
        H_t_b = self.motion_up_b(recomputable(_cat, L, L2, M_half))
        Ht = self.back_project(Ht, H_t_b)
        L = self.back_project(L, self.motion_down(H_t_b))
        stages.append((self.reconstruction_h(Ht), self.reconstruction_h(H1), self.reconstruction_h(H2),
                       self.reconstruction_l(L)))
        return stages

    # --- the toolbox interface (models/base.py) -------------------------------------------------------

    own_loss = True
    official_init = ('the official STARnet training starts from a pretrained RBPN (rbpn_pretrained_F2_4x.pth): '
                     'set train.network_init.path, with module: RBPN (module: model.RBPN with flow refinement)')

    def extra_inputs(self, cache_dir=None):
        return FlowInputs(self.flow_backend, cache_dir)

    def pair_inputs(self, lq, extras=None):
        """Official inputs (t_im1, t_im2, t_flow_f, t_flow_b) of the n-1 adjacent pairs of each clip, pairs
        stacked in the batch dimension (pair i of clip j at j * (n-1) + i). Flows from ``extras['flows']``
        (b, n-1, 2, h, w, 2) pixel flows (dim 2: forward, backward), else computed with ``flow_backend``."""
        n = lq.shape[1]
        if n < 2:
            raise ValueError(f'STARnet needs at least 2 frames per clip, got {n}')
        return official_pair_inputs(lq, self.inputs_for(lq, extras)['flows'])

    def predict(self, lq, extras=None):
        """lq (b, n, 3, h, w) in [0, 1], n >= 2 -> (b, 2n-1, 3, s*h, s*w), [0, 1] scale, not clamped.

        Runs the n-1 adjacent pairs (4 frames -> 3 pairs -> 7 frames; 2 -> 1 -> 3) in one batch and
        assembles the clip with ``assemble_clip``. Frames are ImageNet-normalised and flows mapped to the
        official units (``official_flow``) on the way in; outputs are de-normalised.
        """
        b, n = lq.shape[:2]
        # NHWC on the CPU: inference 1.27x faster at 64x112 (training is not, so it keeps NCHW)
        ht, h1, h2, _ = self(*(cpu_channels_last(x) for x in self.pair_inputs(lq, extras)), train=False)
        return denormalise(assemble_clip(*(x.unflatten(0, (b, n - 1)) for x in (ht, h1, h2)))).contiguous()

    def configure_loss(self, train_obj='STAR', perceptual=False, feature_weight=0.1, flow_weight=0.1,
                       feature_extractor=None):
        """The official objective's options (``train.network_loss``); see ``training_losses``.

        ``perceptual: true`` loads the official VGG19 (``vgg19_features``) here, once, so that a missing
        download fails before training starts; ``feature_extractor`` (a module) replaces it (tests).
        """
        if train_obj not in TRAIN_OBJECTIVES:
            raise ValueError(f'train_obj must be one of {", ".join(TRAIN_OBJECTIVES)}, got {train_obj!r}')
        if perceptual and feature_extractor is None:
            feature_extractor = perceptual_network('cpu')
        # a plain attribute, not a submodule: the VGG is not part of STARnet's state_dict
        self.loss_options = {'weights': TRAIN_OBJECTIVES[train_obj], 'features': feature_extractor,
                                         'feature_weight': feature_weight, 'flow_weight': flow_weight}

    def training_losses(self, lq, gt, extras, criterion=None):
        """The official STARnet training loss on a toolbox batch: (pred, {name: loss}); ``criterion`` unused.

        lq (b, n, 3, h, w) and gt (b, 2n-1, 3, s*h, s*w) in [0, 1]; pred is ``predict``'s clip (final
        stage), for logging. Each adjacent pair is one official sample: targets gt[2i] (h1), gt[2i+1] (ht),
        gt[2i+2] (h2) and the LR middle frame ``lr_targets(gt[2i+1])`` (l), all ImageNet-normalised; pairs
        share the batch, so every term is a mean over pairs.

        - 'pixel': sum over outputs of the ``TRAIN_OBJECTIVES[train_obj]`` weight times the sum over the
          two stages of ``STAGE_WEIGHTS`` times the L1 mean (main.py ``mse_loss_calc``).
        - 'feature' (``perceptual``): ``feature_weight`` times the same weighting of the MSE between
          VGG19 features of prediction and target (``feat_loss_calc``).
        - 'flow' (flow-refined network, if ``flow_weight``): ``flow_weight`` times MSE(refined f, target f)
          + MSE(refined b, target b) against ``flow_targets`` (main_refinement_flow.py), or against
          ``extras['flow_targets']`` (b, n-1, 2, 2, h, w) when the batch brings them.
        """
        options = self.loss_options
        features = options['features']
        if features is not None:
            features = features.to(lq.device)
        b, n, _, h, w = lq.shape
        outputs = self(*self.pair_inputs(lq, extras), train=True)
        gt_pairs = gt.unfold(1, 3, 2).movedim(-1, 2)  # (b, n-1, 3 frames, 3, H, W): h1, ht, h2
        lq_mid = lr_targets(gt[:, 1::2], (h, w))
        targets = [normalise(x).flatten(0, 1)
                   for x in (gt_pairs[:, :, 1], gt_pairs[:, :, 0], gt_pairs[:, :, 2], lq_mid)]

        losses = {'pixel': 0.}
        if features is not None:
            losses['feature'] = 0.
        for weight, stages, target in zip(options['weights'], outputs[:4], targets):
            if not weight:
                continue
            target_features = features(target).detach() if features is not None else None
            for stage_weight, pred in zip(STAGE_WEIGHTS, stages):
                losses['pixel'] = losses['pixel'] + weight * stage_weight * F.l1_loss(pred, target)
                if features is not None:
                    losses['feature'] = losses['feature'] + options['feature_weight'] * weight * stage_weight * \
                        F.mse_loss(features(pred), target_features)
        if self.flow_refinement and options['flow_weight']:
            flow_gt = (extras or {}).get('flow_targets')
            if flow_gt is None:
                flow_gt = flow_targets(lq, lq_mid, self.flow_backend)
            flow_gt = flow_gt.to(device=lq.device, dtype=lq.dtype).flatten(0, 1)
            losses['flow'] = options['flow_weight'] * (F.mse_loss(outputs[4], flow_gt[:, 0]) +
                                                       F.mse_loss(outputs[5], flow_gt[:, 1]))
        final = (x[-1].unflatten(0, (b, n - 1)) for x in outputs[:3])
        return denormalise(assemble_clip(*final)), losses


def normalise(x):
    """RGB in [0, 1] (channels at dim -3) -> ImageNet-normalised, as the official dataset feeds STARnet."""
    mean, std = (x.new_tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (x - mean) / std


def denormalise(x):
    """ImageNet-normalised RGB -> [0, 1] scale (``utils.denorm(vgg=True)``), not clamped."""
    mean, std = (x.new_tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return x * std + mean


def official_flow(flow):
    """``models.flow`` flows (..., h, w, 2) in pixels -> the official input (..., 2, h, w):
    clipped to +-150 px and divided by -150 (``dataset.rescale_flow(flow, -1, 1)``)."""
    return -flow.clamp(-MAX_FLOW, MAX_FLOW).movedim(-1, -3) / MAX_FLOW


def official_pair_inputs(lq, flows):
    """lq (b, n, 3, h, w) in [0, 1] and pixel flows (b, n-1, 2, h, w, 2) -> the official inputs (t_im1, t_im2,
    t_flow_f, t_flow_b) of the n-1 adjacent pairs, each (b * (n-1), c, h, w): ImageNet-normalised frames and
    flows in the official units (``official_flow``)."""
    flows = official_flow(flows.to(device=lq.device, dtype=lq.dtype))
    x = normalise(lq)
    return x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1), flows[:, :, 0].flatten(0, 1), flows[:, :, 1].flatten(0, 1)


def assemble_clip(ht, h1, h2):
    """Per-pair HR outputs (b, n-1, c, H, W) -> the clip (b, 2n-1, c, H, W), [I_0, I_0.5, I_1, ...].

    An inner input instant i is predicted twice: as I_t+1 of pair i-1 and as I_t of pair i. The two
    are averaged: both are the same shared RBPN's estimate refined with one neighbour, one from the
    past and one from the future, so neither is preferred; the mean uses both neighbours, keeps the
    clip's time-reversal symmetry and trains both heads. The first and last frames have one estimate.
    """
    frames = [h1[:, 0]]
    for i in range(ht.shape[1]):
        frames.append(ht[:, i])
        frames.append(h2[:, i] if i == ht.shape[1] - 1 else (h2[:, i] + h1[:, i + 1]) / 2)
    return torch.stack(frames, dim=1)


# Target weights (ht, h1, h2, l) of the official objectives: main.py trains STAR;
# main_refinement_flow.py's --train_obj picks one of the four for the flow-refined network.
TRAIN_OBJECTIVES = {'STAR': (1., .5, .5, 1.), 'STAR-ST': (1., .5, .5, 0.), 'STAR-S': (0., 1., 1., 0.),
                    'STAR-T-LR': (0., 0., 0., 1.)}
STAGE_WEIGHTS = (0.4, 1.0)  # mse_loss_calc / feat_loss_calc: w_begin 0.4, w_interval 0.6


def vgg19_features(weights='IMAGENET1K_V1'):
    """The official perceptual-loss network: torchvision VGG19 ``features[:36]`` (through relu5_4),
    frozen, in eval mode; it takes ImageNet-normalised RGB, which is what STARnet outputs."""
    from torchvision.models import vgg19
    return vgg19(weights=weights).features[:36].eval().requires_grad_(False)


_PERCEPTUAL = {}


def perceptual_network(device):
    """``vgg19_features()`` on ``device``, built once per process. torchvision downloads the ImageNet
    weights on first use (then caches them); without a network connection that fails with a clear error."""
    if device not in _PERCEPTUAL:
        try:
            _PERCEPTUAL[device] = vgg19_features().to(device)
        except Exception as e:  # the download's many failure types (URLError, SSL, HTTP, disk)
            raise ValueError(f'perceptual: the VGG19 ImageNet weights could not be loaded ({type(e).__name__}: '
                             f'{e}); set perceptual: false to train without the feature loss') from None
    return _PERCEPTUAL[device]


def lr_targets(gt_mid, size):
    """LR targets of the middle frames: (..., 3, H, W) in [0, 1] -> (..., 3, h, w) in [0, 1], bicubic with
    antialiasing (Keys a = -0.5 on PIL's support: the official PIL bicubic without its uint8 rounding)."""
    flat = gt_mid.flatten(0, -4)
    out = F.interpolate(flat, size=size, mode='bicubic', align_corners=False, antialias=True).clamp(0, 1)
    return out.view(*gt_mid.shape[:-2], *size)


def flow_targets(lq, lq_mid, backend):
    """The official "GT flows" of every pair, (b, n-1, 2, 2, h, w) in official units (dim 2: f, b):
    f = flow(I_t -> LR I_t+1/2) + flow(LR I_t+1/2 -> I_t+1), b = flow(I_t+1 -> mid) + flow(mid -> I_t),
    each mapped with ``official_flow`` before the sum, as ``dataset.DatasetFromFolderFlow`` does."""
    def flow(a, b):
        return official_flow(torch.from_numpy(compute_flow(a, b, backend)))

    frames = lq.detach().permute(0, 1, 3, 4, 2).float().cpu().numpy()
    mids = lq_mid.detach().permute(0, 1, 3, 4, 2).float().cpu().numpy()
    clips = []
    for clip, mid in zip(frames, mids):
        clips.append(torch.stack([torch.stack((flow(clip[i], mid[i]) + flow(mid[i], clip[i + 1]),
                                               flow(clip[i + 1], mid[i]) + flow(mid[i], clip[i])))
                                  for i in range(len(mid))]))
    return torch.stack(clips).to(device=lq.device, dtype=lq.dtype)
