"""The package as users install it: a wheel, in a fresh environment, away from the checkout.

The wheel is built from this checkout and installed (without its dependencies, which are taken
from the environment running the tests) into a new virtual environment in a temporary folder;
the README's offline quick start then runs there, from another working directory, so that
nothing can come from the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (found,) = out.glob("dinotrack-*.whl")
    return found


def test_the_wheel_holds_the_shipped_weights_and_every_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "dinotrack/weights/dinotrack_vitt16_v3.pth" in names
    assert "dinotrack/weights/dinotrack_vitt16_v3.md" in names
    for package in ("dinotrack/io", "dinotrack/models", "dinotrack/tracking", "eval", "pretrain"):
        assert f"{package}/__init__.py" in names, package
    assert not any(name.startswith(("tests/", "tools/")) for name in names)


@pytest.mark.slow
def test_the_offline_quick_start_runs_from_an_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True
    )
    # The dependencies (torch, timm...) come from the environment running the tests.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    work = tmp_path / "elsewhere"
    work.mkdir()
    frames = work / "clip"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        image[30:60, 40 + 4 * i : 80 + 4 * i] = (250, 40, 40)
        Image.fromarray(image).save(frames / f"{i:05d}.jpg")
    mask = np.zeros((96, 128), dtype=np.uint8)
    mask[30:60, 40:80] = 255
    Image.fromarray(mask).save(work / "first.png")

    where = subprocess.run(
        [python, "-c", "import dinotrack; print(dinotrack.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    done = subprocess.run(
        [python, "-m", "dinotrack", "segment", "clip", "--mask", "first.png"]
        + ["--model", "dinotrack_vitt16_v3", "--short-side", "96", "--out", "results"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = sorted(p.name for p in (work / "results").glob("*.png"))
    assert written == ["00000.png", "00001.png", "00002.png"]
    last = np.array(Image.open(work / "results" / "00002.png"))
    assert last[35:55, 55:75].all()  # the object is still there
