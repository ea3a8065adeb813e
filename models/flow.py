"""Optical flow for the flow-guided networks (MSTT, STARnet): a CPU estimator and a torch warp.

Convention (pyflow's, which MSTT and STARnet were trained with): ``compute_flow(img1, img2)`` returns
an (H, W, 2) float32 array (u, v) in pixels of the given images, u along x (columns, +right) and v
along y (rows, +down), such that img2 sampled at (x + u, y + v) matches img1. ``flow_warp(feat2,
flow)`` therefore brings frame 2's content onto frame 1's grid (backward warping).

Backends (``backend=``):

- ``c2f``: Ce Liu's coarse-to-fine variational flow as pyflow computes it (``models/c2f.py``, a numba
  port, bit-identical to pyflow on the real LR pairs of ../shared/specs/pyflow/cases.npz), with the
  official settings of MSTT and STARnet (alpha 0.012, ratio 0.75, minWidth 20, 7 outer, 1 inner, 30 SOR
  iterations, RGB). Frames must be at least pyflow's smallest size (27 pixels wide with these settings;
  ``models.c2f``); smaller ones are a ValueError naming the minimum (pyflow itself crashes there).
- ``pyflow``: the same, through a real pyflow build (``import pyflow``; not on PyPI, the PyPI project of
  that name is unrelated), when one is installed.
- ``auto`` (the networks' default): ``pyflow`` when a real pyflow imports, else ``c2f``.
- ``opencv_dis`` and ``opencv_farneback``: fast approximate flows (OpenCV's DIS, preset MEDIUM, and
  Farneback, on the grey image), not the flows the official weights were trained with. Mean end-point
  error against pyflow on the eight cases of cases.npz (flows of 0.02-3.7 px on average): DIS 0.03-0.53 px,
  Farneback 0.04-1.9 px. They run in 1-7 ms a pair (64x112 to 180x320) against c2f's 32-360 ms.

Approximate backends, compared on real frames (opencv-python-headless 5.0, one thread; LR frames = PIL
bicubic x1/4 of the real ground truth in ../shared/data, MSTT's training degradation; pairs two frames
apart, MSTT's input spacing):

====================  ==============  ============  ==============  ==========================
backend               warping error   EPE, smooth   EPE, smooth     time per pair
                      (real frames)   flow <= 3 px  flow <= 8 px    160x160 / 80x80
====================  ==============  ============  ==============  ==========================
zero flow             0.0474          1.32          3.52            -
opencv_dis (MEDIUM)   0.0111          0.18          0.31            1.7 ms / 0.3 ms
opencv_farneback      0.0116          0.13          0.35            3.5 ms / 0.8 ms
DIS ULTRAFAST / FAST  0.0149/0.0139   0.48/0.49     1.24/1.05       0.1-0.3 ms
====================  ==============  ============  ==============  ==========================

Warping error: mean |I1 - warp(I2, flow(I1, I2))| (RGB in [0, 1], pixels sampled inside the
frame), averaged over 22 clips (16 Vimeo septuplets at 112x64, Vid4's four at 180x144, Jilin-189
001 at 160x160, toflow at 320x180), 3 pairs each. EPE (LR pixels, 6-pixel border excluded): an LR
frame of Jilin 001, Vid4 calendar and foliage resampled by a known smooth random flow.

Flows may be cached on disk (``cache_dir``): one ``.npy`` per image pair, keyed by a hash of both
images' bytes and the backend, so augmented crops of the same frames never collide.
"""
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .c2f import coarse2fine_flow

PYFLOW_PARAMS = dict(alpha=0.012, ratio=0.75, minWidth=20, nOuterFPIterations=7, nInnerFPIterations=1,
                     nSORIterations=30, colType=0)
C2F_PARAMS = dict(alpha=0.012, ratio=0.75, min_width=20, n_outer=7, n_inner=1, n_sor=30, col_type=0)  # the same
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
BACKENDS = ('auto', 'c2f', 'pyflow', 'opencv_dis', 'opencv_farneback')

DIS_MIN_SIZE = 16  # OpenCV's DIS rejects some frames below this; smaller ones are edge-padded


def resolve_backend(backend='auto'):
    """The concrete backend ``backend`` stands for (``auto`` -> pyflow if a real pyflow imports, else c2f)."""
    if backend not in BACKENDS:
        raise ValueError(f'unknown flow backend {backend!r}; known: {", ".join(BACKENDS)}')
    if backend != 'auto':
        return backend
    try:
        import pyflow
    except ImportError:
        return 'c2f'
    # The unrelated PyPI package of that name imports too.
    return 'pyflow' if hasattr(pyflow, 'coarse2fine_flow') else 'c2f'


def _as_float(img):
    img = np.asarray(img)
    return img.astype(np.float64) / 255. if img.dtype == np.uint8 else img.astype(np.float64)


def _as_grey_uint8(img):
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img * 255.), 0, 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def _flow(img1, img2, backend):
    if backend == 'c2f':
        u, v, _ = coarse2fine_flow(_as_float(img1), _as_float(img2), **C2F_PARAMS)
        return np.stack((u, v), axis=-1)
    if backend == 'pyflow':
        import pyflow
        u, v, _ = pyflow.coarse2fine_flow(np.ascontiguousarray(_as_float(img1)),
                                          np.ascontiguousarray(_as_float(img2)), *PYFLOW_PARAMS.values())
        return np.stack((u, v), axis=-1)
    grey1, grey2 = _as_grey_uint8(img1), _as_grey_uint8(img2)
    if backend == 'opencv_dis':
        h, w = grey1.shape
        pad = ((0, max(DIS_MIN_SIZE - h, 0)), (0, max(DIS_MIN_SIZE - w, 0)))
        grey1, grey2 = np.pad(grey1, pad, mode='edge'), np.pad(grey2, pad, mode='edge')
        return cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM).calc(grey1, grey2, None)[:h, :w]
    return cv2.calcOpticalFlowFarneback(grey1, grey2, None, **FARNEBACK_PARAMS)


def compute_flow(img1, img2, backend='auto', cache_dir=None):
    """Flow from ``img1`` to ``img2`` (see the module docstring for the convention).

    img1, img2: (H, W, 3) RGB, uint8 or float in [0, 1]. Returns (H, W, 2) float32 (u, v) in pixels.
    """
    backend = resolve_backend(backend)
    if img1.shape != img2.shape or img1.ndim != 3 or img1.shape[2] != 3:
        raise ValueError(f'expected two (H, W, 3) RGB images of one size, got {img1.shape} and {img2.shape}')
    if cache_dir is None:
        return _flow(img1, img2, backend).astype(np.float32)
    key = hashlib.sha1(backend.encode())
    for img in (img1, img2):
        img = np.ascontiguousarray(img)
        key.update(f'{img.shape}{img.dtype}'.encode())
        key.update(img.tobytes())
    path = Path(cache_dir) / f'{key.hexdigest()}.npy'
    if path.exists():
        return np.load(path)
    flow = _flow(img1, img2, backend).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Loader workers may write the same pair at once: write aside, then rename atomically.
    fd, tmp = tempfile.mkstemp(suffix='.npy', dir=path.parent)
    with os.fdopen(fd, 'wb') as f:
        np.save(f, flow)
    os.replace(tmp, path)
    return flow


def clip_flows(frames, backend='auto', cache_dir=None):
    """Flows of every adjacent pair of a clip, in MSTT's official layout.

    frames: sequence of n (H, W, 3) RGB images. Returns ``(forward, backward)``, two lists of n-1
    (H, W, 2) float32 arrays: forward[i] = flow(I_i, I_i+1) (warps F_i+1 onto frame i) and
    backward[i] = flow(I_i+1, I_i) (warps F_i onto frame i+1).
    """
    forward = [compute_flow(a, b, backend, cache_dir) for a, b in zip(frames[:-1], frames[1:])]
    backward = [compute_flow(b, a, backend, cache_dir) for a, b in zip(frames[:-1], frames[1:])]
    return forward, backward


def stack_clip_flows(forward, backward):
    """``clip_flows``' two lists as one (n-1, 2, H, W, 2) float32 array (dim 1: forward, backward)."""
    return np.stack((np.stack(forward), np.stack(backward)), axis=1)


@dataclass(frozen=True)
class FlowInputs:
    """The optical flows a flow-guided network takes besides its frames (``VideoNetwork.extra_inputs``).

    Called with ``lq`` (n, 3, h, w) (one clip, as loader workers call it on a sample) or (b, n, 3, h, w) (a
    batch), float in [0, 1] on any device; returns ``{'flows': (..., n-1, 2, h, w, 2)}`` float32 on the CPU,
    per clip ``stack_clip_flows(*clip_flows(frames, backend, cache_dir))``. A frozen dataclass, so that
    DataLoader workers receive it pickled.
    """
    backend: str = 'auto'
    cache_dir: str = None
    keys = ('flows',)

    def __call__(self, lq):
        frames = lq.detach().float().cpu().movedim(-3, -1).numpy()
        clips = frames[None] if frames.ndim == 4 else frames
        flows = np.stack([stack_clip_flows(*clip_flows(list(clip), self.backend, self.cache_dir)) for clip in clips])
        return {'flows': torch.from_numpy(flows[0] if frames.ndim == 4 else flows)}


def flow_warp(x, flow, align_corners_quirk=True, interp_mode='bilinear', padding_mode='zeros'):
    """Sample ``x`` at (x + u, y + v): (b, c, h, w) and flow (b, h, w, 2) in pixels -> (b, c, h, w).

    The official MSTT/STARnet ``flow_warp`` normalises the sampling grid with (W - 1, H - 1), the
    align_corners=True convention, but calls ``grid_sample`` with its default align_corners=False.
    So a pixel p is read at p * W / (W - 1) - 0.5, not p: zero flow is not the identity, but a
    stretch about the centre by up to half a pixel. ``align_corners_quirk=True`` reproduces that
    (trained weights expect it); ``False`` samples exactly at p + flow.
    """
    b, c, h, w = x.shape
    if flow.shape != (b, h, w, 2):
        raise ValueError(f'flow must be {(b, h, w, 2)} for x {tuple(x.shape)}, got {tuple(flow.shape)}')
    # The grid stays in at least float32: in half precision, positions near 640 px are off by ~0.3 px.
    dtype = torch.promote_types(torch.promote_types(x.dtype, flow.dtype), torch.float32)
    grid_y, grid_x = torch.meshgrid(torch.arange(h, device=x.device, dtype=dtype),
                                    torch.arange(w, device=x.device, dtype=dtype), indexing='ij')
    gx = 2. * (grid_x + flow[..., 0]) / max(w - 1, 1) - 1.
    gy = 2. * (grid_y + flow[..., 1]) / max(h - 1, 1) - 1.
    return F.grid_sample(x.to(dtype), torch.stack((gx, gy), dim=3).to(dtype), mode=interp_mode,
                         padding_mode=padding_mode, align_corners=not align_corners_quirk).to(x.dtype)
