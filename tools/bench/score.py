"""Time the DAVIS scorer on the metric oracle's results folder.

Scores ``<oracle>/results-lag`` (5 sequences, 256 frames, 15 objects) against the oracle's
annotations several times for each worker count, prints wall-clock and CPU times, and checks
every number against the oracle's ``expected.json``.

Usage::

    python -m tools.bench.score [--oracle ../shared/data/davis-metric-oracle]
        [--results results-lag] [--workers 1 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from eval.davis import open_davis
from eval.scoring import score_results
from tools.data.location import data_path


def _default_oracle() -> Path:
    return data_path("davis-metric-oracle")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, default=_default_oracle())
    parser.add_argument("--results", default="results-lag")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if not (args.oracle / "expected.json").is_file():
        print(f"error: {args.oracle}/expected.json not found (pass --oracle)", file=sys.stderr)
        return 2
    expected = json.loads((args.oracle / "expected.json").read_text())[args.results]
    dataset = open_davis(args.oracle, "val")
    frames = sum(len(seq.annotation_paths) for seq in dataset.sequences)
    print(
        f"scoring {args.oracle / args.results}: {len(dataset.sequences)} sequences, "
        f"{frames} frames; {os.cpu_count()} CPU cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for workers in args.workers:
        walls, cpus = [], []
        for _ in range(args.repeat):
            cpu0, wall0 = _cpu_seconds(), time.perf_counter()
            evaluation = score_results(dataset, args.oracle / args.results, workers=workers)
            walls.append(time.perf_counter() - wall0)
            cpus.append(_cpu_seconds() - cpu0)
        rows = evaluation.object_rows()
        worst = max(
            abs(rows[name][col] - value)
            for name, cols in expected["per_object"].items()
            for col, value in cols.items()
        )
        worst = max(
            worst,
            *(abs(evaluation.global_row()[c] - v) for c, v in expected["global"].items()),
        )
        print(
            f"workers={workers}: wall best {min(walls):.3f} s, median "
            f"{statistics.median(walls):.3f} s; CPU median {statistics.median(cpus):.3f} s; "
            f"{len(rows)} objects; J&F {evaluation.global_row()['J&F-Mean']:.6f}; "
            f"max |diff| vs official {worst:.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
