"""``python -m dinotrack`` runs the command line."""

import sys

from dinotrack.cli import main

if __name__ == "__main__":
    sys.exit(main())
