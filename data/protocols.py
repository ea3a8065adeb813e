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
    triplet_middle  as septuplet, only the middle output scored: with n_inputs 2 on Vimeo triplets, inputs
                [0,2] and frame 1 (im2) scored, what STARnet's evaluate.m scores (one frame per clip)

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

A :class:`Protocol` bundles a protocol with its settings (the ``val:`` and ``test:`` options): it cuts any
clip into its windows. Inference on a clip without ground truth (``stream_windows``) uses the window7
windows of the output timeline at any time factor.
"""
import math
from dataclasses import dataclass
from fractions import Fraction

from utils.errors import DataError

WINDOW_PROTOCOLS = ('window7', 'zsm_legacy', 'septuplet', 'triplet_middle')
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
    if protocol in ('septuplet', 'triplet_middle'):
        if num_frames != length:
            raise DataError(f'{clip}: {num_frames} frames, protocol {protocol} expects exactly {length}')
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
        if protocol == 'triplet_middle':
            scored = (length // 2,)
        times = None if time_factor == 2 else tuple(i / time_factor for i in range(length))
        windows.append(Window(inputs=outputs[0::time_factor], outputs=outputs, scored=scored, times=times))
    return windows


@dataclass(frozen=True)
class Protocol:
    """How clips are scored: the protocol ``name`` (``PROTOCOLS``), LR frames per window, time factor, pixels
    cropped at each border before scoring, and how many clips are scored (0: all). Built from the ``val:`` or
    ``test:`` options, where the defaults live (``Protocol.from_options``)."""
    name: str
    n_inputs: int
    time_factor: int
    crop_border: int
    max_clips: int

    @classmethod
    def from_options(cls, section):
        return cls(section['protocol'], section['n_inputs'], section['time_factor'], section['crop_border'],
                   section['max_clips'])

    def windows(self, clip):
        """The windows of ``clip`` (a test sample: ``name``, ``lq``, ``gt``)."""
        if self.name == 'centre':
            return [centre_window(len(clip['lq']), clip['name'])]
        return make_windows(len(clip['gt']), self.name, self.n_inputs, clip['name'], self.time_factor)

    def clips(self, dataset):
        """How many clips of ``dataset`` are scored."""
        return min(len(dataset), self.max_clips) if self.max_clips else len(dataset)

    def describe(self):
        return self.name + (f' time x{self.time_factor}' if self.time_factor != 2 else '')


def output_count(num_inputs, time_factor=2):
    """Output frames for ``num_inputs`` input frames at ``time_factor``: floor((N-1) T) + 1, 2N-1 for T = 2."""
    return math.floor((num_inputs - 1) * Fraction(time_factor).limit_denominator(1000)) + 1


def stream_windows(num_inputs, time_factor=2, n_inputs=4):
    """The windows that upscale a clip of ``num_inputs`` frames without ground truth, in order.

    ``inputs`` are input frame indices (``n_inputs`` of them; a clip shorter than that repeats its last
    frame), ``outputs`` the output frames each window makes (output frame j is the instant j / T in input
    frames), ``times`` their instants relative to ``inputs[0]``, and ``scored`` all of them. The windows
    are window7's on the output timeline of a x2 clip (``make_windows(2N - 1, 'window7')``), at any
    ``time_factor`` T > 0 (a number or Fraction); an output frame two windows span comes from the first.
    """
    factor = Fraction(time_factor).limit_denominator(1000)
    if factor <= 0:
        raise ValueError(f'time factor must be > 0, got {time_factor}')
    if num_inputs < n_inputs:
        spans = [tuple(range(num_inputs)) + (num_inputs - 1,) * (n_inputs - num_inputs)]
    else:
        spans = [tuple(i // 2 for i in w.inputs) for w in make_windows(2 * num_inputs - 1, 'window7', n_inputs)]
    windows, done = [], -1
    for inputs in spans:
        last = min(inputs[-1], num_inputs - 1)
        outputs = tuple(range(max(done + 1, math.ceil(inputs[0] * factor)), math.floor(last * factor) + 1))
        if outputs:
            windows.append(Window(inputs, outputs, tuple(range(len(outputs))),
                                  tuple(float(j / factor - inputs[0]) for j in outputs)))
            done = outputs[-1]
    return windows
