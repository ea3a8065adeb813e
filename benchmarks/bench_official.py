"""Ours against the official implementations, side by side: forward and training-step time, peak memory.

    python benchmarks/bench_official.py --official MSTT=/scratch/MSTT-STVSR MSITF=/scratch/MSITF \\
        STDAN=/scratch/STDAN STARnet=/scratch/STARnet TemporalLIIF=/scratch/Super-Temporal-LIIF
    python benchmarks/bench_official.py --networks STDAN --official STDAN=/scratch/STDAN --repeat 7
    python benchmarks/bench_official.py --networks MSITF          # ours only: the same rows, official cells empty

``--official NAME=PATH`` names a checkout of the official repository (git clone, never committed here; the
adapters in benchmarks/official/ say where each class lives and stand in torchvision for compiled DCNv2 ops).
For each network, at the official configuration (our constructor defaults) and the size of its row:

1. Equality. Both are built, our weights are loaded into the official module (strict), and after the timings one
   forward of each, in float64, on the same input must agree to 1e-9 of the output's scale (the printed "max
   diff"; float64, because float32 rounding can flip a discrete choice such as STDAN's top-k and move a few
   pixels by 1e-4 while the functions are the same); a row whose outputs differ is marked, timings still shown.
   An adapter whose official code cannot run in float64 names float32 (``EQUALITY_DTYPE``; Temporal-LIIF):
   its cell says so and must agree to 1e-4.
2. Time, in one process, on ``--threads`` threads: ``--warmup`` untimed calls of each, then ``--repeat``
   rounds alternating ours and official (ABBA order, so a drift of the machine's speed hits both alike).
   "ratio" = median official / median ours (> 1: ours is faster). The forward is the network's inference
   call, ours through ``predict`` under ``torch.inference_mode`` (what evaluation and inference run), the
   official one as its test script calls it, under ``torch.no_grad``. The training step is the training
   objective (ours: ``training_losses``; official: its training script's loss), backward and an Adam step.
3. Peak memory: each (implementation, forward or training step) in a fresh process (multiprocessing spawn)
   that imports both implementations, builds one, makes the input and runs the call once: the process's
   resident-set high-water mark (VmHWM) after the call, in MiB, so weights, imports and the call's
   activations all count, alike on both sides; the median of ``--memory-repeat`` (3) processes (single
   figures mostly vary by up to 100 MiB from one process to the next, with rare outliers: Temporal-LIIF's
   training step measured 2605 MiB once where four medians of three processes were 1209-1220 MiB).
4. Arithmetic rate: the floating-point operations of one call of each side, counted by torch's flop counter
   (convolutions, matrix products, attention; not torchvision's deform_conv2d, grid_sample nor elementwise
   ops, so two sides whose deformable convolutions are made differently count differently), divided by the
   side's median time: GFLOP/s. Beside it, the "conv ceiling": the best of 5 float32 rates of one dense 3x3
   convolution, 256 -> 256 channels on 64x112 (STARnet's widest layers), measured in the same process right
   after the timings. A side whose rate is near the ceiling spends its time in arithmetic the machine cannot
   do faster; a ratio of r at the same count needs r times the official's rate.

Flows (MSTT, STARnet) are computed once, before timing, by our ``extra_inputs`` and given to both sides, as a
data loader would, and so are STARnet's flow targets in training (the official loader computes them; our
training step computes them itself when a batch does not bring them); they are in neither time.
"""
import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import models  # noqa: E402,F401  (fills the registry)
from bench_networks import cpu_model, run_isolated, setup  # noqa: E402
from engine.memory import peak_resident  # noqa: E402
from models import build_network  # noqa: E402
from models.losses import CharbonnierLoss  # noqa: E402
from official import OfficialUnavailable, msitf, mstt, starnet, stdan, temporal_liif  # noqa: E402

ADAPTERS = {'MSTT': mstt, 'MSITF': msitf, 'STDAN': stdan, 'STARnet': starnet, 'TemporalLIIF': temporal_liif}

# (LR frames, LR h, LR w) of each row. Forward: Vimeo-90K's LR frames (64x112), MSTT the nearest size it takes
# (multiples of 80), STARnet one pair (2 frames in, 3 out), Temporal-LIIF 32x32 (its decoder's cost grows with
# the output pixels). Training step: the official training patches (ZSM-family LR 32x32, MSTT 80x80; STARnet
# whole Vimeo triplet frames; Temporal-LIIF 4,096 queries of a 32x32 patch's 7 GT frames), batch 1.
SHAPES = {'MSTT': (4, 80, 160), 'MSITF': (4, 64, 112), 'STDAN': (4, 64, 112), 'STARnet': (2, 64, 112),
          'TemporalLIIF': (4, 32, 32)}
TRAIN_SHAPES = {'MSTT': (4, 80, 80), 'MSITF': (4, 32, 32), 'STDAN': (4, 32, 32), 'STARnet': (2, 64, 112),
                'TemporalLIIF': (4, 32, 32)}


# ---------------------------------------------------------------- the two implementations on one input

class Pair:
    """Ours and (when its checkout is given) the official network with the same weights, and one input."""

    def __init__(self, name, official_root, train, seed=0):
        torch.manual_seed(seed)
        self.name, self.adapter = name, ADAPTERS[name]
        self.ours = build_network({'type': name}).train(train)
        self.official = None
        if official_root is not None:
            self.official = self.adapter.build(official_root, {'type': name}).train(train)
            self.official.load_state_dict(self.ours.state_dict(), strict=True)
        n, h, w = (TRAIN_SHAPES if train else SHAPES)[name]
        g = torch.Generator().manual_seed(seed + 1)
        self.lq = torch.rand(1, n, 3, h, w, generator=g)
        prepare = self.ours.extra_inputs()
        self.extras = {} if prepare is None else prepare(self.lq)
        self.criterion = CharbonnierLoss()
        if train:
            gt = torch.rand(1, 2 * n - 1, 3, 4 * h, 4 * w, generator=g)
            self.gt, batch_extras = self.ours.training_batch(self.lq, gt)
            loader = getattr(self.adapter, 'loader_extras', None)  # optional in the adapter interface
            self.extras = {**self.extras, **batch_extras, **(loader(self.ours, self.lq, gt) if loader else {})}

    def forward(self, which):
        if which == 'ours':
            with torch.inference_mode():
                return self.ours.predict(self.lq, self.extras)
        with torch.no_grad():
            return self.adapter.forward(self.official, self.lq, self.extras)

    def step_fn(self, which):
        """One training step (loss, backward, Adam) of one side, with its own optimizer."""
        net = self.ours if which == 'ours' else self.official
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-7)

        def step():
            if which == 'ours':
                loss = sum(self.ours.training_losses(self.lq, self.gt, self.extras, self.criterion)[1].values())
            else:
                loss = self.adapter.training_loss(self.official, self.lq, self.gt, self.extras, self.criterion)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()
        return step


def alternate(fns, warmup, repeat):
    """{side: [seconds]}: warm-up calls of each, then rounds in ABBA order."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    seconds = {side: [] for side in fns}
    sides = list(fns)
    for r in range(repeat):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            start = time.perf_counter()
            fns[side]()
            seconds[side].append(time.perf_counter() - start)
    return seconds


def counted_gflop(fn):
    """GFLOP of one call of ``fn``, as torch's flop counter counts them (see the module docstring)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def conv_ceiling(repeat=5):
    """The best of ``repeat`` float32 rates (GFLOP/s) of one 3x3 convolution, 256 -> 256 channels on 64x112."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 256, 64, 112, generator=g), torch.randn(256, 256, 3, 3, generator=g)
    best = float('inf')
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
        for _ in range(repeat):
            start = time.perf_counter()
            F.conv2d(x, w, padding=1)
            best = min(best, time.perf_counter() - start)
    return 2 * 256 * 256 * 9 * 64 * 112 / best / 1e9


def compare(name, official_root, kind, threads, warmup, repeat):
    """Equality and alternating timings of the forward or the training step (``kind``), in one process."""
    setup(threads, 'cpu')
    result = {}
    pair = Pair(name, official_root, train=kind == 'train')
    sides = ['ours'] + (['official'] if pair.official is not None else [])
    if kind == 'forward':
        result['seconds'] = alternate({s: (lambda s=s: pair.forward(s)) for s in sides}, warmup, repeat)
        result['ceiling'] = conv_ceiling()
        result['gflop'] = {s: counted_gflop(lambda s=s: pair.forward(s)) for s in sides}
        if pair.official is not None:
            # in float64, where rounding cannot flip a discrete choice (STDAN's top-k) as it can in float32
            dtype = getattr(pair.adapter, 'EQUALITY_DTYPE', torch.float64)  # optional in the adapter interface
            pair.ours.to(dtype), pair.official.to(dtype)
            pair.lq = pair.lq.to(dtype)
            pair.extras = {k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in pair.extras.items()}
            ours, theirs = pair.forward('ours'), pair.forward('official')
            result['max_diff'] = float((ours - theirs).abs().max() / theirs.abs().max())
            result['diff_dtype'] = str(dtype).removeprefix('torch.')
        return result
    if pair.official is not None:
        losses = {}
        for side in sides:
            torch.manual_seed(0)
            losses[side] = pair.step_fn(side)()
        result['loss_diff'] = float((losses['ours'] - losses['official']).abs() / losses['official'].abs())
    result['seconds'] = alternate({s: pair.step_fn(s) for s in sides}, warmup, repeat)
    result['ceiling'] = conv_ceiling()
    result['gflop'] = {s: counted_gflop(pair.step_fn(s)) for s in sides}
    return result


def peak_rss(name, official_root, which, kind, threads):
    """VmHWM (MiB) of this fresh process after building one side and running one call of ``kind``."""
    setup(threads, 'cpu')
    pair = Pair(name, official_root if which == 'official' else None, train=kind == 'train')
    if which == 'official':
        pair.ours = None  # only the official network stays alive (ours was its source of weights)
    fn = pair.step_fn(which) if kind == 'train' else (lambda: pair.forward(which))
    fn()
    return peak_resident() / 2 ** 20


# ---------------------------------------------------------------- table

def median(result, side):
    s = result.get('seconds', {})
    return statistics.median(s[side]) if side in s else None


def rate(result, side):
    seconds, gflop = median(result, side), result.get('gflop', {}).get(side)
    return gflop / seconds if seconds and gflop is not None else None


def fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else '-'


def row_cells(name, results, memory):
    n, h, w = SHAPES[name]
    tn, th, tw = TRAIN_SHAPES[name]
    cells = [name, f'{n}x{h}x{w} -> {2 * n - 1}x{4 * h}x{4 * w}', f'{tn}x{th}x{tw}']
    for kind in ('forward', 'train'):
        official, ours = median(results[kind], 'official'), median(results[kind], 'ours')
        cells += [fmt(official, '.3g'), fmt(ours, '.3g'), fmt(official / ours if official and ours else None, '.2f')]
    for kind in ('forward', 'train'):
        cells.append(f'{fmt(memory.get(("official", kind)), ".0f")} / {fmt(memory.get(("ours", kind)), ".0f")}')
    for kind in ('forward', 'train'):
        cells.append(f'{fmt(rate(results[kind], "official"), ".0f")} / {fmt(rate(results[kind], "ours"), ".0f")}')
    ceilings = [r['ceiling'] for r in results.values() if 'ceiling' in r]
    cells.append(fmt(statistics.median(ceilings) if ceilings else None, '.0f'))
    diff = results['forward'].get('max_diff')
    if diff is None:
        cells.append('-')
    else:  # float64 agrees to ~1e-15, float32 to ~1e-6 of the output's scale
        dtype = results['forward']['diff_dtype']
        cells.append(f'{diff:.1e}' + (f' ({dtype})' if dtype != 'float64' else '')
                     + (' DIFFERENT' if diff > (1e-9 if dtype == 'float64' else 1e-4) else ''))
    notes = [f'{kind}: {r["error"]}' for kind, r in results.items() if 'error' in r]
    notes += [f'{" ".join(key)} memory: {m}' for key, m in memory.items() if isinstance(m, str)]
    cells.append('; '.join(notes))
    return cells


HEADER = ['network', 'forward: LR in -> HR out', 'train: LR patch', 'official fwd s', 'ours fwd s', 'fwd ratio',
          'official train s', 'ours train s', 'train ratio', 'fwd peak MiB official / ours',
          'train peak MiB official / ours', 'fwd GFLOP/s official / ours', 'train GFLOP/s official / ours',
          'conv ceiling GFLOP/s', 'max diff (rel.)', 'notes']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--networks', nargs='+', default=list(ADAPTERS), choices=list(ADAPTERS))
    parser.add_argument('--official', nargs='+', default=[], metavar='NAME=PATH',
                        help='checkouts of the official repositories (e.g. STDAN=/scratch/STDAN)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls of each side first (default 1)')
    parser.add_argument('--repeat', type=int, default=5, help='alternating timed rounds (default 5)')
    parser.add_argument('--memory-repeat', type=int, default=3,
                        help='fresh processes per peak-memory figure, the median reported (default 3)')
    parser.add_argument('--no-memory', action='store_true', help='skip the fresh-process peak memory runs')
    parser.add_argument('--timeout', type=float, default=1800, help='seconds per child process (default 1800)')
    args = parser.parse_args(argv)
    roots = {}
    for item in args.official:
        name, sep, path = item.partition('=')
        if not sep or name not in ADAPTERS:
            parser.error(f'--official {item}: expected NAME=PATH with NAME one of {", ".join(ADAPTERS)}')
        if not Path(path).is_dir():
            parser.error(f'--official {item}: {path} is not a folder (a checkout of {ADAPTERS[name].REPOSITORY})')
        roots[name] = Path(path)

    rows = []
    for name in args.networks:
        results = {}
        for kind in ('forward', 'train'):
            print(f'{name} {kind}: equality and alternating timings', file=sys.stderr, flush=True)
            results[kind] = run_isolated(compare, {'name': name, 'official_root': roots.get(name), 'kind': kind,
                                                   'threads': args.threads, 'warmup': args.warmup,
                                                   'repeat': args.repeat}, args.timeout)
        memory = {}
        if not args.no_memory:
            for which in ['ours'] + (['official'] if name in roots else []):
                for kind in ('forward', 'train'):
                    peaks = [run_isolated(peak_rss, {'name': name, 'official_root': roots.get(name), 'which': which,
                                                     'kind': kind, 'threads': args.threads}, args.timeout)
                             for _ in range(args.memory_repeat)]
                    failed = [p['error'] for p in peaks if not isinstance(p, float)]
                    memory[(which, kind)] = failed[0] if failed else statistics.median(peaks)
        rows.append(row_cells(name, results, memory))

    print(f'{cpu_model()}; torch {torch.__version__}, {args.threads} threads; batch 1; median of {args.repeat} '
          f'alternating rounds after {args.warmup} warm-up; ratio = official / ours')
    print()
    print('| ' + ' | '.join(HEADER) + ' |')
    print('|' + '|'.join(['---'] * 3 + ['---:'] * 11 + ['---'] * 2) + '|')
    for cells in rows:
        print('| ' + ' | '.join(cells) + ' |')
    return rows


if __name__ == '__main__':
    multiprocessing.freeze_support()
    try:
        main()
    except OfficialUnavailable as e:
        sys.exit(f'bench_official: {e}')
