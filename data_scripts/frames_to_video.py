"""Encode a folder of frames (e.g. a model's outputs) into a video file.

    python data_scripts/frames_to_video.py results/calendar calendar.mp4 --fps 25

Frames are taken in natural order (``Frame 2.png`` before ``Frame 10.png``) and must all have one size
(DataError naming the first odd frame). 16-bit frames are reduced to 8 bits (video codecs here are 8-bit).
The codec is OpenCV's ``mp4v`` for .mp4/.mov and ``MJPG`` for .avi unless --fourcc says otherwise. An
existing output is kept unless --overwrite is given. Exit codes: 0 done, 2 bad input.
"""
import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from data.io import list_images, read_image  # noqa: E402
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError

FOURCC = {'.mp4': 'mp4v', '.mov': 'mp4v', '.avi': 'MJPG', '.mkv': 'mp4v'}


def read_bgr8(path):
    """Worker: one frame as 8-bit BGR, what cv2.VideoWriter takes."""
    img = read_image(path)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('frames', type=Path, help='folder of frames')
    parser.add_argument('output', type=Path, help='video file to write (.mp4, .avi, .mov, .mkv)')
    parser.add_argument('--fps', type=float, default=25.0, help='frames per second (default 25)')
    parser.add_argument('--fourcc', help='four-character codec code (default by extension)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--workers', type=int, default=2, help='processes reading frames (default 2; 0 = none)')
    args = parser.parse_args(argv)

    if args.output.exists() and not args.overwrite:
        print(f'{args.output} exists; nothing to do (--overwrite to replace it)')
        return 0
    paths = list_images(args.frames)
    if not paths:
        raise DataError(f'{args.frames}: no frames')
    fourcc = args.fourcc or FOURCC.get(args.output.suffix.lower())
    if fourcc is None or len(fourcc) != 4:
        raise DataError(f'{args.output}: unknown container; use one of {", ".join(FOURCC)} or give --fourcc')
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f'.{args.output.stem}.tmp{args.output.suffix}')  # FFmpeg picks the muxer by extension
    writer = None
    pool = Pool(args.workers) if args.workers > 0 else None
    try:
        frames = pool.imap(read_bgr8, paths, chunksize=4) if pool else map(read_bgr8, paths)
        for path, frame in zip(paths, progress(frames, total=len(paths), unit='frame')):
            if writer is None:
                size = frame.shape[1], frame.shape[0]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), args.fps, size)
                if not writer.isOpened():
                    raise DataError(f'{args.output}: OpenCV cannot write {fourcc} video to this file')
            elif (frame.shape[1], frame.shape[0]) != size:
                raise DataError(f'{path}: frame is {frame.shape[1]}x{frame.shape[0]}, the first frame '
                                f'({paths[0].name}) is {size[0]}x{size[1]}')
            writer.write(frame)
        writer.release()
        os.replace(tmp, args.output)
    finally:
        if pool:
            pool.terminate()
        if writer is not None:
            writer.release()  # idempotent; closes the file when a bad frame stopped the loop
        if tmp.exists():
            tmp.unlink()
    print(f'{args.output}: {len(paths)} frames at {args.fps:g} fps')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
