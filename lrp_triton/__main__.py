"""`python -m lrp_triton explain ...`: the same as the `lrp-triton` console script."""

import sys

from lrp_triton.cli import main

sys.exit(main())
