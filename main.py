"""Train a space-time video super-resolution network.

    python main.py                                   # the embedded demo (options/train/demo.yml)
    python main.py -opt options/train/stdan_vimeo90k_bix4.yml --set train.total_iter=1000
    torchrun --nproc_per_node=2 main.py -opt ...     # same YAML on N processes

The whole iteration loop is ``loop()`` below; what it calls lives in engine/training.py, and per-network
differences behind the network interface (models/base.py).
"""
import os
import signal
import sys

# Before torch loads OpenMP: waiting threads sleep instead of spinning, so that a machine shared with other
# jobs slows a run by the CPU share it loses, not tens of times (README, "Threads on a shared machine").
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def stopped_while_starting(signum, frame):
    """Ctrl-C or SIGTERM while the libraries load (seconds): one line, nothing written yet."""
    print(f'stopped: {signal.Signals(signum).name} while starting; nothing was written', file=sys.stderr)
    sys.exit(128 + signum)


if __name__ == '__main__':
    signal.signal(signal.SIGINT, stopped_while_starting)
    signal.signal(signal.SIGTERM, stopped_while_starting)

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from engine import cli  # noqa: E402
from engine.dist import cleanup, init_distributed  # noqa: E402
from engine.options import load_options  # noqa: E402
from engine.training import (  # noqa: E402
    StepTimer,
    abandon,
    build_run,
    finish,
    log_progress,
    next_batch,
    request_stop,
    rollback,
    save,
    should_stop,
    stop_now,
    train_batches,
    train_step,
    validate,
)

ROOT = Path(__file__).resolve().parent
DEMO_OPTIONS = ROOT / 'options' / 'train' / 'demo.yml'


def loop(run):
    cfg, total = run.cfg, run.cfg['total_iter']
    it = run.start_iter
    batches = train_batches(run.loader, run.sampler, it)
    timer = StepTimer()
    run.model.train()
    while it < total:
        batch = next_batch(run, batches, it)
        timer.data_ready()
        losses, loss = train_step(run, batch, it)
        if run.bad_steps >= cfg['max_bad_steps']:
            it = rollback(run, it)
            batches.close()
            batches = train_batches(run.loader, run.sampler, it)
            timer.reset()
            continue
        run.scheduler.step()
        it += 1
        timer.step_done()
        run.bar.update(1)

        if it % cfg['log_every'] == 0 or it == total:
            log_progress(run, it, losses, loss, timer)
            timer.reset()
        is_best = False
        if run.val_set is not None and (it % cfg['val_every'] == 0 or it == total):
            is_best = validate(run, it)
        regular = it % cfg['save_every'] == 0 or it == total
        if regular or is_best:
            save(run, it, is_best, regular)
        if should_stop(run):
            stop_now(run, it)
        timer.resume()
    finish(run)
    return run.run_dir


def train(opt):
    dist = init_distributed('cuda' if opt['device'] != 'cpu' and torch.cuda.is_available() else 'cpu')
    try:
        run = build_run(opt, dist)
        handlers = request_stop(run)
        try:
            return loop(run)
        except BaseException as e:
            abandon(run, e)
            raise
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            if run.lock is not None:
                run.lock.release()
    finally:
        cleanup(dist)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', default=str(DEMO_OPTIONS),
                        help='options YAML (default: the embedded demo, options/train/demo.yml)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY.PATH=VALUE',
                        help='override one option, value parsed as YAML (repeatable), e.g. --set train.lr=1e-4')
    return parser.parse_args(argv)


def run_training(argv):
    args = parse_args(argv)
    train(load_options(args.opt, args.set))
    return 0


def main(argv=None):
    """Exit code: 0; 2 after one line on stderr for bad options, data or checkpoints; 130/143 after one line
    when Ctrl-C or SIGTERM stopped the run (with a checkpoint to resume from)."""
    cli.raise_on_sigterm()
    return cli.run(run_training, argv)


if __name__ == '__main__':
    sys.exit(main())
