"""Temporal-LIIF's official code (ggcr/Super-Temporal-LIIF @0253720, folder liif-3d) behind the adapter interface
of ``benchmarks.official``.

Built: ``liif-3d/liif.py::LIIF`` with encoder ``edsr-baseline`` (``no_upsampling: true``) and imnet ``mlp``
(out_dim 3), as ``configs/train-tfg-*.yaml`` configure it, through the official registry (``models.make``), with
the encoder depth and width, MLP sizes and decoding flags of our spec.

Import quirks handled here:

- ``liif-3d/models`` has no ``__init__.py`` (only a stray ``models/__pycache__/__init__.py``, which also
  imports a ``models/liif.py`` that is not there): a package module stands in for it, holding the registry
  functions of ``models/models.py`` that ``liif.py``, ``models/edsr.py`` and ``models/mlp.py`` take from
  ``models``; ``models.edsr`` and ``models.mlp`` are imported to register the two classes. Without the stand-in
  our own ``models`` package would be found: a regular package wins over a folder without ``__init__.py``.
- ``utils.py`` (imported by ``liif.py`` for ``make_coord``) imports ``tensorboardX`` for its training logs; when
  tensorboardX is not installed a stand-in module lets it import.
- ``query_rgb`` calls ``.cuda()`` on the unfolded features (built on the CPU by ``torch.empty``) and on the
  feature coordinates: during the official calls ``Tensor.cuda`` moves a tensor to the input's device instead
  (on a CUDA device that is the copy the official makes), so that the official code runs on the CPU too.

Called as the official scripts call it: input ``(x - 0.5) / 0.5`` as (b, 3, n, h, w) (``data_norm``), queries
(t, y, x) with cells (cell_t, 2/H, 2/W), outputs ``* 0.5 + 0.5``. Whole videos use the queries of ours
(``utils.coords.video_queries``: instants 0, 1/2, ..., n-1 at 4x, cell_t 2 as in demo.py), decoded like
test.py's ``batched_predict`` (features once, then ``query_rgb`` on ``QUERY_CHUNK`` queries at a time, demo.py's
``bsize``) without gradients, and by one ``forward`` call with them, as ours does.
"""
import importlib
import importlib.util
import inspect
import types
from pathlib import Path

import torch

from models.temporal_liif import TemporalLIIF
from utils.coords import video_queries

from . import cuda_calls_to, official_import

REPOSITORY = 'ggcr/Super-Temporal-LIIF'

QUERY_CHUNK = 30000  # demo.py: batched_predict(..., bsize=30000)
# liif.py's make_coord is float32 whatever the features are, and its grid_sample calls need both in one dtype
EQUALITY_DTYPE = torch.float32


def build(root, spec):
    """The official LIIF in the configuration of ``spec`` ({type: TemporalLIIF, **our constructor arguments}).

    ``root`` is the repository root; the code is in its ``liif-3d`` folder. ``local_ensemble: false`` is a
    ValueError: the official ``query_rgb`` fails with it (it unpacks four values into three names).
    """
    bound = inspect.signature(TemporalLIIF).bind(**{k: v for k, v in spec.items() if k != 'type'})
    bound.apply_defaults()
    args = bound.arguments
    if not args['local_ensemble']:
        raise ValueError('the official LIIF.query_rgb fails with local_ensemble=False; it has no such configuration')
    package = types.ModuleType('models')
    package.__path__ = [str(Path(root) / 'liif-3d' / 'models')]
    stand_ins = {'models': package}
    if importlib.util.find_spec('tensorboardX') is None:
        stand_ins['tensorboardX'] = types.SimpleNamespace(SummaryWriter=None)
    with official_import(Path(root) / 'liif-3d', 'temporal_liif', stand_ins):
        registry = importlib.import_module('models.models')
        package.register, package.make = registry.register, registry.make
        importlib.import_module('models.edsr')
        importlib.import_module('models.mlp')
        liif = importlib.import_module('liif')
        encoder = {'name': 'edsr-baseline', 'args': {'n_resblocks': args['n_resblocks'], 'n_feats': args['n_feats'],
                                                     'res_scale': args['res_scale'], 'no_upsampling': True}}
        imnet = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': list(args['hidden_list'])}}
        return liif.LIIF(encoder, imnet, local_ensemble=True, feat_unfold=args['feat_unfold'],
                         cell_decode=args['cell_decode'])




def forward(net, lq, extras):
    """What ours' ``predict(lq, extras)`` returns, from the official LIIF.

    lq (b, n, 3, h, w) in [0, 1]. With ``extras['coord']`` and ``extras['cell']`` (b, Q, 3) (the training
    queries of ``training_batch``): the official forward on them (train_liif.py), (b, Q, 3) in [0, 1].
    Otherwise the video at instants 0, 1/2, ..., n-1 and 4x the size, (b, 2n-1, 3, 4h, 4w), [0, 1] scale,
    unclamped. Features and queries follow the input's device.
    """
    extras = extras or {}
    inp = (lq.transpose(1, 2) - 0.5) / 0.5
    with cuda_calls_to(lq.device):
        if 'coord' in extras:
            return net(inp, extras['coord'], extras['cell']) * 0.5 + 0.5
        b, n, _, h, w = lq.shape
        times, size = [k / 2 for k in range(2 * n - 1)], (4 * h, 4 * w)
        coord, cell = video_queries(n, times, size, device=lq.device)
        coord, cell = coord.expand(b, -1, 3), cell.expand(b, -1, 3)
        if torch.is_grad_enabled():
            out = net(inp, coord, cell)
        else:
            net.gen_feat(inp)
            out = torch.cat([net.query_rgb(coord[:, i:i + QUERY_CHUNK], cell[:, i:i + QUERY_CHUNK])
                             for i in range(0, coord.shape[1], QUERY_CHUNK)], dim=1)
    return (out * 0.5 + 0.5).view(b, len(times), *size, 3).permute(0, 1, 4, 2, 3)


def training_loss(net, lq, gt, extras, criterion):
    """train_liif.py's objective on the batch ``training_batch`` makes: ``criterion`` (ours) between the
    official answers to the queries ``extras['coord']``, ``extras['cell']`` (b, Q, 3) and their GT colours
    ``gt`` (b, Q, 3), both in [0, 1]; without queries, between the whole video and gt (b, 2n-1, 3, 4h, 4w).

    The official L1Loss (mean) compares the (x - 0.5) / 0.5 values, which is twice criterion = L1 mean on
    [0, 1]: the scale is ours, as in ours' ``training_losses``.
    """
    return criterion(forward(net, lq, extras), gt)
