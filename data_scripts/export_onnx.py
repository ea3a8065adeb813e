"""Export a network to ONNX, then check onnxruntime's output against PyTorch's on a random input.

    python data_scripts/export_onnx.py --checkpoint run/checkpoints/best.pth --output net.onnx
    python data_scripts/export_onnx.py --network '{type: BicubicBlend}' --output bicubic.onnx --size 144 180
    python data_scripts/export_onnx.py --network '{type: MSITF}' --random-weights --output msitf.onnx

The graph is the network's ``predict(lq, extras)`` (``models/base.py``) in eval mode, without gradients:

    inputs   lq     (b, n, 3, h, w) float32 RGB in [0, 1], n = --frames (4), (h, w) = --size (64 112)
             flows  flow-guided networks only (MSTT, STARnet): (b, n-1, 2, h, w, 2) float32 LR-pixel flows,
                    dim 2 forward / backward, last dim (u, v), as ``models.flow.FlowInputs`` computes them
                    (outside the graph: c2f/pyflow are not tensor programs). The graph's extra inputs are
                    the keys of the network's ``extra_inputs()``, in their order.
    output   hq     (b, 2n-1, 3, s*h, s*w) float32, [0, 1] scale, unclamped: ``predict``'s frames.

How it exports
- Exporter: ``torch.onnx.export(dynamo=True)``, torch.export (non-strict) then onnxscript's translation, the
  default of torch 2.14 (needs ``pip install onnx onnxscript``). The TorchScript exporter (dynamo=False) is
  deprecated there and writes an invalid Transpose for ``movedim`` with a negative dimension (MSTT, STARnet,
  STDAN fail to load in onnxruntime).
- Deformable convolutions run their grid_sample implementation (``impl='sampled'``, set on every
  ``ModulatedDeformConv2d`` here, whatever the checkpoint's device): ONNX has no DeformConv that onnxruntime
  runs on the CPU, while GridSample (opset >= 16) it does; flow warping is grid_sample already.
- onnxscript's graph optimizer is off unless --optimize: its rule ``x + 0 -> x`` also matches constants
  within 1e-8 of zero, so it deletes Temporal-LIIF's ``area + 1e-9`` and queries on a feature centre
  divide 0 by 0 (NaN). onnxruntime optimises the graph when it loads it anyway.
- Dynamic axes (--dynamic): ``batch`` (default) makes the batch size symbolic; the frame count never is
  (the recurrences over frames are unrolled). ``size`` makes h and w symbolic too, which only size-generic
  graphs allow (torch.export refuses the others). ``none``: batch 1, all static. A dynamic graph is traced
  at batch 2 (torch.export fixes any dimension whose example is 1) and checked at batch 2 and 1, with
  ``size`` also at h and w grown by the network's ``size_multiple``.
- Check: the max |onnxruntime - PyTorch| over all outputs is printed; it must be finite and at most
  --tolerance (1e-4) times max |PyTorch output|, or the export fails and nothing is written.

Every registered network exports with a dynamic batch and agrees with PyTorch (tiny configurations,
tests/test_onnx.py): BicubicBlend, MSITF, MSTT, RSTT, STARnet (with and without flow refinement), STDAN,
Temporal-LIIF, TMNet and Zooming Slow-Mo.

The file is written to a temporary name beside --output and renamed into place once the check passed.
Exit codes: 0 exported and checked, 1 the network does not export or onnxruntime disagrees with PyTorch,
2 bad input (e.g. no checkpoint, onnx or onnxruntime not installed).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import cli  # noqa: E402
from engine.inference import load_network, network_spec  # noqa: E402
from engine.options import build_option  # noqa: E402
from models import build_network  # noqa: E402
from models.common import ModulatedDeformConv2d  # noqa: E402
from utils.errors import OptionsError  # noqa: E402

DYNAMIC = ('none', 'batch', 'size')
OPSET = 18  # GridSample since 16; 18 is the oldest opset torch 2.14's onnxscript translation targets


class ExportError(Exception):
    """The network does not export, or its export does not compute what PyTorch computes (exit code 1)."""


class PredictGraph(torch.nn.Module):
    """The module that is exported: ``net.predict(lq, extras)`` with the extras as positional tensors, in the
    order of ``keys`` (the keys of ``net.extra_inputs()``)."""

    def __init__(self, net, keys=()):
        super().__init__()
        self.net, self.keys = net, tuple(keys)

    def forward(self, lq, *extras):
        return self.net.predict(lq, dict(zip(self.keys, extras)))


def random_weights_network(spec):
    """The network of ``spec`` (a dict or YAML text) with its initial, untrained weights."""
    return build_option(build_network, network_spec(spec), '--network')


def prepare(net):
    """``net`` ready to trace: eval mode, on the CPU, float32, deformable convs through grid_sample."""
    net = net.float().cpu().eval()
    for m in net.modules():
        if isinstance(m, ModulatedDeformConv2d):
            m.impl = 'sampled'
    return net


def example_inputs(net, batch, frames, size, seed=0):
    """(lq, *extras): random frames (b, n, 3, h, w) in [0, 1] and what ``net.extra_inputs()`` makes of them."""
    lq = torch.rand(batch, frames, 3, *size, generator=torch.Generator().manual_seed(seed))
    make = net.extra_inputs()
    if make is None:
        return (lq,)
    extras = make(lq)
    return (lq, *(extras[key].float() for key in make.keys))


def input_names(net):
    make = net.extra_inputs()
    return ['lq', *(make.keys if make is not None else ())]


def dynamic_shapes(net, inputs, dynamic):
    """torch.export's ``dynamic_shapes`` for ``PredictGraph.forward(lq, *extras)``: one batch dimension shared by
    all inputs, and with ``size`` one height and one width, multiples of the network's ``size_multiple`` (other
    sizes are padded inside, another graph): dims -2, -1 of lq, dims -3, -2 of the flows (..., h, w, 2)."""
    if dynamic == 'none':
        return None
    batch = torch.export.Dim('batch', min=1, max=1024)
    lq, *extras = inputs
    if dynamic == 'batch':
        shapes = [{0: batch}] + [{0: batch} for _ in extras]
    else:
        m = net.size_multiple
        h, w = (m * torch.export.Dim(name, min=1, max=4096 // m) if m > 1
                else torch.export.Dim(name, min=2, max=4096) for name in ('height', 'width'))
        shapes = [{0: batch, lq.dim() - 2: h, lq.dim() - 1: w}] + [{0: batch, x.dim() - 3: h, x.dim() - 2: w}
                                                                    for x in extras]
    return (shapes[0], tuple(shapes[1:])) if extras else (shapes[0],)  # varargs travel as one tuple


def summary(error):
    """One line for an exporter's multi-page exception: its 'Exception summary' when it has one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if '## Exception summary' in lines:
        lines = lines[lines.index('## Exception summary') + 1:]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) < 400 else text[:400] + '...'


def export(net, inputs, path, dynamic='batch', opset=OPSET, optimize=False):
    """Export ``PredictGraph(net)`` traced on ``inputs`` to the ONNX file ``path``; ExportError (one line)
    when torch.export or the ONNX translation fails. Returns the seconds it took."""
    make = net.extra_inputs()
    graph = PredictGraph(net, make.keys if make is not None else ())
    start = time.perf_counter()
    with torch.no_grad():
        try:
            program = torch.export.export(graph, tuple(inputs), dynamic_shapes=dynamic_shapes(net, inputs, dynamic),
                                          strict=False)
        except Exception as e:  # torch.export's many error types: unsupported ops, guards on dynamic sizes
            raise ExportError(f'{type(net).__name__}: torch.export failed ({type(e).__name__}: {summary(e)})'
                              + ('; try --dynamic batch' if dynamic == 'size' else '')) from None
        try:
            onnx_program = torch.onnx.export(program, tuple(inputs), input_names=input_names(net),
                                             output_names=['hq'], opset_version=opset, dynamo=True,
                                             optimize=optimize, verbose=False)
        except Exception as e:  # the ONNX translation's: an op onnxscript cannot translate
            raise ExportError(f'{type(net).__name__}: the ONNX translation failed ({summary(e)})') from None
    onnx_program.save(path, external_data=False)
    return time.perf_counter() - start


def reference(net, inputs):
    """``predict`` in PyTorch on ``inputs`` -> numpy."""
    with torch.no_grad():
        return PredictGraph(net, input_names(net)[1:])(*inputs).numpy()


def compare(net, path, inputs, want):
    """Run the ONNX file in onnxruntime (CPU) on ``inputs``: (max |difference| to ``want``, max |want|)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {name: x.numpy() for name, x in zip(input_names(net), inputs)})[0]
    if got.shape != want.shape:
        raise ExportError(f'{type(net).__name__}: onnxruntime returned {got.shape}, PyTorch {want.shape}')
    return float(np.abs(got.astype(np.float64) - want).max()), float(np.abs(want).max())


def check_inputs(net, frames, size, dynamic, seed=0):
    """The inputs the export is traced on, then those it is checked on besides: batch 1 static; with dynamic
    axes traced at batch 2 (torch.export fixes a dimension whose example is 1) and checked at batch 1 too,
    and with ``size`` also at h and w grown by the network's ``size_multiple``."""
    if dynamic == 'none':
        return [example_inputs(net, 1, frames, size, seed)]
    cases = [example_inputs(net, 2, frames, size, seed), example_inputs(net, 1, frames, size, seed + 1)]
    if dynamic == 'size':
        grown = (size[0] + net.size_multiple, size[1] + net.size_multiple)
        cases.append(example_inputs(net, 1, frames, grown, seed + 2))
    return cases


def export_and_check(net, path, frames=4, size=(64, 112), dynamic='batch', opset=OPSET, optimize=False,
                     tolerance=1e-4, seed=0):
    """Export ``net`` to ``path`` and check it (module docstring). Returns (seconds, [(difference, scale,
    lq shape) per checked input]); ExportError when it does not export or a difference exceeds tolerance."""
    net = prepare(net)
    cases = check_inputs(net, frames, size, dynamic, seed)
    # before the trace: a size cache that the trace filled (Swin masks, resize matrices) would hold fake tensors
    wanted = [reference(net, inputs) for inputs in cases]
    seconds = export(net, cases[0], path, dynamic, opset, optimize)
    results = []
    for inputs, want in zip(cases, wanted):
        difference, scale = compare(net, path, inputs, want)
        results.append((difference, scale, tuple(inputs[0].shape)))
        if not difference <= tolerance * scale:  # also false for NaN
            raise ExportError(f'{type(net).__name__}: onnxruntime differs from PyTorch by {difference:.3g} on lq '
                              f'{tuple(inputs[0].shape)}, more than {tolerance:g} x the output scale {scale:.3g}')
    return seconds, results


def require_onnx():
    for package in ('onnx', 'onnxscript', 'onnxruntime'):
        try:
            __import__(package)
        except ImportError:
            raise OptionsError(f'{package} is not installed: pip install onnx onnxruntime onnxscript') from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', help='a checkpoint of this toolbox, or a bare state_dict with --network')
    parser.add_argument('--network', help="network spec as YAML, e.g. '{type: BicubicBlend}'")
    parser.add_argument('--random-weights', action='store_true',
                        help="export --network with its initial weights (to check that it exports, not to use)")
    parser.add_argument('--output', type=Path, required=True, help='the .onnx file to write')
    parser.add_argument('--size', type=int, nargs=2, default=(64, 112), metavar=('H', 'W'),
                        help='LR frame size traced and checked (default 64 112)')
    parser.add_argument('--frames', type=int, default=4, help='LR frames per window (default 4)')
    parser.add_argument('--dynamic', choices=DYNAMIC, default='batch',
                        help='symbolic axes: batch (default), size (batch, h, w; size-generic graphs only), none')
    parser.add_argument('--opset', type=int, default=OPSET, help=f'ONNX opset (default {OPSET})')
    parser.add_argument('--optimize', action='store_true',
                        help="run onnxscript's graph optimizer (breaks Temporal-LIIF, see the docstring)")
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='max |onnxruntime - PyTorch| allowed, relative to max |output| (default 1e-4)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random check input (default 0)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --output')
    args = parser.parse_args(argv)

    if min(args.size) < 2 or args.frames < 2:
        raise OptionsError(f'--size {args.size[0]} {args.size[1]} --frames {args.frames}: sizes and frames must be '
                           '>= 2')
    if args.output.exists() and not args.overwrite:
        raise OptionsError(f'--output {args.output} exists; give --overwrite to replace it')
    require_onnx()
    if args.random_weights:
        if args.checkpoint or not args.network:
            raise OptionsError('--random-weights builds --network untrained: give --network, not --checkpoint')
        net = random_weights_network(args.network)
    else:
        net, _ = load_network(args.checkpoint, args.network)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.onnx', dir=args.output.parent)
    os.close(fd)
    try:
        seconds, results = export_and_check(net, tmp, args.frames, tuple(args.size), args.dynamic,
                                            args.opset, args.optimize, args.tolerance, args.seed)
        os.replace(tmp, args.output)
    except ExportError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    name = type(net).__name__
    print(f'{args.output}: {name} exported in {seconds:.1f} s (opset {args.opset}, dynamic: {args.dynamic}), '
          f'{args.output.stat().st_size / 2 ** 20:.1f} MiB')
    for difference, scale, shape in results:
        print(f'  lq {shape}: max |onnxruntime - PyTorch| {difference:.3g} (output scale {scale:.3g}, '
              f'{difference / max(scale, 1e-30):.2g} relative)')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
