"""Before/after picture for the README: the same crop, bicubic next to the network (and the ground truth).

    python scripts/make_readme_figure.py          # the demo checkpoint on demo:carphone -> experiments/figures/
    python scripts/make_readme_figure.py --output docs/demo_before_after.png      # the README's figure
    python scripts/make_readme_figure.py --checkpoint run/checkpoints/best.pth --clip Vid4/GT/calendar \\
        --frame 3 --crop 200 150 160 --output docs/calendar.png

By default (``--degradation auto``) the clip is ground truth: 7 consecutive frames from ``--start`` are
degraded as the checkpoint's run degraded its validation clips (BI x4 without one), frames 0, 2, 4, 6 go
into the network, and output ``--frame`` (0..6; odd frames are synthesised in time) is shown as three
panels: bicubic upscaling of the LR input (BicubicBlend: the mean of the neighbouring frames for an odd
frame), the network, the ground truth, each labelled with its PSNR-Y on the whole frame. With
``--degradation none`` the clip itself is the LR input (4 consecutive frames) and there is no ground truth
panel. Panels are enlarged ``--zoom`` times by pixel repetition so that the detail is visible.
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.io import to_float, to_integer, write_image  # noqa: E402
from data.transforms import degrade_float, modcrop_frames, parse_degradation  # noqa: E402
from engine import cli  # noqa: E402
from engine.dist import resolve_device  # noqa: E402
from engine.evaluation import score_frame  # noqa: E402
from engine.inference import N_INPUTS, Upscaler, load_network, open_input  # noqa: E402
from models.baseline import BicubicBlend  # noqa: E402
from utils.errors import (
    DataError,
    OptionsError,  # noqa: E402
)

LABEL_HEIGHT = 30
GAP = 6


def run_degradation(ckpt):
    """The degradation of the checkpoint's validation (or test) clips, None when it does not say."""
    data = ((ckpt or {}).get('config') or {}).get('data') or {}
    for key in ('val', 'test'):
        if (data.get(key) or {}).get('degradation'):
            return data[key]['degradation']
    return None


def read_clip(path, start, count):
    """Frames ``start .. start + count - 1`` of a video or frame folder, ``(count, H, W, 3)`` integer."""
    source = open_input(path, max_frames=start + count)
    if source.count < start + count:
        raise DataError(f'{path}: {source.count} frames, the figure needs {count} from frame {start}')
    return np.stack(list(source.frames())[start:]), source


def inputs_and_truth(args, ckpt):
    """LR inputs (N_INPUTS, h, w, 3) float in [0, 1], ground truth (2 N_INPUTS - 1, H, W, 3) or None, white level."""
    if args.degradation == 'none':
        frames, _ = read_clip(args.clip, args.start, N_INPUTS)
        return to_float(frames), None, frames.dtype
    try:
        spec = parse_degradation(run_degradation(ckpt) if args.degradation == 'auto' else
                                 yaml.safe_load(args.degradation))
    except (ValueError, yaml.YAMLError) as e:
        raise OptionsError(f'--degradation: {e}') from None
    frames, _ = read_clip(args.clip, args.start, 2 * N_INPUTS - 1)
    gt = modcrop_frames(frames, spec['scale'])
    return degrade_float(gt[0::2], spec), gt, gt.dtype


def crop_box(args, height, width):
    """(x, y, size) of the square crop in output pixels: ``--crop``, else a centred one of up to 192."""
    if args.crop is None:
        size = min(height, width, 192)
        return (width - size) // 2, (height - size) // 2, size
    x, y, size = args.crop
    if size < 1 or x < 0 or y < 0 or x + size > width or y + size > height:
        raise OptionsError(f'--crop {x} {y} {size}: outside the {width}x{height} output frame')
    return x, y, size


def panel(image, label, zoom):
    """A crop enlarged ``zoom`` times with ``label`` written on a white band above it."""
    image = np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)
    band = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    scale = 0.5 if image.shape[1] >= 240 else 0.38
    cv2.putText(band, label, (6, LABEL_HEIGHT - 10), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image])


def to_8bit(frame, dtype):
    """Float frame in [0, 1] -> uint8 for display, after rounding to the clip's own integer levels."""
    levels = to_integer(frame, dtype)
    return levels if dtype == np.uint8 else to_integer(to_float(levels), np.uint8)


@torch.inference_mode()
def make_figure(args):
    net, ckpt = load_network(args.checkpoint, args.network)
    device = resolve_device(args.device)
    lq, gt, dtype = inputs_and_truth(args, ckpt)
    frames = 2 * N_INPUTS - 1
    if not 0 <= args.frame < frames:
        raise OptionsError(f'--frame {args.frame}: must be 0..{frames - 1} (output frames of one window)')
    upscaler = Upscaler(net, device)
    if gt is not None and upscaler.scale * lq.shape[1] != gt.shape[1]:
        raise OptionsError(f'--degradation: the LR frames are 1/{gt.shape[1] // lq.shape[1]} of the clip, '
                           f'{upscaler.name} upscales x{upscaler.scale:g}')
    window = torch.from_numpy(lq).permute(0, 3, 1, 2).unsqueeze(0)
    times = [args.frame / 2]
    out = upscaler.run(window, times)[0].permute(1, 2, 0).numpy()
    before = Upscaler(BicubicBlend(int(upscaler.scale)), device).run(window, times)[0].permute(1, 2, 0).numpy()
    x, y, size = crop_box(args, *out.shape[:2])

    kind = 'bicubic' if args.frame % 2 == 0 else 'bicubic + blend'
    labels = [f'input, {kind} x{upscaler.scale:g}', f'{upscaler.name} x{upscaler.scale:g}']
    images = [before, out]
    if gt is not None:
        truth = gt[args.frame]
        white = np.iinfo(truth.dtype).max
        psnr = [score_frame(img, truth, white)['psnr_y'] for img in images]
        labels = [f'{label} ({p:.2f} dB)' for label, p in zip(labels, psnr)] + ['ground truth']
        images.append(to_float(truth))
    panels = [panel(to_8bit(img[y:y + size, x:x + size], dtype), label, args.zoom)
              for img, label in zip(images, labels)]
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
    figure = np.concatenate([p for pair in zip(panels, [gap] * len(panels)) for p in pair][:-1], axis=1)
    write_image(args.output, figure)
    print(f'{args.output}: {figure.shape[1]}x{figure.shape[0]}, output frame {args.frame} of {args.clip} '
          f'from frame {args.start}, crop {size}x{size} at ({x}, {y}), ' + ', '.join(labels))
    return figure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoint', default=None,
                        help='trained network (default: experiments/demo/checkpoints/best.pth unless --network)')
    parser.add_argument('--network', default=None, metavar='YAML', help='network spec, e.g. "{type: BicubicBlend}"')
    parser.add_argument('--clip', default='demo:carphone', help='video file, demo:<name> or frame folder')
    parser.add_argument('--start', type=int, default=0, help='first clip frame used')
    parser.add_argument('--frame', type=int, default=2, help='output frame shown, 0..6 (even: an input instant)')
    parser.add_argument('--degradation', default='auto',
                        help="auto (the checkpoint run's), none (the clip is the LR input) or a YAML spec "
                             "such as '{type: BD, scale: 4, sigma: 1.6}'")
    parser.add_argument('--crop', type=int, nargs=3, default=None, metavar=('X', 'Y', 'SIZE'),
                        help='square crop in output pixels (default: centred, up to 192)')
    parser.add_argument('--zoom', type=int, default=2, help='pixel repetition of each panel (2)')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda')
    parser.add_argument('--output', default=str(ROOT / 'experiments' / 'figures' / 'demo_before_after.png'),
                        help='PNG to write (default under experiments/, which git ignores)')
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.network is None:
        args.checkpoint = str(ROOT / 'experiments' / 'demo' / 'checkpoints' / 'best.pth')
    return cli.run(checked_figure, args)


def checked_figure(args):
    if args.zoom < 1 or args.start < 0:
        raise OptionsError('--zoom must be >= 1 and --start >= 0')
    make_figure(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
