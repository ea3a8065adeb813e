"""Make a low-resolution mirror of a frame tree (Vimeo-90K, Jilin-189, Vid4 or any folders of frames).

    python data_scripts/generate_lr.py ../vimeo_septuplet ../vimeo_septuplet_BIx4 --type BI --scale 4
    python data_scripts/generate_lr.py ../vimeo_septuplet ../vimeo_BDx4 --type BD --preset basicvsr \\
        --list ../vimeo_septuplet/sep_testlist.txt --list-prefix sequences

Every image under SRC (or under the listed folders only) is modcropped to the scale, degraded exactly as the
loaders do on the fly (``data.transforms.degrade``) and written to the same relative path under DST, with the
same bit depth; JPEG inputs are written as PNG, so the LR frames carry no new compression loss. BI is rounded
once by default, as the official MATLAB (im2double -> imresize -> imwrite) and Python (imresize_np ->
cv2.imwrite) scripts wrote their LR sets; ``--rounding per_pass`` rounds after each 1-D pass, as MATLAB's
imresize of the uint8 array does. Outputs that already exist are skipped, so an interrupted run can simply be
restarted. ``DST/lr_manifest.json`` records the degradation; a DST made with another degradation (another
rounding included) is refused, and loaders given ``lq_root: DST`` warn when it disagrees with their
configuration. Exit codes: 0 done, 2 bad input (the failed files are listed).
"""
import argparse
import json
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from data.degradations import (  # noqa: E402
    BD_PRESETS,
    ROUNDINGS,
    modcrop,  # noqa: E402
)
from data.io import IMAGE_EXTENSIONS, read_image, read_list, write_image  # noqa: E402
from data.transforms import (  # noqa: E402
    MANIFEST_NAME,
    degrade,
    describe_lr,
    manifest,
    manifest_differences,
    parse_degradation,
)
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError


def find_images(src, folders):
    """Image files under ``src`` (recursively), or under the given sub-folders only; sorted."""
    tops = [src / f for f in folders] if folders else [src]
    missing = [str(t) for t in tops if not t.is_dir()]
    if missing:
        raise DataError(f'{len(missing)} listed folders not found under {src} (first: {", ".join(missing[:3])})')
    return sorted(p for top in tops for p in top.rglob('*')
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith('.'))


def output_path(src, dst, path):
    out = dst / path.relative_to(src)
    return out.with_suffix('.png') if out.suffix.lower() in ('.jpg', '.jpeg') else out


def make_lr(job):
    """Worker: (GT path, LR path, degradation) -> None, or the one-line error for this file."""
    src, dst, degradation = job
    try:
        gt = modcrop(read_image(src), degradation['scale'])
        write_image(dst, degrade(gt, degradation))
    except DataError as err:
        return str(err)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', type=Path, help='GT root (e.g. vimeo_septuplet, Vid4/GT, Jilin-189/test)')
    parser.add_argument('dst', type=Path, help='LR root to create (mirrors src)')
    parser.add_argument('--type', default='BI', choices=['BI', 'BD', 'PIL'], help='degradation (default BI)')
    parser.add_argument('--scale', type=int, default=4, help='downscaling factor (default 4)')
    parser.add_argument('--rounding', choices=ROUNDINGS, default=None,
                        help='BI: round once at the end (default, the official sets) or after each 1-D pass')
    parser.add_argument('--preset', choices=sorted(BD_PRESETS), default=None,
                        help='BD recipe (default duf: 13 taps, reflect, offset 0)')
    parser.add_argument('--sigma', type=float, default=None, help='BD Gaussian sigma (default 1.6)')
    parser.add_argument('--kernel-size', type=int, default=None, help='BD kernel taps, odd or even (default 13)')
    parser.add_argument('--padding', choices=['reflect', 'replicate'], default=None, help='BD border (default reflect)')
    parser.add_argument('--offset', type=int, default=None, help='BD sampling phase: first row/column kept (default 0)')
    parser.add_argument('--list', type=Path, help='only the folders named in this list file')
    parser.add_argument('--list-prefix', default='', help='folder under src the list keys are relative to '
                        '(sequences for Vimeo-90K)')
    parser.add_argument('--workers', type=int, default=2, help='processes (default 2; 0 = none)')
    args = parser.parse_args(argv)

    src, dst = args.src.resolve(), args.dst.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise DataError(f'{args.dst}: is the GT root {args.src}, lies inside it or holds it; give an LR root beside it')
    options = {'rounding': args.rounding, 'preset': args.preset, 'sigma': args.sigma,
               'kernel_size': args.kernel_size, 'padding': args.padding, 'offset': args.offset}
    degradation = {'type': args.type, 'scale': args.scale, **{k: v for k, v in options.items() if v is not None}}
    try:
        info = manifest(degradation)
    except ValueError as err:
        raise DataError(str(err)) from None
    manifest_path = args.dst / MANIFEST_NAME
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        differences = manifest_differences(old, degradation)
        if old.get('degradation') != info['degradation'] or differences:
            raise DataError(f'{manifest_path}: {args.dst} already holds LR frames made with '
                            f'{", ".join(differences) or old}; choose another destination')
    folders = [str(Path(args.list_prefix) / k) for k in read_list(args.list)] if args.list else []
    images = find_images(args.src, folders)
    if not images:
        raise DataError(f'{args.src}: no images found')
    args.dst.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(info, indent=2) + '\n')

    spec = parse_degradation(degradation)
    jobs = [(p, out, spec) for p in images if not (out := output_path(args.src, args.dst, p)).exists()]
    print(f'{len(images)} frames under {args.src}: {len(images) - len(jobs)} already done, {len(jobs)} to make '
          f'({describe_lr(spec)})')
    if args.workers > 0:
        # one torch thread per process: the workers already use every core asked for
        with Pool(args.workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            errors = list(progress(pool.imap_unordered(make_lr, jobs, chunksize=8), total=len(jobs), unit='frame'))
    else:
        errors = [make_lr(job) for job in progress(jobs, unit='frame')]
    errors = [e for e in errors if e]
    for error in errors:
        print(f'error: {error}', file=sys.stderr)
    if errors:
        print(f'{len(errors)} of {len(jobs)} frames failed', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
