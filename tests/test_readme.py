"""The README's examples run as written: every ```python block, the quick start's shell block,
and every `dinotrack` command line of its ```sh blocks (and of docs/usage.md) parses with
today's flags.

The examples name `video.mp4`, `first_frame.png` and a `frames/` folder; each test makes them
in a temporary folder (a synthetic clip of two moving squares, written as an mp4, as JPEG
frames and with its first frame's palette mask) and runs there, with the shipped offline model
the README uses, so nothing is downloaded.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import av
import numpy as np
import pytest
from cli_support import run_cli
from PIL import Image
from synthetic_clips import moving_square_video

from dinotrack.cli import build_parser
from dinotrack.io.masks import read_mask, write_mask

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str, text: str = README) -> list[str]:
    return [body for lang, body in BLOCK.findall(text) if lang == language]


def section(heading: str) -> str:
    """The README's text from the ``## heading`` line to the next ``## ``."""
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


@pytest.fixture
def example_files(tmp_path, monkeypatch) -> Path:
    """``video.mp4``, ``frames/00000.jpg ...`` and ``first_frame.png`` in a fresh working
    directory, as the README's examples expect."""
    frames, masks = moving_square_video(n=8, height=144, width=240)
    with av.open(str(tmp_path / "video.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 240, 144, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    (tmp_path / "frames").mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{index:05d}.jpg", quality=95)
    write_mask(tmp_path / "first_frame.png", masks[0])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_the_examples_these_tests_run():
    assert len(blocks("python")) >= 2
    assert len(blocks("sh", section("Quick start (offline)"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(blocks("python"))))
def test_python_example_runs_as_written(number, example_files):
    code = blocks("python")[number]
    exec(compile(code, f"README.md python block {number + 1}", "exec"), {"__name__": "__main__"})
    if "ResultWriter" in code:  # the first example writes every frame's mask
        written = sorted((example_files / "results").glob("*.png"))
        assert [p.name for p in written] == [f"{i:05d}.png" for i in range(8)]
        assert set(np.unique(read_mask(written[-1]).ids)) <= {0, 3, 7}


@pytest.mark.slow
def test_quick_start_command_runs_as_written(example_files, capsys):
    (command,) = blocks("sh", section("Quick start (offline)"))
    args = shlex.split(command.replace("\\\n", " "))
    assert args[0] == "dinotrack"
    code, _, err = run_cli(args[1:], capsys)
    assert code == 0, err
    written = sorted((example_files / "results").glob("*.png"))
    assert [p.name for p in written] == [f"{i:05d}.png" for i in range(8)]
    assert np.array_equal(read_mask(written[0]).ids, read_mask("first_frame.png").ids)


def command_lines() -> list[str]:
    """The `dinotrack` command lines of the README's ```sh blocks and of docs/usage.md."""
    usage = (REPO / "docs" / "usage.md").read_text()
    lines = []
    for body in [*blocks("sh"), *(body for _, body in BLOCK.findall(usage))]:
        for line in body.replace("\\\n", " ").splitlines():
            if line.startswith("dinotrack "):
                lines.append(line.split("#")[0].strip())
    return lines


@pytest.mark.parametrize("line", command_lines())
def test_every_dinotrack_command_line_parses(line):
    build_parser().parse_args(shlex.split(line)[1:])  # a flag that is gone exits 2 here
