"""`python -m scaling ...` is the same as the `scaling` console script."""

import sys

from scaling.cli import main

sys.exit(main())
