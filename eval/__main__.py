"""``python -m eval score|davis ...``: the ``dinotrack eval`` commands, also where dinotrack is
importable but not installed (no ``dinotrack`` script or entry points, e.g. a source checkout
on ``PYTHONPATH``)."""

import sys

from dinotrack.cli.common import ArgumentParser, run_command
from eval.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m")
    register(parser.add_subparsers(dest="command", metavar="eval"))
    args = sys.argv[1:] if argv is None else argv
    return run_command(parser, parser.parse_args(["eval", *args]))


if __name__ == "__main__":
    raise SystemExit(main())
