"""The pretrain CLI's log handler follows ``sys.stderr`` across calls in one process."""

from __future__ import annotations

import io
import logging
import sys

from pretrain.cli import configure_logging


def test_log_lines_go_to_the_stderr_of_each_call(monkeypatch):
    log = logging.getLogger("pretrain")
    monkeypatch.setattr(log, "handlers", [])
    configure_logging()
    configure_logging()  # a second call adds no second handler
    assert len(log.handlers) == 1
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("pretrain.data").warning("skipping one.mp4")
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("pretrain.data").warning("skipping two.mp4")
    assert first.getvalue() == "WARNING pretrain.data: skipping one.mp4\n"
    assert second.getvalue() == "WARNING pretrain.data: skipping two.mp4\n"
