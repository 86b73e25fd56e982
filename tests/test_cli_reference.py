"""docs/cli.md: generated from the parsers, current, and holding every flag of every usage."""

from __future__ import annotations

import re

from dinotrack.cli import build_parser
from tools.docs import cli_reference


def test_committed_reference_is_what_the_parsers_give_now():
    committed = cli_reference.OUTPUT.read_text()
    assert committed == cli_reference.render(), (
        f"docs/cli.md is out of date with the parsers: run `{cli_reference.REGENERATE}` "
        "and commit docs/cli.md"
    )


def walk(parser):
    """(prog, parser) of the parser and of every sub-command below it."""
    yield parser.prog, parser
    for _, _, child in cli_reference.sub_commands(parser):
        yield from walk(child)


def test_every_flag_of_every_help_is_in_its_section():
    sections = {}
    for block in cli_reference.render().split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        sections[heading] = body
    commands = dict(walk(build_parser()))
    assert {"dinotrack segment", "dinotrack eval davis", "dinotrack pretrain"} <= set(commands)
    assert set(sections) == set(commands)
    flag = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
    for prog, parser in commands.items():
        shown = set(flag.findall(parser.format_usage())) | {"--help"}
        arguments = re.findall(r"^\| `([^`]*)`", sections[prog], flags=re.MULTILINE)
        documented = set(flag.findall(" ".join(arguments)))
        missing = sorted(shown - documented)
        assert not missing, f"{prog}: usage shows {missing}, docs/cli.md does not"


def test_check_mode_fails_on_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text(cli_reference.render().replace("--short-side", "--short-edge"))
    monkeypatch.setattr(cli_reference, "OUTPUT", stale)
    assert cli_reference.main(["--check"]) == 1
    assert cli_reference.REGENERATE in capsys.readouterr().err
    assert cli_reference.main([]) == 0
    assert cli_reference.main(["--check"]) == 0
