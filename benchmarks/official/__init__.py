"""The official implementations, imported from checkouts the user gives by path, for side-by-side benchmarks
(benchmarks/bench_official.py). No official code is in this repository: each module here only knows where a
network's class lives in its official repository, how to build it in the configuration of one of ours, how to
call it the way its official test and training scripts do, and which compiled ops need a stand-in.

Every adapter module (one per registered network; benchmarks/bench_official.py lists them) defines:

    REPOSITORY                       'owner/name' of the official code on GitHub (for messages)
    build(root, spec) -> nn.Module   the official class from the checkout at ``root``, built with the
                                     configuration of our ``spec`` ({type: Name, **constructor arguments});
                                     our network's state_dict loads into it with strict=True
    forward(net, lq, extras)         the official call on what our ``predict(lq, extras)`` takes, returning
                                     what ours returns: (b, 2n-1, 3, 4h, 4w) in [0, 1] for (b, n, 3, h, w)
    training_loss(net, lq, gt, extras, criterion)
                                     the official training objective on the batch our ``training_batch`` makes
                                     (``criterion`` is ours, for networks whose official loss is the plain
                                     pixel loss): equals ``sum(ours.training_losses(lq, gt, extras, criterion)[1]
                                     .values())`` for the same weights

and, where the official data loader makes more than our ``training_batch`` does, optionally

    loader_extras(ours, lq, gt)      {name: tensor} the official loader makes for a training batch (STARnet's
                                     flow targets), given to both sides so that neither step times it
    EQUALITY_DTYPE                   the dtype both sides' outputs are compared in (default torch.float64; an
                                     official code that cannot run in float64 names torch.float32)

``build`` raises :class:`OfficialUnavailable` (one line: what is missing and where) when the checkout, a module
or a dependency of the official code is not there.
"""
import contextlib
import importlib
import inspect
import sys
from pathlib import Path

import torch


class OfficialUnavailable(Exception):
    """The official code cannot be imported from the given checkout (one line saying why)."""


def _top_level_names(root):
    """Module names a checkout's root folder provides (packages and .py files), which may shadow ours."""
    return {p.stem for p in Path(root).iterdir()
            if (p.is_dir() and not p.name.startswith('.')) or p.suffix == '.py'}


@contextlib.contextmanager
def official_import(root, tag, stand_ins=None):
    """Import official modules from the checkout folder ``root`` inside this block (``importlib.import_module``).

    The official repositories use top-level names that ours use too (``models``, ``data``, ``utils``): for the
    block, our modules of those names leave ``sys.modules`` and ``root`` goes first on ``sys.path``; afterwards
    the official modules are kept under ``_official_<tag>.<name>`` (their classes keep working: they hold
    their module globals) and ours come back. ``stand_ins`` maps module names (a compiled extension such as
    ``_ext``) to module objects placed in ``sys.modules`` for the import.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise OfficialUnavailable(f'{root}: official checkout not found')
    names = _top_level_names(root) | set(stand_ins or ())
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] in names}
    sys.path.insert(0, str(root))
    sys.modules.update(stand_ins or {})
    importlib.invalidate_caches()
    try:
        yield
    except ModuleNotFoundError as e:
        raise OfficialUnavailable(f'{root}: the official code needs the module {e.name!r} (pip install it, or '
                                  'check that this is a checkout of the right repository)') from e
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k.split('.')[0] in names]:
            sys.modules[f'_official_{tag}.{k}'] = sys.modules.pop(k)
        sys.modules.update(ours)
        importlib.invalidate_caches()


def configuration(cls, spec, official_arguments, official_name):
    """Our constructor's arguments for ``spec``, defaults filled in. The official class takes only
    ``official_arguments`` and hard-codes the values our other arguments default to, so those may only be given
    their defaults (ValueError otherwise, one line)."""
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    given = {k: v for k, v in spec.items() if k != 'type'}
    plain = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731  (YAML lists against tuple defaults)
    for key, value in given.items():
        if key not in defaults:
            raise ValueError(f'{cls.__name__} has no argument {key!r}')
        if key not in official_arguments and plain(value) != plain(defaults[key]):
            raise ValueError(f'the official {official_name} hard-codes {key}={defaults[key]!r}, the spec asks for '
                             f'{value!r}')
    return {**defaults, **given}


@contextlib.contextmanager
def cuda_calls_to(device):
    """``Tensor.cuda()`` moves to ``device`` inside the block (official code that hard-codes ``.cuda()``); on a
    CUDA device nothing changes."""
    device = torch.device(device)
    if device.type == 'cuda':
        yield
        return
    own = torch.Tensor.__dict__.get('cuda')  # normally None: the method is inherited from torch._C.TensorBase
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(device)
    try:
        yield
    finally:
        if own is None:
            del torch.Tensor.cuda
        else:
            torch.Tensor.cuda = own
