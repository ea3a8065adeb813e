"""SwinV2 residual Swin Transformer blocks: the Swin2SR body (Conde et al., 2022) without its upsampler.

What makes them SwinV2 rather than SwinIR's Swin (V1) blocks:
- cosine attention: softmax(cos(q, k) * exp(min(logit_scale, log 100)) + bias), one learnt
  ``logit_scale`` per head;
- the relative-position bias comes from a small MLP (``cpb_mlp``) on log-spaced relative coordinates,
  squashed as ``16 * sigmoid``, instead of a learnt table;
- residual post-norm: ``x + norm(attn(x))`` and ``x + norm(mlp(x))``.

Tokens are pixels (patch size 1): a feature map (b, c, h, w) becomes (b, h*w, c). ``h`` and ``w`` must be
multiples of the window size; callers pad. Every size works: the shifted-window masks are rebuilt for
sizes other than the ``img_size`` the module was built for (the stored ``attn_mask`` buffer, kept for
checkpoint compatibility, is the mask at ``img_size``).

Attribute names follow the official Swin2SR code, so its checkpoints load unchanged.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import (
    DropPath,
    Mlp,
    ShiftedWindowMasks,
    shifted_window_mask,
    tokens_to_map,
    window_attention,
    window_partition,
    window_reverse,
)


class WindowAttentionV2(nn.Module):
    """Multi-head cosine self-attention inside windows, with a continuous position bias.

    ``forward(x, mask)``: x (b * nW, ws*ws, dim), mask None or (nW, ws*ws, ws*ws) -> (b * nW, ws*ws, dim).
    The qkv projection has a bias on q and v only (``q_bias``, ``v_bias``), none on k.
    """

    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))

        # Relative offsets (-(ws-1)..ws-1 per axis) scaled to [-8, 8], then log-spaced into [-1, 1].
        rel = torch.arange(-(window_size - 1), window_size, dtype=torch.float32) / (window_size - 1) * 8
        table = torch.stack(torch.meshgrid(rel, rel, indexing='ij'), dim=-1).unsqueeze(0)
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
        self.register_buffer('relative_coords_table', table)  # (1, 2ws-1, 2ws-1, 2)

        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                            indexing='ij')).flatten(1)
        rel_idx = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer('relative_position_index',
                             rel_idx[..., 0] * (2 * window_size - 1) + rel_idx[..., 1])  # (ws*ws, ws*ws)

        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self):
        """(num_heads, ws*ws, ws*ws) bias in (0, 16)."""
        n = self.window_size ** 2
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias).reshape(b_, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # cosine similarity times the head's scale: the scale goes onto the normalised queries
        q = F.normalize(q, dim=-1) * torch.clamp(self.logit_scale, max=math.log(100.)).exp()
        out = window_attention(q, F.normalize(k, dim=-1), v, self.position_bias(), mask, scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(b_, n, c))


class SwinV2Block(nn.Module):
    """(Shifted-)window attention and MLP, each a post-normed residual branch.

    ``forward(x, size)``: x (b, h*w, dim) tokens of a (h, w) map, h and w multiples of the window -> same.
    ``input_resolution`` is the feature size the module is built for: as in Swin2SR, a window not
    smaller than it shrinks to it without shift, and the stored ``attn_mask`` is the mask at that size.
    """

    def __init__(self, dim, num_heads, window_size=7, shift_size=0, mlp_ratio=4., drop_path=0.,
                 input_resolution=(64, 64)):
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if min(self.input_resolution) <= window_size:
            window_size, shift_size = min(self.input_resolution), 0
        self.window_size, self.shift_size = window_size, shift_size
        self.register_buffer('attn_mask', shifted_window_mask(*self.input_resolution, window_size, shift_size)
                             if shift_size > 0 else None)
        self.masks = ShiftedWindowMasks(window_size, shift_size, self.input_resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionV2(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, size):
        h, w = size
        b, l, c = x.shape
        shortcut = x
        x = x.view(b, h, w, c)
        mask = None
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = self.masks(self.attn_mask, (h, w), x.device)
        x = window_reverse(self.attn(window_partition(x, self.window_size), mask), self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(self.norm1(x.reshape(b, l, c)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class SwinV2Stage(nn.Module):
    """``depth`` blocks alternating plain and half-window-shifted windows. (b, h*w, dim) -> same."""

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, drop_path, input_resolution):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinV2Block(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                        drop_path[i], input_resolution)
            for i in range(depth)])

    def forward(self, x, size):
        for block in self.blocks:
            x = block(x, size)
        return x


class PatchEmbed(nn.Module):
    """Map to tokens: 1x1 conv ``proj`` (patch size 1), optional LayerNorm. (b, c, h, w) -> (b, h*w, c)."""

    def __init__(self, dim, norm=False):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return x if self.norm is None else self.norm(x)


class RSTBV2(nn.Module):
    """Residual Swin Transformer block: a SwinV2 stage, back to a map, 3x3 ``conv``, 1x1 ``patch_embed``, + input.

    ``forward(x, size)``: (b, h*w, dim) -> (b, h*w, dim).
    """

    def __init__(self, dim, depth, num_heads, window_size, mlp_ratio, drop_path, input_resolution):
        super().__init__()
        self.residual_group = SwinV2Stage(dim, depth, num_heads, window_size, mlp_ratio, drop_path,
                                          input_resolution)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim)

    def forward(self, x, size):
        return self.patch_embed(self.conv(tokens_to_map(self.residual_group(x, size), size))) + x


class Swin2SRBody(nn.Module):
    """Swin2SR's feature trunk: conv, patch embedding (+LayerNorm), RSTBs, LayerNorm, conv, long skip.

    ``forward(x)``: (b, in_chans, h, w), h and w multiples of ``window_size`` -> (b, embed_dim, h, w).

    Defaults are those of the official ``Swin2SR`` class. ``img_size`` only fixes the stored attention
    masks (and, as in Swin2SR, collapses windows not smaller than it); any input size runs.
    ``drop_path_rate``: stochastic depth rising linearly from 0 over all blocks (active in training only).
    Init as Swin2SR: Linear weights truncated normal (std 0.02) with zero bias, LayerNorms 1/0, convs
    PyTorch's default.
    """

    def __init__(self, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6), window_size=7,
                 mlp_ratio=4., drop_path_rate=0.1, img_size=64):
        super().__init__()
        resolution = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, norm=True)
        self.layers = nn.ModuleList([
            RSTBV2(embed_dim, depth, heads, window_size, mlp_ratio,
                   rates[sum(depths[:i]):sum(depths[:i + 1])], resolution)
            for i, (depth, heads) in enumerate(zip(depths, num_heads))])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.conv_first(x)
        size = tuple(x.shape[-2:])
        tokens = self.patch_embed(x)
        for layer in self.layers:
            tokens = layer(tokens, size)
        return self.conv_after_body(tokens_to_map(self.norm(tokens), size)) + x
