"""Write docs/cli.md, the reference of every ``dinotrack`` command and flag, from the parsers.

Walks :func:`dinotrack.cli.build_parser` (the plug-in commands ``eval`` and ``pretrain``
included) and writes, per command, its summary, its usage line and a table per argument group
with the flags and their help, as ``--help`` prints them. ``tests/test_cli_reference.py``
fails when the committed file differs from what this writes now; after changing a flag, run

    python -m tools.docs.cli_reference

(``--check`` only compares, and exits 1 when the file is out of date.)
"""

from __future__ import annotations

import argparse
import sys

from dinotrack.cli import build_parser
from tools.data.location import REPO

OUTPUT = REPO / "docs" / "cli.md"
REGENERATE = "python -m tools.docs.cli_reference"
USAGE_WIDTH = 100  # the usage lines are wrapped at this width, whatever the terminal's


def sub_commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """The sub-commands of ``parser`` as (name, one-line help, parser), in the order of
    ``--help``; none when it has no sub-commands."""
    commands = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, child in action.choices.items():
                commands.append((name, helps.get(name, ""), child))
    return commands


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage line(s) of ``parser``, wrapped at :data:`USAGE_WIDTH`."""
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def invocation(action: argparse.Action) -> str:
    """How an argument is written: ``video``, ``--out DIR``, ``-h, --help``."""
    if not action.option_strings:
        return action.metavar or action.dest
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if action.metavar is not None:
        value = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    elif action.choices is not None:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        value = action.dest.upper()
    if action.nargs in ("*", "+"):
        value = f"{value} [{value} ...]"
    elif action.nargs == "?":
        value = f"[{value}]"
    return ", ".join(f"{option} {value}" for option in action.option_strings)


def help_text(action: argparse.Action, prog: str) -> str:
    """The argument's help with ``%(default)s`` and the like filled in, as ``--help`` does."""
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": prog}
    return " ".join(text.split())


def cell(text: str) -> str:
    """``text`` made safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def command_section(name: str, summary: str, parser: argparse.ArgumentParser) -> list[str]:
    """The markdown of one command: heading, summary, usage, one table per argument group."""
    lines = [f"## {parser.prog}", ""]
    for paragraph in (summary, parser.description):
        if paragraph and paragraph not in lines:
            lines += [" ".join(paragraph.split()), ""]
    lines += ["```", usage(parser), "```", ""]
    for group in parser._action_groups:
        shown = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
        ]
        if not shown:
            continue
        lines += [f"**{group.title}**", "", "| argument | meaning |", "|---|---|"]
        for action in shown:
            flag = cell(invocation(action))
            lines.append(f"| `{flag}` | {cell(help_text(action, parser.prog))} |")
        lines.append("")
    for child_name, child_summary, child in sub_commands(parser):
        lines += command_section(child_name, child_summary, child)
    return lines


def render() -> str:
    """docs/cli.md as it should read for the parsers of this checkout."""
    parser = build_parser()
    lines = [
        "# Command-line reference",
        "",
        f"Generated from the parsers by `{REGENERATE}`: do not edit by hand. "
        "`dinotrack COMMAND --help` prints the same.",
        "",
    ]
    for name, summary, _ in sub_commands(parser):
        lines.append(f"- `dinotrack {name}`: {summary}")
    lines.append("")
    lines += command_section("dinotrack", "", parser)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    temporary = OUTPUT.with_name(f".{OUTPUT.name}.tmp")
    temporary.write_text(text)
    temporary.replace(OUTPUT)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
