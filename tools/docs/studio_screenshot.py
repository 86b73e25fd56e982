"""Take docs/studio.png, the screenshot of ``dinotrack studio`` in the README and docs/studio.md.

The scene: the DAVIS 2016 dev clip ``flamingo`` (its first frames, 0 to --frames), object 1
the flamingo loaded from its first-frame annotation with the page's *Load mask PNG*, object 2
the rocks drawn with the polygon tool on frame 0, both propagated forward with the shipped
offline backbone at its own preset, and the view on the last tracked frame with the masks.

It starts the real server (``python -m dinotrack studio --no-browser``, on the CPU) and drives
the page in headless Chromium (Debian's ``/usr/bin/chromium``) with Playwright, as a user
would: only the command line and the page are used. Run from the repository root:

    python -m tools.docs.studio_screenshot --out docs/studio.png

(about 20 s on 2 CPU cores; the shared data is found as the tests find it: $DINOTRACK_DATA,
else ../shared/data.)
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from tools.data.location import REPO, data_path

CLIP = ("davis2016-dev", "JPEGImages", "480p", "flamingo")
ANNOTATION = ("davis2016-dev", "Annotations", "480p", "flamingo", "00000.png")
# The rocks on frame 0 (in its 854x480 pixels): two polygons, on either side of the big
# flamingo's leg, a few pixels off its annotation (a polygon paints over other objects).
ROCKS = [
    [(95, 155), (180, 135), (290, 140), (335, 158), (372, 165), (384, 178), (370, 188),
     (357, 197), (345, 210), (336, 222), (345, 233), (418, 234), (400, 250), (386, 262),
     (372, 274), (370, 284), (378, 293), (383, 300), (330, 302), (270, 295), (200, 262),
     (105, 270), (95, 235), (130, 215), (90, 190)],
    [(440, 231), (466, 236), (460, 256), (430, 268), (408, 271), (428, 246)],
]  # fmt: skip
VIEWPORT = {"width": 1400, "height": 860}


def start_studio(frames: Path, out: Path, model: str, log: Path) -> tuple[subprocess.Popen, str]:
    """The `dinotrack studio` process and the URL (with its token) that it printed."""
    command = [sys.executable, "-m", "dinotrack", "studio", str(frames), "--out", str(out)]
    command += ["--model", model, "--device", "cpu", "--no-browser"]
    with log.open("w") as output:  # the child keeps its own copy of the file
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", log.read_text())
        if found:
            return process, found.group(0)
        time.sleep(0.2)
    stop(process)
    raise SystemExit(f"the studio did not print its URL:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def drive(url: str, annotation: Path, last: int) -> bytes:
    """The user's steps in the page; the screenshot, as PNG bytes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        status = "document.getElementById('status').textContent.includes(%r)"

        # Object 1: the flamingo, from its annotation (a 0/255 mask is object 1).
        page.set_input_files("#mask-file", annotation)
        page.wait_for_function(status % "loaded as its prompt", timeout=30_000)
        page.wait_for_selector("#objects li[data-id='1']")

        # Object 2: the rocks, polygons clicked on the frame view, each closed with Enter.
        page.click("#add-object")
        page.click("#objects li[data-id='2'] .swatch")
        page.click("[data-tool=polygon]")
        width, height = page.eval_on_selector("#view-canvas", "c => [c.width, c.height]")
        box = page.locator("#view-canvas").bounding_box()
        for polygon in ROCKS:
            for x, y in polygon:
                page.mouse.click(
                    box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height
                )
            page.evaluate("document.getElementById('status').textContent = ''")  # see it anew
            page.keyboard.press("Enter")
            page.wait_for_function(status % "frame 0: prompt saved", timeout=30_000)
        for object_id, name in [(1, "flamingo"), (2, "rocks")]:
            page.fill(f"#objects li[data-id='{object_id}'] .object-name", name)
            page.press(f"#objects li[data-id='{object_id}'] .object-name", "Enter")

        # Propagate forward; the view follows the computed frames to the last one.
        page.click("[data-direction=forward]")
        page.wait_for_function(
            "document.body.dataset.job && document.body.dataset.job !== 'running'",
            timeout=600_000,
        )
        if page.get_attribute("body", "data-job") != "done":
            raise SystemExit(f"propagation: {page.inner_text('#progress-text')}")
        page.wait_for_function(
            f"document.getElementById('frame-label').textContent.startsWith('frame {last} /')",
            timeout=30_000,
        )
        if page.is_visible("#error"):
            raise SystemExit(f"the page shows an error: {page.inner_text('#error-text')}")
        page.wait_for_timeout(1500)  # the frame and its masks drawn
        shot = page.screenshot()
        browser.close()
    return shot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument(
        "--frames", type=int, default=10, help="track frame 0 to this frame (default 10)"
    )
    parser.add_argument("--model", default="dinotrack_vitt16_v3", help="backbone name")
    args = parser.parse_args(argv)

    annotation = data_path(*ANNOTATION)
    frames = sorted(data_path(*CLIP).glob("*.jpg"))[: args.frames + 1]
    if not annotation.exists() or len(frames) <= args.frames:
        raise SystemExit(f"the DAVIS clip {data_path(*CLIP)} is absent or too short")
    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="studio-screenshot-") as work:
        clip = Path(work) / "flamingo"
        clip.mkdir()
        for frame in frames:
            shutil.copy(frame, clip / frame.name)
        process, url = start_studio(clip, Path(work) / "out", args.model, Path(work) / "log")
        try:
            shot = drive(url, annotation, args.frames)
        finally:
            stop(process)
    # 256 colours: a third of the size of the full-colour PNG, hardly different to the eye.
    image = Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, Image.Quantize.FASTOCTREE)
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(handle)
    try:
        image.save(temporary, optimize=True)
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
