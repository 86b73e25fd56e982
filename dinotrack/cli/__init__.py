"""The ``dinotrack`` command line: one module per sub-command, each with a
``register(subparsers)`` that adds its parser (whose ``func(args) -> int`` runs it).

- :mod:`dinotrack.cli.segment` (``--batch``: :mod:`dinotrack.cli.batch`),
  :mod:`dinotrack.cli.attention`, :mod:`dinotrack.cli.models`, :mod:`dinotrack.cli.export`;
- what every command shares (errors, exit codes, the tracker's flags): :mod:`dinotrack.cli.common`;
- other packages (``eval``, ``pretrain``) add sub-commands through the ``dinotrack.commands``
  entry-point group, with the same ``register``.

Parsing imports no torch: ``dinotrack --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import warnings
from collections.abc import Sequence

from dinotrack import __version__
from dinotrack.cli import attention, export, models, segment
from dinotrack.cli.common import ArgumentParser, run_command
from dinotrack.results.writer import START_MASK_NAME
from dinotrack.studio import cli as studio

__all__ = ["START_MASK_NAME", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``dinotrack`` parser with every sub-command, plugins included."""
    parser = ArgumentParser(
        prog="dinotrack", description="Video object segmentation with DINO ViT features."
    )
    parser.add_argument("--version", action="version", version=f"dinotrack {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (segment, attention, models, export, studio):
        command.register(subparsers)
    for entry in sorted(
        importlib.metadata.entry_points(group="dinotrack.commands"), key=lambda e: e.name
    ):
        try:
            register = entry.load()
        except ImportError as exc:  # a plugin that cannot import must not break the rest
            warnings.warn(f"sub-command {entry.name!r} is unavailable: {exc}", stacklevel=2)
            continue
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input or failure, 130 interrupted)."""
    parser = build_parser()
    return run_command(parser, parser.parse_args(argv))
