"""The studio's HTTP server: a thin Starlette layer over :class:`dinotrack.InteractiveSession`.

The API is described in ``docs/studio.md``. In short: every request needs the session's token
(query ``?token=`` or header ``X-Dinotrack-Token``; 403 otherwise); frames and objects are
addressed by index and id, never by a file path; request bodies are size-limited (413); bad
input gets 400 with the one line the CLI would print, a missing thing 404, a conflict (a
propagation running, results out of date, a folder dinotrack did not write) 409.

A propagation runs in a worker thread (:class:`dinotrack.studio.job.Job`): a client that goes
away does not stop it; ``POST /api/cancel`` does. Blocking work (decoding, the backbone, PNG
and JPEG coding) runs in the thread pool, so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from dinotrack.cli.common import error_line
from dinotrack.errors import InputError
from dinotrack.io.masks import mask_to_image, read_mask
from dinotrack.pipeline.interactive import BusyError, InteractiveSession, StaleResultsError
from dinotrack.studio.job import Job

__all__ = ["create_app", "loopback", "new_token"]

STATIC = Path(__file__).parent / "static"
"""The page's files (index.html, studio.css, ES modules)."""

MAX_MASK_BYTES = 32 * 1024 * 1024
"""Largest mask PNG a client may send."""

MAX_JSON_BYTES = 1024 * 1024
"""Largest JSON body a client may send."""

THUMB_WIDTH = 160
"""Width of the timeline's thumbnails."""

TOKEN_HEADER = "x-dinotrack-token"


def new_token() -> str:
    """A fresh random session token."""
    return secrets.token_urlsafe(24)


class TooLarge(ValueError):
    """A request body over its limit (413)."""


class TokenMiddleware:
    """Refuses (403) every HTTP request without the session token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token") or ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            if scope["path"] == "/":  # a person with an old link: a page, not JSON
                reply: Response = HTMLResponse(
                    "<!doctype html><meta charset='utf-8'><title>dinotrack studio</title>"
                    "<p style='font-family: sans-serif'>This link is not the running studio's: "
                    "each start of <code>dinotrack studio</code> makes a new one. Open the URL "
                    "it printed in its terminal.</p>",
                    status_code=403,
                )
            else:
                reply = _error(
                    403, "missing or wrong token: open the URL that `dinotrack studio` printed"
                )
            await reply(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(session: InteractiveSession, token: str) -> Starlette:
    """The studio's ASGI application over ``session``, guarded by ``token``.

    ``app.state.job`` is the :class:`Job`; stopping the app (its lifespan's end) cancels it
    and waits for it, so the project stays coherent. Setting ``app.state.stopping`` (a
    :class:`threading.Event`) ends the event streams, which an open page would otherwise
    keep open past the server's graceful shutdown; ``dinotrack studio`` sets it on Ctrl-C.
    """
    job = Job(session)
    stopping = threading.Event()
    model = session.tracker.spec.name
    out = None if session.out is None else str(session.out)

    async def video(request: Request) -> Response:
        info = session.info
        return JSONResponse(
            {
                "frames": info.num_frames,
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
                "names": list(info.frame_names),
            }
        )

    async def frame(request: Request) -> Response:
        index = request.path_params["i"]
        thumb = request.query_params.get("thumb") not in (None, "", "0")
        data = await run_in_threadpool(_jpeg, session.frame(index), thumb)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def state(request: Request) -> Response:
        return JSONResponse(
            {
                "objects": [o.as_dict() for o in session.objects],
                "prompts": session.prompt_frames,
                "results": session.result_frames,
                "up_to_date": session.up_to_date(),
                "clicks": session.click_state(),
                "settings": {**session.settings, "model": model, "out": out},
                "job": job.progress(),
                "notices": session.notices,
            }
        )

    async def add_object(request: Request) -> Response:
        body = await _json(request)
        created = session.add_object(name=body.get("name"))
        return JSONResponse(created.as_dict(), status_code=201)

    async def object_(request: Request) -> Response:
        object_id = request.path_params["id"]
        if request.method == "DELETE":
            session.remove_object(object_id)
            job.results_version += 1
            return JSONResponse({"objects": _objects(session)})
        body = await _json(request)
        changed = session.update_object(object_id, name=body.get("name"), hidden=body.get("hidden"))
        return JSONResponse(changed.as_dict())

    async def prompt(request: Request) -> Response:
        index = request.path_params["i"]
        _check_index(session, index)
        if request.method == "GET":
            ids = session.prompt(index)
            if ids is None:
                return _error(404, f"frame {index} holds no prompt")
            return Response(await run_in_threadpool(_png, ids), media_type="image/png")
        if request.method == "DELETE":
            session.delete_prompt(index)
            return JSONResponse({"prompts": session.prompt_frames})
        data = await _body(request, MAX_MASK_BYTES)
        name = session.frame_names[index]
        ids = await run_in_threadpool(_read_upload, data, name)
        warned = await run_in_threadpool(_set_prompt, session, index, ids, name)
        job.results_version += 1
        return JSONResponse({"objects": _objects(session), "warnings": warned})

    async def clicks(request: Request) -> Response:
        index = request.path_params["i"]
        body = await _json(request)
        object_id = body.get("object")
        if not isinstance(object_id, int) or isinstance(object_id, bool):
            raise InputError(f'"object" must be an object id (an integer), got {object_id!r}')
        points = body.get("points") or []
        if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 3 for p in points
        ):
            raise InputError('"points" must be a list of [x, y, 1 or 0]')
        await run_in_threadpool(
            session.add_clicks,
            index,
            object_id,
            [p[:2] for p in points],
            [p[2] for p in points],
            body.get("box"),
            clear=bool(body.get("clear", False)),
        )
        return JSONResponse({"objects": _objects(session)})

    async def propagate(request: Request) -> Response:
        body = await _json(request)
        job.start(body.get("direction", "forward"))
        return JSONResponse({"job": job.progress()}, status_code=202)

    async def cancel(request: Request) -> Response:
        job.cancel()
        return JSONResponse({"job": job.progress()})

    async def progress(request: Request) -> Response:
        return JSONResponse(job.progress())

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _event_stream(request, job, stopping),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def mask(request: Request) -> Response:
        index = request.path_params["i"]
        _check_index(session, index)
        ids = session.mask(index)
        if ids is None:
            return _error(404, f"frame {index} has no result yet: propagate first")
        return Response(await run_in_threadpool(_png, ids), media_type="image/png")

    async def export(request: Request) -> Response:
        body = await _json(request)
        formats = body.get("formats", ["png"])
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise InputError('"formats" must be a list of format names')
        written = await run_in_threadpool(session.export, formats)
        base = session.out.resolve()
        relative = [p.resolve().relative_to(base).as_posix() for p in written]
        return JSONResponse({"written": relative, "out": out})

    async def settings(request: Request) -> Response:
        return JSONResponse(session.update_settings(await _json(request)))

    async def index_page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/", index_page),
        Route("/api/video", video),
        Route("/api/frames/{i:int}", frame),
        Route("/api/state", state),
        Route("/api/objects", add_object, methods=["POST"]),
        Route("/api/objects/{id:int}", object_, methods=["PATCH", "DELETE"]),
        Route("/api/prompts/{i:int}", prompt, methods=["GET", "PUT", "DELETE"]),
        Route("/api/clicks/{i:int}", clicks, methods=["POST"]),
        Route("/api/propagate", propagate, methods=["POST"]),
        Route("/api/cancel", cancel, methods=["POST"]),
        Route("/api/progress", progress),
        Route("/api/events", events),
        Route("/api/masks/{i:int}", mask),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/settings", settings, methods=["PUT"]),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
    ]
    handlers: dict[Any, Callable] = {
        TooLarge: lambda request, error: _error(413, str(error)),
        BusyError: lambda request, error: _error(409, str(error)),
        StaleResultsError: lambda request, error: _error(409, str(error)),
        FileExistsError: lambda request, error: _error(409, error_line(error)),
        IndexError: lambda request, error: _error(404, str(error)),
        KeyError: lambda request, error: _error(404, str(error.args[0]) if error.args else ""),
        ValueError: lambda request, error: _error(400, error_line(error)),
        TypeError: lambda request, error: _error(400, error_line(error)),
        404: lambda request, error: _error(404, "not found"),
        405: lambda request, error: _error(405, "method not allowed"),
    }

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(job.stop)  # Ctrl-C: the job ends after its current frame

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.job = job
    app.state.stopping = stopping
    app.add_middleware(TokenMiddleware, token=token)
    return app


async def _event_stream(
    request: Request, job: Job, stopping: threading.Event
) -> AsyncIterator[str]:
    """Server-sent events: the progress, then one event per frame the job yields; a comment
    every 15 s keeps an idle stream open. Ends when the client goes away or the server
    stops."""
    sent = len(job.frames) if job.state == "running" else 0
    last_state = None
    idle = 0.0
    while not stopping.is_set() and not await request.is_disconnected():
        frames = job.frames
        if sent > len(frames):  # a new job started
            sent = 0
        while sent < len(frames):
            yield f"data: {json.dumps({**job.progress(), 'frame': frames[sent]})}\n\n"
            sent += 1
            idle = 0.0
        if job.state != last_state:
            last_state = job.state
            yield f"data: {json.dumps(job.progress())}\n\n"
            idle = 0.0
        await asyncio.sleep(0.1)
        idle += 0.1
        if idle >= 15:
            yield ": keep-alive\n\n"
            idle = 0.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _objects(session: InteractiveSession) -> list[dict[str, Any]]:
    return [o.as_dict() for o in session.objects]


def _check_index(session: InteractiveSession, index: int) -> None:
    if not 0 <= index < session.num_frames:
        raise IndexError(
            f"frame {index} does not exist: the video has {session.num_frames} frames "
            f"(0 to {session.num_frames - 1})"
        )


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (:class:`TooLarge`) past ``limit`` bytes, before it is read
    when its declared length says so."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty)."""
    data = await _body(request, MAX_JSON_BYTES)
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


def _read_upload(data: bytes, name: str) -> np.ndarray:
    """Object ids of an uploaded mask, read exactly as ``--mask`` reads a file (through a
    temporary file named like the frame's mask, which the error messages name)."""
    with tempfile.TemporaryDirectory(prefix="dinotrack-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            return read_mask(path).ids
        except ValueError as error:
            raise InputError(str(error).replace(str(path), name)) from None


def _set_prompt(session: InteractiveSession, index: int, ids: np.ndarray, name: str) -> list[str]:
    """Set an uploaded mask as the prompt of frame ``index``; returns the warnings it gave
    (a mask resized to the frames, objects smaller than a patch), for the page to show as
    the command line prints them."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session.set_prompt(index, ids)
    except ValueError as error:
        raise InputError(f"{name}: {error}") from None
    return [str(w.message) for w in caught]


def _jpeg(frame: np.ndarray, thumb: bool) -> bytes:
    image = Image.fromarray(frame)
    if thumb:
        height = max(1, round(frame.shape[0] * THUMB_WIDTH / frame.shape[1]))
        image = image.resize((THUMB_WIDTH, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75 if thumb else 90)
    return buffer.getvalue()


def _png(ids: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    mask_to_image(ids).save(buffer, format="PNG")
    return buffer.getvalue()


def loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
