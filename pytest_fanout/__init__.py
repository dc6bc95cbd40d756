"""pytest-fanout: prove that FastAPI fan-out endpoints are concurrent, bounded and fast.

`pytest -p pytest_fanout` and the pytest11 entry point both load this package,
which pulls in the plugin modules below (hooks and fixtures live there). Its
public names load on first use, and the plugins import servers, httpx2, the
gate and Locust only inside the fixtures and hooks that need them: loading
the plugin costs a few milliseconds in a project that does not use it.
Importing it starts nothing and installs no signal handler: that happens when
the first child process starts (`pytest_fanout.servers.cleanup`).
"""

from typing import TYPE_CHECKING

from pytest_fanout.limits import lazy_names

#: Public name -> the module that holds it, imported on first use (PEP 562): pytest
#: loads this package in every run of every project where it is installed, so its
#: import must stay light (benchmarks/entry_import.py; tests/unit/test_entry_import.py).
_PUBLIC = {
    "FanoutAssertionError": "pytest_fanout.assertions",
    "Finding": "pytest_fanout.diagnose",
    "diagnose": "pytest_fanout.diagnose",
    "Fanout": "pytest_fanout.fixture",
    "EndpointResult": "pytest_fanout.load.results",
    "LoadResult": "pytest_fanout.load.results",
    "OpenModelResult": "pytest_fanout.load.results",
    "LoadRunError": "pytest_fanout.load.runner",
    "run_locust": "pytest_fanout.load.runner",
    "Thresholds": "pytest_fanout.load.thresholds",
    "FanoutWarning": "pytest_fanout.measure",
    "Measurement": "pytest_fanout.measure",
    "MeasurementError": "pytest_fanout.measure",
    "UpstreamGauges": "pytest_fanout.measure",
    "AppServer": "pytest_fanout.servers",
    "Behaviour": "pytest_fanout.servers",
    "RecordedRequest": "pytest_fanout.servers",
    "RouteError": "pytest_fanout.servers",
    "ServerProcess": "pytest_fanout.servers",
    "ServerStartError": "pytest_fanout.servers",
    "Stack": "pytest_fanout.servers",
    "StubRequest": "pytest_fanout.servers",
    "StubResponse": "pytest_fanout.servers",
    "StubStream": "pytest_fanout.servers",
    "StubUpstreamServer": "pytest_fanout.servers",
    "ExitCode": "pytest_fanout.limits",
    "FanoutSession": "pytest_fanout.plugin",
    "SpecError": "pytest_fanout.spec",
    "StackSpec": "pytest_fanout.spec",
    "UpstreamSpec": "pytest_fanout.spec",
    "CriticalPath": "pytest_fanout.timeline",
    "TimelineFinding": "pytest_fanout.timeline",
    "Waterfall": "pytest_fanout.timeline",
}

if TYPE_CHECKING:
    from pytest_fanout.assertions import FanoutAssertionError
    from pytest_fanout.diagnose import Finding, diagnose
    from pytest_fanout.fixture import Fanout
    from pytest_fanout.limits import ExitCode
    from pytest_fanout.load.results import EndpointResult, LoadResult, OpenModelResult
    from pytest_fanout.load.runner import LoadRunError, run_locust
    from pytest_fanout.load.thresholds import Thresholds
    from pytest_fanout.measure import FanoutWarning, Measurement, MeasurementError, UpstreamGauges
    from pytest_fanout.plugin import FanoutSession
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
    from pytest_fanout.spec import SpecError, StackSpec, UpstreamSpec
    from pytest_fanout.timeline import CriticalPath, TimelineFinding, Waterfall


__getattr__ = lazy_names(__name__, _PUBLIC)

pytest_plugins = [
    "pytest_fanout.plugin",
    "pytest_fanout.gate.plugin",
    "pytest_fanout.load.plugin",
]

__version__ = "0.1.0"

__all__ = [
    "AppServer",
    "ExitCode",
    "FanoutSession",
    "SpecError",
    "StackSpec",
    "UpstreamSpec",
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
