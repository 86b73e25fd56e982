"""Rebuild a DAVIS layout's JPEG frames from mp4 copies of its sequences.

For machines where the JPEG folders cannot be brought (a size limit on what travels) but the
sequences exist as videos (``../shared/data/videos`` holds every DAVIS-2016 train sequence as
``<name>.mp4``, frame for frame): writes ``ROOT/JPEGImages/480p/<seq>/00000.jpg, ...`` for every
sequence that has annotations under ``ROOT/Annotations/480p``, checking that the video has as
many frames as there are annotations. The frames are the H.264-decoded ones, so J&F measured
on them is close to, not identical with, J&F on the original JPEGs: compare runs made on the
same rebuilt frames.

    python -m tools.data.davis_from_videos --videos ../shared/data/videos --root davis-dev
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from dinotrack.io.video import iter_frames, probe_video
from dinotrack.results.writer import ResultWriter


def rebuild(videos: Path, root: Path, quality: int = 95) -> list[str]:
    """Write the JPEG frames of every annotated sequence of ``root`` from ``videos``.

    Returns:
        The sequences written (those whose frames already exist are left as they are).

    Raises:
        FileNotFoundError: A sequence has no ``<name>.mp4`` in ``videos``.
        ValueError: A video's frame count differs from its annotation count.
    """
    written = []
    for labels in sorted((root / "Annotations" / "480p").iterdir()):
        if not labels.is_dir():
            continue
        name = labels.name
        names = sorted(p.stem for p in labels.glob("*.png"))
        out = root / "JPEGImages" / "480p" / name
        if out.is_dir() and len(list(out.glob("*.jpg"))) == len(names):
            continue
        video = videos / f"{name}.mp4"
        if not video.is_file():
            raise FileNotFoundError(f"no video {video} for sequence {name}")
        count = probe_video(video).num_frames
        if count != len(names):
            raise ValueError(f"{video} has {count} frames but {name} has {len(names)} annotations")
        with ResultWriter(out, inputs=[("video", video)]) as results:
            for stem, frame in zip(names, iter_frames(video), strict=True):
                Image.fromarray(frame).save(results.staging / f"{stem}.jpg", quality=quality)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, required=True, help="folder of <sequence>.mp4")
    parser.add_argument("--root", type=Path, required=True, help="DAVIS root with Annotations/")
    args = parser.parse_args(argv)
    written = rebuild(args.videos, args.root)
    print(f"wrote the frames of {len(written)} sequence(s): {', '.join(written) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
