"""Tests for dinotrack.io.video: backends, frames directories, background reading, overlays."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from dinotrack.io import decoders
from dinotrack.io.masks import davis_palette
from dinotrack.io.video import (
    FrameReader,
    VideoInfo,
    available_backends,
    iter_frames,
    probe_video,
    read_image_files,
)
from dinotrack.results.overlay import OverlayWriter, h264_available

VIDEO_BACKENDS = [b for b in ("decord", "pyav") if b in available_backends()]


def synthetic_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A frame whose brightness encodes its index, with a moving bright square."""
    frame = np.full((height, width, 3), (index * 8) % 200, dtype=np.uint8)
    x = (index * 3) % (width - 8)
    frame[8:16, x : x + 8] = 250
    return frame


def write_video(path: Path, num_frames: int, height: int = 48, width: int = 64) -> Path:
    """Encodes synthetic frames with PyAV (H.264 when available, else MPEG-4)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if h264_available() else "mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index, height, width), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def synthetic_mp4(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", 40)


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dinotrack-frame-reader"]


def wait_for_no_reader_threads(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while reader_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not reader_threads()


# Real clips.


def test_real_clip_both_backends_agree(shared_data):
    path = shared_data("videos", "dog-agility.mp4")
    if len(VIDEO_BACKENDS) < 2:
        pytest.skip("decord is not installed here; only one video backend to compare")
    infos = {backend: probe_video(path, backend) for backend in VIDEO_BACKENDS}
    frames = {backend: list(iter_frames(path, backend)) for backend in VIDEO_BACKENDS}
    for backend, info in infos.items():
        assert info.backend == backend
        assert (info.num_frames, info.height, info.width, info.fps) == (25, 480, 854, 24.0)
        assert info.frame_names[:2] == ("00000.png", "00001.png")
        assert len(frames[backend]) == info.num_frames
        for frame in frames[backend]:
            assert frame.shape == (480, 854, 3) and frame.dtype == np.uint8
            assert frame.flags["C_CONTIGUOUS"]
    for a, b in zip(frames["decord"], frames["pyav"], strict=True):
        assert np.abs(a.astype(np.int16) - b).mean() < 2.0


def test_real_frames_dir(shared_data):
    path = shared_data("davis2016-dev", "JPEGImages", "480p", "dog-agility")
    info = probe_video(path)
    assert info.backend == "frames" and info.fps == 24.0
    assert (info.num_frames, info.height, info.width) == (25, 480, 854)
    assert info.frame_names == tuple(f"{i:05d}.png" for i in range(25))
    frames = list(iter_frames(path, start=20))
    assert len(frames) == 5
    expected = np.asarray(Image.open(path / "00020.jpg").convert("RGB"))
    np.testing.assert_array_equal(frames[0], expected)


# Synthetic videos.


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_synthetic_video_content_and_start_stop(synthetic_mp4, backend):
    info = probe_video(synthetic_mp4, backend)
    assert (info.num_frames, info.height, info.width, info.fps) == (40, 48, 64, 24.0)
    frames = list(iter_frames(synthetic_mp4, backend))
    assert len(frames) == 40
    for index, frame in enumerate(frames):
        assert np.abs(frame.astype(np.int16) - synthetic_frame(index)).mean() < 3.0

    for start, stop, expected in [
        (0, 3, range(0, 3)),
        (17, 23, range(17, 23)),
        (35, None, range(35, 40)),
        (38, 100, range(38, 40)),
        (5, 5, range(0)),
        (50, None, range(0)),
    ]:
        part = list(iter_frames(synthetic_mp4, backend, start=start, stop=stop))
        assert len(part) == len(expected), (start, stop)
        for frame, index in zip(part, expected, strict=True):
            np.testing.assert_array_equal(frame, frames[index])


def test_synthetic_video_backends_agree(synthetic_mp4):
    if len(VIDEO_BACKENDS) < 2:
        pytest.skip("decord is not installed here; only one video backend to compare")
    decord_frames = list(iter_frames(synthetic_mp4, "decord"))
    pyav_frames = list(iter_frames(synthetic_mp4, "pyav"))
    assert len(decord_frames) == len(pyav_frames) == 40
    for a, b in zip(decord_frames, pyav_frames, strict=True):
        assert np.abs(a.astype(np.int16) - b).mean() < 2.0


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_mkv_without_frame_count(tmp_path, backend):
    path = write_video(tmp_path / "clip.mkv", 13)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the container declares no count
    info = probe_video(path, backend)
    assert info.num_frames == 13
    frames = list(iter_frames(path, backend))
    assert len(frames) == 13
    for index, frame in enumerate(frames):
        assert np.abs(frame.astype(np.int16) - synthetic_frame(index)).mean() < 3.0


def test_auto_backend(shared_data):
    assert probe_video(shared_data("videos", "dog-agility.mp4")).backend == VIDEO_BACKENDS[0]


def test_auto_backend_without_decord(synthetic_mp4, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # importing decord now fails
    assert available_backends() == ["frames", "pyav"]
    assert probe_video(synthetic_mp4).backend == "pyav"
    with pytest.raises(ValueError, match="decord"):
        probe_video(synthetic_mp4, "decord")


def test_without_pyav_frames_and_decord_still_work(synthetic_mp4, tmp_path):
    # An environment with decord but no PyAV (e.g. a GPU image): frame folders and decord read,
    # PyAV-only operations fail with one clear message, in a fresh interpreter.
    frames = make_frames_dir(tmp_path / "frames", ["1.png", "2.png"])
    code = f"""
import sys
sys.modules["av"] = None  # importing av now raises ImportError
from dinotrack.io import video as video_io
from dinotrack.tracking.tracker import Tracker
assert "pyav" not in video_io.available_backends()
assert len(list(video_io.iter_frames({str(frames)!r}))) == 2
try:
    video_io.probe_video({str(synthetic_mp4)!r}, "pyav")
except ValueError as error:
    assert "pip install av" in str(error), error
else:
    raise AssertionError("pyav without PyAV did not fail")
if "decord" in video_io.available_backends():
    assert video_io.probe_video({str(synthetic_mp4)!r}).backend == "decord"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# Frames directories.


def make_frames_dir(root: Path, names: list[str], sizes: dict[str, tuple[int, int]] | None = None):
    root.mkdir()
    for value, name in enumerate(names):
        width, height = (sizes or {}).get(name, (9, 7))
        Image.fromarray(np.full((height, width, 3), value * 10, dtype=np.uint8)).save(root / name)
    return root


def test_frames_dir_natural_sort_and_names(tmp_path):
    # Written in this order, values 0, 10, 20, ...; read back in natural order.
    names = ["frame10.png", "frame2.png", "frame1.jpg", "Frame3.PNG", "frame9.jpeg"]
    root = make_frames_dir(tmp_path / "frames", names)
    (root / "notes.txt").write_text("not a frame")
    (root / ".hidden.png").write_bytes(b"")
    info = probe_video(root)
    assert info == VideoInfo(
        path=root,
        num_frames=5,
        fps=24.0,
        height=7,
        width=9,
        frame_names=("frame1.png", "frame2.png", "Frame3.png", "frame9.png", "frame10.png"),
        backend="frames",
    )
    frames = list(iter_frames(root))
    # frame1.jpg is lossy; the pngs are exact.
    assert [int(round(f.mean())) for f in frames] == [20, 10, 30, 40, 0]
    assert all(f.shape == (7, 9, 3) and f.flags["C_CONTIGUOUS"] for f in frames)
    assert [int(round(f.mean())) for f in iter_frames(root, start=1, stop=3)] == [10, 30]


def test_frames_dir_odd_size_grayscale_frames(tmp_path):
    root = tmp_path / "gray"
    root.mkdir()
    Image.fromarray(np.full((17, 33), 77, dtype=np.uint8)).save(root / "0.png")
    (frame,) = iter_frames(root)
    assert frame.shape == (17, 33, 3) and (frame == 77).all()


def test_frames_dir_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no frames"):
        probe_video(empty)

    root = make_frames_dir(tmp_path / "mixed", ["0.png", "1.png", "2.png"], {"2.png": (10, 7)})
    frames = iter_frames(root)
    assert next(frames).shape == (7, 9, 3)
    with pytest.raises(ValueError, match="2.png"):
        list(frames)

    clash = make_frames_dir(tmp_path / "clash", ["a.png", "a.jpg"])
    with pytest.raises(ValueError, match="stem"):
        probe_video(clash)

    broken = make_frames_dir(tmp_path / "broken", ["0.png"])
    (broken / "1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="1.png"):
        list(iter_frames(broken))

    with pytest.raises(ValueError, match="directory"):
        probe_video(root, "pyav")


# Errors.


@pytest.mark.parametrize("backend", ["auto", *VIDEO_BACKENDS])
def test_corrupt_video(tmp_path, backend):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="cannot read video .*corrupt.mp4"):
        probe_video(path, backend)
    with pytest.raises(ValueError, match="cannot read video"):
        iter_frames(path, backend)
    with pytest.raises(ValueError, match="cannot read video"):
        FrameReader(path, backend)


# Damaged files.

CUTS = (0.3, 0.95)
"""Where the damaged clips are cut off, as fractions of the file's bytes."""


def write_noisy_video(path: Path, num_frames: int, index_first: bool) -> Path:
    """A 854x480 clip whose frames carry a patch of noise, so that the frame data dominates
    the file and a cut lands in it. `index_first` writes the index (the mp4 "moov" atom) before
    the frame data ("faststart"), so a cut-off file still opens; PyAV's default writes it last,
    so a cut-off file has none."""
    rng = np.random.default_rng(0)
    options = {"movflags": "faststart"} if index_first else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264" if h264_available() else "mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 854, 480, "yuv420p"
        for index in range(num_frames):
            frame = np.repeat(np.repeat(synthetic_frame(index), 10, axis=0), 10, axis=1)
            frame = np.ascontiguousarray(frame[:480, :854])
            frame[100:200, 100:300] = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict:
    """Intact 12-frame clips (index first and index last) and their copies cut at `CUTS`,
    keyed ("first" | "last", None | cut), with the intact clip's frames under "frames"."""
    root = tmp_path_factory.mktemp("damaged")
    clips: dict = {}
    for layout in ("first", "last"):
        intact = write_noisy_video(root / f"index_{layout}.mp4", 12, layout == "first")
        clips[layout, None] = intact
        data = intact.read_bytes()
        for cut in CUTS:
            path = root / f"index_{layout}_cut{round(cut * 100)}.mp4"
            path.write_bytes(data[: int(len(data) * cut)])
            clips[layout, cut] = path
    clips["frames"] = list(iter_frames(clips["first", None], "pyav"))
    assert len(clips["frames"]) == 12
    return clips


def read_damaged(path: Path, backend: str, reader: bool) -> tuple:
    """Reads all frames through `FrameReader` or `iter_frames`; returns (frames, the
    ValueError raised at opening or None, the one raised while iterating or None, warnings).
    Any other exception fails the test."""
    frames: list[np.ndarray] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            source = FrameReader(path, backend) if reader else iter_frames(path, backend)
        except ValueError as error:
            return frames, error, None, caught
        try:
            for frame in source:
                frames.append(frame)
        except ValueError as error:
            return frames, None, error, caught
        finally:
            if reader:
                source.close()
    return frames, None, None, caught


def assert_prefix_of(frames: list[np.ndarray], intact: list[np.ndarray]) -> None:
    """The frames are the intact clip's first ones, in order, none repeated or skipped."""
    assert len(frames) <= len(intact)
    for frame, expected in zip(frames, intact, strict=False):
        assert frame.shape == (480, 854, 3)
        assert np.abs(frame.astype(np.int16) - expected).mean() < 2.0


@pytest.mark.parametrize("reader", [False, True], ids=["iter_frames", "FrameReader"])
@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_cut_off_video_gives_frames_or_one_clear_error(damaged, backend, cut, reader, capfd):
    if backend not in ("auto", *VIDEO_BACKENDS):
        pytest.skip("decord is not installed here")
    intact = damaged["frames"]

    # Index last: nothing to read, for every backend.
    path = damaged["last", cut]
    frames, at_open, later, _ = read_damaged(path, backend, reader)
    assert at_open is not None and not frames, later
    message = str(at_open)
    assert message.startswith(f"cannot read video {path}: ") and "\n" not in message

    # Index first: the frames before the cut.
    path = damaged["first", cut]
    frames, at_open, later, caught = read_damaged(path, backend, reader)
    assert_prefix_of(frames, intact)
    if backend == "decord":  # decord raises at the cut; "auto" reads on with PyAV
        error = at_open or later
        assert error is not None or caught
        if at_open is not None:
            assert str(at_open).startswith(f"cannot read video {path}: ")
        if later is not None:
            # decord is not deterministic on such files: FrameReader's thread, which opens the
            # file again, may already fail to open it where the probe succeeded.
            reopened = not frames and str(later).startswith(f"cannot read video {path}: ")
            assert reopened or str(later).startswith(
                f"cannot decode frame {len(frames)} of {path}: "
            )
        assert error is None or "\n" not in str(error)
    else:
        assert at_open is None and later is None, at_open or later
        assert 0 < len(frames) < len(intact)
        (warning,) = caught
        assert f"ends after {len(frames)} of the " in str(warning.message)
        assert "cut off" in str(warning.message)
        if backend == "auto":
            pyav_frames, *_ = read_damaged(path, "pyav", reader)
            assert len(frames) >= len(pyav_frames)

    # FFmpeg's and decord's own log lines are silenced.
    out, err = capfd.readouterr()
    assert err == "", err


@pytest.mark.parametrize("backend", ["auto", *VIDEO_BACKENDS])
def test_text_file_named_mp4(tmp_path, backend, capfd):
    path = tmp_path / "notes.mp4"
    path.write_text("these are notes, not a video\n" * 20)
    for read in (probe_video, iter_frames, FrameReader):
        with pytest.raises(ValueError) as caught:
            read(path, backend)
        assert str(caught.value) == (
            f"cannot read video {path}: Invalid data found when processing input"
        )
    assert capfd.readouterr().err == ""


def test_intact_clips_read_without_warnings(damaged):
    for layout in ("first", "last"):
        for backend in ("auto", *VIDEO_BACKENDS):
            frames, at_open, later, caught = read_damaged(damaged[layout, None], backend, True)
            assert (at_open, later, caught) == (None, None, [])
            assert len(frames) == 12
            assert_prefix_of(frames, damaged["frames"])


class DecordFailingAt:
    """A real decord reader whose frame `fail_at` fails to decode, as a damaged one would."""

    def __init__(self, reader, fail_at: int) -> None:
        self.reader, self.fail_at, self.position = reader, fail_at, 0

    def seek_accurate(self, index: int) -> None:
        self.reader.seek_accurate(index)
        self.position = index

    def next(self):
        if self.position == self.fail_at:
            import decord

            raise decord.DECORDError(
                "[02:33:37] /src/video/ffmpeg/filter_graph.cc:100: Check failed: "
                "av_buffersrc_add_frame_flags(ctx, frame, 4) >= 0 (-22 vs. 0) "
                "Error while feeding the filter graph"
            )
        self.position += 1
        return self.reader.next()


@pytest.mark.parametrize("start", [0, 5])
def test_auto_reads_on_with_pyav_after_a_decord_failure(synthetic_mp4, monkeypatch, start):
    if "decord" not in VIDEO_BACKENDS:
        pytest.skip("decord is not installed here")
    decord_frames = list(iter_frames(synthetic_mp4, "decord"))
    pyav_frames = list(iter_frames(synthetic_mp4, "pyav"))
    open_decord = decoders.open_decord

    def failing(decord, path):
        info, reader = open_decord(decord, path)
        return info, DecordFailingAt(reader, 12)

    monkeypatch.setattr(decoders, "open_decord", failing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = list(iter_frames(synthetic_mp4, "auto", start=start))
        with FrameReader(synthetic_mp4, prefetch=2, start=start) as reader:
            from_reader = list(reader)
    expected = decord_frames[start:12] + pyav_frames[12:]  # in order, no repeat, no gap
    for got in (frames, from_reader):
        assert len(got) == 40 - start
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)

    if start > 0:  # decord's seeks are not trusted: a later start is read with PyAV
        assert len(list(iter_frames(synthetic_mp4, "decord", start=start))) == 40 - start
        return
    received = []
    message = f"cannot decode frame 12 of {synthetic_mp4}: Error while feeding the filter graph"
    with pytest.raises(ValueError) as caught:
        for frame in iter_frames(synthetic_mp4, "decord", start=start):
            received.append(frame)
    assert str(caught.value) == message and len(received) == 12 - start


@pytest.mark.parametrize("layout", ["first", "last"])
def test_cli_on_a_cut_off_video(damaged, tmp_path, layout):
    mask = np.zeros((480, 854), dtype=np.uint8)
    mask[100:250, 300:500] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dinotrack",
            "segment",
            str(damaged[layout, 0.95]),
            "--mask",
            str(tmp_path / "mask.png"),
            "--out",
            str(tmp_path / "out"),
            *("--model", "test_vit_tiny", "--short-side", "64", "--device", "cpu"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    lines = done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    assert not [line for line in lines if line.startswith("[") or "@ 0x" in line], lines
    if layout == "first":  # PyAV reads the frames before the cut
        assert done.returncode == 0, done.stderr
        assert lines[0].startswith("dinotrack: warning: video ") and "cut off" in lines[0]
        written = sorted(path.name for path in (tmp_path / "out").glob("*.png"))
        assert 0 < len(written) < 12 and written[0] == "00000.png"
    else:
        assert done.returncode == 2
        assert lines == [
            f"dinotrack: error: cannot read video {damaged[layout, 0.95]}: "
            "Invalid data found when processing input"
        ]
        assert not (tmp_path / "out").exists()


def test_path_and_argument_errors(tmp_path, synthetic_mp4):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        FrameReader(tmp_path / "missing.mp4")
    text = tmp_path / "clip.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="cannot read video .*unsupported extension '.txt'"):
        probe_video(text)
    with pytest.raises(ValueError, match="unknown video backend"):
        probe_video(synthetic_mp4, "opencv")
    with pytest.raises(ValueError, match="directory of frames"):
        probe_video(synthetic_mp4, "frames")
    with pytest.raises(ValueError, match="start"):
        iter_frames(synthetic_mp4, start=-1)
    with pytest.raises(ValueError, match="stop"):
        iter_frames(synthetic_mp4, start=5, stop=4)
    with pytest.raises(ValueError, match="prefetch"):
        FrameReader(synthetic_mp4, prefetch=0)


# Background reading.


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_frame_reader_matches_iter_frames(synthetic_mp4, backend):
    expected = list(iter_frames(synthetic_mp4, backend, start=3, stop=30))
    with FrameReader(synthetic_mp4, backend, prefetch=2, start=3, stop=30) as reader:
        assert reader.info.num_frames == 40
        frames = list(reader)
        assert len(frames) == 27
        for a, b in zip(frames, expected, strict=True):
            np.testing.assert_array_equal(a, b)
        assert len(list(reader)) == 27  # each pass starts afresh
    assert wait_for_no_reader_threads()
    with pytest.raises(RuntimeError, match="closed"):
        iter(reader)


def test_frame_reader_reraises_decoding_errors(tmp_path):
    root = make_frames_dir(tmp_path / "f", ["0.png", "1.png", "2.png", "3.png"], {"3.png": (5, 5)})
    received = []
    with pytest.raises(ValueError, match="3.png"), FrameReader(root, prefetch=1) as reader:
        for frame in reader:
            received.append(frame)
    assert len(received) == 3
    assert wait_for_no_reader_threads()


def test_frame_reader_stops_on_early_break(synthetic_mp4):
    with FrameReader(synthetic_mp4, prefetch=2) as reader:
        for index, _ in enumerate(reader):
            if index == 1:
                break
        # Leaving the loop closes the iterator, which stops its thread before the end.
        assert wait_for_no_reader_threads()
    assert wait_for_no_reader_threads()


def test_frame_reader_stops_when_dropped(synthetic_mp4):
    reader = FrameReader(synthetic_mp4, prefetch=2)
    frames = iter(reader)
    next(frames)
    assert len(reader_threads()) == 1
    del reader, frames
    gc.collect()
    assert wait_for_no_reader_threads()

    # An iterator that was never advanced has not entered its cleanup code yet.
    reader = FrameReader(synthetic_mp4, prefetch=2)
    frames = iter(reader)
    assert len(reader_threads()) == 1
    del reader, frames
    gc.collect()
    assert wait_for_no_reader_threads()


def test_read_image_files_in_given_order(tmp_path):
    root = make_frames_dir(tmp_path / "f", ["a.png", "b.jpg", "c.png", "d.png"], {"d.png": (5, 5)})
    frames = read_image_files([root / "c.png", root / "a.png"], prefetch=1)
    assert [int(frame[0, 0, 0]) for frame in frames] == [20, 0]
    assert wait_for_no_reader_threads()

    received = []
    with pytest.raises(ValueError, match=r"d\.png is 5x5 but frame .*a\.png is 9x7"):
        for frame in read_image_files([root / "a.png", root / "c.png", root / "d.png"]):
            received.append(frame)
    assert len(received) == 2
    (root / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read frame .*broken.png"):
        list(read_image_files([root / "broken.png"]))
    assert wait_for_no_reader_threads()

    frames = read_image_files([root / "a.png"] * 50, prefetch=2)
    next(frames)
    assert len(reader_threads()) == 1
    frames.close()  # what dropping the iterator (e.g. a tracking error) does
    assert wait_for_no_reader_threads()


# Overlay videos.


def test_overlay_writer_round_trip(tmp_path):
    path = tmp_path / "overlay.mp4"
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frame[:] = (40, 90, 160)
    mask = np.zeros((48, 64), dtype=np.int64)
    mask[8:40, 4:30] = 1
    mask[8:40, 34:60] = 2
    palette = davis_palette()
    with OverlayWriter(path, fps=24.0, width=64, height=48, palette=palette, alpha=0.5) as writer:
        assert writer.codec == ("libx264" if h264_available() else "mpeg4")
        for _ in range(7):
            writer.write(frame, mask)
        assert not path.exists()  # published only on close
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]

    info = probe_video(path, "pyav")
    assert (info.num_frames, info.height, info.width, info.fps) == (7, 48, 64, 24.0)
    frames = list(iter_frames(path, "pyav"))
    assert len(frames) == 7
    last = frames[-1].astype(np.float32)
    # Away from the outlines and chroma edges: background as is, objects half-blended.
    assert np.abs(last[44:48, 0:64] - frame[0, 0]).mean() < 6
    assert np.abs(last[14:34, 10:24] - (0.5 * frame[0, 0] + 0.5 * palette[1])).mean() < 6
    assert np.abs(last[14:34, 40:54] - (0.5 * frame[0, 0] + 0.5 * palette[2])).mean() < 6


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_overlay_writer_odd_size(tmp_path, codec):
    path = tmp_path / "odd.mp4"
    with OverlayWriter(path, 30000 / 1001, 33, 17, davis_palette(), codec=codec) as writer:
        for index in range(5):
            writer.write(synthetic_frame(index, 17, 33), np.zeros((17, 33), dtype=np.int64))
    info = probe_video(path, "pyav")
    assert (info.num_frames, info.height, info.width) == (5, 18, 34)  # padded to even
    assert abs(info.fps - 30000 / 1001) < 1e-6
    frames = list(iter_frames(path))
    assert len(frames) == 5
    assert np.abs(frames[2][:17, :33].astype(np.int16) - synthetic_frame(2, 17, 33)).mean() < 6


def test_overlay_writer_abort_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    writer = OverlayWriter(path, 24, 16, 16, davis_palette())
    writer.write(np.zeros((16, 16, 3), dtype=np.uint8), np.zeros((16, 16), dtype=np.int64))
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8), np.zeros((16, 16), dtype=np.int64))

    with pytest.raises(KeyError), OverlayWriter(path, 24, 16, 16, davis_palette()) as writer:
        writer.write(np.zeros((16, 16, 3), dtype=np.uint8), np.zeros((16, 16), dtype=np.int64))
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []

    with (
        pytest.raises(ValueError, match="no frames"),
        OverlayWriter(path, 24, 16, 16, davis_palette()),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


def test_overlay_writer_keeps_previous_file_on_abort(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    with (
        pytest.raises(ValueError, match="shape"),
        OverlayWriter(path, 24, 16, 16, davis_palette()) as writer,
    ):
        writer.write(np.zeros((16, 15, 3), dtype=np.uint8), np.zeros((16, 15), dtype=np.int64))
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_overlay_writer_argument_errors(tmp_path):
    palette = davis_palette()
    with pytest.raises(ValueError, match="must end in"):
        OverlayWriter(tmp_path / "out.gif", 24, 16, 16, palette)
    with pytest.raises(FileNotFoundError, match="nodir"):
        OverlayWriter(tmp_path / "nodir" / "out.mp4", 24, 16, 16, palette)
    with pytest.raises(ValueError, match="fps"):
        OverlayWriter(tmp_path / "out.mp4", 0, 16, 16, palette)
    with pytest.raises(ValueError, match="width and height"):
        OverlayWriter(tmp_path / "out.mp4", 24, 0, 16, palette)
    with pytest.raises(ValueError, match="palette"):
        OverlayWriter(tmp_path / "out.mp4", 24, 16, 16, np.zeros((3, 4), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_overlay_writer_fails_at_once_where_it_cannot_write():
    # The file is created when the writer is, not at the first frame (after the work).
    with pytest.raises(OSError, match="cannot write /proc/out.mp4: "):
        OverlayWriter("/proc/out.mp4", 24, 16, 16, davis_palette())
