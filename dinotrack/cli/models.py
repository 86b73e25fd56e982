"""``dinotrack models``: the known backbones, as a table or one in full."""

from __future__ import annotations

import argparse

from dinotrack.config import PRESETS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the known backbones",
        description="List the known backbones, or describe one in full.",
    )
    p.add_argument("name", nargs="?", default=None, help="describe this backbone in full")
    p.add_argument(
        "--all",
        action="store_true",
        help="also list the tiny random test_* backbones (for tests and benchmarks)",
    )
    p.set_defaults(func=run_models)


def weights_source(spec) -> str:
    """Where a backbone's weights come from, in a few words (for ``dinotrack models``)."""
    if spec.random_weights:
        return "random"
    if spec.local_file is not None:
        return "shipped"
    if spec.hf_hub_id is not None:
        return "HF hub"
    return "download" if spec.url is not None else "none"


def run_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from dinotrack.models.hub import hub_weights_path
    from dinotrack.models.registry import get_backbone_spec, list_backbones

    console = Console()
    if args.name is not None:
        spec = get_backbone_spec(args.name)
        settings = PRESETS[spec.preset]
        rows = {
            "name": spec.name,
            "description": spec.description,
            "timm architecture": spec.timm_arch,
            "patch size": spec.patch_size,
            "feature channels": spec.embed_dim,
            "licence": spec.license,
            "preset": f"{spec.preset} ({', '.join(f'{k}={v}' for k, v in settings.items())})",
            "weights": spec.url or spec.hf_hub_id or spec.local_file or "random (tests)",
            "cache path": hub_weights_path(spec) if spec.url or spec.hf_hub_id else "-",
            "mean / std": f"{spec.mean} / {spec.std}",
            "position rule": spec.pos_embed + " (unused by RoPE backbones)",
        }
        for key, value in rows.items():
            console.print(f"{key:>18}: {value}", soft_wrap=True, highlight=False)
        return 0
    table = Table(
        caption="weights: HF hub = a timm tag, into the Hugging Face hub cache;\n"
        "download = the official URL, into torch's hub cache.\n"
        "`dinotrack models NAME` describes one backbone in full."
        + ("" if args.all else "\nThe random test_* backbones: `dinotrack models --all`.")
    )
    table.add_column("name", no_wrap=True)
    table.add_column("patch", no_wrap=True, justify="right")
    table.add_column("dim", no_wrap=True, justify="right")
    table.add_column("licence", no_wrap=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    for name in list_backbones():
        spec = get_backbone_spec(name)
        if spec.random_weights and not args.all:
            continue
        dim = "?" if spec.embed_dim is None else str(spec.embed_dim)
        licence = spec.license.split(" (")[0]  # the details: `dinotrack models NAME`
        row = (name, str(spec.patch_size), dim, licence, spec.preset, weights_source(spec))
        table.add_row(*row)
    console.print(table)
    return 0
