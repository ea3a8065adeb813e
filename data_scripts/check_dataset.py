"""Check a frame dataset before training on it: missing clips or frames, unreadable images, odd sizes.

    python data_scripts/check_dataset.py ../vimeo_septuplet --list ../vimeo_septuplet/sep_trainlist.txt \\
        --list-prefix sequences --pattern 'im{}.png' --start 1 --count 7 --lq-root ../vimeo_BIx4 --scale 4
    python data_scripts/check_dataset.py ../Vid4/GT --min-frames 7

A clip is a folder that directly holds images: every such folder under ROOT, or the folders named in
``--list``. Every frame is decoded in full (truncated files fail only there). Problems reported:

    missing-clip     a listed folder does not exist
    missing-frame    a frame named by --pattern/--start/--count is absent (or the clip has < --min-frames)
    unreadable       a file that does not decode (corrupt, truncated, unsupported)
    size             a frame whose size or bit depth differs from the clip's first frame
    lr               with --lq-root: an LR frame missing, unreadable, or not GT size (modcropped) / scale

Prints one line per problem (up to --show) and a summary of clips, frames, sizes and bit depths.
Exit codes: 0 clean, 1 problems found, 2 bad arguments (e.g. ROOT or the list file not found).
"""
import argparse
import sys
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.io import IMAGE_EXTENSIONS, list_images, read_image, read_list  # noqa: E402
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError


def find_clips(root):
    """Every folder under ``root`` (itself included) that directly holds at least one image."""
    folders = {p.parent for p in root.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()}
    return sorted(str(f.relative_to(root)) for f in folders)


def lr_name(name):
    """generate_lr.py writes JPEG frames as PNG."""
    path = Path(name)
    return path.with_suffix('.png').name if path.suffix.lower() in ('.jpg', '.jpeg') else path.name


def check_clip(job):
    """Worker: check one clip folder; returns (frames read, Counter of 'WxH dtype', [(kind, message)])."""
    root, clip, expected, min_frames, lq_root, scale = job
    folder = root / clip
    problems = []
    if expected:
        paths = [folder / name for name in expected]
        problems += [('missing-frame', f'{p}: frame missing') for p in paths if not p.is_file()]
        paths = [p for p in paths if p.is_file()]
    else:
        paths = list_images(folder)
    if len(paths) < min_frames:
        problems.append(('missing-frame', f'{folder}: {len(paths)} frames, expected at least {min_frames}'))
    sizes = Counter()
    first = None
    for path in paths:
        try:
            img = read_image(path)
        except DataError as err:
            problems.append(('unreadable', str(err)))
            continue
        desc = f'{img.shape[1]}x{img.shape[0]} {img.dtype}'
        sizes[desc] += 1
        if first is None:
            first = (path, img.shape, img.dtype, desc)
        elif (img.shape, img.dtype) != first[1:3]:
            problems.append(('size', f'{path}: {desc}, but {first[0].name} is {first[3]}'))
        if lq_root is not None:
            problems += check_lr(lq_root / clip / lr_name(path.name), img, scale)
    return len(paths), sizes, problems


def check_lr(path, gt, scale):
    if not path.is_file():
        return [('lr', f'{path}: LR frame missing')]
    try:
        lq = read_image(path)
    except DataError as err:
        return [('lr', str(err))]
    h, w = gt.shape[0] // scale, gt.shape[1] // scale
    if lq.shape[:2] != (h, w) or lq.dtype != gt.dtype:
        return [('lr', f'{path}: {lq.shape[1]}x{lq.shape[0]} {lq.dtype}, expected {w}x{h} {gt.dtype} '
                       f'(GT {gt.shape[1]}x{gt.shape[0]} modcropped / {scale})')]
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', type=Path, help='dataset root')
    parser.add_argument('--list', type=Path, help='check only the clip folders named in this list file')
    parser.add_argument('--list-prefix', default='', help='folder under root the list keys are relative to '
                        '(sequences for Vimeo-90K)')
    parser.add_argument('--pattern', help="frame names every clip must have, e.g. 'im{}.png' or '{:03d}.png'")
    parser.add_argument('--start', type=int, default=1, help='first frame number for --pattern (default 1)')
    parser.add_argument('--count', type=int, default=7, help='frames per clip for --pattern (default 7)')
    parser.add_argument('--min-frames', type=int, default=1, help='fewest frames a clip may have (default 1)')
    parser.add_argument('--lq-root', type=Path, help='LR tree mirroring root, checked frame by frame')
    parser.add_argument('--scale', type=int, default=4, help='LR scale for --lq-root (default 4)')
    parser.add_argument('--show', type=int, default=50, help='problem lines to print (default 50)')
    parser.add_argument('--workers', type=int, default=2, help='processes (default 2; 0 = none)')
    args = parser.parse_args(argv)

    if not args.root.is_dir():
        raise DataError(f'{args.root}: dataset root not found')
    if args.lq_root is not None and not args.lq_root.is_dir():
        raise DataError(f'{args.lq_root}: LR root not found')
    problems = []
    if args.list:
        keys = [str(Path(args.list_prefix) / k) for k in read_list(args.list)]
        clips = [k for k in keys if (args.root / k).is_dir()]
        problems += [('missing-clip', f'{args.root / k}: listed in {args.list}, folder not found')
                     for k in keys if not (args.root / k).is_dir()]
    else:
        clips = find_clips(args.root)
    expected = [args.pattern.format(args.start + i) for i in range(args.count)] if args.pattern else None
    jobs = [(args.root, c, expected, args.min_frames, args.lq_root, args.scale) for c in clips]

    if args.workers > 0:
        with Pool(args.workers) as pool:
            results = list(progress(pool.imap(check_clip, jobs, chunksize=4), total=len(jobs), unit='clip'))
    else:
        results = [check_clip(job) for job in progress(jobs, unit='clip')]
    frames, sizes = 0, Counter()
    for n, clip_sizes, clip_problems in results:
        frames += n
        sizes += clip_sizes
        problems += clip_problems

    for _, message in problems[:args.show]:
        print(message)
    if len(problems) > args.show:
        print(f'... and {len(problems) - args.show} more problems')
    kinds = Counter(kind for kind, _ in problems)
    print(f'{args.root}: {len(clips)} clips, {frames} frames checked; sizes: '
          + ', '.join(f'{d} ({n})' for d, n in sizes.most_common(5))
          + (f', {len(sizes) - 5} more' if len(sizes) > 5 else ''))
    print('problems: ' + (', '.join(f'{k} {n}' for k, n in sorted(kinds.items())) if problems else 'none'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
