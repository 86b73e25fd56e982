"""Batch throughput on this machine: one process with N threads against N processes (torchrun,
gloo) with one thread each, on the same list of clips, side by side in one run.

Both runs are ``dinotrack segment --batch`` in fresh processes, from the first DAVIS annotation
of each clip, with random weights of the named backbone (the official ones cannot be
downloaded here; speed does not depend on the weights). The script also checks that both runs
wrote the same files, byte for byte.

    python -m tools.bench.batch --clips dog-agility,soccerball,dance-jump,horsejump-low

With ``--device cuda`` it times the one-process batch on GPU 0 alone (one GPU: no second
process to compare with).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.data.location import REPO, data_root

SUMMARY = "batch-summary.json"


def write_list(folder: Path, data: Path, clips: list[str]) -> Path:
    rows = ["video,mask"]
    for clip in clips:
        video = data / "videos" / f"{clip}.mp4"
        mask = data / "davis2016-dev" / "Annotations" / "480p" / clip / "00000.png"
        for path in (video, mask):
            if not path.is_file():
                raise SystemExit(f"{path} is missing; point --data at the shared data folder")
        rows.append(f"{video},{mask}")
    path = folder / "list.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def random_weights(folder: Path, model: str) -> Path:
    import torch

    from dinotrack import load_backbone

    net, _ = load_backbone(model, pretrained=False)
    path = folder / f"{model}-random.pth"
    torch.save(net.state_dict(), path)
    return path


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != SUMMARY
    }


def timed(command: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_root(), help="shared data folder")
    parser.add_argument("--clips", default="dog-agility,soccerball,dance-jump,horsejump-low")
    parser.add_argument("--model", default="dino_vits16", help="backbone (random weights)")
    parser.add_argument("--max-frames", type=int, default=10, help="frames per clip")
    parser.add_argument("--short-side", type=int, default=480)
    parser.add_argument("--processes", type=int, default=2, help="N: processes, and threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    clips = [c for c in args.clips.split(",") if c]
    n = args.processes
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp)
        batch = write_list(folder, args.data, clips)
        weights = random_weights(folder, args.model)
        segment = ["-m", "dinotrack", "segment", "--batch", str(batch)]
        segment += ["--model", args.model, "--weights", str(weights), "--device", args.device]
        segment += ["--short-side", str(args.short_side), "--max-frames", str(args.max_frames)]
        one = timed([sys.executable, *segment, "--out", str(folder / "one")], threads=n)
        if args.device == "cuda":
            frames = sum(p.suffix == ".png" for p in (folder / "one").rglob("*.png"))
            print(
                f"{len(clips)} clips, {frames} frames, {args.model} (random weights), short side "
                f"{args.short_side}, 1 process on GPU 0: {one:.1f} s ({frames / one:.2f} "
                "frames/s), process start and model load included"
            )
            return
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        many = timed(
            [*torchrun, "--nproc-per-node", str(n), *segment, "--out", str(folder / "many")],
            threads=1,
        )
        written = files(folder / "one")
        same = written == files(folder / "many")
        frames = sum(name.endswith(".png") for name in written)
    print(
        f"{len(clips)} clips, {frames} frames, {args.model} (random weights), short side "
        f"{args.short_side}, CPU; wall time per run, process start and model load included"
    )
    print(
        f"1 process x {n} threads: {one:.1f} s ({frames / one:.2f} frames/s) | "
        f"{n} processes x 1 thread: {many:.1f} s ({frames / many:.2f} frames/s) | "
        f"ratio {one / many:.2f}x | outputs identical: {same}"
    )


if __name__ == "__main__":
    main()
