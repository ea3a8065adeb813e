"""STARnet's official code (alterzero/STARnet @cf7a0bc) behind the adapter interface of ``benchmarks.official``.

Built: ``fbpn_sr_rbpn_v4_ref.py::Net`` (flow refinement, what eval.py loads) or, for ``flow_refinement: false``,
``fbpn_sr_rbpn_v4.py::Net``, with the (base_filter, feat, num_stages, n_resblock, scale_factor) of our spec.
Nothing is loaded: the official STAR constructor loads ``weights/pretrained/rbpn_pretrained_F2_4x.pth`` by
default (``pretrained=True``), and the flow-refined one builds it with that default, so the flow-refined
module's ``FBPNSR_RBPN_V4`` is pointed at the class with ``pretrained=False``.

Called as the official scripts call it, on each adjacent pair of the clip (4 frames -> 3 pairs), the pairs of
all clips stacked in one batch (pair i of clip j at j * (n-1) + i, as ours stacks them, which matters for the
U-Net's BatchNorm in training):

- frames ImageNet-normalised (``data.transform``: ToTensor then Normalize);
- flows as ``dataset.get_flow`` makes them: pyflow's pixel (u, v) clipped to +-150 and mapped by
  ``rescale_flow(flow, -1, 1)``, which is -flow / 150;
- ``train=False`` (eval.py): HR I_t+1/2, I_t, I_t+1 and LR I_t+1/2; ``train=True`` (main.py,
  main_refinement_flow.py): the same four as [stage 1, stage 2] lists, then the refined flows (flow refinement).

Outputs go back to [0, 1] with the exact inverse of the normalisation (eval.py's ``utils.denorm(vgg=True)``
uses constants rounded to 3 decimals, up to about 3e-5 away), and the pairs' frames are assembled into the clip
by ours' ``assemble_clip`` (the inner input frames, estimated by two pairs, averaged): the official code has no
clip, so this part is ours on both sides.

The official code needs no compiled op and no ``.cuda()`` stand-in: the network modules (fbpn_sr_rbpn_v4*,
rbpn, dbpns_rbpn, base_networks, autoencoder_v4) import torch and torchvision only; pyflow (a Python 3.5
binary in the repository) is imported by dataset.py, which is not imported here.
"""
import functools
import importlib
import inspect

import torch.nn.functional as F

from models.flow import FlowInputs
from models.starnet import (
    STARnet,
    assemble_clip,
    denormalise,
    flow_targets,
    lr_targets,
    normalise,
    official_pair_inputs,
)

from . import official_import

REPOSITORY = 'alterzero/STARnet'


# main.py's objective (and main_refinement_flow.py's, --train_obj STAR, its default): per output (ht, h1, h2, l)
# the L1 of its two stages weighted 0.4 and 1.0 (mse_loss_calc: w_begin 0.4, w_interval 0.6); the VGG feature
# MSE weighted the same way, times 0.1; with flow refinement 0.1 x the flows' MSE.
TARGET_WEIGHTS = (1., .5, .5, 1.)
STAGE_WEIGHTS = (.4, 1.)
FEATURE_WEIGHT = FLOW_WEIGHT = .1


def build(root, spec):
    """The official STARnet in the configuration of ``spec`` ({type: STARnet, **our constructor arguments}).

    ``flow_backend`` is no part of the network: it says how ours computes the flows (and flow targets) a batch
    does not bring, and the official module gets the same as ``flow_inputs``. The official cannot be built
    with ``num_stages`` other than 3 (its DBPN-S hard-codes three up-projection units) nor, with flow
    refinement, ``unet_width`` other than 64 (its U-Net's width is fixed): ValueError.
    """
    bound = inspect.signature(STARnet).bind(**{k: v for k, v in spec.items() if k != 'type'})
    bound.apply_defaults()
    args = bound.arguments
    if args['num_stages'] != 3:
        raise ValueError(f'the official STARnet has 3 DBPN-S stages (hard-coded), not num_stages={args["num_stages"]}')
    if args['flow_refinement'] and args['unet_width'] != 64:
        raise ValueError(f'the official flow-refinement U-Net is 64 wide (fixed), not unet_width={args["unet_width"]}')
    official_args = {k: args[k] for k in ('base_filter', 'feat', 'num_stages', 'n_resblock', 'scale_factor')}
    with official_import(root, 'starnet'):
        star = functools.partial(importlib.import_module('fbpn_sr_rbpn_v4').Net, pretrained=False)
        if args['flow_refinement']:
            refined = importlib.import_module('fbpn_sr_rbpn_v4_ref')
            refined.FBPNSR_RBPN_V4 = star
            net = refined.Net(**official_args)
        else:
            net = star(**official_args)
    net.flow_inputs = FlowInputs(args['flow_backend'])  # what ours' predict computes missing flows with
    return net


def pair_inputs(net, lq, extras):
    """(t_im1, t_im2, t_flow_f, t_flow_b), each (b * (n-1), c, h, w), of the n-1 adjacent pairs of each clip.

    lq (b, n, 3, h, w) in [0, 1]; ``extras['flows']`` (b, n-1, 2, h, w, 2) pixel flows (dim 2: forward
    flow(I_i -> I_i+1), backward flow(I_i+1 -> I_i)), computed by ``net.flow_inputs`` when absent.
    """
    flows = (extras or {}).get('flows')
    if flows is None:
        flows = net.flow_inputs(lq)['flows']
    return official_pair_inputs(lq, flows)


def forward(net, lq, extras):
    """lq (b, n, 3, h, w) in [0, 1], n >= 2, with ``extras['flows']`` as ours takes them (computed as ours
    computes them when absent) -> (b, 2n-1, 3, s*h, s*w), [0, 1] scale, unclamped: eval.py's call on every
    pair, assembled into the clip."""
    b, n = lq.shape[:2]
    ht, h1, h2, _ = net(*pair_inputs(net, lq, extras), train=False)
    return denormalise(assemble_clip(*(x.unflatten(0, (b, n - 1)) for x in (ht, h1, h2))))


def _pixel_term(stages, target):
    """mse_loss_calc: the L1 of the two stages against one target, weighted 0.4 and 1.0."""
    return sum(weight * F.l1_loss(pred, target) for weight, pred in zip(STAGE_WEIGHTS, stages))


def _feature_term(features, stages, target):
    """feat_loss_calc: the same weighting of the features' MSE, the target's features computed once."""
    target_features = features(target).detach()
    return sum(weight * F.mse_loss(features(pred), target_features) for weight, pred in zip(STAGE_WEIGHTS, stages))


def training_loss(net, lq, gt, extras, criterion=None, features=None):
    """main.py's objective (main_refinement_flow.py's with flow refinement) on every pair of the clips, the
    pairs in one batch: a scalar tensor; ``criterion`` is not used (the official objective is its own).

    lq (b, n, 3, h, w) and gt (b, 2n-1, 3, s*h, s*w) in [0, 1] (``training_batch``: the whole GT clip). Pair i
    is the official triplet gt[2i], gt[2i+1], gt[2i+2] (targets of h1, ht, h2), and its LR target (of l) is
    ours' ``lr_targets`` of gt[2i+1] (the official dataset's PIL bicubic, without its uint8 rounding).
    The flow term's targets, with flow refinement, are ``extras['flow_targets']`` (b, n-1, 2, 2, h, w) in
    official units, or ours' ``flow_targets`` with the backend of ``net.flow_inputs`` (the official dataset's
    get_flow(I_t, LR I_t+1/2) + get_flow(LR I_t+1/2, I_t+1), and the reverse). ``features``: main.py's VGG19
    feature extractor (ImageNet-normalised RGB -> features); without it the feature term is left out, as in
    ours' default (``perceptual: false``).
    """
    h, w = lq.shape[-2:]
    outputs = net(*pair_inputs(net, lq, extras), train=True)
    lq_mid = lr_targets(gt[:, 1::2], (h, w))
    targets = [normalise(x).flatten(0, 1) for x in (gt[:, 1::2], gt[:, 0:-1:2], gt[:, 2::2], lq_mid)]

    per_output = list(zip(TARGET_WEIGHTS, outputs[:4], targets))
    loss = sum(weight * _pixel_term(stages, target) for weight, stages, target in per_output)
    if features is not None:
        loss = loss + FEATURE_WEIGHT * sum(weight * _feature_term(features, stages, target)
                                           for weight, stages, target in per_output)
    if len(outputs) == 6:  # flow refinement: the refined flows follow
        flow_gt = (extras or {}).get('flow_targets')
        if flow_gt is None:
            flow_gt = flow_targets(lq, lq_mid, net.flow_inputs.backend)
        flow_gt = flow_gt.to(device=lq.device, dtype=lq.dtype).flatten(0, 1)
        loss = loss + FLOW_WEIGHT * (F.mse_loss(outputs[4], flow_gt[:, 0]) + F.mse_loss(outputs[5], flow_gt[:, 1]))
    return loss


def loader_extras(net, lq, gt):
    """The flow targets of a training batch, which the official ``DatasetFromFolderFlow`` computes in its loader
    (ours computes them in the training step unless the batch brings them); ``net`` is ours, whose flow backend
    computes them."""
    h, w = lq.shape[-2:]
    return {'flow_targets': flow_targets(lq, lr_targets(gt[:, 1::2], (h, w)), net.flow_backend)}
