"""Size, FLOPs, forward latency, peak memory and training-step time of every registered network.

    python benchmarks/bench_networks.py                                # every network, official configs, CPU
    python benchmarks/bench_networks.py --networks MSITF STDAN --device cuda
    python benchmarks/bench_networks.py --config tiny --repeat 1       # the tests/networks/*.yml tiny configs
    python benchmarks/bench_networks.py --device cuda --amp bf16 --channels-last --compile default

For each network (default: every one in ``models.NETWORKS``, official configuration = constructor defaults):

- params: ``sum(p.numel())``.
- GFLOPs: one forward of 1 x 4 x 3 x h x w at the first ``--sizes`` entry, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add of convolutions, matrix products and
  attention; element-wise ops, normalisations and bilinear sampling are not counted). The multiply-adds of
  ``torchvision.ops.deform_conv2d`` are counted here like those of the equivalent convolution, so the
  CPU path (grid_sample + matmul) and the CUDA path count the same; a note names networks whose forward
  calls grid_sample, whose sampling is not counted.
- fwd s: median of ``--repeat`` forward passes (the network's ``predict``, batch 1, 4 LR frames in,
  7 HR frames out) under ``torch.inference_mode`` after ``--warmup`` untimed ones, at each ``--sizes``
  entry (h x w; default Vimeo LR 64x112 = 448x256 / 4 and Vid4 LR 144x180 = 720x576 / 4).
- peak MiB: the memory the first forward pass adds on top of the built network and its input, as
  ``engine.memory.MemoryMeter`` measures it (the meter inference uses for ``--max-memory``): CUDA
  ``max_memory_allocated`` growth; CPU, the resident-set high-water mark over the resident set before the
  call, the mark reset just before it. Each measurement runs in a fresh process (multiprocessing spawn), so
  no earlier network's freed-but-kept heap is counted.
- flow s: networks whose ``extra_inputs()`` are optical flows (MSTT, STARnet); they are computed before
  the forward (the network's own ``extra_inputs()``, as the loader workers run it) and passed as extras,
  so "fwd s" excludes them and "flow s" is their time for the 6 flows of the clip (median of ``--repeat``).
- train step s: the network's ``training_losses`` (its official objective where it has one: STARnet's
  deep supervision; else Charbonnier on the prediction) + backward + Adam step on a random LR patch
  (``--train-patch``, default 32, MSTT 80: the official patches) and batch (``--train-batch``, default 1 on
  CPU, the official batch on CUDA), in the batch format the network trains on (``training_batch``:
  Temporal-LIIF answers 4,096 random queries per sample among the 7 GT frames, the recipe's ``sample_q``);
  flows precomputed as a data loader would. Median of ``--repeat`` steps after ``--warmup`` (at least one:
  the first step allocates Adam's state and measures the training peak memory).
- ``--amp``, ``--channels-last``, ``--compile``: the ``performance`` options of training and testing
  (``engine/performance.py``) applied to both measurements; compilation happens in the warm-up calls, so
  with ``--compile`` give ``--warmup 2`` or more (the first compiled call is not representative).
- official CPU fwd s: the forward timings of the official code from ../shared/specs/official_implementations.md
  section 0, copied here as constants (not re-measured; best of 2-3 runs, torch CPU, 2 threads, AMD EPYC).

Each (network, size) forward and each training step runs in its own spawned process, stopped after
``--timeout`` seconds, so one slow or crashing network does not block the rest. Prints a Markdown
table; writes JSON (``--json``) with the machine description and every individual timing.
"""
import argparse
import glob
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402,F401  (registers torch.ops.torchvision.deform_conv2d)
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import models  # noqa: E402,F401  (fills the registry)
from engine.memory import MemoryMeter  # noqa: E402
from engine.performance import AMP_DTYPES, autocast, grad_scaler, maybe_compile, prepare_network  # noqa: E402
from engine.training import TrainingStep  # noqa: E402
from models import NETWORKS, build_network  # noqa: E402
from models.losses import CharbonnierLoss  # noqa: E402

# Official, from ../shared/specs/official_implementations.md section 0, not re-measured: CPU forward of the
# official code, torch CPU, 2 threads, AMD EPYC, no_grad, best of 2-3 runs; LR 64x112 unless stated.
OFFICIAL_CPU_FORWARD_S = {
    'MSITF': '9.7',
    'STDAN': '26.4',
    'STARnet': '16.1 (one pair, 2 LR -> 3 HR, with flow refinement; 4 -> 7 frames runs 3 pairs)',
    'starnet_noref': '16.5 (one pair, 2 LR -> 3 HR; 4 -> 7 frames runs 3 pairs)',
    'MSTT': '18.3 (160x160 LR)',
    'TemporalLIIF': '17.2 (5 LR frames of 32x32 -> 7 slices of 128x128; 3.1 s one slice)',
}
# Official LR training patch and total batch (same spec); others: LR 32, batch 16 (Zooming Slow-Mo's recipe).
OFFICIAL_TRAIN_PATCH = {'MSTT': 80}
OFFICIAL_TRAIN_BATCH = {'MSITF': 16, 'STDAN': 18, 'MSTT': 1, 'STARnet': 10, 'TemporalLIIF': 1}
DEFAULT_SIZES = ['64x112', '144x180']
FRAMES = 4


# ---------------------------------------------------------------- configurations

def network_configs():
    """{file stem: {'full': spec, 'tiny': spec}} from tests/networks/*.yml."""
    configs = {}
    for path in sorted(glob.glob(str(ROOT / 'tests' / 'networks' / '*.yml'))):
        with open(path) as f:
            configs[Path(path).stem] = yaml.safe_load(f)
    return configs


def network_spec(name, config):
    """(spec to build, note or None) for a registered name or a tests/networks/<stem>.yml variant.

    A registered name runs its constructor defaults ('official') or the tiny config of the yml file whose
    ``full`` is those defaults ('tiny'). A yml stem (e.g. starnet_noref) runs that file's ``full`` or ``tiny``.
    """
    configs = network_configs()
    if name not in NETWORKS:
        if name not in configs:
            raise KeyError(f'unknown network {name!r}; known: {", ".join([*NETWORKS, *configs])}')
        return configs[name]['full' if config == 'official' else 'tiny'], None
    if config == 'official':
        return {'type': name}, None
    files = [c for c in configs.values() if c.get('tiny', {}).get('type') == name]
    files.sort(key=lambda c: c.get('full') != {'type': name})
    if not files:
        return {'type': name}, 'no tiny config in tests/networks: constructor defaults'
    return files[0]['tiny'], None


def parse_size(text):
    h, w = (int(v) for v in text.lower().split('x'))
    return h, w


# ---------------------------------------------------------------- measurements (run inside a child process)

def setup(threads, device, seed=0):
    torch.set_num_threads(threads)
    try:
        import cv2
        cv2.setNumThreads(threads)
    except ImportError:
        pass
    torch.manual_seed(seed)
    return torch.device(device)


def extra_inputs(net, lq):
    """What the network takes besides the frames (flows), computed as the loader workers would."""
    prepare = net.extra_inputs()
    return {} if prepare is None else {k: v.to(lq.device) for k, v in prepare(lq).items()}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timings(fn, device, repeat):
    """Seconds of ``repeat`` calls of fn."""
    seconds = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_memory_mib(fn, device):
    """Call fn once; return the memory (MiB) it added at its peak (``engine.memory.MemoryMeter``)."""
    return MemoryMeter(device).measure(fn) / 2 ** 20


def count_flops(net, lq, extras):
    """(FLOPs of one forward, names of the ops that ran but are not counted)."""
    uncounted = set()

    def not_counted(name):
        def formula(*args, **kwargs):
            uncounted.add(name)
            return 0
        return formula

    def deform_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs):
        # as the equivalent convolution: 2 * output elements * input channels per group * kernel taps
        return 2 * int(np.prod(out_shape)) * int(np.prod(w_shape[1:]))

    aten = torch.ops.aten
    mapping = {torch.ops.torchvision.deform_conv2d: deform_conv_flop,
               aten.grid_sampler_2d: not_counted('grid_sample'),
               aten.cudnn_grid_sampler: not_counted('grid_sample'),
               aten.grid_sampler_3d: not_counted('grid_sample')}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        net.predict(lq, extras)
    return counter.get_total_flops(), sorted(uncounted)


def performance_options(amp='off', channels_last=False, compile='off'):
    return {'amp': amp, 'channels_last': channels_last, 'compile': compile, 'cudnn_benchmark': compile != 'off'}


def forward_benchmark(spec, size, device='cpu', threads=2, warmup=1, repeat=3, flops=True, perf=None):
    """Parameters, flow time, peak memory, forward times and FLOPs of ``spec`` on 1 x 4 x 3 x h x w."""
    device = setup(threads, device)
    perf = perf or performance_options()
    net = prepare_network(build_network(spec).to(device).eval(), perf)
    predict, dtype = maybe_compile(net.predict, perf), AMP_DTYPES[perf['amp']]
    lq = torch.rand(1, FRAMES, 3, *size, device=device)
    result = {'params': sum(p.numel() for p in net.parameters())}
    extras = extra_inputs(net, lq)
    if extras:
        result['flow_seconds'] = timings(lambda: extra_inputs(net, lq), device, repeat)
        result['flow_s'] = statistics.median(result['flow_seconds'])

    def forward():
        with torch.inference_mode(), autocast(device, dtype):
            predict(lq, extras)

    result['peak_mem_mib'] = peak_memory_mib(forward, device)
    timings(forward, device, warmup - 1)  # the memory call was the first warm-up
    result['seconds'] = timings(forward, device, repeat)
    result['fwd_s'] = statistics.median(result['seconds'])
    if flops:
        result['flops'], result['uncounted_ops'] = count_flops(net, lq, extras)
    if size[0] % net.size_multiple or size[1] % net.size_multiple:
        result['note'] = f'LR padded to a multiple of {net.size_multiple} inside'
    return result


def train_benchmark(spec, patch, batch, device='cpu', threads=2, warmup=1, repeat=3, perf=None):
    """Time of one training step (the network's training losses, backward, Adam) on a random LR patch of
    ``patch`` pixels square, or (h, w) (whole frames, as STARnet's recipe trains)."""
    device = setup(threads, device)
    perf = perf or performance_options()
    net = prepare_network(build_network(spec).to(device).train(), perf)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        return {'skipped': 'no trainable parameters'}
    model, dtype = maybe_compile(TrainingStep(net, CharbonnierLoss()), perf), AMP_DTYPES[perf['amp']]
    scaler = grad_scaler(device, dtype)
    optimizer = torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99))
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    lq = torch.rand(batch, FRAMES, 3, ph, pw, device=device)
    gt, extras = net.training_batch(lq, torch.rand(batch, 2 * FRAMES - 1, 3, 4 * ph, 4 * pw, device=device))
    extras = {**extra_inputs(net, lq), **extras}

    def step():
        with autocast(device, dtype):
            loss = sum(model(lq, gt, extras)[1].values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    result = {'patch': patch, 'batch': batch, 'peak_mem_mib': peak_memory_mib(step, device)}
    timings(step, device, warmup - 1)
    result['seconds'] = timings(step, device, repeat)
    result['train_s'] = statistics.median(result['seconds'])
    return result


# ---------------------------------------------------------------- isolation

def _child(conn, fn, kwargs):
    try:
        conn.send({'ok': fn(**kwargs)})
    except BaseException as e:  # noqa: BLE001  (reported to the parent, which carries on)
        traceback.print_exc()
        conn.send({'error': f'{type(e).__name__}: {e}'.splitlines()[0][:300]})
    finally:
        conn.close()


def run_isolated(fn, kwargs, timeout):
    """fn(**kwargs) in a fresh spawned process: its result dict, or {'error': ...} on failure or timeout."""
    ctx = multiprocessing.get_context('spawn')
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, kwargs), daemon=True)
    start = time.perf_counter()
    proc.start()
    send.close()
    try:
        if not receive.poll(timeout):
            return {'error': f'timeout after {timeout:g} s'}
        reply = receive.recv()
        return reply['ok'] if 'ok' in reply else reply
    except EOFError:
        proc.join(5)
        return {'error': f'process died (exit code {proc.exitcode})'}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receive.close()
        print(f'    {fn.__name__} {kwargs.get("size") or kwargs.get("patch")}: {time.perf_counter() - start:.1f} s',
              file=sys.stderr, flush=True)


def run(fn, kwargs, timeout, isolate):
    if isolate:
        return run_isolated(fn, kwargs, timeout)
    try:
        return fn(**kwargs)
    except Exception as e:  # noqa: BLE001
        return {'error': f'{type(e).__name__}: {e}'.splitlines()[0][:300]}


# ---------------------------------------------------------------- one network, the table, the machine

def benchmark_network(name, args):
    spec, note = network_spec(name, args.config)
    row = {'network': name, 'config': args.config, 'spec': spec, 'params': None, 'flops': None,
           # the official times are of the official (full-size) configurations: none beside a tiny row
           'official_cpu_fwd_s': OFFICIAL_CPU_FORWARD_S.get(name) if args.config == 'official' else None,
           'forward': {}, 'notes': [note] if note else []}
    common = {'device': args.device, 'threads': args.threads, 'warmup': max(1, args.warmup), 'repeat': args.repeat,
              'perf': performance_options(args.amp, args.channels_last, args.compile)}
    for i, size in enumerate(args.sizes):
        print(f'{name} ({args.config}) forward {size}', file=sys.stderr, flush=True)
        result = run(forward_benchmark, {'spec': spec, 'size': parse_size(size), 'flops': i == 0, **common},
                     args.timeout, not args.in_process)
        row['forward'][size] = result
        if 'params' in result:
            row['params'] = result['params']
        if 'flops' in result:
            row['flops'] = result['flops']
            if result['uncounted_ops']:
                row['notes'].append(f'FLOPs exclude {", ".join(result["uncounted_ops"])} (bilinear sampling)')
        if result.get('note') and result['note'] not in row['notes']:
            row['notes'].append(result['note'])
    patch = args.train_patch or OFFICIAL_TRAIN_PATCH.get(spec['type'], 32)
    batch = args.train_batch or (OFFICIAL_TRAIN_BATCH.get(spec['type'], 16) if args.device == 'cuda' else 1)
    print(f'{name} ({args.config}) training step, patch {patch}, batch {batch}', file=sys.stderr, flush=True)
    row['train'] = run(train_benchmark, {'spec': spec, 'patch': patch, 'batch': batch, **common},
                       args.timeout, not args.in_process)
    return row


def _cell(result, key, fmt):
    if 'error' in result:
        return 'timeout' if result['error'].startswith('timeout') else 'error'
    if 'skipped' in result:
        return '-'
    return format(result[key], fmt) if key in result else '-'


def markdown_table(rows, sizes):
    header = ['network', 'config', 'params', f'GFLOPs {sizes[0]}']
    for size in sizes:
        header += [f'fwd {size} s', 'peak MiB']
    header += ['flow s', 'train step s (patch, batch)', 'official CPU fwd s (spec, not re-measured)', 'notes']
    align = ['---'] * 2 + ['---:'] * (len(header) - 4) + ['---'] * 2  # numbers right-aligned
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(align) + '|']
    for row in rows:
        cells = [row['network'], row['config'], '-' if row['params'] is None else f'{row["params"]:,}',
                 '-' if row['flops'] is None else f'{row["flops"] / 1e9:.2f}']
        flow = []
        for size in sizes:
            result = row['forward'][size]
            cells += [_cell(result, 'fwd_s', '.3g'), _cell(result, 'peak_mem_mib', '.0f')]
            if 'flow_s' in result:
                flow.append(f'{result["flow_s"]:.3g}')
        cells.append(' / '.join(flow) or '-')
        train = row['train']
        train_cell = _cell(train, 'train_s', '.3g')
        if 'train_s' in train:
            train_cell += f' ({train["patch"]}, {train["batch"]})'
        cells += [train_cell, row['official_cpu_fwd_s'] or '-']
        errors = [f'{what}: {r["error"]}' for what, r in [*row['forward'].items(), ('train', train)] if 'error' in r]
        cells.append('; '.join(row['notes'] + errors) or '')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device, threads):
    info = {'cpu': cpu_model(), 'cpu_count': os.cpu_count(), 'load_average_1min': os.getloadavg()[0],
            'platform': platform.platform(), 'python': platform.python_version(), 'torch': torch.__version__,
            'torchvision': torchvision.__version__, 'threads': threads, 'device': device,
            'date': time.strftime('%Y-%m-%d %H:%M:%S %z')}
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--networks', nargs='+', default=list(NETWORKS),
                        help='registered names (default: all) or tests/networks/<stem>.yml variants '
                             '(e.g. starnet_noref)')
    parser.add_argument('--config', choices=['official', 'tiny'], default='official',
                        help='official = constructor defaults; tiny = tests/networks/<model>.yml "tiny"')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default 2)')
    parser.add_argument('--sizes', nargs='+', default=DEFAULT_SIZES, help='LR sizes h x w (default 64x112 144x180)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls before timing (at least 1)')
    parser.add_argument('--repeat', type=int, default=3, help='timed calls; the median is reported')
    parser.add_argument('--train-patch', type=int, help='LR training patch (default: 32, MSTT 80)')
    parser.add_argument('--train-batch', type=int, help='training batch (default: 1 on CPU, official on CUDA)')
    parser.add_argument('--timeout', type=float, default=1800, help='seconds per measurement (default 1800)')
    parser.add_argument('--in-process', action='store_true',
                        help='measure in this process: no timeout, peak memory not isolated (debugging)')
    parser.add_argument('--amp', choices=['off', 'bf16', 'fp16'], default='off', help='autocast dtype (performance.amp)')
    parser.add_argument('--channels-last', action='store_true', help='performance.channels_last')
    parser.add_argument('--compile', choices=['off', 'default', 'reduce-overhead', 'max-autotune'], default='off',
                        help='performance.compile (also turns cudnn.benchmark on); use --warmup 2 or more')
    parser.add_argument('--json', type=Path, help='default experiments/benchmarks/networks_<device>[_tiny].json '
                        '(untracked; the committed tables in benchmarks/results/ are written only when named)')
    args = parser.parse_args(argv)
    known = [*NETWORKS, *network_configs()]
    unknown = [n for n in args.networks if n not in known]
    if unknown:
        parser.error(f'unknown network(s) {", ".join(unknown)}; known: {", ".join(known)}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')
    if args.amp == 'fp16' and args.device != 'cuda':
        parser.error('--amp fp16: CUDA only (use bf16 on CPU)')
    for size in args.sizes:
        parse_size(size)
    suffix = '_tiny' if args.config == 'tiny' else ''
    json_path = args.json or ROOT / 'experiments' / 'benchmarks' / f'networks_{args.device}{suffix}.json'

    report = {'machine': machine_info(args.device, args.threads),
              'settings': {k: v for k, v in vars(args).items() if k not in ('json', 'networks')},
              'official_cpu_forward_s': OFFICIAL_CPU_FORWARD_S, 'results': []}
    for name in args.networks:
        report['results'].append(benchmark_network(name, args))
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + '\n')  # after each network: long runs keep partial results
    machine = report['machine']
    device = args.device + (f' ({machine["gpu"]})' if 'gpu' in machine else '')
    print(f'{machine["cpu"]}, {machine["cpu_count"]} CPUs, load {machine["load_average_1min"]:.1f}; torch '
          f'{machine["torch"]}, {args.threads} threads, device {device}; batch 1, {FRAMES} LR frames -> '
          f'{2 * FRAMES - 1} HR frames x4; sizes h x w; median of {args.repeat}; amp {args.amp}, channels_last '
          f'{args.channels_last}, compile {args.compile}')
    print()
    print(markdown_table(report['results'], args.sizes))
    print(f'\nwritten {json_path}')
    return report


if __name__ == '__main__':
    main()
