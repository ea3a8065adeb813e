"""The official STDAN (littlewhitesea/STDAN, ``codes/models/modules/sttrans.py::STTrans2``) beside ours
(``models.stdan``).

Import: the code lives under ``codes/`` (its imports start at ``models.``); it needs ``timm``. Its compiled
``DCNv2_latest`` extension holds two kinds of op:

- ``dsp_v2_*``, the deformable sampling of STDFA (``DSP_sep2``): ``dcnv2.ext_stand_in()``, imported as ``_ext``;
- detectron2's ``modulated_deform_conv`` (the ``DCNv2Pack`` of its alignment), whose autograd Function refuses
  CPU tensors before it reaches ``_ext``: ``build`` rebinds that name in ``dconv.py`` to
  ``dcnv2.modulated_deform_conv``, the same op through torchvision, on every device.

``STTrans2.forward`` makes the zero hidden states of its alignment with ``.cuda()``; off CUDA the calls here
send them to the input's device instead.

Call: ``STTrans2(x)`` needs h and w multiples of 8 (its Swin windows); its test scripts pad the frames with
zeros at the bottom/right and crop the output, as ours does inside. Its training (``train_stdan.yml``,
``pixel_criterion: cb``, weight 1) minimises the summed Charbonnier loss of the output.
"""
import importlib
from pathlib import Path

from models.common import pad_to_multiple
from models.stdan import STDAN

from . import configuration, cuda_calls_to, dcnv2, official_import

REPOSITORY = 'littlewhitesea/STDAN'
MULTIPLE = 8
OFFICIAL_ARGUMENTS = ('nf', 'embed_dim', 'img_size', 'groups')






def build(root, spec):
    config = configuration(STDAN, spec, OFFICIAL_ARGUMENTS, 'STTrans2')
    with official_import(Path(root) / 'codes', 'stdan', {'_ext': dcnv2.ext_stand_in()}):
        sttrans = importlib.import_module('models.modules.sttrans')
        importlib.import_module('models.modules.dconv').modulated_deform_conv = dcnv2.modulated_deform_conv
    # n_inputs and n_outputs are stored, never read: the frame count follows the input
    return sttrans.STTrans2(scale=config['scale'], n_inputs=4, n_outputs=7, window_size=config['window_size'],
                            **{k: config[k] for k in OFFICIAL_ARGUMENTS})




def forward(net, lq, extras):
    x, (h, w) = pad_to_multiple(lq, MULTIPLE)
    with cuda_calls_to(lq.device):
        out = net(x)
    return out[..., :4 * h, :4 * w]


def training_loss(net, lq, gt, extras, criterion):
    return criterion(forward(net, lq, extras), gt)
