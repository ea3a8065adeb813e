"""The official MSTT (XY-boy/MSTT-STVSR, ``models/Model_arch.py::MSTTr``) beside ours (``models.mstt``).

Import: ``models/`` of that repository has no ``__init__.py``, so it would be a namespace package, and a
regular package of the same name later on ``sys.path`` (ours, when the benchmark runs from our checkout) would
win over it; the import is therefore given a ``models`` package object whose path is the checkout's folder.
The compiled DCNv2 (``models/DCNv2``, shipped as a Windows binary only) is ``dcnv2.ext_stand_in()``.

Call: ``MSTTr(x, f_flow, b_flow)`` takes exactly 4 frames (its 7-feature stack is hard-coded) whose size is a
multiple of 80, and the flows as two lists of (b, h, w, 2) tensors. Ours pads frames and flows inside, by
edge replication, to a multiple of 80 and crops the output; ``forward`` does the same around the official call.
Its training (``train.py``) minimises the summed Charbonnier loss of that output.
"""
import importlib
import types
from pathlib import Path

from models.common import pad_to_multiple
from models.flow import FlowInputs
from models.mstt import MSTTr

from . import configuration, official_import
from .dcnv2 import ext_stand_in

REPOSITORY = 'XY-boy/MSTT-STVSR'
# the official transformer halves h and w and cuts them into patches of 40, 20, 10 and 5
MULTIPLE = 80
OFFICIAL_ARGUMENTS = ('nf', 'nframes', 'groups', 'front_RBs', 'back_RBs')
# ours only, and no part of the network: which estimator computes the flows a batch does not bring
FLOW_ARGUMENT = 'flow_backend'






def build(root, spec):
    config = configuration(MSTTr, spec, OFFICIAL_ARGUMENTS + (FLOW_ARGUMENT,), 'MSTTr')
    package = types.ModuleType('models')
    package.__path__ = [str(Path(root).resolve() / 'models')]
    with official_import(root, 'mstt', {'_ext': ext_stand_in(), 'models': package}):
        arch = importlib.import_module('models.Model_arch')
    net = arch.MSTTr(**{k: config[k] for k in OFFICIAL_ARGUMENTS})
    # what our predict computes flows with when a batch has none (our extra_inputs())
    net.flow_inputs = FlowInputs(config[FLOW_ARGUMENT])
    return net


def forward(net, lq, extras):
    if lq.shape[1] != 4:
        raise ValueError(f'the official MSTTr takes 4 frames, got {lq.shape[1]}')
    flows = (extras or {}).get('flows')
    if flows is None:
        flows = net.flow_inputs(lq)['flows']
    x, (h, w) = pad_to_multiple(lq, MULTIPLE, mode='replicate')
    # (b, n-1, 2, h, w, 2), padded per flow component as ours pads them
    flows, _ = pad_to_multiple(flows.to(lq.device, lq.dtype).movedim(-1, -3), MULTIPLE, mode='replicate')
    flows = flows.movedim(-3, -1)
    out = net(x, list(flows[:, :, 0].unbind(1)), list(flows[:, :, 1].unbind(1)))
    return out[..., :4 * h, :4 * w]


def training_loss(net, lq, gt, extras, criterion):
    return criterion(forward(net, lq, extras), gt)
