"""Data preparation: where the shared data lies, re-encoded videos, DAVIS frames from videos."""
