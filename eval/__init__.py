"""DAVIS benchmarking with the official J&F semantics.

Modules:
    metrics: J, F, boundary maps and per-object statistics (pure numpy).
    davis: DAVIS-2017 / DAVIS-2016 layouts; reading annotations and result PNGs.
    scoring: score a results folder on a split (parallel over sequences).
    report: the official CSVs, a JSON record and a rich table.
    runner: ``eval davis``, propagate a split with a dinotrack tracker, then score it.
    cli: the ``dinotrack eval`` sub-commands.
"""
