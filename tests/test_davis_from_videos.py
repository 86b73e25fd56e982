"""tools/data/davis_from_videos.py: DAVIS JPEG frames rebuilt from the mp4 copies of a split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.data import davis_from_videos


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float32)


def test_rebuilt_frames_match_the_original_jpegs(shared_data, tmp_path):
    dev = shared_data("davis2016-dev")
    videos = shared_data("videos")
    root = tmp_path / "davis"
    shutil.copytree(dev / "Annotations/480p/dog-agility", root / "Annotations/480p/dog-agility")
    tool = davis_from_videos

    assert tool.rebuild(videos, root) == ["dog-agility"]
    rebuilt = sorted((root / "JPEGImages/480p/dog-agility").glob("*.jpg"))
    original = sorted((dev / "JPEGImages/480p/dog-agility").glob("*.jpg"))
    assert [p.name for p in rebuilt] == [p.name for p in original]
    # The same frame, not a neighbour: closer to its original than to the next original.
    same = np.abs(read(rebuilt[10]) - read(original[10])).mean()
    next_one = np.abs(read(rebuilt[10]) - read(original[11])).mean()
    assert same < 6 and same < next_one / 2
    assert tool.rebuild(videos, root) == []  # already there: left alone


def test_frame_count_mismatch_and_missing_video_are_refused(shared_data, tmp_path):
    videos = shared_data("videos")
    root = tmp_path / "davis"
    labels = root / "Annotations/480p/dog-agility"
    labels.mkdir(parents=True)
    Image.new("L", (854, 480)).save(labels / "00000.png")
    with pytest.raises(ValueError, match="has 25 frames but dog-agility has 1 annotations"):
        davis_from_videos.rebuild(videos, root)
    (root / "Annotations/480p/no-such-seq").mkdir()
    shutil.rmtree(labels)
    with pytest.raises(FileNotFoundError, match="no-such-seq"):
        davis_from_videos.rebuild(videos, root)
