"""`dinotrack studio` in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright with real mouse and keyboard events, against the real server on a few frames of a
DAVIS dev clip with the random `test_vit_tiny` backbone.

The scenario of issue 21: a box and a brush stroke on frame 0 (two objects), propagate, scrub
to a later frame and correct it with the brush, propagate again, export PNG and COCO, and the
exported masks are byte-identical to `dinotrack segment` given the prompts the studio stored.
Screenshots go to `$DINOTRACK_ARTIFACTS` (default: the test's temporary folder).

Without Chromium, Playwright or the shared data the tests skip with the reason; under CI
(`CI=true`) they fail instead, so that CI never passes them silently.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_support import tiny_flags
from PIL import Image

from dinotrack.cli import main as dinotrack_main
from tools.data.location import data_path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLIP = ("davis2016-dev", "JPEGImages", "480p", "dog-agility")
ANNOTATIONS = ("davis2016-dev", "Annotations", "480p", "dog-agility")
N_FRAMES = 6
CORRECTED = 3  # the later frame corrected in the browser
MODEL_FLAGS = tiny_flags(64)

pytestmark = pytest.mark.slow  # a server and a browser start: ~45 s on 2 CPU cores


def _missing(reason: str) -> None:
    """Skip, or fail under CI, where these tests must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("DINOTRACK_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("studio-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A fresh headless Chromium (its own user-data folder) as a Playwright context."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 860},
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first frames of a DAVIS dev clip, as a frames folder."""
    source = data_path(*CLIP)
    if not source.is_dir():
        _missing(f"shared data {source} is absent (set DINOTRACK_DATA to the data folder)")
    folder = tmp_path_factory.mktemp("clip")
    for frame in sorted(source.glob("*.jpg"))[:N_FRAMES]:
        shutil.copy(frame, folder / frame.name)
    return folder


class Studio:
    """A `dinotrack studio --no-browser` process and the URL it printed."""

    def __init__(self, clip: Path, out: Path, log: Path, flags: list[str] = MODEL_FLAGS):
        self.out = out
        self.log = log
        command = [sys.executable, "-m", "dinotrack", "studio", str(clip), "--out", str(out)]
        command += ["--no-browser", "--port", "0", *flags]
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1]
        )
        self.url = self._wait_for_url()
        self.base, self.token = re.match(r"(http://[^/]+)/\?token=(\S+)", self.url).groups()

    def _wait_for_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", self.log.read_text())
            if found:
                return found.group(0)
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the studio did not print its URL:\n{self.log.read_text()}")

    def api(
        self, path: str, method: str = "GET", body: dict | None = None, raw: bytes | None = None
    ) -> bytes:
        """The body of an API answer (with the token); `body` is sent as JSON, `raw` as a PNG."""
        data = raw if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("X-Dinotrack-Token", self.token)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        elif raw is not None:
            request.add_header("Content-Type", "image/png")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def state(self) -> dict:
        return json.loads(self.api("/api/state"))

    def prompt_ids(self, frame: int) -> np.ndarray:
        return _png_ids(self.api(f"/api/prompts/{frame}"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def _png_ids(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def studio(clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("studio")
    server = Studio(clip, folder / "out", folder / "studio.log")
    yield server
    server.stop()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30):
    """Polls `condition` until it returns a true value, which it returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Page:
    """The studio page in the browser, driven with real mouse and keyboard events."""

    def __init__(self, page, studio: Studio):
        self.page = page
        self.studio = studio
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )

    def open(self) -> None:
        self.page.goto(self.studio.url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)

    def to_screen(self, x: float, y: float) -> tuple[float, float]:
        """Screen coordinates of frame pixel (x, y) in the frame view."""
        box = self.page.locator("#view-canvas").bounding_box()
        width, height = self.studio.video["width"], self.studio.video["height"]
        return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height

    def drag(self, points: list[tuple[float, float]], steps: int = 6) -> None:
        mouse = self.page.mouse
        mouse.move(*self.to_screen(*points[0]))
        mouse.down()
        for point in points[1:]:
            mouse.move(*self.to_screen(*point), steps=steps)
        mouse.up()

    def select_object(self, object_id: int) -> None:
        self.page.click(f"#objects li[data-id='{object_id}'] .swatch")

    def tool(self, name: str) -> None:
        self.page.click(f"[data-tool={name}]")

    def propagate(self, direction: str = "forward") -> None:
        self.page.click(f"[data-direction={direction}]")
        self.page.wait_for_function(
            "document.body.dataset.job && document.body.dataset.job !== 'running'",
            timeout=60_000,
        )
        assert self.page.get_attribute("body", "data-job") == "done", self.page.inner_text(
            "#progress-text"
        )

    def frame_label(self) -> str:
        return self.page.inner_text("#frame-label")


def _objects_in(ids: np.ndarray) -> set[int]:
    return set(np.unique(ids).tolist()) - {0}


def test_token_is_required(browser, studio):
    page = browser.new_page()
    response = page.goto(studio.base + "/")
    assert response.status == 403
    response = page.goto(studio.base + "/?token=wrong" + studio.token[:4])
    assert response.status == 403
    # An old link (the studio restarted) gets a page that says what to do, not raw JSON.
    assert "Open the URL it printed in its terminal" in page.inner_text("body")
    page.close()


def test_an_open_page_notices_that_the_server_stopped(browser, clip, tmp_path):
    """Stopping the server (Ctrl-C, a crash) under an idle page: the page says so within
    seconds, without waiting for the user's next edit."""
    server = Studio(clip, tmp_path / "out", tmp_path / "studio.log")
    try:
        ui = Page(browser.new_page(), server)
        ui.open()
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=30)
        ui.page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        assert "does not answer" in ui.page.inner_text("#error-text")
        assert ui.page.inner_text("#progress-text") == "the studio server stopped"
        ui.page.close()
    finally:
        server.stop()


def test_load_mask_png_and_undo(browser, studio):
    """Load mask PNG makes the file the current frame's prompt, read as `--mask` reads it (a
    0/255 DAVIS annotation is object 1), in place of a clicked mask; the next click refines
    it; undo goes back step by step."""
    annotation = data_path(*ANNOTATIONS, "00001.png")
    if not annotation.exists():
        _missing(f"shared data {annotation} is absent")
    studio.video = json.loads(studio.api("/api/video"))
    ui = Page(browser.new_page(), studio)
    ui.open()
    ui.page.locator("#frame-label").click()
    ui.page.keyboard.press("ArrowRight")

    def status_says(words: str) -> None:
        ui.page.wait_for_function(
            f"document.getElementById('status').textContent.includes('{words}')", timeout=30_000
        )
        ui.page.evaluate("document.getElementById('status').textContent = ''")

    ui.tool("click")  # a mask from a click first: the file replaces it, clicks and all
    ui.page.mouse.click(*ui.to_screen(400, 250))
    status_says("grown from the clicks")
    clicked = studio.prompt_ids(1)
    ui.page.set_input_files("#mask-file", annotation)
    status_says("loaded as its prompt")
    expected = (np.asarray(Image.open(annotation)) > 0).astype(np.uint8)
    np.testing.assert_array_equal(studio.prompt_ids(1), expected)
    ui.page.wait_for_selector(".thumb.has-prompt")  # the page has taken the edit in
    assert ui.page.locator(".thumb.has-prompt").count() == 1
    # The next click starts afresh (its mask replaces the file's): sent alone, not with the
    # click made before the file was loaded.
    ui.page.mouse.click(*ui.to_screen(300, 200))
    status_says("grown from the clicks")
    held = [c for c in studio.state()["clicks"] if (c["frame"], c["object"]) == (1, 1)]
    assert [c["points"] for c in held] == [[[300, 200, 1]]], held
    for before in (expected, clicked):  # undo goes back through the file to the click
        ui.page.keyboard.press("Control+z")
        status_says("edit undone")
        np.testing.assert_array_equal(studio.prompt_ids(1), before)
    ui.page.keyboard.press("Control+z")
    wait_until(lambda: studio.state()["prompts"] == [], "the undo")
    ui.page.keyboard.press("Control+z")  # nothing left: said so
    status_says("nothing to undo")
    studio.api("/api/objects/1", "DELETE")  # the file made object 1: leave the studio empty
    assert not ui.errors, ui.errors
    ui.page.close()


def test_play_runs_to_the_end_and_again_from_the_start(browser, studio):
    ui = Page(browser.new_page(), studio)
    ui.open()
    play = ui.page.locator("#play")
    width = play.bounding_box()["width"]
    ui.page.locator("#frame-label").click()  # the keys go to the page
    ui.page.keyboard.press("Home")
    # Clicked and read in one go (six frames play in a quarter of a second).
    shown = ui.page.evaluate(
        "() => { const b = document.getElementById('play'); b.click();"
        " return [b.textContent, b.getBoundingClientRect().width]; }"
    )
    assert shown == ["❚❚", width]  # the button keeps its width
    last = f"frame {N_FRAMES - 1} /"
    ui.page.wait_for_function("document.getElementById('play').textContent === '▶'")
    assert ui.frame_label().startswith(last)
    ui.page.keyboard.press(" ")  # at the end: from the first frame again
    ui.page.wait_for_function(
        f"!document.getElementById('frame-label').textContent.startsWith('frame {N_FRAMES - 1} /')"
    )
    ui.page.wait_for_function("document.getElementById('play').textContent === '▶'")
    assert ui.frame_label().startswith(last)
    assert not ui.errors, ui.errors
    ui.page.close()


def test_server_errors_reach_the_user(browser, studio, tmp_path):
    """An invalid mask loaded as a prompt is refused; the page shows the server's one line."""
    bad = tmp_path / "small.png"
    Image.new("L", (100, 50)).save(bad)
    ui = Page(browser.new_page(), studio)
    ui.open()
    ui.page.set_input_files("#mask-file", bad)
    ui.page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    message = ui.page.inner_text("#error-text")
    try:
        studio.api("/api/prompts/0", "PUT", raw=bad.read_bytes())
    except urllib.error.HTTPError as error:
        assert error.code == 400
        assert message == json.loads(error.read())["error"]
    else:
        raise AssertionError("the server took a 100x50 mask for 854x480 frames")
    assert studio.state()["prompts"] == []
    ui.page.close()


def test_a_resized_mask_is_loaded_with_a_warning(browser, studio, tmp_path):
    """A mask half the frames' size is taken, as `--mask` takes it, and the page says it was
    resized (it may be another video's mask)."""
    half = tmp_path / "half.png"
    image = Image.new("L", (427, 240))
    image.paste(255, (100, 60, 200, 160))
    image.save(half)
    ui = Page(browser.new_page(), studio)
    ui.open()
    ui.page.set_input_files("#mask-file", half)
    ui.page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    message = ui.page.inner_text("#error-text")
    assert message.startswith("warning: half.png: the mask is 427x240 but the frames are 854x480")
    assert "warning" in ui.page.get_attribute("#error", "class")  # not an error's colours
    assert studio.state()["prompts"] == [0] and studio.prompt_ids(0)[240, 300] == 1
    studio.api("/api/prompts/0", "DELETE")
    studio.api("/api/objects/1", "DELETE")  # leave the studio empty for the next test
    ui.page.close()


def test_undoing_a_click_keeps_the_box_and_the_clicks_before_it(browser, studio):
    """Box, click, negative click, undo, click: the last click adds to the box and the first
    click (the mask stays inside the box) instead of growing from itself alone."""
    studio.video = json.loads(studio.api("/api/video"))
    ui = Page(browser.new_page(), studio)
    ui.open()
    status = "#status"

    def grown(action: Callable[[], None], words: str = "grown from the clicks") -> None:
        ui.page.evaluate("document.getElementById('status').textContent = ''")
        action()
        ui.page.wait_for_function(
            f"document.querySelector('{status}').textContent.includes('{words}')",
            timeout=30_000,
        )

    box = (300, 150, 500, 350)
    ui.tool("box")
    grown(lambda: ui.drag([box[:2], box[2:]]))
    ui.tool("click")
    grown(lambda: ui.page.mouse.click(*ui.to_screen(400, 250)))
    grown(lambda: ui.page.mouse.click(*ui.to_screen(330, 330), button="right"))
    grown(lambda: ui.page.keyboard.press("Control+z"), "edit undone")
    grown(lambda: ui.page.mouse.click(*ui.to_screen(450, 200)))
    ids = studio.prompt_ids(0)
    inside = np.zeros(ids.shape, bool)
    inside[box[1] : box[3], box[0] : box[2]] = True
    assert (ids == 1).any() and not (ids[~inside] == 1).any()
    # After a reload the page takes the box and clicks from the server: a click and its undo
    # still leave them, so that the next click adds to them.
    ui.page.reload()
    ui.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    ui.tool("click")
    grown(lambda: ui.page.mouse.click(*ui.to_screen(350, 200)))
    grown(lambda: ui.page.keyboard.press("Control+z"), "edit undone")
    grown(lambda: ui.page.mouse.click(*ui.to_screen(420, 300)))
    held = [c for c in studio.state()["clicks"] if (c["frame"], c["object"]) == (0, 1)]
    assert held[0]["box"] == list(box), held
    assert held[0]["points"] == [[400, 250, 1], [450, 200, 1], [420, 300, 1]], held
    ids = studio.prompt_ids(0)
    assert (ids == 1).any() and not (ids[~inside] == 1).any()
    assert not ui.errors, ui.errors
    studio.api("/api/prompts/0", "DELETE")
    studio.api("/api/objects/1", "DELETE")  # leave the studio empty for the next test
    ui.page.close()


def test_export_formats_are_kept_with_the_project(browser, studio):
    ui = Page(browser.new_page(), studio)
    ui.open()
    mot = "[name=format][value=mot]"
    assert not ui.page.is_checked(mot)
    ui.page.check(mot)
    wait_until(
        lambda: "mot" in studio.state()["settings"].get("export_formats", []), "the saved formats"
    )
    ui.page.reload()
    ui.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert ui.page.is_checked(mot) and ui.page.is_checked("[name=format][value=png]")
    studio.api("/api/settings", "PUT", {"export_formats": None})  # back to the defaults
    assert not ui.errors, ui.errors
    ui.page.close()


def _filtered_png(ids: np.ndarray, palette: np.ndarray) -> bytes:
    """A palette PNG of `ids` whose rows use the five PNG filter types in turn (PIL writes
    only some of them, the page must read all)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def paeth(a: int, b: int, c: int) -> int:
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        return a if pa <= pb and pa <= pc else b if pb <= pc else c

    height, width = ids.shape
    rows = b""
    for y in range(height):
        kind = y % 5
        row, above = ids[y].astype(int), ids[y - 1].astype(int) if y else np.zeros(width, int)
        out = []
        for x in range(width):
            left = row[x - 1] if x else 0
            up_left = above[x - 1] if x else 0
            predictor = [0, left, above[x], (left + above[x]) // 2, paeth(left, above[x], up_left)]
            out.append((row[x] - predictor[kind]) % 256)
        rows += bytes([kind, *out])
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", palette.tobytes())
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_page_reads_and_writes_label_pngs_exactly(browser, studio):
    """The page's PNG codec: it reads every filter type, and the palette PNG it writes holds the
    same ids with the DAVIS palette (what the server reads as `--mask` reads it)."""
    import base64
    import io

    from dinotrack.io.masks import davis_palette

    rng = np.random.default_rng(0)
    ids = np.zeros((23, 41), np.uint8)
    ids[3:15, 5:30] = 1
    ids[10:20, 20:40] = 7
    ids[18:, :12] = rng.integers(0, 256, (5, 12))  # every filter sees large differences
    page = browser.new_page()
    page.goto(studio.url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    result = page.evaluate(
        """async (data) => {
          const png = await import("/static/png.js");
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const labels = await png.decodeLabelPng(bytes);
          const blob = await png.encodeLabelPng(labels.ids, labels.width, labels.height);
          const written = new Uint8Array(await blob.arrayBuffer());
          return {
            width: labels.width, height: labels.height, ids: Array.from(labels.ids),
            written: btoa(String.fromCharCode(...written)),
          };
        }""",
        base64.b64encode(_filtered_png(ids, davis_palette())).decode(),
    )
    page.close()
    decoded = np.array(result["ids"], np.uint8).reshape(result["height"], result["width"])
    np.testing.assert_array_equal(decoded, ids)
    written = Image.open(io.BytesIO(base64.b64decode(result["written"])))
    assert written.mode == "P"
    np.testing.assert_array_equal(np.asarray(written), ids)
    palette = np.array(written.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, davis_palette())
    Image.open(io.BytesIO(base64.b64decode(result["written"]))).verify()  # chunk CRCs


def test_track_correct_export_and_reload(browser, studio, clip, artifacts, tmp_path):
    studio.video = json.loads(studio.api("/api/video"))
    width, height = studio.video["width"], studio.video["height"]
    ui = Page(browser.new_page(), studio)
    ui.open()

    # 1. Two objects on frame 0: a box for the first, a brush stroke for the second.
    ui.page.click("#add-object")
    ui.page.click("#add-object")
    ui.select_object(1)
    ui.tool("box")
    ui.drag([(0.38 * width, 0.42 * height), (0.93 * width, 0.88 * height)])  # the dog
    wait_until(lambda: 0 in studio.state()["prompts"], "the box's prompt on frame 0")
    ui.select_object(2)
    ui.tool("brush")
    for _ in range(9):  # "]" widens the brush: 24 -> 60 px, an object of a few patches
        ui.page.keyboard.press("]")
    assert ui.page.inner_text("#brush-size-value") == "60 px"
    ui.drag([(0.70 * width, 0.20 * height), (0.85 * width, 0.25 * height)])
    wait_until(lambda: _objects_in(studio.prompt_ids(0)) == {1, 2}, "both objects on frame 0")
    prompt0 = studio.prompt_ids(0)
    assert prompt0.shape == (height, width)
    stroke_pixel = (int(0.78 * width), int(0.22 * height))
    assert prompt0[stroke_pixel[1], stroke_pixel[0]] == 2
    page_name = ui.page.locator("#objects li[data-id='1'] .object-name")
    page_name.fill("dog")
    page_name.press("Enter")
    # Enter ends the renaming: the keys are the page's shortcuts again.
    assert not ui.page.evaluate("document.activeElement.classList.contains('object-name')")
    wait_until(lambda: studio.state()["objects"][0]["name"] == "dog", "the rename")

    # 2. Propagate forward; every frame gets a mask, and the view follows the computed frames
    # (server-sent events) to the last one.
    ui.propagate("forward")
    assert sorted(studio.state()["results"]) == list(range(N_FRAMES))
    ui.page.wait_for_function(  # the last frame's event may come just after the job's end
        f"document.getElementById('frame-label').textContent.startsWith('frame {N_FRAMES - 1} /')",
        timeout=10_000,
    )
    ui.page.screenshot(path=artifacts / "studio-tracked.png")

    # 3. Scrub to a later frame with the keyboard, and correct object 1 there with the brush.
    ui.page.locator("#frame-label").click()  # the keys go to the page, not to a button
    ui.page.keyboard.press("Home")
    for _ in range(CORRECTED):
        ui.page.keyboard.press("ArrowRight")
    assert ui.frame_label().startswith(f"frame {CORRECTED} /")
    assert ui.page.input_value("#frame-slider") == str(CORRECTED)
    before = [studio.api(f"/api/masks/{i}") for i in range(N_FRAMES)]
    tracked = _png_ids(before[CORRECTED])
    ui.select_object(1)
    ui.page.mouse.move(*ui.to_screen(0.15 * width, 0.65 * height))
    ui.page.mouse.wheel(0, -400)  # zoom in around the place to correct
    ui.page.wait_for_function("document.getElementById('view-canvas').style.transform !== ''")
    ui.drag([(0.10 * width, 0.60 * height), (0.20 * width, 0.70 * height)])
    wait_until(lambda: CORRECTED in studio.state()["prompts"], "the correction's prompt")
    corrected = studio.prompt_ids(CORRECTED)
    changed = corrected != tracked
    assert changed.any(), "the brush stroke changed nothing"
    assert (corrected[changed] == 1).all(), "the brush painted only object 1"
    rows, columns = np.nonzero(changed)  # where the stroke went in the frame, through the zoom
    assert abs(columns.mean() - 0.15 * width) < 10 and abs(rows.mean() - 0.65 * height) < 10
    ui.page.keyboard.press("0")
    # The correction starts from the tracked mask: object 2 there is the tracked object 2.
    np.testing.assert_array_equal(corrected == 2, tracked == 2)
    ui.page.wait_for_selector("#stale-note", state="visible")  # "propagate again"
    # Undone, the prompts are those the masks were computed from again: the note goes; redone,
    # it comes back.
    ui.page.keyboard.press("Control+z")
    wait_until(lambda: CORRECTED not in studio.state()["prompts"], "the undo of the correction")
    ui.page.wait_for_selector("#stale-note", state="hidden")
    ui.drag([(0.10 * width, 0.60 * height), (0.20 * width, 0.70 * height)])
    wait_until(lambda: CORRECTED in studio.state()["prompts"], "the correction again")
    np.testing.assert_array_equal(studio.prompt_ids(CORRECTED), corrected)
    ui.page.wait_for_selector("#stale-note", state="visible")
    ui.page.screenshot(path=artifacts / "studio-corrected.png")

    # 4. Propagate again: the frames before the correction keep their masks, the corrected
    # frame's result is its prompt (it holds both objects); then export PNG and COCO (checked
    # by default).
    ui.propagate("forward")
    assert not ui.page.is_visible("#stale-note")
    after = [studio.api(f"/api/masks/{i}") for i in range(N_FRAMES)]
    assert after[:CORRECTED] == before[:CORRECTED]
    np.testing.assert_array_equal(_png_ids(after[CORRECTED]), corrected)
    assert after[CORRECTED + 1 :] != before[CORRECTED + 1 :]
    ui.page.click("#export")
    ui.page.wait_for_selector("#written li", timeout=30_000)
    written = ui.page.inner_text("#written")
    assert "coco.json" in written and "00000.png" in written
    ui.page.locator("#export-panel").screenshot(path=artifacts / "studio-export-panel.png")
    folder = re.search(r"(\S*)00000\.png", written).group(1)  # where the masks went in --out
    out = studio.out / folder
    exported = sorted(p.name for p in out.glob("*.png"))
    assert exported == [f"{i:05d}.png" for i in range(N_FRAMES)]
    coco = json.loads((out / "coco.json").read_text())
    assert {a["id"] for a in coco["annotations"]} == {1, 2}

    # 5. The same prompts through `dinotrack segment` (its CLI entry point, in this process)
    # give byte-identical masks.
    prompt_args = []
    for frame in sorted(studio.state()["prompts"]):
        path = tmp_path / f"prompt{frame}.png"
        path.write_bytes(studio.api(f"/api/prompts/{frame}"))
        prompt_args += ["--prompt", f"{frame}:{path}"]
    assert len(prompt_args) == 4  # frames 0 and CORRECTED
    reference = tmp_path / "segment"
    arguments = ["segment", str(clip), *prompt_args, "--out", str(reference), *MODEL_FLAGS]
    assert dinotrack_main([*arguments, "--save", "png,coco"]) == 0
    for name in [*exported, "coco.json"]:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name

    # Reload: the objects, their names and visibility, the prompts, the results and the
    # overlay's opacity come back.
    ui.page.click("#objects li[data-id='2'] .object-hide")
    wait_until(lambda: studio.state()["objects"][1]["hidden"], "object 2 hidden")
    slider = ui.page.locator("#opacity").bounding_box()
    ui.page.mouse.click(slider["x"] + 0.2 * slider["width"], slider["y"] + slider["height"] / 2)
    opacity = int(ui.page.input_value("#opacity"))
    assert 10 <= opacity <= 30
    wait_until(lambda: studio.state()["settings"].get("opacity") == opacity / 100, "the opacity")
    ui.page.reload()
    ui.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    names = ui.page.locator("#objects .object-name")
    assert [names.nth(i).input_value() for i in range(names.count())] == ["dog", "object 2"]
    assert ui.page.locator(".thumb.has-prompt").count() == 2
    assert ui.page.locator(".thumb.has-result").count() == N_FRAMES
    assert ui.page.inner_text("#objects li[data-id='2'] .object-hide") == "show"
    assert ui.page.input_value("#opacity") == str(opacity)

    # Delete asks for a second click, then removes the object from every prompt.
    delete = ui.page.locator("#objects li[data-id='2'] .object-delete")
    delete.click()
    assert delete.inner_text() == "sure?"
    assert [o["id"] for o in studio.state()["objects"]] == [1, 2]
    delete.click()
    wait_until(lambda: [o["id"] for o in studio.state()["objects"]] == [1], "the deletion")
    assert 2 not in _objects_in(studio.prompt_ids(0))
    ui.page.wait_for_selector("#objects li[data-id='2']", state="detached")
    assert not ui.errors, ui.errors
    ui.page.close()


def test_the_masks_come_back_after_a_restart(browser, clip, artifacts, tmp_path):
    """Propagate, stop the studio (Ctrl-C), start it again on the same --out: the page shows
    every computed frame's mask, up to date, without propagating again."""
    out, log = tmp_path / "out", tmp_path / "studio.log"
    server = Studio(clip, out, log)
    try:
        video = json.loads(server.api("/api/video"))
        first = np.zeros((video["height"], video["width"]), np.uint8)
        first[
            video["height"] // 4 : video["height"] // 2, video["width"] // 4 : video["width"] // 2
        ] = 255
        encoded = io.BytesIO()
        Image.fromarray(first).save(encoded, format="PNG")
        server.api("/api/prompts/0", "PUT", raw=encoded.getvalue())
        server.api("/api/propagate", "POST", body={"direction": "forward"})
        wait_until(lambda: server.state()["job"]["state"] == "done", "the propagation")
        masks = [server.api(f"/api/masks/{i}") for i in range(N_FRAMES)]
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=30)
    finally:
        server.stop()
    again = Studio(clip, out, tmp_path / "again.log")
    try:
        assert f"{N_FRAMES} computed frame(s)" in (tmp_path / "again.log").read_text()
        ui = Page(browser.new_page(), again)
        ui.open()
        assert ui.page.locator(".thumb.has-result").count() == N_FRAMES
        assert not ui.page.is_visible("#stale-note")
        assert (
            ui.page.inner_text("#progress-text")
            == f"idle: {N_FRAMES} frames kept from the last session"
        )
        assert [again.api(f"/api/masks/{i}") for i in range(N_FRAMES)] == masks
        ui.page.locator("#frame-label").click()
        ui.page.keyboard.press("End")
        assert ui.frame_label().startswith(f"frame {N_FRAMES - 1} /")
        ui.page.wait_for_timeout(1000)  # the frame's mask is fetched after the key
        ui.page.screenshot(path=artifacts / "studio-restored.png")
        # Kept masks that the prompts no longer give are said to be stale.
        again.api("/api/prompts/2", "PUT", raw=encoded.getvalue())
        ui.page.reload()
        ui.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert ui.page.is_visible("#stale-note")
        assert not ui.errors, ui.errors
        ui.page.close()
        again.process.send_signal(signal.SIGINT)
        again.process.wait(timeout=30)
    finally:
        again.stop()
    # Opened with other settings, the kept masks are not shown, and the page says why.
    other = Studio(clip, out, tmp_path / "other.log", flags=tiny_flags(48))
    try:
        ui = Page(browser.new_page(), other)
        ui.open()
        assert ui.page.locator(".thumb.has-result").count() == 0
        ui.page.wait_for_selector("#error.warning:not([hidden])")
        assert "another model or settings" in ui.page.inner_text("#error-text")
        ui.page.close()
    finally:
        other.stop()
