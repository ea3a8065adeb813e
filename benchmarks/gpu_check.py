"""The GPU path, checked in one command: correctness, speed, data loading, inference and the official code.

    python benchmarks/gpu_check.py --smoke      # the same code paths on the CPU at tiny sizes, about a minute
    python benchmarks/gpu_check.py              # on a CUDA machine: every section within --budget (280 s)
    python benchmarks/gpu_check.py --official-root /tmp/official --sections speed official --networks ZSM

Prints one Markdown table per section with the seconds it took, and writes one JSON (``--json``, default
experiments/benchmarks/gpu_check_<cuda|cpu>.json, git-ignored) that holds every number or the reason it is
missing. Tolerances are relative to the output's scale: max |x - reference| / max |reference|.

1. **Correctness** of every tests/networks/<stem>.yml tiny configuration (offset convolutions re-drawn so
   that deformable offsets are a pixel or two: at their zero init the deformable sampling would go
   untested), 1 x 4 frames at the yml's first size, TF32 off: CUDA fp32 against the CPU (1e-4); bf16 (5e-2)
   and fp16 (1e-2) autocast against fp32 on the device, and whether every ``ModulatedDeformConv2d`` still
   returned float32 under autocast; ``channels_last`` (``engine.performance.prepare_network``) against
   contiguous fp32 (1e-4). Then ``ModulatedDeformConv2d`` with impl 'torchvision' (the CUDA kernel on CUDA)
   against impl 'sampled' (grid_sample + matmul) at three shapes, offsets up to 4 px (some samples outside
   the frame): values (1e-5) and the gradients of input, offset features and every parameter (1e-4).
2. **Speed at the official sizes**: ``bench_networks.forward_benchmark`` of each registered network
   (constructor defaults) at LR 64x112 (MSTT 80x160, its official multiple of 80), batch 1, 4 -> 7 frames,
   in fp32, bf16 and bf16 + ``torch.compile`` (compiled last, in what is left of the section's time):
   ms per clip (median), clips/s, peak memory of the first call (flows are computed on the CPU beforehand
   and not timed). ``bench_networks.train_benchmark`` in fp32 and bf16 at the patch and batch of the
   network's official recipe (``RECIPES``; STARnet whole 64x112 frames): samples/s and peak memory.
3. **Data keeps up**: each recipe's training set as its YAML builds it (its workers, on-the-fly degradation,
   augmentation, ``SeededSamples`` with the network's ``extra_inputs()``: c2f flows for MSTT and STARnet),
   reading the real frames of ../shared/data (Vimeo septuplets, also as triplets; Jilin-189 clip 001 as a
   189_vime7 clip), pinned memory on CUDA, through ``bench_loader.samples_per_second``; its samples/s
   against the section-2 training step's (target: 2x or more).
4. **Inference** through ``engine.inference.run_inference`` (what ``test.py --input`` runs) of the 720p clip
   of ../shared/data/toflow_720p_clip (its first ``--inference-frames`` frames, BI x4 to 320x180 LR, written
   as PNG frames; 720p out) with ``--inference-network`` (MSITF, random weights): fp32 whole frames, then
   ``--max-memory`` at half of what that run added (below the untiled need), then fp16 and bf16. Peak memory
   (``engine.memory.MemoryMeter``: CUDA max allocated) against the budget; outputs against fp32 untiled in
   8-bit levels and PSNR.
5. **Official implementations side by side** (``--official-root DIR``: a scratch folder outside the
   repository holding the repositories below under their GitHub names; never needed, never committed;
   without it this section is one line). Each official class is built with its test script's constructor,
   our network loads its weights (``load_state_dict(strict=True)``, after our offset convolutions were
   re-drawn as in 1; official and ours then give the same output, checked at 1e-4 with TF32 off), and both
   run the same 4 -> 7 clip, fp32, in one process: the official under ``no_grad`` as its test scripts, ours
   through ``predict`` under ``inference_mode``. Ratios are official ms / ours ms (above 1: ours faster), for
   ours fp32 timed here and ours bf16 and bf16 + compile from section 2.

| network | repository @ commit (folder) | module :: class (constructor) | fed with | stand-ins |
|---|---|---|---|---|
| ZSM | Mukosame/Zooming-Slow-Mo-CVPR-2020 @a053e08 | codes/models/modules/Sakuya_arch.py :: LunaTokis(64, 7, 8, 5, 40) | x (1, 4, 3, h, w) | ``_ext``: DCNv2's dcn_v2_forward as torchvision deform_conv2d |
| MSTT | XY-boy/MSTT-STVSR @62f1b7a | models/Model_arch.py :: MSTTr(nf=64, nframes=3, groups=8, front_RBs=5, back_RBs=20) (train.py) | x, f_flow, b_flow: lists of 3 (1, h, w, 2) pixel flows | ``_ext`` as ZSM |
| MSITF | carpenterChina/MSITF @007f117 | models/modules/mystvsr07.py :: Net(64, 7, 8, 5, 40) (viemo_test.py) | x | none (torchvision already); needs timm, einops |
| STDAN | littlewhitesea/STDAN @1f10a1d | codes/models/modules/sttrans.py :: STTrans2(scale=4, n_inputs=4, n_outputs=7, nf=64, embed_dim=72, window_size=8) (codes/test.py) | x | ``_ext``: dsp_v2_forward as deform_conv2d with one-hot grouped weights (the modulated im2col); dconv.modulated_deform_conv (it refuses CPU tensors) as deform_conv2d; needs timm |
| STARnet | alterzero/STARnet @cf7a0bc | fbpn_sr_rbpn_v4_ref.py :: Net(256, 64, 3, 5, 4) (eval.py), its FBPNSR_RBPN_V4 built with pretrained=False (no RBPN weight file) | the 3 pairs of the clip in one batch: t_im1, t_im2 ImageNet-normalised, t_flow_f, t_flow_b as -flow / 150, train=False (our ``pair_inputs``) | none |
| TemporalLIIF | ggcr/Super-Temporal-LIIF @0253720 | liif-3d/liif.py :: LIIF(encoder edsr-baseline no_upsampling, imnet mlp [256] * 4) (configs/train-tfg-complete.yaml) | gen_feat((x - 0.5) / 0.5 as (1, 3, 4, h, w)), then query_rgb on the 7 x 4h x 4w queries (our ``video_queries``) 65,536 at a time, as test.py's batched_predict | the ``models`` package that only exists as a .pyc: models/models.py's register/make, then models.edsr, models.mlp; ``tensorboardX`` (utils.py's training logs) when not installed |
| RSTT | llmpass/RSTT @44c9782 | models/RSTT.py :: RSTT(embed_dim=96, depths=[8] * 8, num_heads=[2, 4, 8, 16, 16, 8, 4, 2], window_sizes=[[4, 4]] * 8, back_RBs=0) (configs/RSTT-L.yml) | x | none; needs timm |
| TMNet | CS-GangXu/TMNet @69ef5b3 | models/modules/STVSR.py :: TMNet(64, 7, 8, 5, 40) (utils/evaluation_single_frame.py) | x, t=None (the middle instants) | ``_ext`` as ZSM |

Official packages named like ours (``models``, ``utils``, ``data``) are imported with ours set aside for the
moment (``official_imports``); hard-coded ``.cuda()`` calls go to the CPU in ``--smoke`` runs only.

**Time budget.** Sections run in one spawned worker process, each with a share of ``--budget`` (correctness
12 %, speed 43 %, loader 15 %, inference 13 %, official 17 %, over the sections that run) that ends at a
cumulative deadline, so what one section leaves goes to the next; at its deadline the worker is killed with
its process group (compile and loader workers included) and the section's remaining measurements are
reported as skipped. Repeats are few (GPU: forward 2 warm-up + 5 timed calls, compile 3 + 5, training step
2 + 3). The default 280 s keeps the whole run within 5 minutes on one H100/H200.

**--smoke** runs every section on the CPU: tiny configurations, LR 16x16, 1-2 repeats, torch.compile for
the first network only (inductor's CPU build takes minutes a network), loader workers 1 and batch 2,
4 inference frames; what needs CUDA (CUDA vs CPU, fp16, half-precision inference) is skipped with its
reason. tests/test_gpu_check.py runs it.

**On the lent GPU** (15 minutes of device time in all; this run is one call of about 5 minutes, which leaves
one rerun). ../shared does not travel, so stage what the run reads into the checkout first, here:

    python benchmarks/gpu_check.py --stage experiments/gpu_check --official-root /tmp/official

(``/tmp/official``: the eight repositories above, e.g. from the search tool's fetch, each in a folder named
after the repository; staging copies their .py and .yaml/.yml files only, about 1.4 MB, with 7 frames of the
720p clip, the Vimeo septuplets and Jilin-189 clip 001: about 30 MB.) Then one device call, with
carry ["experiments/gpu_check"] and a timeout_s of 420:

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --data-root experiments/gpu_check/data --official-root experiments/gpu_check/official --json $OUT/gpu_check.json 2>$OUT/gpu_check.log

and give the machine back.

**Packages.** Besides PyTorch, torchvision, OpenCV, PyYAML, tqdm, matplotlib and TensorBoard the script
imports numpy and Pillow (torchvision's), numba (``models/c2f.py`` imports it: the c2f flows of MSTT and
STARnet) and, for the official code, timm, einops and tensorboardX. The H200 image lists numpy, Pillow,
numba, timm and einops (device/KINDS.md), so nothing needs carrying. Where one is missing the run goes on:
without numba a stand-in lets the modules import, the speed rows of flow networks use OpenCV DIS flows (a
note says so) and the loader rows that need c2f are skipped with one line; official rows whose imports fail
are skipped with the missing module's name; tensorboardX gets a stand-in. PyAV and lmdb are not imported
here (frames are written as PNG, datasets read from folders).
"""
import argparse
import contextlib
import dataclasses
import functools
import gc
import importlib
import importlib.util
import inspect
import json
import math
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

NUMBA_MISSING = 'numba is not installed: no c2f flows (models/c2f.py)'


def _numba_or_stand_in():
    """numba's version, or None after installing a stand-in: ``models/c2f.py`` imports numba at import
    time, so without one no network would import; with the stand-in a c2f flow raises ModuleNotFoundError."""
    try:
        import numba
        return numba.__version__
    except ImportError:
        def njit(*args, **options):
            def compile_(fn):
                @functools.wraps(fn)
                def missing(*a, **k):
                    raise ModuleNotFoundError(NUMBA_MISSING)
                return missing
            return compile_(args[0]) if args and callable(args[0]) else compile_
        sys.modules['numba'] = types.SimpleNamespace(njit=njit, __version__=None)
        return None


NUMBA_VERSION = _numba_or_stand_in()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from torchvision.ops import deform_conv2d  # noqa: E402

import bench_loader  # noqa: E402
import bench_networks as bench  # noqa: E402
from data import build_dataset  # noqa: E402
from data.io import read_image, write_image  # noqa: E402
from data.transforms import degrade  # noqa: E402
from engine.cli import one_line  # noqa: E402
from engine.inference import InferenceOptions, open_input, run_inference  # noqa: E402
from engine.memory import MemoryMeter  # noqa: E402
from engine.performance import AMP_DTYPES, autocast, prepare_network  # noqa: E402
from engine.training import SeededSamples  # noqa: E402
from models import NETWORKS, build_network  # noqa: E402
from models.common import ModulatedDeformConv2d  # noqa: E402
from models.temporal_liif import normalise as liif_normalise  # noqa: E402
from utils.coords import video_queries  # noqa: E402

SECTIONS = ('correctness', 'speed', 'loader', 'inference', 'official')
TITLES = {'correctness': 'Correctness', 'speed': 'Speed at the official sizes', 'loader': 'Data keeps up',
          'inference': 'Inference through engine.inference', 'official': 'Official implementations side by side'}
SHARES = {'correctness': 0.12, 'speed': 0.43, 'loader': 0.15, 'inference': 0.13, 'official': 0.17}
TOLERANCES = {'cuda_vs_cpu': 1e-4, 'bf16': 5e-2, 'fp16': 1e-2, 'channels_last': 1e-4, 'deform_values': 1e-5,
              'deform_grads': 1e-4, 'official_vs_ours': 1e-4}
OFFICIAL_SIZE, SMOKE_SIZE = (64, 112), (16, 16)
OWN_SIZE = {'MSTT': (80, 160)}  # its official LR must be a multiple of 80 (ours pads 64x112 to 80x160 inside)
VIMEO_LR = (64, 112)  # whole Vimeo-90K LR frames (recipes with lq_size 0)
# Each network's official training recipe (options/train), for the training step's patch and batch (section 2)
# and the loader (section 3). TemporalLIIF: the Vimeo recipe, as the official Sentinel-2 one reads the SPOT
# targets of the official repository, which ../shared/data does not hold.
RECIPES = {'MSITF': 'msitf_vimeo90k_bdx4', 'MSTT': 'mstt_jilin189_bix4', 'STARnet': 'starnet_ref_vimeo90k_pilx4',
           'starnet_noref': 'starnet_vimeo90k_pilx4', 'STDAN': 'stdan_vimeo90k_bix4',
           'TemporalLIIF': 'tliif_vimeo90k_bix4', 'ZSM': 'zsm_vimeo90k_bix4', 'RSTT': 'rstt_l_vimeo90k_bix4',
           'rstt_l': 'rstt_l_vimeo90k_bix4', 'rstt_m': 'rstt_m_vimeo90k_bix4', 'rstt_s': 'rstt_s_vimeo90k_bix4',
           'TMNet': 'tmnet_vimeo90k_bix4'}
DEFORM_CASES = [  # batch, in, out, h, w, deformable groups, padding, dilation
    (2, 16, 8, 12, 20, 4, 1, 1),
    (1, 8, 8, 9, 7, 1, 2, 2),
    (1, 64, 64, 32, 32, 8, 1, 1),  # the networks' alignment layer
]
OUR_PACKAGES = ('models', 'data', 'engine', 'utils', 'options')
QUERY_CHUNK = 65536  # TemporalLIIF.render's default chunk


# ---------------------------------------------------------------- the worker process and the time budget

class Budget:
    """Cumulative deadlines: section k ends at start + the shares of sections 1..k (of those that run)."""

    def __init__(self, total, sections):
        self.start = time.monotonic()
        scale = total / sum(SHARES[s] for s in sections) if sections else 0
        self.share, self.end, end = {}, {}, self.start
        for section in sections:
            self.share[section] = SHARES[section] * scale
            end += self.share[section]
            self.end[section] = end


class Worker:
    """One spawned process that runs ``fn(**kwargs)`` calls one at a time and sends each result back. A
    call still running at its deadline kills the process with its process group (loader and compile
    workers too); the next call starts a fresh one. A process that dies fails only the call it ran."""

    def __init__(self, setup):
        self.setup, self.proc, self.conn = setup, None, None

    def call(self, label, fn, deadline, **kwargs):
        left = deadline - time.monotonic()
        if left <= 0:
            return {'skipped': 'the section\'s time budget was spent'}
        if self.proc is None:
            ctx = multiprocessing.get_context('spawn')
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_serve, args=(child, self.setup))
            self.proc.start()
            child.close()
        start = time.monotonic()
        try:
            self.conn.send((fn, kwargs))
            if not self.conn.poll(left):
                self.stop()
                return {'skipped': f'stopped at the section\'s time budget after {time.monotonic() - start:.0f} s'}
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.stop()
            return {'error': f'the worker process died (exit code {code})'}
        finally:
            print(f'    {label}: {time.monotonic() - start:.1f} s', file=sys.stderr, flush=True)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.is_alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:  # not yet its own group leader
                self.proc.kill()
        self.proc.join()
        self.conn.close()
        self.proc = None

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(10)
        self.stop()


def _serve(conn, setup):
    os.setpgrp()  # the worker leads a process group, so that a kill reaches what it started
    os.dup2(2, 1)  # stdout carries the tables: everything the worker prints goes to stderr
    # what the worker starts (DataLoader workers) forks, as under main.py: a spawned one would import all again
    multiprocessing.set_start_method('fork', force=True)
    torch.set_num_threads(setup['threads'])
    while True:
        task = conn.recv()
        if task is None:
            return
        fn, kwargs = task
        _reset_backends()
        try:
            result = fn(**kwargs)
        except Exception as e:  # noqa: BLE001  (reported in the table; the next measurement goes on)
            traceback.print_exc()
            result = {'error': f'{type(e).__name__}: {one_line(e)}'.splitlines()[0][:300]}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        conn.send(result)


def _reset_backends():
    """PyTorch's defaults before every measurement (``prepare_network`` turns cudnn.benchmark on for good)."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def tf32_off():
    """Exact float32 matrix products and convolutions on CUDA (TF32 keeps 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(got, want):
    """max |got - want| / max |want|, on the CPU in float64."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def judged(error, tolerance):
    return {'rel_err': error, 'tol': tolerance, 'ok': error <= tolerance}


def exercise_offsets(net, seed=0):
    """Re-draw the offset convolutions of every ``ModulatedDeformConv2d`` so that offsets are a pixel or
    two and masks vary (their zero init samples the plain grid with mask 0.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ModulatedDeformConv2d):
                conv = getattr(m, m.offset_name)
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3 / math.sqrt(conv.weight[0].numel()))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    return net


# ---------------------------------------------------------------- 1. correctness (worker side)

def correctness_task(spec, size, device):
    device = torch.device(device)
    torch.manual_seed(0)
    net = exercise_offsets(build_network(spec).eval())
    lq = torch.rand(1, 4, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        extras = net.inputs_for(lq)  # flows, computed once on the CPU and fed to every run

    def run(x, dtype=None):
        with torch.inference_mode(), autocast(x.device, dtype):
            return net.predict(x, extras).float()

    reference = run(lq)
    row = {'size': list(size), 'output_scale': float(reference.abs().max())}
    if device.type == 'cuda':
        net.to(device)
        lq = lq.to(device)
        with tf32_off():
            on_device = run(lq)
        row['cuda_vs_cpu'] = judged(relative_error(on_device, reference), TOLERANCES['cuda_vs_cpu'])
    else:
        row['cuda_vs_cpu'] = {'skipped': 'CUDA only (device is cpu)'}
        on_device = reference
    for amp in ('bf16', 'fp16'):
        if amp == 'fp16' and device.type != 'cuda':
            row[amp] = {'skipped': 'fp16 autocast runs on CUDA only (engine.performance.check_amp)'}
            continue
        dtypes = []
        hooks = [m.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
                 for m in net.modules() if isinstance(m, ModulatedDeformConv2d)]
        out = run(lq, AMP_DTYPES[amp])
        for hook in hooks:
            hook.remove()
        row[amp] = {**judged(relative_error(out, on_device), TOLERANCES[amp]),
                    'deform_convs_fp32': all(d == torch.float32 for d in dtypes) if dtypes else None}
    prepare_network(net, bench.performance_options(channels_last=True))
    with tf32_off():
        row['channels_last'] = judged(relative_error(run(lq), on_device), TOLERANCES['channels_last'])
    return row


def deform_conv_task(device):
    """``ModulatedDeformConv2d`` impl 'torchvision' against impl 'sampled', same weights and inputs."""
    device = torch.device(device)
    rows = []
    for b, cin, cout, h, w, groups, padding, dilation in DEFORM_CASES:
        torch.manual_seed(0)
        layers = {impl: ModulatedDeformConv2d(cin, cout, 3, padding=padding, dilation=dilation,
                                              deformable_groups=groups, impl=impl) for impl in ('torchvision', 'sampled')}
        exercise_offsets(layers['torchvision'])
        with torch.no_grad():  # offsets up to ~4 px: some taps sample outside the frame
            layers['torchvision'].conv_offset_mask.bias.mul_(2)
        layers['sampled'].load_state_dict(layers['torchvision'].state_dict())
        g = torch.Generator().manual_seed(1)
        x, feat = torch.rand(b, cin, h, w, generator=g), torch.rand(b, cin, h, w, generator=g)
        cotangent = None
        results = {}
        for impl, layer in layers.items():
            layer.to(device)
            xi, fi = x.to(device).requires_grad_(), feat.to(device).requires_grad_()
            with tf32_off():
                out = layer(xi, fi)
                if cotangent is None:
                    cotangent = torch.randn(out.shape, generator=g).to(device)
                (out * cotangent).sum().backward()
            results[impl] = {'out': out, 'x': xi.grad, 'feat': fi.grad,
                             **{name: p.grad for name, p in layer.named_parameters()}}
        tv, sampled = results['torchvision'], results['sampled']
        grads = {name: relative_error(sampled[name], tv[name]) for name in tv if name != 'out'}
        worst = max(grads, key=grads.get)
        rows.append({'case': {'batch': b, 'in': cin, 'out': cout, 'h': h, 'w': w, 'groups': groups,
                              'padding': padding, 'dilation': dilation},
                     'values': judged(relative_error(sampled['out'], tv['out']), TOLERANCES['deform_values']),
                     'grads': {**judged(grads[worst], TOLERANCES['deform_grads']), 'worst': worst, 'all': grads}})
    return {'device': str(device), 'rows': rows}


# ---------------------------------------------------------------- 2. speed (worker side)

def speed_forward_task(spec, size, device, threads, warmup, repeat, amp, compile):
    r = bench.forward_benchmark(spec, tuple(size), device, threads, warmup, repeat, flops=False,
                                perf=bench.performance_options(amp, False, compile))
    return {'ms_per_clip': r['fwd_s'] * 1e3, 'clips_per_s': 1 / r['fwd_s'], 'peak_mib': r['peak_mem_mib'],
            'params': r['params'], 'flow_s': r.get('flow_s'), 'seconds': r['seconds'], 'note': r.get('note')}


def speed_train_task(spec, patch, batch, device, threads, warmup, repeat, amp):
    r = bench.train_benchmark(spec, patch, batch, device, threads, warmup, repeat, bench.performance_options(amp))
    if 'skipped' in r:
        return r
    return {'samples_per_s': batch / r['train_s'], 'ms_per_step': r['train_s'] * 1e3, 'peak_mib': r['peak_mem_mib'],
            'patch': patch, 'batch': batch, 'seconds': r['seconds']}


# ---------------------------------------------------------------- 3. loader (worker side)

class IndexedSamples(Dataset):
    """The trainer's ``SeededSamples`` (seeded sampling and augmentation, then the network's extra inputs)
    read by plain indices, seed = index, as ``bench_loader.samples_per_second`` samples them."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[(index, index)]


def local_dataset(train, data_root, tmp):
    """The recipe's training-set spec reading ``data_root`` instead of the full dataset (``tmp``: lists, and
    Jilin-189 clip 001 laid out as a 189_vime7 clip); (spec, what it reads), or (None, why not)."""
    spec = dict(train)
    if spec['type'] in ('Vimeo90KSeptuplet', 'Vimeo90KAnyScale', 'Vimeo90KTriplet'):
        root = data_root / 'vimeo_septuplet'
        keys = sorted(f'{p.parent.name}/{p.name}' for p in (root / 'sequences').glob('*/*') if p.is_dir())
        what = f'{len(keys)} Vimeo septuplets' + (' as triplets (im1..im3)' if spec['type'] == 'Vimeo90KTriplet' else '')
    elif spec['type'] == 'Jilin189Septuplet':
        truth = data_root / 'Jilin-189' / 'test' / '001' / 'truth'
        frames = sorted(truth.glob('*.png'))[:7]
        root, keys, what = tmp / 'jilin', ['001/0001'], 'Jilin-189 clip 001 (7 frames of 640x640)'
        if len(frames) == 7:
            (root / '001' / '0001').mkdir(parents=True)
            for i, frame in enumerate(frames, 1):
                (root / '001' / '0001' / f'im{i}.png').symlink_to(frame.resolve())
    else:
        return None, f'no frames in --data-root for a {spec["type"]} recipe'
    if not keys:
        return None, f'{data_root}: no frames for a {spec["type"]} recipe'
    (tmp / 'keys.txt').write_text(''.join(k + '\n' for k in keys))
    spec.update(root=str(root), list_file=str(tmp / 'keys.txt'))
    return spec, what


def loader_task(recipe, data_root, workers_cap, batch_cap, pin_memory, threads):
    options = yaml.safe_load(Path(recipe).read_text())
    torch.set_num_threads(threads)
    batch = min(options['data']['batch_size'], batch_cap or math.inf)
    workers = min(options['data']['num_workers'], workers_cap if workers_cap is not None else math.inf)
    with tempfile.TemporaryDirectory() as tmp:
        spec, what = local_dataset(options['data']['train'], Path(data_root), Path(tmp))
        if spec is None:
            return {'skipped': what}
        net = build_network(options['network'])  # on the CPU, only to ask for its extra_inputs()
        prepare = net.extra_inputs()
        samples = IndexedSamples(SeededSamples(build_dataset(spec), prepare))
        start = time.perf_counter()
        try:
            samples[0]  # the first sample here: c2f compiles (or loads) its numba kernels before the workers fork
        except ModuleNotFoundError as e:
            return {'skipped': str(e)}
        first_s = time.perf_counter() - start
        # enough batches that the first wave the workers prefetch (2 batches each) does not dominate
        count = max(batch * max(8, 4 * workers), 32) if batch_cap is None else 2 * batch
        rate = bench_loader.samples_per_second(samples, workers, count, batch, pin_memory=pin_memory)
    return {'dataset': spec['type'], 'reads': what, 'lq_size': spec.get('lq_size'),
            'degradation': spec.get('degradation'), 'extra_inputs': None if prepare is None else repr(prepare),
            'workers': workers, 'batch': batch, 'samples': count, 'pin_memory': pin_memory,
            'first_sample_s': first_s, 'samples_per_s': rate}


# ---------------------------------------------------------------- 4. inference (worker side)

def inference_task(spec, lr_dir, out_dir, precision, max_memory, device, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(spec)
    options = InferenceOptions(outputs=(out_dir,), precision=precision, max_memory=max_memory, device=device,
                               progress=False)
    meter = MemoryMeter(device)
    in_use = meter.current()
    summary = {}
    added = meter.measure(lambda: summary.update(run_inference(net, open_input(lr_dir), options)))
    return {'precision': precision, 'max_memory_gb': max_memory, 'tile': summary['tile'],
            'in_use_mib': in_use / 2 ** 20, 'added_mib': added / 2 ** 20, 'peak_mib': (in_use + added) / 2 ** 20,
            'seconds': summary['seconds'], 'frames_out': summary['frames_out'],
            'frames_per_s': summary['frames_out'] / summary['seconds'], 'output_size': summary['output_size']}


# ---------------------------------------------------------------- 5. official implementations (worker side)

@contextlib.contextmanager
def official_imports(root, stand_ins=None):
    """Import official code from ``root``: while the block runs, its packages named like ours (``models``,
    ``utils``, ``data``) are found instead of ours, and ``stand_ins`` (name -> module) answer for what it
    cannot import here (compiled extensions). Afterwards ours are back and every module loaded from
    ``root`` is dropped from ``sys.modules``; the classes built inside keep working."""
    stand_ins = stand_ins or {}
    ours = {name: m for name, m in sys.modules.items() if name.split('.')[0] in OUR_PACKAGES}
    for name in ours:
        del sys.modules[name]
    before, path = set(sys.modules), list(sys.path)
    sys.modules.update(stand_ins)
    # without our checkout on the path: a regular package of ours would win over a namespace one of theirs
    sys.path[:] = [str(root)] + [p for p in path if Path(p or '.').resolve() != ROOT]
    try:
        yield
    finally:
        sys.path[:] = path
        dropped = []
        for name in set(sys.modules) - before:  # decided before any is dropped: a namespace package's path
            module = sys.modules[name]          # is recomputed from its parent's
            places = [getattr(module, '__file__', None) or '', *(getattr(module, '__path__', None) or [])]
            if (name in stand_ins or name.split('.')[0] in OUR_PACKAGES
                    or any(str(p).startswith(str(root)) for p in places)):
                dropped.append(name)
        for name in dropped:
            del sys.modules[name]
        sys.modules.update(ours)


@contextlib.contextmanager
def cuda_calls_to(device):
    """The official code's hard-coded ``.cuda()`` calls go to ``device`` (nothing changes on CUDA)."""
    if device.type == 'cuda':
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(device)
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _tv_deform(input, offset, weight, bias, stride, padding, dilation, mask):
    return deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


def dcn_stand_in():
    """DCNv2's compiled ``_ext`` as far as a forward pass needs it, through torchvision.ops.deform_conv2d
    (whose offset layout, (dy, dx) per group and tap, is DCNv2's)."""
    def dcn_v2_forward(input, weight, bias, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, deformable_groups):
        return _tv_deform(input, offset, weight, bias, (sh, sw), (ph, pw), (dh, dw), mask)

    def dsp_v2_forward(input, offset, mask, kh, kw, sh, sw, ph, pw, dh, dw, deformable_groups):
        # the modulated im2col (channel c*k*k + tap): a deformable conv, one group per input channel, whose
        # weights pick tap t into output channel c*k*k + t
        taps = torch.eye(kh * kw, dtype=input.dtype, device=input.device).view(kh * kw, 1, kh, kw)
        return _tv_deform(input, offset, taps.repeat(input.shape[1], 1, 1, 1), None, (sh, sw), (ph, pw), (dh, dw), mask)

    return types.SimpleNamespace(dcn_v2_forward=dcn_v2_forward, dsp_v2_forward=dsp_v2_forward)


def stdan_modulated_deform_conv(input, offset, mask, weight, bias, stride, padding, dilation, groups,
                                deformable_groups):
    """STDAN's ``dcn_v2.modulated_deform_conv`` (detectron2's, CUDA only) through torchvision."""
    return _tv_deform(input, offset, weight, bias, stride, padding, dilation, mask)


def _build_zsm(root):
    with official_imports(root / 'codes', {'_ext': dcn_stand_in()}):
        return importlib.import_module('models.modules.Sakuya_arch').LunaTokis(64, 7, 8, 5, 40)


def _build_mstt(root):
    with official_imports(root, {'_ext': dcn_stand_in()}):
        return importlib.import_module('models.Model_arch').MSTTr(nf=64, nframes=3, groups=8, front_RBs=5, back_RBs=20)


def _build_msitf(root):
    with official_imports(root):
        return importlib.import_module('models.modules.mystvsr07').Net(64, 7, 8, 5, 40)


def _build_stdan(root):
    with official_imports(root / 'codes', {'_ext': dcn_stand_in()}):
        sttrans = importlib.import_module('models.modules.sttrans')
        importlib.import_module('models.modules.dconv').modulated_deform_conv = stdan_modulated_deform_conv
        return sttrans.STTrans2(scale=4, n_inputs=4, n_outputs=7, nf=64, embed_dim=72, window_size=8)


def _build_starnet(root):
    with official_imports(root):
        v4, ref = importlib.import_module('fbpn_sr_rbpn_v4'), importlib.import_module('fbpn_sr_rbpn_v4_ref')
        ref.FBPNSR_RBPN_V4 = functools.partial(v4.Net, pretrained=False)
        return ref.Net(256, 64, 3, 5, 4)


def _build_temporal_liif(root):
    stand_ins = {}
    if importlib.util.find_spec('tensorboardX') is None:
        stand_ins['tensorboardX'] = types.SimpleNamespace(SummaryWriter=None)
    with official_imports(root / 'liif-3d', stand_ins):
        package = types.ModuleType('models')  # the models/__init__.py the repository lacks
        package.__path__ = [str(root / 'liif-3d' / 'models')]
        sys.modules['models'] = package
        registry = importlib.import_module('models.models')
        package.register, package.make, package.models = registry.register, registry.make, registry.models
        importlib.import_module('models.edsr')
        importlib.import_module('models.mlp')
        liif = importlib.import_module('liif')
        return liif.LIIF({'name': 'edsr-baseline', 'args': {'no_upsampling': True}},
                         {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256, 256, 256, 256]}})


def _build_rstt(root):
    with official_imports(root):
        return importlib.import_module('models').RSTT(embed_dim=96, depths=[8] * 8, num_heads=[2, 4, 8, 16, 16, 8, 4, 2],
                                                      window_sizes=[[4, 4]] * 8, back_RBs=0)


def _build_tmnet(root):
    with official_imports(root, {'_ext': dcn_stand_in()}):
        return importlib.import_module('models.modules.STVSR').TMNet(64, 7, 8, 5, 40)


def _frames(ours, lq, extras):
    return (lq,)


def _mstt_inputs(ours, lq, extras):
    flows = extras['flows']
    return lq, list(flows[:, :, 0].unbind(1)), list(flows[:, :, 1].unbind(1))


def _starnet_inputs(ours, lq, extras):
    return (*ours.pair_inputs(lq, extras), False)


def _liif_inputs(ours, lq, extras):
    n, (h, w) = lq.shape[1], lq.shape[-2:]
    coord, cell = video_queries(n, [k / 2 for k in range(2 * n - 1)], (4 * h, 4 * w), device=lq.device)
    return liif_normalise(lq), coord[None], cell[None]


def _liif_clip(net, inputs):
    """test.py's batched_predict: the features once, then the queries a chunk at a time."""
    inp, coord, cell = inputs
    net.gen_feat(inp)
    return torch.cat([net.query_rgb(coord[:, i:i + QUERY_CHUNK], cell[:, i:i + QUERY_CHUNK])
                      for i in range(0, coord.shape[1], QUERY_CHUNK)], dim=1)


def _liif_check(inputs):
    inp, coord, cell = inputs
    return inp, coord[:, :4096], cell[:, :4096]


@dataclasses.dataclass(frozen=True)
class Official:
    """An official implementation (see the module docstring's table): its folder under --official-root, our
    spec, how to build it from the folder, and the arguments of its forward for one 4 -> 7 clip, which our
    network's ``forward`` (the official signature) takes too. ``clip`` runs the official code on them
    (default: one forward call); ``compared`` gives the arguments of the output comparison (default: the same)."""
    repo: str
    ours: dict
    build: object
    inputs: object = _frames
    clip: object = None
    compared: object = None


OFFICIAL = {
    'ZSM': Official('Zooming-Slow-Mo-CVPR-2020', {'type': 'ZSM'}, _build_zsm),
    'MSTT': Official('MSTT-STVSR', {'type': 'MSTT'}, _build_mstt, _mstt_inputs),
    'MSITF': Official('MSITF', {'type': 'MSITF'}, _build_msitf),
    'STDAN': Official('STDAN', {'type': 'STDAN'}, _build_stdan),
    'STARnet': Official('STARnet', {'type': 'STARnet'}, _build_starnet, _starnet_inputs),
    'TemporalLIIF': Official('Super-Temporal-LIIF', {'type': 'TemporalLIIF'}, _build_temporal_liif, _liif_inputs,
                             _liif_clip, _liif_check),
    'RSTT': Official('RSTT', {'type': 'RSTT'}, _build_rstt),
    'TMNet': Official('TMNet', {'type': 'TMNet'}, _build_tmnet),
}


def smooth_flows(n, h, w, amplitude=3.0, seed=2):
    """(1, n-1, 2, h, w, 2) pixel flows, smooth, up to about ``amplitude`` px (speed does not depend on them)."""
    grid = torch.randn(2 * (n - 1), 2, 5, 5, generator=torch.Generator().manual_seed(seed)) * amplitude
    flows = nn.functional.interpolate(grid, size=(h, w), mode='bilinear', align_corners=False)
    return flows.view(1, n - 1, 2, 2, h, w).permute(0, 1, 2, 4, 5, 3).contiguous()


def _outputs(out):
    return [t for t in (out if isinstance(out, (tuple, list)) else [out]) if torch.is_tensor(t)]


def official_task(name, repo, size, device, threads, warmup, repeat):
    entry, device = OFFICIAL[name], bench.setup(threads, device)
    root = Path(repo)
    if not root.is_dir():
        return {'skipped': f'{root}: not found'}
    try:
        official = entry.build(root)
    except ImportError as e:
        return {'skipped': f'the official code does not import here: {type(e).__name__}: {one_line(e)}'}
    ours = exercise_offsets(build_network(entry.ours))
    row = {'params_official': sum(p.numel() for p in official.parameters()),
           'params_ours': sum(p.numel() for p in ours.parameters())}
    try:
        official.load_state_dict(ours.state_dict(), strict=True)
        row['same_weights'] = True
    except RuntimeError as e:
        row['same_weights'] = False
        row['note'] = f'weights not shared: {one_line(e)}'.splitlines()[0][:200]
    official, ours = official.to(device).eval(), ours.to(device).eval()
    lq = torch.rand(1, 4, 3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    extras = {'flows': smooth_flows(4, *size).to(device)}
    inputs = entry.inputs(ours, lq, extras)

    def run_official():
        with torch.no_grad(), cuda_calls_to(device):
            return entry.clip(official, inputs) if entry.clip else official(*inputs)

    def run_ours():
        with torch.inference_mode():
            return ours.predict(lq, extras)

    for who, fn in (('official', run_official), ('ours', run_ours)):
        row[f'{who}_peak_mib'] = bench.peak_memory_mib(fn, device)
        bench.timings(fn, device, warmup - 1)
        seconds = bench.timings(fn, device, repeat)
        row[f'{who}_ms'], row[f'{who}_seconds'] = statistics.median(seconds) * 1e3, seconds
    if row['same_weights']:
        compared = entry.compared(inputs) if entry.compared else inputs
        with tf32_off(), torch.no_grad(), cuda_calls_to(device):
            got, want = _outputs(ours(*compared)), _outputs(official(*compared))
        row['ours_vs_official'] = judged(max(relative_error(a, b) for a, b in zip(got, want)),
                                         TOLERANCES['official_vs_ours'])
    return row


# ---------------------------------------------------------------- the sections (parent side)

@dataclasses.dataclass
class Check:
    args: argparse.Namespace
    device: str
    worker: Worker
    budget: Budget
    report: dict

    @property
    def smoke(self):
        return self.args.smoke

    def deadline(self, section):
        return self.budget.end[section]

    def selected(self, names):
        chosen = self.args.networks
        return [n for n in names if chosen is None or n in chosen]

    def speed_spec(self, name):
        """(spec, note) of a network for sections 2 and 5: official configuration, or tiny in --smoke; with
        OpenCV DIS flows where numba (c2f) is missing."""
        spec, note = bench.network_spec(name, 'tiny' if self.smoke else 'official')
        takes_flows = 'flow_backend' in inspect.signature(NETWORKS[spec['type']]).parameters
        if NUMBA_VERSION is None and takes_flows and 'flow_backend' not in spec:
            spec, note = {**spec, 'flow_backend': 'opencv_dis'}, f'{NUMBA_MISSING}: OpenCV DIS flows'
        return spec, note

    def size_of(self, spec):
        return SMOKE_SIZE if self.smoke else OWN_SIZE.get(spec['type'], OFFICIAL_SIZE)


def cell(result, key='rel_err', fmt='.1e'):
    """A table cell: the number (with 'over' when a judged value misses its tolerance), or why there is none."""
    if result is None:
        return '-'
    if 'skipped' in result:
        return 'skipped'
    if 'error' in result:
        return 'error'
    value = result.get(key)
    if value is None:
        return '-'
    text = format(value, fmt)
    return text + (' **over**' if result.get('ok') is False else '')


def table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    return '\n'.join(lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def reasons(results):
    """One line per distinct skip reason and error among ``results`` (label, result) pairs."""
    lines = {}
    for label, result in results:
        for kind in ('skipped', 'error'):
            if isinstance(result, dict) and kind in result:
                lines.setdefault(f'{kind}: {result[kind]}', []).append(label)
    return '\n'.join(f'- {text} ({", ".join(labels)})' for text, labels in lines.items())


def section_correctness(check):
    deadline, rows, labelled = check.deadline('correctness'), [], []
    for stem, config in bench.network_configs().items():
        if check.args.networks is not None and stem not in check.args.networks \
                and config['tiny']['type'] not in check.args.networks:
            continue
        size = SMOKE_SIZE if check.smoke else tuple(config['sizes'][0])
        result = check.worker.call(f'correctness {stem}', correctness_task, deadline, spec=config['tiny'], size=size,
                                   device=check.device)
        rows.append({'network': stem, 'spec': config['tiny'], **result})
        labelled += [(f'{stem} {k}', result.get(k, result)) for k in ('cuda_vs_cpu', 'bf16', 'fp16', 'channels_last')]
    deform = check.worker.call('deformable conv', deform_conv_task, deadline, device=check.device)
    result = {'tolerances': TOLERANCES, 'networks': rows, 'deform_conv': deform}

    def dcn(r):
        flags = [r.get(a, {}).get('deform_convs_fp32') for a in ('bf16', 'fp16') if isinstance(r.get(a), dict)]
        flags = [f for f in flags if f is not None]
        return '-' if not flags else ('yes' if all(flags) else '**no**')

    text = [f'Relative to the output scale (max |diff| / max |reference|); tolerances: CUDA vs CPU '
            f'{TOLERANCES["cuda_vs_cpu"]:g}, bf16 {TOLERANCES["bf16"]:g}, fp16 {TOLERANCES["fp16"]:g}, channels_last '
            f'{TOLERANCES["channels_last"]:g} (TF32 off); "over" marks a miss.', '',
            table(['network', 'LR h x w', 'output scale', 'CUDA vs CPU', 'bf16 vs fp32', 'fp16 vs fp32',
                   'channels_last', 'deform convs fp32 under autocast'],
                  [[r['network'], 'x'.join(map(str, r['size'])) if 'size' in r else '-',
                    f'{r["output_scale"]:.3g}' if 'output_scale' in r else cell(r),
                    *(cell(r.get(k, r)) for k in ('cuda_vs_cpu', 'bf16', 'fp16', 'channels_last')), dcn(r)]
                   for r in rows]), '']
    if 'rows' in deform:
        text += [f'ModulatedDeformConv2d impl torchvision ({deform["device"]}) vs sampled (grid_sample): values '
                 f'{TOLERANCES["deform_values"]:g}, gradients {TOLERANCES["deform_grads"]:g}', '',
                 table(['batch, in -> out, h x w', 'groups, padding, dilation', 'values', 'gradients (worst)'],
                       [[f'{c["batch"]}, {c["in"]} -> {c["out"]}, {c["h"]}x{c["w"]}',
                         f'{c["groups"]}, {c["padding"]}, {c["dilation"]}', cell(r['values']),
                         f'{cell(r["grads"])} ({r["grads"]["worst"]})'] for r in deform['rows'] for c in [r['case']]])]
    labelled.append(('deformable conv', deform))
    return result, '\n'.join(text + [reasons(labelled)])


def recipe_of(name):
    return ROOT / 'options' / 'train' / f'{RECIPES[name]}.yml' if name in RECIPES else None


def train_setting(check, name):
    """(patch, batch) of the network's training step: its recipe's lq_size (0: whole Vimeo LR frames) and
    batch_size; bench_networks' defaults without a recipe; 16 and 1 in --smoke."""
    if check.smoke:
        return 16, 1
    recipe = recipe_of(name)
    if recipe is None:
        return 32, bench.OFFICIAL_TRAIN_BATCH.get(name, 16)
    data = yaml.safe_load(recipe.read_text())['data']
    lq_size = data['train'].get('lq_size')
    return (lq_size if lq_size else VIMEO_LR), data['batch_size']


def section_speed(check):
    deadline = check.deadline('speed')
    names = check.args.networks or list(NETWORKS)
    threads = check.args.threads
    fwd = {'warmup': 1, 'repeat': 1} if check.smoke else {'warmup': 2, 'repeat': 5}
    train = {'warmup': 1, 'repeat': 1} if check.smoke else {'warmup': 2, 'repeat': 3}
    compiled = {'warmup': 2, 'repeat': 1} if check.smoke else {'warmup': 3, 'repeat': 5}
    rows = {name: dict(zip(('spec', 'note'), check.speed_spec(name)), network=name, forward={}, train={})
            for name in names}
    for amp in ('fp32', 'bf16'):
        for name, row in rows.items():
            row['size'] = list(check.size_of(row['spec']))
            row['forward'][amp] = check.worker.call(
                f'forward {name} {amp}', speed_forward_task, deadline, spec=row['spec'], size=row['size'],
                device=check.device, threads=threads, amp='off' if amp == 'fp32' else amp, compile='off', **fwd)
    for amp in ('fp32', 'bf16'):
        for name, row in rows.items():
            patch, batch = train_setting(check, name)
            row['train'][amp] = check.worker.call(
                f'train {name} {amp}', speed_train_task, deadline, spec=row['spec'], patch=patch, batch=batch,
                device=check.device, threads=threads, amp='off' if amp == 'fp32' else amp, **train)
    for i, (name, row) in enumerate(rows.items()):
        if check.smoke and i > 0:
            row['forward']['bf16+compile'] = {'skipped': '--smoke compiles the first network only (inductor\'s CPU '
                                                         'build takes minutes a network)'}
            continue
        row['forward']['bf16+compile'] = check.worker.call(
            f'forward {name} bf16+compile', speed_forward_task, deadline, spec=row['spec'], size=row['size'],
            device=check.device, threads=threads, amp='bf16', compile='default', **compiled)

    def params(row):
        counts = [r['params'] for r in row['forward'].values() if 'params' in r]
        return f'{counts[0]:,}' if counts else '-'

    forward_rows, train_rows, labelled = [], [], []
    for name, row in rows.items():
        cells = [name, 'x'.join(map(str, row['size'])), params(row)]
        for mode in ('fp32', 'bf16', 'bf16+compile'):
            r = row['forward'][mode]
            cells += [cell(r, 'ms_per_clip', '.1f'), cell(r, 'clips_per_s', '.1f'), cell(r, 'peak_mib', '.0f')]
            labelled.append((f'{name} {mode}', r))
        flow = row['forward']['fp32'].get('flow_s')
        forward_rows.append(cells + ['-' if flow is None else f'{flow:.3f}', row['note'] or ''])
        t32, t16 = row['train']['fp32'], row['train']['bf16']
        setting = next((r for r in (t32, t16) if 'patch' in r), None)
        train_rows.append([name, '-' if setting is None else 'x'.join(map(str, np.broadcast_to(setting['patch'], 2))),
                           '-' if setting is None else setting['batch'],
                           cell(t32, 'samples_per_s', '.1f'), cell(t32, 'peak_mib', '.0f'),
                           cell(t16, 'samples_per_s', '.1f'), cell(t16, 'peak_mib', '.0f')])
        labelled += [(f'{name} train fp32', t32), (f'{name} train bf16', t16)]
    text = [f'Forward, batch 1, 4 LR frames -> 7 HR frames x4; ms per clip = median of {fwd["repeat"]} calls '
            f'(compiled: {compiled["repeat"]}), peak MiB of the first call; flows on the CPU, not in the ms.', '',
            table(['network', 'LR h x w', 'params', 'fp32 ms', 'fp32 clips/s', 'fp32 MiB', 'bf16 ms', 'bf16 clips/s',
                   'bf16 MiB', 'bf16+compile ms', 'compiled clips/s', 'compiled MiB', 'flows s', 'note'], forward_rows),
            '', 'Training step (training_losses + backward + Adam), the official recipe\'s LR patch and batch:', '',
            table(['network', 'LR patch', 'batch', 'fp32 samples/s', 'fp32 MiB', 'bf16 samples/s', 'bf16 MiB'],
                  train_rows)]
    return {'networks': list(rows.values())}, '\n'.join(text + ['', reasons(labelled)])


def step_rate(check, name, amp):
    speed = check.report['sections'].get('speed', {})
    for row in speed.get('networks', []):
        if row['network'] == name:
            return row['train'].get(amp, {}).get('samples_per_s')
    return None


def section_loader(check):
    deadline, rows = check.deadline('loader'), []
    for name in check.args.networks or list(NETWORKS):
        recipe = recipe_of(name)
        if recipe is None:
            continue
        result = check.worker.call(
            f'loader {RECIPES[name]}', loader_task, deadline, recipe=str(recipe), data_root=str(check.args.data_root),
            workers_cap=1 if check.smoke else None, batch_cap=2 if check.smoke else None,
            pin_memory=check.device == 'cuda', threads=check.args.threads)
        row = {'network': name, 'recipe': RECIPES[name], **result}
        for amp in ('fp32', 'bf16'):
            step = step_rate(check, name, amp)
            row[f'step_{amp}_samples_per_s'] = step
            row[f'ratio_{amp}'] = result['samples_per_s'] / step if step and 'samples_per_s' in result else None
        rows.append(row)

    def num(value, fmt):
        return '-' if value is None else format(value, fmt)

    text = [f'{os.cpu_count()} CPUs. Loader samples/s (first batch untimed) against the section-2 training step\'s '
            'samples/s: ratio = loader / step (target 2 or more).', '',
            table(['recipe', 'reads', 'workers', 'batch', 'loader samples/s', 'step fp32', 'ratio', 'step bf16',
                   'ratio'],
                  [[r['recipe'], r.get('reads', cell(r)), r.get('workers', '-'), r.get('batch', '-'),
                    cell(r, 'samples_per_s', '.1f'), num(r['step_fp32_samples_per_s'], '.1f'), num(r['ratio_fp32'], '.2f'),
                    num(r['step_bf16_samples_per_s'], '.1f'), num(r['ratio_bf16'], '.2f')] for r in rows])]
    return {'recipes': rows}, '\n'.join(text + ['', reasons([(r['recipe'], r) for r in rows])])


def compare_frames(folder, reference):
    """Max and mean |difference| in 8-bit levels and PSNR (None when equal) of two folders of PNG frames."""
    files = sorted(Path(folder).glob('*.png'))
    ref_files = sorted(Path(reference).glob('*.png'))
    if not files or len(files) != len(ref_files):
        return {'error': f'{folder}: {len(files)} frames, the reference {len(ref_files)}'}
    diffs = np.stack([read_image(a).astype(np.float64) - read_image(b) for a, b in zip(files, ref_files)])
    mse = float(np.mean(diffs ** 2))
    return {'max_diff': float(np.abs(diffs).max()), 'mean_diff': float(np.abs(diffs).mean()),
            'psnr': None if mse == 0 else 10 * math.log10(255 ** 2 / mse)}


def section_inference(check):
    args, deadline = check.args, check.deadline('inference')
    clip = args.data_root / 'toflow_720p_clip'
    frames = sorted(clip.glob('*.png'))[:args.inference_frames]
    if not frames:
        return {'skipped': f'{clip}: no frames'}, f'skipped: {clip}: no frames'
    spec, _ = bench.network_spec(args.inference_network, 'tiny' if check.smoke else 'official')
    runs = {}
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
        lr_dir = Path(tmp) / 'lr'
        for frame in frames:
            hr = read_image(frame)[:360, :640] if check.smoke else read_image(frame)  # --smoke: the top-left quarter
            write_image(lr_dir / frame.name, degrade(hr, {'type': 'BI', 'scale': 4}))

        def infer(label, precision, max_memory=None):
            runs[label] = check.worker.call(
                f'inference {label}', inference_task, deadline, spec=spec, lr_dir=str(lr_dir),
                out_dir=str(Path(tmp) / label.replace(' ', '_')), precision=precision, max_memory=max_memory,
                device=check.device, threads=args.threads)
            return runs[label]

        untiled = infer('fp32 whole frames', 'fp32')
        if 'added_mib' in untiled:
            budget_mib = untiled['in_use_mib'] + untiled['added_mib'] / 2
            infer('fp32 --max-memory', 'fp32', budget_mib / 1024)
        else:
            runs['fp32 --max-memory'] = {'skipped': 'the whole-frame run gave no memory need'}
        for precision in ('fp16', 'bf16'):
            if check.device == 'cuda':
                infer(f'{precision} whole frames', precision)
            else:
                runs[f'{precision} whole frames'] = {'skipped': 'half-precision inference runs on CUDA only'}
        reference = Path(tmp) / 'fp32_whole_frames'
        for label, run in runs.items():
            if label != 'fp32 whole frames' and 'frames_out' in run and 'frames_out' in untiled:
                run['vs_fp32_whole_frames'] = compare_frames(Path(tmp) / label.replace(' ', '_'), reference)
            if run.get('max_memory_gb'):
                run['budget_mib'] = run['max_memory_gb'] * 1024
                run['within_budget'] = run['peak_mib'] <= run['budget_mib']

    def num(run, key, fmt):
        value = run.get(key)
        return '-' if value is None else format(value, fmt)

    rows = []
    for label, run in runs.items():
        vs = run.get('vs_fp32_whole_frames', {})
        tile = run.get('tile')
        rows.append([label, cell(run, 'frames_per_s', '.2f'), num(run, 'peak_mib', '.0f'), num(run, 'budget_mib', '.0f'),
                     {True: 'yes', False: '**no**'}.get(run.get('within_budget'), '-'),
                     'whole frame' if 'tile' in run and tile is None else ('x'.join(map(str, tile)) if tile else '-'),
                     num(vs, 'max_diff', '.0f'), num(vs, 'mean_diff', '.3f'),
                     '-' if not vs or 'psnr' not in vs else ('identical' if vs['psnr'] is None else f'{vs["psnr"]:.1f}')])
    size = 'x'.join(map(str, next((r['output_size'] for r in runs.values() if 'output_size' in r), ['?'])))
    text = [f'{args.inference_network} ({"tiny" if check.smoke else "official"} configuration, random weights), '
            f'{len(frames)} frames of {clip.name}{" (top-left 640x360)" if check.smoke else ""} BI x4 to LR, out {size}; peak = memory in use before + what the '
            'run added (CUDA: max allocated); --max-memory = half of what the whole-frame run added, above what '
            'was in use; differences against fp32 whole frames in 8-bit levels.', '',
            table(['run', 'frames/s', 'peak MiB', 'budget MiB', 'within', 'LR tile', 'max diff', 'mean diff', 'PSNR dB'],
                  rows)]
    return ({'network': spec, 'frames': len(frames), 'runs': runs},
            '\n'.join(text + ['', reasons(list(runs.items()))]))


def section_official(check):
    root = check.args.official_root
    if root is None:
        reason = 'no --official-root: the official implementations are not compared'
        return {'skipped': reason}, f'skipped: {reason}'
    if not root.is_dir():
        return {'skipped': f'{root}: not found'}, f'skipped: {root}: not found'
    deadline, rows = check.deadline('official'), []
    speed = {r['network']: r for r in check.report['sections'].get('speed', {}).get('networks', [])}
    for name in check.selected(list(OFFICIAL)):
        entry = OFFICIAL[name]
        size = OWN_SIZE.get(name, (32, 32) if check.smoke else OFFICIAL_SIZE)
        if check.smoke and name == 'MSTT':
            size = (80, 80)
        result = check.worker.call(
            f'official {name}', official_task, deadline, name=name, repo=str(root / entry.repo), size=size,
            device=check.device, threads=check.args.threads, warmup=1 if check.smoke else 2,
            repeat=1 if check.smoke else 3)
        row = {'network': name, 'repo': entry.repo, 'size': list(size), **result}
        ours = speed.get(name)
        same_run = ours is not None and ours['spec'] == entry.ours and ours['size'] == list(size)
        for mode in ('bf16', 'bf16+compile'):
            ms = ours['forward'][mode].get('ms_per_clip') if same_run else None
            row[f'ours_{mode}_ms'] = ms
            row[f'ratio_{mode}'] = result['official_ms'] / ms if ms and 'official_ms' in result else None
        row['ratio_fp32'] = result['official_ms'] / result['ours_ms'] if 'ours_ms' in result else None
        rows.append(row)

    def num(value, fmt):
        return '-' if value is None else format(value, fmt)

    text = ['Official fp32 (no_grad) and ours fp32 (predict, inference_mode) timed in one process on the same clip; '
            'ours bf16 and compiled from section 2 (same configuration and size only). Ratio = official ms / ours ms.',
            '', table(['network', 'LR h x w', 'official ms', 'ours fp32 ms', 'ratio', 'ours bf16 ms', 'ratio',
                       'ours compiled ms', 'ratio', 'official MiB', 'ours MiB', 'ours vs official'],
                      [[r['network'], 'x'.join(map(str, r['size'])), cell(r, 'official_ms', '.1f'),
                        num(r.get('ours_ms'), '.1f'), num(r['ratio_fp32'], '.2f'), num(r['ours_bf16_ms'], '.1f'),
                        num(r['ratio_bf16'], '.2f'), num(r['ours_bf16+compile_ms'], '.1f'),
                        num(r['ratio_bf16+compile'], '.2f'), num(r.get('official_peak_mib'), '.0f'),
                        num(r.get('ours_peak_mib'), '.0f'), cell(r.get('ours_vs_official'))] for r in rows])]
    notes = [f'- {r["network"]}: {r["note"]}' for r in rows if r.get('note')]
    return {'rows': rows}, '\n'.join(text + ['', reasons([(r['network'], r) for r in rows])] + notes)


SECTION_RUNS = {'correctness': section_correctness, 'speed': section_speed, 'loader': section_loader,
                'inference': section_inference, 'official': section_official}


# ---------------------------------------------------------------- staging, machine, main

def stage(args):
    """Copy what a GPU run reads into ``args.stage`` (inside the checkout, git-ignored), which a device call
    carries: frames of ../shared/data and the official repositories' Python sources."""
    dest = args.stage.resolve()
    if ROOT not in dest.parents:
        sys.exit(f'--stage {args.stage}: must be a folder inside the checkout ({ROOT}), which the device call carries')
    data = dest / 'data'
    shutil.rmtree(dest, ignore_errors=True)
    clip = sorted((args.data_root / 'toflow_720p_clip').glob('*.png'))[:args.inference_frames]
    for frame in clip:
        (data / 'toflow_720p_clip').mkdir(parents=True, exist_ok=True)
        shutil.copy2(frame, data / 'toflow_720p_clip' / frame.name)
    for part in ('vimeo_septuplet/sequences', 'Jilin-189/test/001/truth'):
        if (args.data_root / part).is_dir():
            shutil.copytree(args.data_root / part, data / part)
    if args.official_root is not None:
        for entry in OFFICIAL.values():
            source = args.official_root / entry.repo
            for path in sorted(source.rglob('*')) if source.is_dir() else []:
                if path.suffix in ('.py', '.yml', '.yaml') and path.is_file() and '.git' not in path.parts:
                    target = dest / 'official' / entry.repo / path.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
            if not source.is_dir():
                print(f'not staged (not found): {source}', file=sys.stderr)
    size = sum(p.stat().st_size for p in dest.rglob('*') if p.is_file())
    carry = dest.relative_to(ROOT)
    official = f' --official-root {carry}/official' if args.official_root is not None else ''
    print(f'staged {size / 2 ** 20:.1f} MiB in {carry}; device call: carry ["{carry}"], timeout_s 420, command:\n'
          f'PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --data-root {carry}/data{official} '
          f'--json $OUT/gpu_check.json 2>$OUT/gpu_check.log')


def machine(device, threads):
    info = bench.machine_info(device, threads)
    info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if device == 'cuda' else None,
                numba=NUMBA_VERSION or 'not installed (stand-in)')
    if device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_memory_gib=props.total_memory / 2 ** 30, gpu_multiprocessors=props.multi_processor_count,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--smoke', action='store_true', help='the same code paths on the CPU at tiny sizes')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--networks', nargs='+', help='registered names or tests/networks stems (default: all)')
    parser.add_argument('--budget', type=float, default=280., help='seconds for all sections (default 280)')
    parser.add_argument('--threads', type=int, help='torch threads (default: all CPUs; 1 with --smoke)')
    parser.add_argument('--data-root', type=Path, default=ROOT.parent / 'shared' / 'data')
    parser.add_argument('--official-root', type=Path, help='folder holding the official repositories (section 5)')
    parser.add_argument('--inference-network', default='MSITF', help='network of section 4 (default MSITF)')
    parser.add_argument('--inference-frames', type=int, help='frames of the 720p clip (default 7; 4 with --smoke)')
    parser.add_argument('--json', type=Path, help='default experiments/benchmarks/gpu_check_<cuda|cpu>.json')
    parser.add_argument('--stage', type=Path, help='copy what a GPU run reads into this folder of the checkout, '
                        'print the device call, and stop')
    args = parser.parse_args(argv)
    known = [*NETWORKS, *bench.network_configs()]
    unknown = [n for n in args.networks or [] if n not in known]
    if unknown:
        parser.error(f'unknown network(s) {", ".join(unknown)}; known: {", ".join(known)}')
    if args.inference_network not in known:
        parser.error(f'--inference-network {args.inference_network}: unknown; known: {", ".join(known)}')
    if not args.smoke and not args.stage and not torch.cuda.is_available():
        parser.error('no CUDA device here: run with --smoke (the CPU) or on a GPU machine')
    args.threads = args.threads or (1 if args.smoke else os.cpu_count())
    args.inference_frames = args.inference_frames or (4 if args.smoke else 7)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.stage:
        return stage(args)
    device = 'cpu' if args.smoke else 'cuda'
    json_path = args.json or ROOT / 'experiments' / 'benchmarks' / f'gpu_check_{device}.json'
    running = [s for s in args.sections if not (s == 'official' and args.official_root is None)]
    report = {'machine': machine(device, args.threads),
              'settings': {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                           'device': device, 'tolerances': TOLERANCES},
              'sections': {}}
    m = report['machine']
    print(f'# GPU check: {m.get("gpu", "CPU (--smoke)")}, {m["cpu"]} x {m["cpu_count"]}; torch {m["torch"]} '
          f'(CUDA {m["cuda"]}), torchvision {m["torchvision"]}, numba {m["numba"]}; {m["date"]}\n')
    check = Check(args, device, Worker({'threads': args.threads}), Budget(args.budget, running),
                  report)
    start = time.monotonic()
    try:
        for number, name in enumerate(SECTIONS, 1):
            if name not in args.sections:
                report['sections'][name] = {'skipped': 'not in --sections'}
                continue
            began = time.monotonic()
            result, text = SECTION_RUNS[name](check)
            result['seconds'] = time.monotonic() - began
            result['share_s'] = check.budget.share.get(name, 0.0)
            report['sections'][name] = result
            print(f'## {number}. {TITLES[name]}: {result["seconds"]:.1f} s (share {result["share_s"]:.0f} s, '
                  f'{time.monotonic() - start:.0f} s in all)\n\n{text.rstrip()}\n', flush=True)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2, default=str) + '\n')  # partial results survive a kill
    finally:
        check.worker.close()
    report['seconds'] = time.monotonic() - start
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str) + '\n')
    print(f'{report["seconds"]:.0f} s in all; written {json_path}')
    return report


if __name__ == '__main__':
    main()
