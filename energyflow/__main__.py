import sys

from energyflow.cli import main

sys.exit(main())
