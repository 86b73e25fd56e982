"""tools/runs/plot_curves.py draws a run's entropy, KL and probe curves into a PNG."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tools.runs import plot_curves


def test_curves_of_two_runs_in_their_colours(tmp_path):
    tool = plot_curves
    runs = []
    for k, out_dim in enumerate((64, 256)):
        run = tmp_path / f"run{k}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"config": {"model": {"out_dim": out_dim}}}))
        lines = [
            {"step": s, "teacher_entropy": 3.0 - s / 50, "teacher_mean_entropy": 3.5, "kl": 0.5}
            for s in range(1, 60)
        ]
        (run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        probe = [{"step": s, "probe_j": 0.3 + s / 1000} for s in (0, 50)]
        (run / "probe.jsonl").write_text("".join(json.dumps(x) + "\n" for x in probe))
        runs.append(run)
    out = tmp_path / "curves.png"
    tool.plot(runs, out, ["first", "second"], window=5)
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    for colour in tool.COLOURS[:2]:
        assert (pixels == colour).all(axis=1).sum() > 200  # each run's curves are drawn
    assert not (pixels == tool.COLOURS[2]).all(axis=1).any()  # no third run
    assert tool.smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
