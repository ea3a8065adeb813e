import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get('STVSR_SHARED_DATA', ROOT.parent / 'shared' / 'data'))
SPECS = ROOT.parent / 'shared' / 'specs'

# Tests run tiny tensors, where thread start-up costs more than it saves (and CI has 2 cores).
torch.set_num_threads(1)

# Property tests draw the same examples on every run and keep no database between runs: a failure found
# once must be a test case written down, not a replay that comes and goes.
settings.register_profile('repeatable', derandomize=True, database=None)
settings.load_profile('repeatable')


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may run on, at most 4 (each holds torch and a few networks,
    about 1 GiB); ``-n 0`` runs the suite in this process."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1))


def require(path):
    """Skip the calling test, naming what is missing, unless ``path`` (under ../shared/data) exists."""
    path = SHARED_DATA / path
    if not path.exists():
        pytest.skip(f'real data not found: {path} (the shared data folder sits beside the repository)')
    return path


def spec_file(name):
    """``../shared/specs/params/<name>``, or skip the calling test naming what is missing."""
    path = SPECS / 'params' / name
    if not path.exists():
        pytest.skip(f'parameter spec not found: {path} (the shared folder sits beside the repository)')
    return path


@pytest.fixture
def shared_data():
    return require('')


def load_script(path, name):
    """A script's module, loaded by path (``import test`` could find the standard library's package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
