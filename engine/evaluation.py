"""Scoring a network on clip datasets under a named protocol (shared by validation and test.py).

Each clip is cut into windows by the protocol (``data.protocols.Protocol``); the network renders the
window's output frames from its LR input frames (``VideoNetwork.render``); the frames the protocol marks as
scored are rounded to the GT's integer range and compared with the GT. Averages run frame -> clip -> dataset.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch

from data.io import write_image
from models.baseline import BicubicBlend
from utils.errors import OptionsError
from utils.metrics import calculate_psnr, calculate_ssim

from .logger import progress as bar
from .performance import autocast

METRICS = ('psnr_y', 'ssim_y', 'psnr_rgb', 'ssim_rgb')


class NonFiniteOutput(ValueError):
    """The network's output holds NaN or inf (weights that diverged): there is nothing to score."""


def score_frame(pred, gt, max_value, crop_border=0):
    """PSNR/SSIM on Y and RGB of one frame. pred float (H, W, 3) in [0, 1], gt integer (H, W, 3)."""
    pred = np.clip(np.round(pred.astype(np.float64) * max_value), 0, max_value)
    gt = gt.astype(np.float64)
    if max_value != 255:  # metrics follow the 8-bit convention; PSNR/SSIM are unchanged by the rescale
        pred, gt = pred * (255.0 / max_value), gt * (255.0 / max_value)
    return {
        'psnr_y': calculate_psnr(pred, gt, crop_border, test_y_channel=True),
        'ssim_y': calculate_ssim(pred, gt, crop_border, test_y_channel=True),
        'psnr_rgb': calculate_psnr(pred, gt, crop_border),
        'ssim_rgb': calculate_ssim(pred, gt, crop_border),
    }


@torch.no_grad()
def evaluate(net, dataset, protocol, device, amp=None, save_dir=None, progress=True, keep=0):
    """Score ``net`` on the clips of ``dataset`` under ``protocol`` (a ``data.protocols.Protocol``); ``amp``:
    an autocast dtype (``performance.amp``); ``save_dir``: write the scored frames there; ``keep``: return
    the middle scored frame of the first ``keep`` clips as ``result['kept']``, (name, output, GT) float RGB
    in [0, 1] (TensorBoard shows them).

    Every window goes through ``net.render`` at the window's instants and the GT's size, so any-factor
    networks are scored at any space scale (the dataset's degradation) and time factor, and fixed ones at
    their own (anything else is a one-line ValueError from the network).
    Returns ``{'clips': [{'clip', 'frames', 'psnr_y', ...}], 'average': {...}, 'frames': total, 'seconds': t,
    'positions': [{'position': k, ...}]}``: ``positions`` averages the frames at each position k (1-based) of
    the windows' outputs, what papers report per output frame (im1..im7 of Vimeo septuplets).
    """
    net.eval()
    device = torch.device(device)
    try:
        net.check_factors(time_factor=protocol.time_factor)
    except ValueError as e:
        raise OptionsError(f'protocol {protocol.describe()}: {e}') from None
    rows, kept, by_position, start = [], [], {}, time.time()
    for i in bar(range(protocol.clips(dataset)), enabled=progress, desc=f'eval {protocol.name}', leave=False):
        clip = dataset[i]
        frames = {}
        windows = protocol.windows(clip)
        for window in windows:
            lq = torch.from_numpy(np.ascontiguousarray(clip['lq'][list(window.inputs)])).permute(0, 3, 1, 2)
            try:
                with autocast(device, amp):
                    out = net.render(lq.unsqueeze(0).to(device), window.times, clip['gt'].shape[1:3])
            except ValueError as e:  # what the network cannot answer: other sizes (scale), other instants
                raise OptionsError(f'clip {clip["name"]}: {e}') from None
            if not torch.isfinite(out).all():
                raise NonFiniteOutput(f'clip {clip["name"]}: the network\'s output is not finite (NaN or inf)')
            out = out.squeeze(0).float().cpu().clamp_(0, 1).permute(0, 2, 3, 1).numpy()
            if len(out) != len(window.outputs):
                raise ValueError(f'clip {clip["name"]}: the network returned {len(out)} frames for a window of '
                                 f'{len(window.outputs)}')
            for pos in window.scored:
                index = window.outputs[pos]
                gt = clip['gt'][index]
                if out[pos].shape != gt.shape:
                    raise ValueError(f'clip {clip["name"]}, frame {clip["frame_names"][index]}: network output '
                                     f'{out[pos].shape} does not match the ground truth {gt.shape}')
                frames[index] = score_frame(out[pos], gt, clip['max_value'], protocol.crop_border)
                by_position.setdefault(pos, []).append(frames[index])
                if save_dir is not None:
                    name = Path(clip['frame_names'][index]).stem + '.png'
                    image = np.round(out[pos] * clip['max_value']).astype(clip['gt'].dtype)
                    write_image(Path(save_dir) / clip['name'] / name, image)
            if len(kept) < keep and window is windows[len(windows) // 2]:
                index = window.outputs[window.scored[len(window.scored) // 2]]
                name = f'{clip["name"]}/{Path(clip["frame_names"][index]).stem}'
                kept.append((name, out[window.outputs.index(index)], clip['gt'][index] / clip['max_value']))
        row = {'clip': clip['name'], 'frames': len(frames)}
        row.update({m: float(np.mean([f[m] for f in frames.values()])) for m in METRICS})
        rows.append(row)
    average = {'clip': 'average', 'frames': sum(r['frames'] for r in rows)}
    average.update({m: float(np.mean([r[m] for r in rows])) for m in METRICS})
    positions = [{'position': pos + 1, 'frames': len(scores), **{m: float(np.mean([f[m] for f in scores]))
                                                                  for m in METRICS}}
                 for pos, scores in sorted(by_position.items())]
    return {'clips': rows, 'average': average, 'frames': average['frames'], 'seconds': time.time() - start,
            'kept': kept, 'positions': positions}


def format_table(rows, title='', first='clip'):
    """Rows of {first, frames, psnr_y, ...} as the Markdown table test.py prints."""
    lines = [title] if title else []
    lines += [f'| {first} | frames | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB |', '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f'| {r[first]} | {r["frames"]} | {r["psnr_y"]:.4f} | {r["ssim_y"]:.4f} | '
                     f'{r["psnr_rgb"]:.4f} | {r["ssim_rgb"]:.4f} |')
    return '\n'.join(lines)


def write_rows(rows, keys, folder, stem, payload):
    """<folder>/<stem>.csv (columns ``keys``, frames and the metrics, one line per row) and <stem>.json
    (``payload``); returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f'{stem}.csv', 'w', encoding='utf-8') as f:
        f.write(','.join([*keys, 'frames', *METRICS]) + '\n')
        for r in rows:
            f.write(','.join([*(str(r[k]) for k in keys), str(r['frames']), *(f'{r[m]:.6f}' for m in METRICS)])
                    + '\n')
    with open(folder / f'{stem}.json', 'w', encoding='utf-8') as f:
        json.dump(payload, f, indent=2)
    return folder / f'{stem}.csv', folder / f'{stem}.json'


def write_results(result, folder, stem, header):
    """<folder>/<stem>.csv (one row per clip and the average) and <stem>.json (with the header facts)."""
    payload = {**header, **{k: v for k, v in result.items() if k != 'kept'}}  # kept: frames for TensorBoard
    return write_rows(result['clips'] + [result['average']], ('clip',), folder, stem, payload)


def compare_with_baseline(net, dataset, protocol, device):
    """A table of ``net`` next to the bicubic+blend floor on the same clips and protocol."""
    first = dataset[0]
    baseline = BicubicBlend(first['gt'].shape[1] // first['lq'].shape[1]).to(device)
    rows = [{**evaluate(model, dataset, protocol, device, progress=False)['average'], 'method': name}
            for name, model in ((net.label, net), ('BicubicBlend', baseline))]
    title = (f'validation ({protocol.describe()}, {protocol.clips(dataset)} clips): network vs bicubic+blend '
             'baseline')
    return format_table(rows, title, first='method')
