"""Cost of pretraining's up-front check of its videos, per decoder, side by side.

``pretrain.data.find_sources`` counts each video's frames and decodes its first frame, so
that a damaged file is skipped before training. This prints, per folder and decoder, the
time of counting alone, of the whole check, and their ratio.

    python -m tools.bench.source_check ../shared/data/videos ../shared/data/videos-wild
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from dinotrack.io.random_access import count_frames
from dinotrack.io.video import VIDEO_SUFFIXES, available_backends
from pretrain.data import find_sources


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of videos")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (3)")
    args = parser.parse_args(argv)
    decoders = [d for d in ("pyav", "decord") if d in available_backends()]
    for folder in args.folders:
        videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        line = []
        for decoder in decoders:
            count = _best(args.repeats, _count_all, videos, decoder)
            check = _best(args.repeats, find_sources, [folder], decoder)
            line.append(
                f"{decoder}: count {count:.2f} s, check {check:.2f} s "
                f"({check / len(videos) * 1e3:.0f} ms/video, x{check / count:.1f})"
            )
        print(f"{folder} ({len(videos)} videos): " + "; ".join(line))


def _count_all(videos: list[Path], decoder: str) -> int:
    """Counts the frames of each video that opens (the listing before the check)."""
    total = 0
    for video in videos:
        try:
            total += count_frames(video, decoder)
        except ValueError:
            pass
    return total


def _best(repeats: int, work: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work(*args)
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    main()
