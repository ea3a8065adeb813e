"""Options: one YAML per experiment, one table of defaults, every key and type validated.

    opt = load_options('options/train/stdan_vimeo90k_bix4.yml', overrides=['train.total_iter=1000'])

Rules
- ``DEFAULTS`` below is the only place defaults live; README.md documents every key.
- A key that is not in ``DEFAULTS`` is an error naming the file, the key and the allowed keys.
- A value must have the type of its default (an int is accepted where a float is expected; a string
  such as ``2e-4``, which PyYAML reads as a string, is accepted as a float).
- ``{type: Name, ...}`` specs (network, datasets, optimizer, scheduler, loss) are checked against the
  constructor they name: unknown names, unknown arguments and arguments of the wrong type are errors.
  A spec given with a ``type`` replaces the default spec whole (its arguments belong to that
  constructor); one given without ``type`` (e.g. ``--set train.optimizer.lr=1e-4``) adjusts the default.
- ``--set a.b=value`` overrides are parsed as YAML and validated like the file. A key given twice in one
  mapping is an error (PyYAML would silently keep the last).
- Nothing is changed in place: ``load_options`` returns a new, resolved dict (plain YAML types), which
  the trainer writes to the run folder and into every checkpoint.
"""
import copy
import inspect
import re
import warnings

import torch.optim
import yaml

from data import DATASETS
from data.protocols import PROTOCOLS
from models import NETWORKS
from models.losses import LOSSES
from utils.errors import DataError, OptionsError

from .optim import SCHEDULERS
from .performance import AMP_DTYPES, COMPILE_MODES


class Spec(dict):
    """Marks a default that is a ``{type: Name, **kwargs}`` spec, checked by ``SPEC_KINDS[kind]``."""

    def __init__(self, kind, value=None):
        super().__init__(value or {})
        self.kind = kind


class Arguments(dict):
    """Marks a default that is a free mapping of keyword arguments, checked where they are used."""


REQUIRED = object()

# The protocol keys of val: and test: (one ``data.protocols.Protocol`` each).
PROTOCOL = {
    'protocol': 'window7',            # window7 | zsm_legacy | septuplet | centre (data/protocols.py)
    'crop_border': 0,                 # pixels cropped at each border before scoring
    'max_clips': 0,                   # score only the first N clips; 0 = all
    'n_inputs': 4,                    # LR frames per window (2 for Vimeo triplets: 2 in, 3 out)
    'time_factor': 2,                 # output frames per input interval; other than 2 needs an any_time network
}

DEFAULTS = {
    'name': REQUIRED,                 # experiment name: outputs go to <experiments_root>/<name>/
    'experiments_root': 'experiments',
    'seed': 0,                        # seeds Python, NumPy and torch; data order and augmentation derive from it
    'device': 'auto',                 # auto (cuda when available) | cpu | cuda
    'num_threads': 0,                 # torch CPU threads; 0: the free cores, re-checked as it runs (engine/threads.py)
    'network': Spec('network', None),  # {type: <registered network>, **constructor arguments}
    'data': {
        'train': Spec('dataset', None),  # training dataset spec
        'val': Spec('dataset', None),    # validation clips (a clip dataset), scored during training
        'test': Spec('dataset', None),   # test clips for test.py
        'batch_size': 16,             # total over all processes (split evenly between torchrun ranks)
        'num_workers': 2,             # DataLoader workers per process
        'pin_memory': True,           # pinned host memory (used on CUDA only)
    },
    'train': {
        'total_iter': 600000,
        'optimizer': Spec('optimizer', {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]}),
        'scheduler': Spec('scheduler', {'type': 'CosineAnnealingRestart', 'periods': [150000] * 4,
                                        'restart_weights': [1.0] * 4, 'eta_min': 1e-7}),
        'warmup_iter': 0,             # linear warm-up of the learning rate over the first N iterations
        'loss': Spec('loss', {'type': 'CharbonnierLoss', 'eps': 1e-6, 'reduction': 'sum'}),
        'network_loss': Arguments(),  # arguments of the network's own training loss (STARnet), else unused
        'network_init': {             # start from published weights (engine/checkpoint.py init_network)
            'path': None,             # a .pth as published: plain state_dict, {state_dict: ..}, {params: ..}
            'strict': True,           # every key must fit; false loads what fits and leaves the rest
            'module': '',             # load into this sub-module only (e.g. model.RBPN); '' = the whole network
            'key_map': Arguments(),   # {old key prefix: new prefix} applied to the file's keys first
        },
        'grad_clip': 0.0,             # max gradient norm; 0 disables clipping
        'offset_warning': 100.0,      # warn when the mean |deformable offset| (pixels, logged) exceeds this
        'max_bad_steps': 10,          # non-finite loss/gradient: the step is skipped; this many in a row roll back
        'max_rollbacks': 3,           # ... to the newest good checkpoint, at most this many times (0: stop instead)
        'rollback_lr_factor': 0.5,    # each rollback multiplies the learning rate (and its schedule) by this
        'log_every': 100,             # a log line (and metrics.csv row) every N iterations
        'val_every': 5000,            # validation every N iterations (and at the end)
        'save_every': 5000,           # checkpoint every N iterations (and at the end)
        'keep_checkpoints': 3,        # iter_N checkpoints kept besides latest and best
        'resume': None,               # null | auto (latest valid checkpoint of this run) | path to a checkpoint
        'overwrite': False,           # allow starting afresh in an existing run folder
        'tensorboard': False,         # also write TensorBoard events to <run>/tb/
        'progress_bar': True,         # tqdm bar on rank 0
    },
    'performance': {                  # used by main.py (training and validation) and test.py (evaluation)
        'amp': 'off',                 # off | bf16 | fp16: autocast (fp16: CUDA only, with a gradient scaler)
        'channels_last': False,       # NHWC memory format for the network's 4-D weights and the inputs it gets
        'compile': 'off',             # off | default | reduce-overhead | max-autotune: torch.compile mode (training)
        'cudnn_benchmark': False,     # torch.backends.cudnn.benchmark (fixed input sizes: faster convolutions)
    },
    'val': {                          # scoring during training: a protocol (data/protocols.py) and its settings
        **PROTOCOL,
        'compare_baseline': True,     # at the end, print the final network next to BicubicBlend on the same clips
    },
    'test': {                         # test.py: the same protocol settings, and what to write
        **PROTOCOL,
        'factors': [],                # [[space, time], ..]: one table at each factor pair, network and baseline
        'checkpoint': None,           # checkpoint to evaluate (the network is rebuilt from it)
        'save_images': False,         # write output frames under <run>/results/<clip>/
        'results_dir': None,          # where tables go; default: beside the checkpoint
    },
}


def spec_kinds():
    """kind -> (lookup(name) -> callable or None, known names)."""
    optimizers = {n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                  and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != 'Optimizer'}
    return {
        'network': (NETWORKS.get, sorted(NETWORKS)),
        'dataset': (DATASETS.get, sorted(DATASETS)),
        'optimizer': (lambda n: getattr(torch.optim, n) if n in optimizers else None, sorted(optimizers)),
        'scheduler': (SCHEDULERS.get, sorted(SCHEDULERS)),
        'loss': (LOSSES.get, sorted(LOSSES)),
    }


# Arguments of a constructor that the trainer passes itself, never the YAML.
INJECTED = {'optimizer': {'params'}, 'scheduler': {'optimizer', 'base_lr'}}

_FLOAT = re.compile(r'^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$')


def _type_name(value):
    return {bool: 'bool', int: 'int', float: 'float', str: 'string', list: 'list', dict: 'mapping'}.get(
        type(value), type(value).__name__)


def coerce(value, default, where, allow_none=False):
    """Return ``value`` converted to the type of ``default``, or raise OptionsError naming ``where``.

    ``None`` is accepted where the default is ``None`` and, for constructor arguments (``allow_none``),
    everywhere: constructors check their own optional arguments.
    """
    if default is None or default is REQUIRED or (value is None and allow_none):
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            if default:
                return [coerce(v, default[0], f'{where}[{i}]') for i, v in enumerate(value)]
            return list(value)
    else:
        return value
    got = 'null' if value is None else f'{_type_name(value)} {value!r}'
    raise OptionsError(f'{where}: expected {_type_name(default)}, got {got}')


def _validate_spec(value, default, where, kinds):
    if value is None:
        return None
    if not isinstance(value, dict) or 'type' not in value:
        raise OptionsError(f'{where}: expected a mapping with a "type" key, got {value!r}')
    lookup, known = kinds[default.kind]
    cls = lookup(value['type']) if isinstance(value['type'], str) else None
    if cls is None:
        raise OptionsError(f'{where}.type: unknown {default.kind} {value["type"]!r}; known: {", ".join(known)}')
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = [n for n, p in params.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in INJECTED.get(default.kind, ())]
    out = {'type': value['type']}
    for key, v in value.items():
        if key == 'type':
            continue
        if key not in allowed and not takes_any:
            raise OptionsError(f'{where}.{key}: unknown argument of {value["type"]}; allowed: {", ".join(allowed)}')
        param = params.get(key)
        arg_default = param.default if param is not None and param.default is not param.empty else None
        out[key] = coerce(v, arg_default, f'{where}.{key}', allow_none=True)
    missing = [n for n in allowed if params[n].default is params[n].empty and n not in out]
    if missing:
        raise OptionsError(f'{where}: {value["type"]} needs {", ".join(missing)}')
    return out


def _merge(user, defaults, where, kinds):
    if not isinstance(user, dict):
        raise OptionsError(f'{where or "top level"}: expected a mapping, got {_type_name(user)} {user!r}')
    for key in user:
        if key not in defaults:
            raise OptionsError(f'{where + "." if where else ""}{key}: unknown key; allowed: {", ".join(defaults)}')
    out = {}
    for key, default in defaults.items():
        path = f'{where}.{key}' if where else key
        if isinstance(default, Arguments):
            value = {} if user.get(key) is None else user[key]
            if not isinstance(value, dict):
                raise OptionsError(f'{path}: expected a mapping, got {_type_name(value)} {value!r}')
            out[key] = copy.deepcopy(value)
        elif isinstance(default, Spec):
            value = user[key] if key in user else (dict(default) or None)
            if isinstance(value, dict) and 'type' not in value and default:
                value = {**default, **value}  # arguments without a type adjust the default spec
            out[key] = _validate_spec(value, default, path, kinds)
        elif isinstance(default, dict):
            out[key] = _merge({} if user.get(key) is None else user[key], default, path, kinds)
        elif key in user:
            out[key] = coerce(user[key], default, path)
        elif default is REQUIRED:
            raise OptionsError(f'{path}: required key is missing')
        else:
            out[key] = copy.deepcopy(default)
    return out


def apply_override(tree, assignment):
    """Return a copy of ``tree`` with ``'a.b.c=value'`` applied (value parsed as YAML)."""
    if '=' not in assignment:
        raise OptionsError(f'--set {assignment}: expected key.path=value')
    path, text = assignment.split('=', 1)
    keys = path.strip().split('.')
    if not all(keys):
        raise OptionsError(f'--set {assignment}: expected key.path=value (an empty key in {path!r})')
    if not isinstance(tree, dict):
        raise OptionsError(f'--set {assignment}: the options file holds {_type_name(tree)}, not a mapping')
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader) if text.strip() else None
    except yaml.constructor.ConstructorError as e:  # e.g. a key given twice
        raise OptionsError(f'--set {assignment}: value is not valid YAML{_yaml_problem(e)}') from None
    except yaml.YAMLError:
        # Text that is no YAML is the string itself (e.g. a frame pattern such as {:08d}.png): the
        # option's type check then says whether a string is what that key takes.
        value = text
    tree = copy.deepcopy(tree)
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise OptionsError(f'--set {assignment}: {key} is not a mapping')
        node = child
    node[keys[-1]] = value
    return tree


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error: PyYAML silently keeps
    the last one, so a second ``train:`` block would drop the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != '<<':
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f'key {key_node.value!r} is given twice',
                                                            key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _yaml_problem(error):
    """' at line L, column C: why' (or ': why' where PyYAML gives no position), one line."""
    mark = getattr(error, 'problem_mark', None)
    at = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
    return f'{at}: {getattr(error, "problem", None) or str(error).splitlines()[0]}'


def read_yaml(path):
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.load(f, Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise OptionsError(f'{path}: options file not found') from None
    except UnicodeDecodeError as e:
        raise OptionsError(f'{path}: not UTF-8 text (byte {e.start}: {e.reason})') from None
    except OSError as e:
        raise OptionsError(f'{path}: cannot read the options file ({e.strerror})') from None
    except yaml.YAMLError as e:
        raise OptionsError(f'{path}: malformed YAML{_yaml_problem(e)}') from None
    return data if data is not None else {}


def validate(tree, source='<options>'):
    """Validate a raw options dict against DEFAULTS; errors are prefixed with ``source``."""
    try:
        opt = _merge(tree, DEFAULTS, '', spec_kinds())
        check_values(opt)
        return opt
    except OptionsError as e:
        raise OptionsError(f'{source}: {e}') from None


def load_options(path, overrides=()):
    tree = read_yaml(path)
    for assignment in overrides:
        try:
            tree = apply_override(tree, assignment)
        except OptionsError as e:
            raise OptionsError(f'{path}: {e}') from None
    return validate(tree, source=str(path))


def check_values(opt):
    """Range checks that types alone cannot express."""
    train = opt['train']
    rules = [
        (opt['data']['batch_size'] >= 1, 'data.batch_size', 'must be >= 1'),
        (opt['data']['num_workers'] >= 0, 'data.num_workers', 'must be >= 0'),
        (train['total_iter'] >= 1, 'train.total_iter', 'must be >= 1'),
        (train['optimizer'] is None or _positive(train['optimizer'].get('lr', 1.0)), 'train.optimizer.lr',
         'must be > 0'),
        (train['grad_clip'] >= 0, 'train.grad_clip', 'must be >= 0 (0 disables clipping)'),
        (train['warmup_iter'] >= 0, 'train.warmup_iter', 'must be >= 0'),
        (min(train['log_every'], train['val_every'], train['save_every']) >= 1, 'train.log_every/val_every/save_every',
         'must be >= 1'),
        (train['keep_checkpoints'] >= 1, 'train.keep_checkpoints', 'must be >= 1'),
        (train['max_bad_steps'] >= 1, 'train.max_bad_steps', 'must be >= 1'),
        (train['max_rollbacks'] >= 0, 'train.max_rollbacks', 'must be >= 0 (0 stops instead of rolling back)'),
        (0 < train['rollback_lr_factor'] <= 1, 'train.rollback_lr_factor', 'must be in (0, 1]'),
        (all(isinstance(f, list) and len(f) == 2 and all(_positive_int(v) for v in f) for f in opt['test']['factors']),
         'test.factors', 'must be a list of [space, time] pairs of positive integers, e.g. [[2, 2], [4, 4]]'),
        (train['offset_warning'] > 0, 'train.offset_warning', 'must be > 0'),
        (0 <= opt['seed'] < 2 ** 32, 'seed', 'must be in [0, 2**32)'),
        (opt['performance']['amp'] in AMP_DTYPES, 'performance.amp', f'must be one of {", ".join(AMP_DTYPES)}'),
        (opt['performance']['compile'] in COMPILE_MODES, 'performance.compile',
         f'must be one of {", ".join(COMPILE_MODES)}'),
        (opt['num_threads'] >= 0, 'num_threads', 'must be >= 0 (0 chooses from the free cores)'),
        (re.fullmatch(r'auto|cpu|cuda(:\d+)?', opt['device']) is not None, 'device',
         'must be auto, cpu, cuda or cuda:N'),
        # '.' and '..' match the pattern but would name the experiments folder itself or its parent
        (isinstance(opt['name'], str) and re.fullmatch(r'[\w.-]+', opt['name']) is not None
         and opt['name'].strip('.') != '', 'name', 'must be a plain folder name (letters, digits, ._-)'),
        # file systems allow 255 bytes; an overwritten run is kept as <name>_archived_<time> (25 more)
        (len(opt['name'].encode()) <= 200, 'name', f'must be at most 200 bytes, got {len(opt["name"].encode())}'),
    ]
    for protocol_key in ('val', 'test'):
        rules.append((opt[protocol_key]['crop_border'] >= 0, f'{protocol_key}.crop_border', 'must be >= 0'))
        rules.append((opt[protocol_key]['protocol'] in PROTOCOLS, f'{protocol_key}.protocol',
                      f'must be one of {", ".join(PROTOCOLS)}'))
        rules.append((opt[protocol_key]['time_factor'] >= 1, f'{protocol_key}.time_factor', 'must be >= 1'))
        rules.append((opt[protocol_key]['n_inputs'] >= 2, f'{protocol_key}.n_inputs', 'must be >= 2'))
        rules.append((opt[protocol_key]['max_clips'] >= 0, f'{protocol_key}.max_clips', 'must be >= 0 (0 scores every clip)'))
    for ok, key, message in rules:
        if not ok:
            raise OptionsError(f'{key}: {message}')


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def dump_options(opt, path):
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)


# A width of 0 is reported by the constructor's error (build_option); torch's warning about it would come first.
warnings.filterwarnings('ignore', message='Initializing zero-element tensors is a no-op')


def build_option(build, spec, key):
    """``build(spec)``, with a constructor's own errors (ValueError, TypeError, and the arithmetic or torch
    errors of impossible sizes, e.g. a width of 0) turned into an OptionsError naming ``key``.

    DataError (a missing or broken file, already naming it) passes through unchanged.
    """
    try:
        return build(spec)
    except DataError:
        raise
    except (ValueError, TypeError, ArithmeticError, RuntimeError) as e:
        raise OptionsError(f'{key} ({spec["type"]}): {e}') from None
