"""Re-detection of a lost object (dinotrack.tracking.redetect, ``TrackerConfig.redetect``): on
hand-made patch features where the answer is known, then through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_support import run_cli, tiny_flags
from synthetic_clips import moving_square_folder

from dinotrack.config import TrackerConfig, preset_config
from dinotrack.tracking.redetect import Redetector

H, W, C = 16, 24, 16
SIDE = 3  # the object is 3 x 3 patches


def scene(object_at, lookalike_at=(4, 4), seed=0):
    """Unit features of a frame: a fixed random background, the object (a distinct appearance)
    at `object_at` and its look-alike (the same appearance) at `lookalike_at`, top-left
    corners in patches."""
    background = torch.randn(C, H, W, generator=torch.Generator().manual_seed(seed))
    look = torch.randn(C, generator=torch.Generator().manual_seed(99))
    feats = background.clone()
    for top, left in (lookalike_at, object_at):
        if top is not None:
            noise = 0.05 * torch.randn(C, SIDE, SIDE, generator=torch.Generator().manual_seed(top))
            feats[:, top : top + SIDE, left : left + SIDE] = look[:, None, None] + noise
    return F.normalize(feats, dim=0)


def labels_at(object_at):
    """Soft labels [2, H, W] with the object where it is (None: lost, all background)."""
    fg = torch.zeros(H, W)
    if object_at is not None:
        top, left = object_at
        fg[top : top + SIDE, left : left + SIDE] = 1
    return torch.stack([1 - fg, fg])


def object_region(labels):
    rows, columns = np.nonzero((labels.argmax(0) == 1).numpy())
    return (int(rows.min()), int(columns.min())) if len(rows) else None


def test_a_lost_object_is_found_where_it_moved_not_on_its_still_lookalike():
    path = [(8, 2), (8, 4), (8, 6), (8, 8), (8, 10)]  # moving right, 2 patches a frame
    redetector = Redetector(scene(path[0]), labels_at(path[0]))
    for place in path[1:]:
        out = redetector(scene(place), labels_at(place))
        assert object_region(out) == place  # followed: the labels are left as they are
    # Hidden for two frames (propagation loses it: no labels), then seen again further right.
    assert object_region(redetector(scene((None, None)), labels_at(None))) is None
    assert object_region(redetector(scene((None, None)), labels_at(None))) is None
    found = redetector(scene((8, 16)), labels_at(None))
    assert object_region(found) == (8, 16)
    assert int((found.argmax(0) == 1).sum()) == SIDE * SIDE  # not the look-alike at (4, 4)
    torch.testing.assert_close(found.sum(0), torch.ones(H, W))  # still a distribution
    # Found, it is followed again from there.
    assert object_region(redetector(scene((8, 18)), labels_at((8, 18)))) == (8, 18)


def test_candidates_far_from_the_motion_or_of_another_size_are_left():
    path = [(8, 2), (8, 4), (8, 6), (8, 8)]
    redetector = Redetector(scene(path[0]), labels_at(path[0]))
    for place in path[1:]:
        redetector(scene(place), labels_at(place))
    # Lost, and the only moved look-alike region is behind it, far from where it should be.
    out = redetector(scene((1, 20)), labels_at(None))
    assert object_region(out) is None
    assert redetector(scene((8, 12)), labels_at(None)).argmax(0).eq(1).sum() == SIDE * SIDE


def test_a_followed_object_is_never_touched():
    redetector = Redetector(scene((8, 2)), labels_at((8, 2)))
    for step in range(1, 6):
        labels = labels_at((8, 2 + step))
        assert redetector(scene((8, 2 + step)), labels) is labels


def test_off_in_the_dino_protocol_on_in_the_offline_preset_and_checked():
    assert TrackerConfig().redetect is False and preset_config("dino").redetect is False
    assert preset_config("offline").redetect is True
    with pytest.raises(TypeError, match="redetect must be True or False"):
        TrackerConfig(redetect="yes")


def test_segment_with_redetect(tmp_path, capsys):
    folder = tmp_path / "clip"
    masks = moving_square_folder(folder, n=6)
    mask = tmp_path / "first.png"
    from dinotrack.io.masks import write_mask

    write_mask(mask, masks[0])
    code, _, err = run_cli(
        ["segment", folder, "--mask", mask, "--out", tmp_path / "out", "--redetect",
         *tiny_flags(64)], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png"))[-1] == "00005.png"
    record = json.loads((tmp_path / "out" / ".dinotrack-output").read_text())
    assert record["run"]["settings"]["redetect"] is True  # part of what made the result
    code, _, err = run_cli(
        ["segment", folder, "--mask", mask, "--out", tmp_path / "off", "--no-redetect",
         "--preset", "offline", *tiny_flags(64)], capsys,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((tmp_path / "off" / ".dinotrack-output").read_text())
    assert record["run"]["settings"]["redetect"] is False
