"""Evaluate a network on test clips under a named protocol; print and save per-clip PSNR/SSIM.

    python test.py                                        # the demo checkpoint (options/test/demo.yml)
    python test.py -opt options/test/baseline_vid4_bix4.yml
    python test.py --checkpoint experiments/demo/checkpoints/best.pth   # data and protocol from the checkpoint
    python test.py -opt options/test/stdan_vid4_bix4.yml --set test.protocol=zsm_legacy
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from data import build_dataset
from data.io import DataError
from models import build_network
from utils.checkpoint import FORMAT, CheckpointError, load_checkpoint, load_weights, network_weights
from utils.evaluation import evaluate, format_table, write_results
from utils.logger import setup_logging
from utils.dist import resolve_device
from utils.options import OptionsError, apply_override, load_options, validate

ROOT = Path(__file__).resolve().parent
DEMO_OPTIONS = ROOT / 'options' / 'test' / 'demo.yml'


def options_from_checkpoint(path, overrides):
    """Test options for ``test.py --checkpoint`` alone: the run's own config, scored on its validation clips."""
    ckpt = load_checkpoint(path)
    if ckpt.get('format') != FORMAT:
        raise CheckpointError(f'{path}: a bare state_dict carries no network spec; pass -opt with network: too')
    config = ckpt['config']
    tree = {'name': config['name'], 'experiments_root': config['experiments_root'], 'device': config['device'],
            'network': ckpt['network'],
            'data': {'test': config['data'].get('test') or config['data']['val']},
            'test': {'protocol': config['val']['protocol'], 'crop_border': config['val']['crop_border'],
                     'checkpoint': str(path)}}
    if tree['data']['test'] is None:
        raise CheckpointError(f'{path}: its run had no validation data; pass -opt with data.test')
    for assignment in overrides:
        tree = apply_override(tree, assignment)
    return validate(tree, source=f'{path} (config)')


def build_for_test(opt):
    """The network to score: rebuilt from the checkpoint when there is one."""
    path = opt['test']['checkpoint']
    if path is None:
        if opt['network'] is None:
            raise OptionsError('network: required when test.checkpoint is not given')
        net = build_network(opt['network'])
        if any(p.requires_grad for p in net.parameters()):
            raise OptionsError(f'test.checkpoint: {opt["network"]["type"]} has trainable parameters; '
                               'give the checkpoint to evaluate')
        return net, opt['network']
    ckpt = load_checkpoint(path)
    spec = ckpt['network'] if ckpt.get('format') == FORMAT else opt['network']
    if spec is None:
        raise CheckpointError(f'{path}: a bare state_dict carries no network spec; set network: in the options')
    if opt['network'] is not None and opt['network']['type'] != spec['type']:
        raise CheckpointError(f'{path}: holds a {spec["type"]} network, the options ask for {opt["network"]["type"]}')
    net = build_network(spec)
    load_weights(net, network_weights(ckpt), path)
    return net, spec


def run_test(opt):
    log = setup_logging()
    device = resolve_device(opt['device'])
    if opt['num_threads']:
        torch.set_num_threads(opt['num_threads'])
    if opt['data']['test'] is None:
        raise OptionsError('data.test: required to test')
    net, spec = build_for_test(opt)
    net.to(device)
    dataset = build_dataset(opt['data']['test'])
    cfg = opt['test']
    ckpt = cfg['checkpoint']
    out_dir = Path(cfg['results_dir']) if cfg['results_dir'] else (
        Path(ckpt).parent if ckpt else Path(opt['experiments_root']) / opt['name'])
    stem = f'{opt["name"]}_{cfg["protocol"]}'
    save_dir = out_dir / 'results' / stem if cfg['save_images'] else None

    start = time.time()
    result = evaluate(net, dataset, cfg['protocol'], device, cfg['crop_border'], save_dir=save_dir)
    data_spec = opt['data']['test']
    degradation = data_spec.get('degradation') or {}
    degradation_text = (f'{degradation.get("type", "?")} x{degradation.get("scale", "?")}' if degradation
                        else 'LR from lq_root' if data_spec.get('lq_root') else 'dataset default')
    title = (f'{opt["name"]}: {spec["type"]} on {data_spec["type"]} ({len(dataset)} clips) | protocol '
             f'{cfg["protocol"]} | {degradation_text} | {result["frames"]} frames scored | crop {cfg["crop_border"]} | '
             f'{ckpt or "no checkpoint"}')
    log.info(format_table(result['clips'] + [result['average']], title))
    header = {'name': opt['name'], 'network': spec, 'checkpoint': ckpt, 'dataset': data_spec,
              'protocol': cfg['protocol'], 'crop_border': cfg['crop_border']}
    csv_path, _ = write_results(result, out_dir, stem, header)
    log.info(f'{result["frames"]} frames in {time.time() - start:.1f} s; tables written to {csv_path} (and .json)')
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', default=None, help='test options YAML (default: options/test/demo.yml)')
    parser.add_argument('--checkpoint', default=None, help='checkpoint to evaluate (overrides test.checkpoint)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY.PATH=VALUE',
                        help='override one option, value parsed as YAML (repeatable)')
    args = parser.parse_args(argv)
    try:
        if args.opt is None and args.checkpoint is not None:
            opt = options_from_checkpoint(args.checkpoint, args.set)
        else:
            overrides = args.set + ([f'test.checkpoint={args.checkpoint}'] if args.checkpoint else [])
            opt = load_options(args.opt or DEMO_OPTIONS, overrides)
        run_test(opt)
    except (OptionsError, DataError, CheckpointError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
