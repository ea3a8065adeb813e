"""Everything the training loop of ``main.py`` calls: building a run, one step, rollback, logging, validation
and checkpoints. The loop itself stays in ``main.py``, on one screen.

A run is built once (``build_run``), with every option proven to build before anything is written; its state
lives in one :class:`Run`. Data order and augmentation depend only on (seed, epoch, index)
(``SeededSamples``, ``ResumableSampler``), so a resumed or rolled-back run sees exactly the samples an
uninterrupted run sees.
"""
import inspect
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from data import build_dataset
from data.protocols import Protocol
from models import build_network
from models.common import mean_offset_magnitude
from models.losses import LOSSES
from utils.errors import DataError, OptionsError, TrainingError

from .checkpoint import CheckpointManager, load_checkpoint, restore, training_state
from .dist import barrier, broadcast_object, mean_over_ranks, resolve_device
from .evaluation import compare_with_baseline, evaluate
from .logger import MetricsLog, format_eta, setup_logging
from .optim import build_optimizer, build_scheduler
from .options import build_option, dump_options
from .performance import autocast, check_amp, grad_scaler, maybe_compile, prepare_network

log = logging.getLogger('stvsr')


class SeededSamples(Dataset):
    """Wraps a dataset so that sample ``(index, seed)`` is drawn with all RNGs seeded by ``seed``.

    Random crops and augmentations then depend only on (run seed, epoch, index), not on which worker
    ran them or on what ran before. ``extra_inputs`` (the network's ``extra_inputs()``, e.g. optical
    flows) runs here, in the loader workers, on the augmented LR frames.
    """

    def __init__(self, dataset, extra_inputs=None):
        self.dataset, self.extra_inputs = dataset, extra_inputs

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        sample = self.dataset[index]
        if self.extra_inputs is not None:
            sample.update(self.extra_inputs(sample['lq']))
        return sample


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled per epoch with ``set_epoch``, sharded over ranks, last partial
    batch dropped) that can start an epoch after ``skip`` samples and yields (index, sample seed)."""

    def __init__(self, dataset, world_size, rank, seed):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        for position, index in enumerate(super().__iter__()):
            if position >= self.skip:
                yield index, int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])


def train_batches(loader, sampler, start_iter):
    """Endless batches, starting where iteration ``start_iter`` of an uninterrupted run would be."""
    per_epoch = len(sampler) // loader.batch_size
    if per_epoch == 0:
        raise DataError(f'the training set has {len(sampler.dataset)} samples, fewer than one batch of '
                        f'{loader.batch_size * sampler.num_replicas}')
    epoch, done = divmod(start_iter, per_epoch)
    while True:
        sampler.set_epoch(epoch, skip=done * loader.batch_size)
        for batch in loader:
            yield batch
        epoch, done = epoch + 1, 0


class TrainingStep(nn.Module):
    """The network's training losses as a module's forward, so that DistributedDataParallel and
    torch.compile wrap one call: ``forward(lq, gt, extras) -> (pred, {name: loss})``. Checkpoints hold the
    bare network (``net``), never this wrapper."""

    def __init__(self, net, criterion):
        super().__init__()
        self.net, self.criterion = net, criterion

    def forward(self, lq, gt, extras):
        return self.net.training_losses(lq, gt, extras, self.criterion)


def configure_network_loss(net, options):
    """``train.network_loss``: keyword arguments of the network's ``configure_loss`` that YAML can give
    (those with a plain default: bool, number, string); one line naming the key otherwise."""
    allowed = [n for n, p in inspect.signature(net.configure_loss).parameters.items()
               if isinstance(p.default, (bool, int, float, str))]
    for key in options:
        if key not in allowed:
            raise OptionsError(f'train.network_loss.{key}: not an argument of {type(net).__name__}\'s training '
                               f'loss; allowed: {", ".join(allowed) or "none (the network uses train.loss)"}')
    build_option(lambda spec: net.configure_loss(**{k: v for k, v in spec.items() if k != 'type'}),
                 {'type': type(net).__name__, **options}, 'train.network_loss')


def prepare_run_dir(opt):
    """Create (or reuse, when resuming) <experiments_root>/<name>; refuse to clobber a previous run."""
    run_dir = Path(opt['experiments_root']) / opt['name']
    resume, overwrite = opt['train']['resume'], opt['train']['overwrite']
    if run_dir.exists() and any(run_dir.iterdir()) and resume is None:
        if not overwrite:
            raise OptionsError(f'{run_dir} already exists: set train.resume=auto to continue it or '
                               'train.overwrite=true to start over (the old folder is kept as <name>_archived_<time>)')
        shutil.move(str(run_dir), f'{run_dir}_archived_{time.strftime("%Y%m%d_%H%M%S")}')
    try:
        (run_dir / 'checkpoints').mkdir(parents=True, exist_ok=True)
        probe = run_dir / '.write_test'
        probe.write_bytes(b'x' * 1024)
        probe.unlink()
    except OSError as e:
        raise OptionsError(f'{run_dir}: experiments folder is not writable ({e.strerror})') from None
    return run_dir


class StepTimer:
    """Data and step seconds per iteration since the last log line, and the ETA from them."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.start = self.mark = time.time()
        self.data = self.step = 0.0
        self.count = 0

    def data_ready(self):
        now = time.time()
        self.data, self.mark = self.data + now - self.mark, now

    def step_done(self):
        now = time.time()
        self.step, self.mark, self.count = self.step + now - self.mark, now, self.count + 1

    def resume(self):
        """After logging, validation and saving: their time is neither data nor step time."""
        self.mark = time.time()

    def eta(self, remaining):
        return format_eta((time.time() - self.start) / max(self.count, 1) * remaining)


@dataclass
class Run:
    """The state of one training run (``build_run``)."""
    opt: dict
    dist: object
    device: torch.device
    net: nn.Module
    model: nn.Module  # TrainingStep around net, wrapped for DDP / compile
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    amp: object
    loader: DataLoader
    sampler: ResumableSampler
    val_set: object
    protocol: Protocol
    ckpts: CheckpointManager
    run_dir: Path
    metrics: object
    loss_scale: int
    start_iter: int = 0
    best: dict = field(default_factory=lambda: {'metric': 'psnr_y', 'value': -math.inf, 'iteration': 0})
    bad_steps: int = 0
    rollbacks: int = 0
    bar: object = None

    @property
    def cfg(self):
        return self.opt['train']


def build_run(opt, dist):
    """Build everything a run needs from the options; only then make the run folder, and resume."""
    device = resolve_device(opt['device'], dist.local_rank)
    if opt['num_threads']:
        torch.set_num_threads(opt['num_threads'])
    cfg, cfg_data = opt['train'], opt['data']
    for key, value in (('network', opt['network']), ('data.train', cfg_data['train'])):
        if value is None:
            raise OptionsError(f'{key}: required to train')
    if cfg_data['batch_size'] % dist.world_size:
        raise OptionsError(f'data.batch_size: {cfg_data["batch_size"]} is not divisible by the '
                           f'{dist.world_size} processes')
    random.seed(opt['seed'] + dist.rank)
    np.random.seed(opt['seed'] + dist.rank)
    torch.manual_seed(opt['seed'])  # same initial weights on every rank

    perf = opt['performance']
    amp = check_amp(perf['amp'], device)
    net = prepare_network(build_option(build_network, opt['network'], 'network').to(device), perf)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise OptionsError(f'network.type: {opt["network"]["type"]} has no trainable parameters '
                           '(evaluate it with test.py instead)')
    train_set = build_option(build_dataset, cfg_data['train'], 'data.train')
    val_set = (build_option(build_dataset, cfg_data['val'], 'data.val')
               if cfg_data['val'] is not None and dist.is_main else None)
    criterion = LOSSES.build(cfg['loss'])
    configure_network_loss(net, cfg['network_loss'])
    optimizer = build_option(lambda spec: build_optimizer(params, spec), cfg['optimizer'], 'train.optimizer')
    scheduler = build_option(lambda spec: build_scheduler(optimizer, spec, cfg['warmup_iter']), cfg['scheduler'],
                             'train.scheduler')

    # Only now, with every option proven to build, is anything written.
    run_dir = broadcast_object(prepare_run_dir(opt) if dist.is_main else None, dist)
    setup_logging(run_dir / 'train.log', dist.is_main)
    if dist.is_main:
        dump_options(opt, run_dir / 'config.yml')
    ckpts = CheckpointManager(run_dir / 'checkpoints', cfg['keep_checkpoints'])
    if dist.is_main:
        for name in ckpts.remove_partial_files():
            log.warning(f'removed {name}, a checkpoint write that an earlier process did not finish')

    step = TrainingStep(net, criterion)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, opt['seed'])
    workers = cfg_data['num_workers']
    # The loader draws its workers' base seed from its own generator: from the global one, that draw would
    # happen at a different point of a resumed run and shift every later random number (stochastic depth).
    loader = DataLoader(SeededSamples(train_set, net.extra_inputs()), batch_size=cfg_data['batch_size'] // dist.world_size,
                        sampler=sampler, num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                        pin_memory=cfg_data['pin_memory'] and device.type == 'cuda',
                        generator=torch.Generator().manual_seed(opt['seed']))
    # DDP averages gradients over ranks; a summed loss must be scaled back up to equal one process's sum.
    summed = not net.own_loss and criterion.reduction == 'sum'
    run = Run(opt=opt, dist=dist, device=device, net=net,
              model=maybe_compile(DistributedDataParallel(step) if dist.enabled else step, perf),
              optimizer=optimizer, scheduler=scheduler, scaler=grad_scaler(device, amp), amp=amp, loader=loader,
              sampler=sampler, val_set=val_set, protocol=Protocol.from_options(opt['val']), ckpts=ckpts,
              run_dir=run_dir, metrics=None, loss_scale=dist.world_size if summed else 1)
    resume_run(run)
    run.metrics = MetricsLog(run_dir, run.start_iter, cfg['tensorboard']) if dist.is_main else None
    log.info(f'network {opt["network"]["type"]}: {sum(p.numel() for p in params):,} parameters; '
             f'{len(train_set):,} training samples; batch {cfg_data["batch_size"]} on {dist.world_size} '
             f'process(es), device {device}')
    log.info(f'run folder {run_dir}; iterations {run.start_iter} -> {cfg["total_iter"]}')
    run.bar = tqdm(total=cfg['total_iter'], initial=run.start_iter, desc='train', dynamic_ncols=True,
                   disable=not (dist.is_main and cfg['progress_bar']))
    return run


def resume_run(run):
    """``train.resume``: auto (the newest loadable checkpoint of this run, if any) or a path."""
    resume = run.cfg['resume']
    if resume is None:
        return
    path, ckpt = run.ckpts.latest_valid(log.warning) if resume == 'auto' else (resume, load_checkpoint(resume))
    if ckpt is None:
        log.info('resume: auto found no checkpoint; starting from scratch')
        return
    run.start_iter, run.best = restore(ckpt, path, run.opt, run.net, run.optimizer, run.scheduler, run.scaler)
    log.info(f'resumed from {path} at iteration {run.start_iter}')


def train_step(run, batch, it):
    """Iteration ``it + 1``: one optimizer step on ``batch``; returns (losses, loss). A non-finite loss or
    gradient skips the update and counts in ``run.bad_steps`` (with fp16, an overflowing gradient is the
    scaler's business, not a bad step)."""
    device = run.device
    lq, gt = batch['lq'].to(device, non_blocking=True), batch['gt'].to(device, non_blocking=True)
    extras = {k: v.to(device) for k, v in batch.items() if k not in ('lq', 'gt', 'key')}
    with autocast(device, run.amp):
        _, losses = run.model(lq, gt, extras)
        loss = sum(losses.values())
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss * run.loss_scale).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg['grad_clip'] or math.inf)
    # Gradients are all-reduced, so every rank takes the same decision.
    finite = bool(torch.isfinite(loss) if run.scaler.is_enabled() else torch.isfinite(grad_norm))
    if finite:
        run.scaler.step(run.optimizer)
    run.scaler.update()
    run.bad_steps = 0 if finite else run.bad_steps + 1
    if not finite:
        log.warning(f'iter {it + 1}: non-finite loss or gradient (loss {loss.item():.4g}); step skipped')
    return losses, loss


def rollback(run, it):
    """After ``train.max_bad_steps`` non-finite steps in a row: reload the newest checkpoint that loads
    (every saved one came from finite steps) with the learning rate lowered, instead of going on from
    weights that produce non-finite values. Returns the iteration to go on from."""
    cfg = run.cfg
    path, ckpt = run.ckpts.latest_valid(log.warning) if run.rollbacks < cfg['max_rollbacks'] else (None, None)
    if ckpt is None:
        why = (f'{run.rollbacks} rollback(s) did not help' if run.rollbacks else
               'no checkpoint to roll back to' if cfg['max_rollbacks'] else 'rollback is off')
        raise TrainingError(f'{run.bad_steps} non-finite steps in a row at iteration {it + 1} ({why}): stopping '
                            f'before the weights are harmed; resume from {run.ckpts.folder} with a lower '
                            'train.optimizer.lr or with train.grad_clip set')
    run.rollbacks, run.bad_steps = run.rollbacks + 1, 0
    it, run.best = restore(ckpt, path, run.opt, run.net, run.optimizer, run.scheduler, run.scaler)
    factor = cfg['rollback_lr_factor']
    run.scheduler.base_lrs = [lr * factor for lr in run.scheduler.base_lrs]  # saved with the scheduler
    for group in run.optimizer.param_groups:
        group['lr'] *= factor
    log.warning(f'rolled back to {path} (iteration {it}) with the learning rate x{factor:g}, now '
                f'{run.optimizer.param_groups[0]["lr"]:.3e} (rollback {run.rollbacks} of at most '
                f'{cfg["max_rollbacks"]})')
    run.bar.reset(total=cfg['total_iter'])
    run.bar.update(it)
    return it


def log_progress(run, it, losses, loss, timer):
    """The log line and metrics.csv row of iteration ``it`` (every rank takes part in the loss mean)."""
    # the loss of the whole batch over all ranks, comparable to a one-process run
    loss_value, lr = mean_over_ranks(loss.detach() * run.loss_scale, run.dist), run.optimizer.param_groups[0]['lr']
    if not run.dist.is_main:
        return
    parts = f' ({", ".join(f"{k} {v.item():.3e}" for k, v in losses.items())})' if len(losses) > 1 else ''
    offset = mean_offset_magnitude(run.net)
    count = max(timer.count, 1)
    log.info(f'iter {it:>7d}/{run.cfg["total_iter"]} | lr {lr:.3e} | loss {loss_value:.4e}{parts} | '
             + (f'offset {offset:.2f}px | ' if offset is not None else '')
             + f'data {timer.data / count:.3f}s | step {timer.step / count:.3f}s | '
             f'eta {timer.eta(run.cfg["total_iter"] - it)}')
    if offset is not None and offset > run.cfg['offset_warning']:
        log.warning(f'iter {it}: mean deformable offset {offset:.1f} px exceeds train.offset_warning '
                    f'({run.cfg["offset_warning"]:g}); training may be diverging (lower the lr or set '
                    'train.grad_clip)')
    run.bar.set_postfix(loss=f'{loss_value:.3e}', lr=f'{lr:.2e}')
    run.metrics.add(it, lr=lr, loss=loss_value, data_time=timer.data / count, iter_time=timer.step / count,
                    offset=offset)


def validate(run, it):
    """Score the validation clips (rank 0 only); returns whether this is the best validation so far."""
    result = evaluate(run.net, run.val_set, run.protocol, run.device, amp=run.amp, progress=False)
    avg, best = result['average'], run.best
    is_best = avg['psnr_y'] > best['value']
    if is_best:
        run.best = best = {'metric': 'psnr_y', 'value': avg['psnr_y'], 'iteration': it}
    log.info(f'val {it:>7d} | {run.protocol.describe()} | {result["frames"]} frames | '
             f'PSNR-Y {avg["psnr_y"]:.4f} SSIM-Y {avg["ssim_y"]:.4f} | '
             f'PSNR-RGB {avg["psnr_rgb"]:.4f} SSIM-RGB {avg["ssim_rgb"]:.4f} | '
             f'best {best["value"]:.4f} @ {best["iteration"]}')
    run.metrics.add(it, **{k: avg[k] for k in ('psnr_y', 'ssim_y', 'psnr_rgb', 'ssim_rgb')})
    run.metrics.plot()
    run.model.train()
    return is_best


def save(run, it, is_best, regular):
    """A checkpoint at iteration ``it``: iter_N/latest (``regular``) and/or best. Only rank 0 writes; the
    best weights are kept even when their validation is not a save point."""
    if run.dist.is_main:
        state = training_state(run.opt, run.net, run.optimizer, run.scheduler, run.scaler, it, run.best)
        path = run.ckpts.save(state, it, is_best) if regular else run.ckpts.save_best(state)
        log.info(f'saved {path}')
    if regular:
        barrier(run.dist)


def finish(run):
    run.bar.close()
    if not run.dist.is_main:
        return
    run.metrics.plot()
    run.metrics.close()
    best = run.best
    log.info(f'done: {run.cfg["total_iter"]} iterations; best PSNR-Y {best["value"]:.4f} at iteration '
             f'{best["iteration"]}')
    if run.val_set is not None and run.opt['val']['compare_baseline']:
        log.info(compare_with_baseline(run.net, run.val_set, run.protocol, run.device))
