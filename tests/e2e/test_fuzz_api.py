"""Fuzzing the app's API with schemathesis, against its own OpenAPI schema.

A real app process and stub upstream on loopback (Stack). The upstream
answers in 0-5 ms and FANOUT_MAX_N / FANOUT_MAX_CONCURRENCY are small, so
every fuzzed n stays cheap. Both valid and invalid inputs are generated; every
answer must be no 500 and conform to the schema (status code documented, body
valid, invalid input rejected). The number of examples is bounded so the file
runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.process import tls_context
from pytest_fanout.servers.stack import Stack

MAX_N = 50
MAX_CONCURRENCY = 20
APP_ENV = {
    "FANOUT_MAX_N": str(MAX_N),
    "FANOUT_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
    "FANOUT_CALL_TIMEOUT_S": "5",
    "FANOUT_DEADLINE_S": "10",
}
#: Per operation and mode: 6 operations (healthz, stats, the four fan-out routes) x valid/invalid.
MAX_EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_stack() -> Iterator[Stack]:
    with Stack(behaviour=Behaviour(delay_ms=0, jitter_ms=5), app_env=APP_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: Stack) -> schemathesis.BaseSchema:
    assert fuzz_stack.app is not None
    return schemathesis.openapi.from_url(f"{fuzz_stack.app.url}/openapi.json", timeout=10)


OPERATIONS = [
    "GET /healthz",
    "GET /stats",
    "GET /sync/{n}",
    "GET /async/{n}",
    "GET /async_sem/{n}/{max_concurrent}",
    "GET /blocking/{n}",
]


# `schemathesis.pytest.from_fixture` + `@schema.parametrize()` is the documented way, but
# schemathesis 4.32 reads `item._nodeid`, which pytest 9.2 no longer has (AttributeError).
# The same generation, driven by Hypothesis's own `@given` over `as_strategy()`, works with
# any pytest and still fuzzes the schema the running app serves.
#: (operation, mode): /healthz and /stats have no parameter to make invalid: valid cases only.
CASES = [
    pytest.param(label, mode, id=f"{label} {mode.value}")
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if "{" in label or mode is GenerationMode.POSITIVE
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_api_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, fuzz_stack: Stack, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the app's schema"
    calls: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,  # each example is a real HTTP round trip on a shared machine
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same examples every run: a failure here is reproducible
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing example is enough
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        calls.append(case.formatted_path)
        if mode is GenerationMode.POSITIVE:
            assert response.status_code == 200, (case.formatted_path, response.text)
        elif "%2F" in case.formatted_path.upper():  # an encoded "/" is another path: 404
            assert response.status_code in (404, 422), (case.formatted_path, response.text)
        else:  # the app's contract for bad input: 422 with the reason
            assert response.status_code == 422, (case.formatted_path, response.text)
            assert response.json()["detail"][0]["loc"][0] == "path"

    fuzz()
    assert calls, "no example was generated"
    assert fuzz_stack.app is not None
    assert fuzz_stack.app.probe_stats()["inflight"] == 0
    # Every admission was released, whatever the answer (200, 404, 422): nothing leaks.
    stats = httpx2.get(f"{fuzz_stack.app.url}/stats", timeout=10, verify=tls_context()).json()
    assert (stats["pending_calls"], stats["shed"]) == (0, 0)


def test_schema_advertises_the_caps(fuzz_stack: Stack) -> None:
    """The bounds the fuzzer works from are the app's real caps, taken from its settings."""
    assert fuzz_stack.app is not None
    spec = httpx2.get(f"{fuzz_stack.app.url}/openapi.json", timeout=10, verify=tls_context()).json()
    params = {
        (path, p["name"]): p["schema"]
        for path, item in spec["paths"].items()
        for p in item["get"].get("parameters", [])
    }
    for path in ("/sync/{n}", "/async/{n}", "/blocking/{n}", "/async_sem/{n}/{max_concurrent}"):
        assert params[(path, "n")]["minimum"] == 1
        assert params[(path, "n")]["maximum"] == MAX_N
    bound = params[("/async_sem/{n}/{max_concurrent}", "max_concurrent")]
    assert (bound["minimum"], bound["maximum"]) == (1, MAX_CONCURRENCY)
    assert fuzz_stack.app.probe_stats()["inflight"] == 0
