"""Plot a pretraining run's collapse curves and its tracking probe into one PNG (Pillow only).

Three panels over the optimiser step: the teacher's per-image entropy and the entropy of its
batch-mean distribution, with ``log K`` (uniform collapse: both reach it; healthy: the mean
stays near it while the per-image entropy falls); the teacher-student KL; and the probe's
mean J (``probe.jsonl``, written with ``--probe-davis``). Several runs can be drawn together,
one colour each.

    python -m tools.runs.plot_curves runs/a runs/b --out docs/pretrain_curves.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
WIDTH, PANEL_H, MARGIN_L, MARGIN_R, MARGIN_T = 900, 230, 70, 20, 30


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` points (the per-step values are noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


class Panel:
    """One plot area with axes, ticks and a title."""

    def __init__(self, draw, top, title, x_max, y_min, y_max):
        self.draw, self.top = draw, top
        self.left, self.right = MARGIN_L, WIDTH - MARGIN_R
        self.bottom = top + PANEL_H - 40
        self.x_max, self.y_min, self.y_max = max(x_max, 1), y_min, y_max
        draw.rectangle([self.left, top, self.right, self.bottom], outline=(0, 0, 0))
        draw.text((self.left, top - 16), title, fill=(0, 0, 0))
        for k in range(5):
            y = y_min + (y_max - y_min) * k / 4
            py = self.y(y)
            draw.line([self.left - 4, py, self.left, py], fill=(0, 0, 0))
            draw.text((5, py - 6), f"{y:.3g}", fill=(0, 0, 0))
            x = self.x_max * k / 4
            px = self.x(x)
            draw.line([px, self.bottom, px, self.bottom + 4], fill=(0, 0, 0))
            draw.text((px - 10, self.bottom + 6), f"{x:.0f}", fill=(0, 0, 0))

    def x(self, value: float) -> float:
        return self.left + (self.right - self.left) * value / self.x_max

    def y(self, value: float) -> float:
        span = (self.y_max - self.y_min) or 1.0
        value = min(max(value, self.y_min), self.y_max)
        return self.bottom - (self.bottom - self.top) * (value - self.y_min) / span

    def line(self, xs, ys, colour, width=2, dashed=False):
        points = [(self.x(a), self.y(b)) for a, b in zip(xs, ys, strict=True)]
        if dashed:
            for k in range(0, len(points) - 1, 2):
                self.draw.line(points[k : k + 2], fill=colour, width=width)
        elif len(points) > 1:
            self.draw.line(points, fill=colour, width=width)
        for p in points if len(points) < 30 else []:
            self.draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)


def plot(runs: list[Path], out: Path, labels: list[str], window: int = 10) -> None:
    logs = [read_jsonl(run / "log.jsonl") for run in runs]
    probes = [read_jsonl(run / "probe.jsonl") for run in runs]
    configs = [json.loads((run / "config.json").read_text()) for run in runs]
    log_ks = [math.log(c["config"]["model"]["out_dim"]) for c in configs]
    log_k = max(log_ks)
    x_max = max((rows[-1]["step"] for rows in logs if rows), default=1)
    kl_max = max((max(r["kl"] for r in rows) for rows in logs if rows), default=1.0)
    probe_values = [p["probe_j"] for rows in probes for p in rows] or [0.0, 1.0]
    p_lo, p_hi = min(probe_values), max(probe_values)
    pad = max(0.01, (p_hi - p_lo) * 0.2)
    image = Image.new("RGB", (WIDTH, MARGIN_T + 3 * PANEL_H + 20 * len(runs)), "white")
    draw = ImageDraw.Draw(image)
    entropy = Panel(
        draw,
        MARGIN_T,
        "teacher entropy, nats (solid: per image; dashed: of the batch mean; thin: the "
        f"run's log K); trailing mean of {window} steps",
        x_max,
        0.0,
        log_k * 1.05,
    )
    kl = Panel(draw, MARGIN_T + PANEL_H, "KL(teacher || student), nats", x_max, 0.0, kl_max)
    probe = Panel(
        draw,
        MARGIN_T + 2 * PANEL_H,
        "tracking probe: mean J on the first frames of 3 DAVIS dev clips",
        x_max,
        max(0.0, p_lo - pad),
        min(1.0, p_hi + pad),
    )
    for k, (rows, probe_rows, label) in enumerate(zip(logs, probes, labels, strict=True)):
        colour = COLOURS[k % len(COLOURS)]
        steps = [r["step"] for r in rows]
        entropy.line([0, x_max], [log_ks[k], log_ks[k]], colour, width=1)
        if rows:
            entropy.line(steps, smooth([r["teacher_entropy"] for r in rows], window), colour)
            if "teacher_mean_entropy" in rows[0]:
                mean_h = smooth([r["teacher_mean_entropy"] for r in rows], window)
                entropy.line(steps, mean_h, colour, width=1, dashed=True)
            kl.line(steps, smooth([r["kl"] for r in rows], window), colour)
        if probe_rows:
            probe.line([p["step"] for p in probe_rows], [p["probe_j"] for p in probe_rows], colour)
        y = MARGIN_T + 3 * PANEL_H - 10 + 20 * k
        draw.rectangle([MARGIN_L, y, MARGIN_L + 20, y + 10], fill=colour)
        draw.text((MARGIN_L + 28, y - 2), label, fill=(0, 0, 0))
    draw.text((WIDTH // 2 - 40, MARGIN_T + 3 * PANEL_H - 22), "optimiser step", fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of dinotrack pretrain")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument(
        "--label", action="append", default=None, help="one per run, in order (repeat)"
    )
    parser.add_argument("--window", type=int, default=10, help="steps of the trailing mean")
    args = parser.parse_args()
    labels = args.label or [str(r) for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error("give one --label per run")
    plot(args.runs, args.out, labels, args.window)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
