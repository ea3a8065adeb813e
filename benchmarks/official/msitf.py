"""The official MSITF (carpenterChina/MSITF, ``models/modules/mystvsr07.py::Net``) beside ours (``models.msitf``).

Import: a regular ``models`` package at the repository root; its deformable convs already use
``torchvision.ops.deform_conv2d``, so no compiled op needs a stand-in. It needs ``timm`` and ``einops``.

The ConvLSTM cells (``models/modules/convlstm.py``) make their zero initial state with ``.cuda()``; ``build``
gives each cell one that makes it on the device of the cell's weights, which is the same on CUDA and makes
the network run elsewhere too.

Call: ``Net(x)`` on the frames as they are (it pads its features to a multiple of 8 inside, as ours does); its
training (``bd7train.py``, ``pixel_criterion: cb``, weight 1) minimises the summed Charbonnier loss of that output.
"""
import importlib
import types

import torch

from models.msitf import MSITF

from . import configuration, official_import

REPOSITORY = 'carpenterChina/MSITF'
OFFICIAL_ARGUMENTS = ('nf', 'nframes', 'groups', 'front_RBs', 'back_RBs')






def _zero_state(cell, batch_size, tensor_size):
    zeros = torch.zeros(batch_size, cell.hidden_dim, *tensor_size, device=cell.conv.weight.device)
    return zeros, zeros.clone()


def build(root, spec):
    config = configuration(MSITF, spec, OFFICIAL_ARGUMENTS, 'Net')
    with official_import(root, 'msitf'):
        arch = importlib.import_module('models.modules.mystvsr07')
        convlstm = importlib.import_module('models.modules.convlstm')
    net = arch.Net(**{k: config[k] for k in OFFICIAL_ARGUMENTS})
    for cell in net.modules():
        if isinstance(cell, convlstm.ConvLSTMCell):
            cell.init_hidden = types.MethodType(_zero_state, cell)
    return net


def forward(net, lq, extras):
    return net(lq)


def training_loss(net, lq, gt, extras, criterion):
    return criterion(net(lq), gt)
