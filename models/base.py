"""The network interface: everything the trainer, evaluation, inference and benchmarks ask of a network.

Every registered network is a :class:`VideoNetwork`, a plain ``nn.Module`` whose ``forward`` keeps its
official signature (so official checkpoints and calls keep working) and which answers these questions;
the defaults fit a network whose ``forward`` already maps LR frames to ``2n - 1`` HR frames:

    predict(lq, extras)           (b, n, 3, h, w) in [0, 1] -> (b, 2n-1, 3, s*h, s*w), [0, 1] scale, unclamped:
                                  frames at instants 0, 1/2, 1, ..., n-1 (input-frame units)
    extra_inputs(cache_dir)       what the network needs besides the frames (optical flows), as a picklable
                                  callable ``lq -> {name: tensor}`` with the tuple of its names in ``keys``,
                                  which loader workers run (``models.flow.FlowInputs``); None if nothing
    render(lq, times, size)       frames at any instants and output size the network can answer
    check_factors(scale, time)    ValueError (one line) unless ``render`` answers that space / time factor
    configure_loss(**options)     ``train.network_loss``, checked and set once before training
    training_losses(lq, gt, extras, criterion) -> (pred, {name: loss}); the trainer minimises the sum
    training_batch(lq, gt)        a whole-frame pair as the batch this network trains on, for callers that
                                  have no dataset to make it (benchmarks, tests): (gt, extras)

and these attributes:

    scale          space factor of ``predict``
    size_multiple  LR sizes that are not a multiple of it are padded inside (and the output cropped back)
    any_time       ``render`` answers any instants between the input frames (continuous networks, TMNet)
    any_scale      ``render`` answers any output size (continuous networks)
    own_loss       ``training_losses`` computes the network's official objective and ignores ``criterion``
    official_init  how the official training started, when it did not start from scratch (the trainer warns
                   when a run starts from scratch without ``train.network_init``)

Loader-side inputs are computed once, in one place: ``extra_inputs()`` serves the loader workers, and
``predict`` calls the same object for whatever a batch does not bring (``inputs_for``).
"""
import torch
import torch.nn as nn


class VideoNetwork(nn.Module):
    """Base of every registered network; see the module docstring. Subclasses set ``scale`` (and the
    other attributes where they differ) in their constructor."""

    scale = 4
    size_multiple = 1
    registered_name = ''  # set by the registry
    any_time = False
    any_scale = False
    own_loss = False
    official_init = None

    @property
    def label(self):
        """The registry name (what options, tables and messages call the network)."""
        return self.registered_name or type(self).__name__

    def predict(self, lq, extras=None):
        return self(lq)

    def extra_inputs(self, cache_dir=None):
        return None

    def inputs_for(self, lq, extras=None):
        """``extras`` completed with what ``extra_inputs()`` makes and the batch lacks, on lq's device."""
        extras = dict(extras or {})
        prepare = self.extra_inputs()
        if prepare is not None and any(key not in extras for key in prepare.keys):
            extras.update(prepare(lq))
        return {k: v.to(lq.device) if torch.is_tensor(v) else v for k, v in extras.items()}

    def check_factors(self, scale=None, time_factor=None):
        """None means the network's own factor (``scale``, and 2 in time)."""
        name = self.label
        for what, value in (('scale', scale), ('time factor', time_factor)):
            if value is not None and not float(value) > 0:
                raise ValueError(f'{what} must be > 0, got {value:g}')
        if scale is not None and not self.any_scale and float(scale) != float(self.scale):
            raise ValueError(f'{name} upscales x{self.scale:g} in space only, not x{float(scale):g}; other '
                             'factors need a network with any_scale (TemporalLIIF, BicubicBlend)')
        if time_factor is not None and not self.any_time and float(time_factor) != 2:
            raise ValueError(f'{name} makes 2x the frames in time only, not x{float(time_factor):g}; other '
                             'factors need a network with any_time (TemporalLIIF, BicubicBlend)')

    def render(self, lq, times=None, size=None, chunk=None):
        """(b, n, 3, h, w) -> (b, m, 3, H, W) at the m ``times`` (input-frame units; default 0, 1/2, ..., n-1)
        and output ``size`` (default scale x). This default answers the frames ``predict`` makes: instants
        that are multiples of 1/2, at its own scale; any_time / any_scale networks override it. ``chunk`` is
        for networks that decode queries."""
        n, h, w = lq.shape[1], lq.shape[-2], lq.shape[-1]
        own = (round(self.scale * h), round(self.scale * w))
        if size is not None and tuple(size) != own:
            raise ValueError(f'{self.label} makes {own[1]}x{own[0]} frames from {w}x{h} (x{self.scale:g}), '
                             f'not {size[1]}x{size[0]}; other sizes need a network with any_scale')
        positions = list(range(2 * n - 1)) if times is None else [2 * tau for tau in times]
        bad = [p / 2 for p in positions if p != int(p) or not 0 <= p <= 2 * n - 2]
        if bad:
            raise ValueError(f'{self.label} makes the instants 0, 1/2, ..., {n - 1} of {n} input frames, '
                             f'not {bad[0]:g}; other instants need a network with any_time')
        out = self.predict(lq)
        return out if times is None else out[:, [int(p) for p in positions]]

    def configure_loss(self):
        """Networks with their own objective take its options here (``train.network_loss``)."""

    def training_losses(self, lq, gt, extras, criterion):
        pred = self.predict(lq, extras)
        return pred, {'pixel': criterion(pred, gt)}

    def training_batch(self, lq, gt):
        return gt, {}
