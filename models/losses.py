"""Pixel losses on (b, t, c, h, w) predictions and targets, with ``reduction`` 'sum' or 'mean'.

The Zooming Slow-Mo family sums over every element of the batch ('sum'); its learning rates are
tuned for that, so the recipes keep it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.registry import Registry

LOSSES = Registry('loss')


def _reduce(x, reduction):
    if reduction == 'sum':
        return x.sum()
    if reduction == 'mean':
        return x.mean()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


@LOSSES.register()
class CharbonnierLoss(nn.Module):
    """sqrt((pred - target)^2 + eps): eps = 1e-6 as in ZSM (an effective epsilon of 1e-3)."""

    def __init__(self, eps=1e-6, reduction='sum'):
        super().__init__()
        _reduce(torch.zeros(1), reduction)
        self.eps, self.reduction = eps, reduction

    def forward(self, pred, target):
        return _reduce(torch.sqrt((pred - target) ** 2 + self.eps), self.reduction)


@LOSSES.register()
class L1Loss(nn.Module):
    def __init__(self, reduction='mean'):
        super().__init__()
        _reduce(torch.zeros(1), reduction)
        self.reduction = reduction

    def forward(self, pred, target):
        return F.l1_loss(pred, target, reduction=self.reduction)


@LOSSES.register()
class MSELoss(nn.Module):
    def __init__(self, reduction='mean'):
        super().__init__()
        _reduce(torch.zeros(1), reduction)
        self.reduction = reduction

    def forward(self, pred, target):
        return F.mse_loss(pred, target, reduction=self.reduction)
