"""Frame sources, per-epoch sampling, sharding over ranks and workers, decoding."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import adversarial_inputs as bad
import numpy as np
import pytest
import torch
from pretrain_support import SHORT_VIDEOS

from dinotrack.io.random_access import count_frames, read_video_frames
from dinotrack.io.video import iter_frames, probe_video, read_image
from pretrain.data import FrameBatches, Source, epoch_plan, find_sources, make_loader

SOURCES = [Source(f"v{i}.mp4", n, True) for i, n in enumerate([30, 5, 100])] + [
    Source(f"img{i}.jpg", 1, False) for i in range(3)
]


def test_epoch_plan_draws_fixed_frames_per_video_and_each_image_once():
    plan = epoch_plan(SOURCES, frames_per_video=8, max_frame_gap=0, seed=0, epoch=0)
    assert plan.shape == (3 * 8 + 3, 3)
    for index, source in enumerate(SOURCES):
        frames = plan[plan[:, 0] == index, 1]
        if source.is_video:
            assert len(frames) == 8 and frames.max() < source.num_frames
            # distinct frames while the video has enough; all 5 frames of the short one
            assert len(set(frames.tolist())) == min(8, source.num_frames)
        else:
            assert frames.tolist() == [0]
    np.testing.assert_array_equal(plan[:, 1], plan[:, 2])  # no temporal views
    again = epoch_plan(SOURCES, 8, 0, seed=0, epoch=0)
    np.testing.assert_array_equal(plan, again)
    other = epoch_plan(SOURCES, 8, 0, seed=0, epoch=1)
    assert not np.array_equal(plan, other)  # a fresh sample every epoch


def test_temporal_partner_frames_are_near_and_different():
    plan = epoch_plan(SOURCES, frames_per_video=20, max_frame_gap=3, seed=1, epoch=0)
    video = np.isin(plan[:, 0], [0, 1, 2])
    gap = np.abs(plan[video, 1] - plan[video, 2])
    assert gap.min() >= 1 and gap.max() <= 3
    assert set(gap.tolist()) == {1, 2, 3}
    n = np.array([s.num_frames for s in SOURCES])[plan[:, 0]]
    assert (plan[:, 2] < n).all() and (plan[:, 2] >= 0).all()
    np.testing.assert_array_equal(plan[~video, 2], 0)  # images pair with themselves


def test_ranks_get_disjoint_shards_of_the_same_length():
    world = 3
    shards = [
        FrameBatches(SOURCES, batch_size=2, frames_per_video=4, rank=r, world_size=world)
        for r in range(world)
    ]
    assert {s.steps_per_epoch for s in shards} == {15 // 3 // 2}
    for epoch in (0, 1):
        parts = [s.rank_batches(epoch).reshape(-1, 3) for s in shards]
        plan = epoch_plan(SOURCES, 4, 0, seed=0, epoch=epoch)
        # Step j's global batch is a contiguous window of the shuffled plan, dealt round robin.
        for j in range(shards[0].steps_per_epoch):
            window = plan[j * 2 * world : (j + 1) * 2 * world]
            dealt = np.concatenate([p[j * 2 : (j + 1) * 2] for p in parts])
            assert sorted(map(tuple, window.tolist())) == sorted(map(tuple, dealt.tolist()))
        keys = [set(map(tuple, p.tolist())) for p in parts]
        assert sum(len(k) for k in keys) == sum(len(p) for p in parts)  # no sample repeated
        assert not (keys[0] & keys[1] or keys[1] & keys[2] or keys[0] & keys[2])


def test_too_little_data_for_one_global_batch():
    with pytest.raises(ValueError, match="fewer than one global batch.*--frames-per-video"):
        FrameBatches(SOURCES[:1], batch_size=8, frames_per_video=4, world_size=2)


@pytest.fixture
def videos(shared_data):
    return [shared_data("videos", name) for name in SHORT_VIDEOS]


def test_find_sources_mixes_videos_and_image_folders(videos, shared_data, tmp_path):
    jpeg = shared_data("davis2016-dev", "JPEGImages", "480p", "boat", "00000.jpg")
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(jpeg, tmp_path / "a" / "b" / "x.jpg")
    shutil.copy(jpeg, tmp_path / "a" / "y.JPG")
    (tmp_path / "a" / "notes.txt").write_text("not a frame")
    shutil.copy(videos[0], tmp_path / "a" / "clip.mp4")
    (tmp_path / "a" / "broken.mp4").write_bytes(b"not a video")
    sources = find_sources([tmp_path / "a", videos[1]])
    names = [(s.path.rsplit("/", 1)[-1], s.num_frames, s.is_video) for s in sources]
    assert names == [
        ("x.jpg", 1, False),
        ("clip.mp4", 25, True),
        ("y.JPG", 1, False),
        ("rollerblade.mp4", 35, True),
    ]
    with pytest.raises(FileNotFoundError, match="--data .*missing does not exist"):
        find_sources([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable videos or images"):
        find_sources([tmp_path / "empty"])
    with pytest.raises(ValueError, match="not a video .* or image"):
        find_sources([tmp_path / "a" / "notes.txt"])


@pytest.mark.usefixtures("pretrain_log_to_capture")
@pytest.mark.parametrize("decoder", ["auto", "decord", "pyav"])
def test_find_sources_skips_each_unreadable_video_with_one_warning(
    videos, tmp_path, caplog, capfd, decoder
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(videos[0], corpus / "clip.mp4")
    damaged = {
        "cut.mp4": bad.truncated(bad.video(tmp_path / "whole.mp4", 20), corpus / "cut.mp4"),
        "empty.mp4": corpus / "empty.mp4",
        "noise.mp4": bad.random_bytes(corpus / "noise.mp4"),
        "zeroed.mp4": bad.zeroed_payload(corpus / "zeroed.mp4"),  # opens; frame 0 does not
    }
    damaged["empty.mp4"].write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="pretrain.data"):
        sources = find_sources([corpus], decoder)
    assert [(Path(s.path).name, s.num_frames) for s in sources] == [("clip.mp4", 25)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(damaged), lines
    for path in damaged.values():
        (line,) = [line for line in lines if str(path) in line]
        assert line.startswith("skipping cannot") and "\n" not in line, line
        assert len(line) < len(str(path)) + 160, line  # the reasons, not a dump
    assert capfd.readouterr().err == ""  # FFmpeg and decord print nothing themselves
    with pytest.raises(
        ValueError, match=r"no readable videos or images .*\(4 unreadable, skipped\)"
    ):
        find_sources(list(damaged.values()), decoder)


def test_tracking_and_pretraining_read_the_same_files_alike(videos, tmp_path):
    # One reading layer: a suffix that pretraining reads (.m4v) is a video for segment too,
    # and the random-access reader gives the streaming reader's frames.
    clip = tmp_path / "rollerblade.M4V"
    shutil.copy(videos[1], clip)
    assert [(s.num_frames, s.is_video) for s in find_sources([tmp_path])] == [(35, True)]
    streamed = list(iter_frames(clip, "pyav", start=3, stop=6))
    for got, want in zip(read_video_frames(clip, [3, 4, 5], backend="pyav"), streamed, strict=True):
        np.testing.assert_array_equal(got, want)
    assert probe_video(clip).num_frames == count_frames(clip) == 35
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=f"cannot read image {broken}: cannot identify"):
        read_image(broken)


def test_decord_and_pyav_decode_the_same_frames(videos):
    pytest.importorskip("decord")
    indices = [30, 3, 0, 3, 34, 17, 99]  # any order, a repeat, one past the end (= last)
    a = read_video_frames(videos[1], indices, backend="decord")
    b = read_video_frames(videos[1], indices, backend="pyav")
    assert [f.shape for f in a] == [(480, 854, 3)] * len(indices)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[1], a[3])
    np.testing.assert_array_equal(a[-1], a[4])  # past the end gives the last frame (34)
    assert not np.array_equal(a[0], a[2])


def test_auto_decoder_falls_back_to_pyav_for_a_file_decord_fails_on(videos, monkeypatch):
    decord = pytest.importorskip("decord")
    expected = read_video_frames(videos[1], [0, 17], backend="pyav")

    def broken(*args, **kwargs):  # what decord does on a file its FFmpeg build cannot read
        raise decord.DECORDError("cannot find video stream")

    monkeypatch.setattr(decord, "VideoReader", broken)
    assert count_frames(videos[1]) == 35
    for got, want in zip(read_video_frames(videos[1], [0, 17]), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"cannot decode frames \[0\] of .*: cannot find video"):
        read_video_frames(videos[1], [0], backend="decord")  # no fallback when asked for decord
    with pytest.raises(ValueError, match=r"read video \S+missing.mp4: No such file[^;]*$"):
        count_frames(videos[1].with_name("missing.mp4"))  # both backends agree: said once


def test_batches_pad_frames_and_record_sizes(shared_data, tmp_path):
    jpeg = shared_data("davis2016-dev", "JPEGImages", "480p", "boat", "00000.jpg")
    from PIL import Image

    Image.open(jpeg).resize((200, 300)).save(tmp_path / "tall.png")
    sources = find_sources([jpeg, tmp_path / "tall.png"])
    data = FrameBatches(sources, batch_size=2, max_short_side=120)
    batch = next(iter(data))
    assert batch.frames.dtype == torch.uint8 and batch.frames.shape == (2, 1, 3, 180, 214)
    sizes = {tuple(s) for s in batch.sizes.tolist()}
    assert sizes == {(120, 214), (180, 120)}  # short side brought down to 120
    for b, (h, w) in enumerate(batch.sizes.tolist()):
        assert batch.frames[b, :, :, h:].sum() == 0 and batch.frames[b, :, :, :, w:].sum() == 0
        assert batch.frames[b, :, :, :h, :w].float().std() > 10
    assert read_image(jpeg).shape == (480, 854, 3)


def test_worker_count_and_resume_point_do_not_change_the_batches(videos):
    sources = find_sources(videos)
    data = FrameBatches(sources, batch_size=2, frames_per_video=3, max_frame_gap=2)
    assert data.steps_per_epoch == 3
    data.set_epoch(1)
    serial = list(make_loader(data, num_workers=0, pin_memory=False))
    parallel = list(make_loader(data, num_workers=2, pin_memory=False))
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.frames, b.frames)
    assert serial[0].frames.shape[1] == 2  # temporal views: two frames per sample
    np.testing.assert_array_equal(
        torch.cat([b.ids for b in serial]).numpy(), data.rank_batches(1).reshape(-1, 3)
    )
    data.set_epoch(1, start_batch=2)
    rest = list(make_loader(data, num_workers=2, pin_memory=False))
    assert len(rest) == 1 and torch.equal(rest[0].frames, serial[2].frames)
