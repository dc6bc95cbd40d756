"""`python -m benchmarks.physical_limit`: the whole benchmark (see the package's docstring)."""

import sys

from benchmarks.physical_limit.run import main

sys.exit(main())
