"""Write a clip list file for what actually exists under a root (or filter an official list to it).

    python data_scripts/make_lists.py ../vimeo_septuplet/sequences my_trainlist.txt \\
        --filter ../vimeo_septuplet/sep_trainlist.txt --min-frames 7
    python data_scripts/make_lists.py ../189_vime7 ../189_vime7/189_vime7_train.txt --min-frames 7

Without --filter, every folder under ROOT that directly holds at least --min-frames images is listed, as its
path relative to ROOT (``00001/0001``), in natural order. With --filter, the keys of that list are kept in its
order when their folder under ROOT holds at least --min-frames images, and the number dropped is printed.
The output is written atomically and never overwritten unless --overwrite is given.
Exit codes: 0 written (or already there), 2 bad input (nothing found, list not found).
"""
import argparse
import os
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.io import IMAGE_EXTENSIONS, natural_sort, read_list  # noqa: E402
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError


def count_images(folder):
    """Worker: number of image files directly in ``folder`` (0 if it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith('.'))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', type=Path, help='folder the keys are relative to (vimeo_septuplet/sequences)')
    parser.add_argument('output', type=Path, help='list file to write')
    parser.add_argument('--filter', type=Path, help='keep only the keys of this list that exist')
    parser.add_argument('--min-frames', type=int, default=1, help='fewest images a clip folder needs (default 1)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output file')
    parser.add_argument('--workers', type=int, default=2, help='processes (default 2; 0 = none)')
    args = parser.parse_args(argv)

    if args.output.exists() and not args.overwrite:
        print(f'{args.output} exists; nothing to do (--overwrite to replace it)')
        return 0
    if not args.root.is_dir():
        raise DataError(f'{args.root}: root not found')
    if args.filter:
        keys = read_list(args.filter)
    else:
        keys = natural_sort({str(p.parent.relative_to(args.root)) for p in args.root.rglob('*')
                             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()})
    folders = [args.root / k for k in keys]
    if args.workers > 0:
        with Pool(args.workers) as pool:
            counts = list(progress(pool.imap(count_images, folders, chunksize=64), total=len(folders), unit='clip'))
    else:
        counts = [count_images(f) for f in progress(folders, unit='clip')]
    kept = [k for k, n in zip(keys, counts) if n >= args.min_frames]
    if not kept:
        raise DataError(f'{args.root}: no clip folder with at least {args.min_frames} images'
                        + (f' among the {len(keys)} keys of {args.filter}' if args.filter else ''))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + args.output.name, dir=args.output.parent)
    with os.fdopen(fd, 'w') as f:
        f.write(''.join(f'{k}\n' for k in kept))
    os.replace(tmp, args.output)
    dropped = f' ({len(keys) - len(kept)} of {len(keys)} listed keys dropped)' if args.filter else ''
    print(f'{args.output}: {len(kept)} clips{dropped}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
