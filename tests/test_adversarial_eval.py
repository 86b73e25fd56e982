"""Adversarial suite for ``eval`` (issue 20): what a careless user or a foreign folder hands
``eval youtube-vos`` and ``eval davis``, and the tables they print.

Classes: frames of a YouTube-VOS-layout split are read in the tracker's natural order, and
files that are not frames are skipped; a ``meta.json`` that is not a regular file or not a
meta.json gives one line (no hang, no traceback); ``eval davis`` resumes only from folders that
dinotrack's records say it wrote with the same settings, and never writes inside the dataset;
score tables keep every header and value whole at 80 columns. The inputs are built on the fly.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import adversarial_inputs as bad
import numpy as np
import pytest
from cli_support import tiny_flags
from davis_fixtures import blob_sequence, write_davis
from PIL import Image
from rich.console import Console
from test_adversarial import cli, no_hang, one_line_error  # noqa: F401 (no_hang: a fixture)

from dinotrack.cli import main
from dinotrack.io.masks import write_mask
from eval.report import print_table
from eval.scoring import Evaluation, ObjectScores

TINY = tiny_flags(48)
N_FRAMES, ENTER = 12, 4


# eval youtube-vos: a split built on the fly, frames named by a pattern.


def _square(t: int, obj: int) -> tuple[slice, slice]:
    if obj == 1:
        return slice(6, 22), slice(4 + 3 * t, 20 + 3 * t)
    return slice(28, 44), slice(40 - 2 * (t - ENTER), 56 - 2 * (t - ENTER))


def youtube_split(root: Path, pattern: str = "{t:05d}", split: str = "train") -> Path:
    """``<root>/<split>`` with one video of N_FRAMES moving squares, frames named by
    ``pattern``; object 1 from frame 0, object 2 entering at frame ENTER; every frame
    annotated (as in a train split)."""
    images = root / split / "JPEGImages" / "clip"
    annotations = root / split / "Annotations" / "clip"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for t in range(N_FRAMES):
        frame = np.full((*bad.SIZE, 3), 30, np.uint8)
        ids = np.zeros(bad.SIZE, np.uint8)
        for obj, colour in ((1, (220, 60, 40)), (2, (40, 200, 90))):
            if obj == 1 or t >= ENTER:
                frame[_square(t, obj)] = colour
                ids[_square(t, obj)] = obj
        name = pattern.format(t=t)
        Image.fromarray(frame).save(images / f"{name}.jpg", quality=95)
        write_mask(annotations / f"{name}.png", ids)
    return root


@pytest.fixture(scope="module")
def padded_score(tmp_path_factory):
    """The J&F line of the split with zero-padded frame names (``00000.jpg``): text and
    natural order agree there."""
    root = youtube_split(tmp_path_factory.mktemp("padded"))
    return _score_line(root, tmp_path_factory.mktemp("padded-out") / "res")


def _score_line(root: Path, out: Path) -> tuple[int, str, str]:
    """``eval youtube-vos`` on the train split: (status, its J&F line, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    args = ["eval", "youtube-vos", "--root", root, "--split", "train", "--out", out, *TINY]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return code, stdout.getvalue().strip(), stderr.getvalue()


NAMINGS = {
    "unpadded": "{t}",
    "prefixed unpadded": "frame{t}",
    "underscored": "img_{t}_cam",
    "mixed case prefix": "Frame-{t}",
}


@pytest.mark.filterwarnings("ignore:object 2 of the prompt is smaller")
@pytest.mark.parametrize("naming", list(NAMINGS))
def test_youtube_vos_frames_are_in_the_trackers_natural_order(naming, padded_score, tmp_path):
    """The same video with unpadded names scores exactly as with padded ones: the frames,
    their annotations and their results are matched in the order the tracker reads them."""
    code, line, err = padded_score
    assert code == 0 and "J&F" in line, err
    root = youtube_split(tmp_path / "split", NAMINGS[naming])
    code, renamed, err = _score_line(root, tmp_path / "res")
    assert code == 0, err
    assert renamed == line
    written = sorted((tmp_path / "res" / "Annotations" / "clip").iterdir())
    assert sorted(p.stem for p in written) == sorted(NAMINGS[naming].format(t=t) for t in range(12))


NON_FRAMES = {
    "notes in the frames": ("JPEGImages", "notes.txt", "file"),
    ".DS_Store in the frames": ("JPEGImages", ".DS_Store", "file"),
    "AppleDouble twin of a frame": ("JPEGImages", "._00000.jpg", "file"),
    "folder named like a frame": ("JPEGImages", "thumbs.jpg", "folder"),
    "Thumbs.db in the frames": ("JPEGImages", "Thumbs.db", "file"),
    "notes in the annotations": ("Annotations", "notes.txt", "file"),
    "AppleDouble twin of an annotation": ("Annotations", "._00000.png", "file"),
    "folder named like an annotation": ("Annotations", "old.png", "folder"),
}


@pytest.mark.filterwarnings("ignore:object 2 of the prompt is smaller")
@pytest.mark.parametrize("case", list(NON_FRAMES))
def test_youtube_vos_skips_files_that_are_not_frames(case, padded_score, tmp_path):
    """An extra file that is not a frame changes nothing (or is named in one line)."""
    folder, name, kind = NON_FRAMES[case]
    root = youtube_split(tmp_path / "split")
    target = root / "train" / folder / "clip" / name
    if kind == "folder":
        target.mkdir()
    else:
        target.write_bytes(b"\x00\x05Mac OS X junk")
    code, line, err = _score_line(root, tmp_path / "res")
    if code == 0:
        assert line == padded_score[1]
    else:
        one_line_error(code, err, name)


META = {
    "a FIFO": None,
    "a JSON list": "[]",
    "a JSON number": "5",
    "a JSON string": '"videos"',
    "JSON null": "null",
    "videos as a list": '{"videos": ["clip"]}',
    "videos as a number": '{"videos": 3}',
    "not JSON": '{"videos": {',
    "empty": "",
    "not UTF-8": b"\xff\xfe{\x00",
    "a directory": "dir",
    "a symlink loop": "loop",
    "a dangling symlink": "dangling",
}


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("case", list(META))
def test_youtube_vos_meta_json_that_is_not_one_gives_one_line(case, tmp_path, capsys):
    root = youtube_split(tmp_path / "split")
    meta = root / "train" / "meta.json"
    content = META[case]
    if content is None:
        bad.fifo(meta)
    elif content == "dir":
        meta.mkdir()
    elif content == "loop":
        bad.symlink_loop(meta)
    elif content == "dangling":
        os.symlink("gone.json", meta)
    elif isinstance(content, bytes):
        meta.write_bytes(content)
    else:
        meta.write_text(content)
    args = ["eval", "youtube-vos", "--root", root, "--split", "train", "--out", tmp_path / "o"]
    code, err = cli([*args, *TINY], capsys)
    one_line_error(code, err, "meta.json")
    assert not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore:object 2 of the prompt is smaller")
def test_youtube_vos_valid_meta_json_is_read(padded_score, tmp_path):
    root = youtube_split(tmp_path / "split")
    meta = {"videos": {"clip": {"objects": {"1": {"frames": ["00000"]}}}}}
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    assert _score_line(root, tmp_path / "res")[:2] == padded_score[:2]
    (root / "train" / "meta.json").write_text(json.dumps({"videos": {"other": {}}}))
    code, _, err = _score_line(root, tmp_path / "res2")
    one_line_error(code, err, "meta.json lists videos absent", "other")


@pytest.mark.parametrize("where", ["the dataset root", "its split folder", "a new folder inside"])
def test_youtube_vos_never_writes_inside_the_dataset(where, tmp_path, capsys):
    root = youtube_split(tmp_path / "split")
    out = {
        "the dataset root": root,
        "its split folder": root / "train",
        "a new folder inside": root / "results",
    }[where]
    before = bad.snapshot(root)
    args = ["eval", "youtube-vos", "--root", root, "--split", "train", "--out", out, *TINY]
    code, err = cli(args, capsys)
    one_line_error(code, err, "inside the dataset root")
    assert bad.snapshot(root) == before and not (root / "results").exists()


# eval davis: resume only from dinotrack's own, matching results; never inside the dataset.


def _davis(tmp_path: Path, name: str = "davis") -> Path:
    seqs = {
        "alpha": blob_sequence(num_frames=5, height=48, width=64, seed=1),
        "beta": blob_sequence(num_frames=4, height=48, width=64, num_objects=1, seed=2),
    }
    return write_davis(tmp_path / name, seqs, images=True)


def _davis_args(root: Path, out: Path) -> list:
    return ["eval", "davis", "--root", root, "--out", out, "--workers", 0, *TINY]


INSIDE = {
    "its Annotations": lambda root: root / "Annotations" / "480p",
    "the dataset root": lambda root: root,
    "its JPEGImages": lambda root: root / "JPEGImages" / "480p",
    "a new folder inside": lambda root: root / "results",
    "a symlink into it": None,
}


@pytest.mark.parametrize("where", list(INSIDE))
def test_eval_davis_never_writes_inside_the_dataset(where, tmp_path, capsys):
    """``--out`` at the dataset's own annotations used to score J&F 1.000 ("resumed") and
    write run.json, CSVs and scores into the dataset."""
    root = _davis(tmp_path)
    if INSIDE[where] is None:
        out = tmp_path / "link"
        os.symlink(root / "Annotations" / "480p", out)
    else:
        out = INSIDE[where](root)
    before = bad.snapshot(root)
    code, err = cli(_davis_args(root, out), capsys)
    one_line_error(code, err, "inside the dataset root")
    assert bad.snapshot(root) == before
    assert not (root / "results").exists()


def _foreign_results(tmp_path: Path, root: Path, case: str, capsys) -> Path:
    """An --out holding results dinotrack did not write with these settings."""
    out = tmp_path / "out"
    if case == "copy of the annotations":
        shutil.copytree(root / "Annotations" / "480p", out)
        return out
    if case == "copy of the annotations with a run.json":
        shutil.copytree(root / "Annotations" / "480p", out)
        assert cli(_davis_args(root, tmp_path / "other"), capsys)[0] == 0
        shutil.copy(tmp_path / "other" / "run.json", out / "run.json")
        return out
    assert cli(_davis_args(root, out), capsys)[0] == 0  # dinotrack's own, complete run
    if case == "a result replaced by the ground truth":
        shutil.copy(root / "Annotations" / "480p" / "alpha" / "00003.png", out / "alpha")
    elif case == "a record removed":
        (out / "alpha" / ".dinotrack-output").unlink()
    elif case == "a record emptied":
        (out / "alpha" / ".dinotrack-output").write_text("")
    elif case == "run.json removed":
        (out / "run.json").unlink()
    elif case == "run.json of another dataset":
        record = json.loads((out / "run.json").read_text())
        record["root"] = str(tmp_path / "elsewhere")
        (out / "run.json").write_text(json.dumps(record))
    elif case == "run.json a JSON list":
        (out / "run.json").write_text("[]")
    return out


FOREIGN = [
    "copy of the annotations",
    "copy of the annotations with a run.json",
    "a result replaced by the ground truth",
    "a record removed",
    "a record emptied",
    "run.json removed",
    "run.json of another dataset",
    "run.json a JSON list",
]


@pytest.mark.parametrize("case", FOREIGN)
def test_eval_davis_resumes_only_its_own_matching_results(case, tmp_path, capsys):
    """Either every sequence is tracked again (nothing "resumed"), or one line says why not;
    never a perfect score from files that are not this run's results."""
    root = _davis(tmp_path)
    out = _foreign_results(tmp_path, root, case, capsys)
    capsys.readouterr()
    code, err = cli(_davis_args(root, out), capsys)
    if code == 0:
        record = json.loads((out / "scores-val.json").read_text())
        assert record["resumed_sequences"] == [], err
        assert record["global"]["J&F-Mean"] < 1.0  # random weights: not the ground truth
    else:
        one_line_error(code, err)
        assert "resumed" not in err


def test_eval_davis_still_resumes_its_own_unchanged_results(tmp_path, capsys):
    root = _davis(tmp_path)
    out = tmp_path / "out"
    assert cli(_davis_args(root, out), capsys)[0] == 0
    first = json.loads((out / "scores-val.json").read_text())["global"]
    code, err = cli(_davis_args(root, Path(os.path.relpath(out))), capsys)
    assert code == 0, err
    record = json.loads((out / "scores-val.json").read_text())
    assert record["resumed_sequences"] == ["alpha", "beta"] and record["global"] == first


# Tables: nothing cut at 80 columns.


def _evaluation(names: list[str], spread: float) -> Evaluation:
    rng = np.random.default_rng(len(names))
    objects = []
    for k, name in enumerate(names):
        j = np.clip(rng.normal(0.5, spread, 6), -1, 1)
        f = np.full(6, np.nan) if "nan" in name else np.clip(rng.normal(0.5, spread, 6), -1, 1)
        objects.append(ObjectScores(name, k + 1, tuple("abcdef"), j, f))
    return Evaluation("val", tuple(objects))


TABLES = {
    "DAVIS names": (["bike-packing", "breakdance-flare", "motocross-jump"], 0.2),
    "a 40-character name": (["a-sequence-name-of-forty-characters-long"], 0.2),
    "negative decays": (["dogs-jump", "lab-coat"], 2.0),
    "nan scores": (["nan-sequence"], 0.2),
    "many objects": ([f"seq{i}" for i in range(30)], 0.3),
}


@pytest.mark.parametrize("case", list(TABLES))
@pytest.mark.parametrize("width", [80, 64])
def test_score_tables_keep_headers_and_values_whole(case, width):
    names, spread = TABLES[case]
    evaluation = _evaluation(names, spread)
    buffer = io.StringIO()
    title = "DAVIS val - dinov2_vits14_reg4"
    print_table(evaluation, Console(file=buffer, width=width, force_terminal=False), title=title)
    text = buffer.getvalue()
    assert "…" not in text and all(len(line) <= width for line in text.splitlines()), text
    for column in ("J&F", "Mean", "Recall", "Decay"):
        assert column in text, text
    # The first cell of every line, joined: a long name may wrap onto the next lines.
    first_cells = "".join(
        line.translate(str.maketrans("│┃", "  ")).split()[0]
        for line in text.splitlines()
        if line.strip()
    )
    rows = {**evaluation.object_rows(), "Global": evaluation.global_row()}
    for name, row in rows.items():
        assert name in first_cells, text
        for value in row.values():
            assert ("nan" if np.isnan(value) else f"{value:.3f}") in text, text
