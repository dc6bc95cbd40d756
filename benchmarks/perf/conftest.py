"""The reference app's path shapes (n and concurrency of /async/20 and the rest), so the
gate can compute efficiency: the harness itself knows no app's paths."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.reference_shapes import pytest_fanout_path_shape  # noqa: E402, F401
