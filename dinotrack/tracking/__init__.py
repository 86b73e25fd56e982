"""Tracking: label propagation through patch-feature affinity, object ids, the per-video
session, the ``Tracker`` that runs it over a video, and starts without a mask."""
