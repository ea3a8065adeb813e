"""Frame reading/writing, list files and natural sort (data/io.py)."""
import logging
import os

import cv2
import numpy as np
import pytest

import data.io
from data.io import folder_exists, keep_existing, list_images, natural_sort, read_frames
from data.io import read_image, read_list, to_float, write_image
from tests.conftest import require
from utils.errors import DataError


def test_reads_16bit_png_as_rgb_uint16(tmp_path):
    bgr = np.zeros((5, 6, 3), np.uint16)
    bgr[..., 0], bgr[..., 2] = 1000, 65535  # blue, red as stored by OpenCV
    cv2.imwrite(str(tmp_path / 'f.png'), bgr)
    img = read_image(tmp_path / 'f.png')
    assert img.dtype == np.uint16 and img.shape == (5, 6, 3)
    assert img[0, 0].tolist() == [65535, 0, 1000]
    assert to_float(img)[0, 0, 0] == 1.0
    assert to_float(img, bit_depth=12)[0, 0, 2] == pytest.approx(1000 / 4095)


def test_reads_16bit_tiff_grayscale_and_rgba(tmp_path):
    gray = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    cv2.imwrite(str(tmp_path / 'g.tif'), gray)
    img = read_image(tmp_path / 'g.tif')
    assert img.shape == (3, 4, 3) and img.dtype == np.uint16
    assert (img == gray[..., None]).all()
    bgra = np.dstack([np.full((2, 2), v, np.uint8) for v in (10, 20, 30, 40)])
    cv2.imwrite(str(tmp_path / 'a.png'), bgra)
    assert read_image(tmp_path / 'a.png')[0, 0].tolist() == [30, 20, 10]


def test_to_float_scales_by_dtype_and_clips_above_bit_depth():
    out = to_float(np.array([[[255, 0, 51]]], np.uint8))
    assert out.dtype == np.float32 and np.allclose(out, [[[1.0, 0.0, 0.2]]])
    assert to_float(np.array([[[5000, 4095, 0]]], np.uint16), bit_depth=12).tolist() == [[[1.0, 1.0, 0.0]]]


@pytest.mark.parametrize('content', [b'', b'not an image at all', 'truncated'])
def test_corrupt_or_truncated_png_is_a_one_line_error_naming_the_file(tmp_path, content):
    good = tmp_path / 'good.png'
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    bad = tmp_path / 'Frame 007.png'
    bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2] if content == 'truncated' else content)
    with pytest.raises(DataError) as err:
        read_image(bad)
    assert str(bad) in str(err.value) and '\n' not in str(err.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match='nope.png'):
        read_image(tmp_path / 'nope.png')


def test_write_image_round_trips_and_leaves_no_temporary_file(tmp_path):
    img = np.random.default_rng(1).integers(0, 65535, (7, 5, 3), dtype=np.uint16)
    write_image(tmp_path / 'sub' / 'x.png', img)
    assert (read_image(tmp_path / 'sub' / 'x.png') == img).all()
    assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['x.png']
    with pytest.raises(DataError, match='y.png'):
        write_image(tmp_path / 'y.png', img.astype(np.float32))


@pytest.mark.parametrize('after_rename', [False, True])
def test_a_signal_during_write_image_propagates_and_leaves_no_temporary_file(tmp_path, monkeypatch, after_rename):
    """A stop request raised (as engine.cli's signal handler raises it) just before or just after the rename
    reaches the caller as itself, with no temporary file left (after the rename the frame is complete)."""
    img = np.zeros((4, 6, 3), np.uint8)
    rename = os.replace

    def interrupted_replace(src, dst):
        if after_rename:
            rename(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(data.io.os, 'replace', interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / 'x.png', img)
    assert [p.name for p in tmp_path.iterdir()] == (['x.png'] if after_rename else [])


def test_natural_sort_orders_by_frame_number():
    names = ['Frame 10.png', 'Frame 2.png', 'Frame 1.png', 'Frame 100.png']
    assert natural_sort(names) == ['Frame 1.png', 'Frame 2.png', 'Frame 10.png', 'Frame 100.png']
    assert sorted(names) != natural_sort(names)


@pytest.mark.parametrize('clip, count', [('calendar', 41), ('city', 34), ('foliage', 49), ('walk', 47)])
def test_natural_sort_on_real_vid4_names(clip, count):
    frames = list_images(require(f'Vid4/GT/{clip}'))
    numbers = [int(p.stem.split()[-1]) for p in frames]
    assert numbers == list(range(1, count + 1))


def test_natural_sort_handles_unpadded_names_like_vid4_would(tmp_path):
    for i in (1, 2, 9, 10, 11):
        (tmp_path / f'Frame {i}.png').write_bytes(b'')
    assert [p.name for p in list_images(tmp_path)] == [f'Frame {i}.png' for i in (1, 2, 9, 10, 11)]


def test_read_list_skips_blanks_and_comments(tmp_path):
    path = tmp_path / 'list.txt'
    path.write_text('00001/0001\n\n# a comment\n00001/0002  \n')
    assert read_list(path) == ['00001/0001', '00001/0002']
    path.write_text('\n\n')
    with pytest.raises(DataError, match='names no clips'):
        read_list(path)


def test_keep_existing_names_first_missing_and_count(tmp_path, caplog):
    import logging
    keys = ['a', 'gone1', 'b', 'gone2', 'gone3', 'gone4']
    exists = {'a', 'b'}.__contains__
    with pytest.raises(DataError) as err:
        keep_existing(keys, exists, 'my_list.txt', False, logging.getLogger('t'))
    message = str(err.value)
    assert 'my_list.txt' in message and '4 of 6' in message and 'gone1' in message and 'gone4' not in message
    with caplog.at_level(logging.WARNING):
        assert keep_existing(keys, exists, 'my_list.txt', True, logging.getLogger('t')) == ['a', 'b']
    assert 'skipped 4 of 6' in caplog.text


def test_folder_exists_answers_as_is_dir(tmp_path):
    for folder in ('00001/0001', '00001/0002', '00002/0001', 'deep/er/still'):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / '00001' / 'afile').write_text('x')
    (tmp_path / '00001' / 'link').symlink_to(tmp_path / '00002' / '0001')
    (tmp_path / '00001' / 'dangling').symlink_to(tmp_path / 'nowhere')
    keys = ['00001/0001', '00001/0002', '00001/0003', '00002/0001', '00003/0001', '00001/afile', '00001/afile/x',
            '00001/link', '00001/dangling', 'deep/er/still', 'deep/er', 'deep', '00001/0001/', '00001/..', '.', '',
            str(tmp_path / '00002' / '0001'), '00001//0002']
    exists = folder_exists(tmp_path)
    assert [exists(k) for k in keys] == [(tmp_path / k).is_dir() for k in keys]
    assert keep_existing(keys[:5], folder_exists(tmp_path), 'l', True, logging.getLogger('t')) == \
        ['00001/0001', '00001/0002', '00002/0001']


def test_read_frames_names_the_frame_of_another_size(tmp_path):
    for i, shape in enumerate([(8, 8, 3), (8, 8, 3), (8, 10, 3)]):
        cv2.imwrite(str(tmp_path / f'{i}.png'), np.zeros(shape, np.uint8))
    with pytest.raises(DataError) as err:
        read_frames(list_images(tmp_path), what='clipA')
    assert str(tmp_path / '2.png') in str(err.value) and '10x8' in str(err.value)


def test_read_frames_names_a_frame_of_another_bit_depth(tmp_path):
    cv2.imwrite(str(tmp_path / '0.png'), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / '1.png'), np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(DataError, match='1.png.*uint16'):
        read_frames(list_images(tmp_path))
