"""Processes for the benchmarks: a tool run again as a fresh child, and a process's peak memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from tools.data.location import REPO


def run_module(module: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Runs ``python -m MODULE ARGS`` in a fresh process and returns its standard output.

    The repository's root is put first on the child's module path, so ``tools`` and the
    checkout's packages import from any working directory. A failing child raises
    ``subprocess.CalledProcessError`` with its output.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


def last_json_line(output: str) -> dict:
    """The JSON object on the last line of a child's output (what the children print last)."""
    return json.loads(output.strip().splitlines()[-1])


def peak_rss_gb() -> float:
    """This process's peak resident memory in GiB.

    Reads VmHWM from ``/proc/self/status``: unlike ``ru_maxrss`` it is not inherited across
    ``exec`` from a parent that used more.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
