"""dinotrack.cli.common: the one error, Ctrl-C and exit-status rule of every command."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

from dinotrack.cli import build_parser
from dinotrack.cli.common import EXIT_BUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, run_command
from dinotrack.errors import InputError, MissingFileError
from pretrain.cli import ON_INTERRUPT


def parser_running(func, **defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    parser.set_defaults(func=func, **defaults)
    return parser


def fails_with(error: BaseException):
    def func(args):
        raise error

    return func


def test_statuses_of_success_user_error_and_ctrl_c(capsys):
    parser = parser_running(lambda args: None)
    assert run_command(parser, parser.parse_args([])) == EXIT_OK == 0
    parser = parser_running(lambda args: 3)
    assert run_command(parser, parser.parse_args([])) == 3  # a command's own status is kept
    assert capsys.readouterr().err == ""

    parser = parser_running(fails_with(InputError("bad mask\nsecond line")))
    assert run_command(parser, parser.parse_args([]), prog="tool") == EXIT_ERROR == 2
    assert capsys.readouterr().err == "tool: error: bad mask second line\n"
    parser = parser_running(fails_with(MissingFileError("m.png does not exist")))
    assert run_command(parser, parser.parse_args([])) == 2
    assert capsys.readouterr().err == "dinotrack: error: m.png does not exist\n"
    parser = parser_running(fails_with(PermissionError("cannot write out/: permission denied")))
    assert run_command(parser, parser.parse_args([])) == 2  # the system's answer about files
    assert capsys.readouterr().err.count("\n") == 1

    parser = parser_running(fails_with(KeyboardInterrupt()))
    assert run_command(parser, parser.parse_args([])) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "dinotrack: interrupted; no output was published\n"
    parser = parser_running(fails_with(KeyboardInterrupt()), on_interrupt="resume later")
    assert run_command(parser, parser.parse_args([]), prog="pretrain") == 130
    assert capsys.readouterr().err == "pretrain: interrupted; resume later\n"


@pytest.mark.parametrize(
    "bug",
    [
        KeyError("k"),
        ValueError("shapes differ"),
        RuntimeError("CUDA kernel failed"),
        TypeError("t"),
    ],
)
def test_errors_that_are_not_the_users_are_bugs_with_a_traceback(bug, capsys):
    parser = parser_running(fails_with(bug))
    assert run_command(parser, parser.parse_args([]), prog="tool") == EXIT_BUG == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert f"{type(bug).__name__}: " in err
    assert err.splitlines()[-1].startswith("tool: this is a bug in dinotrack")
    assert "report it" in err.splitlines()[-1]


@pytest.mark.parametrize(
    "error, size",
    [
        (MemoryError(), None),
        (
            RuntimeError(
                "[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to "
                "allocate 1073741824 bytes. Error code 12"
            ),
            "you tried to allocate 1073741824 bytes",
        ),
        (
            torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 139 GiB total capacity)"
            ),
            "Tried to allocate 20.00 GiB",
        ),
    ],
)
def test_out_of_memory_is_one_line_naming_the_size_and_what_to_lower(error, size, capsys):
    parser = parser_running(fails_with(error))
    assert run_command(parser, parser.parse_args([])) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dinotrack: error: out of memory") and "--short-side" in err
    if size:
        assert size in err


def test_library_messages_name_flags_on_the_command_line(capsys):
    message = "short_side=4000 would feed 8000x4000 pixels; lower short_side, or pass weights=PATH"
    parser = parser_running(fails_with(InputError(message)), short_side=None, weights=None)
    assert run_command(parser, parser.parse_args([])) == 2
    assert capsys.readouterr().err == (
        "dinotrack: error: --short-side 4000 would feed 8000x4000 pixels; lower --short-side, "
        "or pass --weights PATH\n"
    )


def test_debug_shows_the_traceback_of_user_errors(monkeypatch):
    monkeypatch.setenv("DINOTRACK_DEBUG", "1")
    parser = parser_running(fails_with(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        run_command(parser, parser.parse_args([]))


def test_no_sub_command_prints_the_help(capsys):
    parser = argparse.ArgumentParser(prog="demo", description="the demo tool")
    assert run_command(parser, parser.parse_args([])) == 2
    assert "the demo tool" in capsys.readouterr().err


def test_warnings_are_one_line_with_the_program_name(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after
    parser = parser_running(lambda args: None)
    assert run_command(parser, parser.parse_args([]), prog="pretrain") == 0
    line = warnings.formatwarning(UserWarning("mask resized"), UserWarning, "cli.py", 7)
    assert line == "pretrain: warning: mask resized\n"


def test_pretrain_says_how_to_resume_after_ctrl_c():
    args = build_parser().parse_args(["pretrain", "--data", "videos"])
    assert args.on_interrupt == ON_INTERRUPT and "resume" in ON_INTERRUPT
    assert not hasattr(build_parser().parse_args(["models"]), "on_interrupt")


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["segment", "v.mp4", "--mask", "m.png", "--out", "o", "--save", "rle"], "--save"),
        (["segment", "v.mp4", "--mask", "m.png", "--out", "o", "--max-frames", "0"], "--max-"),
        (["segment", "v.mp4", "--mask", "m.png"], "--out"),
        (["segment", "v.mp4", "--mask", "m.png", "--out", "o", "--topk", "x"], "--topk"),
        (["models", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_argument_errors_are_one_line_with_status_2(argv, flag, capsys):
    from dinotrack.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "error:" in err and flag in err and "--help" in err
