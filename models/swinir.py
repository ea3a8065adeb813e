"""SwinIR building blocks: shifted-window self-attention with relative position bias, stacked into
residual Swin Transformer blocks (RSTB) and a SwinIR feature body.

Follows SwinIR (Liang et al., ICCVW 2021; JingyunLiang/SwinIR ``network_swinir.py``) as STDAN copies it
(littlewhitesea/STDAN ``rstb.py``, ``trans_enc_dec.py``); attribute names and buffer layout match those
``state_dict`` files, so checkpoints load strictly. Dropout layers of SwinIR are left out: every STDAN and
SwinIR configuration sets their rates to 0. Stochastic depth (``drop_path_rate``) is kept: STDAN trains with 0.1.

Tokens travel as (b, h*w, c); images as (b, c, h, w). h and w must be multiples of ``window_size``.
"""
import torch
import torch.nn as nn

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


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows, with a learned bias per relative position and head.

    forward(x, mask) : x (b*nW, ws*ws, dim), mask None or (nW, ws*ws, ws*ws) additive -> (b*nW, ws*ws, dim).
    Scores are scaled by head_dim ** -0.5.
    """

    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
        coords = coords.flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        # persistent, as in SwinIR: the buffer is part of the official state_dict
        self.register_buffer('relative_position_index', rel[..., 0] * (2 * window_size - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, n, n)
        out = window_attention(q, k, v, bias, mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinTransformerBlock(nn.Module):
    """LayerNorm -> (shifted) window attention -> residual, LayerNorm -> MLP -> residual.

    forward(x, x_size) : x (b, h*w, dim), x_size (h, w) -> (b, h*w, dim).

    ``input_resolution`` is the image size the block is built for (SwinIR's ``img_size``). As in SwinIR, a
    resolution not larger than the window shrinks the window to it and disables the shift, and the
    shifted-window mask for that resolution is stored as the ``attn_mask`` buffer (it is in official
    checkpoints). Masks for other sizes are computed on first use and cached per (size, device), so the
    block runs on any multiple of the window size; SwinIR recomputes them at every call.
    """

    def __init__(self, dim, input_resolution, num_heads, window_size=8, shift_size=0, mlp_ratio=2.0,
                 drop_path=0.0):
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if min(self.input_resolution) <= window_size:
            shift_size, window_size = 0, min(self.input_resolution)
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer('attn_mask', shifted_window_mask(*self.input_resolution, window_size, shift_size)
                             if shift_size else None)
        self.masks = ShiftedWindowMasks(window_size, shift_size, self.input_resolution)

    def forward(self, x, x_size):
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, ws), mask=self.masks(self.attn_mask, x_size, x.device))
        y = window_reverse(y, ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, every second one with windows shifted by ws/2. (b, h*w, dim) -> same."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=2.0, drop_path=(0.0,)):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio=mlp_ratio, drop_path=drop_path[i])
            for i in range(depth))

    def forward(self, x, x_size):
        for block in self.blocks:
            x = block(x, x_size)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin blocks, then a 3x3 conv on the image, plus the input.

    forward(x, x_size) : x (b, h*w, dim) -> (b, h*w, dim).
    """

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=2.0, drop_path=(0.0,)):
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window_size, mlp_ratio,
                                         drop_path)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x, x_size):
        y = tokens_to_map(self.residual_group(x, x_size), x_size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """(b, c, h, w) -> LayerNorm over channels of the (b, h*w, c) tokens (patch size 1)."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinIRBody(nn.Module):
    """SwinIR's feature body between two feature spaces (STDAN's ``Spatial_decoder``).

    forward(x) : (b, in_chans, h, w) -> (b, in_chans, h, w); h, w multiples of ``window_size``.
    conv 3x3 in_chans -> embed_dim, then LayerNorm, ``len(depths)`` RSTBs, LayerNorm, conv 3x3 plus the
    embedded input (long skip), and conv 3x3 embed_dim -> in_chans (no skip around the whole body).

    Args:
        depths: number of Swin blocks in each RSTB; num_heads: heads of each RSTB (a list, or one int for all).
        img_size: resolution the stored shifted-window masks are computed for (see ``SwinTransformerBlock``).
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over all blocks of the body.
    """

    def __init__(self, in_chans=64, embed_dim=72, depths=(6, 6), num_heads=6, window_size=8, mlp_ratio=2.0,
                 img_size=32, drop_path_rate=0.1):
        super().__init__()
        if isinstance(num_heads, int):
            num_heads = [num_heads] * len(depths)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        self.layers = nn.ModuleList(
            RSTB(embed_dim, (img_size, img_size), depth, heads, window_size, mlp_ratio,
                 drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])])
            for i, (depth, heads) in enumerate(zip(depths, num_heads)))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)

    def forward(self, x):
        x = self.conv_first(x)
        x_size = x.shape[-2:]
        y = self.patch_embed(x)
        for layer in self.layers:
            y = layer(y, x_size)
        y = tokens_to_map(self.norm(y), x_size)
        return self.conv_last(self.conv_after_body(y) + x)
