"""How every command-line entry point reports a user's mistake: one line on stderr, exit code 2."""
import re
import sys


def user_errors():
    """The exception types that mean bad input (options, data, checkpoints), not a bug."""
    from data.io import DataError
    from utils.checkpoint import CheckpointError
    from utils.options import OptionsError
    return OptionsError, DataError, CheckpointError


def one_line(error):
    """The message of ``error``; for one raised again by a DataLoader worker, PyTorch puts the worker's
    traceback in the message: keep its last line, the original message."""
    text = str(error).strip()
    if 'Traceback (most recent call last)' in text:
        text = text.splitlines()[-1]
        text = text.split(': ', 1)[1] if re.match(r'^[\w.]+(Error|Exception): ', text) else text
    return text


def run(main, argv=None, extra_errors=()):
    """``main(argv)``'s exit code, or 2 after printing ``error: <message>`` for a user error."""
    try:
        return main(argv)
    except user_errors() + tuple(extra_errors) as e:
        print(f'error: {one_line(e)}', file=sys.stderr)
        return 2
