"""Running the dinotrack CLI in tests: the fast flags and one in-process runner."""

from __future__ import annotations

from dinotrack.cli import main


def tiny_flags(short_side: int = 64) -> list[str]:
    """Flags that make any tracking command quick: the random test backbone, a small network
    input, the CPU."""
    return ["--model", "test_vit_tiny", "--short-side", str(short_side), "--device", "cpu"]


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``dinotrack ARGS`` in this process (arguments may be paths or numbers); returns the exit
    status and what it printed on stdout and stderr."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
