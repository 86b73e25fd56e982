"""Re-encode videos with a keyframe every few frames, for fast random access in pretraining.

`dinotrack pretrain` draws random frames from each video every epoch; reading one costs a
decode from the keyframe before it. Clips with a single keyframe (the DAVIS mp4s) are then
decoded from their start for every frame drawn. This writes H.264 copies with a keyframe every
`--gop` frames (and frame-exact timestamps), keeping names and the folder layout:

    python -m tools.data.reencode_videos ../shared/data/videos /tmp/videos-gop16 --gop 16

Each output is written under a temporary name and renamed when complete; existing outputs are
kept unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

from dinotrack.io.atomic import atomic_output
from dinotrack.io.video import VIDEO_SUFFIXES, probe_video


def output_size(width: int, height: int, short_side: int = 0) -> tuple[int, int]:
    """The encoded frame size: scaled down to ``short_side`` if its shorter side is longer
    (0: never), then each odd side rounded up to even, as yuv420p needs."""
    if 0 < short_side < min(width, height):
        scale = short_side / min(width, height)
        width, height = round(width * scale), round(height * scale)
    return width + width % 2, height + height % 2


def reencode(source: Path, target: Path, gop: int = 16, crf: int = 23, short_side: int = 0) -> int:
    """Re-encode one video (H.264, yuv420p, a keyframe every ``gop`` frames).

    ``short_side`` > 0 downscales frames whose shorter side is longer than it (area
    interpolation, aspect kept, even sides): a corpus stored at the size pretraining reads
    (``--max-short-side``) decodes several times faster.

    Returns:
        The number of frames written.

    Raises:
        ValueError: The source cannot be read, or has no frames.
    """
    import av

    info = probe_video(source, "pyav")
    rate = Fraction(info.fps).limit_denominator(1001)
    count = 0
    with atomic_output(target) as tmp:
        with av.open(str(source)) as src, av.open(str(tmp), "w", format="mp4") as dst:
            stream = dst.add_stream("libx264", rate=rate)
            stream.width, stream.height = output_size(info.width, info.height, short_side)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(gop)}
            for frame in src.decode(video=0):
                image = frame.reformat(
                    stream.width, stream.height, format="yuv420p", interpolation="AREA"
                )
                image.pts, image.time_base = count, 1 / rate  # frame-exact timestamps
                for packet in stream.encode(image):
                    dst.mux(packet)
                count += 1
            for packet in stream.encode():
                dst.mux(packet)
        if count == 0:
            raise ValueError(f"no frames could be decoded from {source}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a video, or a folder searched recursively")
    parser.add_argument("target", type=Path, help="output folder")
    parser.add_argument("--gop", type=int, default=16, help="frames between keyframes (16)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (23)")
    parser.add_argument(
        "--short-side",
        type=int,
        default=0,
        help="downscale frames whose shorter side is longer than this (0: keep the size)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo existing outputs")
    args = parser.parse_args(argv)
    if args.gop < 1:
        parser.error("--gop must be at least 1")
    if args.short_side < 0:
        parser.error("--short-side must be 0 (keep) or positive")
    if args.source.is_dir():
        videos = sorted(
            p for p in args.source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        )
        names = [video.relative_to(args.source).with_suffix(".mp4") for video in videos]
    elif args.source.is_file():
        videos, names = [args.source], [Path(args.source.name).with_suffix(".mp4")]
    else:
        print(f"reencode_videos: error: {args.source} does not exist", file=sys.stderr)
        return 2
    done = 0
    for video, name in zip(videos, names, strict=True):
        target = args.target / name
        if target.exists() and not args.overwrite:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            frames = reencode(video, target, args.gop, args.crf, args.short_side)
        except ValueError as exc:
            print(f"reencode_videos: skipping {video}: {exc}", file=sys.stderr)
            continue
        print(f"{video} -> {target}: {frames} frames, keyframe every {args.gop}")
        done += 1
    print(f"re-encoded {done} of {len(videos)} video(s) into {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
