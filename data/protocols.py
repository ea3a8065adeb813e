"""Test protocols: which LR frames go into the network, which GT frames its outputs are, which are scored.

A network takes ``n_inputs`` LR frames and returns ``2 * n_inputs - 1`` HR frames (4 -> 7). Test clips keep
one LR frame per GT frame ("skip" mode of the official test scripts): a window of 7 consecutive GT frames
feeds its frames 0, 2, 4, 6 (the odd frames im1, im3, im5, im7) and all 7 outputs can be compared with GT.

``make_windows(num_frames, protocol)`` returns :class:`Window` objects; positions in ``scored`` index
``outputs``. For a 41-frame clip (Vid4 calendar) and n_inputs 4::

    window7     inputs [0,2,4,6] outputs 0..6 scored all 7; [6,8,10,12] outputs 6..12 scored 1..6; ...
                [30,..,36] scored 1..6; tail window [34,36,38,40] outputs 34..40 scored 3..6 (37..40)
                -> every frame scored exactly once (41 of 41)
    zsm_legacy  the same windows without the tail window -> frames 37..40 never scored (37 of 41)
    septuplet   exactly one 7-frame clip (Vimeo-90K test): inputs [0,2,4,6], all 7 scored

Clip lengths: windows of 2N-1 frames step by 2N-2 (6), sharing one frame, so a clip of length 1 + 6k
(e.g. foliage, 49) is tiled exactly. Any other length, even or odd, gets under window7 one last window
aligned to the clip end; it overlaps the previous one by more than a frame, its inputs are the clip's last
frame and every second frame before it (so they may be the even frames of the clip), and only its frames not
scored yet are scored. A frame shared by two windows is scored in the first (as the official scripts do).
A clip shorter than one window raises DataError naming the clip, its length and the minimum.

Other time factors (networks that upsample time by any factor, Temporal-LIIF): with ``time_factor`` T a
window spans (n_inputs - 1) * T + 1 GT frames, the inputs are every T-th of them, and the network answers
all of them (instants 0, 1/T, 2/T, .. in input-frame units). T = 4 with 4 inputs: windows of 13 frames,
inputs 0, 4, 8, 12. The tiling, tail window and scoring rules above are unchanged.

    centre      the official Temporal-LIIF test: all LR frames of the clip in, one output at the centre
                instant (n - 1) / 2, compared with the clip's single GT frame (Sentinel-2 revisits). Built
                by ``centre_window``.
"""
from dataclasses import dataclass

from .io import DataError

WINDOW_PROTOCOLS = ('window7', 'zsm_legacy', 'septuplet')
PROTOCOLS = WINDOW_PROTOCOLS + ('centre',)


@dataclass(frozen=True)
class Window:
    """inputs: LR frame indices fed to the network (n_inputs); outputs: the GT frame index of each network
    output (2 * n_inputs - 1, consecutive); scored: positions in ``outputs`` that are scored here."""
    inputs: tuple
    outputs: tuple
    scored: tuple
    times: tuple = None  # instants of the outputs in input-frame units; None: 0, 1/2, .., n - 1


def centre_window(num_inputs, clip='clip'):
    """Protocol ``centre``: every one of ``num_inputs`` LR frames in, GT frame 0 at instant (n - 1) / 2."""
    if num_inputs < 1:
        raise DataError(f'{clip}: no LR frames for protocol centre')
    return Window(inputs=tuple(range(num_inputs)), outputs=(0,), scored=(0,), times=((num_inputs - 1) / 2,))


def make_windows(num_frames, protocol, n_inputs=4, clip='clip', time_factor=2):
    """Windows covering a clip of ``num_frames`` GT frames under ``protocol`` (see module docstring)."""
    if protocol not in WINDOW_PROTOCOLS:
        raise ValueError(f'unknown test protocol {protocol!r} for clip windows; known: '
                         f'{", ".join(WINDOW_PROTOCOLS)} (centre: centre_window)')
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 2:
        raise ValueError(f'n_inputs must be an integer >= 2, got {n_inputs!r}')
    if isinstance(time_factor, bool) or not isinstance(time_factor, int) or time_factor < 1:
        raise ValueError(f'time_factor must be a positive integer, got {time_factor!r}')
    length = (n_inputs - 1) * time_factor + 1
    if num_frames < length:
        factor = f' and time factor {time_factor}' if time_factor != 2 else ''
        raise DataError(f'{clip}: {num_frames} frames, protocol {protocol} with {n_inputs} inputs{factor} needs at '
                        f'least {length}')
    if protocol == 'septuplet':
        if num_frames != length:
            raise DataError(f'{clip}: {num_frames} frames, protocol septuplet expects exactly {length}')
        starts = [0]
    else:
        starts = list(range(0, num_frames - length + 1, length - 1))
        if protocol == 'window7' and starts[-1] + length < num_frames:
            starts.append(num_frames - length)
    windows = []
    scored_frames = set()
    for start in starts:
        outputs = tuple(range(start, start + length))
        scored = tuple(i for i, frame in enumerate(outputs) if frame not in scored_frames)
        scored_frames.update(outputs)
        times = None if time_factor == 2 else tuple(i / time_factor for i in range(length))
        windows.append(Window(inputs=outputs[0::time_factor], outputs=outputs, scored=scored, times=times))
    return windows
