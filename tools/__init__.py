"""Scripts around dinotrack, grouped by role (tools/README.md lists them): ``bench`` measures,
``data`` prepares data, ``runs`` turns pretraining runs into figures and shipped models,
``gpu`` holds the jobs for a lent GPU machine, ``docs`` generates documentation.

Not part of the installed package: run them from the repository's root as modules, e.g.
``python -m tools.bench.fps --help``. They use dinotrack's public API only.
"""
