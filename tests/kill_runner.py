"""Test-only fault injection: run main.py and SIGKILL the process at a chosen point inside its work.

    python tests/kill_runner.py --kill step:3 -opt run.yml [--set ...]

The rest of the command line goes to ``main.main`` unchanged. ``--kill <where>:<n>`` patches one
function so that its n-th use in this process ends the process with SIGKILL (no cleanup, no
``finally``, no flushing of buffers), as a crash, the OOM killer or a pre-empted job would:

    step:<n>        the n-th optimizer step, after backward and gradient clipping, before the update
                    (wraps ``torch.nn.utils.clip_grad_norm_``, which the step calls between the two)
    validation:<n>  the n-th validation, after two frames were scored (wraps ``engine.training.evaluate``,
                    which in that call arms a wrapper of ``engine.evaluation.score_frame``)
    save:<n>        the n-th checkpoint write, once half of its bytes reached the temporary file
                    (wraps ``torch.save``, which ``engine.checkpoint.atomic_save`` calls on that file)

Before dying it writes ``kill_runner: SIGKILL at <where>:<n> (...)`` on stderr. Nothing in the
toolbox imports this file; tests/test_resume_kills.py runs it.
"""
import argparse
import io
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def die(point, detail):
    print(f'kill_runner: SIGKILL at {point} ({detail})', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def counting(n, on_nth):
    """A wrapper factory: the wrapped function runs normally except on its n-th call, given to ``on_nth``."""
    def wrap(fn):
        calls = 0

        def wrapper(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == n:
                return on_nth(fn, *args, **kwargs)
            return fn(*args, **kwargs)
        return wrapper
    return wrap


def arm(where, n):
    import torch

    import engine.evaluation
    import engine.training
    point = f'{where}:{n}'
    if where == 'step':
        def kill_after_clip(fn, *args, **kwargs):
            fn(*args, **kwargs)
            die(point, 'gradients computed, weights not yet updated')
        torch.nn.utils.clip_grad_norm_ = counting(n, kill_after_clip)(torch.nn.utils.clip_grad_norm_)
    elif where == 'validation':
        def evaluate_then_kill(fn, *args, **kwargs):
            engine.evaluation.score_frame = counting(3, lambda *_a, **_k: die(point, '2 frames scored'))(
                engine.evaluation.score_frame)
            return fn(*args, **kwargs)
        engine.training.evaluate = counting(n, evaluate_then_kill)(engine.training.evaluate)
    elif where == 'save':
        def write_half_then_kill(fn, obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            fn(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            die(point, f'{len(data) // 2} of {len(data)} bytes written to {f.name}')
        torch.save = counting(n, write_half_then_kill)(torch.save)
    else:
        raise SystemExit(f'kill_runner: --kill {point}: unknown point, use step, validation or save')


def parse_kill(text):
    where, _, n = text.partition(':')
    if not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f'{text}: expected <where>:<n> with n >= 1, e.g. step:2')
    return where, int(n)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kill', type=parse_kill, required=True, metavar='WHERE:N')
    args, rest = parser.parse_known_args()
    arm(*args.kill)
    import main
    sys.exit(main.main(rest))
