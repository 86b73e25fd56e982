"""Builders of bad inputs for the adversarial tests, made on the fly in a temporary folder:
files a careless user or an attacker would hand dinotrack."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from dinotrack.io.masks import write_mask

SIZE = (48, 64)
"""(H, W) of the small synthetic videos."""


def frames(count: int = 3, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """``count`` distinct RGB frames with a moving square."""
    out = []
    for index in range(count):
        frame = np.full((*size, 3), 40, np.uint8)
        frame[10:30, 10 + 2 * index : 30 + 2 * index] = (200, 90, 30)
        out.append(frame)
    return out


def frames_dir(path: Path, count: int = 3, size: tuple[int, int] = SIZE) -> Path:
    """A directory of PNG frames ``00000.png`` ..."""
    path.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames(count, size)):
        Image.fromarray(frame).save(path / f"{index:05d}.png")
    return path


def video(
    path: Path, count: int = 3, size: tuple[int, int] = SIZE, index_first: bool = False
) -> Path:
    """An mp4 (MPEG-4 part 2) of :func:`frames`; `index_first` writes the index before the
    frames ("faststart"), so that a cut-off copy still opens."""
    options = {"movflags": "faststart"} if index_first else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        for frame in frames(count, size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def mask(path: Path, size: tuple[int, int] = SIZE, palette_ids: tuple[int, ...] = (1,)) -> Path:
    """A palette PNG with one square per id."""
    ids = np.zeros(size, np.uint8)
    for k, value in enumerate(palette_ids):
        ids[8 + 4 * k : 28 + 4 * k, 8 + 12 * k : 24 + 12 * k] = value
    write_mask(path, ids)
    return path


def fifo(path: Path) -> Path:
    """A named pipe: opening it for reading blocks until a writer comes, i.e. forever."""
    os.mkfifo(path)
    return path


def symlink_loop(path: Path) -> Path:
    """A symbolic link pointing at itself."""
    os.symlink(path.name, path)
    return path


def bomb_png(
    path: Path, side: int = 100_000, height: int | None = None, colour_type: int = 0
) -> Path:
    """A 100 KB-free PNG declaring ``side`` x ``side`` pixels (10 billion; ``side`` x
    ``height`` if given): a decompression bomb. ``colour_type``: 0 = 1-bit grayscale, 2 =
    8-bit RGB, 3 = 8-bit palette."""
    depth = 1 if colour_type == 0 else 8
    header = struct.pack(
        ">IIBBBBB", side, side if height is None else height, depth, colour_type, 0, 0, 0
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    idat = zlib.compress(b"\0" * 1024)
    palette = chunk(b"PLTE", bytes(range(6))) if colour_type == 3 else b""
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + palette
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
    return path


def truncated(source: Path, path: Path) -> Path:
    """The first half of ``source``."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def random_bytes(path: Path, size: int = 2048) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def frames_dir_16bit(path: Path, count: int = 3, size: tuple[int, int] = SIZE) -> Path:
    """16-bit grayscale PNG frames whose values span 0..65535 (a ramp)."""
    path.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 65535, size[0] * size[1]).reshape(size).astype(np.uint16)
    for index in range(count):
        Image.fromarray(ramp).save(path / f"{index:05d}.png")
    return path


def lossy_webp_ellipse(path: Path, size: tuple[int, int] = (240, 320)) -> Path:
    """One red ellipse on black, saved as a lossy WebP (its edges grow new colours)."""
    y, x = np.mgrid[: size[0], : size[1]]
    inside = ((y - size[0] / 2) / (size[0] / 3)) ** 2 + ((x - size[1] / 2) / (size[1] / 3)) ** 2
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[inside < 1] = (200, 30, 30)
    Image.fromarray(rgb).save(path, format="WEBP", quality=60)
    return path


def export(path: Path, backbone: object, state_dict: object = None) -> Path:
    """A file in dinotrack's backbone export format with the given (hostile) record."""
    payload = {"format": "dinotrack.backbone", "version": 1, "backbone": backbone, "info": {}}
    payload["state_dict"] = {} if state_dict is None else state_dict
    torch.save(payload, path)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (symlinks not followed) -> its bytes."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            file = Path(folder, name)
            if file.is_file() and not file.is_symlink():
                found[str(file.relative_to(root))] = file.read_bytes()
    return found


def zeroed_payload(path: Path, count: int = 6) -> Path:
    """An mp4 whose index is intact (it opens and declares ``count`` frames) but whose frame
    data is all zeros, so that no frame decodes."""
    data = bytearray(video(path, count, index_first=True).read_bytes())
    start = data.find(b"mdat") + 4
    data[start:] = bytes(len(data) - start)
    path.write_bytes(data)
    return path


NUMBERED_CODECS = {
    "h264": ("libx264", {"crf": "10", "bf": "0", "x264-params": "keyint=9:scenecut=0"}),
    "h264-bframes": ("libx264", {"crf": "10", "bf": "3", "x264-params": "keyint=9:scenecut=0"}),
    "mpeg4-bframes": ("mpeg4", {"bf": "2", "g": "9", "qmax": "3"}),
    "vp9": ("libvpx-vp9", {"crf": "10", "b": "0", "g": "9"}),
    "mjpeg": ("mjpeg", {}),
}
"""Codecs PyAV writes here, with keyframes every 9 frames: name -> (encoder, options)."""


CONTAINERS = {"mp4", "mkv", "avi", "webm"}
WEBM_CODECS = {"vp9"}
"""webm holds only VP8/VP9/AV1 video."""


def numbered_frame(number: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A frame showing ``number`` (0..63) in binary: six stripes, white for a 1 bit."""
    frame = np.zeros((*size, 3), np.uint8)
    for bit in range(6):
        if number >> bit & 1:
            frame[:, bit * 10 + 2 : bit * 10 + 10] = 255
    return frame


def frame_number(frame: np.ndarray) -> int:
    """The number :func:`numbered_frame` drew into ``frame`` (robust to lossy coding)."""
    grey = frame.mean(axis=2)
    return sum(1 << bit for bit in range(6) if grey[8:40, bit * 10 + 3 : bit * 10 + 9].mean() > 128)


def numbered_video(path: Path, codec: str, count: int = 40) -> Path:
    """A ``count``-frame video of :func:`numbered_frame` in ``codec`` (a key of
    :data:`NUMBERED_CODECS`), in the container that ``path``'s suffix names."""
    encoder, options = NUMBERED_CODECS[codec]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=24, options=dict(options))
        stream.width, stream.height = SIZE[1], SIZE[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for number in range(count):
            image = av.VideoFrame.from_ndarray(numbered_frame(number), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
