"""Write Vimeo-90K septuplets into an LMDB in the layout of the official ZSM, STDAN and MSITF pipelines.

    python data_scripts/create_lmdb.py ../vimeo_septuplet/sequences ../vimeo_septuplet/vimeo7_train_GT.lmdb \\
        --list ../vimeo_septuplet/sep_trainlist.txt
    python data_scripts/generate_lr.py ../vimeo_septuplet ../vimeo_BIx4 --type BI --scale 4 \\
        --list ../vimeo_septuplet/sep_trainlist.txt --list-prefix sequences
    python data_scripts/create_lmdb.py ../vimeo_BIx4/sequences ../vimeo_septuplet/vimeo7_train_LR7.lmdb \\
        --list ../vimeo_septuplet/sep_trainlist.txt

SRC is the folder the list's keys are relative to (``00001/0001`` -> ``SRC/00001/0001/im1.png .. im7.png``): a
GT tree, or an LR tree (``generate_lr.py``'s, or the official MATLAB one). Every frame becomes one entry, key
``00001_0001_1`` .. ``_7``, value its raw uint8 BGR pixels (``data/lmdb.py`` describes the layout); all frames
must share one size, which the meta info records. Clips are written in sorted order, a transaction every
``--commit-every`` clips: LMDB keeps what was committed and nothing of a transaction cut short, so a killed or
interrupted run is simply started again and writes only the frames not yet there. The meta info
(``DST/Vimeo7_train_keys.pkl``: ``{'name', 'resolution', 'keys'}``, the keys as a sorted list, which every
official reader accepts) is written last, when every listed clip is in. An ``lr_manifest.json`` in SRC or the
folder above it (where ``generate_lr.py`` puts it) is copied into DST, so that the loaders can check the
degradation. Exit codes: 0 done, 2 bad input (the failed clips are listed), 130/143 stopped.
"""
import argparse
import logging
import math
import os
import pickle
import shutil
import signal
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lmdb  # noqa: E402
import numpy as np  # noqa: E402

from data.io import check_writable, folder_exists, keep_existing, publish, read_image, read_list  # noqa: E402
from data.lmdb import CLIP_FRAMES, META_NAMES, find_meta, frame_key, read_meta  # noqa: E402
from data.transforms import MANIFEST_NAME  # noqa: E402
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError, Interrupted  # noqa: E402

PAGE = 4096
META_NAME = META_NAMES[0]


def read_clip(job):
    """Worker: (clip folder, clip key ``00001_0001``, frame shape) -> (clip key, [(frame key, BGR bytes)],
    None), or (clip key, [], the one-line error)."""
    folder, clip, shape = job
    frames = []
    try:
        for n in range(1, CLIP_FRAMES + 1):
            path = folder / f'im{n}.png'
            img = read_image(path)
            if img.shape != shape or img.dtype != np.uint8:
                raise DataError(f'{path}: {img.shape[1]}x{img.shape[0]} {img.dtype}, but the first frame of the '
                                f'list is {shape[1]}x{shape[0]} uint8 (one database holds one size of 8-bit frames)')
            frames.append((frame_key(clip, n), np.ascontiguousarray(img[:, :, ::-1]).tobytes()))
    except DataError as err:
        return clip, [], str(err)
    return clip, frames, None


def map_size(frames, frame_bytes):
    """Bytes to reserve: each value fills whole overflow pages (a 16-byte header, then the pixels), plus a
    quarter for keys, the B-tree and pages of earlier transactions not yet reused, and 64 MiB."""
    pages = math.ceil((frame_bytes + 16) / PAGE)
    return int(frames * pages * PAGE * 1.25) + 2 ** 26


def stored_keys(env):
    with env.begin() as txn:
        return {k.decode('ascii', 'replace') for k in txn.cursor().iternext(keys=True, values=False)}


def check_destination(dst, shape):
    """Refuse a DST that holds something other than a database of frames of ``shape``."""
    if not dst.exists():
        return
    if not dst.is_dir():
        raise DataError(f'{dst}: exists and is not a folder')
    meta = find_meta(dst)
    if meta is not None:
        resolution = read_meta(meta)[1]
        if resolution is not None and resolution != (shape[2], shape[0], shape[1]):
            raise DataError(f'{meta}: {dst} holds frames of {"_".join(map(str, resolution))}, these are '
                            f'{shape[2]}_{shape[0]}_{shape[1]}; choose another destination')
    if not (dst / 'data.mdb').is_file() and any(dst.iterdir()):
        raise DataError(f'{dst}: a folder that is not an LMDB database (no data.mdb); choose another destination')


def first_stored_size(env):
    with env.begin(buffers=True) as txn:
        cursor = txn.cursor()
        return (cursor.key().tobytes().decode('ascii', 'replace'), len(cursor.value())) if cursor.first() else None


def write_meta(dst, name, shape, clips):
    """The meta info, written aside and renamed: a reader finds the whole file or none."""
    meta = {'name': name, 'resolution': f'{shape[2]}_{shape[0]}_{shape[1]}', 'keys': sorted(clips)}
    fd, tmp = tempfile.mkstemp(prefix=f'.{META_NAME}', suffix='.tmp', dir=dst)
    try:
        with os.fdopen(fd, 'wb') as f:
            pickle.dump(meta, f)
        publish(tmp)
        os.replace(tmp, dst / META_NAME)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', type=Path, help='folder the list keys are relative to (vimeo_septuplet/sequences)')
    parser.add_argument('dst', type=Path, help='database folder to create or complete, ending in .lmdb')
    parser.add_argument('--list', type=Path, required=True, help='clip list (sep_trainlist.txt: 00001/0001 a line)')
    parser.add_argument('--name', help='meta info name (default: DST without .lmdb, first letter upper case: '
                        'vimeo7_train_GT.lmdb -> Vimeo7_train_GT, as the official databases)')
    parser.add_argument('--skip-missing', action='store_true', help='leave out listed clips not under SRC')
    parser.add_argument('--commit-every', type=int, default=100, help='clips per transaction (default 100)')
    parser.add_argument('--workers', type=int, default=2, help='processes reading frames (default 2; 0 = none)')
    args = parser.parse_args(argv)

    if args.dst.suffix != '.lmdb':
        raise DataError(f'{args.dst}: the database folder must end in .lmdb (the official loaders tell an LMDB '
                        f'from a folder of frames by it)')
    if args.commit_every < 1:
        raise DataError(f'--commit-every must be at least 1, got {args.commit_every}')
    if not args.src.is_dir():
        raise DataError(f'{args.src}: folder not found')
    keys = read_list(args.list)
    bad = [k for k in keys if k.count('/') != 1 or '_' in k]
    if bad:
        raise DataError(f'{args.list}: {len(bad)} keys are not <folder>/<sub-folder> without "_" (first: {bad[0]!r})')
    keys = keep_existing(keys, folder_exists(args.src), args.list, args.skip_missing,
                         logging.getLogger('create_lmdb'), can_skip=False)
    clips = sorted(k.replace('/', '_') for k in keys)
    if len(set(clips)) != len(clips):
        raise DataError(f'{args.list}: lists a clip twice')
    first = read_image(args.src / keys[0] / 'im1.png')
    if first.dtype != np.uint8:
        raise DataError(f'{args.src / keys[0] / "im1.png"}: {first.dtype} pixels; the LMDB layout holds 8-bit frames')
    shape, frame_bytes = first.shape, first.size
    check_destination(args.dst, shape)
    check_writable(args.dst)
    args.dst.mkdir(parents=True, exist_ok=True)

    env = lmdb.open(str(args.dst), map_size=map_size(len(clips) * CLIP_FRAMES, frame_bytes))
    try:
        stored = first_stored_size(env)
        if stored is not None and stored[1] != frame_bytes:
            raise DataError(f'{args.dst}: key {stored[0]} holds {stored[1]:,} bytes, the frames of {args.src} '
                            f'{frame_bytes:,} ({shape[1]}x{shape[0]}); choose another destination')
        done = stored_keys(env)
        todo = [c for c in clips if not all(frame_key(c, n) in done for n in range(1, CLIP_FRAMES + 1))]
        print(f'{len(clips)} clips of {args.list} under {args.src}: {len(clips) - len(todo)} already in '
              f'{args.dst}, {len(todo)} to write ({shape[1]}x{shape[0]} frames)')
        errors = write_clips(env, args.src, todo, shape, args)
    finally:
        env.close()
    for error in errors:
        print(f'error: {error}', file=sys.stderr)
    if errors:
        print(f'{len(errors)} of {len(todo)} clips failed; the others are written, and a run after the fix '
              f'writes the rest and the meta info', file=sys.stderr)
        return 2
    name = args.name or args.dst.stem[:1].upper() + args.dst.stem[1:]
    write_meta(args.dst, name, shape, clips)
    for folder in (args.src, args.src.parent):
        if (folder / MANIFEST_NAME).is_file():
            shutil.copyfile(folder / MANIFEST_NAME, args.dst / MANIFEST_NAME)
            break
    print(f'{args.dst}: {len(clips)} clips, {len(clips) * CLIP_FRAMES} frames; meta info {args.dst / META_NAME}')
    return 0


def write_clips(env, src, todo, shape, args):
    """Write the clips of ``todo`` (their frames read by ``args.workers`` processes); returns the errors."""
    jobs = [(src / c.replace('_', '/'), c, shape) for c in todo]
    errors, written, committed = [], 0, 0
    # Ctrl-C reaches the whole process group: the workers ignore it and the writer says what was committed.
    pool = Pool(args.workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) \
        if args.workers > 0 else None
    cli.raise_on_sigterm()
    results = pool.imap(read_clip, jobs, chunksize=4) if pool else map(read_clip, jobs)
    txn = None
    try:
        for _, frames, error in progress(results, total=len(jobs), unit='clip'):
            if error:
                errors.append(error)
                continue
            if txn is None:
                txn = env.begin(write=True)
            for key, value in frames:
                txn.put(key.encode('ascii'), value)
            written += 1
            if written % args.commit_every == 0:
                txn.commit()
                txn, committed = None, written
        if txn is not None:
            txn.commit()
            txn, committed = None, written
    except (KeyboardInterrupt, Interrupted) as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        raise Interrupted(signum, f'{committed} of {len(todo)} clips were committed to {args.dst}; run the same '
                          f'command again to write the rest') from None
    finally:
        if txn is not None:
            txn.abort()
        if pool is not None:
            pool.terminate()
    return errors


if __name__ == '__main__':
    sys.exit(cli.run(main))
