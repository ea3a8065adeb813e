"""Everything the training loop of ``main.py`` calls: building a run, one step, rollback, logging, validation
and checkpoints. The loop itself stays in ``main.py``, on one screen.

A run is built once (``build_run``), with every option proven to build before anything is written; its state
lives in one :class:`Run`. Data order and augmentation depend only on (seed, epoch, index)
(``SeededSamples``, ``ResumableSampler``), so a resumed or rolled-back run sees exactly the samples an
uninterrupted run sees.
"""
import fcntl
import inspect
import logging
import math
import os
import random
import shutil
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from data import build_dataset
from data.io import UMASK
from data.protocols import Protocol
from models import build_network
from models.common import mean_offset_magnitude
from models.losses import LOSSES
from utils.errors import USER_ERRORS, DataError, Interrupted, OptionsError, TrainingError

from .checkpoint import (
    CheckpointManager,
    init_network,
    load_checkpoint,
    restore,
    rng_state,
    set_rng_state,
    training_state,
)
from .cli import one_line
from .dist import barrier, broadcast_object, mean_over_ranks, resolve_device
from .evaluation import NonFiniteOutput, compare_with_baseline, evaluate
from .logger import MetricsLog, close_log_file, format_eta, progress, setup_logging
from .optim import build_optimizer, build_scheduler, schedule_mismatch
from .options import build_option, dump_options
from .performance import autocast, check_amp, grad_scaler, maybe_compile, prepare_network
from .threads import CpuThreads, available_cores

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
            raise OptionsError(f'train.network_loss.{key}: not an argument of {net.label}\'s training '
                               f'loss; allowed: {", ".join(allowed) or "none (the network uses train.loss)"}')
    build_option(lambda spec: net.configure_loss(**{k: v for k, v in spec.items() if k != 'type'}),
                 {'type': net.label, **options}, 'train.network_loss')


class RunLock:
    """An exclusive lock on a run folder for the life of the process: ``flock`` on ``<run>/.lock``, which the
    kernel releases when the process ends in any way (kill -9 included), so a killed run resumes at once
    while a second live trainer on the same folder stops with one line naming the holder's pid."""

    def __init__(self, folder):
        self.path = Path(folder) / '.lock'
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self.fd, 32).decode(errors='replace').strip() or 'unknown'
            os.close(self.fd)
            raise OptionsError(f'{folder}: another process (pid {holder}) is training in this run folder; wait for '
                               'it to end, or give this run another name') from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f'{os.getpid()}\n'.encode())

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def checkpoints_in(folder):
    return any((Path(folder) / 'checkpoints').glob('*.pth'))


def prepare_run_dir(opt):
    """Create (or reuse, when resuming) <experiments_root>/<name>, locked for this process; refuse to clobber
    a previous run. Returns (run folder, lock, whether this process created the folder)."""
    run_dir = Path(opt['experiments_root']).resolve() / opt['name']
    resume, overwrite = opt['train']['resume'], opt['train']['overwrite']
    lock, created = None, False
    try:
        if run_dir.is_dir() and any(run_dir.iterdir()):
            lock = RunLock(run_dir)
            if resume is None:
                if not overwrite:
                    raise OptionsError(f'{run_dir} already exists: set train.resume=auto to continue it or '
                                       'train.overwrite=true to start over (the old folder is kept as '
                                       '<name>_archived_<time>)')
                shutil.move(str(run_dir), f'{run_dir}_archived_{time.strftime("%Y%m%d_%H%M%S")}')
                lock.release()
                lock = None
        if lock is None:
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run_dir)
        (run_dir / 'checkpoints').mkdir(exist_ok=True)
        probe = run_dir / '.write_test'
        probe.write_bytes(b'x' * 1024)
        probe.unlink()
    except OptionsError:
        if lock is not None:
            lock.release()
        raise
    except OSError as e:
        if lock is not None:
            lock.release()
        raise OptionsError(f'{run_dir}: experiments folder is not writable ({e.strerror})') from None
    return run_dir, lock, created


def changed_options(old, new, prefix=''):
    """``key: old -> new`` for every option that differs between two resolved option trees."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_options(a, b, f'{prefix}{key}.')
        elif a != b:
            changes.append(f'{prefix}{key}: {a} -> {b}')
    return changes


class StepTimer:
    """Data and step seconds per iteration since the last log line, and the ETA from them (the median
    iteration, so that the first iterations' warm-up, a validation or a save does not swing it)."""

    def __init__(self):
        self.durations = []
        self.reset()

    def reset(self):
        self.mark = time.time()
        self.data = self.step = self.waited = 0.0
        self.count = 0
        self.durations = self.durations[-200:]  # the latest iterations

    def data_ready(self):
        now = time.time()
        self.waited = now - self.mark
        self.data, self.mark = self.data + self.waited, now

    def step_done(self):
        now = time.time()
        self.durations.append(self.waited + now - self.mark)
        self.step, self.mark, self.count = self.step + now - self.mark, now, self.count + 1

    def resume(self):
        """After logging, validation and saving: their time is neither data nor step time."""
        self.mark = time.time()

    def eta(self, remaining):
        return format_eta(statistics.median(self.durations) * remaining if self.durations else 0)


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
    lock: RunLock = None
    threads: CpuThreads = None  # torch's CPU threads, re-chosen at each log line with num_threads: 0
    created: bool = False  # this process made the run folder (removed again if the run fails before a checkpoint)
    stop: int = 0          # the signal that asked the run to stop at the end of its iteration (0: none)
    resumed_config: dict = None  # the options of the checkpoint resumed from

    @property
    def cfg(self):
        return self.opt['train']


def build_run(opt, dist):
    """Build everything a run needs from the options and check the data it starts with; only then make (and
    lock) the run folder and resume. A failure after that goes through ``abandon``."""
    device = resolve_device(opt['device'], dist.local_rank)
    threads = CpuThreads(opt['num_threads'])
    threads.update()
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
    net = prepare_network(build_network_option(opt['network'], 'network').to(device), perf)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise OptionsError(f'network.type: {opt["network"]["type"]} has no trainable parameters '
                           '(evaluate it with test.py instead)')
    init = cfg['network_init']
    init_note = init_network(net, init['path'], init['strict'], init['module'], init['key_map']) if init['path'] \
        else None
    train_set = build_option(build_dataset, cfg_data['train'], 'data.train')
    val_set = (build_option(build_dataset, cfg_data['val'], 'data.val')
               if cfg_data['val'] is not None and dist.is_main else None)
    protocol = Protocol.from_options(opt['val'])
    samples = SeededSamples(train_set, net.extra_inputs())
    check_data(net, samples, val_set, protocol, opt['seed'])
    criterion = build_option(LOSSES.build, cfg['loss'], 'train.loss')
    configure_network_loss(net, cfg['network_loss'])
    optimizer = build_option(lambda spec: build_optimizer(params, spec), cfg['optimizer'], 'train.optimizer')
    scheduler = build_option(lambda spec: build_scheduler(optimizer, spec, cfg['warmup_iter']), cfg['scheduler'],
                             'train.scheduler')

    step = TrainingStep(net, criterion)
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, opt['seed'])
    workers = cfg_data['num_workers']
    # The loader draws its workers' base seed from its own generator: from the global one, that draw would
    # happen at a different point of a resumed run and shift every later random number (stochastic depth).
    loader = DataLoader(samples, batch_size=cfg_data['batch_size'] // dist.world_size, sampler=sampler,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                        pin_memory=cfg_data['pin_memory'] and device.type == 'cuda', worker_init_fn=quiet_worker,
                        generator=torch.Generator().manual_seed(opt['seed']))
    # DDP averages gradients over ranks; a summed loss must be scaled back up to equal one process's sum.
    summed = not net.own_loss and criterion.reduction == 'sum'

    # Only now, with every option proven to build and the first data read, is anything written.
    run_dir, lock, created = prepare_run_dir(opt) if dist.is_main else (None, None, False)
    run_dir = broadcast_object(run_dir, dist)
    run = Run(opt=opt, dist=dist, device=device, net=net,
              model=maybe_compile(DistributedDataParallel(step) if dist.enabled else step, perf),
              optimizer=optimizer, scheduler=scheduler, scaler=grad_scaler(device, amp), amp=amp, loader=loader,
              sampler=sampler, val_set=val_set, protocol=protocol,
              ckpts=CheckpointManager(run_dir / 'checkpoints', cfg['keep_checkpoints']), run_dir=run_dir,
              metrics=None, loss_scale=dist.world_size if summed else 1, lock=lock, threads=threads,
              created=created)
    try:
        setup_logging(run_dir / 'train.log', dist.is_main)
        log.info(f'run folder {run_dir}')
        if dist.is_main:
            for name in run.ckpts.remove_partial_files():
                log.warning(f'removed {name}, a checkpoint write that an earlier process did not finish')
        if init_note:
            log.info(init_note)
        mismatch = schedule_mismatch(cfg['scheduler'], cfg['total_iter'])
        if mismatch:
            log.warning(f'train.scheduler ({cfg["scheduler"]["type"]}): {mismatch}')
        resume_run(run)
        if run.start_iter == 0 and not init['path'] and net.official_init:
            log.warning(f'network {opt["network"]["type"]} starts from scratch; {net.official_init}')
        if dist.is_main:
            record_options(run)
        run.metrics = MetricsLog(run_dir, run.start_iter, cfg['tensorboard']) if dist.is_main else None
        log.info(f'network {opt["network"]["type"]}: {sum(p.numel() for p in params):,} parameters; '
                 f'{len(train_set):,} training samples; batch {cfg_data["batch_size"]} on {dist.world_size} '
                 f'process(es), device {device}; iterations {run.start_iter} -> {cfg["total_iter"]}; '
                 f'{torch.get_num_threads()} CPU thread(s)')
    except BaseException as e:
        abandon(run, e)
        raise
    run.bar = progress(total=cfg['total_iter'], initial=run.start_iter, desc='train', dynamic_ncols=True,
                       enabled=dist.is_main and cfg['progress_bar'])
    return run


def build_network_option(spec, key):
    """``build_network(spec)`` with its errors naming ``key``, and no layer without weights (a width of 0)."""
    net = build_option(build_network, spec, key)
    empty = [name for name, p in net.named_parameters() if p.numel() == 0]
    if empty:
        raise OptionsError(f'{key} ({spec["type"]}): layer {empty[0]} has no weights; check the widths '
                           '(nf, channels, ...) for a 0')
    return net


def quiet_worker(worker_id):
    """Loader workers leave Ctrl-C to the main process, which stops the run cleanly (``request_stop``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_data(net, samples, val_set, protocol, seed):
    """Read the first training sample and the first validation clip before anything is written, so that
    broken or unfit data stops the run at once: a sample whose GT is not ``net.scale`` times its LR,
    frames that do not decode, a validation clip too short for its protocol. The RNGs are left as they
    were (the run's random numbers must not depend on this check)."""
    state = rng_state()
    try:
        sample = samples[(0, seed)]
    except ValueError as e:  # DataError (a subclass) names its file already
        raise e if isinstance(e, DataError) else OptionsError(f'data.train: {e}') from None
    finally:
        set_rng_state(state)
    if 'coord' not in sample:
        check_scale(net, sample['lq'].shape[-2:], sample['gt'].shape[-2:], 'data.train: samples are')
    if val_set is not None:
        clip = val_set[0]
        protocol.windows(clip)
        check_scale(net, clip['lq'].shape[1:3], clip['gt'].shape[1:3], f'data.val: clip {clip["name"]} is')


def check_scale(net, lq, gt, what):
    """OptionsError unless GT frames of ``gt`` (h, w) are ``net.scale`` times LR frames of ``lq``."""
    if not net.any_scale and tuple(gt) != (lq[0] * net.scale, lq[1] * net.scale):
        raise OptionsError(f'{what} {lq[1]}x{lq[0]} LR for {gt[1]}x{gt[0]} GT, but the network upscales '
                           f'x{net.scale:g}; set the degradation scale to {net.scale:g}')


def resume_run(run):
    """``train.resume``: auto (the newest loadable checkpoint of this run, if any) or a path. A learning rate
    changed since the checkpoint is the new base learning rate for the rest of the schedule."""
    resume, cfg = run.cfg['resume'], run.cfg
    if resume is None:
        return
    path, ckpt = run.ckpts.latest_valid(log.warning) if resume == 'auto' else (resume, load_checkpoint(resume))
    if ckpt is None:
        log.info('resume: auto found no checkpoint; starting from scratch')
        return
    run.start_iter, run.best = restore(ckpt, path, run.opt, run.net, run.optimizer, run.scheduler, run.scaler)
    if run.start_iter > cfg['total_iter']:
        raise OptionsError(f'train.total_iter: {cfg["total_iter"]}, but {path} is at iteration {run.start_iter}; '
                           f'give a total_iter above {run.start_iter} to train on')
    log.info(f'resumed from {path} at iteration {run.start_iter}')
    run.resumed_config = ckpt['config']
    old_lr, new_lr = ckpt['config']['train']['optimizer'].get('lr'), cfg['optimizer'].get('lr')
    if new_lr is not None and old_lr != new_lr:
        # LambdaLR keeps its base learning rates in its state: the loaded ones would scale the new schedule.
        run.scheduler.base_lrs = [new_lr] * len(run.optimizer.param_groups)
        for group, lr_lambda in zip(run.optimizer.param_groups, run.scheduler.lr_lambdas):
            group['initial_lr'], group['lr'] = new_lr, new_lr * lr_lambda(run.scheduler.last_epoch)
        log.info(f'train.optimizer.lr changed on resume: {old_lr:g} -> {new_lr:g}, the base learning rate of the '
                 f'schedule from iteration {run.start_iter} on (now {run.optimizer.param_groups[0]["lr"]:.3e})')


def record_options(run):
    """config.yml holds the options the run started with, never replaced; each resume adds
    config_resume_<iteration>.yml with its own resolved options, and logs what changed."""
    first = run.run_dir / 'config.yml'
    if not first.exists():
        dump_options(run.opt, first)
        return
    path = run.run_dir / f'config_resume_{run.start_iter}.yml'
    dump_options(run.opt, path)
    before = run.resumed_config or yaml.safe_load(first.read_text(encoding='utf-8'))
    changes = changed_options(before, run.opt)
    log.info(f'options of this resume in {path.name}: ' + ('; '.join(changes) if changes else 'unchanged'))


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
    changed = run.threads.update()
    if changed:
        old, new, busy = changed
        log.info(f'CPU threads {old} -> {new}: {busy} other runnable task(s) on {available_cores()} core(s)')


def validate(run, it):
    """Score the validation clips (rank 0 only); returns whether this is the best validation so far."""
    try:
        result = evaluate(run.net, run.val_set, run.protocol, run.device, amp=run.amp, progress=False,
                          keep=3 if run.cfg['tensorboard'] else 0)
    except NonFiniteOutput as e:
        raise TrainingError(f'validation at iteration {it}: {e}; {newest_checkpoint(run)} with a lower '
                            'train.optimizer.lr or train.grad_clip set') from None
    avg, best = result['average'], run.best
    is_best = avg['psnr_y'] > best['value']
    if is_best:
        run.best = best = {'metric': 'psnr_y', 'value': avg['psnr_y'], 'iteration': it}
    log.info(f'val {it:>7d} | {run.protocol.describe()} | {result["frames"]} frames | '
             f'PSNR-Y {avg["psnr_y"]:.4f} SSIM-Y {avg["ssim_y"]:.4f} | '
             f'PSNR-RGB {avg["psnr_rgb"]:.4f} SSIM-RGB {avg["ssim_rgb"]:.4f} | '
             f'best {best["value"]:.4f} @ {best["iteration"]}')
    run.metrics.add(it, **{k: avg[k] for k in ('psnr_y', 'ssim_y', 'psnr_rgb', 'ssim_rgb')})
    run.metrics.add_images(it, result['kept'])
    run.metrics.plot()
    run.model.train()
    return is_best


def save(run, it, is_best, regular):
    """A checkpoint at iteration ``it``: iter_N/latest (``regular``) and/or best. Only rank 0 writes; the
    best weights are kept even when their validation is not a save point. Never from a state whose last
    step was non-finite: every checkpoint is one a rollback or a resume can go on from."""
    if run.bad_steps:
        log.warning(f'iter {it}: no checkpoint, the last {run.bad_steps} step(s) were non-finite')
        return
    if run.dist.is_main:
        state = training_state(run.opt, run.net, run.optimizer, run.scheduler, run.scaler, it, run.best)
        path = run.ckpts.save(state, it, is_best) if regular else run.ckpts.save_best(state)
        log.info(f'saved {path}')
    if regular:
        barrier(run.dist)


def next_batch(run, batches, it):
    """The next training batch; a loader worker that died (the OOM killer, a signal) is one line."""
    try:
        return next(batches)
    except RuntimeError as e:
        if 'DataLoader worker' not in str(e):
            raise
        raise TrainingError(f'a data loader worker died before iteration {it + 1} ({str(e).splitlines()[0]}); '
                            f'resume with train.resume=auto (with fewer data.num_workers if memory is short)') from None


def request_stop(run):
    """SIGINT (Ctrl-C) and SIGTERM stop the run at the end of the current iteration, with a checkpoint;
    a second one stops it at once. Returns the handlers these replace (``train`` puts them back)."""
    def handler(signum, frame):
        if run.stop:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise Interrupted(signum, f'stopped by {signal.Signals(signum).name} during iteration; '
                                      f'{newest_checkpoint(run)}')
        run.stop = signum
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def should_stop(run):
    """Whether a stop was requested (on any rank: they agree, so that all of them stop at the same point)."""
    if run.dist.enabled:
        return mean_over_ranks(torch.tensor(float(run.stop), device=run.device), run.dist) > 0
    return bool(run.stop)


def stop_now(run, it):
    """Save a resumable checkpoint at iteration ``it`` (unless the last save was there) and stop."""
    name = signal.Signals(run.stop or signal.SIGINT).name
    if run.bad_steps == 0 and not (run.ckpts.folder / f'iter_{it}.pth').exists():
        save(run, it, False, True)
    run.bar.close()
    raise Interrupted(run.stop or signal.SIGINT, f'stopped by {name} at iteration {it}; {newest_checkpoint(run)}')


def newest_checkpoint(run):
    history = run.ckpts.history()
    return (f'the newest checkpoint is {history[0]}; continue with --set train.resume=auto' if history
            else 'no checkpoint was saved')


def abandon(run, error):
    """A run that fails: its fatal line goes to train.log as well as to stderr; a folder this process made
    that holds no checkpoint is removed, so that the same command can run again once the cause is fixed."""
    if not run.dist.is_main:
        return
    if run.created and not checkpoints_in(run.run_dir):
        close_log_file()
        shutil.rmtree(run.run_dir, ignore_errors=True)
    elif isinstance(error, USER_ERRORS + (Interrupted,)):
        log.error(f'error: {one_line(error)}')
    if run.lock is not None:
        run.lock.release()


def finish(run):
    run.bar.close()
    if run.bad_steps:
        raise TrainingError(f'the last {run.bad_steps} step(s) were non-finite, their weights were not saved; '
                            f'{newest_checkpoint(run)} with a lower train.optimizer.lr or train.grad_clip set')
    if not run.dist.is_main:
        return
    run.metrics.plot()
    run.metrics.close()
    best = run.best
    if run.val_set is None:
        log.info(f'done: {run.cfg["total_iter"]} iterations; no validation set, so no best.pth: '
                 f'{run.ckpts.folder / "latest.pth"} holds the final weights')
    else:
        log.info(f'done: {run.cfg["total_iter"]} iterations; best PSNR-Y {best["value"]:.4f} at iteration '
                 f'{best["iteration"]}')
    if run.val_set is not None and run.opt['val']['compare_baseline']:
        log.info(compare_with_baseline(run.net, run.val_set, run.protocol, run.device))
