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

#: The public API, listed once: what a user's test or conftest names (the test-writing API),
#: name -> the module that holds it, imported on first use (PEP 562). pytest loads this
#: package in every run of every project where it is installed, so its import must stay
#: light (benchmarks/entry_import.py; tests/unit/test_entry_import.py). The machinery
#: (AppServer, Stack, StubUpstreamServer, ServerProcess...) is `pytest_fanout.servers`'s.
_PUBLIC = {
    "Fanout": "pytest_fanout.fixture",
    "FanoutSession": "pytest_fanout.plugin",
    "FanoutAssertionError": "pytest_fanout.assertions",
    "Finding": "pytest_fanout.diagnosis",
    "diagnose": "pytest_fanout.diagnosis",
    "FanoutWarning": "pytest_fanout.measurement",
    "Measurement": "pytest_fanout.measurement",
    "MeasurementError": "pytest_fanout.measurement",
    "Request": "pytest_fanout.measurement",
    "UpstreamGauges": "pytest_fanout.measurement",
    "SpecError": "pytest_fanout.spec",
    "StackSpec": "pytest_fanout.spec",
    "UpstreamSpec": "pytest_fanout.spec",
    "Behaviour": "pytest_fanout.limits",
    "RecordedRequest": "pytest_fanout.servers",
    "RouteError": "pytest_fanout.servers",
    "StubRequest": "pytest_fanout.servers",
    "StubResponse": "pytest_fanout.servers",
    "StubStream": "pytest_fanout.servers",
    "CriticalPath": "pytest_fanout.timeline",
    "TimelineFinding": "pytest_fanout.timeline",
    "Waterfall": "pytest_fanout.timeline",
    "EndpointResult": "pytest_fanout.load.results",
    "LoadResult": "pytest_fanout.load.results",
    "OpenModelResult": "pytest_fanout.load.results",
    "LoadRunError": "pytest_fanout.load.runner",
    "run_locust": "pytest_fanout.load.runner",
    "Thresholds": "pytest_fanout.load.thresholds",
    "ExitCode": "pytest_fanout.limits",
}

if TYPE_CHECKING:
    # For type checkers and editors, which cannot read _PUBLIC: the same names from the same
    # modules (tests/unit/test_package.py checks that the two agree).
    from pytest_fanout.assertions import FanoutAssertionError  # noqa: F401
    from pytest_fanout.diagnosis import Finding, diagnose  # noqa: F401
    from pytest_fanout.fixture import Fanout  # noqa: F401
    from pytest_fanout.limits import Behaviour, ExitCode  # noqa: F401
    from pytest_fanout.load.results import (  # noqa: F401
        EndpointResult,
        LoadResult,
        OpenModelResult,
    )
    from pytest_fanout.load.runner import LoadRunError, run_locust  # noqa: F401
    from pytest_fanout.load.thresholds import Thresholds  # noqa: F401
    from pytest_fanout.measurement import (  # noqa: F401
        FanoutWarning,
        Measurement,
        MeasurementError,
        Request,
        UpstreamGauges,
    )
    from pytest_fanout.plugin import FanoutSession  # noqa: F401
    from pytest_fanout.servers import (  # noqa: F401
        RecordedRequest,
        RouteError,
        StubRequest,
        StubResponse,
        StubStream,
    )
    from pytest_fanout.spec import SpecError, StackSpec, UpstreamSpec  # noqa: F401
    from pytest_fanout.timeline import CriticalPath, TimelineFinding, Waterfall  # noqa: F401


__getattr__ = lazy_names(__name__, _PUBLIC)

pytest_plugins = [
    "pytest_fanout.plugin",
    "pytest_fanout.gate.plugin",
    "pytest_fanout.load.plugin",
]

__version__ = "0.1.0"

__all__ = [*_PUBLIC, "__version__"]
