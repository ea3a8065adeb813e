"""How the trainer and tester call a network: one small function per network class.

Every network keeps its official ``forward`` signature (so official checkpoints and calls work);
an adapter maps the toolbox's clip tensors onto it:

    predict(net, lq, extras) -> (b, 2n-1, 3, s*h, s*w) in [0, 1]

with ``lq`` (b, n, 3, h, w) in [0, 1] and ``extras`` the other tensors of a training batch
(e.g. precomputed optical flows), empty at test time. Networks whose forward already has this
signature need no adapter.
"""

import torch.nn as nn

ADAPTERS = {}
LOSS_HOOKS = {}


def register_adapter(cls):
    def decorator(fn):
        ADAPTERS[cls] = fn
        return fn
    return decorator


def unwrap(net):
    """The network inside torch.compile (``_orig_mod``) and DistributedDataParallel (``module``) wrappers."""
    while True:
        inner = getattr(net, '_orig_mod', None) or getattr(net, 'module', None)
        if not isinstance(inner, nn.Module):
            return net
        net = inner


def predict(net, lq, extras=None):
    module = unwrap(net)
    fn = ADAPTERS.get(type(module))
    if fn is None:
        return net(lq)
    return fn(net, lq, extras or {})


def register_loss_hook(cls):
    """Register ``fn(net, lq, gt, extras, **options) -> (pred, {name: loss})`` as ``cls``'s training loss.

    For networks trained on more than their 2n-1 output frames (STARnet's deep supervision of two
    stages and of the LR middle frame). Hook losses are means over the batch; the trainer minimises
    their sum and does not use ``train.loss``.
    """
    def decorator(fn):
        LOSS_HOOKS[cls] = fn
        return fn
    return decorator


def loss_hook(net):
    return LOSS_HOOKS.get(type(unwrap(net)))


def training_losses(net, lq, gt, extras, criterion, options=None):
    """The losses of one training step: ``(pred, {name: loss})``; the trainer minimises their sum.

    ``criterion(pred, gt)`` on the adapter's prediction, unless the network registered a loss hook,
    which then gets ``options`` (``train.network_loss``) as keyword arguments.
    """
    hook = loss_hook(net)
    if hook is None:
        pred = predict(net, lq, extras)
        return pred, {'pixel': criterion(pred, gt)}
    return hook(net, lq, gt, extras, **(options or {}))
