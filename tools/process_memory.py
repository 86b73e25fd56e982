"""Peak memory of the current process, for the benchmarks in ``tools/``."""

from __future__ import annotations

import resource
from pathlib import Path


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
