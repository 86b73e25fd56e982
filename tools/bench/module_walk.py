"""The walk of ``dinotrack segment`` through the package's modules, from the CLI to the PNGs.

Runs ``segment`` in this process on a short synthetic clip (or ``--input``/``--mask``) with a
profile hook that sees every call between two modules of the package, and prints:

- the modules visited, in the order of their first call;
- the re-entries: calls into a module that the walk had already left, i.e. calls from module
  ``B`` into a module ``A`` first visited before ``B`` (counted once per distinct ``B -> A``
  pair, so that a per-frame loop counts as one);
- the pairs themselves;
- the upward calls: a module of a lower layer (io < models < tracking < results < pipeline <
  cli, studio) calling one of a higher layer, i.e. a return up the stack through a callback;
  modules of the flat tree of 0.1 are ranked by the layer they moved to.

A walk that goes one way (each layer calling only lower ones) has few re-entries; calls into
the base modules (``errors``, ``config``) are left out, as every layer uses them.

    python -m tools.bench.module_walk
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BASE = ("dinotrack.config", "dinotrack.errors", "dinotrack")
LAYERS = ("io", "models", "tracking", "results", "pipeline", "cli", "studio")
# Where the modules of the flat tree of dinotrack 0.1 went, to rank them in the same layers.
FLAT = {
    "video_io": "io",
    "decoders": "io",
    "image_files": "io",
    "atomic_files": "io",
    "masks": "io",
    "backbones": "models",
    "checkpoints": "models",
    "features": "models",
    "attention": "models",
    "propagation": "tracking",
    "session": "tracking",
    "autostart": "tracking",
    "results": "results",
    "export": "results",
    "overlay": "results",
    "colour_map": "results",
    "batch": "cli",
    "distributed": "pipeline",
    "cli_attention": "cli",
    "cli_export": "cli",
    "clikit": "cli",
    "cli": "cli",
}


def layer(module: str) -> int:
    """Rank of a module's layer (io lowest, the front ends highest)."""
    part = FLAT.get(module.split(".")[1], module.split(".")[1])
    part = "cli" if part == "studio" else part  # the two front ends are one layer
    return LAYERS.index(part) if part in LAYERS else -1


def module_of(frame) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if name.startswith("dinotrack") else None


def walk(argv: list[str]) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Run the CLI with ``argv``; the modules in first-visit order, the re-entry pairs and the
    upward pairs (a lower layer calling a higher one: callbacks)."""
    from dinotrack.cli import main

    order: dict[str, int] = {}
    reentries: set[tuple[str, str]] = set()
    upward: set[tuple[str, str]] = set()

    def hook(frame, event, _arg):
        if event != "call" or frame.f_code.co_name == "<module>":  # imports are not the walk
            return
        callee = module_of(frame)
        caller = module_of(frame.f_back) if frame.f_back is not None else None
        if callee is None or callee in BASE:
            return
        if callee not in order:
            order[callee] = len(order)
        if caller is not None and caller != callee and caller in order:
            if order[callee] < order[caller]:
                reentries.add((caller, callee))
            if layer(callee) > layer(caller) >= 0:
                upward.add((caller, callee))

    sys.setprofile(hook)
    try:
        status = main(argv)
    finally:
        sys.setprofile(None)
    if status != 0:
        raise SystemExit(f"segment failed with status {status}")
    return sorted(order, key=order.get), sorted(reentries), sorted(upward)


def synthetic_clip(folder: Path) -> tuple[Path, Path]:
    frames = folder / "clip"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(image).save(frames / f"{i:05d}.jpg")
    mask = np.zeros((64, 96), dtype=np.uint8)
    mask[16:48, 24:72] = 1
    Image.fromarray(mask).save(folder / "mask.png")
    return frames, folder / "mask.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="video or frames folder (default: synthetic)")
    parser.add_argument("--mask", type=Path, help="its first mask")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.input is None:
            args.input, args.mask = synthetic_clip(Path(tmp))
        flags = ["segment", str(args.input), "--mask", str(args.mask), "--out"]
        flags += [str(Path(tmp) / "out"), "--model", "test_vit_tiny", "--device", "cpu"]
        modules, reentries, upward = walk(flags + ["--max-frames", "3", "--short-side", "64"])
    print(f"modules visited: {len(modules)}")
    for name in modules:
        print(f"  {name}")
    print(f"re-entries (distinct caller -> earlier module): {len(reentries)}")
    for caller, callee in reentries:
        print(f"  {caller} -> {callee}")
    print(f"upward calls (distinct lower layer -> higher layer): {len(upward)}")
    for caller, callee in upward:
        print(f"  {caller} -> {callee}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
