"""Random-frame decoding cost of pretraining's video reader, per decoder, side by side.

Reads `--samples` random frames (one at a time, as a batch holding one frame of a clip does)
from each of the first `--videos` videos of each folder given, with each decoder, and prints
the mean time per frame: the cost that `tools/data/reencode_videos.py` (short keyframe intervals)
is meant to cut.

    python -m tools.bench.random_access ../shared/data/videos /tmp/videos-gop16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dinotrack.io.random_access import count_frames, read_video_frames
from dinotrack.io.video import available_backends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of mp4 videos")
    parser.add_argument("--videos", type=int, default=15, help="videos per folder (15)")
    parser.add_argument("--samples", type=int, default=3, help="random frames per video (3)")
    args = parser.parse_args()
    decoders = [d for d in ("pyav", "decord") if d in available_backends()]
    for folder in args.folders:
        videos = sorted(folder.glob("*.mp4"))[: args.videos]
        line = []
        for decoder in decoders:
            rng = np.random.default_rng(0)  # the same frames for every decoder
            start, reads = time.perf_counter(), 0
            for video in videos:
                for index in rng.integers(0, count_frames(video, "pyav"), args.samples):
                    read_video_frames(video, [int(index)], decoder)
                    reads += 1
            line.append(f"{decoder} {(time.perf_counter() - start) / reads * 1e3:.1f} ms")
        print(f"{folder} ({len(videos)} videos, {args.samples} frames each): " + ", ".join(line))


if __name__ == "__main__":
    main()
