"""The checkpoint format, in one place: written atomically, read without running pickled code, and turned
back into a network or into test options.

A checkpoint is a dict (``training_state`` writes it, ``restore`` and ``rebuild_network`` read it):
    format      'stvsr-toolbox/1'
    network     the network spec {type, **kwargs}: ``test.py --checkpoint`` rebuilds the network from it
    weights     state_dict of the bare network (no 'module.' or '_orig_mod.' prefixes)
    optimizer, scheduler, scaler (fp16 gradient scaler or None), iteration (completed iterations), rng,
    best {metric, value, iteration},
    config      the resolved options of the run (``options_from_checkpoint`` makes test options of it)
Layout of <run>/checkpoints/: iter_<N>.pth (the newest ``keep`` are kept), latest.pth, best.pth.
"""
import contextlib
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from models import build_network
from utils.errors import CheckpointError, OptionsError

from .options import apply_override, build_option, validate

FORMAT = 'stvsr-toolbox/1'




def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _atomic_copy(src, dst):
    """A full copy (never a hard link: one file damaged in place must not take its copies with it)."""
    tmp = dst.with_name(f'.{dst.name}.tmp{os.getpid()}')
    try:
        with open(src, 'rb') as fin, open(tmp, 'wb') as fout:
            shutil.copyfileobj(fin, fout, 16 * 2 ** 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(dst.parent)


def resolve_checkpoint(path):
    """``path`` itself, or for a run folder (or its checkpoints/ folder) its best.pth, else its latest.pth (a
    run without validation writes no best.pth)."""
    path = Path(path)
    if not path.is_dir():
        return path
    folder = path / 'checkpoints' if (path / 'checkpoints').is_dir() else path
    for name in ('best.pth', 'latest.pth'):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f'{path}: a folder without best.pth or latest.pth (expected a run folder, its '
                          'checkpoints/ folder, or a checkpoint file)')


def load_checkpoint(path, map_location='cpu'):
    """Load a checkpoint (or a bare state_dict) with ``weights_only=True``; CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: checkpoint not found')
    damaged = _zip_damage(path)
    if damaged:
        raise CheckpointError(f'{path}: corrupt checkpoint ({damaged})')
    try:
        with warnings.catch_warnings():  # e.g. 'Detected pickle protocol 21' for a file that is no checkpoint
            warnings.simplefilter('ignore', UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = next((line.strip() for line in str(e).splitlines() if 'global' in line.lower()), None)
        if blocked is None:
            raise CheckpointError(f'{path}: unreadable checkpoint (not a file torch.save wrote)') from None
        raise CheckpointError(f'{path}: refused, it holds Python objects that weights_only loading does not '
                              f'run ({blocked[:120]}); re-save it as a plain state_dict') from None
    except Exception as e:  # a file that is not a checkpoint fails in the legacy unpickler in many ways
        raise CheckpointError(f'{path}: unreadable or truncated checkpoint ({_first_sentence(e)})') from None
    if not isinstance(obj, dict):
        raise CheckpointError(f'{path}: expected a dict (a checkpoint or a state_dict), got {type(obj).__name__}')
    return obj


def _zip_damage(path):
    """Why a zip-format checkpoint (what torch.save writes) is damaged, or None. ``torch.load`` does not check
    the CRC-32 of each member, so bytes flipped inside a tensor would load as wrong weights without this.
    Files that are not zip archives (legacy pickles) are left to the loader."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # a damaged directory fails in many ways: bad names (UnicodeDecodeError), flag bits
        # read as encryption (RuntimeError) or an unknown compression method (NotImplementedError), ...
        return f'damaged zip archive: {_first_sentence(e)}'
    return f'CRC mismatch in {bad}' if bad else None


def _first_sentence(error):
    """The first sentence of an exception's message, at most 120 characters, for a one-line error."""
    text = str(error).strip()
    return f'{type(error).__name__}: {text.splitlines()[0].split(". ")[0][:120]}' if text else type(error).__name__


def network_weights(ckpt):
    """The state_dict in a toolbox checkpoint, or the checkpoint itself when it is a bare state_dict."""
    if ckpt.get('format') == FORMAT:
        return ckpt['weights']
    if isinstance(ckpt.get('model'), dict) and isinstance(ckpt['model'].get('sd'), dict):
        return ckpt['model']['sd']  # LIIF-style {'model': {'name', 'args', 'sd'}}
    for key in ('weights', 'state_dict', 'params', 'model'):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def strip_prefixes(state_dict):
    """Drop the 'module.' (DataParallel/DDP) and '_orig_mod.' (torch.compile) prefixes of official checkpoints."""
    return {re.sub(r'^(module\.|_orig_mod\.)+', '', k): v for k, v in state_dict.items()}


def load_weights(net, state_dict, source, strict=True):
    """Load ``state_dict`` into ``net``: strict by default, with a one-line error naming ``source`` and the
    first mismatching keys. With ``strict=False`` the entries whose names and shapes fit are loaded and the
    rest left as they are. Returns (loaded, missing, unexpected) key counts."""
    state_dict = strip_prefixes(state_dict)
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if strict and (missing or unexpected or wrong):
        parts = []
        for label, keys in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', wrong)):
            if keys:
                parts.append(f'{len(keys)} {label} (e.g. {", ".join(keys[:3])})')
        raise CheckpointError(f'{source}: weights do not fit {type(net).__name__}: {"; ".join(parts)}')
    fitting = {k: v for k, v in state_dict.items() if k in own and k not in wrong}
    net.load_state_dict(fitting, strict=strict)
    return len(fitting), len(missing) + len(wrong), len(unexpected)


def init_network(net, path, strict=True, module='', key_map=None):
    """``train.network_init``: start training from published weights, as they are published.

    ``path``: a toolbox checkpoint, a plain state_dict, or one wrapped as ``{'state_dict': ...}``,
    ``{'params': ...}``, ``{'model': ...}`` (``network_weights``); 'module.' (DataParallel) and '_orig_mod.'
    prefixes are dropped. ``key_map`` renames key prefixes first ({old: new}, e.g. {'rbpn.': ''}).
    ``module`` loads into that sub-module of the network instead of the whole (e.g. ``model.RBPN`` of a
    flow-refined STARnet). Returns the one line the trainer logs."""
    ckpt = load_checkpoint(path)
    state_dict = strip_prefixes(network_weights(ckpt))
    for old, new in (key_map or {}).items():
        state_dict = {new + k[len(old):] if k.startswith(old) else k: v for k, v in state_dict.items()}
    try:
        target = net.get_submodule(module) if module else net
    except AttributeError:
        raise OptionsError(f'train.network_init.module: {type(net).__name__} has no sub-module {module!r}') from None
    loaded, missing, unexpected = load_weights(target, state_dict, path, strict)
    into = f'{type(net).__name__}.{module}' if module else type(net).__name__
    return (f'network_init {path}: {loaded} tensors loaded into {into}, {missing} missing (left as initialised), '
            f'{unexpected} unexpected (ignored){"" if strict else ", strict: false"}')


def rebuild_network(path, spec, spec_key='network', checkpoint_key='test.checkpoint'):
    """The network to run: ``(net, spec, ckpt)``, rebuilt from checkpoint ``path`` when there is one.

    A toolbox checkpoint carries its network spec; a bare (e.g. official) state_dict needs ``spec``; a
    ``spec`` that names another network than the checkpoint's is an error. Without ``path`` the spec must
    name a network without trainable weights. ``spec_key`` and ``checkpoint_key`` are the option names
    the messages use (``network``/``test.checkpoint`` in YAML, ``--network``/``--checkpoint`` on the CLI).
    """
    if path is None:
        if spec is None:
            raise OptionsError(f'{spec_key}: required when {checkpoint_key} is not given')
        net = build_option(build_network, spec, spec_key)
        if any(p.requires_grad for p in net.parameters()):
            raise OptionsError(f'{checkpoint_key}: {spec["type"]} has trainable parameters; give {checkpoint_key} '
                               'with its weights')
        return net, spec, None
    ckpt = load_checkpoint(path)
    if ckpt.get('format') == FORMAT:
        if spec is not None and spec['type'] != ckpt['network']['type']:
            raise CheckpointError(f'{path}: holds a {ckpt["network"]["type"]} network, {spec_key} asks for '
                                  f'{spec["type"]}')
        spec = ckpt['network']
    elif spec is None:
        raise CheckpointError(f'{path}: a bare state_dict carries no network spec; give {spec_key} too')
    net = build_option(build_network, spec, spec_key)
    load_weights(net, network_weights(ckpt), path)
    return net, spec, ckpt


def training_state(opt, net, optimizer, scheduler, scaler, iteration, best):
    """The checkpoint of a training run at ``iteration`` (completed iterations)."""
    return {'format': FORMAT, 'network': opt['network'], 'weights': net.state_dict(),
            'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
            'scaler': scaler.state_dict() if scaler.is_enabled() else None,
            'iteration': iteration, 'rng': rng_state(), 'best': best, 'config': opt}


TRAINING_KEYS = ('network', 'weights', 'optimizer', 'scheduler', 'iteration', 'rng', 'best', 'config')


def check_training_checkpoint(ckpt, path):
    """A CheckpointError unless ``ckpt`` is a whole training checkpoint of this toolbox."""
    if ckpt.get('format') != FORMAT:
        raise CheckpointError(f'{path}: not a training checkpoint of this toolbox (no optimizer state)')
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f'{path}: damaged training checkpoint, it lacks {", ".join(missing)}')


def restore(ckpt, path, opt, net, optimizer, scheduler, scaler):
    """Load a training checkpoint into the network, optimizer, scheduler, fp16 gradient scaler and RNGs;
    returns (iteration, best)."""
    if ckpt.get('format') == FORMAT and 'network' in ckpt and ckpt['network'] != opt['network']:
        raise CheckpointError(f'{path}: holds network {ckpt["network"]}, the options ask for {opt["network"]}')
    check_training_checkpoint(ckpt, path)
    load_weights(net, ckpt['weights'], path)
    optimizer.load_state_dict(ckpt['optimizer'])
    scheduler.load_state_dict(ckpt['scheduler'])
    if scaler.is_enabled() and ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    set_rng_state(ckpt['rng'])
    return ckpt['iteration'], ckpt['best']


def options_from_checkpoint(path, overrides=()):
    """Test options for ``test.py --checkpoint`` alone: the run's own config, scored on its validation
    clips under its validation protocol (then ``overrides``, ``--set`` assignments)."""
    ckpt = load_checkpoint(path)
    if ckpt.get('format') != FORMAT:
        raise CheckpointError(f'{path}: a bare state_dict carries no network spec; pass -opt with network: too')
    check_training_checkpoint(ckpt, path)
    config = ckpt['config']
    test_data = config['data'].get('test') or config['data']['val']
    if test_data is None:
        raise CheckpointError(f'{path}: its run had no validation data; pass -opt with data.test')
    protocol = {k: config['val'][k] for k in ('protocol', 'crop_border', 'n_inputs', 'time_factor')
                if k in config['val']}
    tree = {'name': config['name'], 'experiments_root': config['experiments_root'], 'device': config['device'],
            'network': ckpt['network'], 'data': {'test': test_data}, 'test': {**protocol, 'checkpoint': str(path)}}
    for assignment in overrides:
        tree = apply_override(tree, assignment)
    return validate(tree, source=f'{path} (config)')


def rng_state():
    state = {'python': random.getstate(), 'numpy': torch.from_numpy(np.random.get_state()[1].copy()),
             'numpy_pos': int(np.random.get_state()[2]), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    np.random.set_state(('MT19937', state['numpy'].numpy().astype(np.uint32), state['numpy_pos'], 0, 0.0))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class CheckpointManager:
    """Saves iter_N / latest / best under ``folder`` and finds the newest loadable one to resume from."""

    def __init__(self, folder, keep=3):
        self.folder, self.keep = Path(folder), keep

    def save(self, state, iteration, is_best=False):
        """iter_N, then best (if ``is_best``), then latest, each a file of its own: a kill between the steps
        leaves latest at the previous checkpoint, from which a resumed run redoes this save, best included.
        A failed write (a full disk) is a CheckpointError naming the newest checkpoint still good."""
        path = self.folder / f'iter_{iteration}.pth'
        with self._writing(path):
            atomic_save(state, path)
            if is_best:
                _atomic_copy(path, self.folder / 'best.pth')
            _atomic_copy(path, self.folder / 'latest.pth')
        for old in self.history()[self.keep:]:
            old.unlink()
        return path

    def save_best(self, state):
        """best.pth alone: a validation that beats the best between two regular saves."""
        with self._writing(self.folder / 'best.pth'):
            atomic_save(state, self.folder / 'best.pth')
        return self.folder / 'best.pth'

    @contextlib.contextmanager
    def _writing(self, path):
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            yield
        except OSError as e:
            kept = [p.name for p in [self.folder / 'latest.pth', *self.history()] if p.exists() and p != path]
            still = f'the newest checkpoint kept is {kept[0]}' if kept else 'no earlier checkpoint exists'
            raise CheckpointError(f'{path}: cannot write the checkpoint ({e.strerror or e}); {still}, '
                                  'resume from it with train.resume=auto once there is room') from None

    def remove_partial_files(self):
        """Delete temporary files of writes that a killed process left (``.<name>.tmp<pid>``); only the one
        process that trains this run writes here. Returns their names."""
        stale = sorted(p for p in self.folder.glob('.*.tmp*') if p.is_file())
        for path in stale:
            path.unlink()
        return [p.name for p in stale]

    def history(self):
        """iter_N files, newest first."""
        found = [(int(m.group(1)), p) for p in self.folder.glob('iter_*.pth')
                 if (m := re.fullmatch(r'iter_(\d+)\.pth', p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    def latest_valid(self, log=None):
        """The newest checkpoint that loads, falling back past corrupt ones; (path, ckpt), or (None, None)
        when there is none. CheckpointError when there are some but none loads: starting afresh would then
        overwrite the run's checkpoints and metrics."""
        unusable = []
        for path in [self.folder / 'latest.pth'] + self.history():
            if not path.exists():
                continue
            try:
                return path, load_checkpoint(path)
            except CheckpointError as e:
                unusable.append(path.name)
                if log:
                    log(f'skipping unusable checkpoint: {e}')
        if unusable:
            raise CheckpointError(f'{self.folder}: no checkpoint loads ({", ".join(unusable)}); resume from a good '
                                  'copy, or set train.overwrite=true and train.resume=null to start over')
        return None, None
