"""Starting from and scoring published weights: ``train.network_init`` and ``test.py --weights``.

Published files are wrapped and prefixed in several ways (a plain state_dict, ``{'state_dict': ...}``,
``{'params': ...}``, DataParallel's ``module.``); the test makes such files from our own tiny networks.
"""
import pytest
import torch
import yaml

from engine.checkpoint import init_network
from models import build_network
from tests.support import CONFIGS, NETWORK, options, run
from utils.errors import CheckpointError, OptionsError


def tiny(seed, name=NETWORK):
    torch.manual_seed(seed)
    return build_network(CONFIGS[name]['tiny'])


def published(net, path, wrapper='state_dict', prefix='module.'):
    state = {prefix + k: v for k, v in net.state_dict().items()}
    torch.save(state if wrapper is None else {wrapper: state}, path)
    return path


@pytest.mark.parametrize('wrapper, prefix', [(None, ''), ('state_dict', 'module.'), ('params', ''),
                                             ('params', 'module.')])
def test_published_layouts_initialise_a_network(tmp_path, wrapper, prefix):
    source, target = tiny(0), tiny(1)
    path = published(source, tmp_path / 'w.pth', wrapper, prefix)
    note = init_network(target, path)
    assert note == f'network_init {path}: {len(source.state_dict())} tensors loaded into MSITF, 0 missing (left as ' \
                   'initialised), 0 unexpected (ignored)'
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_mismatch_is_one_line_naming_the_file_and_key_unless_not_strict(tmp_path):
    source = tiny(0)
    state = source.state_dict()
    first = next(iter(state))
    state = {k: v for k, v in state.items() if k != first}
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(CheckpointError, match=rf'{path}: weights do not fit MSITF: 1 missing \(e.g. {first}\); '
                                              r'1 unexpected \(e.g. extra.weight\)') as info:
        init_network(tiny(1), path)
    assert '\n' not in str(info.value)
    target = tiny(1)
    before = target.state_dict()[first].clone()
    assert ', 1 missing (left as initialised), 1 unexpected (ignored), strict: false' in init_network(target, path, False)
    assert torch.equal(target.state_dict()[first], before)
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='junk.pth: unreadable'):
        init_network(tiny(1), tmp_path / 'junk.pth')


def test_a_sub_module_and_renamed_keys(tmp_path):
    """STARnet's official training starts its STAR network from a pretrained RBPN: its weights go into
    ``model.RBPN`` of the flow-refined network."""
    star = tiny(0, 'starnet')
    rbpn = {f'rbpn_{k}': v for k, v in star.model.RBPN.state_dict().items()}
    torch.save(rbpn, tmp_path / 'rbpn.pth')
    target = tiny(1, 'starnet')
    note = init_network(target, tmp_path / 'rbpn.pth', module='model.RBPN', key_map={'rbpn_': ''})
    assert f'{len(rbpn)} tensors loaded into STARnet.model.RBPN, 0 missing' in note
    for key, value in star.model.RBPN.state_dict().items():
        assert torch.equal(target.model.RBPN.state_dict()[key], value)
    assert not torch.equal(target.flow_net.outc.conv.weight, star.flow_net.outc.conv.weight)
    with pytest.raises(OptionsError, match="train.network_init.module: STARnet has no sub-module 'model.RBPM'"):
        init_network(target, tmp_path / 'rbpn.pth', module='model.RBPM', key_map={'rbpn_': ''})


def test_training_starts_from_and_test_py_scores_published_weights(tmp_path):
    path = published(tiny(5), tmp_path / 'published.pth')
    train = options(tmp_path, 'init', total_iter=1, val_every=100, network_init={'path': str(path)})
    proc = run(['main.py', '-opt', str(train)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'network_init {path}: ' in proc.stdout and '0 missing' in proc.stdout
    tree = yaml.safe_load(train.read_text())
    spec = yaml.safe_dump(tree['network'], default_flow_style=True).strip()
    test_options = tmp_path / 'test.yml'
    test_options.write_text(yaml.safe_dump({'name': 'published', 'device': 'cpu', 'network': {'type': 'BicubicBlend'},
                                            'data': {'test': tree['data']['val']},
                                            'test': {'results_dir': str(tmp_path / 'out')}}))
    proc = run(['test.py', '-opt', str(test_options), '--weights', str(path), '--network', spec])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '| average | 7 |' in proc.stdout and (tmp_path / 'out' / 'published_window7_published.csv').exists()


def test_starnet_from_scratch_is_warned_that_the_official_run_started_from_rbpn(tmp_path):
    path = options(tmp_path, 'star', total_iter=1, val_every=100)
    tree = yaml.safe_load(path.read_text())
    tree['network'] = CONFIGS['starnet_noref']['tiny']
    tree['data'].pop('val')
    tree['data']['train'].update(n_inputs=2, lq_size=32, max_frames=9)
    path.write_text(yaml.safe_dump(tree))
    proc = run(['main.py', '-opt', str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'network STARnet starts from scratch; the official STARnet training starts from a pretrained RBPN' \
        in proc.stdout
