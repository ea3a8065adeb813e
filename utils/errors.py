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


USER_ERRORS = (OptionsError, DataError, CheckpointError, TrainingError)
