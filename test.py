"""Evaluate a network on test clips under a named protocol; print and save per-clip PSNR/SSIM.
With --input, upscale a clip without ground truth instead (x4 in space, x2 in time; engine/inference.py).

    python test.py                                        # the demo checkpoint (options/test/demo.yml)
    python test.py -opt options/test/baseline_vid4_bix4.yml
    python test.py --checkpoint experiments/demo      # the run's best.pth (latest.pth without validation); data
                                                      # and protocol from the checkpoint
    python test.py -opt options/test/stdan_vid4_bix4.yml --set test.protocol=zsm_legacy

    python test.py --checkpoint best.pth --input clip.mp4 --output out.mp4          # inference
    python test.py --network '{type: BicubicBlend}' --input frames/ --output out/ --output out.mp4
    python test.py --checkpoint best.pth --input big.mp4 --output out.mp4 --max-memory 8 --precision fp16
    python test.py -opt options/test/stdan_vid4_bix4.yml --weights STDAN_20220306.pth   # published weights
"""
import os
import signal
import sys

# Before torch loads OpenMP: waiting threads sleep instead of spinning, so that a machine shared with other
# jobs slows a run by the CPU share it loses, not tens of times (README, "Threads on a shared machine").
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def stopped_while_starting(signum, frame):
    """Ctrl-C or SIGTERM while the libraries load (seconds): one line, nothing written yet."""
    print(f'stopped: {signal.Signals(signum).name} while starting; nothing was written', file=sys.stderr)
    sys.exit(128 + signum)


if __name__ == '__main__':
    signal.signal(signal.SIGINT, stopped_while_starting)
    signal.signal(signal.SIGTERM, stopped_while_starting)

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from data import build_dataset  # noqa: E402
from data.io import check_writable  # noqa: E402
from data.protocols import Protocol  # noqa: E402
from engine import cli  # noqa: E402
from engine.checkpoint import options_from_checkpoint, rebuild_network, resolve_checkpoint  # noqa: E402
from engine.dist import resolve_device  # noqa: E402
from engine.evaluation import NonFiniteOutput, evaluate, format_table, write_results, write_rows  # noqa: E402
from engine.inference import InferenceOptions, load_network, open_input, run_inference  # noqa: E402
from engine.logger import setup_logging  # noqa: E402
from engine.options import build_option, load_options  # noqa: E402
from engine.performance import check_amp, prepare_network  # noqa: E402
from engine.threads import CpuThreads  # noqa: E402
from models.baseline import BicubicBlend  # noqa: E402
from utils.errors import CheckpointError, OptionsError  # noqa: E402

ROOT = Path(__file__).resolve().parent
DEMO_OPTIONS = ROOT / 'options' / 'test' / 'demo.yml'


def run_test(opt):
    log = setup_logging()
    device = resolve_device(opt['device'])
    CpuThreads(opt['num_threads']).update()
    if opt['data']['test'] is None:
        raise OptionsError('data.test: required to test')
    net, spec, loaded = rebuild_network(opt['test']['checkpoint'], opt['network'])
    amp = check_amp(opt['performance']['amp'], device)
    net = prepare_network(net.to(device), opt['performance'])
    cfg = opt['test']
    ckpt = cfg['checkpoint']
    protocol = Protocol.from_options(cfg)
    out_dir = Path(cfg['results_dir']) if cfg['results_dir'] else (
        Path(ckpt).parent if ckpt else Path(opt['experiments_root']) / opt['name'])
    check_writable(out_dir)
    # one table per checkpoint (and iteration: best.pth moves on): scoring another never replaces this one
    scored = '' if ckpt is None else f'_{Path(ckpt).stem}' + (
        f'_iter{loaded["iteration"]}' if 'iteration' in loaded and Path(ckpt).stem != f'iter_{loaded["iteration"]}'
        else '')
    if cfg['factors']:
        return factor_table(opt, net, spec, protocol, device, out_dir, scored, amp)
    dataset = build_option(build_dataset, opt['data']['test'], 'data.test')
    stem = f'{opt["name"]}_{protocol.name}{scored}'
    save_dir = out_dir / 'results' / stem if cfg['save_images'] else None
    start = time.time()
    try:
        result = evaluate(net, dataset, protocol, device, amp=amp, save_dir=save_dir)
    except NonFiniteOutput as e:
        raise CheckpointError(f'{ckpt or spec["type"]}: {e}; its weights are unusable (diverged training?)') from None
    title = (f'{opt["name"]}: {spec["type"]} on {opt["data"]["test"]["type"]} ({protocol.clips(dataset)} clips) | protocol '
             f'{protocol.describe()} | {dataset.description} | {result["frames"]} frames scored | '
             f'crop {protocol.crop_border} | {ckpt or "no checkpoint"}')
    log.info(format_table(result['clips'] + [result['average']], title))
    if protocol.name in ('septuplet', 'triplet_middle'):  # one window per clip: its positions are the clip's frames
        log.info(format_table([{**row, 'position': f'im{row["position"]}'} for row in result['positions']],
                              'by output position (frame averages)', first='position'))
    csv_path, _ = write_results(result, out_dir, stem, results_header(opt, spec))
    log.info(f'{result["frames"]} frames in {time.time() - start:.1f} s; tables written to {csv_path} (and .json)')
    return result


def results_header(opt, spec):
    """The facts saved with every results table."""
    cfg = opt['test']
    return {'name': opt['name'], 'network': spec, 'checkpoint': cfg['checkpoint'], 'dataset': opt['data']['test'],
            'protocol': cfg['protocol'], 'crop_border': cfg['crop_border'], 'time_factor': cfg['time_factor']}


def factor_table(opt, net, spec, protocol, device, out_dir, scored='', amp=None):
    """``test.factors``: the network and the BicubicBlend baseline at each [space, time] factor pair, one table.

    The space factor replaces ``data.test.degradation.scale`` (LR made on the fly from the GT); the time
    factor sets the protocol's windows (``data/protocols.py``). Written to <out>/<name>_factors<scored>.{csv,json}.
    """
    log, cfg, data_spec = setup_logging(), opt['test'], opt['data']['test']
    if data_spec.get('lq_root'):
        raise OptionsError('test.factors: the LR frames must be made on the fly at each scale; remove data.test.lq_root')
    degradation = dict(data_spec.get('degradation') or {'type': 'BI'})
    rows, start = [], time.time()
    for space, time_factor in cfg['factors']:
        dataset = build_option(build_dataset, {**data_spec, 'degradation': {**degradation, 'scale': space}},
                               'data.test')
        at = Protocol(protocol.name, protocol.n_inputs, time_factor, protocol.crop_border, protocol.max_clips)
        for name, model in ((spec['type'], net), ('BicubicBlend', BicubicBlend(space).to(device))):
            result = evaluate(model, dataset, at, device, amp=amp)
            rows.append({**result['average'], 'space': space, 'time': time_factor, 'method': name,
                         'setting': f'x{space} space, x{time_factor} time: {name}'})
            log.info(f'x{space} space, x{time_factor} time, {name}: PSNR-Y {result["average"]["psnr_y"]:.4f} '
                     f'({result["frames"]} frames, {result["seconds"]:.1f} s)')
    title = (f'{opt["name"]}: {spec["type"]} vs BicubicBlend on {data_spec["type"]} ({len(dataset)} clips) | '
             f'protocol {protocol.name} | {degradation.get("type", "BI")} at each space factor | '
             f'crop {protocol.crop_border} | {cfg["checkpoint"] or "no checkpoint"}')
    log.info(format_table(rows, title, first='setting'))
    csv_path, _ = write_rows(rows, ('space', 'time', 'method'), out_dir, f'{opt["name"]}_factors{scored}',
                             {**results_header(opt, spec), 'rows': rows})
    log.info(f'{len(rows)} evaluations in {time.time() - start:.1f} s; table written to {csv_path} (and .json)')
    return rows


def run_inference_cli(args):
    """``test.py --input``: upscale a clip without ground truth (engine/inference.py)."""
    if args.opt is not None or args.set:
        raise OptionsError('--input runs inference: -opt and --set configure evaluation, leave them out')
    options = InferenceOptions.from_args(args)
    setup_logging()
    CpuThreads(0).update()
    # FFmpeg's own log lines ("moov atom not found") would come before the one-line error of a bad video.
    os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')
    net, _ = load_network(args.checkpoint, args.network)
    return run_inference(net, open_input(args.input, options.fps, options.max_frames), options)


def inference_arguments(parser):
    """The ``--input`` flags: one per field of ``InferenceOptions``, whose defaults they take."""
    d = InferenceOptions
    infer = parser.add_argument_group('inference (no ground truth; see engine/inference.py)')
    infer.add_argument('--input', default=None,
                       help='video file, demo:<name> or folder of frames to upscale; switches to inference')
    infer.add_argument('--output', action='append', default=[],
                       help='a .mp4 file (8-bit H.264) or a folder for PNG frames at the input bit depth (repeatable)')
    infer.add_argument('--scale', type=float, default=d.scale,
                       help='space factor: any for any_scale networks (TemporalLIIF, BicubicBlend), others accept '
                            'their own only (default: the network\'s)')
    infer.add_argument('--time', type=float, default=d.time,
                       help='time factor: any for any_time networks, others accept 2 only (default 2)')
    infer.add_argument('--fps', type=float, default=d.fps,
                       help='input frame rate (default: the video header; 25 for a frame folder)')
    infer.add_argument('--max-frames', type=int, default=d.max_frames, metavar='N',
                       help='upscale only the first N input frames (a quick preview)')
    infer.add_argument('--keep-fps', action='store_true', default=d.keep_fps,
                       help='write the output at the input frame rate (slow motion) instead of fps x time factor')
    infer.add_argument('--tile', type=int, nargs='+', default=d.tile, metavar='N',
                       help='LR tile size: N (square) or H W; tiles overlap and are blended')
    infer.add_argument('--tile-overlap', type=int, default=d.tile_overlap, metavar='N',
                       help=f'minimum tile overlap in LR pixels ({d.tile_overlap})')
    infer.add_argument('--max-memory', type=float, default=d.max_memory, metavar='GB',
                       help='choose the tile from a memory budget (estimate in engine/inference.py)')
    infer.add_argument('--precision', choices=('fp32', 'fp16', 'bf16'), default=d.precision,
                       help='fp16/bf16: autocast on CUDA only')
    infer.add_argument('--device', default=d.device, help='auto | cpu | cuda | cuda:N (inference)')
    infer.add_argument('--bit-depth', type=int, default=d.bit_depth, metavar='BITS',
                       help='bits used in 16-bit input frames (e.g. 12); default: the file dtype (8 or 16)')
    infer.add_argument('--chunk', type=int, default=d.chunk, metavar='N',
                       help='queries per render call (TemporalLIIF; default: the network\'s own, 8192)')
    infer.add_argument('--overwrite', action='store_true', default=d.overwrite, help='replace existing outputs')
    return [a.dest for a in infer._group_actions if a.dest not in ('input', 'checkpoint')]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', '--opt', default=None, help='test options YAML (default: options/test/demo.yml)')
    parser.add_argument('--checkpoint', '--weights', dest='checkpoint', default=None,
                        help='a toolbox checkpoint (or a run folder: its best.pth, else latest.pth), or published weights as they are published (a state_dict, '
                             '{state_dict: ..}, {params: ..}; module. prefixes dropped) with --network or -opt '
                             'naming the network; overrides test.checkpoint')
    parser.add_argument('--network', default=None, metavar='YAML',
                        help='network spec, e.g. "{type: STDAN}": the network of published --weights (overrides '
                             'network:), or alone a network without weights ("{type: BicubicBlend}")')
    parser.add_argument('--set', action='append', default=[], metavar='KEY.PATH=VALUE',
                        help='override one option, value parsed as YAML (repeatable)')
    inference_only = inference_arguments(parser)
    args = parser.parse_args(argv)
    cli.raise_on_sigterm()
    return cli.run(dispatch, (args, parser, inference_only))


def dispatch(parsed):
    """Inference when --input is given, else evaluation; returns the exit code."""
    args, parser, inference_only = parsed
    if args.checkpoint is not None:
        args.checkpoint = str(resolve_checkpoint(args.checkpoint))
    if args.input is not None:
        run_inference_cli(args)
        return 0
    given = [name for name in inference_only if getattr(args, name) != parser.get_default(name)]
    if given:
        raise OptionsError(f'--{given[0].replace("_", "-")}: an inference option; it needs --input')
    network = [f'network={args.network}'] if args.network else []
    if args.opt is None and args.checkpoint is not None:
        opt = options_from_checkpoint(args.checkpoint, args.set + network)
    else:
        overrides = args.set + network + ([f'test.checkpoint={args.checkpoint}'] if args.checkpoint else [])
        opt = load_options(args.opt or DEMO_OPTIONS, overrides)
    run_test(opt)
    return 0


if __name__ == '__main__':
    sys.exit(main())
