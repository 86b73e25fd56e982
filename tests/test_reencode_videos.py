"""tools/data/reencode_videos.py: short keyframe intervals, same frames, exact random access."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from dinotrack.io.random_access import count_frames, read_video_frames
from dinotrack.io.video import available_backends
from tools.data import reencode_videos


def decode_all(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def keyframes(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size and packet.is_keyframe)


def test_reencoded_clip_has_short_gops_and_exact_random_access(shared_data, tmp_path, capsys):
    tool = reencode_videos
    source = shared_data("videos", "dog-agility.mp4")  # 25 frames, a single keyframe
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "dog-agility.mp4").write_bytes(source.read_bytes())
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video")
    assert tool.main([str(tmp_path / "in"), str(tmp_path / "out"), "--gop", "8"]) == 0
    assert "skipping" in capsys.readouterr().err
    target = tmp_path / "out" / "dog-agility.mp4"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dog-agility.mp4"]

    original, frames = decode_all(source), decode_all(target)
    assert keyframes(source) == 1 and keyframes(target) == 4  # frames 0, 8, 16, 24
    assert len(frames) == len(original) == count_frames(target) == 25
    for a, b in zip(frames, original, strict=True):
        assert np.abs(a.astype(np.int16) - b).mean() < 4  # the same pictures, re-encoded
    wanted = [24, 3, 9, 16, 15]
    for decoder in ["pyav", "decord"] if "decord" in available_backends() else ["pyav"]:
        for index, frame in zip(wanted, read_video_frames(target, wanted, decoder), strict=True):
            np.testing.assert_array_equal(frame, frames[index])  # seeks land on exact frames

    mtime = target.stat().st_mtime_ns
    assert tool.main([str(tmp_path / "in"), str(tmp_path / "out"), "--gop", "8"]) == 0
    assert target.stat().st_mtime_ns == mtime  # existing outputs are kept


def test_output_size_keeps_odd_sizes_as_before_and_scales_to_the_short_side():
    assert reencode_videos.output_size(853, 479) == (854, 480)  # no scaling: odd rounded up
    assert reencode_videos.output_size(854, 480, 240) == (428, 240)  # 427 rounded up
    assert reencode_videos.output_size(1280, 720, 240) == (428, 240)  # 426.7 -> 427 -> 428
    assert reencode_videos.output_size(480, 854, 240) == (240, 428)  # portrait
    assert reencode_videos.output_size(320, 200, 240) == (320, 200)  # already small enough


def test_short_side_downscales_to_the_pretraining_size(shared_data, tmp_path):
    source = shared_data("videos", "dog-agility.mp4")  # 854 x 480
    out = tmp_path / "out"
    assert reencode_videos.main([str(source), str(out), "--short-side", "240"]) == 0
    frames, original = decode_all(out / "dog-agility.mp4"), decode_all(source)
    assert len(frames) == len(original)
    assert frames[0].shape == (240, 428, 3)  # 854 * 240 / 480 = 427, rounded to even
    small = np.asarray(Image.fromarray(original[0]).resize((428, 240), Image.BOX))
    assert np.abs(frames[0].astype(np.int16) - small).mean() < 8  # the same picture, smaller

    # A short side already at most the target keeps the size.
    assert reencode_videos.main([str(source), str(tmp_path / "same"), "--short-side", "480"]) == 0
    assert decode_all(tmp_path / "same" / "dog-agility.mp4")[0].shape == (480, 854, 3)
    with pytest.raises(SystemExit) as exit_info:
        reencode_videos.main([str(source), str(out), "--short-side", "-1"])
    assert exit_info.value.code == 2
