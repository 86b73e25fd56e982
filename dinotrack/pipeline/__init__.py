"""The segment loop that every front end runs (CLI, ``--batch``, ``eval``, the studio), and
the process-group helpers for running it under torchrun."""
