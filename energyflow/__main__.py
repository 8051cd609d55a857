"""``python -m energyflow``: the command line (``energyflow.training.cli``)."""

import sys

from energyflow.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
