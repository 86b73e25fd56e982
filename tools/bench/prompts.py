"""Prompts on any frame, measured: an object entering later, a correction, and memory.

Three parts, each printing its figures (the numbers go into docs/benchmarks.md):

``enter``: two dev sequences side by side (object 1 on the left from frame 0, object 2 on
the right prompted at ``--enter``); object 2's J&F on the frames after its prompt, tracked
beside object 1 (each group merge rule) and alone from its prompt; and whether object 1 is
unchanged before that frame.

``correct``: on each dev sequence, the ground truth of the middle frame as a second prompt;
J&F of the frames after it with and without the correction.

``memory``: peak RSS and time of ``dinotrack segment`` on a long 720p clip, forward from
frame 0, ``--direction both`` from the middle frame, and forward with 20 prompts (fresh
processes, as ``tools/bench/memory.py``).

    python -m tools.bench.prompts enter --model test_vit_tiny --short-side 240
    python -m tools.bench.prompts correct --model test_vit_tiny --short-side 240 --frames 30
    python -m tools.bench.prompts memory --model test_vit_tiny --short-side 120
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from dinotrack import Tracker
from dinotrack.io.masks import read_mask, write_mask
from eval.metrics import label_frame_scores
from tools.bench.processes import last_json_line, run_module
from tools.data.location import data_path


def measure_cli(args: list[str]) -> dict:
    """``dinotrack ARGS`` in a fresh process (``python -m tools.bench.memory --child``): its
    exit code, seconds and peak RSS (VmHWM of that process alone)."""
    return last_json_line(run_module("tools.bench.memory", "--child", *args))


def dev_sequence(root: Path, name: str, frames: int | None) -> tuple[list[np.ndarray], list]:
    """RGB frames and binary ground truth (uint8, 1 = the object) of a DAVIS-2016 sequence."""
    from PIL import Image

    jpegs = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))[:frames]
    pngs = sorted((root / "Annotations" / "480p" / name).glob("*.png"))[:frames]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in jpegs]
    truth = [(read_mask(p).ids > 0).astype(np.uint8) for p in pngs]
    return images, truth


def j_and_f(truth: np.ndarray, pred: np.ndarray, obj: int) -> float:
    """(J + F) / 2 of object ``obj`` in one frame."""
    t = (truth == obj).astype(np.uint8)
    p = (pred == obj).astype(np.uint8)
    j, f = label_frame_scores(t, p, 1)
    return float(j[0] + f[0]) / 2


def build_tracker(args: argparse.Namespace, **overrides) -> Tracker:
    return Tracker.from_pretrained(
        args.model, args.weights, device="cpu", short_side=args.short_side, **overrides
    )


def run_enter(args: argparse.Namespace) -> None:
    root = Path(args.root)
    left, left_gt = dev_sequence(root, args.left, args.frames)
    right, right_gt = dev_sequence(root, args.right, args.frames)
    n = min(len(left), len(right))
    frames = [np.concatenate([left[t], right[t]], axis=1) for t in range(n)]
    zeros = np.zeros_like(right_gt[0])
    truth = [np.concatenate([left_gt[t], right_gt[t] * 2], axis=1) for t in range(n)]
    obj1 = np.concatenate([left_gt[0], zeros], axis=1)
    obj2 = np.concatenate([np.zeros_like(left_gt[0]), right_gt[args.enter] * 2], axis=1)
    after = range(args.enter + 1, n)
    scores = {}
    start = time.perf_counter()
    alone1 = dict(build_tracker(args).track(frames, obj1, stop=args.enter))
    alone2 = dict(build_tracker(args).track(frames, prompts={args.enter: obj2}))
    scores["alone"] = np.mean([j_and_f(truth[t], alone2[t], 2) for t in after])
    for rule in ("min", "product"):
        tracker = build_tracker(args, group_merge=rule)
        both = dict(tracker.track(frames, prompts={0: obj1, args.enter: obj2}))
        scores[rule] = np.mean([j_and_f(truth[t], both[t], 2) for t in after])
        same = all(np.array_equal(both[t], alone1[t]) for t in range(args.enter))
        obj1_after = np.mean([j_and_f(truth[t], both[t], 1) for t in after])
        print(
            f"merge {rule}: object 2 J&F on frames {args.enter + 1}-{n - 1} = "
            f"{scores[rule]:.4f} (alone {scores['alone']:.4f}, difference "
            f"{scores[rule] - scores['alone']:+.4f}); object 1 frames 0-{args.enter - 1} "
            f"identical to tracking it alone: {same}; object 1 J&F after: {obj1_after:.4f}"
        )
    print(
        f"{args.model} ({args.weights or 'registry weights'}), short side {args.short_side}, "
        f"{args.left} | {args.right}, {n} frames, object 2 prompted at frame {args.enter}; "
        f"{time.perf_counter() - start:.0f} s"
    )


def run_correct(args: argparse.Namespace) -> None:
    root = Path(args.root)
    names = (root / "ImageSets" / "2016" / "dev.txt").read_text().split()
    tracker = build_tracker(args)
    rows = []
    start = time.perf_counter()
    for name in names:
        frames, truth = dev_sequence(root, name, args.frames)
        mid = len(frames) // 2
        after = range(mid + 1, len(frames))
        plain = dict(tracker.track(frames, truth[0]))
        fixed = dict(tracker.track(frames, prompts={0: truth[0], mid: truth[mid]}))
        a = np.mean([j_and_f(truth[t], plain[t], 1) for t in after])
        b = np.mean([j_and_f(truth[t], fixed[t], 1) for t in after])
        rows.append((a, b))
        print(f"{name:16s} frames {mid + 1}-{len(frames) - 1}: J&F {a:.4f} -> {b:.4f}")
    a, b = np.mean(rows, axis=0)
    print(
        f"mean over {len(rows)} sequences: J&F after the middle frame {a:.4f} without, "
        f"{b:.4f} with its ground truth as a correction ({b - a:+.4f}); {args.model} "
        f"({args.weights or 'registry weights'}), short side {args.short_side}, first "
        f"{args.frames or 'all'} frames; {time.perf_counter() - start:.0f} s"
    )


def run_memory(args: argparse.Namespace) -> None:
    from dinotrack.io.video import iter_frames, probe_video

    info = probe_video(args.video)
    frame = next(iter_frames(args.video))
    mask = np.zeros(frame.shape[:2], np.uint8)
    h, w = mask.shape
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        many = tmp / "prompts"
        many.mkdir()
        for k, index in enumerate(np.linspace(0, info.num_frames - 1, 20).astype(int)):
            box = mask.copy()  # a box that moves along the frame: 20 corrections of object 1
            x0 = int(k * (w // 2) / 19)
            box[h // 3 : 2 * h // 3, x0 : x0 + w // 2] = 1
            write_mask(many / f"{index:05d}.png", box)
        mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 1
        write_mask(tmp / "mask.png", mask)
        middle = info.num_frames // 2
        runs = {
            "forward from frame 0": ["--prompt", f"0:{tmp / 'mask.png'}"],
            f"both from frame {middle}": [
                "--prompt",
                f"{middle}:{tmp / 'mask.png'}",
                "--direction",
                "both",
            ],
            "forward, 20 prompts": ["--prompts", str(many)],
        }
        for label, flags in runs.items():
            out = tmp / "out"
            cmd = ["segment", args.video, *flags, "--out", str(out), "--model", args.model]
            got = measure_cli([*cmd, "--short-side", str(args.short_side), "--device", "cpu"])
            written = len(list(out.glob("*.png")))
            print(
                f"{label:24s}: {written} masks, {got['seconds']:.0f} s, peak RSS "
                f"{got['peak_rss_gb']:.3f} GB"
            )
    print(
        f"{args.model}, {Path(args.video).name} ({info.num_frames} frames, {info.width}x"
        f"{info.height}, {info.backend}), short side {args.short_side}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("enter", "correct", "memory"))
    parser.add_argument("--root", default=str(data_path("davis2016-dev")))
    parser.add_argument("--model", default="test_vit_tiny")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--short-side", type=int, default=240)
    parser.add_argument("--frames", type=int, default=None, help="first frames of each sequence")
    parser.add_argument("--left", default="boat")
    parser.add_argument("--right", default="kite-walk")
    parser.add_argument("--enter", type=int, default=10)
    parser.add_argument("--video", default=str(data_path("videos-wild", "02_cups.mp4")))
    args = parser.parse_args()
    {"enter": run_enter, "correct": run_correct, "memory": run_memory}[args.part](args)


if __name__ == "__main__":
    main()
