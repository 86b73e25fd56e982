"""tools/gpu/session.sh: every step runs under its own limit, and a failing step stops none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's behaviour")
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_steps_fail_alone_and_unknown_steps_are_named(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(REPO / "tools/gpu/session.sh"), str(out)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "STEPS": "batch nosuchstep kernels", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    # Both known steps ran (and failed here, without a GPU), each reported with its limit.
    assert "== batch: exit " in proc.stdout and "(limit 50 s)" in proc.stdout
    assert "== kernels: exit " in proc.stdout and "(limit 40 s)" in proc.stdout
    assert "== batch: exit 0" not in proc.stdout
    assert "unknown step nosuchstep" in proc.stderr
    assert (out / "batch.log").is_file() and (out / "kernels.log").is_file()


def test_usage_without_an_output_folder():
    proc = subprocess.run(
        [str(REPO / "tools/gpu/session.sh")], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "tools/gpu/session.sh OUT" in proc.stderr
