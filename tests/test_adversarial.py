"""Adversarial suite: what a careless user or an attacker hands dinotrack.

Classes (issue 15): data loss, hangs and resource exhaustion, silently wrong results, and
messages, across ``segment``, ``attention``, ``eval`` and ``pretrain``, through the CLI and
the API. The bad inputs are built on the fly (``adversarial_inputs``). For data loss the tests
are property-style: a user's file is placed at every place a run reads or writes, and the
whole folder must survive byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import adversarial_inputs as bad
import numpy as np
import pytest
import torch
from PIL import Image

import dinotrack
from dinotrack.cli import main
from dinotrack.io.masks import read_mask, write_mask

FAST = ["--model", "test_vit_tiny", "--short-side", "48", "--device", "cpu"]
REPO = Path(dinotrack.__file__).resolve().parents[1]  # the code under test, for subprocesses


def cli(args, capsys) -> tuple[int, str]:
    """Runs the dinotrack CLI in this process; returns (status, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse: an unknown flag (before the fix) ends here
        code = exit_.code
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def no_hang():
    """Fails a test that blocks for 30 s (e.g. on a FIFO) instead of hanging the suite."""

    def expire(signum, frame):
        raise TimeoutError("blocked for 30 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def clip(tmp_path):
    """A small frames directory and its first-frame mask, outside any output."""
    return bad.frames_dir(tmp_path / "frames"), bad.mask(tmp_path / "mask.png")


def oracle_results(shared_data, tmp_path: Path) -> tuple[Path, Path, list[str | Path]]:
    """A copy of the oracle's dogs-jump predictions to score: (oracle root, the sequence's
    results folder, the ``eval score`` arguments)."""
    oracle = shared_data("davis-metric-oracle")
    results = tmp_path / "results" / "dogs-jump"
    results.mkdir(parents=True)
    for png in (oracle / "results-rvos" / "dogs-jump").glob("*.png"):
        (results / png.name).write_bytes(png.read_bytes())
    score = ["eval", "score", "--root", oracle, "--results", results.parent]
    return oracle, results, [*score, "--sequences", "dogs-jump", "--workers", 0]


def segment(frames: Path, mask: Path, out: Path, *extra) -> list:
    """``segment`` arguments on the test backbone."""
    return ["segment", frames, "--mask", mask, "--out", out, *extra, *FAST]


def hidden(folder: Path) -> list[str]:
    """Temporaries left next to outputs (names starting with a dot)."""
    return sorted(p.name for p in folder.rglob(".*") if ".partial-" in p.name or ".tmp" in p.name)


# Data loss: a rerun removes only what dinotrack wrote, and refuses before any work when
# anything else is inside; single files are replaced only with --overwrite.


def _user_file_at(place: str, tmp_path: Path, out: Path) -> list[str]:
    """Puts the user's file at ``place`` (after an earlier result was written to ``out``);
    returns extra segment arguments that use it."""
    if place == "notes in --out":
        (out / "notes.txt").write_text("my notes")
    elif place == "nested folder in --out":
        (out / "analysis").mkdir()
        (out / "analysis" / "plot.csv").write_text("1,2\n")
    elif place == "edited output mask":
        write_mask(out / "00001.png", np.ones(bad.SIZE, np.uint8))
    elif place == "input frames inside --out":
        bad.frames_dir(out / "frames")
        return ["--input", out / "frames"]
    elif place == "--mask inside --out":
        bad.mask(out / "my_mask.png")
        return ["--mask", out / "my_mask.png"]
    elif place == "--weights inside --out":  # real weights, which the run would load
        from dinotrack.models.build import load_backbone
        from dinotrack.models.checkpoints import save_backbone_export

        save_backbone_export(out / "w.pth", load_backbone("test_vit_tiny")[0], _tiny_record())
        return ["--weights", out / "w.pth"]
    elif place == "empty folder in --out":
        (out / "keep").mkdir()
    elif place == "symlink in --out":
        os.symlink(tmp_path / "mask.png", out / "link.png")
    elif place == "existing --overlay file":
        (tmp_path / "movie.mp4").write_bytes(b"the user's own movie")
        return ["--overlay", tmp_path / "movie.mp4"]
    elif place == "record removed, user files":
        (out / ".dinotrack-output").unlink()
    return []


DATA_LOSS_PLACES = [
    "notes in --out",
    "nested folder in --out",
    "edited output mask",
    "input frames inside --out",
    "--mask inside --out",
    "--weights inside --out",
    "empty folder in --out",
    "symlink in --out",
    "existing --overlay file",
    "record removed, user files",
]


@pytest.mark.parametrize("place", DATA_LOSS_PLACES)
def test_segment_rerun_never_touches_a_file_it_did_not_write(place, clip, tmp_path, capsys):
    frames, mask = clip
    out = tmp_path / "out"
    code, err = cli(["segment", frames, "--mask", mask, "--out", out, *FAST], capsys)
    assert code == 0, err
    extra = _user_file_at(place, tmp_path, out)
    args = {"--input": frames, "--mask": mask}
    rest = []
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[flag] = value
        else:
            rest += [flag, value]
    before = bad.snapshot(tmp_path)
    code, err = cli(
        ["segment", args["--input"], "--mask", args["--mask"], "--out", out, *rest, *FAST], capsys
    )
    one_line_error(code, err)
    assert bad.snapshot(tmp_path) == before  # every file, the earlier result too, unchanged
    assert not hidden(tmp_path)


def test_segment_rerun_replaces_exactly_its_own_files(clip, tmp_path, capsys):
    frames, mask = clip
    out = tmp_path / "out"
    assert cli(["segment", frames, "--mask", mask, "--out", out, *FAST], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".dinotrack-output",
        "00000.png",
        "00001.png",
        "00002.png",
    ]
    code, err = cli(
        ["segment", frames, "--mask", mask, "--out", out, "--max-frames", 2, *FAST], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [".dinotrack-output", "00000.png", "00001.png"]
    assert not hidden(tmp_path)


def test_a_rerun_replaces_its_own_overlay_but_not_an_edited_one(clip, tmp_path, capsys):
    frames, mask = clip
    out, movie = tmp_path / "out", tmp_path / "movie.mp4"
    args = segment(frames, mask, out, "--overlay", movie)
    for _ in range(2):  # its own, unchanged overlay: replaced without --overwrite
        code, err = cli(args, capsys)
        assert code == 0, err
    movie.write_bytes(movie.read_bytes() + b"edited")
    before = bad.snapshot(tmp_path)
    code, err = cli(args, capsys)
    one_line_error(code, err, "--overwrite")
    assert bad.snapshot(tmp_path) == before


def test_edited_start_mask_survives_an_auto_rerun(clip, tmp_path, capsys):
    frames, _ = clip
    out = tmp_path / "out"
    code, err = cli(["segment", frames, "--auto", "--out", out, *FAST], capsys)
    assert code == 0, err
    write_mask(
        out / "start_mask.png", bad.mask(tmp_path / "m2.png") and read_mask(tmp_path / "m2.png").ids
    )
    before = bad.snapshot(tmp_path)
    for args in (["--auto"], ["--mask", out / "start_mask.png"]):  # the README's edit-and-rerun
        code, err = cli(["segment", frames, *args, "--out", out, *FAST], capsys)
        one_line_error(code, err)
        assert bad.snapshot(tmp_path) == before


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_single_file_outputs_are_replaced_only_with_overwrite(
    flags, clip, shared_data, tmp_path, capsys
):
    frames, mask = clip
    video = bad.video(tmp_path / "clip.mp4")
    oracle = shared_data("davis-metric-oracle")
    ground_truth = oracle / "Annotations" / "480p" / "dogs-jump" / "00000.png"
    annotation = tmp_path / "gt.png"
    annotation.write_bytes(ground_truth.read_bytes())
    movie = tmp_path / "movie.mp4"
    movie.write_bytes(b"the user's movie")
    runs = [
        ["segment", frames, "--mask", mask, "--out", tmp_path / "o1", "--overlay", movie],
        ["attention", video, "--out", movie, "--max-frames", 1],
    ]
    for args in runs:
        before = movie.read_bytes()
        code, err = cli([*args, *flags, *FAST], capsys)
        if flags:
            assert code == 0, err
            assert movie.read_bytes() != before and movie.read_bytes()[4:8] == b"ftyp"
            movie.write_bytes(b"the user's movie")
        else:
            one_line_error(code, err, "--overwrite")
            assert movie.read_bytes() == before
    score = oracle_results(shared_data, tmp_path)[2]
    code, err = cli([*score, "--json", annotation, *flags], capsys)
    if flags:
        assert code == 0, err
        assert annotation.read_bytes().startswith(b"{")
    else:
        one_line_error(code, err, "--overwrite")
        assert annotation.read_bytes() == ground_truth.read_bytes()


def test_eval_score_keeps_a_user_file_named_like_its_reports(shared_data, tmp_path, capsys):
    _, results, score = oracle_results(shared_data, tmp_path)
    (results.parent / "scores-val-subset.json").write_text("my own notes, not a report")
    before = bad.snapshot(tmp_path)
    code, err = cli(score, capsys)
    one_line_error(code, err, "scores-val-subset.json")
    assert bad.snapshot(tmp_path) == before
    code, err = cli([*score, "--overwrite"], capsys)
    assert code == 0, err
    code, err = cli(score, capsys)  # its own report: replaced freely
    assert code == 0, err


def test_eval_davis_refuses_a_sequence_folder_holding_user_files(shared_data, tmp_path, capsys):
    root = shared_data("davis2016-dev")
    out = tmp_path / "run"
    (out / "dog-agility").mkdir(parents=True)
    (out / "dog-agility" / "notes.txt").write_text("mine")
    before = bad.snapshot(tmp_path)
    args = ["eval", "davis", "--root", root, "--split", "dev", "--sequences", "dog-agility"]
    code, err = cli([*args, "--out", out, "--workers", 0, "--overwrite", *FAST], capsys)
    one_line_error(code, err, "notes.txt")
    assert bad.snapshot(tmp_path) == before


def test_pretrain_out_with_the_users_own_config_is_refused(shared_data, tmp_path, capsys):
    videos = shared_data("videos")
    for place in ("config.json", "log.jsonl", "checkpoint.pth"):
        out = tmp_path / place.replace(".", "_")
        out.mkdir()
        (out / place).write_text('{"mine": true}')
        before = bad.snapshot(tmp_path)
        code, err = cli(
            [
                "pretrain",
                "--data",
                videos / "dog-agility.mp4",
                "--arch",
                "test_vit_tiny",
                "--out",
                out,
                "--max-steps",
                1,
                "--device",
                "cpu",
            ],
            capsys,
        )
        one_line_error(code, err, "did not write")
        assert bad.snapshot(tmp_path) == before


class FailingFormat:
    """A FormatWriter that fails when asked to finish: the run fails at its very end."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, str]] = []

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        self.frames.append((index, name))

    def finish(self, directory: Path) -> None:
        (directory / "partial.json").write_text("{")
        raise OSError("disk full")


def test_outputs_are_published_together_or_not_at_all(tmp_path):
    from dinotrack.results.writer import ResultWriter

    out, overlay = tmp_path / "out", tmp_path / "deeper" / "movie.mp4"
    with ResultWriter(out) as results:
        results.add(0, "00000", np.zeros(bad.SIZE, np.uint8))
    before = bad.snapshot(tmp_path)
    failing = FailingFormat()
    writer = ResultWriter(out, formats=[failing])
    writer.open_overlay(overlay, 24.0, bad.SIZE[1], bad.SIZE[0])
    with pytest.raises(OSError, match="disk full"), writer:
        for index, frame in enumerate(bad.frames()):
            writer.add(index, f"{index:05d}", np.ones(bad.SIZE, np.uint8), frame)
    assert failing.frames == [(0, "00000"), (1, "00001"), (2, "00002")]
    assert bad.snapshot(tmp_path) == before  # no overlay, old result intact
    assert not (tmp_path / "deeper").exists()  # no new empty folder
    assert not hidden(tmp_path)


class CountingFormat:
    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, index: int, name: str, ids: np.ndarray) -> None:
        self.names.append(name)

    def finish(self, directory: Path) -> None:
        (directory / "extra").mkdir()
        (directory / "extra" / "objects.txt").write_text(",".join(self.names))


def test_format_files_are_owned_and_replaced_by_the_next_run(tmp_path):
    from dinotrack.results.writer import ResultWriter, owned_files

    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces the first's format files freely
        with ResultWriter(out, formats=[CountingFormat()]) as results:
            results.add(0, "00000", np.zeros(bad.SIZE, np.uint8))
    assert set(owned_files(out)) == {"00000.png", "extra/objects.txt"}
    (out / "extra" / "mine.txt").write_text("user")
    with pytest.raises(FileExistsError, match="extra/mine.txt"):
        ResultWriter(out)


def _start_segment(tmp_path: Path, out: Path) -> subprocess.Popen:
    frames = bad.frames_dir(tmp_path / "long", count=400)
    mask = bad.mask(tmp_path / "m.png")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "dinotrack", "segment", frames, "--mask", mask, "--out", out]
    args += ["--overlay", tmp_path / "ov.mp4", *FAST]
    return subprocess.Popen(
        [str(a) for a in args], env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )


def _wait_for_partial(tmp_path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not any(".partial-" in p.name for p in tmp_path.iterdir()):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.05)
    time.sleep(0.3)


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "out"
    process = _start_segment(tmp_path, out)
    _wait_for_partial(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 143, err
    assert "terminated; no output was published" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "ov.mp4").exists()
    assert not hidden(tmp_path)


def test_temporaries_of_a_killed_run_are_cleaned_by_the_next(tmp_path, capsys):
    out = tmp_path / "out"
    process = _start_segment(tmp_path, out)
    _wait_for_partial(tmp_path, process)
    process.kill()
    process.wait(timeout=60)
    assert hidden(tmp_path)  # SIGKILL cannot be handled: its temporaries stay...
    frames, mask = bad.frames_dir(tmp_path / "short"), tmp_path / "m.png"
    code, err = cli(
        ["segment", frames, "--mask", mask, "--out", out, "--overlay", tmp_path / "ov.mp4", *FAST],
        capsys,
    )
    assert code == 0, err
    assert not hidden(tmp_path)  # ...until the next run on the same outputs


# Hangs and resource exhaustion.


@pytest.mark.parametrize("what", ["video", "mask", "weights", "attention image", "pretrain data"])
def test_a_fifo_is_refused_not_waited_on(what, clip, tmp_path, capsys, no_hang):
    frames, mask = clip
    pipe = bad.fifo(tmp_path / ("pipe.png" if what in ("mask", "attention image") else "pipe.mp4"))
    out = tmp_path / "o"
    pretrain = ["pretrain", "--data", pipe, "--arch", "test_vit_tiny", "--out", out]
    args = {
        "video": segment(pipe, mask, out),
        "mask": segment(frames, pipe, out),
        "weights": segment(frames, mask, out, "--weights", pipe),
        "attention image": ["attention", pipe, "--out", out, *FAST],
        "pretrain data": [*pretrain, "--device", "cpu"],
    }[what]
    code, err = cli(args, capsys)
    one_line_error(code, err, str(pipe))
    assert "regular file" in err
    assert not (tmp_path / "o").exists()


def test_a_fifo_among_eval_results_is_refused(shared_data, tmp_path, capsys, no_hang):
    _, results, score = oracle_results(shared_data, tmp_path)
    (results / "00003.png").unlink()
    bad.fifo(results / "00003.png")
    code, err = cli(score, capsys)
    one_line_error(code, err, "00003.png", "regular file")


@pytest.mark.parametrize("where", ["mask", "attention image", "frame", "eval result", "api"])
def test_decompression_bombs_give_one_line(where, clip, shared_data, tmp_path, capsys):
    frames, mask = clip
    bomb = bad.bomb_png(tmp_path / "bomb.png")
    if where == "api":
        with pytest.raises(ValueError, match="bomb.png is too large to decode safely"):
            read_mask(bomb)
        return
    if where == "mask":
        args = ["segment", frames, "--mask", bomb, "--out", tmp_path / "o", *FAST]
    elif where == "attention image":
        args = ["attention", bomb, "--out", tmp_path / "o", *FAST]
    elif where == "frame":
        bomb.rename(frames / "00001.png")
        bomb = frames / "00001.png"
        args = ["segment", frames, "--mask", mask, "--out", tmp_path / "o", *FAST]
    else:
        _, results, args = oracle_results(shared_data, tmp_path)
        bomb = bomb.rename(results / "00002.png")
    code, err = cli(args, capsys)
    one_line_error(code, err, str(bomb), "too large to decode safely")
    assert not (tmp_path / "o").exists()


def _tiny_record(**changes):
    record = {
        "name": "test_vit_tiny",
        "timm_arch": "vit_small_patch8_224",
        "patch_size": 8,
        "model_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0},
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "pos_embed": "timm",
    }
    record.update(changes)
    return record


HOSTILE_RECORDS = {
    "no record": None,
    "record not a dict": "vit_small",
    "timm_arch missing": {k: v for k, v in _tiny_record().items() if k != "timm_arch"},
    "model_kwargs missing": {k: v for k, v in _tiny_record().items() if k != "model_kwargs"},
    "unknown architecture": _tiny_record(timm_arch="resnet50"),
    "architecture of another family": _tiny_record(timm_arch="vit_giant_patch14_dinov2"),
    "file named in kwargs": _tiny_record(
        model_kwargs={"pretrained_cfg_overlay": {"file": "/etc/passwd"}}
    ),
    "checkpoint path in kwargs": _tiny_record(model_kwargs={"checkpoint_path": "/etc/passwd"}),
    "huge width": _tiny_record(model_kwargs={"embed_dim": 1_000_000, "num_heads": 1}),
    "huge depth": _tiny_record(model_kwargs={"depth": 100_000}),
    "too many parameters": _tiny_record(
        model_kwargs={"embed_dim": 4096, "depth": 64, "num_heads": 32}
    ),
    "huge mlp ratio": _tiny_record(model_kwargs={"mlp_ratio": 1e9}),
    "patch size as text": _tiny_record(patch_size="8"),
    "kwargs as a list": _tiny_record(model_kwargs=[["depth", 2]]),
    "bool as a width": _tiny_record(model_kwargs={"embed_dim": True}),
    "mean of text": _tiny_record(mean=["a", "b", "c"]),
    "state dict not a dict": "STATE",
}


@pytest.mark.parametrize("case", list(HOSTILE_RECORDS))
def test_export_records_are_validated_before_anything_is_built(case, tmp_path, monkeypatch):
    import timm

    from dinotrack import Tracker

    built = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(a) or 1 / 0)
    record = HOSTILE_RECORDS[case]
    if case == "no record":
        path = tmp_path / "w.pth"
        torch.save({"format": "dinotrack.backbone", "version": 1, "state_dict": {}}, path)
    elif case == "state dict not a dict":
        path = bad.export(tmp_path / "w.pth", _tiny_record(), state_dict="STATE")
    else:
        path = bad.export(tmp_path / "w.pth", record)
    with pytest.raises(ValueError, match="w.pth|export"):
        Tracker.from_pretrained(weights=path, device="cpu")
    assert built == []  # timm was never asked to build it


def test_a_valid_export_still_loads(tmp_path):
    from dinotrack import Tracker
    from dinotrack.models.build import load_backbone
    from dinotrack.models.checkpoints import save_backbone_export

    net, spec = load_backbone("test_vit_tiny")
    save_backbone_export(tmp_path / "w.pth", net, _tiny_record())
    tracker = Tracker.from_pretrained(weights=tmp_path / "w.pth", device="cpu")
    assert tracker.spec.timm_arch == "vit_small_patch8_224"


def test_hostile_export_through_the_cli_gives_one_line(clip, tmp_path, capsys):
    frames, mask = clip
    weights = bad.export(tmp_path / "w.pth", HOSTILE_RECORDS["file named in kwargs"])
    args = ["segment", frames, "--mask", mask, "--out", tmp_path / "o", "--weights", weights]
    code, err = cli([*args, "--device", "cpu"], capsys)
    one_line_error(code, err, "pretrained_cfg_overlay", "not allowed")


# Silently wrong results.


def test_16_bit_frames_are_scaled_not_white(tmp_path):
    from dinotrack.io.video import FrameReader

    folder = bad.frames_dir_16bit(tmp_path / "f16")
    ramp = np.asarray(Image.open(folder / "00000.png")).astype(np.int64)
    with FrameReader(folder) as reader:
        first = next(iter(reader))
    assert first.dtype == np.uint8 and first.min() == 0 and first.max() == 255
    np.testing.assert_array_equal(first[..., 1], ramp >> 8)
    assert (first == 255).mean() < 0.01  # before: every pixel above 255 was white


def test_16_bit_frames_segment_end_to_end(tmp_path, capsys):
    folder = bad.frames_dir_16bit(tmp_path / "f16")
    mask = bad.mask(tmp_path / "m.png")
    code, err = cli(["segment", folder, "--mask", mask, "--out", tmp_path / "o", *FAST], capsys)
    assert code == 0, err


@pytest.mark.parametrize("kind", ["lossy webp", "decoded webp", "speckled png", "jpeg"])
def test_lossy_masks_are_refused(kind, clip, tmp_path, capsys):
    frames, _ = clip
    webp = bad.lossy_webp_ellipse(tmp_path / "m.webp")
    if kind == "decoded webp":  # the lossy pixels, saved losslessly: thousands of colours
        path = tmp_path / "m.png"
        Image.open(webp).convert("RGB").save(path)
        match = "colours besides black"
    elif kind == "speckled png":  # one ellipse and 70 one-pixel colours, as a smoothed edge
        rgb = np.asarray(Image.open(webp).convert("RGB")).copy()
        rgb[rgb.sum(axis=2) < 200] = 0
        rgb[rgb.sum(axis=2) >= 200] = (200, 30, 30)
        edge = np.argwhere(rgb.sum(axis=2) > 0)[::97][:70]
        for k, (y, x) in enumerate(edge):
            rgb[y, x] = (200, 30 + k, 31)
        path = tmp_path / "m.png"
        Image.fromarray(rgb).save(path)
        match = "compression or resampling noise"
    elif kind == "jpeg":
        path = tmp_path / "m.jpg"
        Image.open(webp).convert("RGB").save(path, quality=80)
        match = "JPEG"
    else:
        path, match = webp, "lossy or animated WebP"
    with pytest.raises(ValueError, match=match):
        read_mask(path)
    code, err = cli(["segment", frames, "--mask", path, "--out", tmp_path / "o", *FAST], capsys)
    one_line_error(code, err, str(path))


def test_a_lossless_webp_mask_is_one_object(tmp_path):
    rgb = np.asarray(Image.open(bad.lossy_webp_ellipse(tmp_path / "l.webp")).convert("RGB"))
    clean = np.where(rgb.sum(axis=2, keepdims=True) > 200, (200, 30, 30), 0).astype(np.uint8)
    Image.fromarray(clean).save(tmp_path / "ok.webp", format="WEBP", lossless=True)
    loaded = read_mask(tmp_path / "ok.webp")
    assert sorted(np.unique(loaded.ids)) == [0, 1]


def test_void_label_255_is_not_tracked(clip, tmp_path, capsys):
    frames, _ = clip
    ids = np.zeros(bad.SIZE, np.uint8)
    ids[10:30, 10:30] = 1
    ids[9, 9:31] = ids[30, 9:31] = 255  # DAVIS-style void border
    write_mask(tmp_path / "void.png", ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, err = cli(
            ["segment", frames, "--mask", tmp_path / "void.png", "--out", tmp_path / "o", *FAST],
            capsys,
        )
    assert code == 0, err
    assert "1 object(s) [1]" in err and "void" in err
    for png in (tmp_path / "o").glob("*.png"):
        assert 255 not in np.unique(np.asarray(Image.open(png)))


def test_cut_off_warning_names_the_declared_count(tmp_path):
    from dinotrack.io.video import FrameReader, probe_video

    source = bad.video(tmp_path / "full.mp4", count=30, size=(96, 128), index_first=True)
    data = source.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    declared = probe_video(cut).num_frames
    with pytest.warns(UserWarning) as record, FrameReader(cut, start=2) as reader:
        count = sum(1 for _ in reader)
    message = str(record[0].message)
    assert f"ends after {count + 2} of the {declared} frames it declares" in message


# Messages: one line naming the file or flag and what is expected.


def test_a_2x2_video_is_read(tmp_path, capsys):
    video = bad.video(tmp_path / "v.mp4", size=(2, 2))
    ids = np.zeros((2, 2), np.uint8)
    ids[0, 0] = 1
    write_mask(tmp_path / "m.png", ids)
    code, err = cli(
        ["segment", video, "--mask", tmp_path / "m.png", "--out", tmp_path / "o", *FAST], capsys
    )
    assert code == 0 and "segmented 3 frames" in err, err


def test_truncated_result_png_names_the_file(shared_data, tmp_path, capsys):
    _, results, score = oracle_results(shared_data, tmp_path)
    bad.truncated(results / "00001.png", results / "00001.png")
    code, err = cli(score, capsys)
    one_line_error(code, err, str(results / "00001.png"), "truncated")


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--weights", "RANDOM"], ["RANDOM", "not a PyTorch checkpoint"]),
        (["--device", "foo"], ["--device 'foo' is not a device"]),
        (["--device", "meta"], ["--device 'meta' cannot run dinotrack"]),
        (["--short-side", "100000"], ["--short-side", "would feed the network", "GB"]),
        (["--input", "LOOP"], ["LOOP", "symbolic link loop"]),
        (["--mask", "LOOP"], ["LOOP", "symbolic link loop"]),
        (["--weights", "LOOP"], ["LOOP", "symbolic link loop"]),
    ],
)
def test_segment_messages_are_one_clear_line(flags, needles, clip, tmp_path, capsys):
    frames, mask = clip
    places = {
        "RANDOM": bad.random_bytes(tmp_path / "w.pth"),
        "LOOP": bad.symlink_loop(tmp_path / "loop"),
    }
    flags = [str(places.get(f, f)) for f in flags]
    needles = [str(places.get(n, n)) for n in needles]
    args = {"--input": frames, "--mask": mask}
    rest = []
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag in args:
            args[flag] = value
        else:
            rest += [flag, value]
    model = ["--model", "test_vit_tiny", "--device", "cpu", "--short-side", "48"]
    merged = []
    for flag, value in zip(model[::2], model[1::2], strict=True):
        if flag not in rest:
            merged += [flag, value]
    code, err = cli(
        [
            "segment",
            args["--input"],
            "--mask",
            args["--mask"],
            "--out",
            tmp_path / "o",
            *rest,
            *merged,
        ],
        capsys,
    )
    one_line_error(code, err, *needles)
    assert "Python objects" not in err
    assert not (tmp_path / "o").exists()


def test_pretrain_messages_are_one_clear_line(shared_data, tmp_path, capsys):
    video = shared_data("videos", "dog-agility.mp4")
    base = ["pretrain", "--data", video, "--arch", "test_vit_tiny", "--device", "cpu"]
    (tmp_path / "file").write_text("x")
    code, err = cli([*base, "--out", tmp_path / "file"], capsys)
    one_line_error(code, err, "is a file")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".dinotrack-run").write_text('{"format": "dinotrack.pretrain-run", "version": 1}')
    bad.random_bytes(run / "checkpoint.pth")
    code, err = cli([*base, "--out", run], capsys)
    one_line_error(code, err, "checkpoint.pth", "not a PyTorch checkpoint")
    assert len(err) < 300, err


def test_nested_lists_as_frames_in_the_api(tmp_path):
    from dinotrack import Tracker

    tracker = Tracker.from_pretrained("test_vit_tiny", device="cpu")
    mask = np.zeros(bad.SIZE, np.uint8)
    mask[10:30, 10:30] = 1
    nested = [bad.frames()[0].tolist()]
    with pytest.raises(TypeError, match="numpy arrays"):
        list(tracker.track(nested, mask))
    with pytest.raises(TypeError, match="numpy arrays"):
        tracker.start(nested[0], mask)


PRETRAIN_FAST = [
    *("--arch", "test_vit_tiny", "--device", "cpu", "--no-progress", "--max-steps", 2),
    *("--frames-per-video", 2, "--batch-size", 2, "--max-short-side", 48),
    *("--global-crop-size", 32, "--local-crop-size", 16, "--local-crops", 2),
    *("--out-dim", 32, "--head-hidden-dim", 32, "--head-bottleneck-dim", 16),
]
FFMPEG_NOISE = ("video_reader.cc", "ERROR opening", "Check failed", " @ 0x", "Invalid NAL")


def damaged_videos(folder: Path) -> list[Path]:
    """A truncated mp4, random bytes named .mp4, a zero-length file and an mp4 whose frames
    are zeros, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = bad.video(folder.parent / "whole.mp4", count=20)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return [
        bad.truncated(whole, folder / "cut.mp4"),
        bad.random_bytes(folder / "noise.mp4"),
        empty,
        bad.zeroed_payload(folder / "zeroed.mp4"),
    ]


@pytest.mark.usefixtures("pretrain_log_to_capture")
@pytest.mark.parametrize("decoder", ["auto", "pyav"])
def test_pretrain_skips_undecodable_videos_with_one_warning_each(tmp_path, capfd, decoder):
    corpus = tmp_path / "corpus"
    broken = damaged_videos(corpus)
    for name in ("a.mp4", "b.mp4"):
        bad.video(corpus / name, count=6)
    out = tmp_path / "run"
    args = ["pretrain", "--data", corpus, "--out", out, "--decoder", decoder, *PRETRAIN_FAST]
    code = main([str(a) for a in [*args, "--num-workers", 2]])
    err = capfd.readouterr().err  # file descriptor 2: what FFmpeg itself would print
    assert code == 0, err
    assert not any(noise in err for noise in FFMPEG_NOISE), err
    for path in broken:  # once each, although two DataLoader workers read the corpus
        assert sum(str(path) in line for line in err.splitlines()) == 1, err
    used = json.loads((out / "sources.json").read_text())["sources"]
    assert [Path(s["path"]).name for s in used] == ["a.mp4", "b.mp4"]
    assert (out / "checkpoint.pth").is_file()


@pytest.mark.usefixtures("pretrain_log_to_capture")
def test_pretrain_with_no_readable_video_left_stops_with_one_line(tmp_path, capfd):
    broken = damaged_videos(tmp_path / "corpus")
    out = tmp_path / "run"
    args = ["pretrain", "--data", tmp_path / "corpus", "--out", out, *PRETRAIN_FAST]
    code = main([str(a) for a in args])
    err = capfd.readouterr().err
    *warnings_, last = err.strip().splitlines()
    one_line_error(code, last, "no readable videos or images", "4 unreadable")
    assert len(warnings_) == len(broken) and all("skipping" in w for w in warnings_), err
    assert not any(noise in err for noise in FFMPEG_NOISE), err
    assert not out.exists() or not any(out.iterdir())


# Silently wrong results: frames after a seek (issue 20). Every codec PyAV writes here, in
# every container that holds it, through every reader: frames reached by a seek (a start
# after frame 0, a backward read in chunks, random access) must be the frames a sequential
# read gives at those numbers, and show the numbers drawn into them.

SEEK_MATRIX = [
    (codec, container)
    for codec in bad.NUMBERED_CODECS
    for container in sorted(bad.CONTAINERS)
    if container != "webm" or codec in bad.WEBM_CODECS
]


@pytest.fixture(scope="module")
def numbered_videos(tmp_path_factory):
    """(codec, container) -> a 40-frame numbered video, built once per module."""
    folder = tmp_path_factory.mktemp("numbered")
    built: dict[tuple[str, str], Path] = {}

    def get(codec: str, container: str) -> Path:
        if (codec, container) not in built:
            path = folder / f"{codec}.{container}"
            built[codec, container] = bad.numbered_video(path, codec)
        return built[codec, container]

    return get


def _numbers(frames) -> list[int]:
    return [bad.frame_number(frame) for frame in frames]


@pytest.mark.parametrize("reader", ["decord", "pyav", "auto"])
@pytest.mark.parametrize(("codec", "container"), SEEK_MATRIX)
def test_frames_after_a_seek_are_the_right_ones(codec, container, reader, numbered_videos):
    from dinotrack.io.random_access import read_video_frames
    from dinotrack.io.video import FrameReader

    path = numbered_videos(codec, container)
    with FrameReader(path, backend=reader) as video:
        sequential = list(video)
    assert _numbers(sequential) == list(range(40))
    wrong = []
    for start, stop in [(1, None), (10, 20), (25, None), (39, None), (18, 19)]:
        with FrameReader(path, backend=reader, start=start, stop=stop) as video:
            got = list(video)
        want = sequential[start:stop]
        if len(got) != len(want) or not all(map(np.array_equal, got, want)):
            wrong.append(f"start={start}: {_numbers(got)}")
    for chunk in (1, 7, 16):
        with FrameReader(path, backend=reader, reverse=True, chunk=chunk, start=3) as video:
            got = _numbers(video)
        if got != list(range(39, 2, -1)):
            wrong.append(f"reverse chunk={chunk}: {got}")
    indices = [25, 10, 3, 39, 10, 0, 31]
    got = read_video_frames(path, indices, backend=reader)
    if not all(np.array_equal(g, sequential[i]) for g, i in zip(got, indices, strict=True)):
        wrong.append(f"random access {indices}: {_numbers(got)}")
    assert not wrong, wrong


SEEKING_RUNS = {
    "start-frame": ["--mask", "{mask}", "--start-frame", "10"],
    "forward-prompt-after-0": ["--prompt", "0:{mask}", "--prompt", "12:{mask}"],
    "backward": ["--prompt", "20:{mask}", "--direction", "backward"],
    "both": ["--prompt", "20:{mask}", "--direction", "both"],
}


SEEKING_CASES = [("mpeg4-bframes.avi", run) for run in sorted(SEEKING_RUNS)] + [
    ("mpeg4-bframes.mp4", "both"),
    ("h264-bframes.avi", "both"),
]
"""Every run that seeks, on the file where decord's seeks were worst; "both" on the others
(slow on this machine: one segment of 40 frames per case and per source)."""


@pytest.mark.parametrize(("video", "run"), SEEKING_CASES)
def test_segment_on_a_video_equals_segment_on_its_frames(
    video, run, numbered_videos, tmp_path, capsys
):
    from dinotrack.io.video import FrameReader

    codec, container = video.rsplit(".", 1)
    path = numbered_videos(codec, container)
    folder = tmp_path / "frames"
    folder.mkdir()
    with FrameReader(path) as reader:  # the sequential read: the frames as a folder
        for index, frame in enumerate(reader):
            Image.fromarray(frame).save(folder / f"{index:05d}.png")
    mask = bad.mask(tmp_path / "mask.png")
    flags = [flag.format(mask=mask) for flag in SEEKING_RUNS[run]]
    results = {}
    for name, source in (("video", path), ("folder", folder)):
        code, err = cli(["segment", source, *flags, "--out", tmp_path / name, *FAST], capsys)
        assert code == 0, err
        results[name] = {
            png.name: np.asarray(Image.open(png)) for png in (tmp_path / name).glob("0*.png")
        }
    assert sorted(results["video"]) == sorted(results["folder"])
    differ = [
        n for n in results["video"] if not np.array_equal(results["video"][n], results["folder"][n])
    ]
    assert not differ, f"{len(differ)} of {len(results['video'])} masks differ: {differ}"


# Silently wrong results: RGB prompts numbered per file, and the void colour (issue 20).


def _rgb_prompt(path: Path, colours: list[tuple[int, int, int]]) -> Path:
    """An RGB mask with one block per colour, left to right (their raster order)."""
    rgb = np.zeros((*bad.SIZE, 3), np.uint8)
    for k, colour in enumerate(colours):
        rgb[10:30, 2 + 6 * k : 6 + 6 * k] = colour
    Image.fromarray(rgb).save(path)
    return path


@pytest.mark.parametrize("seed", range(16))
def test_a_colour_is_one_object_in_every_prompt_of_a_run(seed, tmp_path):
    from dinotrack.io.masks import davis_palette
    from dinotrack.pipeline.prompts import load_prompts

    rng = np.random.default_rng(seed)
    davis = [tuple(int(v) for v in c) for c in davis_palette()[1:]]  # 255's colour included
    others = [tuple(int(v) for v in rng.integers(1, 256, 3)) for _ in range(6)]
    pool = davis[:4] + [davis[-1]] + (others if seed % 2 else [])  # all DAVIS in even seeds
    sources, shown = {}, {}
    for frame in sorted(rng.choice(30, size=4, replace=False).tolist()):
        picked = [pool[i] for i in rng.choice(len(pool), size=rng.integers(1, 6), replace=False)]
        sources[frame] = _rgb_prompt(tmp_path / f"p{frame}.png", picked)
        shown[frame] = picked
    prompts, _ = load_prompts(sources, bad.SIZE)
    ids: dict[tuple[int, int, int], int] = {}
    seen_ids: set[int] = set()
    for frame in sorted(sources):
        for k, colour in enumerate(shown[frame]):
            found = np.unique(prompts[frame][10:30, 2 + 6 * k : 6 + 6 * k])
            assert len(found) == 1 and 0 < found[0] < 255, (frame, colour, found)
            if colour in ids:
                assert found[0] == ids[colour], f"{colour} changed id at frame {frame}"
            else:  # a colour first seen later is a new object
                assert found[0] not in seen_ids, f"{colour} took an earlier object's id"
                ids[colour] = int(found[0])
                seen_ids.add(int(found[0]))


def test_the_issue_example_red_and_green_then_green_alone(tmp_path):
    from dinotrack.pipeline.prompts import load_prompts

    red, green = (255, 0, 0), (0, 255, 0)
    sources = {0: _rgb_prompt(tmp_path / "a.png", [red, green])}
    sources[4] = _rgb_prompt(tmp_path / "b.png", [(0, 0, 0), green])  # green in the same place
    prompts, _ = load_prompts(sources, bad.SIZE)
    assert prompts[0][20, 10] == prompts[4][20, 10] == 2 and prompts[0][20, 4] == 1


@pytest.mark.parametrize(
    "colours",
    [
        [(224, 224, 192)],  # the DAVIS palette's colour 255 alone
        [(128, 0, 0), (224, 224, 192)],  # with DAVIS object colours
        [(224, 224, 192), (128, 0, 0), (0, 128, 0)],  # first in raster order
        [(10, 200, 30), (224, 224, 192)],  # with a colour outside the palette
    ],
)
def test_the_void_colour_in_an_rgb_mask_is_not_object_255(colours, tmp_path):
    from dinotrack.io.masks import read_mask

    ids = read_mask(_rgb_prompt(tmp_path / "m.png", colours)).ids
    found = [int(ids[20, 2 + 6 * k]) for k in range(len(colours))]
    assert 255 not in found and 0 not in found and len(set(found)) == len(colours), found


def test_gray_value_255_as_an_id_is_refused(tmp_path):
    from dinotrack.io.masks import read_mask

    Image.fromarray(np.array([[0, 3, 255]] * 20, dtype=np.uint16)).save(tmp_path / "g.png")
    with pytest.raises(ValueError, match="255 = void"):
        read_mask(tmp_path / "g.png")


def test_a_void_coloured_object_survives_segment_and_export(clip, tmp_path, capsys):
    frames, _ = clip
    mask = _rgb_prompt(tmp_path / "m.png", [(224, 224, 192)] * 3)  # one 12-pixel-wide object
    code, err = cli(["segment", frames, "--mask", mask, "--out", tmp_path / "o", *FAST], capsys)
    assert code == 0, err
    code, err = cli(["export", tmp_path / "o", "--to", "objects"], capsys)
    assert code == 0, err
    exported = list((tmp_path / "o" / "objects").rglob("*.png"))
    assert exported and any(np.asarray(Image.open(p)).any() for p in exported), exported


# Silently wrong results: --mask with --start-frame N and a backward direction (issue 20). The
# mask is frame N's prompt; the run tracks down to frame 0, as --prompt N:MASK does.


@pytest.mark.parametrize("direction", ["backward", "both"])
@pytest.mark.parametrize("start", [0, 2, 5])
def test_api_first_mask_at_start_tracks_down_to_frame_0(start, direction, tiny_tracker):
    tracker = tiny_tracker()
    frames = bad.frames(8)
    mask = np.zeros(bad.SIZE, np.int64)
    mask[10:30, 10:30] = 1
    indices = [i for i, _ in tracker.track(frames, mask, start=start, direction=direction)]
    wanted = {"backward": list(range(start, -1, -1))}
    wanted["both"] = list(range(start, 8)) + list(range(start - 1, -1, -1))
    assert indices == wanted[direction]
    with_prompts = tracker.track(frames, prompts={start: mask}, direction=direction)
    for (i, got), (j, want) in zip(
        tracker.track(frames, mask, start=start, direction=direction), with_prompts, strict=True
    ):
        assert i == j and np.array_equal(got, want)


@pytest.mark.parametrize("direction", ["backward", "both"])
def test_cli_mask_at_start_frame_tracks_down_to_frame_0(direction, tmp_path, capsys):
    frames = bad.frames_dir(tmp_path / "frames", count=6)
    mask = bad.mask(tmp_path / "mask.png")
    written = {}
    for name, objects in (
        ("mask", ["--mask", mask, "--start-frame", "3"]),
        ("prompt", ["--prompt", f"3:{mask}"]),
    ):
        out = tmp_path / name
        args = ["segment", frames, *objects, "--direction", direction, "--out", out, *FAST]
        code, err = cli(args, capsys)
        assert code == 0, err
        written[name] = {p.name: np.asarray(Image.open(p)) for p in out.glob("0*.png")}
    expected = 4 if direction == "backward" else 6
    assert sorted(written["mask"]) == [f"{i:05d}.png" for i in range(expected)]
    assert sorted(written["mask"]) == sorted(written["prompt"])
    assert all(np.array_equal(written["mask"][n], written["prompt"][n]) for n in written["mask"])


# Resource exhaustion: a small file declaring a huge mask (issue 20). A mask far larger than
# the frames is refused from its header, before it is decoded.

HUGE_MASKS = [
    (13856, 10392, 2),  # the issue's RGB PNG (431 KB on disk, 10.9 GB decoded)
    (13856, 10392, 3),  # palette
    (13856, 10392, 0),  # grayscale
    (64 * 17, 48, 2),  # only wider than 16 frames
    (64, 48 * 17, 3),  # only taller
]


@pytest.mark.parametrize("flag", ["--mask", "--prompt"])
@pytest.mark.parametrize(("width", "height", "colour_type"), HUGE_MASKS)
def test_a_mask_far_larger_than_the_frames_is_refused_before_decoding(
    width, height, colour_type, flag, clip, tmp_path, capsys, monkeypatch
):
    from PIL import ImageFile

    load = ImageFile.ImageFile.load

    def never_decode_the_huge_mask(self, *args, **kwargs):
        assert self.size[0] * self.size[1] < 50_000, "the huge mask was decoded"
        return load(self, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", never_decode_the_huge_mask)
    frames, _ = clip
    huge = bad.bomb_png(tmp_path / "huge.png", width, height, colour_type)
    objects = ["--mask", huge] if flag == "--mask" else ["--prompt", f"1:{huge}"]
    code, err = cli(["segment", frames, *objects, "--out", tmp_path / "o", *FAST], capsys)
    one_line_error(code, err, f"is {width}x{height} but the frames are 64x48")


def test_a_mask_at_a_rescale_of_the_frames_is_still_read(clip, tmp_path):
    from dinotrack.pipeline.prompts import load_prompts

    big = bad.mask(tmp_path / "big.png", size=(48 * 16, 64 * 16))
    with pytest.warns(UserWarning):
        prompts, _ = load_prompts({0: big}, bad.SIZE)
    assert prompts[0].shape == bad.SIZE and prompts[0].any()


# Messages about prompts (issue 20): "prompt" only for prompts; a frame that is not an ASCII
# number is one clear line; negative frames count from the end; prompt files inside --out are
# refused as --mask is.


def _bad_masks(tmp_path: Path) -> dict[str, Path]:
    small = tmp_path / "small.png"
    write_mask(small, np.ones((100, 100), np.uint8))  # another aspect ratio
    empty = tmp_path / "empty.png"
    write_mask(empty, np.zeros(bad.SIZE, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    huge = bad.bomb_png(tmp_path / "huge.png", 13856, 10392, 2)
    return {"small": small, "empty": empty, "broken": broken, "huge": huge}


@pytest.mark.parametrize("which", ["small", "empty", "broken", "huge"])
def test_a_mask_error_does_not_speak_of_prompts(which, clip, tmp_path, capsys):
    frames, _ = clip
    mask = _bad_masks(tmp_path)[which]
    code, err = cli(["segment", frames, "--mask", mask, "--out", tmp_path / "o", *FAST], capsys)
    one_line_error(code, err, str(mask))
    assert "prompt" not in err.lower(), err


@pytest.mark.parametrize(
    "value", ["²:m.png", "١:m.png", "1.5:m.png", ":m.png", "x:m.png", "1:", "--1:m.png", "+1:m.png"]
)
def test_a_prompt_frame_that_is_no_number_is_one_line(value, clip, tmp_path, capsys):
    frames, mask = clip
    value = value.replace("m.png", str(mask))
    code, err = cli(
        ["segment", frames, f"--prompt={value}", "--out", tmp_path / "o", *FAST], capsys
    )
    one_line_error(code, err, "--prompt expects FRAME:MASK")


@pytest.mark.parametrize(
    ("flags", "written"),
    [
        (["--prompt", "-1:{m}"], [2]),  # the clip has 3 frames
        (["--prompt=-1:{m}"], [2]),
        (["--prompt", "-3:{m}"], [0, 1, 2]),
        (["--prompt", "-2:{m}", "--direction", "backward"], [0, 1]),
    ],
)
def test_negative_prompt_frames_count_from_the_end(flags, written, clip, tmp_path, capsys):
    frames, mask = clip
    flags = [flag.format(m=mask) for flag in flags]
    code, err = cli(["segment", frames, *flags, "--out", tmp_path / "o", *FAST], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").glob("0*.png")) == [
        f"{i:05d}.png" for i in written
    ]


def test_a_prompt_frame_before_the_first_is_one_line(clip, tmp_path, capsys):
    frames, mask = clip
    code, err = cli(["segment", frames, "--prompt", f"-4:{mask}", "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "counts from the end", "3 frames")


@pytest.mark.parametrize("where", ["--prompt", "--prompt-later", "--prompts", "--prompts-is-out"])
def test_prompt_files_inside_out_are_refused(where, clip, tmp_path, capsys):
    frames, mask = clip
    out = tmp_path / "o"
    code, err = cli(["segment", frames, "--mask", mask, "--out", out, *FAST], capsys)
    assert code == 0, err
    inside = out / "prompts" if where == "--prompts" else out
    inside.mkdir(exist_ok=True)
    (inside / "00001.png").write_bytes(mask.read_bytes())
    before = bad.snapshot(out)
    objects = {
        "--prompt": ["--prompt", f"1:{inside / '00001.png'}"],
        "--prompt-later": ["--prompt", f"0:{mask}", "--prompt", f"1:{inside / '00001.png'}"],
        "--prompts": ["--prompts", inside],
        "--prompts-is-out": ["--prompts", inside],
    }[where]
    code, err = cli(["segment", frames, *objects, "--out", out, *FAST], capsys)
    one_line_error(code, err, "is inside --out")
    assert bad.snapshot(out) == before


# Inputs that need no model are checked before it is loaded (issue 20).

NO_MODEL_NEEDED = {
    "box-three-numbers": ["--auto", "--box", "1,2,3"],
    "box-backwards": ["--auto", "--box", "30,30,10,10"],
    "box-outside": ["--auto", "--box", "0,0,999,999"],
    "box-prompt-backwards": ["--mask", "{mask}", "--box", "30,30,10,10"],
    "objects-0": ["--auto", "--objects", "0"],
    "mass-2": ["--auto", "--mass", "2"],
    "mask-missing": ["--mask", "{tmp}/missing.png"],
    "mask-wrong-size": ["--mask", "{tmp}/small.png"],
    "mask-empty": ["--mask", "{tmp}/empty.png"],
    "prompt-past-the-end": ["--prompt", "7:{mask}"],
    "prompt-malformed": ["--prompt", "x:{mask}"],
    "prompts-missing": ["--prompts", "{tmp}/nowhere"],
    "start-frame-past-the-end": ["--mask", "{mask}", "--start-frame", "9"],
    "weights-missing": ["--mask", "{mask}", "--weights", "{tmp}/missing.pth"],
}


@pytest.fixture
def no_model(monkeypatch):
    """Fails a command that loads its model (a test of inputs checked before that)."""
    import dinotrack.cli.attention
    import dinotrack.cli.common
    import dinotrack.cli.job

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    for module in (dinotrack.cli.common, dinotrack.cli.job, dinotrack.cli.attention):
        monkeypatch.setattr(module, "build_tracker", load)


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("case", sorted(NO_MODEL_NEEDED))
def test_inputs_that_need_no_model_are_checked_before_loading_it(case, clip, tmp_path, capsys):
    frames, mask = clip
    _bad_masks(tmp_path)
    flags = [flag.format(mask=mask, tmp=tmp_path) for flag in NO_MODEL_NEEDED[case]]
    code, err = cli(["segment", frames, *flags, "--out", tmp_path / "o", *FAST], capsys)
    one_line_error(code, err)


ATTENTION_NO_MODEL_NEEDED = {
    "mass-2": ["{frame}", "--mass", "2", "--out", "{tmp}/a"],
    "alpha-2": ["{frame}", "--alpha", "2", "--out", "{tmp}/a"],
    "input-missing": ["{tmp}/missing.png", "--out", "{tmp}/a"],
    "weights-missing": ["{frame}", "--weights", "{tmp}/missing.pth", "--out", "{tmp}/a"],
    "head-on-an-image": ["{frame}", "--head", "0", "--out", "{tmp}/a"],
    "video-to-a-folder": ["{video}", "--out", "{tmp}/a"],
}


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("case", sorted(ATTENTION_NO_MODEL_NEEDED))
def test_attention_inputs_are_checked_before_loading_the_model(case, clip, tmp_path, capsys):
    frames, _ = clip
    video = bad.video(tmp_path / "v.mp4")
    values = {"frame": frames / "00000.png", "video": video, "tmp": tmp_path}
    flags = [flag.format(**values) for flag in ATTENTION_NO_MODEL_NEEDED[case]]
    code, err = cli(["attention", *flags, "--model", "test_vit_tiny", "--device", "cpu"], capsys)
    one_line_error(code, err)
