"""How the trainer and tester call a network: one small function per network class.

Every network keeps its official ``forward`` signature (so official checkpoints and calls work);
an adapter maps the toolbox's clip tensors onto it:

    predict(net, lq, extras) -> (b, 2n-1, 3, s*h, s*w) in [0, 1]

with ``lq`` (b, n, 3, h, w) in [0, 1] and ``extras`` the other tensors of a training batch
(e.g. precomputed optical flows), empty at test time. Networks whose forward already has this
signature need no adapter.
"""

ADAPTERS = {}


def register_adapter(cls):
    def decorator(fn):
        ADAPTERS[cls] = fn
        return fn
    return decorator


def predict(net, lq, extras=None):
    module = getattr(net, 'module', net)  # DistributedDataParallel wraps the network
    fn = ADAPTERS.get(type(module))
    if fn is None:
        return net(lq)
    return fn(net, lq, extras or {})
