"""Ops shared by several networks: residual blocks, modulated deformable convolution, padding, window attention,
3x3x3 convolution over frames, and activations recomputed in backward instead of kept.

Every network of the Zooming Slow-Mo family builds on these; they live here once.
"""
import contextlib
import math
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch.utils.weak import WeakTensorKeyDictionary
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


def modulated_deform_sample(x, offset, mask=None, kernel_size=3, padding=1, dilation=1):
    """Modulated deformable sampling: the im2col half of DCNv2 (STDAN's ``DSP_sep2``), stride 1.

    x (b, c, h, w); offset (b, 2*g*k*k, h', w') as (dy, dx) per group g and tap k (the DCNv2 layout);
    mask (b, g*k*k, h', w') or None. Returns (b, c*k*k, h', w'), h' = h + 2*padding - dilation*(k-1),
    whose channel ``ci*k*k + tap`` holds ``mask * x[ci]`` bilinearly sampled at
    (y - padding + i*dilation + dy, x - padding + j*dilation + dx), tap = i*k + j, channel ci using the
    offsets of group ci // (c/g). Samples outside the image read zeros, as in the CUDA kernels.
    """
    b, c, h, w = x.shape
    ho, wo = offset.shape[-2:]
    kk = kernel_size * kernel_size
    g = offset.shape[1] // (2 * kk)
    # positions need float32 even under autocast: half precision cannot address pixel fractions past ~64
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        off = offset.to(dtype).view(b, g, kk, 2, ho, wo)
        taps = torch.arange(kernel_size, device=x.device, dtype=dtype) * dilation - padding
        tap_y = taps.repeat_interleave(kernel_size).view(kk, 1, 1)  # tap i*k + j -> row offset i, column j
        tap_x = taps.repeat(kernel_size).view(kk, 1, 1)
        ys = torch.arange(ho, device=x.device, dtype=dtype).view(ho, 1) + tap_y
        xs = torch.arange(wo, device=x.device, dtype=dtype).view(1, wo) + tap_x
        # pixel coordinates -> grid_sample's [-1, 1] with align_corners=False (valid for any size, even 1)
        # the official arithmetic in place on one new tensor per axis (each step would otherwise allocate one)
        gy = (ys + off[:, :, :, 0]).mul_(2).add_(1).div_(h).sub_(1)
        gx = (xs + off[:, :, :, 1]).mul_(2).add_(1).div_(w).sub_(1)
        grid = torch.stack((gx, gy), dim=-1).view(b * g, kk * ho, wo, 2)
        del gx, gy
        out = F.grid_sample(x.to(dtype).reshape(b * g, c // g, h, w), grid, mode='bilinear', padding_mode='zeros',
                            align_corners=False).view(b, g, c // g, kk, ho, wo)
        if mask is not None:
            mask = mask.to(dtype).view(b, g, 1, kk, ho, wo)
            out = out * mask if torch.is_grad_enabled() else out.mul_(mask)  # without autograd: no second copy
    return out.view(b, c * kk, ho, wo).to(x.dtype)


def recomputed_in_backward(fn, *args):
    """``fn(*args)``; when autograd records, its intermediates are recomputed in backward instead of kept
    (activation checkpointing; no RNG in the deformable sampling it serves, so no RNG state is saved)."""
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)


class _Recomputed:
    """The recipe of a saved tensor that ``recomputed_outputs`` rebuilds in backward."""

    def __init__(self, fn, inputs):
        self.fn, self.inputs = fn, inputs
        self.versions = [x._version if isinstance(x, torch.Tensor) else None for x in inputs]

    def __call__(self):
        for x, version in zip(self.inputs, self.versions):
            if version is not None and x._version != version:
                raise RuntimeError('an input of a recomputed activation was modified in place after the forward')
        with torch.no_grad():
            return self.fn(*self.inputs)


_RECOMPUTED = threading.local()


@contextlib.contextmanager
def recomputed_outputs():
    """Inside: a tensor made by ``recomputable(fn, *inputs)`` that a later op saves for backward (the input
    of the next convolution) is kept as ``(fn, inputs)`` and recomputed when backward needs it, so the memory
    held for backward stores the inputs (which the op that made it keeps anyway) and not a second copy.

    For cheap deterministic ``fn`` (an activation, a concatenation): the gradients are bitwise the same, at
    the cost of one more call of ``fn`` per use in backward. Nested use is one context; without autograd, or
    traced/compiled (saved-tensor hooks break the graph there), it changes nothing.
    """
    if getattr(_RECOMPUTED, 'outputs', None) is not None or not torch.is_grad_enabled() or _tracing():
        yield
        return
    outputs = WeakTensorKeyDictionary()

    def pack(t):
        return outputs.get(t, t)

    def unpack(saved):
        return saved() if isinstance(saved, _Recomputed) else saved

    _RECOMPUTED.outputs = outputs
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        _RECOMPUTED.outputs = None


def recomputable(fn, *inputs):
    """``fn(*inputs)``, registered with the enclosing ``recomputed_outputs`` (if any) to be recomputed in
    backward rather than kept."""
    y = fn(*inputs)
    outputs = getattr(_RECOMPUTED, 'outputs', None)
    if outputs is not None and torch.is_grad_enabled():
        outputs[y] = _Recomputed(fn, inputs)
    return y


def deform_conv2d_sampled(x, offset, weight, bias=None, padding=1, dilation=1, mask=None):
    """Modulated deformable convolution (stride 1) as ``modulated_deform_sample`` plus one matrix product.

    The same function as ``torchvision.ops.deform_conv2d`` (same arguments and layouts), whose CPU
    backward is about 5x slower than this one's. weight (o, c, k, k) -> (b, o, h', w').
    """
    out_c, c, kh, _ = weight.shape
    cols = modulated_deform_sample(x, offset, mask, kh, padding, dilation)
    b, _, ho, wo = cols.shape
    # bmm of the weight expanded over the batch: matmul(2-d, 3-d) would copy the columns transposed first
    w2d = weight.reshape(1, out_c, c * kh * kh).expand(b, -1, -1)
    out = torch.bmm(w2d, cols.view(b, c * kh * kh, ho * wo)).view(b, out_c, ho, wo)
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
        if min(in_channels, out_channels, deformable_groups) < 1 or in_channels % deformable_groups:
            raise ValueError(f'a deformable conv needs channels >= 1 divisible by its {deformable_groups} groups, got '
                             f'{in_channels} in, {out_channels} out')
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.deformable_groups = deformable_groups
        self.offset_bound = offset_bound
        self.offset_name = offset_name
        self.impl = impl
        self.last_offset = None  # offsets (pixels) of the last training forward
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
        if self.training:
            # kept for the trainer's log lines, which average it (no work here): the ZSM/EDVR family's
            # divergence shows as offsets growing to tens or hundreds of pixels
            self.last_offset = offset.detach()
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        args = [t.to(dtype) for t in (x, offset, self.weight)]
        bias = None if self.bias is None else self.bias.to(dtype)
        sampled = self.impl == 'sampled' or (self.impl == 'auto' and x.device.type == 'cpu' and self.stride == 1)
        with torch.autocast(x.device.type, enabled=False):
            if sampled:
                # autograd would keep two copies of the 9 x channels sampled columns, 5x the memory of the inputs
                # kept instead (which torchvision's op keeps too)
                return recomputed_in_backward(deform_conv2d_sampled, *args, bias, self.padding, self.dilation,
                                              mask.to(dtype))
            return deform_conv2d(*args, bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                                 mask=mask.to(dtype))


def _time_neighbours(x):
    """(b, c, t, h, w) -> (b * t, 3 * c, h, w): frames t-1, t, t+1 of each instant side by side in channels
    (channel k * c + ci: frame t - 1 + k), zero frames beyond both ends."""
    b, c, t, h, w = x.shape
    x = F.pad(x.transpose(1, 2), (0, 0, 0, 0, 0, 0, 1, 1))  # (b, t + 2, c, h, w)
    return torch.stack([x[:, k:k + t] for k in range(3)], dim=2).view(b * t, 3 * c, h, w)


class FrameConv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state_dict) whose 3x3x3, stride-1, padding-1 case on the CPU runs as
    one 2-D convolution over the instants, the three neighbouring frames of each stacked in channels.

    The same sums in another order: at batch 1 and small frames torch sends a 3-D convolution to its slow
    generic kernel (oneDNN only above N*C*T*H = 20480), 3-4x slower forward and 2.5-4x slower with backward
    than oneDNN's 2-D one here. The stacked frames that the convolution keeps for backward are rebuilt from
    the input then (``recomputable``), so training holds what the 3-D convolution holds.
    (b, in_channels, t, h, w) -> (b, out_channels, t, h, w); other configurations and devices: ``nn.Conv3d``.
    """

    def forward(self, x):
        if (x.device.type != 'cpu' or self.kernel_size != (3, 3, 3) or self.stride != (1, 1, 1)
                or self.padding != (1, 1, 1) or self.dilation != (1, 1, 1) or self.groups != 1
                or self.padding_mode != 'zeros' or x.dim() != 5):
            return super().forward(x)
        b, _, t, h, w = x.shape
        weight = self.weight.transpose(1, 2).reshape(self.out_channels, 3 * self.in_channels, 3, 3)
        with recomputed_outputs():
            y = F.conv2d(recomputable(_time_neighbours, x), weight, self.bias, padding=1)
        return y.view(b, t, self.out_channels, h, w).transpose(1, 2)


def cpu_channels_last(x):
    """A 4-d ``x`` in channels_last (NHWC) memory on the CPU, unchanged elsewhere: oneDNN's convolutions of the
    wide reconstruction layers run 1.2x (64 channels at LR) to 2x (64 -> 3 at HR) faster on NHWC than on NCHW.
    Same values; the layout follows the tensor through the convolutions that come after it."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == 'cpu' and x.dim() == 4 else x


_is_compiling = getattr(torch.compiler, 'is_compiling', None) or torch._dynamo.is_compiling  # torch < 2.3


def _tracing():
    """True inside torch.export, torch.compile or torch.jit.trace."""
    return _is_compiling() or torch.jit.is_tracing()


def per_image(fn, x):
    """``fn(x)`` for a batch of images (b, ...), one image at a time when autograd is off: the high-resolution
    layers at the end of a network then hold one frame's activations instead of every frame's, which is where
    inference peaks; with autograd all at once (every activation is kept for backward anyway), and all at once
    when traced or compiled, where a loop over the batch would fix the graph's batch size."""
    if torch.is_grad_enabled() or _tracing() or x.shape[0] == 1:
        return fn(x)
    return torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])


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


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the residual branch of whole samples with probability ``p`` and
    rescale the kept ones by 1/(1-p); identity in eval mode. (b, ...) -> (b, ...)."""

    def __init__(self, p=0.):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0. or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self):
        return f'p={self.p}'


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on (..., dim), the transformer feed-forward of the Swin blocks."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def window_pair(size):
    """An int or a (rows, columns) pair -> (rows, columns): window and shift sizes of the Swin helpers."""
    return (size, size) if isinstance(size, int) else tuple(size)


def window_partition(x, window_size):
    """(b, h, w, c) -> (b * h/wh * w/ww, wh*ww, c), windows in row-major order; ``window_size`` an int
    (square windows) or (wh, ww)."""
    wh, ww = window_pair(window_size)
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)


def window_reverse(windows, window_size, h, w):
    """Inverse of ``window_partition``: (b * nW, wh*ww, c) -> (b, h, w, c)."""
    wh, ww = window_pair(window_size)
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h, w, window_size, shift_size, device=None):
    """Attention mask (nW, wh*ww, wh*ww) for windows shifted by ``shift_size``: 0 within a region, -100 across.

    After the cyclic shift, a window at the bottom/right border holds pixels from opposite borders; the
    mask keeps them from attending to each other. Window and shift: an int or (rows, columns); a zero
    shift along one axis makes that axis one region.
    """
    (wh, ww), (sh, sw) = window_pair(window_size), window_pair(shift_size)
    img = torch.zeros(1, h, w, 1, device=device)
    rows = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    cols = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    for i, hs in enumerate(rows):
        for j, ws in enumerate(cols):
            img[:, hs, ws, :] = 3 * i + j
    regions = window_partition(img, (wh, ww)).squeeze(-1)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.).masked_fill(mask == 0, 0.)


class ShiftedWindowMasks:
    """Shifted-window masks by feature size: the stored ``attn_mask`` buffer at the size a block was built
    for (official checkpoints carry it), computed once per other (size, device) and cached."""

    def __init__(self, window_size, shift_size, built_size):
        self.window_size, self.shift_size, self.built_size = window_size, shift_size, tuple(built_size)
        self.cache = {}

    def __call__(self, stored, size, device):
        if not self.shift_size:
            return None
        if tuple(size) == self.built_size:
            return stored
        key = (tuple(size), device)
        if key not in self.cache:
            self.cache[key] = shifted_window_mask(*size, self.window_size, self.shift_size, device=device)
        return self.cache[key]


def window_attention(q, k, v, bias, mask=None, scale=None):
    """softmax(q k^T * scale + bias [+ mask]) v in every window of a batch of images, fused.

    q (b * nW, heads, Nq, d), k and v (b * nW, heads, Nkv, d); ``bias`` (heads, Nq, Nkv), the same in every
    window; ``mask`` None or (nW, Nq, Nkv), per window position (shifted windows); ``scale`` None for
    d ** -0.5. Returns (b * nW, heads, Nq, d). The windows of one image share bias and mask, so (window, head)
    fold into one axis: bias and mask then broadcast over the images without a copy per window, and
    ``scaled_dot_product_attention`` runs its fused kernels (3x faster on the CPU than the explicit softmax).
    """
    bw, heads, n_q, _ = q.shape
    if mask is None:
        bias = bias.unsqueeze(0)
    else:
        nw = mask.shape[0]
        bias = (bias + mask.unsqueeze(1)).reshape(1, nw * heads, n_q, -1)
        q, k, v = (t.reshape(bw // nw, nw * heads, t.shape[2], -1) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale)
    return out.reshape(bw, heads, n_q, -1)


def tokens_to_map(x, size):
    """(b, h*w, c) tokens -> (b, c, h, w) map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)


def mean_offset_magnitude(net):
    """Mean |offset| in pixels over the modulated deformable convs of ``net`` in their last training
    forward, or None when it has none."""
    values = [m.last_offset.abs().mean() for m in net.modules()
              if isinstance(m, ModulatedDeformConv2d) and m.last_offset is not None]
    return float(torch.stack(values).mean()) if values else None
