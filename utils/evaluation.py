"""Scoring a network on clip datasets under a named protocol (shared by validation and test.py).

Each clip is cut into windows by ``data.protocols.make_windows``; the network sees the window's LR
input frames and predicts its 2n-1 HR frames; the frames the protocol marks as scored are rounded
to the GT's integer range and compared with the GT. Averages run frame -> clip -> dataset.

Networks with ``render(lq, times, size)`` (Temporal-LIIF, and the BicubicBlend baseline) are asked for
the window's instants at the GT's size, so they are scored at any space scale (the dataset's degradation)
and any ``time_factor``; fixed networks only at their own scale and time factor 2.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.io import write_image
from data.protocols import centre_window, make_windows
from models.adapters import predict, unwrap
from utils.metrics import calculate_psnr, calculate_ssim
from utils.options import OptionsError
from utils.performance import autocast

METRICS = ('psnr_y', 'ssim_y', 'psnr_rgb', 'ssim_rgb')


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


def windows_of(clip, protocol, n_inputs, time_factor):
    if protocol == 'centre':
        return [centre_window(len(clip['lq']), clip['name'])]
    return make_windows(len(clip['gt']), protocol, n_inputs, clip=clip['name'], time_factor=time_factor)


def run_window(net, lq, window, size):
    """The network's outputs for one window: lq (1, n, 3, h, w) -> (m, 3, H, W) float32 on the CPU."""
    module = unwrap(net)
    if callable(getattr(module, 'render', None)):
        times = window.times or [i / 2 for i in range(len(window.outputs))]
        return module.render(lq, times, size).squeeze(0).float().cpu()
    if window.times is not None:
        raise OptionsError(f'{type(module).__name__} makes 2n-1 frames at its own scale; protocol centre and time '
                           'factors other than 2 need a network with render() (TemporalLIIF, BicubicBlend)')
    return predict(net, lq).squeeze(0).float().cpu()


@torch.no_grad()
def evaluate(net, dataset, protocol, device, crop_border=0, max_clips=0, n_inputs=4, save_dir=None,
             progress=True, time_factor=2, amp=None):
    """Score ``net`` on every clip of ``dataset`` (``time_factor``: see the module docstring; ``amp``: an
    autocast dtype, ``performance.amp``).

    Returns ``{'clips': [{'clip', 'frames', 'psnr_y', ...}], 'average': {...}, 'frames': total, 'seconds': t}``.
    """
    net.eval()
    n_clips = min(len(dataset), max_clips) if max_clips else len(dataset)
    rows, start = [], time.time()
    for i in tqdm(range(n_clips), desc=f'eval {protocol}', disable=not progress, leave=False):
        clip = dataset[i]
        frames = {}
        for window in windows_of(clip, protocol, n_inputs, time_factor):
            lq = torch.from_numpy(np.ascontiguousarray(clip['lq'][list(window.inputs)])).permute(0, 3, 1, 2)
            with autocast(torch.device(device), amp):
                out = run_window(net, lq.unsqueeze(0).to(device), window, clip['gt'].shape[1:3])
            out = out.clamp_(0, 1).permute(0, 2, 3, 1).numpy()
            if len(out) != len(window.outputs):
                raise ValueError(f'clip {clip["name"]}: the network returned {len(out)} frames for a window of '
                                 f'{len(window.outputs)}')
            for pos in window.scored:
                index = window.outputs[pos]
                gt = clip['gt'][index]
                if out[pos].shape != gt.shape:
                    raise ValueError(f'clip {clip["name"]}, frame {clip["frame_names"][index]}: network output '
                                     f'{out[pos].shape} does not match the ground truth {gt.shape}')
                frames[index] = score_frame(out[pos], gt, clip['max_value'], crop_border)
                if save_dir is not None:
                    name = Path(clip['frame_names'][index]).stem + '.png'
                    image = np.round(out[pos] * clip['max_value']).astype(clip['gt'].dtype)
                    write_image(Path(save_dir) / clip['name'] / name, image)
        row = {'clip': clip['name'], 'frames': len(frames)}
        row.update({m: float(np.mean([f[m] for f in frames.values()])) for m in METRICS})
        rows.append(row)
    average = {'clip': 'average', 'frames': sum(r['frames'] for r in rows)}
    average.update({m: float(np.mean([r[m] for r in rows])) for m in METRICS})
    return {'clips': rows, 'average': average, 'frames': average['frames'], 'seconds': time.time() - start}


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
    return write_rows(result['clips'] + [result['average']], ('clip',), folder, stem, {**header, **result})


def compare_with_baseline(net, dataset, val_opt, device):
    """A table of ``net`` next to the bicubic+blend floor on the same clips and protocol."""
    from models.baseline import BicubicBlend
    first = dataset[0]
    scale = first['gt'].shape[1] // first['lq'].shape[1]
    rows = []
    for name, model in ((type(net).__name__, net), ('BicubicBlend', BicubicBlend(scale).to(device))):
        r = evaluate(model, dataset, val_opt['protocol'], device, val_opt['crop_border'], val_opt['max_clips'],
                     val_opt['n_inputs'], progress=False, time_factor=val_opt['time_factor'])['average']
        rows.append({**r, 'method': name})
    title = f'validation ({val_opt["protocol"]}, {len(dataset)} clips): network vs bicubic+blend baseline'
    return format_table(rows, title, first='method')
