"""``python -m energyflow``: the command line (``energyflow.cli``)."""

import sys

from energyflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
