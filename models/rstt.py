"""RSTT: Real-time Spatial Temporal Transformer for space-time video super-resolution (Geng et al., CVPR 2022).

Re-implementation of llmpass/RSTT @44c9782 ``models/RSTT.py::RSTT`` with its parts ``models/layers.py``
(``WindowAttention3D``, ``VSTSREncoderTransformerBlock``, ``VSTSRDecoderTransformerBlock``, ``EncoderLayer``,
``DecoderLayer``, ``InputProj``, ``Downsample``, ``Upsample``). Attribute names follow the official ones,
so the released ``checkpoints/RSTT-{S,M,L}/*.pth`` load with ``strict=True``, unconverted. The three sizes
of ``configs/RSTT-{S,M,L}.yml`` differ only in the blocks per stage (4, 6, 8): ``RSTT(size='S')`` etc.
(4,485,275 / 6,079,895 / 7,674,515 parameters).

Pipeline (embed_dim C = 96, n = 4 LR frames in, 2n - 1 = 7 HR frames out, x4):
1. ``input_proj``: conv 3 -> C + LeakyReLU(0.01) per frame, zero padding of the features to a multiple of
   2^(stages - 1) = 8.
2. Encoder: 4 stages of Swin blocks whose windows span all n frames (4x4 pixels x n frames of tokens,
   relative position bias over (frame, row, column)), a 4x4 stride-2 conv between stages.
3. Decoder: the queries of the 2n - 1 output frames start as the deepest features of the input frames,
   with the mean of each neighbouring pair in between; 4 stages of blocks, each self-attention over the
   2n - 1 frames then cross-attention to the encoder stage of the same resolution (keys at the input
   instants 0, 2, 4, 6 of the output timeline), a 2x2 transposed conv between stages.
4. Crop of the padding, Zooming Slow-Mo's reconstruction (``back_RBs`` residual blocks, 0 officially;
   2 x PixelShuffle, HRconv, conv_last), plus a trilinear upsampling of the LR clip.

Official behaviour, reproduced:
- The global residual is ``F.interpolate(..., mode='trilinear', align_corners=False)`` of the LR clip to
  (2n - 1, 4h, 4w): bilinear in space, and in time output frame 2k is not LR frame k (the sampling grid
  of align_corners=False; MSITF has the same).
- Inside every block the features are zero-padded (after the LayerNorm) to a multiple of the window and
  the padded tokens take part in attention unmasked, as in Video Swin; only the wrapped-around regions of
  shifted windows are masked (-100).
- A stage whose feature size is not larger than the window along one axis uses that size as the window
  along it and does not shift along it (``get_window_size``, per axis).
- ``downsample.3`` (the last encoder stage's downsampling conv) is built, stored in the checkpoints, and
  never used: it is frozen here (``requires_grad=False``), which changes nothing of the official training,
  where it never receives a gradient.
- The number of input frames is fixed at construction (``num_frames``, 4): the position-bias tables are
  sized by it. Other counts raise a ValueError (the official forward fails on a reshape).
- Any LR size runs through the internal padding; nothing needs padding outside. The output is not clamped
  (eval_vid4.py clamps afterwards).
Beyond the official code: where a window shrinks to a feature smaller than it (LR sides of 24 pixels or
less for four stages), the official position bias no longer fits the window and its forward fails; here
the bias of the smaller window is read from the same table at its own relative positions, so small sizes
run. Wherever the official forward runs, the two agree. The decoder's initial queries take the features'
dtype (the official ``torch.zeros`` is always float32). Dropout layers (all rates 0 in every official
configuration) are left out; stochastic depth (0.1) is kept.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import VideoNetwork
from .common import (
    DropPath,
    Mlp,
    cpu_channels_last,
    pad_to_multiple,
    shifted_window_mask,
    window_attention,
    window_pair,
)
from .registry import NETWORKS
from .zsm import add_reconstruction, interleave, upsample

SIZES = {'S': 4, 'M': 6, 'L': 8}  # Swin blocks per stage, configs/RSTT-{S,M,L}.yml
HEADS = (2, 4, 8, 16, 16, 8, 4, 2)


def window_and_shift(size, window, shift):
    """The window and shift used at feature size (h, w): per axis, a side not larger than the window becomes
    the window, unshifted (official ``get_window_size``)."""
    used = [(s, 0) if s <= ws else (ws, sh) for s, ws, sh in zip(size, window, shift)]
    return tuple(u[0] for u in used), tuple(u[1] for u in used)


def frame_windows(x, window):
    """(b, d, h, w, c) -> (b * nW, d * wh * ww, c): for each window position (row-major), its tokens in all
    d frames, frame by frame."""
    b, d, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, d, h // wh, wh, w // ww, ww, c).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(-1, d * wh * ww, c)


def frame_windows_reverse(windows, window, b, h, w):
    """Inverse of ``frame_windows``: (b * nW, d * wh * ww, c) -> (b, d, h, w, c)."""
    wh, ww = window
    x = windows.view(b, h // wh, w // ww, -1, wh, ww, windows.shape[-1]).permute(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(b, -1, h, w, windows.shape[-1])


def relative_position_index(frames_q, frames_kv, window, table_window):
    """(frames_q * wh * ww, frames_kv * wh * ww) indices into a bias table of (2 frames_q - 1) (2 th - 1)
    (2 tw - 1) rows built for ``table_window`` (th, tw): queries at frames 0 .. frames_q - 1, keys at frames
    0, s, 2s, .. with s = (frames_q + 1) // frames_kv (the input instants on the output timeline)."""
    (wh, ww), (th, tw) = window, table_window

    def coords(frames):
        grid = torch.meshgrid(frames, torch.arange(wh), torch.arange(ww), indexing='ij')
        return torch.stack(grid).flatten(1)

    step = (frames_q + 1) // frames_kv
    rel = coords(torch.arange(frames_q))[:, :, None] - coords(torch.arange(0, frames_q, step))[:, None, :]
    return ((rel[0] + frames_q - 1) * (2 * th - 1) * (2 * tw - 1) + (rel[1] + th - 1) * (2 * tw - 1)
            + rel[2] + tw - 1)


class WindowAttention3D(nn.Module):
    """Multi-head attention of the query tokens of a window (all its frames) to the key tokens of the same
    window, with a learnt bias per relative (frame, row, column) offset and head (official
    ``WindowAttention3D``; self-attention when q and kv are the same tokens).

    forward(q, kv, window, mask): q (b * nW, frames_q * wh * ww, dim), kv (b * nW, frames_kv * wh * ww, dim),
    ``window`` the (wh, ww) in use, mask None or (nW, Nq, Nkv) additive -> (b * nW, Nq, dim).
    Scores scaled by head_dim ** -0.5; q and kv (keys and values) are separate projections with biases.
    """

    def __init__(self, dim, frames_q, frames_kv, window_size, num_heads):
        super().__init__()
        self.frames_q, self.frames_kv, self.window_size = frames_q, frames_kv, tuple(window_size)
        self.num_heads = num_heads
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * frames_q - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads))
        # persistent, as officially: the buffer is in the released checkpoints
        self.register_buffer('relative_position_index',
                             relative_position_index(frames_q, frames_kv, self.window_size, self.window_size))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
        self.smaller_windows = {}

    def position_bias(self, window):
        """(heads, Nq, Nkv) bias for windows of size ``window`` (the built one, or one shrunk to the feature)."""
        if window == self.window_size:
            index = self.relative_position_index
        else:
            key = (window, self.relative_position_index.device)
            if key not in self.smaller_windows:
                self.smaller_windows[key] = relative_position_index(
                    self.frames_q, self.frames_kv, window, self.window_size).to(key[1])
            index = self.smaller_windows[key]
        n_q, n_kv = index.shape
        return self.relative_position_bias_table[index.reshape(-1)].view(n_q, n_kv, -1).permute(2, 0, 1)

    def forward(self, q, kv, window, mask=None):
        bw, n_q, c = q.shape
        n_kv, heads = kv.shape[1], self.num_heads
        q = self.q(q).view(bw, n_q, heads, c // heads).transpose(1, 2)
        k, v = self.kv(kv).view(bw, n_kv, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = window_attention(q, k, v, self.position_bias(window), mask)
        return self.proj(out.transpose(1, 2).reshape(bw, n_q, c))


def windowed_attention(attn, q, kv, window, shift, mask):
    """``attn`` over the (shifted) windows of q (b, d1, h, w, c) and kv (b, d2, h, w, c; None: q itself),
    zero-padded to a multiple of ``window`` and cropped back -> (b, d1, h, w, c). ``mask`` applies when the
    windows shift."""
    b, _, h, w, _ = q.shape
    pad_h, pad_w = (-h) % window[0], (-w) % window[1]
    shifted = any(shift)

    def windows(x):
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(2, 3))
        return frame_windows(x, window)

    q_windows = windows(q)
    out = attn(q_windows, q_windows if kv is None else windows(kv), window, mask if shifted else None)
    out = frame_windows_reverse(out, window, b, h + pad_h, w + pad_w)
    if shifted:
        out = torch.roll(out, shifts=shift, dims=(2, 3))
    return out[:, :, :h, :w]


class EncoderBlock(nn.Module):
    """Official ``VSTSREncoderTransformerBlock``: LayerNorm, (shifted-)window self-attention over the n frames,
    residual; LayerNorm, MLP, residual. forward(x, mask): x (b, n, h, w, dim) -> same."""

    def __init__(self, dim, num_heads, num_frames, window_size, shift_size, mlp_ratio=2., drop_path=0.):
        super().__init__()
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_frames, num_frames, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, mask):
        window, shift = window_and_shift(x.shape[2:4], self.window_size, self.shift_size)
        x = x + self.drop_path(windowed_attention(self.attn, self.norm1(x), None, window, shift, mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Official ``VSTSRDecoderTransformerBlock``: LayerNorm, window self-attention over the 2n - 1 output
    frames, residual; cross-attention of LayerNorm(x) to LayerNorm(encoder features), residual; LayerNorm,
    MLP, residual. forward(x, kv, mask_q, mask_qkv): x (b, 2n-1, h, w, dim), kv (b, n, h, w, dim) -> like x."""

    def __init__(self, dim, num_heads, num_frames, window_size, shift_size, mlp_ratio=2., drop_path=0.):
        super().__init__()
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        out_frames = 2 * num_frames - 1
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = WindowAttention3D(dim, out_frames, out_frames, window_size, num_heads)
        self.attn2 = WindowAttention3D(dim, out_frames, num_frames, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, kv, mask_q, mask_qkv):
        window, shift = window_and_shift(x.shape[2:4], self.window_size, self.shift_size)
        x = x + self.drop_path(windowed_attention(self.attn1, self.norm1(x), None, window, shift, mask_q))
        x = x + self.drop_path(windowed_attention(self.attn2, self.norm2(x), self.norm_kv(kv), window, shift,
                                                  mask_qkv))
        return x + self.drop_path(self.mlp(self.norm3(x)))


def frame_masks(size, window, shift, frames_q, frames_kv, device):
    """Shifted-window mask over frames: the 2-d mask of ``shifted_window_mask`` at the size padded to the
    window, tiled (nW, frames_q * wh * ww, frames_kv * wh * ww): the regions are the same in every frame."""
    h, w = (-(-s // ws) * ws for s, ws in zip(size, window))
    return shifted_window_mask(h, w, window, shift, device).repeat(1, frames_q, frames_kv)


class EncoderLayer(nn.Module):
    """``depth`` encoder blocks, every second one with windows shifted by half. (b, n, dim, h, w) -> same."""

    def __init__(self, dim, depth, num_heads, num_frames, window_size, mlp_ratio, drop_path):
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(s // 2 for s in window_size)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, num_frames, window_size, (0, 0) if i % 2 == 0 else self.shift_size,
                         mlp_ratio, drop_path[i])
            for i in range(depth))

    def forward(self, x):
        b, n, _, h, w = x.shape
        mask = frame_masks((h, w), *window_and_shift((h, w), self.window_size, self.shift_size), n, n, x.device)
        x = x.permute(0, 1, 3, 4, 2)
        for block in self.blocks:
            x = block(x, mask)
        return x.permute(0, 1, 4, 2, 3)


class DecoderLayer(nn.Module):
    """``depth`` decoder blocks (shifted every second). forward(x, kv): x (b, 2n-1, dim, h, w), kv (b, n, dim,
    h, w) the encoder stage of the same size -> like x."""

    def __init__(self, dim, depth, num_heads, num_frames, window_size, mlp_ratio, drop_path):
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(s // 2 for s in window_size)
        self.blocks = nn.ModuleList(
            DecoderBlock(dim, num_heads, num_frames, window_size, (0, 0) if i % 2 == 0 else self.shift_size,
                         mlp_ratio, drop_path[i])
            for i in range(depth))

    def forward(self, x, kv):
        d1, d2, (h, w) = x.shape[1], kv.shape[1], x.shape[-2:]
        window, shift = window_and_shift((h, w), self.window_size, self.shift_size)
        mask_q = frame_masks((h, w), window, shift, d1, d1, x.device)
        mask_qkv = frame_masks((h, w), window, shift, d1, d2, x.device)
        x, kv = x.permute(0, 1, 3, 4, 2), kv.permute(0, 1, 3, 4, 2)
        for block in self.blocks:
            x = block(x, kv, mask_q, mask_qkv)
        return x.permute(0, 1, 4, 2, 3)


class PerFrame(nn.Module):
    """2-d layers applied to every frame, kept as an ``nn.Sequential`` under the official attribute ``name``
    (``input_proj.proj``, ``downsample.i.conv``, ``upsample.i.deconv``). (b, d, c, h, w) -> (b, d, c', h', w')."""

    def __init__(self, name, *layers):
        super().__init__()
        self.layers_name = name
        setattr(self, name, nn.Sequential(*layers))

    def forward(self, x):
        y = getattr(self, self.layers_name)(x.flatten(0, 1))
        return y.view(*x.shape[:2], *y.shape[1:])


@NETWORKS.register('RSTT')
class RSTT(VideoNetwork):
    """RSTT: ``forward(x)``, x (b, num_frames, 3, h, w) RGB in [0, 1], any h, w -> (b, 2 num_frames - 1, 3, 4h,
    4w), frames [I1, I1.5, I2, ..., In], nominally [0, 1], not clamped.

    Args (defaults: the official class's, whose depths are RSTT-L's):
        size: 'S', 'M' or 'L', the official configurations: ``depths`` [4] * 8, [6] * 8 or [8] * 8 (the
            other arguments are the same in the three configs and the class defaults). None: ``depths``.
        in_chans, embed_dim: input channels and the width of every stage.
        depths: blocks per stage, encoder stages then decoder stages (an even count; 2^(stages/2 - 1)
            is the multiple the features are padded to).
        num_heads: heads per stage; num_frames: input frames; window_sizes: (rows, columns) per stage.
        mlp_ratio: MLP expansion; drop_path_rate: stochastic depth, rising over the encoder blocks and
            falling back over the decoder's; back_RBs: residual blocks before the upsampling (0).
    """

    def __init__(self, size=None, in_chans=3, embed_dim=96, depths=(8,) * 8, num_heads=HEADS, num_frames=4,
                 window_sizes=((4, 4),) * 8, mlp_ratio=2., drop_path_rate=0.1, back_RBs=0):
        super().__init__()
        if size is not None:
            if size not in SIZES:
                raise ValueError(f"size must be one of {', '.join(SIZES)} or None, got {size!r}")
            if list(depths) != [8] * 8:
                raise ValueError(f'size {size!r} sets depths; give one of size and depths, not both')
            depths = (SIZES[size],) * 8
        if len(depths) % 2 or not depths or not len(num_heads) == len(window_sizes) == len(depths):
            raise ValueError(f'depths ({len(depths)}), num_heads ({len(num_heads)}) and window_sizes '
                             f'({len(window_sizes)}) need one entry per stage, an even number of stages')
        stages = len(depths) // 2
        self.num_frames = num_frames
        self.size_multiple = 2 ** (stages - 1)
        windows = [window_pair(w) for w in window_sizes]
        rates = torch.linspace(0, drop_path_rate, sum(depths[:stages])).tolist()
        falling = rates[::-1]
        layer = dict(dim=embed_dim, num_frames=num_frames, mlp_ratio=mlp_ratio)

        self.input_proj = PerFrame('proj', nn.Conv2d(in_chans, embed_dim, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.encoder_layers = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i in range(stages):
            self.encoder_layers.append(EncoderLayer(depth=depths[i], num_heads=num_heads[i], window_size=windows[i],
                                                    drop_path=rates[sum(depths[:i]):sum(depths[:i + 1])], **layer))
            self.downsample.append(PerFrame('conv', nn.Conv2d(embed_dim, embed_dim, 4, 2, 1)))
        self.downsample[-1].requires_grad_(False)  # built and stored officially, never used
        self.decoder_layers = nn.ModuleList()
        self.upsample = nn.ModuleList()
        dec = depths[stages:]
        for i in range(stages):
            self.decoder_layers.append(DecoderLayer(depth=dec[i], num_heads=num_heads[stages + i],
                                                    window_size=windows[stages + i],
                                                    drop_path=falling[sum(dec[:i]):sum(dec[:i + 1])], **layer))
            if i < stages - 1:
                self.upsample.append(PerFrame('deconv', nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)))
        add_reconstruction(self, embed_dim, back_RBs, 64)
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
        b, n, c, h, w = x.shape
        if n != self.num_frames:
            raise ValueError(f'RSTT was built for {self.num_frames} input frames (num_frames), got {n}')
        base = F.interpolate(x.transpose(1, 2), (2 * n - 1, 4 * h, 4 * w), mode='trilinear',
                             align_corners=False).transpose(1, 2)
        feat, _ = pad_to_multiple(self.input_proj(x), self.size_multiple)
        skips = []
        for i, layer in enumerate(self.encoder_layers):
            feat = layer(feat)
            skips.append(feat)
            if i < len(self.encoder_layers) - 1:
                feat = self.downsample[i](feat)
        y = interleave(feat, ((feat[:, :-1] + feat[:, 1:]) / 2).unsqueeze(2))
        for i, layer in enumerate(self.decoder_layers):
            y = layer(y, skips[-i - 1])
            if i < len(self.upsample):
                y = self.upsample[i](y)
        out = upsample(self, self.recon_trunk(cpu_channels_last(y[..., :h, :w].flatten(0, 1))))
        return out.view(b, 2 * n - 1, 3, 4 * h, 4 * w) + base
