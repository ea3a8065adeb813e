"""Encode a folder of frames (e.g. a model's outputs) into a video file.

    python data_scripts/frames_to_video.py results/calendar calendar.mp4 --fps 25

Frames are taken in natural order (``Frame 2.png`` before ``Frame 10.png``) and must all have one size
(DataError naming the first odd frame). 16-bit frames are reduced to 8 bits (the codecs here are 8-bit).
The codec is H.264 (yuv420p, through PyAV; ``data.video.VideoWriter``) for .mp4/.mov/.mkv and MJPG for .avi
unless --codec says otherwise. An existing output is kept unless --overwrite is given. Exit codes: 0 done,
2 bad input.
"""
import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from data.io import list_images, read_image  # noqa: E402
from data.video import CODECS, VideoWriter  # noqa: E402
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError

CODEC = {'.mp4': 'h264', '.mov': 'h264', '.mkv': 'h264', '.avi': 'mjpg'}


def read_rgb8(path):
    """Worker: one frame as 8-bit RGB."""
    img = read_image(path)
    return (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('frames', type=Path, help='folder of frames')
    parser.add_argument('output', type=Path, help='video file to write (.mp4, .avi, .mov, .mkv)')
    parser.add_argument('--fps', type=float, default=25.0, help='frames per second (default 25)')
    parser.add_argument('--codec', choices=CODECS, help='h264, mp4v or mjpg (default by extension: h264, avi mjpg)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--workers', type=int, default=2, help='processes reading frames (default 2; 0 = none)')
    args = parser.parse_args(argv)

    if args.output.exists() and not args.overwrite:
        print(f'{args.output} exists; nothing to do (--overwrite to replace it)')
        return 0
    paths = list_images(args.frames)
    if not paths:
        raise DataError(f'{args.frames}: no frames')
    codec = args.codec or CODEC.get(args.output.suffix.lower())
    if codec is None:
        raise DataError(f'{args.output}: unknown container; use one of {", ".join(CODEC)} or give --codec')
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f'.{args.output.stem}.tmp{args.output.suffix}')  # FFmpeg picks the muxer by extension
    writer = VideoWriter(tmp, args.fps, codec)
    pool = Pool(args.workers) if args.workers > 0 else None
    try:
        frames = pool.imap(read_rgb8, paths, chunksize=4) if pool else map(read_rgb8, paths)
        for path, frame in zip(paths, progress(frames, total=len(paths), unit='frame')):
            if writer.size is not None and frame.shape[:2] != writer.size:
                raise DataError(f'{path}: frame is {frame.shape[1]}x{frame.shape[0]}, the first frame '
                                f'({paths[0].name}) is {writer.size[1]}x{writer.size[0]}')
            writer.write(frame)
        writer.close()
        os.replace(tmp, args.output)
    finally:
        if pool:
            pool.terminate()
        writer.close()  # idempotent; closes the file when a bad frame stopped the loop
        if tmp.exists():
            tmp.unlink()
    print(f'{args.output}: {len(paths)} frames at {args.fps:g} fps')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
