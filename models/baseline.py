"""The non-learned floor every results table carries."""
import torch

from utils.resize import imresize_torch

from .base import VideoNetwork
from .registry import NETWORKS


@NETWORKS.register()
class BicubicBlend(VideoNetwork):
    """MATLAB-style bicubic upscaling of each input frame, linear blending for the missing frames.

    forward(lq) -> out
        lq  (b, n, c, h, w) in [0, 1]
        out (b, 2n-1, c, scale*h, scale*w): even positions are the upscaled inputs, odd positions
            the mean of their two neighbours (the frame halfway in time, without motion).
    With ``time_factor`` T other than 2 (the any-factor tables of Temporal-LIIF) there are (n-1)T+1
    outputs, output k T + f being (1 - f/T) input k + (f/T) input k+1. ``scale`` may be any factor > 0
    (sizes ceil(scale * h), as MATLAB's imresize).
    ``render(lq, times, size)`` answers any instants and any output size the same way (the baseline of
    the any-factor tables and of protocol ``centre``).
    It has no parameters; the trainer refuses to train it, the tester scores it like any network.
    """

    def __init__(self, scale=4, time_factor=2):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float('inf'):
            raise ValueError(f'scale must be a positive number, got {scale!r}')
        if isinstance(time_factor, bool) or not isinstance(time_factor, int) or time_factor < 1:
            raise ValueError(f'time_factor must be a positive integer, got {time_factor!r}')
        self.scale, self.time_factor = scale, time_factor

    def forward(self, lq):
        n, factor = lq.shape[1], self.time_factor
        return self.render(lq, [i / factor for i in range((n - 1) * factor + 1)])

    any_time = any_scale = True

    def render(self, lq, times=None, size=None, chunk=None):
        """lq (b, n, c, h, w) -> (b, m, c, H, W): instant tau (input-frame units, 0 <= tau <= n-1) is up[tau]
        at an input instant, else (1 - a) up[k] + a up[k+1] with k = floor(tau), a = tau - k; each input frame
        MATLAB-bicubic resized to ``size`` (default: by ``scale``, as ``forward``). ``chunk`` is unused."""
        n = lq.shape[1]
        times = [i / 2 for i in range(2 * n - 1)] if times is None else list(times)
        up = imresize_torch(lq, self.scale) if size is None else imresize_torch(lq, size=tuple(size))
        frames = []
        for tau in times:
            if not 0 <= tau <= n - 1:
                raise ValueError(f'instant {tau} outside the {n} input frames [0, {n - 1}]')
            k = int(tau)
            a = tau - k
            frames.append(up[:, k] if a == 0 else (1 - a) * up[:, k] + a * up[:, k + 1])
        return torch.stack(frames, dim=1)
