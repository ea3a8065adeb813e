"""Frame accounting of the test protocols (data/protocols.py) on the real Vid4 clip lengths."""
import pytest

from data.io import list_images
from data.protocols import WINDOW_PROTOCOLS, make_windows
from tests.conftest import require
from utils.errors import DataError

VID4 = {'calendar': 41, 'city': 34, 'foliage': 49, 'walk': 47}
ZSM_SCORED = {'calendar': 37, 'city': 31, 'foliage': 49, 'walk': 43}  # spec section 1, "Test"


def scored_frames(windows):
    return [w.outputs[i] for w in windows for i in w.scored]


@pytest.fixture(scope='module')
def vid4_lengths():
    return {clip: len(list_images(require(f'Vid4/GT/{clip}'))) for clip in VID4}


def test_real_vid4_lengths(vid4_lengths):
    assert vid4_lengths == VID4


@pytest.mark.parametrize('protocol', ['window7', 'zsm_legacy'])
def test_windows_are_seven_consecutive_frames_with_odd_frames_as_inputs(vid4_lengths, protocol):
    for length in vid4_lengths.values():
        for w in make_windows(length, protocol):
            assert w.outputs == tuple(range(w.outputs[0], w.outputs[0] + 7))
            assert w.inputs == w.outputs[0::2] and len(w.inputs) == 4
            assert 0 <= w.outputs[0] and w.outputs[-1] < length


def test_window7_scores_every_frame_exactly_once(vid4_lengths):
    for length in vid4_lengths.values():
        assert sorted(scored_frames(make_windows(length, 'window7'))) == list(range(length))


def test_zsm_legacy_drops_the_tail_like_the_official_script(vid4_lengths):
    per_clip = {clip: scored_frames(make_windows(n, 'zsm_legacy')) for clip, n in vid4_lengths.items()}
    assert {clip: len(frames) for clip, frames in per_clip.items()} == ZSM_SCORED
    assert sum(map(len, per_clip.values())) == 160
    for clip, frames in per_clip.items():
        assert frames == list(range(ZSM_SCORED[clip]))  # a prefix, each frame once


def test_overlap_frame_is_scored_in_the_earlier_window():
    first, second = make_windows(13, 'window7')
    assert first.outputs[-1] == second.outputs[0] == 6
    assert 6 in first.scored and 0 not in second.scored


def test_window7_tail_window_is_aligned_to_the_clip_end():
    tail = make_windows(41, 'window7')[-1]
    assert tail.outputs == tuple(range(34, 41)) and tail.inputs == (34, 36, 38, 40)
    assert [tail.outputs[i] for i in tail.scored] == [37, 38, 39, 40]
    assert len(make_windows(49, 'window7')) == len(make_windows(49, 'zsm_legacy')) == 8  # 49 = 1 + 6k


def test_septuplet_feeds_odd_frames_and_scores_all_seven():
    (w,) = make_windows(7, 'septuplet')
    assert w.inputs == (0, 2, 4, 6) and w.outputs == tuple(range(7)) and w.scored == tuple(range(7))
    with pytest.raises(DataError, match='exactly 7'):
        make_windows(8, 'septuplet', clip='00001/0001')


def test_other_n_inputs():
    windows = make_windows(10, 'window7', n_inputs=2)
    assert [w.outputs for w in windows] == [(0, 1, 2), (2, 3, 4), (4, 5, 6), (6, 7, 8), (7, 8, 9)]
    assert sorted(scored_frames(windows)) == list(range(10))


@pytest.mark.parametrize('protocol', WINDOW_PROTOCOLS)
def test_too_short_clip_names_clip_count_and_minimum(protocol):
    with pytest.raises(DataError) as err:
        make_windows(5, protocol, clip='walk')
    assert str(err.value).startswith('walk: 5 frames') and 'at least 7' in str(err.value)


def test_unknown_protocol():
    with pytest.raises(ValueError, match='window7'):
        make_windows(41, 'all')
