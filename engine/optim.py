"""Optimizers (any ``torch.optim`` class by name) and learning-rate schedules.

Schedules are closed-form functions of the iteration (a ``LambdaLR`` underneath), so resuming at
iteration N gives exactly the learning rate an uninterrupted run has there.
"""
import bisect
import math

import torch

from utils.registry import Registry

SCHEDULERS = Registry('scheduler')


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@SCHEDULERS.register()
class CosineAnnealingRestart:
    """Cosine annealing with warm restarts, the recipe of the Zooming Slow-Mo family.

    The iterations are cut into ``periods`` (e.g. 4 x 150k); in period i the lr falls from
    ``restart_weights[i] * base_lr`` to ``eta_min`` along half a cosine. Past the last period it
    stays at ``eta_min``.
    """

    def __init__(self, base_lr, periods=(150000, 150000, 150000, 150000), restart_weights=(1.0, 1.0, 1.0, 1.0),
                 eta_min=1e-7):
        if not periods or not all(_positive_int(p) for p in periods):
            raise ValueError(f'periods must be a non-empty list of positive iteration counts, got {list(periods)}')
        if not all(_finite(w) and w >= 0 for w in restart_weights):
            raise ValueError(f'restart_weights must be numbers >= 0, got {list(restart_weights)}')
        if not (_finite(eta_min) and eta_min >= 0):
            raise ValueError(f'eta_min must be a number >= 0, got {eta_min!r}')
        if len(periods) != len(restart_weights):
            raise ValueError(f'periods ({len(periods)}) and restart_weights ({len(restart_weights)}) '
                             'must have the same length')
        self.base_lr, self.periods, self.weights, self.eta_min = base_lr, list(periods), list(restart_weights), eta_min
        self.ends = [sum(self.periods[:i + 1]) for i in range(len(self.periods))]

    def mismatch(self, total_iter):
        """Why the schedule does not fit a run of ``total_iter`` iterations, or None."""
        if self.ends[-1] != total_iter:
            return (f'its periods add up to {self.ends[-1]} iterations, the run has {total_iter}: the learning rate '
                    + ('stays at eta_min after' if self.ends[-1] < total_iter else 'never reaches eta_min before')
                    + ' the end')
        return None

    def __call__(self, it):
        i = bisect.bisect_right(self.ends, it)
        if i == len(self.periods):
            return self.eta_min / self.base_lr
        start = self.ends[i] - self.periods[i]
        cos = 0.5 * (1 + math.cos(math.pi * (it - start) / self.periods[i]))
        return (self.eta_min + self.weights[i] * (self.base_lr - self.eta_min) * cos) / self.base_lr


@SCHEDULERS.register()
class MultiStepLR:
    """lr = base_lr * gamma ** (number of milestones <= iteration)."""

    def __init__(self, base_lr, milestones=(), gamma=0.1):
        if not all(_positive_int(m) for m in milestones):
            raise ValueError(f'milestones must be positive iteration counts, got {list(milestones)}')
        if not (_finite(gamma) and gamma > 0):
            raise ValueError(f'gamma must be a number > 0, got {gamma!r}')
        self.milestones, self.gamma = sorted(milestones), gamma

    def mismatch(self, total_iter):
        late = [m for m in self.milestones if m >= total_iter]
        return f'milestones {late} lie at or past the run\'s {total_iter} iterations' if late else None

    def __call__(self, it):
        return self.gamma ** bisect.bisect_right(self.milestones, it)


@SCHEDULERS.register()
class ConstantLR:
    """A fixed learning rate."""

    def __init__(self, base_lr):
        pass

    def mismatch(self, total_iter):
        return None

    def __call__(self, it):
        return 1.0


def build_optimizer(params, spec):
    kwargs = {k: v for k, v in spec.items() if k != 'type'}
    if 'betas' in kwargs:
        kwargs['betas'] = tuple(kwargs['betas'])
    return getattr(torch.optim, spec['type'])(params, **kwargs)


def build_scheduler(optimizer, spec, warmup_iter=0):
    """A LambdaLR whose factor at iteration ``it`` is the named schedule times a linear warm-up."""
    base_lr = optimizer.param_groups[0]['lr']
    schedule = SCHEDULERS.build(spec, base_lr=base_lr)

    def factor(it):
        warm = min(1.0, (it + 1) / warmup_iter) if warmup_iter else 1.0
        return warm * schedule(it)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def schedule_mismatch(spec, total_iter):
    """Why the schedule ``spec`` does not fit a run of ``total_iter`` iterations (a warning), or None."""
    return SCHEDULERS.build(spec, base_lr=1.0).mismatch(total_iter)
