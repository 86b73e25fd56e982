"""The studio's speed and memory, measured through its public API (docs/benchmarks.md).

Four figures, each with the issue's target:

``frames``: fetching a frame from the cache, as ``GET /api/frames/{i}`` serves it (the
cached array, encoded as JPEG, through the real ASGI app), and a thumbnail; target <= 50 ms.

``clicks``: a click to a mask (``InteractiveSession.add_clicks``) on a frame seen for the
first time (the backbone runs) and on the same frame again (features kept); target <= 1 s.

``throughput``: propagation over the same frames by ``dinotrack segment --prompt`` and by
``InteractiveSession.propagate``, one after the other in this process, alternating, best
of ``--repeats``; target: the studio within 10 % of segment.

``quality``: how good a first mask from clicks is: on the first frame of each DAVIS-2016
dev sequence, the mask grown from one positive click (at the object's innermost pixel), from
the object's bounding box, and from both, against the annotation (mean IoU), beside the box
itself filled in.

``restart``: the results kept across a restart: a propagation over the dev clip in a
project folder, then the size of ``.studio/results.pt`` and the time to open the project
again with them (and without them, beside it), and what a correction on the middle frame
after the restart recomputes.

``memory``: a synthetic ``--memory-frames``-frame 854x480 video (textured background, two
moving squares), propagated from a prompt on frame 0; the process's resident memory after
100, 250, 500 ... frames and its peak: flat when frames are not held.

All at the backbone's preset unless ``--short-side`` says otherwise.

    nice python -m tools.bench.studio --model dinotrack_vitt16_v3   # at its preset
    python -m tools.bench.studio --model test_vit_tiny --short-side 64 --frames 8 \
        --memory-frames 60 --quality-sequences boat   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dinotrack import InteractiveSession, Tracker
from dinotrack.cli import main as dinotrack_main
from dinotrack.io.masks import read_mask
from tools.bench.processes import peak_rss_gb
from tools.data.location import data_path

PARTS = ("frames", "clicks", "throughput", "quality", "restart", "memory")


def current_rss_gb() -> float:
    """Resident memory of this process now, in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def dev_clip(sequence: str, frames: int, scratch: Path) -> tuple[Path, Path]:
    """The first ``frames`` frames of a DAVIS dev sequence, as a folder, and its first mask."""
    root = data_path("davis2016-dev")
    source = root / "JPEGImages" / "480p" / sequence
    folder = scratch / sequence
    folder.mkdir()
    for path in sorted(source.iterdir())[:frames]:
        shutil.copy(path, folder / path.name)
    return folder, root / "Annotations" / "480p" / sequence / "00000.png"


def bench_frames(session: InteractiveSession, repeats: int) -> None:
    from starlette.testclient import TestClient

    from dinotrack.studio.server import create_app

    token = "bench"
    with TestClient(create_app(session, token)) as client:
        headers = {"X-Dinotrack-Token": token}
        for index in range(min(8, session.num_frames)):
            session.frame(index)  # in the cache
        for label, query in (("frame", ""), ("thumbnail", "?thumb=1")):
            times = []
            for r in range(repeats):
                index = r % min(8, session.num_frames)
                start = time.perf_counter()
                reply = client.get(f"/api/frames/{index}{query}", headers=headers)
                times.append(time.perf_counter() - start)
                assert reply.status_code == 200
            print(
                f"frames: GET /api/frames/i{query} from the cache ({label}, "
                f"{len(reply.content) / 1024:.0f} KiB JPEG): median "
                f"{statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms "
                "(target <= 50 ms)"
            )
        fresh = InteractiveSession(session.tracker, session.video)  # an empty cache
        start = time.perf_counter()
        fresh.frame(session.num_frames - 1)
        elapsed = time.perf_counter() - start
        print(f"frames: a frame not in the cache (decoded): {elapsed * 1e3:.1f} ms")


def bench_clicks(session: InteractiveSession, mask_path: Path, repeats: int) -> None:
    truth = read_mask(mask_path).ids > 0
    ys, xs = np.nonzero(truth)
    point = (float(xs[len(xs) // 2]), float(ys[len(ys) // 2]))
    obj = session.add_object("bench").id
    fresh, again, cpu = [], [], []
    for r in range(repeats):
        frame = 1 + r % max(1, session.num_frames - 1)  # a frame not clicked before
        start, start_cpu = time.perf_counter(), time.process_time()
        session.add_clicks(frame, obj, [point], [1], clear=True)
        fresh.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        start = time.perf_counter()
        session.add_clicks(frame, obj, [(point[0] + 8, point[1])], [1])
        again.append(time.perf_counter() - start)
    print(
        f"clicks: click to mask on a new frame (backbone included): median "
        f"{statistics.median(fresh):.2f} s, max {max(fresh):.2f} s (CPU time of all threads: "
        f"median {statistics.median(cpu):.2f} s); on the same frame again: median "
        f"{statistics.median(again):.2f} s (target <= 1 s)"
    )


def bench_throughput(
    tracker: Tracker, folder: Path, mask: Path, args: argparse.Namespace, scratch: Path
) -> None:
    flags = ["--model", args.model, "--device", "cpu"]
    if args.short_side is not None:
        flags += ["--short-side", str(args.short_side)]

    def run_segment(out: Path, *extra: str) -> tuple[float, float]:
        """segment's printed fps and the CPU seconds of the whole command."""
        printed = io.StringIO()
        start_cpu = time.process_time()
        with contextlib.redirect_stderr(printed):
            code = dinotrack_main(
                ["segment", str(folder), "--prompt", f"0:{mask}", "--out", str(out), *flags, *extra]
            )
        assert code == 0, printed.getvalue()
        # The summary line's rate (a progress line before it may show a passing rate).
        summary = re.search(r"segmented \d+ frames.*? ([0-9.]+) fps", printed.getvalue())
        return float(summary[1]), time.process_time() - start_cpu

    # The command's fixed cost (model load, one frame), taken off its CPU time per frame.
    fixed = min(run_segment(scratch / f"one{r}", "--max-frames", "1")[1] for r in range(2))
    segment, studio, segment_cpu, studio_cpu = [], [], [], []
    for r in range(args.repeats):
        fps, cpu = run_segment(scratch / f"seg{r}")
        segment.append(fps)
        segment_cpu.append(cpu - fixed)
        session = InteractiveSession(tracker, folder)
        session.set_prompt(0, read_mask(mask).ids)
        start, start_cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _ in session.propagate("forward"))
        studio.append(time.perf_counter() - start)
        studio_cpu.append(time.process_time() - start_cpu)
    seg_fps, studio_fps = max(segment), count / min(studio)
    print(
        f"throughput: {count} frames, best of {args.repeats}: segment {seg_fps:.2f} fps (as it "
        f"prints it: tracking and PNG writing), studio propagate {studio_fps:.2f} fps; "
        f"studio / segment = {studio_fps / seg_fps:.2f} (target >= 0.90); CPU time per frame "
        f"(all threads, least of {args.repeats}): segment {min(segment_cpu) / (count - 1):.3f} s "
        f"(less a 1-frame run's), studio {min(studio_cpu) / count:.3f} s"
    )


def bench_quality(tracker: Tracker, sequences: list[str]) -> None:
    from scipy import ndimage

    root = data_path("davis2016-dev")
    scores: dict[str, list[float]] = {"click": [], "box": [], "box + click": [], "box filled": []}
    for name in sequences:
        truth = read_mask(root / "Annotations" / "480p" / name / "00000.png").ids > 0
        depth = ndimage.distance_transform_edt(truth)
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)  # the innermost pixel
        ys, xs = np.nonzero(truth)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        session = InteractiveSession(tracker, root / "JPEGImages" / "480p" / name)
        obj = session.add_object().id
        click = [(float(x), float(y))]
        masks = {
            "click": session.add_clicks(0, obj, click, [1], clear=True),
            "box": session.add_clicks(0, obj, box=box, clear=True),
            "box + click": session.add_clicks(0, obj, click, [1], box=box, clear=True),
        }
        filled = np.zeros_like(truth)
        filled[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        masks["box filled"] = filled
        for label, mask in masks.items():
            scores[label].append(float((mask & truth).sum() / (mask | truth).sum()))
    print(f"quality: first frames of {len(sequences)} DAVIS-2016 dev sequences, mean IoU:")
    for label, values in scores.items():
        per = " ".join(f"{v:.2f}" for v in values)
        print(f"quality: {label:12s} {statistics.mean(values):.3f} ({per})")


def synthetic_video(path: Path, frames: int, width: int = 854, height: int = 480) -> np.ndarray:
    """Write an H.264 mp4 of ``frames`` frames; returns the first frame's mask (ids 1, 2)."""
    import av

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            frame = background.copy()
            for obj, (y, colour) in {1: (100, 250), 2: (300, 10)}.items():
                x = (40 + 3 * t) % (width - 120)
                frame[y : y + 96, x : x + 96] = colour
                if t == 0:
                    mask[y : y + 96, x : x + 96] = obj
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return mask


def bench_restart(
    tracker: Tracker, folder: Path, mask_path: Path, scratch: Path, repeats: int
) -> None:
    project = scratch / "restart"
    session = InteractiveSession(tracker, folder, out=project)
    session.set_prompt(0, read_mask(mask_path).ids)
    count = sum(1 for _ in session.propagate("forward"))
    kept = project / ".studio" / "results.pt"
    size = kept.stat().st_size
    print(
        f"restart: {count} frames, .studio/results.pt {size / 1e6:.2f} MB "
        f"({size / count / 1e3:.1f} kB a frame)"
    )

    def open_time() -> tuple[float, InteractiveSession]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            again = InteractiveSession(tracker, folder, out=project)
            times.append(time.perf_counter() - start)
        return min(times), again

    with_results, again = open_time()
    restored = len(again.result_frames)
    middle = count // 2
    again.set_prompt(middle, read_mask(mask_path).ids)  # a correction after the restart
    sum(1 for _ in again.propagate("forward"))
    stats = again.stats
    shutil.move(kept, scratch / "kept.pt")
    without, _ = open_time()
    print(
        f"restart: reopening with the kept results {with_results * 1e3:.0f} ms ({restored} frames "
        f"restored), without {without * 1e3:.0f} ms; a correction on frame {middle} after it: "
        f"{stats.computed} frames tracked, {stats.reused} kept"
    )


def bench_memory(tracker: Tracker, frames: int, scratch: Path) -> None:
    video = scratch / "long.mp4"
    mask = synthetic_video(video, frames)
    session = InteractiveSession(tracker, video)
    session.set_prompt(0, mask)
    checkpoints = {c for c in (100, 250, 500, 750) if c < frames} | {frames // 2, frames}
    start = time.perf_counter()
    print(
        f"memory: {frames}-frame 854x480 video; RSS before: {current_rss_gb():.2f} GiB", flush=True
    )
    after = {}
    for count, _ in enumerate(session.propagate("forward"), start=1):
        if count in checkpoints:
            after[count] = current_rss_gb()
            print(
                f"memory: after {count} frames RSS {current_rss_gb():.2f} GiB, peak "
                f"{peak_rss_gb():.2f} GiB, {count / (time.perf_counter() - start):.2f} fps",
                flush=True,
            )
    first, last = min(after), max(after)
    if last > first:
        growth = (after[last] - after[first]) * 2**30 / 1e6 / (last - first)
        print(
            f"memory: growth from frame {first} to {last}: {growth:+.3f} MB per frame "
            "(target: flat, about 0)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dinotrack_vitt16_v3")
    parser.add_argument(
        "--short-side", type=int, default=None, help="default: the backbone's preset's"
    )
    parser.add_argument("--sequence", default="dog-agility", help="DAVIS dev sequence")
    parser.add_argument("--frames", type=int, default=24, help="frames for the throughput")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-frames", type=int, default=1000)
    parser.add_argument(
        "--quality-sequences",
        default="boat,dance-jump,dog-agility,drift-turn,flamingo,horsejump-low,kite-walk,"
        "motocross-bumps,paragliding,soccerball",
        help="DAVIS dev sequences of the quality part, comma-separated",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    overrides = {} if args.short_side is None else {"short_side": args.short_side}
    tracker = Tracker.from_pretrained(args.model, device="cpu", **overrides)
    config = tracker.config
    print(f"model {args.model}, short side {config.short_side}, radius {config.radius}, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder, mask = dev_clip(args.sequence, args.frames, scratch)
        session = InteractiveSession(tracker, folder)
        if "frames" in parts:
            bench_frames(session, 20 * args.repeats)
        if "clicks" in parts:
            bench_clicks(session, mask, args.repeats)
        if "throughput" in parts:
            bench_throughput(tracker, folder, mask, args, scratch)
        if "quality" in parts:
            bench_quality(tracker, args.quality_sequences.split(","))
        if "restart" in parts:
            bench_restart(tracker, folder, mask, scratch, args.repeats)
        if "memory" in parts:
            bench_memory(tracker, args.memory_frames, scratch)


if __name__ == "__main__":
    main()
