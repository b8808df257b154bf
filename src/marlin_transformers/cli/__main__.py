"""`python -m marlin_transformers.cli`: the `marlin` command."""

import sys

from . import main

sys.exit(main())
