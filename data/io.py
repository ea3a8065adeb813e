"""Reading and writing frames, list files and folders of frames.

Frames are numpy arrays ``(H, W, 3)``, RGB, with the dtype they are stored with: ``uint8`` for 8-bit files,
``uint16`` for 16-bit PNG/TIFF (satellite data such as Jilin-1 is often 12-bit values stored in 16-bit files).
Every problem with an input file raises :class:`DataError` with one line naming the file and what was expected;
the command-line tools map it to exit code 2.
"""
import contextlib
import os
import re
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from utils.errors import DataError

IMAGE_EXTENSIONS = ('.png', '.tif', '.tiff', '.jpg', '.jpeg', '.bmp')




def read_image(path):
    """Read one frame as RGB ``(H, W, 3)``, ``uint8`` or ``uint16`` as stored.

    Grayscale frames are replicated to 3 channels and an alpha channel is dropped, so every loader sees RGB.
    Corrupt and truncated files raise :class:`DataError` (a PNG's chunks are checked before decoding, so a
    half-copied file cannot pass as a valid frame).
    """
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)  # imread cannot open some non-ASCII paths; imdecode can
    except OSError as err:
        raise DataError(f'{path}: cannot read file ({err.strerror})') from None
    problem = _png_problem(buffer)
    if problem:
        raise DataError(f'{path}: not a readable image ({problem})')
    img = _decode_quietly(buffer) if buffer.size else None
    if img is None:
        raise DataError(f'{path}: not a readable image (corrupt, truncated or unsupported format)')
    if img.dtype not in (np.uint8, np.uint16):
        raise DataError(f'{path}: expected 8- or 16-bit integer pixels, got {img.dtype}')
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise DataError(f'{path}: expected 1, 3 or 4 channels, got {img.shape[2]}')
    return img


def _decode_quietly(buffer):
    """``cv2.imdecode`` without OpenCV's own log lines on stderr (the caller raises one DataError instead)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _png_problem(buffer):
    """Why the bytes of a PNG file cannot be a whole image (truncated, or a critical chunk whose CRC is
    wrong), or None; also None for other formats.

    libpng and OpenCV print their own complaints about such files straight to stderr, beside the one-line
    DataError, so the chunk structure is checked here before decoding.
    """
    data = memoryview(buffer)
    if bytes(data[:8]) != _PNG_SIGNATURE:
        return None
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], 'big')
        end = pos + 12 + length
        if end > len(data):
            break
        kind = bytes(data[pos + 4:pos + 8])
        # Critical chunks (IHDR, PLTE, IDAT, IEND) have an upper-case first letter; libpng only warns about
        # ancillary ones.
        if kind[:1].isupper() and zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], 'big'):
            return f'corrupt PNG: CRC mismatch in its {kind.decode("latin-1")} chunk at byte {pos}'
        if kind == b'IEND':
            return None
        pos = end
    return f'truncated PNG: the file ends after {len(data)} bytes, before its IEND chunk'


def max_value(dtype, bit_depth=None):
    """The white level: ``2**bit_depth - 1`` when given, else the dtype's maximum (255 or 65535)."""
    if bit_depth is not None:
        return 2 ** int(bit_depth) - 1
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise DataError(f'expected uint8 or uint16 frames, got {dtype}')
    return np.iinfo(dtype).max


def to_float(img, bit_depth=None):
    """Integer frame -> float32 in [0, 1], divided by the white level.

    A 16-bit file holding 12-bit values (0..4095) is divided by 65535 by default, because nothing in a PNG
    says how many bits are used; pass ``bit_depth=12`` to divide by 4095 instead (values above it are clipped).
    """
    white = max_value(img.dtype, bit_depth)
    out = img.astype(np.float32) / np.float32(white)
    return np.clip(out, 0, 1, out=out) if bit_depth is not None else out


def to_integer(img, dtype=np.uint8, bit_depth=None):
    """Float frame in [0, 1] -> rounded integer frame, the inverse of :func:`to_float`."""
    white = max_value(dtype, bit_depth)
    return np.round(np.clip(img, 0, 1) * white).astype(dtype)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def publish(path, directory=False):
    """Give a file (or folder) made by ``tempfile`` (mode 0600 / 0700) the mode a plain ``open`` (or
    ``mkdir``) would have given it under the process's umask, before it is renamed into place."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


def check_writable(path):
    """DataError unless ``path`` (a file or folder, existing or not) can be created or replaced: the nearest
    existing folder above it must be a folder this process may write. Checked before work that would
    otherwise be lost at the end."""
    path = Path(path).absolute()
    for parent in [path, *path.parents]:
        if parent.exists():
            break
    if parent == path and path.is_dir():
        parent = path
    elif parent == path:
        parent = path.parent
    if not parent.is_dir():
        raise DataError(f'{path}: cannot be written, {parent} is a file, not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f'{path}: cannot be written, {parent} is not writable')


def write_image(path, img):
    """Write an RGB ``uint8``/``uint16`` frame atomically (a temporary file in the same folder, then rename).

    A killed job therefore never leaves a truncated frame behind that a later run would skip as done.
    """
    path = Path(path)
    if img.dtype not in (np.uint8, np.uint16) or img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f'{path}: expected an (H, W, 3) uint8/uint16 RGB frame, got {img.shape} {img.dtype}')
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f'{path}: OpenCV cannot encode {img.dtype} frames as {path.suffix!r}')
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + path.name, suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(encoded.tobytes())
        publish(tmp)
        os.replace(tmp, path)
    except BaseException:  # a signal raised (engine.cli) just after the rename finds no temporary file left
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def natural_key(name):
    """Sort key that compares digit runs as numbers: ``Frame 2.png`` < ``Frame 10.png`` == order in time."""
    return [(0, int(part), '') if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r'(\d+)', str(name)) if part]


def natural_sort(names):
    """Sort names (or paths, by their full string) naturally; see :func:`natural_key`."""
    return sorted(names, key=natural_key)


def list_images(folder):
    """The image files directly in ``folder``, naturally sorted; hidden and temporary files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f'{folder}: frame folder not found')
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith('.') and p.is_file()]
    return natural_sort_paths(files)


def natural_sort_paths(paths):
    """Sort paths naturally by file name (the frame number), not by the folder they sit in."""
    return sorted(paths, key=lambda p: natural_key(Path(p).name))


def read_list(path):
    """Read a list file: one clip key per line (e.g. ``00001/0001``); blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: list file not found')
    keys = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                keys.append(line)
    if not keys:
        raise DataError(f'{path}: list file names no clips')
    return keys


def folder_exists(root):
    """``key -> (root / key).is_dir()``, answered from one listing per parent folder: checking the 64,612 keys
    of Vimeo-90K's training list takes about 100 directory listings instead of 64,612 file-system calls."""
    root = Path(root)
    listings = {}

    def exists(key):
        path = root / key
        if path.name in ('', '.', '..'):
            return path.is_dir()
        if path.parent not in listings:
            try:
                with os.scandir(path.parent) as entries:
                    listings[path.parent] = {e.name for e in entries if e.is_dir()}
            except OSError:  # no such folder, or not a folder
                listings[path.parent] = set()
        return path.name in listings[path.parent]
    return exists


def keep_existing(keys, exists, source, skip_missing, logger, can_skip=True):
    """Check that every listed clip exists: the keys for which ``exists(key)`` is true.

    Missing clips raise one DataError naming ``source`` (the list file or root), the count and the first
    few, unless ``skip_missing`` is set, in which case they are dropped and the drop is logged. The error
    advises ``skip_missing`` only for datasets that take it (``can_skip``).
    """
    found = [exists(k) for k in keys]
    kept = [k for k, ok in zip(keys, found) if ok]
    missing = [k for k, ok in zip(keys, found) if not ok]
    if missing and not skip_missing:
        advice = 'fix the paths or set skip_missing: true to use the rest' if can_skip else 'fix the paths or the list'
        raise DataError(f'{source}: {len(missing)} of {len(keys)} listed clips not found (first: '
                        f'{", ".join(missing[:3])}); {advice}')
    if missing:
        logger.warning('%s: skipped %d of %d listed clips not found (first: %s)', source, len(missing),
                       len(keys), ', '.join(missing[:3]))
    if not kept:
        raise DataError(f'{source}: none of the {len(keys)} listed clips exists')
    return kept


def iter_frames(paths, what='clip'):
    """Read frames one at a time; they must share one size and dtype, and a frame whose size or bit depth
    differs from the first raises :class:`DataError` naming that frame."""
    first = None
    for path in paths:
        img = read_image(path)
        if first is None:
            first = img
        elif img.shape != first.shape or img.dtype != first.dtype:
            raise DataError(f'{path}: frame is {img.shape[1]}x{img.shape[0]} {img.dtype}, but the first frame '
                            f'of {what} ({Path(paths[0]).name}) is {first.shape[1]}x{first.shape[0]} {first.dtype}')
        yield img


def read_frames(paths, what='clip'):
    """Read frames that must share one size and dtype (:func:`iter_frames`); returns ``(T, H, W, 3)``."""
    frames = list(iter_frames(paths, what))
    if not frames:
        raise DataError(f'{what}: no frames')
    return np.stack(frames)
