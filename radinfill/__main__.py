"""``python -m radinfill``: the command line, for launchers that start modules (``torchrun -m``)."""

import sys

from radinfill.cli import main

sys.exit(main())
