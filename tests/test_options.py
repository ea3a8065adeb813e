"""The options loader: defaults, overrides, and one-line errors that name the file and key."""
import subprocess
import sys

import pytest
import yaml

from engine.options import DEFAULTS, apply_override, load_options
from tests.conftest import ROOT
from utils.errors import OptionsError
from utils.registry import Registry

MINIMAL = {'name': 'unit', 'network': {'type': 'BicubicBlend', 'scale': 4}}


def write(tmp_path, tree, name='opt.yml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree) if isinstance(tree, dict) else tree)
    return path


def error_of(path, overrides=()):
    with pytest.raises(OptionsError) as info:
        load_options(path, overrides)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith(str(path))
    return message


def test_defaults_fill_every_section(tmp_path):
    opt = load_options(write(tmp_path, MINIMAL))
    assert opt['train']['total_iter'] == DEFAULTS['train']['total_iter']
    assert opt['train']['optimizer'] == {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]}
    assert opt['val']['protocol'] == 'window7'
    assert opt['network'] == {'type': 'BicubicBlend', 'scale': 4}


def test_scientific_notation_string_is_a_float(tmp_path):
    path = write(tmp_path, 'name: unit\ntrain:\n  optimizer: {type: Adam, lr: 2e-4}\n')
    assert yaml.safe_load(path.read_text())['train']['optimizer']['lr'] == '2e-4'  # what PyYAML does
    lr = load_options(path)['train']['optimizer']['lr']
    assert isinstance(lr, float) and lr == 2e-4


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    path = write(tmp_path, {**MINIMAL, 'train': {'total_iters': 5}})
    message = error_of(path)
    assert 'train.total_iters' in message and 'unknown key' in message and 'total_iter' in message


def test_wrong_type_names_key_and_expected_type(tmp_path):
    message = error_of(write(tmp_path, {**MINIMAL, 'train': {'total_iter': 'many'}}))
    assert 'train.total_iter' in message and 'expected int' in message and "'many'" in message
    message = error_of(write(tmp_path, {**MINIMAL, 'train': {'tensorboard': 'yes'}}))
    assert 'train.tensorboard' in message and 'expected bool' in message


def test_unknown_constructor_argument_and_type(tmp_path):
    message = error_of(write(tmp_path, {'name': 'u', 'network': {'type': 'BicubicBlend', 'scael': 4}}))
    assert 'network.scael' in message and 'allowed: scale' in message
    message = error_of(write(tmp_path, {'name': 'u', 'network': {'type': 'BicubicBlend', 'scale': 'four'}}))
    assert 'network.scale' in message and 'expected int' in message


def test_unknown_registry_name_lists_known(tmp_path):
    message = error_of(write(tmp_path, {'name': 'u', 'network': {'type': 'NoSuchNet'}}))
    assert "unknown network 'NoSuchNet'" in message and 'BicubicBlend' in message
    message = error_of(write(tmp_path, {**MINIMAL, 'train': {'optimizer': {'type': 'Adamm', 'lr': 1e-4}}}))
    assert "unknown optimizer 'Adamm'" in message and 'AdamW' in message and 'Adamax' in message


def test_optimizer_arguments_checked_against_torch(tmp_path):
    message = error_of(write(tmp_path, {**MINIMAL, 'train': {'optimizer': {'type': 'SGD', 'lr': 0.1, 'betas': [1]}}}))
    assert 'train.optimizer.betas' in message and 'unknown argument of SGD' in message


def test_out_of_range_values(tmp_path):
    assert 'must be > 0' in error_of(write(tmp_path, {**MINIMAL, 'train': {'optimizer': {'type': 'Adam', 'lr': -1}}}))
    assert 'data.batch_size' in error_of(write(tmp_path, {**MINIMAL, 'data': {'batch_size': 0}}))
    assert 'val.protocol' in error_of(write(tmp_path, {**MINIMAL, 'val': {'protocol': 'window9'}}))


def test_missing_required_and_malformed_yaml(tmp_path):
    assert 'name: required' in error_of(write(tmp_path, {'network': MINIMAL['network']}))
    message = error_of(write(tmp_path, 'name: [unclosed\n'))
    assert 'malformed YAML' in message and 'line' in message
    assert 'not found' in error_of(tmp_path / 'absent.yml')


def test_overrides_are_yaml_and_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    opt = load_options(path, ['train.total_iter=12', 'train.optimizer.lr=1e-4', 'val.protocol=zsm_legacy'])
    assert opt['train']['total_iter'] == 12 and opt['train']['optimizer']['lr'] == 1e-4
    assert opt['train']['optimizer']['betas'] == [0.9, 0.99]  # the rest of the default spec stays
    assert opt['val']['protocol'] == 'zsm_legacy'
    assert 'train.total_iter' in error_of(path, ['train.total_iter=abc'])
    assert 'expected key.path=value' in error_of(path, ['train.total_iter'])


def test_load_does_not_mutate_and_override_copies():
    tree = {'a': {'b': 1}}
    assert apply_override(tree, 'a.c=[1, 2]') == {'a': {'b': 1, 'c': [1, 2]}}
    assert tree == {'a': {'b': 1}}


def test_every_committed_yaml_is_valid():
    files = sorted((ROOT / 'options').rglob('*.yml'))
    assert files, 'no option files found'
    for path in files:
        load_options(path)


def test_cli_error_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, {**MINIMAL, 'train': {'lr': 1}})
    for script in ('main.py', 'test.py'):
        proc = subprocess.run([sys.executable, str(ROOT / script), '-opt', str(path)], capture_output=True,
                              text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count('\n') == 1 and 'Traceback' not in proc.stderr
        assert 'train.lr: unknown key' in proc.stderr and str(path) in proc.stderr


def test_registry_errors():
    reg = Registry('thing')

    @reg.register()
    class A:
        def __init__(self, x=1):
            self.x = x

    spec = {'type': 'A', 'x': 3}
    assert reg.build(spec).x == 3 and spec == {'type': 'A', 'x': 3}
    with pytest.raises(KeyError, match="unknown thing type 'B'; known: A"):
        reg.build({'type': 'B'})
    with pytest.raises(KeyError, match='registered twice'):
        reg.register('A')(A)
    with pytest.raises(ValueError, match='"type" key'):
        reg.build({'x': 1})


def test_python_api_builders():
    from data import DATASETS, build_dataset  # noqa: F401
    from models import NETWORKS, build_network
    assert {'BicubicBlend'} <= set(NETWORKS)
    net = build_network({'type': 'BicubicBlend', 'scale': 2})
    assert net.scale == 2


def test_network_loss_arguments_checked_against_the_network():
    from engine.training import configure_network_loss
    from models import build_network
    starnet = build_network({'type': 'STARnet', 'base_filter': 8, 'feat': 4, 'num_stages': 1, 'n_resblock': 1,
                             'unet_width': 2})
    configure_network_loss(starnet, {'train_obj': 'STAR-ST', 'flow_weight': 0.0})
    assert starnet.loss_options['weights'] == (1., .5, .5, 0.) and starnet.loss_options['flow_weight'] == 0
    with pytest.raises(OptionsError, match=r'train.network_loss.lr_weight: .*allowed: train_obj'):
        configure_network_loss(starnet, {'lr_weight': 1})
    with pytest.raises(OptionsError, match=r'train.network_loss \(STARnet\): train_obj must be one of STAR, '):
        configure_network_loss(starnet, {'train_obj': 'STAR-X'})
    with pytest.raises(OptionsError, match='none'):
        configure_network_loss(build_network({'type': 'BicubicBlend'}), {'train_obj': 'STAR'})


def test_constructor_errors_name_the_key(tmp_path):
    tree = {'name': 'u', 'network': {'type': 'MSITF', 'pcd_input': 'median'},
            'data': {'train': {'type': 'VideoSeptuplets', 'paths': ['demo:carphone']}}}
    proc = subprocess.run([sys.executable, str(ROOT / 'main.py'), '-opt', str(write(tmp_path, tree)),
                           '--set', f'experiments_root={tmp_path}'], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'network (MSITF): pcd_input' in proc.stderr
    tree = {'name': 'u', 'network': {'type': 'BicubicBlend'},
            'data': {'test': {'type': 'VideoFile', 'paths': ['demo:carphone'], 'degradation': {'type': 'XX'}}}}
    proc = subprocess.run([sys.executable, str(ROOT / 'test.py'), '-opt', str(write(tmp_path, tree)),
                           '--set', f'experiments_root={tmp_path}'], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr
    assert 'data.test (VideoFile): degradation: type' in proc.stderr


def test_readme_documents_every_option():
    readme = (ROOT / 'README.md').read_text()

    def keys(tree, prefix=''):
        for key, value in tree.items():
            path = f'{prefix}{key}'
            if isinstance(value, dict) and type(value).__name__ not in ('Spec', 'Arguments'):
                yield from keys(value, path + '.')
            else:
                yield path

    missing = [k for k in keys(DEFAULTS) if f'| `{k}` |' not in readme]
    assert not missing


def test_optimizer_and_scheduler_constructor_errors_name_the_key(tmp_path, capsys):
    import main
    base = {'name': 'u', 'experiments_root': str(tmp_path / 'runs'), 'device': 'cpu',
            'network': {'type': 'MSITF', 'nf': 8, 'groups': 1, 'front_RBs': 1, 'trunk_depths': [2],
                        'trunk_heads': [2], 'window_size': 4, 'hr_nf': 8},
            'data': {'train': {'type': 'VideoSeptuplets', 'paths': ['demo:carphone'], 'max_frames': 8}}}
    cases = [({'optimizer': {'type': 'Adam', 'lr': 1e-4, 'betas': [2.0, 3.0]}}, 'train.optimizer (Adam): '),
             ({'scheduler': {'type': 'CosineAnnealingRestart', 'periods': [], 'restart_weights': [1.0]}},
              'train.scheduler (CosineAnnealingRestart): periods')]
    for train, message in cases:
        assert main.main(['-opt', str(write(tmp_path, {**base, 'train': train}))]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and message in err, err
    assert not (tmp_path / 'runs').exists()  # nothing written for a run that could not start
