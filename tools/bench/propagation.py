"""Benchmark the propagation step: windowed (dinotrack) vs the official dense formulation.

Part 1 (same run, same inputs): grid 60x106, 384 channels, 8 context frames, r=12, k=5; time
per step (median of repeats) and whether the labels are identical.
Part 2: peak memory of one windowed step at a 1080p /8 grid (135x240), measured in a fresh
process; the dense formulation's affinity alone would need T x N^2 x 4 bytes.
Part 3: the two layouts of the similarity products (one per row of target tiles, used on the
CPU; one per run of rows, used on a GPU) on `--device`: time per step, ATen operator calls
and batched products per step (each a kernel launch on a GPU), and whether they agree.

    python -m tools.bench.propagation [--repeats 5] [--skip-1080p] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from dinotrack import propagate_labels
from dinotrack.tracking.propagation import product_layout
from tools.bench.official_protocol import dense_propagation, neighbourhood_mask
from tools.bench.processes import last_json_line, peak_rss_gb, run_module


def inputs(h, w, channels=384, n_ctx=8, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth-ish features so that neighbourhoods are meaningful, plus noise.
    base = torch.randn(channels, h // 4 + 1, w // 4 + 1, generator=g)
    base = F.interpolate(base[None], size=(h, w), mode="bilinear")[0]
    target = base + 0.5 * torch.randn(channels, h, w, generator=g)
    context = base[None] + 0.5 * torch.randn(n_ctx, channels, h, w, generator=g)
    labels = torch.rand(n_ctx, k, h, w, generator=g)
    labels = labels / labels.sum(1, keepdim=True)
    return target, context, labels


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def compare(repeats: int) -> dict:
    h, w = 60, 106
    target, context, labels = inputs(h, w)
    mask = neighbourhood_mask(h, w, 12)
    with torch.inference_mode():
        fast_s, fast = timed(lambda: propagate_labels(target, context, labels), repeats)
        dense_s, dense = timed(
            lambda: dense_propagation(
                target.reshape(384, -1).T, context.reshape(8, 384, -1), labels, mask
            ),
            max(1, repeats // 2),
        )
    return {
        "grid": [h, w],
        "windowed_s": fast_s,
        "dense_s": dense_s,
        "speedup": dense_s / fast_s,
        "max_abs_diff": float((fast - dense).abs().max()),
        "identical_argmax": bool(torch.equal(fast.argmax(0), dense.argmax(0))),
        "threads": torch.get_num_threads(),
    }


def layouts(device: torch.device, repeats: int) -> dict:
    """Both product layouts on one device, side by side, at the 60x106 grid."""
    target, context, labels = (x.to(device) for x in inputs(60, 106))
    results = {}
    for layout in ("per_row", "per_run"):

        def step(layout=layout):
            out = propagate_labels(target, context, labels, layout=layout)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        with torch.inference_mode():
            step()  # warm-up
            seconds, out = timed(step, repeats)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                step()
        counts = {e.key: e.count for e in prof.key_averages()}
        results[layout] = {
            "seconds": seconds,
            "aten_ops": sum(n for key, n in counts.items() if key.startswith("aten::")),
            "bmm": counts.get("aten::bmm", 0),
            "out": out.cpu(),
        }
    a, b = results["per_row"].pop("out"), results["per_run"].pop("out")
    results["max_abs_diff"] = float((a - b).abs().max())
    results["default"] = product_layout(device)
    return results


def step_1080p() -> None:
    """Child process: one windowed step at 135x240, print peak RSS."""
    target, context, labels = inputs(135, 240, k=3)
    before = peak_rss_gb()
    start = time.perf_counter()
    with torch.inference_mode():
        propagate_labels(target, context, labels)
    elapsed = time.perf_counter() - start
    result = {"seconds": elapsed, "peak_rss_gb": peak_rss_gb(), "inputs_rss_gb": before}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-1080p", action="store_true")
    parser.add_argument("--device", default="cpu", help="device of part 3 (parts 1-2: the CPU)")
    parser.add_argument("--child-1080p", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_1080p:
        step_1080p()
        return
    result = compare(args.repeats)
    print(
        f"propagation step 60x106, C=384, 8 context frames, r=12, k=5 "
        f"({result['threads']} threads):\n"
        f"  dense (official) {result['dense_s']:.3f} s   windowed {result['windowed_s']:.3f} s"
        f"   speed-up {result['speedup']:.1f}x\n"
        f"  identical argmax labels: {result['identical_argmax']}, "
        f"max |soft label diff| {result['max_abs_diff']:.2e}"
    )
    device = torch.device(args.device)
    result = layouts(device, args.repeats)
    print(f"product layouts on {device} (default there: {result['default']}):")
    for name in ("per_row", "per_run"):
        r = result[name]
        print(
            f"  {name:8s} {r['seconds']:.4f} s/step, {r['aten_ops']} ATen calls, "
            f"{r['bmm']} batched products"
        )
    print(f"  max |soft label diff| between layouts {result['max_abs_diff']:.2e}")
    if not args.skip_1080p:
        child = last_json_line(run_module(__spec__.name, "--child-1080p"))
        dense_gb = 8 * (135 * 240) ** 2 * 4 / 1e9
        print(
            f"1080p /8 grid 135x240: windowed step {child['seconds']:.2f} s, process peak RSS "
            f"{child['peak_rss_gb']:.2f} GB (inputs alone {child['inputs_rss_gb']:.2f} GB); "
            f"dense affinity alone would be {dense_gb:.1f} GB"
        )


if __name__ == "__main__":
    main()
