"""``python -m spocu`` runs the ``spocu`` command line."""

import sys

from spocu.cli import main

if __name__ == "__main__":
    sys.exit(main())
