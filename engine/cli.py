"""How every command-line entry point reports a user's mistake: one line on stderr, exit code 2."""
import re
import sys

from utils.errors import USER_ERRORS


def one_line(error):
    """The message of ``error``; for one raised again by a DataLoader worker, PyTorch puts the worker's
    traceback in the message: keep its last line, the original message."""
    text = str(error).strip()
    if 'Traceback (most recent call last)' in text:
        text = text.splitlines()[-1]
        text = text.split(': ', 1)[1] if re.match(r'^[\w.]+(Error|Exception): ', text) else text
    return text


def run(main, argv=None):
    """``main(argv)``'s exit code, or 2 after printing ``error: <message>`` for a user error
    (``utils.errors.USER_ERRORS``)."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        print(f'error: {one_line(e)}', file=sys.stderr)
        return 2
