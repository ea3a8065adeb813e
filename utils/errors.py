"""The errors that mean bad input, not a bug: each message is one line naming the file, key or frame.

Every command-line entry point prints such an error as ``error: <message>`` and exits with code 2
(``engine/cli.py``); anything else is a bug and keeps its traceback.
"""


class OptionsError(ValueError):
    """A bad option: the message names the file and the key."""


class DataError(ValueError):
    """A data file, folder or list is missing, unreadable or not what the loader expects."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and why."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the message says what to do."""


class Interrupted(Exception):
    """A run stopped by a signal (Ctrl-C, SIGTERM); the message says where the work stands. Exit code
    128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports a killed command."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


USER_ERRORS = (OptionsError, DataError, CheckpointError, TrainingError)
