"""Run logging: one stdlib logger, metrics.csv, curves.png and optional TensorBoard, on rank 0 only."""
import csv
import logging
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

LOGGER_NAME = 'stvsr'
CSV_FIELDS = ['iter', 'lr', 'loss', 'data_time', 'iter_time', 'offset', 'psnr_y', 'ssim_y', 'psnr_rgb', 'ssim_rgb']


class TqdmHandler(logging.StreamHandler):
    """Console lines printed through ``tqdm.write``, so that they never land in the middle of a progress bar."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(log_file=None, is_main=True):
    """Configure the 'stvsr' logger once: console (and ``log_file``) on rank 0, warnings only elsewhere."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%Y-%m-%d %H:%M:%S')
    console = TqdmHandler(sys.stdout)
    console.setFormatter(logging.Formatter('%(message)s'))
    logger.addHandler(console)
    if log_file is not None and is_main:
        handler = logging.FileHandler(log_file, encoding='utf-8')
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def progress(iterable=None, enabled=True, **kwargs):
    """A tqdm progress bar on a terminal; none when ``enabled`` is false or stderr is not a terminal (a log
    file or a pipe would collect every redraw of the bar, mixed with the log lines)."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def close_log_file():
    """Close the log file of ``setup_logging`` (before its folder is removed); the console stays."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        handler.close()
        logger.removeHandler(handler)


def format_eta(seconds):
    seconds = int(max(seconds, 0))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f'{d}d {h:02d}h {m:02d}m' if d else f'{h:02d}:{m:02d}:{s:02d}'


class MetricsLog:
    """metrics.csv (a row per logged iteration and per validation) and curves.png drawn from it.

    On resume, rows past the resumed iteration (written by the interrupted run after its last
    checkpoint) are dropped so that the file matches the weights; the file is rewritten aside and renamed,
    then appended to, a row at a time.
    """

    def __init__(self, run_dir, start_iter=0, tensorboard=False):
        self.path = Path(run_dir) / 'metrics.csv'
        self.png = Path(run_dir) / 'curves.png'
        self.rows = []
        if self.path.exists():
            with open(self.path, newline='') as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['iter']) <= start_iter]
        # written aside and renamed: an error on the way (a full disk) leaves the old history whole
        tmp = self.path.with_name('.metrics.csv.tmp')
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(run_dir) / 'tb'), purge_step=start_iter + 1)

    def add(self, it, **values):
        values = {k: v for k, v in values.items() if v is not None}
        row = {'iter': it, **{k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in values.items()}}
        self.rows.append(row)
        with open(self.path, 'a', newline='') as f:
            csv.DictWriter(f, CSV_FIELDS).writerow(row)
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key if key in ('lr', 'loss', 'data_time', 'iter_time', 'offset') else f'val/{key}',
                                   value, it)

    def add_images(self, it, frames):
        """Validation frames (name, output, GT), float RGB (H, W, 3) in [0, 1], to TensorBoard, side by side."""
        if self.tb is None:
            return
        for name, pred, gt in frames:
            self.tb.add_image(f'val/{name}', np.concatenate((pred, gt), axis=1).clip(0, 1), it, dataformats='HWC')

    def plot(self):
        """Redraw curves.png: training loss and validation PSNR-Y against iteration."""
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt

        def series(key):
            pts = [(int(r['iter']), float(r[key])) for r in self.rows if r.get(key) not in (None, '')]
            return [p[0] for p in pts], [p[1] for p in pts]

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        x, y = series('loss')
        ax1.plot(x, y, lw=1)
        ax1.set(xlabel='iteration', ylabel='training loss', title='loss')
        if y and min(y) > 0:
            ax1.set_yscale('log')
        x, y = series('psnr_y')
        ax2.plot(x, y, 'o-', lw=1, ms=3)
        ax2.set(xlabel='iteration', ylabel='PSNR-Y (dB)', title='validation')
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        tmp = self.png.with_name('.curves.tmp.png')
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        tmp.replace(self.png)

    def close(self):
        if self.tb is not None:
            self.tb.close()
