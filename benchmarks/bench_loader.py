"""Training-loader throughput of Vimeo90KSeptuplet on the real septuplets in ../shared/data/vimeo_septuplet.

    python benchmarks/bench_loader.py                 # about a minute on 2 cores
    python benchmarks/bench_loader.py --samples 400 --workers 0 4 8
    python benchmarks/bench_loader.py --lmdb          # PNG folders against the official LMDB layout

For each LR source (BI and BD made on the fly from GT, or read from a precomputed BI tree made in a temporary
folder) and each DataLoader worker count, draws ``--samples`` random septuplets (lq_size 32 -> 4x3x32x32 LR,
7x3x128x128 GT, flips, rotations and time reversal on) in batches of ``--batch-size`` and prints a Markdown
table of samples per second. The first batch (worker start-up) is not timed. Every septuplet folder that
exists is used, whichever official list names it. ``--lmdb`` also writes the GT and the BI LR frames into
LMDBs (``data_scripts/create_lmdb.py``, the ZSM/STDAN/MSITF layout) and times ``Vimeo90KSeptupletLMDB`` on
them, which gives the same samples. The septuplets are few, so both are read from the page cache: the rows
compare decoding a PNG with copying raw pixels, not disks.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from data import build_dataset  # noqa: E402
from data.io import read_image, write_image  # noqa: E402
from data.transforms import MANIFEST_NAME, degrade, manifest  # noqa: E402

BI = {'type': 'BI', 'scale': 4}
BD = {'type': 'BD', 'scale': 4, 'sigma': 1.6}


def samples_per_second(dataset, workers, samples, batch_size, pin_memory=False):
    sampler = RandomSampler(dataset, replacement=True, num_samples=samples + batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory)
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    count = sum(batch['lq'].shape[0] for batch in batches)
    return count / (time.perf_counter() - start)


def write_lmdbs(gt_sequences, lr_sequences, list_file, tmp):
    """vimeo7_train_GT.lmdb and vimeo7_train_LR7.lmdb of the two trees, in ``tmp``."""
    spec = importlib.util.spec_from_file_location('create_lmdb', ROOT / 'data_scripts' / 'create_lmdb.py')
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    made = []
    for src, name in ((gt_sequences, 'vimeo7_train_GT.lmdb'), (lr_sequences, 'vimeo7_train_LR7.lmdb')):
        with contextlib.redirect_stdout(io.StringIO()):
            if script.main([str(src), str(tmp / name), '--list', str(list_file), '--workers', '0']):
                sys.exit(f'{src}: could not write {name}')
        made.append(tmp / name)
    return made


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', type=Path, default=ROOT.parent / 'shared' / 'data' / 'vimeo_septuplet')
    parser.add_argument('--samples', type=int, default=64, help='timed samples per row (default 64)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--lmdb', action='store_true', help='also read the frames from LMDBs of them')
    args = parser.parse_args(argv)

    sequences = args.root / 'sequences'
    keys = sorted(f'{p.parent.name}/{p.name}' for p in sequences.glob('*/*') if p.is_dir())
    if not keys:
        sys.exit(f'{sequences}: no septuplets found')
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / 'all.txt').write_text(''.join(k + '\n' for k in keys))
        for key in keys:
            for i in range(1, 8):
                write_image(tmp / 'lr/sequences' / key / f'im{i}.png',
                            degrade(read_image(sequences / key / f'im{i}.png'), BI))
        (tmp / 'lr' / MANIFEST_NAME).write_text(json.dumps(manifest(BI)))
        common = {'type': 'Vimeo90KSeptuplet', 'root': str(args.root), 'list_file': str(tmp / 'all.txt'),
                  'use_flip': True, 'use_rot': True, 'use_time_reverse': True}
        sources = {'BI on the fly': {**common, 'degradation': BI},
                   'BD on the fly': {**common, 'degradation': BD},
                   'BI precomputed (lq_root)': {**common, 'degradation': BI, 'lq_root': str(tmp / 'lr')}}
        if args.lmdb:
            gt_lmdb, lr_lmdb = write_lmdbs(sequences, tmp / 'lr' / 'sequences', tmp / 'all.txt', tmp)
            lmdb = {'type': 'Vimeo90KSeptupletLMDB', 'gt_lmdb': str(gt_lmdb), 'use_flip': True, 'use_rot': True,
                    'use_time_reverse': True}
            sources.update({'BI on the fly, GT LMDB': {**lmdb, 'degradation': BI},
                            'BD on the fly, GT LMDB': {**lmdb, 'degradation': BD},
                            'BI precomputed, GT + LR LMDB': {**lmdb, 'degradation': BI, 'lq_lmdb': str(lr_lmdb)}})
        print(f'{len(keys)} septuplets, {args.samples} samples per row, batch {args.batch_size}, lq_size 32; '
              f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}')
        print()
        print('| LR source | workers | samples/s |')
        print('|---|---:|---:|')
        for name, spec in sources.items():
            dataset = build_dataset(spec)
            for workers in args.workers:
                rate = samples_per_second(dataset, workers, args.samples, args.batch_size)
                print(f'| {name} | {workers} | {rate:.1f} |', flush=True)


if __name__ == '__main__':
    main()
