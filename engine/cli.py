"""How every command-line entry point reports a user's mistake: one line on stderr, exit code 2."""
import contextlib
import re
import signal
import sys
import threading

from utils.errors import USER_ERRORS, Interrupted


def one_line(error):
    """The message of ``error``; for one raised again by a DataLoader worker, PyTorch puts the worker's
    traceback in the message: keep its last line, the original message."""
    text = str(error).strip()
    if 'Traceback (most recent call last)' in text:
        text = text.splitlines()[-1]
        text = text.split(': ', 1)[1] if re.match(r'^[\w.]+(Error|Exception): ', text) else text
    return text


def raise_on_sigterm():
    """SIGTERM raises :class:`Interrupted` and Ctrl-C KeyboardInterrupt (Python's own handler), so that
    cleanup runs: temporary outputs are removed instead of left behind by a silent kill."""
    def handler(signum, frame):
        raise Interrupted(signum, 'stopped by SIGTERM; nothing was written')
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM wait until the block has run (several outputs renamed into place: all or none), then
    raise :class:`Interrupted` saying the outputs were written. Off the main thread (where handlers cannot be
    set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if held:
        raise Interrupted(held[0], f'stopped by {signal.Signals(held[0]).name} after every output was written')


def run(main, argv=None):
    """``main(argv)``'s exit code, or one line on stderr: ``error: <message>`` and 2 for a user error
    (``utils.errors.USER_ERRORS``), ``stopped: ...`` and 128 + the signal for a run stopped by a signal."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        print(f'error: {one_line(e)}', file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f'stopped: {e}', file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print('stopped: interrupted (Ctrl-C); nothing was written', file=sys.stderr)
        return 128 + signal.SIGINT
