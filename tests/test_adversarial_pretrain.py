"""Adversarial suite for ``pretrain`` resume (issue 20): the run folder named another way, other
settings, and damaged logs and checkpoints left by crashes or hands.

Every case starts from a copy of one real 1-step run (``--out run``, relative) and runs the
same command again (``--max-steps 2``) in the folder holding the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import adversarial_inputs as bad
import pytest
import torch
from test_adversarial import cli, no_hang, one_line_error  # noqa: F401 (no_hang: a fixture)

from pretrain.checkpoint import FORMAT, VERSION

TINY_RUN = [
    "--frames-per-video", 2, "--max-short-side", 96, "--num-workers", 0,
    "--global-crop-size", 32, "--local-crop-size", 16, "--local-crops", 2,
    "--arch", "test_vit_tiny", "--out-dim", 32, "--head-hidden-dim", 32,
    "--head-bottleneck-dim", 16, "--epochs", 3, "--warmup-epochs", 1,
    "--warmup-teacher-temp-epochs", 2, "--batch-size", 2, "--device", "cpu",
    "--precision", "fp32", "--log-every", 1, "--save-every", 1, "--no-progress",
]  # fmt: skip


def pretrain(data: Path | str, out: Path | str, *extra) -> list:
    return ["pretrain", "--data", data, *TINY_RUN, "--out", out, *extra]


@pytest.fixture(scope="module")
def template(shared_data, tmp_path_factory):
    """A finished 1-step run in ``<folder>/run``, made with ``--out run`` from ``<folder>``;
    returns (folder, the video it trained on)."""
    video = shared_data("videos", "dog-agility.mp4")
    folder = tmp_path_factory.mktemp("template")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        from dinotrack.cli import main

        assert main([str(a) for a in pretrain(video, "run", "--max-steps", 1)]) == 0
    finally:
        os.chdir(cwd)
    return folder, video


@pytest.fixture
def run(template, tmp_path, monkeypatch):
    """A copy of the template run at ``<tmp_path>/run``, the working directory ``tmp_path``;
    returns (the run folder, the video)."""
    folder, video = template
    shutil.copytree(folder / "run", tmp_path / "run", symlinks=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "run", video


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


# The same run folder, named another way, is the same run.

SPELLINGS = {
    "./run": lambda run, video: ("./run", video),
    "run/": lambda run, video: ("run/", video),
    "absolute": lambda run, video: (run.resolve(), video),
    "sub/../run": lambda run, video: ("sub/../run", video),
    "a symlink to it": lambda run, video: ("link", video),
    "data given relative": lambda run, video: ("run", os.path.relpath(video)),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_the_same_run_folder_named_another_way_resumes(spelling, run, capsys):
    folder, video = run
    (folder.parent / "sub").mkdir()
    os.symlink("run", folder.parent / "link")
    out, data = SPELLINGS[spelling](folder, video)
    code, err = cli(pretrain(data, out, "--max-steps", 2), capsys)
    assert code == 0, err
    assert logged_steps(folder) == [1, 2]


# Other settings: say what resuming needs and that anything else starts from scratch.

OTHER_SETTINGS = {
    "--lr": ["--lr", 0.01],
    "--batch-size": ["--batch-size", 1],
    "--out-dim": ["--out-dim", 64],
    "--seed": ["--seed", 7],
}


@pytest.mark.parametrize("setting", list(OTHER_SETTINGS))
def test_other_settings_are_refused_without_steering_to_no_resume(setting, run, capsys):
    folder, video = run
    before = bad.snapshot(folder)
    code, err = cli(pretrain(video, "run", "--max-steps", 2, *OTHER_SETTINGS[setting]), capsys)
    one_line_error(code, err, "checkpoint.pth", setting.lstrip("-").replace("-", "_"))
    assert "from scratch" in err and "another --out" in err
    if "--no-resume" in err:  # never offered as if it kept the run
        assert "overwrite" in err, err
    assert bad.snapshot(folder) == before


# A last log line cut off by a crash while it was written.


def _step_2_line(run: Path) -> str:
    return (run / "log.jsonl").read_text().splitlines()[0].replace('"step": 1', '"step": 2')


CUTS = {"after 1 char": 1, "mid key": 5, "mid line": None, "all but the brace": -1}


@pytest.mark.parametrize("cut", list(CUTS))
def test_a_log_line_cut_off_by_a_crash_is_dropped_or_named(cut, run, capsys):
    folder, video = run
    line = _step_2_line(folder)
    length = CUTS[cut] if CUTS[cut] is not None else len(line) // 2
    with open(folder / "log.jsonl", "a") as handle:
        handle.write(line[:length])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = cli(pretrain(video, "run", "--max-steps", 2), capsys)
    if code == 0:
        assert any("log.jsonl" in str(w.message) for w in caught), [str(w) for w in caught]
        assert logged_steps(folder) == [1, 2]
    else:
        one_line_error(code, err, "log.jsonl")


# Log lines that are not log entries, and logs that are not files: one line naming the file.

BAD_LOGS = {
    "a line 5": ("log.jsonl", b"5\n"),
    "a line []": ("log.jsonl", b"[]\n"),
    'a line "x"': ("log.jsonl", b'"x"\n'),
    "a line null": ("log.jsonl", b"null\n"),
    "a string step": ("log.jsonl", b'{"step": "1"}\n'),
    "a fractional step": ("log.jsonl", b'{"step": 1.5}\n'),
    "a broken line before a good one": ("log.jsonl", b'{oops\n{"step": 1}\n'),
    "not UTF-8": ("log.jsonl", b"\xff\xfe\xfd\n"),
    "probe log line 5": ("probe.jsonl", b"5\n"),
    "log as a FIFO": ("log.jsonl", None),
}


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("case", list(BAD_LOGS))
def test_a_damaged_log_gives_one_line_naming_it(case, run, capsys):
    folder, video = run
    name, content = BAD_LOGS[case]
    if content is None:
        (folder / name).unlink()
        bad.fifo(folder / name)
    else:
        with open(folder / name, "ab") as handle:
            handle.write(content)
    code, err = cli(pretrain(video, "run", "--max-steps", 2), capsys)
    one_line_error(code, err, name)


# Checkpoints that lack what resuming reads.


def _keep_only(entries: dict) -> dict:
    return {"format": FORMAT, "version": VERSION, **entries}


BAD_CHECKPOINTS = {
    "only format and version": lambda ckpt: _keep_only({}),
    "no rng": lambda ckpt: {k: v for k, v in ckpt.items() if k != "rng"},
    "no sources": lambda ckpt: {k: v for k, v in ckpt.items() if k != "sources"},
    "config as a list": lambda ckpt: {**ckpt, "config": []},
    "step as a string": lambda ckpt: {**ckpt, "step": "1"},
    "resolved without world_size": lambda ckpt: {**ckpt, "resolved": {}},
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_an_incomplete_checkpoint_gives_one_line_naming_it(case, run, capsys):
    folder, video = run
    ckpt = torch.load(folder / "checkpoint.pth", weights_only=True)
    torch.save(BAD_CHECKPOINTS[case](ckpt), folder / "checkpoint.pth")
    code, err = cli(pretrain(video, "run", "--max-steps", 2), capsys)
    one_line_error(code, err, "checkpoint.pth")
