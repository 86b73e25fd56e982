"""The studio's HTTP API (dinotrack.studio.server) over a real engine: the token, no paths from
the client, body limits, the error statuses, jobs and events, export and restore; and the
`dinotrack studio` process itself (Ctrl-C leaves a coherent project that reopens)."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli, tiny_flags
from PIL import Image
from synthetic_clips import moving_square_folder

from dinotrack import InteractiveSession
from dinotrack.errors import ProjectInUseError
from dinotrack.io.masks import mask_to_image, write_mask
from dinotrack.pipeline.project import ProjectLock

pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (pip install -e .[dev])")
from starlette.testclient import TestClient  # noqa: E402

from dinotrack.studio.server import MAX_MASK_BYTES, create_app, loopback  # noqa: E402

TOKEN = "secret-token"
AUTH = {"X-Dinotrack-Token": TOKEN}
SHORT_SIDE = 64


@pytest.fixture
def clip(tmp_path):
    folder = tmp_path / "clip"
    return folder, moving_square_folder(folder, n=10)


@pytest.fixture
def studio(tiny_tracker, clip, tmp_path):
    folder, masks = clip
    session = InteractiveSession(tiny_tracker(short_side=SHORT_SIDE), folder, out=tmp_path / "out")
    with TestClient(create_app(session, TOKEN)) as client:
        yield client, session, masks


def png(ids) -> bytes:
    buffer = io.BytesIO()
    mask_to_image(np.asarray(ids, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for_job(client, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        progress = client.get("/api/progress", headers=AUTH).json()
        if progress["state"] != "running":
            return progress
        time.sleep(0.1)
    raise AssertionError("the job did not end")


def test_every_request_needs_the_token(studio):
    client, _, _ = studio
    for path in ("/", "/static/index.html", "/api/video", "/api/frames/0", "/api/state"):
        assert client.get(path).status_code == 403
        assert client.get(path, headers={"X-Dinotrack-Token": "wrong"}).status_code == 403
        assert client.get(f"{path}?token=wrong").status_code == 403
        assert client.get(f"{path}?token={TOKEN}").status_code == 200
    reply = client.post("/api/propagate", json={"direction": "forward"})
    assert reply.status_code == 403 and "token" in reply.json()["error"]
    assert client.get("/api/video", headers=AUTH).json() == {
        "frames": 10,
        "width": 120,
        "height": 72,
        "fps": 24.0,
        "names": [f"{i:05d}.png" for i in range(10)],
    }


def test_no_path_from_the_client_reaches_the_disk(studio, tmp_path):
    client, session, masks = studio
    client.put("/api/prompts/0", content=png(masks[0]), headers=AUTH)
    assert (tmp_path / "out" / "studio.json").is_file()
    for path in (
        "/static/../studio.json",
        "/static/%2e%2e/%2e%2e/out/studio.json",
        "/static/..%2f..%2fout%2fstudio.json",
        "/static//etc/passwd",
        "/api/frames/-1",
        "/api/frames/10",
        "/api/frames/..%2f00001.png",
        "/api/masks/99",
    ):
        reply = client.get(path, headers=AUTH)
        assert reply.status_code == 404, path
        assert b"dinotrack.studio" not in reply.content and b"root:" not in reply.content
    assert client.get("/static/", headers=AUTH).status_code == 404  # no listing


def test_bodies_are_size_limited(studio):
    client, _, _ = studio
    reply = client.put("/api/prompts/0", content=b"\0" * (MAX_MASK_BYTES + 1), headers=AUTH)
    assert reply.status_code == 413 and "limit" in reply.json()["error"]
    big = {"name": "x" * (2 * 1024 * 1024)}
    assert client.post("/api/objects", json=big, headers=AUTH).status_code == 413


def test_bad_input_gets_400_with_the_cli_line(studio, tmp_path, capsys):
    client, session, _ = studio
    jpeg = io.BytesIO()
    Image.fromarray(np.full((72, 120), 255, np.uint8)).save(jpeg, format="JPEG")
    reply = client.put("/api/prompts/2", content=jpeg.getvalue(), headers=AUTH)
    assert reply.status_code == 400
    message = reply.json()["error"]
    assert message == (
        "mask 00002.png is a JPEG; lossy compression adds colours at object borders that "
        "would become spurious objects. Save the mask as a PNG"
    )
    # The CLI's line for the same file, but for its path.
    (tmp_path / "00002.png").write_bytes(jpeg.getvalue())
    code, _, err = run_cli(
        [
            "segment",
            session.video,
            "--prompt",
            f"2:{tmp_path / '00002.png'}",
            "--out",
            tmp_path / "o",
        ],
        capsys,
    )
    assert code == 2 and message.replace("00002.png", str(tmp_path / "00002.png")) in err
    empty = client.put("/api/prompts/2", content=png(np.zeros((72, 120))), headers=AUTH)
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    wrong_size = client.put("/api/prompts/2", content=png(np.ones((40, 40))), headers=AUTH)
    assert wrong_size.status_code == 400 and "aspect ratio" in wrong_size.json()["error"]
    assert client.post("/api/propagate", content=b"{", headers=AUTH).status_code == 400
    reply = client.post("/api/propagate", json={"direction": "sideways"}, headers=AUTH)
    assert reply.status_code == 400 and "direction" in reply.json()["error"]
    reply = client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    assert reply.status_code == 400 and "no prompt" in reply.json()["error"]
    reply = client.post("/api/clicks/0", json={"object": 1, "points": [[500, 5, 1]]}, headers=AUTH)
    assert reply.status_code == 400 and "outside the frame" in reply.json()["error"]
    reply = client.post("/api/export", json={"formats": ["gif"]}, headers=AUTH)
    assert reply.status_code == 400 and "unknown export format" in reply.json()["error"]


def test_a_resized_mask_is_taken_with_the_warning_the_cli_prints(studio):
    client, session, masks = studio
    half = np.asarray(Image.fromarray(masks[3]).resize((60, 36), Image.Resampling.NEAREST))
    reply = client.put("/api/prompts/3", content=png(half), headers=AUTH)
    assert reply.status_code == 200
    assert reply.json()["warnings"] == [
        "the mask is 60x36 but the frames are 120x72; resizing the mask (nearest neighbour)"
    ]
    assert session.prompt(3).shape == (72, 120)
    reply = client.put("/api/prompts/3", content=png(masks[3]), headers=AUTH)
    assert reply.json()["warnings"] == []


def test_missing_things_are_404(studio):
    client, _, _ = studio
    assert client.get("/api/prompts/3", headers=AUTH).status_code == 404
    assert client.delete("/api/prompts/3", headers=AUTH).status_code == 404
    assert client.get("/api/masks/3", headers=AUTH).status_code == 404
    assert client.patch("/api/objects/5", json={"name": "x"}, headers=AUTH).status_code == 404
    assert client.delete("/api/objects/5", headers=AUTH).status_code == 404
    assert client.get("/api/nothing", headers=AUTH).status_code == 404


def test_track_correct_and_export_as_segment_does(studio, tmp_path, capsys):
    client, session, masks = studio
    reply = client.post("/api/objects", json={"name": "left"}, headers=AUTH)
    assert reply.status_code == 201 and reply.json() == {
        "id": 1,
        "name": "left",
        "color": "#800000",
        "hidden": False,
    }
    reply = client.put("/api/prompts/0", content=png(masks[0]), headers=AUTH)
    assert [o["id"] for o in reply.json()["objects"]] == [1, 3, 7]
    assert client.get("/api/prompts/0", headers=AUTH).content == png(masks[0])
    reply = client.post("/api/clicks/0", json={"object": 1, "points": [[5, 70, 1]]}, headers=AUTH)
    assert reply.status_code == 200
    prompt0 = np.asarray(Image.open(io.BytesIO(client.get("/api/prompts/0", headers=AUTH).content)))
    assert prompt0[70, 5] == 1 and (prompt0 == 3).sum() > 0
    client.delete("/api/objects/1", headers=AUTH)  # its pixels leave the prompt
    reply = client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    assert reply.status_code == 202 and reply.json()["job"]["total"] == 10
    second = client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    assert second.status_code in (202, 409)  # 409 while the first runs
    if second.status_code == 409:
        assert "running" in second.json()["error"]
    assert wait_for_job(client)["state"] == "done"
    state = client.get("/api/state", headers=AUTH).json()
    assert state["results"] == list(range(10)) and state["prompts"] == [0]
    assert state["settings"]["model"] == "test_vit_tiny" and state["up_to_date"]

    client.put("/api/prompts/6", content=png(np.where(masks[6] == 7, 7, 0)), headers=AUTH)
    assert not client.get("/api/state", headers=AUTH).json()["up_to_date"]
    assert client.post("/api/export", json={"formats": ["png"]}, headers=AUTH).status_code == 409
    client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    done = wait_for_job(client)
    assert done["state"] == "done" and done["done"] == 10
    assert session.stats.reused == 4  # frames 0..5 hold, the pass resumes at frame 4 (batch 4)
    assert (done["computed"], done["reused"]) == (6, 4)

    reply = client.post("/api/export", json={"formats": ["png", "coco"]}, headers=AUTH)
    assert reply.status_code == 200
    written = reply.json()["written"]
    assert "results/00009.png" in written and "results/coco.json" in written
    for frame in (0, 6):
        write_mask(tmp_path / f"p{frame}.png", session.prompt(frame))
    folder = session.video
    prompts = ["--prompt", f"0:{tmp_path / 'p0.png'}", "--prompt", f"6:{tmp_path / 'p6.png'}"]
    flags = tiny_flags(SHORT_SIDE) + ["--save", "png,coco"]
    code, _, err = run_cli(["segment", folder, *prompts, "--out", tmp_path / "seg", *flags], capsys)
    assert code == 0, err
    for name in [f"{i:05d}.png" for i in range(10)] + ["coco.json"]:
        ours = (tmp_path / "out" / "results" / name).read_bytes()
        assert ours == (tmp_path / "seg" / name).read_bytes(), name
        if name.endswith(".png"):
            index = int(name[:5])
            assert client.get(f"/api/masks/{index}", headers=AUTH).content == png(
                session.mask(index)
            )


def test_events_stream_and_a_client_that_leaves(studio):
    client, _, masks = studio
    client.put("/api/prompts/0", content=png(masks[0]), headers=AUTH)
    client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    seen = []
    with client.stream("GET", f"/api/events?token={TOKEN}") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        for line in events.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if "frame" in seen[-1]:
                    break  # the client goes away mid-propagation
    assert seen[0]["state"] in ("running", "done")
    assert wait_for_job(client)["state"] == "done"  # the job went on without it
    assert client.get("/api/state", headers=AUTH).json()["results"] == list(range(10))


def test_cancel_stops_the_job_and_the_next_one_resumes(studio):
    client, session, masks = studio
    client.put("/api/prompts/0", content=png(masks[0]), headers=AUTH)
    client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    client.post("/api/cancel", headers=AUTH)
    progress = wait_for_job(client)
    assert progress["state"] in ("cancelled", "done")
    if progress["state"] == "cancelled":
        assert progress["done"] < 10
    client.post("/api/propagate", json={"direction": "forward"}, headers=AUTH)
    assert wait_for_job(client)["state"] == "done"
    assert session.stats.computed + session.stats.reused == 10


def test_settings_and_restore_after_a_restart(tiny_tracker, studio, clip, tmp_path):
    client, _, masks = studio
    client.put("/api/prompts/4", content=png(masks[4]), headers=AUTH)
    client.patch("/api/objects/7", json={"name": "bus", "hidden": True}, headers=AUTH)
    reply = client.put("/api/settings", json={"opacity": 0.3}, headers=AUTH)
    assert reply.json() == {"opacity": 0.3}
    session = InteractiveSession(tiny_tracker(short_side=SHORT_SIDE), clip[0], out=tmp_path / "out")
    with TestClient(create_app(session, "another")) as again:
        state = again.get("/api/state", headers={"X-Dinotrack-Token": "another"}).json()
    assert state["prompts"] == [4] and state["settings"]["opacity"] == 0.3
    assert {"id": 7, "name": "bus", "color": "#808080", "hidden": True} in state["objects"]


def test_a_project_is_open_in_one_studio_at_a_time(tmp_path):
    out = tmp_path / "project"
    with ProjectLock(out):
        assert (out / ".studio" / "lock").read_text() == str(os.getpid())
        with pytest.raises(
            ProjectInUseError, match=rf"open in another .*\(process {os.getpid()}\)"
        ):
            ProjectLock(out).acquire()
    assert not out.exists()  # nothing was saved: the folders made for the lock are gone
    (out / ".studio" / "prompts").mkdir(parents=True)
    with ProjectLock(out):  # free again once released
        pass
    assert (out / ".studio" / "prompts").is_dir()  # what was there stays


def test_a_folder_that_cannot_be_locked_is_used_with_a_warning(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")  # POSIX; an NFS mount without lockd, say

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*No locks available.*not be noticed"):
        with ProjectLock(tmp_path / "project"):
            assert (tmp_path / "project" / ".studio" / "lock").exists()


def test_a_second_studio_on_the_same_out_is_refused(clip, tmp_path, capsys):
    folder, _ = clip
    out = tmp_path / "project"
    with ProjectLock(out):  # as a running `dinotrack studio` holds it
        code, _, err = run_cli(
            ["studio", folder, "--out", out, "--no-browser", *tiny_flags(SHORT_SIDE)], capsys
        )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "is open in another dinotrack studio" in err
    assert not out.exists()


def test_clicks_and_box_are_kept_across_a_restart(tiny_tracker, studio, clip, tmp_path):
    """A click after a restart (or a page reload) adds to the box and clicks the mask was
    grown from, as before the restart, instead of growing a mask from itself alone."""
    client, session, _ = studio
    box = [20, 10, 60, 50]
    body = {"object": 2, "points": [[40, 30, 1]], "box": box, "clear": True}
    assert client.post("/api/clicks/0", json=body, headers=AUTH).status_code == 200
    held = [{"frame": 0, "object": 2, "points": [[40.0, 30.0, 1]], "box": [20.0, 10.0, 60.0, 50.0]}]
    assert client.get("/api/state", headers=AUTH).json()["clicks"] == held
    again = InteractiveSession(tiny_tracker(short_side=SHORT_SIDE), clip[0], out=tmp_path / "out")
    assert again.click_state() == held
    mask = again.add_clicks(0, 2, [(25, 45)], [1])  # no box given: the restored one holds
    assert mask.any() and not mask[:, :20].any() and not mask[:, 60:].any()
    assert not mask[:10].any() and not mask[50:].any()
    assert again.click_state()[0]["points"] == [[40.0, 30.0, 1], [25.0, 45.0, 1]]
    again.set_prompt(0, np.zeros((72, 120), np.uint8) + 3)  # set otherwise: clicks forgotten
    assert again.click_state() == []


def test_loopback_hosts():
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost")
    assert not loopback("0.0.0.0") and not loopback("192.168.1.2")


def test_the_studio_process_stops_cleanly_and_reopens(clip, tmp_path):
    """`dinotrack studio` as a user runs it: Ctrl-C during a propagation leaves a coherent
    project, and a second start restores it."""
    folder, masks = clip
    out = tmp_path / "project"
    command = [sys.executable, "-m", "dinotrack", "studio", str(folder), "--out", str(out)]
    command += ["--no-browser", *tiny_flags(SHORT_SIDE)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def start():
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        line = process.stdout.readline()
        assert line.startswith("open http://127.0.0.1:"), process.stderr.read()
        return process, line.split()[1]

    def call(url, path, method="GET", body=None):
        base, token = url.split("/?token=")
        request = urllib.request.Request(
            base + path, data=body, method=method, headers={"X-Dinotrack-Token": token}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    process, url = start()
    try:
        call(url, "/api/prompts/0", "PUT", png(masks[0]))
        call(url, "/api/propagate", "POST", b'{"direction": "forward"}')
        deadline = time.monotonic() + 60
        while call(url, "/api/state")["job"]["done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # a frame computed, so that there is something to restore
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"its project is saved in {out}" in err
    data = json.loads((out / "studio.json").read_text())
    assert data["prompts"] == [0] and [o["id"] for o in data["objects"]] == [3, 7]
    process, url = start()
    base, token = url.split("/?token=")
    events = urllib.request.Request(base + "/api/events", headers={"X-Dinotrack-Token": token})
    try:
        state = call(url, "/api/state")
        stream = urllib.request.urlopen(events, timeout=30)  # an open page's event stream
        assert stream.readline().startswith(b"data: ")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert state["prompts"] == [0] and [o["id"] for o in state["objects"]] == [3, 7]
    # The frames computed before Ctrl-C are back (the pass's first ones), and said so.
    computed = len(state["results"])
    assert state["results"] == list(range(computed))
    assert computed > 0 and f", {computed} computed frame(s))" in err, err
    # The stream ends with the server instead of outliving its graceful shutdown.
    assert process.returncode == 130 and "Traceback" not in err, err
    stream.close()
