"""pytest-fanout: prove that FastAPI fan-out endpoints are concurrent, bounded and fast.

`pytest -p pytest_fanout` and the pytest11 entry point both load this package,
which pulls in the plugin modules below (hooks and fixtures live there).
Importing it starts nothing and installs no signal handler: that happens when
the first child process starts (`pytest_fanout.servers.cleanup`).
"""

from pytest_fanout.assertions import FanoutAssertionError
from pytest_fanout.diagnose import Finding, diagnose
from pytest_fanout.fixture import Fanout
from pytest_fanout.load.results import EndpointResult, LoadResult, OpenModelResult
from pytest_fanout.load.runner import LoadRunError, run_locust
from pytest_fanout.load.thresholds import Thresholds
from pytest_fanout.measure import FanoutWarning, Measurement, MeasurementError, UpstreamGauges
from pytest_fanout.servers import (
    AppServer,
    Behaviour,
    RecordedRequest,
    RouteError,
    ServerProcess,
    ServerStartError,
    Stack,
    StubRequest,
    StubResponse,
    StubStream,
    StubUpstreamServer,
)
from pytest_fanout.timeline import CriticalPath, TimelineFinding, Waterfall

pytest_plugins = [
    "pytest_fanout.plugin",
    "pytest_fanout.gate.plugin",
    "pytest_fanout.load.plugin",
]

__version__ = "0.1.0"

__all__ = [
    "AppServer",
    "Behaviour",
    "CriticalPath",
    "EndpointResult",
    "Fanout",
    "FanoutAssertionError",
    "FanoutWarning",
    "Finding",
    "LoadResult",
    "LoadRunError",
    "Measurement",
    "MeasurementError",
    "OpenModelResult",
    "RecordedRequest",
    "RouteError",
    "ServerProcess",
    "ServerStartError",
    "Stack",
    "StubRequest",
    "StubResponse",
    "StubStream",
    "StubUpstreamServer",
    "Thresholds",
    "TimelineFinding",
    "UpstreamGauges",
    "Waterfall",
    "diagnose",
    "run_locust",
    "__version__",
]
