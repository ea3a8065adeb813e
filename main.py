"""Train a space-time video super-resolution network.

    python main.py                                   # the embedded demo (options/train/demo.yml)
    python main.py -opt options/train/stdan_vimeo90k_bix4.yml --set train.total_iter=1000
    torchrun --nproc_per_node=2 main.py -opt ...     # same YAML on N processes

The whole iteration loop is in ``train()`` below; per-network differences live in the network's
adapter (models/adapters.py) and in the options.
"""
import argparse
import inspect
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from data import build_dataset
from data.io import DataError
from models import build_network
from models.adapters import loss_hook, training_losses
from models.common import mean_offset_magnitude
from models.flow import clip_flows, stack_clip_flows
from models.losses import LOSSES
from utils import cli
from utils.checkpoint import FORMAT, CheckpointError, CheckpointManager, load_checkpoint, load_weights, rng_state, \
    set_rng_state
from utils.dist import barrier, broadcast_object, cleanup, init_distributed, mean_over_ranks, resolve_device
from utils.evaluation import compare_with_baseline, evaluate
from utils.logger import MetricsLog, format_eta, setup_logging
from utils.optim import build_optimizer, build_scheduler
from utils.options import OptionsError, build_option, dump_options, load_options
from utils.performance import autocast, check_amp, grad_scaler, maybe_compile, prepare_network

ROOT = Path(__file__).resolve().parent
DEMO_OPTIONS = ROOT / 'options' / 'train' / 'demo.yml'


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message says what to do."""


class SeededSamples(Dataset):
    """Wraps a dataset so that sample ``(index, seed)`` is drawn with all RNGs seeded by ``seed``.

    Random crops and augmentations then depend only on (run seed, epoch, index), not on which worker
    ran them or on what ran before: a resumed run sees exactly the samples an uninterrupted run sees.
    With ``flow_backend`` (networks fed optical flow: MSTT, STARnet) the flows of the augmented LR
    frames are computed here, in the loader workers, as ``'flows'`` (n-1, 2, h, w, 2).
    """

    def __init__(self, dataset, flow_backend=None):
        self.dataset, self.flow_backend = dataset, flow_backend

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        sample = self.dataset[index]
        if self.flow_backend is not None:
            frames = list(sample['lq'].permute(0, 2, 3, 1).numpy())
            sample['flows'] = torch.from_numpy(stack_clip_flows(*clip_flows(frames, self.flow_backend)))
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


def check_network_loss(net, options):
    """``train.network_loss`` must name arguments of the network's loss hook (and be empty without one)."""
    hook = loss_hook(net)
    # YAML can set the arguments with a plain default (bool, number, string), not objects such as modules
    allowed = [] if hook is None else [n for n, p in inspect.signature(hook).parameters.items()
                                       if isinstance(p.default, (bool, int, float, str))]
    for key in options:
        if key not in allowed:
            raise OptionsError(f'train.network_loss.{key}: not an argument of {type(net).__name__}\'s training '
                               f'loss; allowed: {", ".join(allowed) or "none (the network uses train.loss)"}')


def restore(ckpt, path, opt, net, optimizer, scheduler, scaler):
    """Load a training checkpoint into the network, optimizer, scheduler, fp16 gradient scaler and RNGs;
    returns (iteration, best)."""
    if ckpt.get('format') != FORMAT:
        raise CheckpointError(f'{path}: not a training checkpoint of this toolbox (no optimizer state)')
    if ckpt['network'] != opt['network']:
        raise CheckpointError(f'{path}: holds network {ckpt["network"]}, the options ask for {opt["network"]}')
    load_weights(net, ckpt['weights'], path)
    optimizer.load_state_dict(ckpt['optimizer'])
    scheduler.load_state_dict(ckpt['scheduler'])
    if scaler.is_enabled() and ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    set_rng_state(ckpt['rng'])
    return ckpt['iteration'], ckpt['best']


def lower_lr(optimizer, scheduler, factor):
    """Scale the schedule (LambdaLR's base learning rates, saved with the scheduler) and the current lr."""
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    for group in optimizer.param_groups:
        group['lr'] *= factor


def train(opt):
    dist = init_distributed('cuda' if opt['device'] != 'cpu' and torch.cuda.is_available() else 'cpu')
    try:
        _train(opt, dist)
    finally:
        cleanup(dist)


def _train(opt, dist):
    device = resolve_device(opt['device'], dist.local_rank)
    if opt['num_threads']:
        torch.set_num_threads(opt['num_threads'])
    cfg_train, cfg_data = opt['train'], opt['data']
    for key in ('network',):
        if opt[key] is None:
            raise OptionsError(f'{key}: required to train')
    if cfg_data['train'] is None:
        raise OptionsError('data.train: required to train')
    if cfg_data['batch_size'] % dist.world_size:
        raise OptionsError(f'data.batch_size: {cfg_data["batch_size"]} is not divisible by the '
                           f'{dist.world_size} processes')

    random.seed(opt['seed'] + dist.rank)
    np.random.seed(opt['seed'] + dist.rank)
    torch.manual_seed(opt['seed'])  # same initial weights on every rank

    perf = opt['performance']
    amp_dtype = check_amp(perf['amp'], device)
    net = prepare_network(build_option(build_network, opt['network'], 'network').to(device), perf)
    scaler = grad_scaler(device, amp_dtype)
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if n_params == 0:
        raise OptionsError(f'network.type: {opt["network"]["type"]} has no trainable parameters '
                           '(evaluate it with test.py instead)')
    train_set = build_option(build_dataset, cfg_data['train'], 'data.train')
    val_set = (build_option(build_dataset, cfg_data['val'], 'data.val')
               if cfg_data['val'] is not None and dist.is_main else None)
    criterion = LOSSES.build(cfg_train['loss'])
    check_network_loss(net, cfg_train['network_loss'])
    optimizer = build_option(lambda spec: build_optimizer([p for p in net.parameters() if p.requires_grad], spec),
                             cfg_train['optimizer'], 'train.optimizer')
    scheduler = build_option(lambda spec: build_scheduler(optimizer, spec, cfg_train['warmup_iter']),
                             cfg_train['scheduler'], 'train.scheduler')

    # Only now, with every option proven to build, is anything written.
    run_dir = broadcast_object(prepare_run_dir(opt) if dist.is_main else None, dist)
    log = setup_logging(run_dir / 'train.log', dist.is_main)
    if dist.is_main:
        dump_options(opt, run_dir / 'config.yml')

    ckpts = CheckpointManager(run_dir / 'checkpoints', cfg_train['keep_checkpoints'])
    if dist.is_main:
        for name in ckpts.remove_partial_files():
            log.warning(f'removed {name}, a checkpoint write that an earlier process did not finish')
    start_iter, best = 0, {'metric': 'psnr_y', 'value': -math.inf, 'iteration': 0}
    resume = cfg_train['resume']
    if resume is not None:
        if resume == 'auto':
            path, ckpt = ckpts.latest_valid(log.warning)
        else:
            path, ckpt = resume, load_checkpoint(resume)
        if ckpt is not None:
            start_iter, best = restore(ckpt, path, opt, net, optimizer, scheduler, scaler)
            log.info(f'resumed from {path} at iteration {start_iter}')
        else:
            log.info('resume: auto found no checkpoint; starting from scratch')

    model = maybe_compile(DistributedDataParallel(net) if dist.enabled else net, perf)
    per_rank = cfg_data['batch_size'] // dist.world_size
    sampler = ResumableSampler(train_set, dist.world_size, dist.rank, opt['seed'])
    workers = cfg_data['num_workers']
    # The loader draws its workers' base seed from its own generator: from the global one, that draw would
    # happen at a different point of a resumed run and shift every later random number (stochastic depth).
    loader = DataLoader(SeededSamples(train_set, getattr(net, 'flow_backend', None)), batch_size=per_rank,
                        sampler=sampler, num_workers=workers, pin_memory=cfg_data['pin_memory'] and device.type == 'cuda',
                        drop_last=True, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(opt['seed']))
    batches = train_batches(loader, sampler, start_iter)
    # DDP averages gradients over ranks; a summed loss must be scaled back up to equal one process's sum.
    hook = loss_hook(net)
    summed = hook is None and getattr(criterion, 'reduction', 'mean') == 'sum'
    loss_scale = dist.world_size if summed else 1

    total = cfg_train['total_iter']
    metrics = MetricsLog(run_dir, start_iter, cfg_train['tensorboard']) if dist.is_main else None
    log.info(f'network {opt["network"]["type"]}: {n_params:,} parameters; {len(train_set):,} training samples; '
             f'batch {cfg_data["batch_size"]} on {dist.world_size} process(es), device {device}')
    log.info(f'run folder {run_dir}; iterations {start_iter} -> {total}')
    bar = tqdm(total=total, initial=start_iter, desc='train', dynamic_ncols=True,
               disable=not (dist.is_main and cfg_train['progress_bar']))
    model.train()
    window_start, data_time, iter_time, seen, bad_steps, rollbacks = time.time(), 0.0, 0.0, 0, 0, 0
    tic = time.time()
    it = start_iter
    while it < total:
        batch = next(batches)
        lq, gt = batch['lq'].to(device, non_blocking=True), batch['gt'].to(device, non_blocking=True)
        extras = {k: v.to(device) for k, v in batch.items() if k not in ('lq', 'gt', 'key')}
        t_data = time.time()
        data_time += t_data - tic

        with autocast(device, amp_dtype):
            _, losses = training_losses(model, lq, gt, extras, criterion, cfg_train['network_loss'])
            loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * loss_scale).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg_train['grad_clip'] or math.inf)
        # Gradients are all-reduced, so every rank takes the same decision. With fp16 an overflowing gradient
        # is the scaler's business (it skips the step and lowers its scale); a non-finite loss is not.
        finite = torch.isfinite(loss) if scaler.is_enabled() else torch.isfinite(grad_norm)
        if finite:
            scaler.step(optimizer)
            bad_steps = 0
        scaler.update()
        if not finite:
            bad_steps += 1
            log.warning(f'iter {it + 1}: non-finite loss or gradient (loss {loss.item():.4g}); step skipped')
            if bad_steps >= cfg_train['max_bad_steps']:
                # Roll back to the newest checkpoint that loads (every saved one came from finite steps), with
                # the learning rate lowered, instead of going on from weights that produce non-finite values.
                path, ckpt = (ckpts.latest_valid(log.warning) if rollbacks < cfg_train['max_rollbacks']
                              else (None, None))
                if ckpt is None:
                    why = (f'{rollbacks} rollback(s) did not help' if rollbacks else
                           'no checkpoint to roll back to' if cfg_train['max_rollbacks'] else 'rollback is off')
                    raise TrainingError(f'{bad_steps} non-finite steps in a row at iteration {it + 1} ({why}): '
                                        f'stopping before the weights are harmed; resume from {ckpts.folder} with '
                                        'a lower train.optimizer.lr or with train.grad_clip set')
                rollbacks, bad_steps = rollbacks + 1, 0
                it, best = restore(ckpt, path, opt, net, optimizer, scheduler, scaler)
                lower_lr(optimizer, scheduler, cfg_train['rollback_lr_factor'])
                log.warning(f'rolled back to {path} (iteration {it}) with the learning rate x'
                            f'{cfg_train["rollback_lr_factor"]:g}, now {optimizer.param_groups[0]["lr"]:.3e} '
                            f'(rollback {rollbacks} of at most {cfg_train["max_rollbacks"]})')
                batches.close()
                batches = train_batches(loader, sampler, it)
                bar.reset(total=total)
                bar.update(it)
                window_start, data_time, iter_time, seen, tic = time.time(), 0.0, 0.0, 0, time.time()
                continue
        scheduler.step()
        it += 1

        done = it
        toc = time.time()
        iter_time += toc - t_data
        seen += 1
        bar.update(1)
        if done % cfg_train['log_every'] == 0 or done == total:
            # the loss of the whole batch over all ranks, comparable to a one-process run
            loss_value, lr = mean_over_ranks(loss.detach() * loss_scale, dist), optimizer.param_groups[0]['lr']
        if dist.is_main and (done % cfg_train['log_every'] == 0 or done == total):
            per_iter = (toc - window_start) / seen
            parts = f' ({", ".join(f"{k} {v.item():.3e}" for k, v in losses.items())})' if len(losses) > 1 else ''
            offset = mean_offset_magnitude(net)
            log.info(f'iter {done:>7d}/{total} | lr {lr:.3e} | loss {loss_value:.4e}{parts} | '
                     + (f'offset {offset:.2f}px | ' if offset is not None else '')
                     + f'data {data_time / seen:.3f}s | step {iter_time / seen:.3f}s | '
                     f'eta {format_eta(per_iter * (total - done))}')
            if offset is not None and offset > cfg_train['offset_warning']:
                log.warning(f'iter {done}: mean deformable offset {offset:.1f} px exceeds train.offset_warning '
                            f'({cfg_train["offset_warning"]:g}); training may be diverging (lower the lr or set '
                            'train.grad_clip)')
            bar.set_postfix(loss=f'{loss_value:.3e}', lr=f'{lr:.2e}')
            metrics.add(done, lr=lr, loss=loss_value, data_time=data_time / seen, iter_time=iter_time / seen,
                        offset=offset)
            window_start, data_time, iter_time, seen = time.time(), 0.0, 0.0, 0

        is_best = False
        if val_set is not None and (done % cfg_train['val_every'] == 0 or done == total):
            result = evaluate(net, val_set, opt['val']['protocol'], device, opt['val']['crop_border'],
                              opt['val']['max_clips'], opt['val']['n_inputs'], progress=False,
                              time_factor=opt['val']['time_factor'], amp=amp_dtype)
            avg = result['average']
            is_best = avg['psnr_y'] > best['value']
            if is_best:
                best = {'metric': 'psnr_y', 'value': avg['psnr_y'], 'iteration': done}
            factor = f' time x{opt["val"]["time_factor"]}' if opt['val']['time_factor'] != 2 else ''
            log.info(f'val {done:>7d} | {opt["val"]["protocol"]}{factor} | {result["frames"]} frames | '
                     f'PSNR-Y {avg["psnr_y"]:.4f} SSIM-Y {avg["ssim_y"]:.4f} | '
                     f'PSNR-RGB {avg["psnr_rgb"]:.4f} SSIM-RGB {avg["ssim_rgb"]:.4f} | '
                     f'best {best["value"]:.4f} @ {best["iteration"]}')
            metrics.add(done, **{k: avg[k] for k in ('psnr_y', 'ssim_y', 'psnr_rgb', 'ssim_rgb')})
            metrics.plot()
            model.train()

        # Only rank 0 validates; the best weights are kept even when their validation is not a save point.
        regular = done % cfg_train['save_every'] == 0 or done == total
        if dist.is_main and (regular or is_best):
            state = {'format': FORMAT, 'network': opt['network'], 'weights': net.state_dict(),
                     'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                     'iteration': done, 'rng': rng_state(), 'best': best, 'config': opt,
                     'scaler': scaler.state_dict() if scaler.is_enabled() else None}
            path = ckpts.save(state, done, is_best) if regular else ckpts.save_best(state)
            log.info(f'saved {path}')
        if regular:
            barrier(dist)
        tic = time.time()
    bar.close()
    if dist.is_main:
        metrics.plot()
        metrics.close()
        log.info(f'done: {total} iterations; best PSNR-Y {best["value"]:.4f} at iteration {best["iteration"]}')
        if val_set is not None and opt['val']['compare_baseline']:
            log.info(compare_with_baseline(net, val_set, opt['val'], device))
    return run_dir


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', default=str(DEMO_OPTIONS),
                        help='options YAML (default: the embedded demo, options/train/demo.yml)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY.PATH=VALUE',
                        help='override one option, value parsed as YAML (repeatable), e.g. --set train.lr=1e-4')
    return parser.parse_args(argv)


def main(argv=None):
    """Exit code: 0, or 2 after one line on stderr for bad options, data or checkpoints."""
    return cli.run(run_training, argv, extra_errors=(TrainingError,))


def run_training(argv):
    args = parse_args(argv)
    train(load_options(args.opt, args.set))
    return 0


if __name__ == '__main__':
    sys.exit(main())
