"""The YouTube-VOS layout: objects entering later, sparse annotations, scoring, submissions."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from cli_support import run_cli, tiny_flags
from PIL import Image

from dinotrack.io.masks import read_mask, write_mask
from eval.youtube_vos import (
    first_prompts,
    open_sparse_split,
    run_sparse,
    score_sparse_video,
    summarise,
)

N_FRAMES, STRIDE, ENTER = 16, 5, 5
SIZE = (214, 120)  # each half, a quarter of a DAVIS frame


@pytest.fixture(scope="module")
def dataset(shared_data, tmp_path_factory):
    """``train``: two dev sequences side by side, object 1 (left) from frame 0 and object 2
    (right) entering at frame 5, annotated every 5th frame; ``valid``: the same frames with
    only each object's first annotation."""
    dev = shared_data("davis2016-dev")
    root = tmp_path_factory.mktemp("ytvos")
    halves = []
    for seq in ("dog-agility", "soccerball"):
        jpgs = sorted((dev / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:N_FRAMES]
        pngs = sorted((dev / "Annotations" / "480p" / seq).glob("*.png"))[:N_FRAMES]
        frames = [np.asarray(Image.open(p).convert("RGB").resize(SIZE)) for p in jpgs]
        masks = [np.asarray(Image.fromarray(read_mask(p).ids > 0).resize(SIZE)) for p in pngs]
        halves.append((frames, masks))
    truth = []
    for t in range(N_FRAMES):
        right = halves[1][1][t].astype(np.uint8) * 2 if t >= ENTER else 0 * halves[1][1][t]
        truth.append(np.concatenate([halves[0][1][t].astype(np.uint8), right], axis=1))
    for split in ("train", "valid"):
        (root / split / "JPEGImages" / "pair").mkdir(parents=True)
        (root / split / "Annotations" / "pair").mkdir(parents=True)
        for t in range(N_FRAMES):
            frame = np.concatenate([halves[0][0][t], halves[1][0][t]], axis=1)
            Image.fromarray(frame).save(root / split / "JPEGImages" / "pair" / f"{t:05d}.jpg")
    for t in range(0, N_FRAMES, STRIDE):
        write_mask(root / "train" / "Annotations" / "pair" / f"{t:05d}.png", truth[t])
    write_mask(root / "valid" / "Annotations" / "pair" / "00000.png", np.where(truth[0] == 1, 1, 0))
    first2 = np.where(truth[ENTER] == 2, 2, 0)
    write_mask(root / "valid" / "Annotations" / "pair" / f"{ENTER:05d}.png", first2)
    return root, truth


@pytest.fixture
def tracker(tiny_tracker):
    return tiny_tracker(short_side=64)


def test_prompts_are_the_first_appearances(dataset):
    root, truth = dataset
    (video,) = open_sparse_split(root, "train")
    assert sorted(video.annotations) == [0, 5, 10, 15] and len(video.frames) == N_FRAMES
    prompts = first_prompts(video)
    assert sorted(prompts) == [0, ENTER]
    np.testing.assert_array_equal(prompts[0], truth[0])  # object 1 only: 2 is not there yet
    np.testing.assert_array_equal(prompts[ENTER], np.where(truth[ENTER] == 2, 2, 0))


def test_scores_follow_the_official_rule(dataset, tmp_path):
    """Hand-checked: each object on the annotated frames after its first one, averaged per
    object, then over objects."""
    root, truth = dataset
    (video,) = open_sparse_split(root, "train")
    for t in range(N_FRAMES):
        write_mask(tmp_path / f"{t:05d}.png", truth[t])
    # Wrong masks on frames that are not scored change nothing: unannotated frames, the
    # frame of each object's first annotation.
    write_mask(tmp_path / "00003.png", np.zeros_like(truth[0]))
    write_mask(tmp_path / "00000.png", np.zeros_like(truth[0]))
    wrong = truth[ENTER].copy()
    wrong[wrong == 2] = 0
    write_mask(tmp_path / f"{ENTER:05d}.png", wrong)
    scores = score_sparse_video(video, tmp_path)
    assert scores.objects == {1: (1.0, 1.0, 3), 2: (1.0, 1.0, 2)}  # frames 5,10,15 and 10,15
    # Object 2 lost on frame 10: J = F = 0 there, 1 on frame 15 -> 0.5; the mean over the
    # two objects is 0.75.
    write_mask(tmp_path / "00010.png", np.where(truth[10] == 2, 0, truth[10]))
    scores = score_sparse_video(video, tmp_path)
    assert scores.objects[1] == (1.0, 1.0, 3) and scores.objects[2] == (0.5, 0.5, 2)
    summary = summarise([scores])
    assert summary["J-Mean"] == summary["F-Mean"] == summary["J&F-Mean"] == 0.75
    (tmp_path / "00015.png").unlink()
    with pytest.raises(FileNotFoundError, match="frame 15 is scored"):
        score_sparse_video(video, tmp_path)


SMALL_OBJECT = "ignore:object 2 of the prompt is smaller than one 8x8 patch"  # at 64 px


@pytest.mark.filterwarnings(SMALL_OBJECT)
def test_tracking_a_split_scores_it(dataset, tracker, tmp_path):
    root, truth = dataset
    videos = open_sparse_split(root, "train")
    result = run_sparse(videos, tracker, tmp_path)
    assert not result["withheld"] and result["submission"] is None
    written = sorted(p.name for p in (tmp_path / "Annotations" / "pair").iterdir())
    assert written == [f"{t:05d}.png" for t in range(N_FRAMES)]
    for t in range(ENTER):
        assert 2 not in read_mask(tmp_path / "Annotations" / "pair" / f"{t:05d}.png").ids
    (scores,) = result["scores"]
    assert set(scores.objects) == {1, 2} and 0 < result["summary"]["J&F-Mean"] <= 1


@pytest.mark.filterwarnings(SMALL_OBJECT)
def test_withheld_ground_truth_gives_the_submission_zip(dataset, tmp_path, capsys):
    root, _ = dataset
    out = tmp_path / "res"
    args = ["eval", "youtube-vos", "--root", root, "--split", "valid", "--out", out]
    code, _, err = run_cli([*args, *tiny_flags(64)], capsys)
    assert code == 0, err
    assert "withheld" in err and "submission.zip" in err
    with zipfile.ZipFile(out / "submission.zip") as archive:
        names = archive.namelist()
        assert sorted(names) == [f"Annotations/pair/{t:05d}.png" for t in range(N_FRAMES)]
        with archive.open(f"Annotations/pair/{ENTER:05d}.png") as png:
            image = Image.open(png)
            assert image.mode == "P" and image.size == (2 * SIZE[0], SIZE[1])


def test_bad_layouts_are_refused(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(FileNotFoundError, match="not a YouTube-VOS-layout split"):
        open_sparse_split(root, "test")
    with pytest.raises(ValueError, match=r"videos absent from .*\['nope'\]"):
        open_sparse_split(root, "train", ["nope"])
    copy = tmp_path / "copy"
    shutil.copytree(root / "train", copy / "train")
    write_mask(copy / "train" / "Annotations" / "pair" / "00099.png", np.ones((8, 8), np.uint8))
    with pytest.raises(ValueError, match="named like no frame"):
        open_sparse_split(copy, "train")
