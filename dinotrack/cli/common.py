"""The toolkit that every command-line entry point shares.

``dinotrack`` (``segment``, ``attention``, ``models``, ``export``, ``studio``), its plug-in
sub-commands ``eval`` and ``pretrain``, and ``python -m eval`` / ``python -m pretrain`` all run
through :func:`run_command`, which keeps one rule for how a command ends:

- bad input (a :class:`dinotrack.errors.DinotrackError`) and the system's own file errors
  (``OSError``: permission denied, disk full...) are one line on stderr and exit status 2;
  the library speaks of parameters (``short_side=4000``), and the line names the flags
  (``--short-side 4000``);
- running out of memory is one line that says what was being allocated and what to lower,
  exit status 2;
- Ctrl-C is one line and status 130, SIGTERM status 143 (outputs being written are discarded);
- anything else is a bug: its traceback, a line asking to report it, and exit status 1.

``DINOTRACK_DEBUG=1`` shows the traceback of every error. Commands that track build their
tracker from the same flags (:func:`add_tracker_arguments`, :func:`build_tracker`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from dinotrack.config import (
    GROUP_MERGES,
    PRECISIONS,
    PRESET_FIELDS,
    PRESETS,
    RESIZE_RULES,
    TrackerConfig,
    preset_config,
)
from dinotrack.errors import DinotrackError, InputError

USER_ERRORS = (DinotrackError, OSError)
"""Errors that are the user's to fix: one line, exit status 2, no traceback."""

EXIT_OK, EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
"""Exit statuses of every command: success, a bug, a user error, Ctrl-C, SIGTERM."""

REPORT_BUG = (
    "this is a bug in dinotrack {version}, not a problem with your input: please report it "
    "with the traceback above and the command you ran to the dinotrack issue tracker"
)

INTERRUPTED = "no output was published"
"""What :func:`run_command` says after Ctrl-C, unless the command sets ``on_interrupt`` (a
parser default) to its own sentence."""


def run_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, prog: str = "dinotrack"
) -> int:
    """Run parsed arguments' ``func`` with the CLI's error handling; returns the exit status.

    Args:
        parser: The parser, for its help when no sub-command was given.
        args: Parsed arguments; ``args.func(args)`` runs the command and returns its status
            (None counts as 0).
        prog: Program name that starts the error and warning lines.

    Returns:
        :data:`EXIT_OK` (or the command's own status), :data:`EXIT_ERROR` for a user error
        (:data:`USER_ERRORS`) or no sub-command, :data:`EXIT_INTERRUPTED` on Ctrl-C,
        :data:`EXIT_TERMINATED` on SIGTERM (handled like Ctrl-C: outputs being written are
        discarded).
    """
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"{prog}: warning: {message}\n"
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        with sigterm_as_interrupt():
            return int(args.func(args) or EXIT_OK)
    except Exception as exc:
        if os.environ.get("DINOTRACK_DEBUG"):
            raise
        if is_out_of_memory(exc):
            print(f"{prog}: error: {out_of_memory_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        if not isinstance(exc, USER_ERRORS):
            traceback.print_exc()
            from dinotrack import __version__

            print(f"{prog}: {REPORT_BUG.format(version=__version__)}", file=sys.stderr)
            return EXIT_BUG
        print(f"{prog}: error: {flag_words(error_line(exc), args)}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print(f"{prog}: terminated; {getattr(args, 'on_interrupt', INTERRUPTED)}", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {getattr(args, 'on_interrupt', INTERRUPTED)}", file=sys.stderr)
        return EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every
    output being written is discarded the same way."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere
    nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def error_line(exc: BaseException) -> str:
    """The message of a user error in one line. An error raised in a DataLoader worker comes
    wrapped with the worker's traceback; its last line is the original error."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if re.match(r"[\w.]+(Error|Exception): ", last) else last
    return " ".join(text.split("\n"))


def flag_words(message: str, args: argparse.Namespace) -> str:
    """A library message in the words of the command line: ``name=value`` of a parameter
    that a flag sets becomes ``--name value``, and a bare ``some_name`` (with an underscore)
    becomes ``--some-name``.

    Args:
        message: The error's message.
        args: The parsed flags; only their names are translated.
    """
    for name in sorted(vars(args), key=len, reverse=True):
        if name in ("func", "command", "input"):
            continue
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![\w.-]){name}=\s?", flag + " ", message)
        if "_" in name:
            message = re.sub(rf"(?<![\w.-]){name}\b", flag, message)
    return re.sub(" {2,}", " ", message)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out (CPU or GPU)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def out_of_memory_line(exc: BaseException) -> str:
    """One line for running out of memory: what was being allocated, and what to lower."""
    text = " ".join(str(exc).split())
    size = re.search(r"(Tried to allocate [\d.]+ \w+|you tried to allocate \d+ bytes)", text)
    where = f" ({size.group(1)})" if size else ""
    return (
        f"out of memory{where}: lower --short-side (the frame size the network sees), "
        "--batch-size or --n-last-frames, use --precision bf16/fp16 on a GPU, or a smaller "
        "--model"
    )


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the backbone, device and propagation flags shared by every command that tracks."""
    defaults = TrackerConfig()
    group = parser.add_argument_group("backbone")
    group.add_argument(
        "--model",
        default=None,
        help="backbone name (see `dinotrack models`); default: the architecture recorded in "
        "--weights, else dino_vits8",
    )
    group.add_argument(
        "--weights",
        default=None,
        help="checkpoint to load: an official DINO, DINOv2 or DINOv3 release file, a timm state "
        "dict (.pth or .safetensors), or a backbone.pth from `dinotrack pretrain`",
    )
    group.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    group.add_argument(
        "--precision",
        default=defaults.precision,
        choices=PRECISIONS,
        help="backbone precision; auto: bf16 on CUDA (fp16 on GPUs without bf16), fp32 on the "
        "CPU (default %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="frames per forward pass (default %(default)s)",
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="compile the backbone with torch.compile (see docs/benchmarks.md for when it pays)",
    )
    algo = parser.add_argument_group(
        "propagation (defaults: the preset's; each backbone has its paper's preset)"
    )
    presets = ", ".join(
        f"{name}: " + " ".join(f"{k}={v}" for k, v in values.items())
        for name, values in PRESETS.items()
    )
    algo.add_argument(
        "--preset",
        default=None,
        choices=tuple(PRESETS),
        help=f"propagation protocol ({presets}); default: the backbone's (dino for DINO, "
        "dinov3 for DINOv2 and DINOv3); the flags below override single settings",
    )
    algo.add_argument(
        "--n-last-frames",
        type=int,
        default=None,
        help="previous frames kept as context besides the first",
    )
    algo.add_argument(
        "--radius",
        type=int,
        default=None,
        help="half-side of the search window, in patches; negative: whole frame",
    )
    algo.add_argument(
        "--topk",
        type=positive_int,
        default=None,
        help="most similar source patches kept per target patch",
    )
    algo.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="softmax temperature of the affinity",
    )
    algo.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="network input's short side in pixels",
    )
    algo.add_argument(
        "--resize-rule",
        default=defaults.resize_rule,
        choices=RESIZE_RULES,
        help="aspect: one scale for both sides, rounded to the patch size; official: the DINO "
        "script's (long side floored to a multiple of 64) (default %(default)s)",
    )
    algo.add_argument(
        "--max-prompt-frames",
        type=positive_int,
        default=defaults.max_prompt_frames,
        help="prompted frames each object group keeps in memory, the first and the most "
        "recent (default %(default)s)",
    )
    algo.add_argument(
        "--group-merge",
        default=defaults.group_merge,
        choices=GROUP_MERGES,
        help="background of objects first prompted on different frames: min or product of "
        "the groups' (default %(default)s)",
    )
    algo.add_argument(
        "--redetect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="look for an object again once propagation has lost it: in the whole frame, "
        "among regions that look like it and moved, nearest to where its motion puts it "
        "(default: the preset's; on in offline, off in the DINO protocol)",
    )
    algo.add_argument(
        "--pos-embed",
        default=None,
        choices=("dino", "timm"),
        help="position-embedding resampling: dino (the official rule) or timm "
        "(default: the backbone's own rule)",
    )


_NEGATIVE_PROMPT = re.compile(r"-[0-9]+:")
"""A ``--prompt`` value whose frame counts from the end."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with dinotrack's rule for bad input: one error line and exit status 2 (the
    usage block is for ``--help``); sub-command parsers made from it are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):
        """As argparse's, with ``--prompt -1:m.png`` read as ``--prompt=-1:m.png`` (argparse
        takes a value that starts with "-" for a flag)."""
        given = sys.argv[1:] if args is None else list(args)
        joined: list[str] = []
        for arg in given:
            if joined and joined[-1] == "--prompt" and _NEGATIVE_PROMPT.match(arg):
                joined[-1] = f"--prompt={arg}"
            else:
                joined.append(arg)
        return super().parse_known_args(joined, namespace)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def tracker_config_from_args(
    args: argparse.Namespace, default_preset: str = "dino"
) -> TrackerConfig:
    """The :class:`TrackerConfig` described by the flags of :func:`add_tracker_arguments`.

    Args:
        args: The parsed flags.
        default_preset: The preset when ``--preset`` is not given (the backbone's own).
    """
    given = {k: getattr(args, k) for k in PRESET_FIELDS if getattr(args, k) is not None}
    return preset_config(
        args.preset or default_preset,
        **given,
        resize_rule=args.resize_rule,
        pos_embed=args.pos_embed,
        precision=args.precision,
        batch_size=args.batch_size,
        max_prompt_frames=args.max_prompt_frames,
        group_merge=args.group_merge,
        compile=args.compile,
    )


def check_tracker_flags(args: argparse.Namespace) -> None:
    """Refuse bad flags of :func:`add_tracker_arguments` and a missing or unreadable
    ``--weights`` file: what needs no model, checked before one is loaded (a command calls
    this with its other checks, before reading its inputs)."""
    from dinotrack.io.images import check_input_path

    tracker_config_from_args(args)
    if args.weights is not None:
        check_input_path(args.weights, "--weights file")


def build_tracker(args: argparse.Namespace):
    """A :class:`dinotrack.Tracker` from the flags of :func:`add_tracker_arguments`; the
    propagation preset is ``--preset`` or, by default, the backbone's."""
    from dinotrack.models.build import load_backbone
    from dinotrack.tracking.tracker import Tracker

    check_tracker_flags(args)  # bad flags are refused before any weights are loaded
    net, spec = load_backbone(args.model, args.weights)
    config = tracker_config_from_args(args, spec.preset)
    return Tracker(net, spec, config, device=args.device)


def check_not_input(output: Path, source: str | os.PathLike[str], flag: str) -> None:
    """Refuse an output path that is the input itself (a video, or a directory of frames).

    Raises:
        ValueError: ``output`` and ``source`` are the same file or directory.
    """
    if output.exists() and os.path.samefile(output, source):
        raise InputError(f"{flag} {output} is the input; name another output")
