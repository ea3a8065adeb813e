"""Ops shared by several networks: residual blocks, modulated deformable convolution, padding.

Every network of the Zooming Slow-Mo family builds on these; they live here once.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with an identity skip, the ``ResidualBlock_noBN`` of EDVR/ZSM.

    (b, nf, h, w) -> (b, nf, h, w). ``init_scale`` scales the Kaiming init of both convs
    (0.1 in EDVR/ZSM/MSTT; ``None`` keeps PyTorch's default init).
    """

    def __init__(self, nf=64, init_scale=0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        if init_scale is not None:
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight, a=0, mode='fan_in')
                conv.weight.data.mul_(init_scale)
                nn.init.zeros_(conv.bias)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


def make_layer(block, n, **kwargs):
    """``nn.Sequential`` of ``n`` blocks built as ``block(**kwargs)`` (children named 0..n-1)."""
    return nn.Sequential(*[block(**kwargs) for _ in range(n)])


def deform_conv2d_sampled(x, offset, weight, bias=None, padding=1, dilation=1, mask=None):
    """Modulated deformable convolution (stride 1) as bilinear sampling plus one matrix product.

    The same function as ``torchvision.ops.deform_conv2d`` (same offset layout: per group and
    kernel tap (dy, dx); same zero contribution of samples outside the image), built from
    ``F.grid_sample``, whose CPU backward is about 5x faster than torchvision's. Shapes:
    x (b, c, h, w), offset (b, 2*g*kh*kw, h', w'), mask (b, g*kh*kw, h', w'), weight (o, c, kh, kw)
    -> (b, o, h', w') with h' = h + 2*padding - dilation*(kh-1).
    """
    b, c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    k = kh * kw
    g = offset.shape[1] // (2 * k)
    tap_y, tap_x = torch.meshgrid(torch.arange(kh, device=x.device, dtype=x.dtype) * dilation,
                                  torch.arange(kw, device=x.device, dtype=x.dtype) * dilation, indexing='ij')
    off = offset.view(b, g, k, 2, ho, wo)
    py = (torch.arange(ho, device=x.device, dtype=x.dtype) - padding).view(ho, 1) + tap_y.reshape(k, 1, 1) + off[:, :, :, 0]
    px = (torch.arange(wo, device=x.device, dtype=x.dtype) - padding).view(1, wo) + tap_x.reshape(k, 1, 1) + off[:, :, :, 1]
    # align_corners=True maps -1..1 onto pixel centres 0..size-1: pixel coordinates carry over exactly.
    grid = torch.stack((px * (2 / max(w - 1, 1)) - 1, py * (2 / max(h - 1, 1)) - 1), dim=-1)
    sampled = F.grid_sample(x.reshape(b * g, c // g, h, w), grid.view(b * g, k * ho, wo, 2), mode='bilinear',
                            padding_mode='zeros', align_corners=True).view(b, g, c // g, k, ho, wo)
    if mask is not None:
        sampled = sampled * mask.view(b, g, 1, k, ho, wo)
    out = torch.matmul(weight.reshape(out_c, c * k), sampled.reshape(b, c * k, ho * wo)).view(b, out_c, ho, wo)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class ModulatedDeformConv2d(nn.Module):
    """Modulated deformable convolution (DCNv2) whose offsets and mask come from a second feature map.

    ``forward(x, feat)``: x (b, in_channels, h, w) is sampled, feat (b, offset_in_channels, h, w)
    predicts offsets and masks -> (b, out_channels, h', w').

    The offset branch is one conv with ``3 * groups * k * k`` outputs, split into (o1, o2, m):
    offset = cat(o1, o2) (optionally ``offset_bound * tanh``), mask = sigmoid(m). This is the channel
    layout of the DCNv2 ``DCN_sep`` (ZSM, MSTT), ``DCNv2Pack`` (STDAN) and MSITF's torchvision port;
    only the offset conv's attribute name differs between them (``offset_name``). The offset conv is
    zero-initialised, so a fresh layer starts as a plain convolution with mask 0.5.

    ``impl``: 'torchvision' (``torchvision.ops.deform_conv2d``), 'sampled' (``deform_conv2d_sampled``,
    the same function through grid_sample, 5x faster to train on CPU; stride 1 only) or 'auto'
    (torchvision on GPU, sampled on CPU). Half-precision inputs are computed in float32 (autocast off).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1,
                 deformable_groups=8, offset_in_channels=None, offset_name='conv_offset_mask',
                 offset_bound=None, bias=True, impl='auto'):
        super().__init__()
        if impl not in ('auto', 'torchvision', 'sampled'):
            raise ValueError(f"impl must be 'auto', 'torchvision' or 'sampled', got {impl!r}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.deformable_groups = deformable_groups
        self.offset_bound = offset_bound
        self.offset_name = offset_name
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        stdv = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -stdv, stdv)
        offset_conv = nn.Conv2d(offset_in_channels or in_channels, 3 * deformable_groups * kernel_size ** 2,
                                kernel_size, stride, padding, dilation)
        nn.init.zeros_(offset_conv.weight)
        nn.init.zeros_(offset_conv.bias)
        setattr(self, offset_name, offset_conv)

    def offset_and_mask(self, feat):
        o1, o2, m = torch.chunk(getattr(self, self.offset_name)(feat), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        if self.offset_bound is not None:
            offset = self.offset_bound * torch.tanh(offset)
        return offset, torch.sigmoid(m)

    def forward(self, x, feat):
        offset, mask = self.offset_and_mask(feat)
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        args = [t.to(dtype) for t in (x, offset, self.weight)]
        bias = None if self.bias is None else self.bias.to(dtype)
        sampled = self.impl == 'sampled' or (self.impl == 'auto' and x.device.type == 'cpu' and self.stride == 1)
        with torch.autocast(x.device.type, enabled=False):
            if sampled:
                return deform_conv2d_sampled(*args, bias, self.padding, self.dilation, mask.to(dtype))
            return deform_conv2d(*args, bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                                 mask=mask.to(dtype))


def pad_to_multiple(x, multiple, mode='constant'):
    """Pad the last two dims at the bottom/right to a multiple of ``multiple``; returns (padded, (h, w))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    shape = x.shape
    flat = x.reshape(-1, *shape[-3:]) if x.dim() > 4 else x
    flat = F.pad(flat, (0, pw, 0, ph), mode=mode)
    return flat.reshape(*shape[:-2], h + ph, w + pw), (h, w)
