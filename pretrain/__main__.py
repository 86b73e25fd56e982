"""``python -m pretrain`` and ``torchrun -m pretrain``."""

from pretrain.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
