"""``dinotrack studio INPUT [--out DIR]``: the studio's sub-command (parser and run).

Importing this module is cheap: the server (Starlette, uvicorn) and torch load when it runs.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Any

from dinotrack.cli.common import add_tracker_arguments, build_tracker
from dinotrack.errors import InputError

__all__ = ["default_out", "register", "run_studio"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``studio`` command to the ``dinotrack`` parser."""
    p = subparsers.add_parser(
        "studio",
        help="open a video in the browser: make masks by clicks, box or brush, track, correct, "
        "export",
        description="A local web app over one video: make objects' masks on any frame (clicks, "
        "a box, a brush, a polygon, a mask PNG), propagate them, correct any frame and "
        "propagate again, export as `segment --save` does. The work is saved in --out as it "
        "changes and restored when the same video is opened with the same --out.",
    )
    p.add_argument("input", help="video file or directory of frames")
    p.add_argument(
        "--out",
        default=None,
        help="directory for the project (studio.json, .studio/) and the exports (results/, "
        "overlay.mp4); default: ./<input name>-studio",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; another exposes the "
        "video and --out to whoever has the URL, with a warning)",
    )
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument(
        "--no-browser", action="store_true", help="only print the URL; do not open a browser"
    )
    add_tracker_arguments(p)
    p.set_defaults(func=run_studio)


def default_out(source: str | os.PathLike[str]) -> Path:
    """``./<input name>-studio``: the project folder when ``--out`` is not given."""
    path = Path(os.path.abspath(source))
    name = path.name if path.is_dir() else path.stem
    return Path.cwd() / f"{name}-studio"


def run_studio(args: argparse.Namespace) -> int:
    """Run ``dinotrack studio`` until Ctrl-C (or SIGTERM)."""
    from dinotrack.io.video import probe_video
    from dinotrack.pipeline.project import ProjectFile, ProjectLock

    out = Path(args.out) if args.out is not None else default_out(args.input)
    args.on_interrupt = f"the studio stopped; its project is saved in {out}"
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be from 0 to 65535, got {args.port}")
    ProjectFile(out, probe_video(args.input))  # checked before the model loads
    with ProjectLock(out):  # a second studio on the same --out is refused
        return _serve(args, out)


def _serve(args: argparse.Namespace, out: Path) -> int:
    """Load the model, listen and serve ``out``'s project until a signal."""
    import uvicorn

    from dinotrack.pipeline.interactive import InteractiveSession
    from dinotrack.studio.server import create_app, loopback, new_token

    sock = _bind(args.host, args.port)
    try:
        session = InteractiveSession(build_tracker(args), args.input, out)
        token = new_token()
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{shown}:{port}/?token={token}"
        if not loopback(args.host):
            print(
                f"dinotrack: warning: --host {args.host} lets other machines reach the studio; "
                "anyone with the URL can see the video and write into --out",
                file=sys.stderr,
            )
        restored = ""
        if session.prompt_frames or session.objects:
            computed = len(session.result_frames)
            restored = (
                f" (restored: {len(session.objects)} object(s), "
                f"{len(session.prompt_frames)} prompt(s)"
                + (f", {computed} computed frame(s)" if computed else "")
                + ")"
            )
        print(f"dinotrack studio: {args.input} -> {out}{restored}", file=sys.stderr)
        print(f"open {url}", flush=True)
        if not args.no_browser:
            threading.Timer(0.5, webbrowser.open, args=(url,)).start()
        app = create_app(session, token)
        config = uvicorn.Config(
            app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on"
        )
        server = _server_class()(config, stopping=app.state.stopping)
        server.run(sockets=[sock])
        if server.started:
            # A started server stops only on a signal. uvicorn re-raises it after its graceful
            # shutdown, but that can be lost inside asyncio's own SIGINT handling (seen under
            # load: Ctrl-C exited 0 without the saved-project line), so say it here.
            raise KeyboardInterrupt
    finally:
        sock.close()
    return 0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that, on Ctrl-C, first ends the studio's event streams: an open
        page's stream would otherwise outlast the graceful shutdown and be cancelled with a
        traceback."""

        def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
            super().__init__(config)
            self.stopping = stopping

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopping.set()
            super().handle_exit(sig, frame)

    return Server


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one).

    Raises:
        OSError: The address cannot be used (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(128)
    return sock
