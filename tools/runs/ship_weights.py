"""Turn a pretraining run's exported backbone into a shipped local model under ``weights/``.

Writes ``weights/NAME.pth`` (the teacher backbone in fp16, the format ``dinotrack --weights``
loads, with the run's provenance) and ``weights/NAME.md`` (its card: data, steps, wall time,
hardware, dev J&F when given), then prints the registry entry to add to
``dinotrack/models/registry.py`` so that ``--model NAME`` finds the file.

    python -m tools.runs.ship_weights runs/s8 --name dinotrack_vits8_davis16 \\
        --scores runs/eval-s8/scores-dev.json --baseline runs/eval-random/scores-dev.json

Files over 16 MiB that must travel between machines: ``split -b 15M FILE FILE.part-`` there,
``cat FILE.part-* > FILE`` here, and compare ``sha256sum``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from dinotrack.io.atomic import atomic_output
from dinotrack.models.build import create_model, resolve_spec
from dinotrack.models.checkpoints import load_into, read_checkpoint, save_backbone_export
from dinotrack.models.hub import file_sha256

REPO = Path(__file__).resolve().parents[2]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _curve(log: Path, points: int = 8) -> list[dict[str, float]]:
    """About ``points`` evenly spaced rows of the run's log (step, loss, entropy, KL)."""
    if not log.is_file():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    stride = max(1, len(rows) // points)
    picked = rows[::stride]
    if picked[-1] is not rows[-1]:
        picked.append(rows[-1])
    keys = ("step", "epoch", "loss", "teacher_entropy", "teacher_mean_entropy", "kl")
    return [{k: row[k] for k in keys if k in row} for row in picked]


def _probe(path: Path) -> list[dict[str, float]]:
    """The run's tracking-probe lines (``probe.jsonl``, written with ``--probe-davis``)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _jf(path: Path | None) -> float | None:
    if path is None:
        return None
    return float(json.loads(path.read_text())["global"]["J&F-Mean"])


def _short_side(path: Path | None) -> int | None:
    if path is None:
        return None
    return json.loads(path.read_text()).get("config", {}).get("short_side")


def card_text(name: str, export: dict[str, Any], run: dict[str, Any] | None, **extra: Any) -> str:
    """The markdown card of a shipped backbone."""
    info, arch = export["info"], export["backbone"]
    resolved = (run or {}).get("resolved", {})
    config = (run or {}).get("config", {})
    lines = [
        f"# {name}",
        "",
        f"A {arch['timm_arch']} (patch {arch['patch_size']}) pretrained with `dinotrack "
        "pretrain` (DINO self-distillation); this file is the teacher backbone in fp16.",
        "",
        "| | |",
        "| --- | --- |",
        f"| data | {', '.join(info.get('data', [])) or 'unknown'} |",
        f"| steps | {info.get('steps')} ({info.get('epochs', 0):.1f} epochs) |",
        f"| global batch | {info.get('global_batch')} on {info.get('world_size')} process(es) |",
        f"| wall time | {info.get('train_time_s')} s of training |",
        f"| hardware | {info.get('hardware', info.get('device'))} |",
        f"| precision | {resolved.get('precision', 'unknown')} |",
        f"| final loss | {info.get('loss')} |",
        f"| sha256 | `{extra['sha256']}` |",
    ]
    size = f" (short side {extra['short_side']} px)" if extra.get("short_side") else ""
    if extra.get("jf") is not None:
        lines.append(f"| DAVIS-2016 dev J&F{size} | {extra['jf']:.3f} |")
    if extra.get("baseline_jf") is not None:
        lines.append(f"| same architecture, random weights{size} | {extra['baseline_jf']:.3f} |")
    curve = extra.get("curve") or []
    if curve:
        keys = ("loss", "teacher_entropy", "teacher_mean_entropy", "kl")
        lines += ["", "Training curve (from the run's log.jsonl; entropies in nats):", ""]
        lines += [
            "| step | loss | teacher entropy (per image) | of the batch mean | KL |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in curve:
            values = [row.get(k, float("nan")) for k in keys]
            lines.append(f"| {row.get('step')} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    probe = extra.get("probe") or []
    if probe:
        lines += ["", "Tracking probe during training (probe.jsonl: mean J, first frames):", ""]
        lines += ["| step | probe J |", "| --- | --- |"]
        lines += [f"| {row['step']} | {row['probe_j']:.4f} |" for row in probe]
    if extra.get("notes"):
        lines += ["", extra["notes"].strip()]
    if config:
        lines += ["", "Run configuration:", "", "```json", json.dumps(config, indent=1), "```"]
    lines += [
        "",
        f"Use: `dinotrack segment VIDEO --mask M.png --model {name}`. The training frames are "
        "DAVIS videos (CC BY 4.0); measure on other sequences than the ones it saw.",
        "",
    ]
    return "\n".join(lines)


def ship(
    run_dir: Path,
    name: str,
    out_dir: Path,
    scores: Path | None = None,
    baseline: Path | None = None,
    notes: str | None = None,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``out_dir/NAME.pth`` (fp16) and ``out_dir/NAME.md`` from ``run_dir``'s export;
    ``notes`` (markdown: the recipe's reasons, caveats) goes into the card.

    Returns:
        The two paths written, and the backbone's architecture record.
    """
    source = run_dir / "backbone.pth" if run_dir.is_dir() else run_dir
    export = read_checkpoint(source)
    if export.get("format") != "dinotrack.backbone":
        raise ValueError(f"{source} is not a backbone exported by dinotrack pretrain")
    net = create_model(resolve_spec(None, export, str(source)))
    load_into(net, export, source)
    shipped = {
        "backbone": export["backbone"],
        "info": {**export["info"], "shipped_as": name, "stored_dtype": "float16"},
    }
    weights = save_backbone_export(
        out_dir / f"{name}.pth", net, shipped["backbone"], shipped["info"], dtype=torch.float16
    )
    run = _read_json(source.parent / "config.json")
    text = card_text(
        name,
        shipped,
        run,
        sha256=file_sha256(weights),
        jf=_jf(scores),
        baseline_jf=_jf(baseline),
        short_side=_short_side(scores),
        curve=_curve(source.parent / "log.jsonl"),
        probe=_probe(source.parent / "probe.jsonl"),
        notes=notes,
    )
    card = out_dir / f"{name}.md"
    with atomic_output(card) as tmp:
        Path(tmp).write_text(text)
    return weights, card, shipped["backbone"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run directory (or its backbone.pth)")
    parser.add_argument("--name", required=True, help="registry name, e.g. dinotrack_vits8_davis16")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "dinotrack" / "weights",
        help="default: dinotrack/weights/ (package data)",
    )
    parser.add_argument("--scores", type=Path, help="scores-dev.json of `dinotrack eval davis`")
    parser.add_argument("--baseline", type=Path, help="scores-dev.json with random weights")
    parser.add_argument("--notes", type=Path, help="markdown file to include in the card")
    args = parser.parse_args(argv)
    notes = args.notes.read_text() if args.notes else None
    weights, card, arch = ship(args.run, args.name, args.out, args.scores, args.baseline, notes)
    print(f"wrote {weights} ({weights.stat().st_size / 2**20:.1f} MiB) and {card}")
    print("register it in dinotrack/models/registry.py:")
    print(
        f"    BackboneSpec(name={args.name!r}, timm_arch={arch['timm_arch']!r}, "
        f"patch_size={arch['patch_size']}, local_file={weights.name!r}, "
        f"model_kwargs=tuple(sorted({arch['model_kwargs']!r}.items())), ...)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
