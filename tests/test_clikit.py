"""dinotrack.cli.common: the one error, Ctrl-C and exit-status rule of every command."""

from __future__ import annotations

import argparse
import warnings

import pytest

from dinotrack.cli import build_parser
from dinotrack.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, run_command
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

    parser = parser_running(fails_with(ValueError("bad mask\nsecond line")))
    assert run_command(parser, parser.parse_args([]), prog="tool") == EXIT_ERROR == 2
    assert capsys.readouterr().err == "tool: error: bad mask second line\n"

    parser = parser_running(fails_with(KeyboardInterrupt()))
    assert run_command(parser, parser.parse_args([])) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "dinotrack: interrupted; no output was published\n"
    parser = parser_running(fails_with(KeyboardInterrupt()), on_interrupt="resume later")
    assert run_command(parser, parser.parse_args([]), prog="pretrain") == 130
    assert capsys.readouterr().err == "pretrain: interrupted; resume later\n"


def test_errors_that_are_not_the_users_keep_their_traceback(monkeypatch, capsys):
    parser = parser_running(fails_with(KeyError("bug")))
    with pytest.raises(KeyError, match="bug"):
        run_command(parser, parser.parse_args([]))
    monkeypatch.setenv("DINOTRACK_DEBUG", "1")  # and user errors too, when debugging
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
