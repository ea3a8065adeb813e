"""Seconds per image pair of models.c2f (the numba port of pyflow) beside pyflow itself and OpenCV DIS.

    python benchmarks/bench_flow.py                                    # c2f and DIS
    python benchmarks/bench_flow.py --pyflow-path /tmp/pyflow_build    # and pyflow, alternating with c2f

Everything runs on one CPU thread (OMP_NUM_THREADS, NUMBA_NUM_THREADS, MKL/OpenBLAS threads set to 1
before numpy is imported; cv2.setNumThreads(1)). For each size the three estimators take turns, one call
each per round, for ``--repeat`` rounds in this one process, so that load from other work on the machine
hits them alike; the table gives the median seconds per pair and pyflow / c2f, the ratio of the medians.
Inputs are a smooth random texture and the same texture moved by (2, 3) pixels, as float64 RGB in [0, 1]
(DIS gets them as grey uint8). Content hardly matters for c2f and pyflow: their iteration counts are fixed.
c2f and pyflow run MSTT's settings (alpha 0.012, ratio 0.75, min_width 20, 7 outer, 1 inner, 30 SOR);
DIS runs the MEDIUM preset, as ``models.flow``'s ``opencv_dis`` backend. The column "same as pyflow"
is the largest |difference| of u and v over all calls.

Before the table: the first call of c2f in this process, a compile (the first ever on this machine and
checkout, or after models/c2f.py changed) or a load of the compiled kernels from numba's disk cache.

pyflow is not on the package registry; the numbers in models/c2f.py were measured with a build made
outside the repository (github.com/pathak22/pyflow @ 8f8ab9e, Cython 3.3, g++ 12 with Python's default
flags -O3 -fwrapv, no -march):

    git --git-dir=<fetched pyflow>.git archive HEAD | tar -x -C /tmp/pyflow_build
    pip install cython && cd /tmp/pyflow_build && python setup.py build_ext -i

That build reproduces ../shared/specs/pyflow/cases.npz bit-identically. pyflow prints progress on stdout
at every call; the script sends it to /dev/null while pyflow runs.
"""
import os

for _name in ('OMP_NUM_THREADS', 'NUMBA_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ[_name] = '1'

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402

from models import c2f  # noqa: E402

SIZES = ('64x112', '80x80', '160x160', '180x320')  # h x w: Vimeo LR, MSTT patch, Jilin-189 LR, toflow LR
SETTINGS = dict(alpha=0.012, ratio=0.75, min_width=20, n_outer=7, n_inner=1, n_sor=30, col_type=0)


def test_pair(h, w, shift=(2, 3), seed=0):
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((h + 16, w + 16, 3)), (0, 0), 2.)
    big = (big - big.min()) / (big.max() - big.min())
    dy, dx = shift
    return big[8:8 + h, 8:8 + w].copy(), big[8 - dy:8 - dy + h, 8 - dx:8 - dx + w].copy()


@contextlib.contextmanager
def stdout_silenced():
    """pyflow writes with C++ cout, below Python's sys.stdout: silence file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, 'w') as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def import_pyflow(path):
    if path is None:
        return None
    sys.path.insert(0, str(path))
    try:
        import pyflow
    except ImportError as error:
        sys.exit(f'--pyflow-path {path}: cannot import pyflow ({error})')
    if not hasattr(pyflow, 'coarse2fine_flow'):  # the unrelated registry package of that name
        sys.exit(f'--pyflow-path {path}: {pyflow.__file__} is not pathak22/pyflow')
    return pyflow


def first_call_seconds():
    a, b = test_pair(40, 60)
    start = time.perf_counter()
    c2f.coarse2fine_flow(a, b)
    seconds = time.perf_counter() - start
    loaded = sum(sum(f.stats.cache_hits.values()) for f in vars(c2f).values()
                 if isinstance(f, numba.core.registry.CPUDispatcher))
    return seconds, 'loaded from the disk cache' if loaded else 'compiled'


def time_size(size, repeat, pyflow):
    h, w = (int(x) for x in size.split('x'))
    a, b = test_pair(h, w)
    grey_a, grey_b = (cv2.cvtColor(np.rint(x * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY) for x in (a, b))
    dis = cv2.DISOpticalFlow_create(cv2.DISOpticalFlow_PRESET_MEDIUM)
    times = {'c2f': [], 'pyflow': [], 'dis': []}
    largest_difference = 0.
    for _ in range(repeat):
        start = time.perf_counter()
        u, v, _ = c2f.coarse2fine_flow(a, b, **SETTINGS)
        times['c2f'].append(time.perf_counter() - start)
        if pyflow is not None:
            with stdout_silenced():
                start = time.perf_counter()
                pu, pv, _ = pyflow.coarse2fine_flow(a, b, *SETTINGS.values())
                times['pyflow'].append(time.perf_counter() - start)
            largest_difference = max(largest_difference, np.abs(u - pu).max(), np.abs(v - pv).max())
        start = time.perf_counter()
        dis.calc(grey_a, grey_b, None)
        times['dis'].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) if t else None for name, t in times.items()}
    return medians, largest_difference


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--pyflow-path', type=Path, help='folder holding a pyflow build (added to sys.path)')
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), help='h x w (default: %(default)s)')
    parser.add_argument('--repeat', type=int, default=7, help='rounds per size; medians reported (default 7)')
    args = parser.parse_args(argv)
    pyflow = import_pyflow(args.pyflow_path)
    cv2.setNumThreads(1)

    first, how = first_call_seconds()
    rows = [(size, *time_size(size, args.repeat, pyflow)) for size in args.sizes]

    print(f'{cpu_model()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; numpy {np.__version__}, numba '
          f'{numba.__version__}, OpenCV {cv2.__version__}; 1 thread; median of {args.repeat} alternating rounds')
    print(f'c2f first call in this process: {first:.2f} s ({how})')
    print()
    print('| size h x w | c2f s/pair | pyflow s/pair | pyflow / c2f | c2f vs pyflow, max abs diff '
          '| DIS MEDIUM s/pair |')
    print('|---|---|---|---|---|---|')
    for size, medians, difference in rows:
        ours, theirs, dis = medians['c2f'], medians['pyflow'], medians['dis']
        pyflow_cells = ['-', '-', '-']
        if theirs is not None:
            same = 'identical' if difference == 0 else f'{difference:.3g}'
            pyflow_cells = [f'{theirs:.4f}', f'{theirs / ours:.2f}', same]
        print(f'| {size} | {ours:.4f} | ' + ' | '.join(pyflow_cells) + f' | {dis:.4f} |')


if __name__ == '__main__':
    main()
