"""`python -m pytest_fanout.cli ...`, as the `fanout` console script."""

import sys

from pytest_fanout.cli import main

sys.exit(main())
