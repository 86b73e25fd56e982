"""Annotation-free starts on a DAVIS split: the ``--auto`` start mask, and the run from it.

For every sequence: the Jaccard J and boundary F of the start mask that
:class:`dinotrack.AutoStart` derives from the first frame's class-token attention, against the
first-frame annotation; then the J&F (official DAVIS semantics, ``eval/``) of the whole run
started from that mask, beside the run started from the annotation. As a reference for the
start masks, the J of a fixed centred box (half the width and height of the frame).

    python -m tools.bench.attention --davis ../shared/data/davis2016-dev \\
        --model dinotrack_vitt16_v3 --json attention.json

The default model is the trained backbone shipped in ``weights/`` (random test backbones
have near-uniform attention, so their start masks say nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from dinotrack import AutoStart, Tracker
from dinotrack.io.masks import write_mask
from dinotrack.models.registry import OFFLINE_MODEL
from eval.davis import open_davis, read_annotation
from eval.metrics import label_frame_scores
from eval.scoring import count_objects, score_results


def centre_box(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    mask[height // 4 : height - height // 4, width // 4 : width - width // 4] = 1
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True, help="DAVIS root")
    parser.add_argument("--split", default="dev")
    parser.add_argument(
        "--model", default=None, help=f"default: {OFFLINE_MODEL}, or the one --weights records"
    )
    parser.add_argument("--weights", default=None)
    parser.add_argument("--short-side", type=int, default=240)
    parser.add_argument("--mass", type=float, default=0.6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", default=None, help="keep the result PNGs here")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument(
        "--starts-only",
        action="store_true",
        help="only the start masks (first frames): no tracking runs, no J&F",
    )
    args = parser.parse_args()

    dataset = open_davis(args.davis, args.split, require_images=True)
    model = args.model or (None if args.weights else OFFLINE_MODEL)
    tracker = Tracker.from_pretrained(
        model, args.weights, device=args.device, short_side=args.short_side
    )
    results = Path(args.results or tempfile.mkdtemp(prefix="bench-attention-"))
    starts = {}
    seconds = {"annotated": 0.0, "auto": 0.0}
    frames = 0
    for seq in dataset.sequences:
        first = read_annotation(seq.annotation_paths[0])
        objects = count_objects(first)
        frames_dir = seq.image_paths[0].parent
        runs_of_seq = [("annotated", first), ("auto", AutoStart(mass=args.mass))]
        stop = 1 if args.starts_only else None
        for name, start in runs_of_seq[1:] if args.starts_only else runs_of_seq:
            folder = results / name / seq.name
            folder.mkdir(parents=True, exist_ok=True)
            began = time.perf_counter()
            for index, mask in tracker.track(frames_dir, start, stop=stop):
                write_mask(folder / f"{seq.image_paths[index].stem}.png", mask)
                if index == 0 and name == "auto":
                    auto_start = mask
            seconds[name] += time.perf_counter() - began
        frames += 1 if args.starts_only else len(seq.image_paths)
        j, f = label_frame_scores(first, auto_start, objects)
        box_j, _ = label_frame_scores(first, centre_box(first.shape), objects)
        starts[seq.name] = {
            "start_J": float(j.mean()),
            "start_F": float(f.mean()),
            "centre_box_J": float(box_j.mean()),
            "start_area": float((auto_start > 0).mean()),
            "truth_area": float((first > 0).mean()),
        }
        print(seq.name, json.dumps(starts[seq.name]), flush=True)

    runs = {}
    for name in () if args.starts_only else ("annotated", "auto"):
        evaluation = score_results(dataset, results / name, workers=2)
        runs[name] = {
            "global": evaluation.global_row(),
            "per_sequence": {obj.sequence: obj.row()["J&F-Mean"] for obj in evaluation.objects},
            "seconds_per_frame": seconds[name] / frames,
        }
    record = {
        "model": tracker.spec.name,
        "random_weights": tracker.spec.random_weights and args.weights is None,
        "short_side": args.short_side,
        "mass": args.mass,
        "frames": frames,
        "starts": starts,
        "runs": runs,
        "results": str(results),
    }
    print(json.dumps(record, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")

    tracked = "" if args.starts_only else " J&F annotated start | J&F auto start |"
    print(f"\n| sequence | start J | start F | centre box J |{tracked}")
    print("|---|---|---|---|" + ("" if args.starts_only else "---|---|"))
    for name, start in starts.items():
        row = f"| {name} | {start['start_J']:.3f} | {start['start_F']:.3f} | "
        row += f"{start['centre_box_J']:.3f} |"
        if not args.starts_only:
            annotated = runs["annotated"]["per_sequence"][name]
            row += f" {annotated:.3f} | {runs['auto']['per_sequence'][name]:.3f} |"
        print(row)
    mean = {key: np.mean([s[key] for s in starts.values()]) for key in next(iter(starts.values()))}
    row = f"| **mean** | {mean['start_J']:.3f} | {mean['start_F']:.3f} | "
    row += f"{mean['centre_box_J']:.3f} |"
    if not args.starts_only:
        row += f" {runs['annotated']['global']['J&F-Mean']:.3f} |"
        row += f" {runs['auto']['global']['J&F-Mean']:.3f} |"
    print(row)


if __name__ == "__main__":
    main()
