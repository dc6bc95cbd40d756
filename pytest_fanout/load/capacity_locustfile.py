"""The locustfile of one `fanout capacity` step: GET one path at an arrival rate.

    locust -f <this file> --headless --host URL --fanout-capacity-path /async/10 \
        --fanout-arrival-rate 50 --users 60 --run-time 5s

Only the open model's module is loaded (its options, the schedule, the exact
histograms): the step needs no embedded stack and no thresholds; the search
judges the SLO from the results. An answer counts as failed when its status
is not 200, or when it is a fan-out answer whose `errors.count` is not zero.
"""

from __future__ import annotations

from typing import Any

from locust import FastHttpUser, events, task

from pytest_fanout.load import arrival  # noqa: F401 (registers the open model)
from pytest_fanout.spec import add_options, value_of


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    # Declared in pytest_fanout.spec.OPTIONS.
    add_options(parser.add_argument, prefix="fanout-", front_end="locust", keys=("capacity_path",))


class CapacityUser(FastHttpUser):
    """One path, gated by the arrival schedule."""

    connection_timeout = 10.0
    network_timeout = 60.0

    @task
    def get(self) -> None:
        path = str(value_of(self.environment.parsed_options, "capacity_path"))
        with self.client.get(path, name=path, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                errors = response.json().get("errors")
            except (ValueError, AttributeError):
                errors = None  # not JSON, or not an object: the status decides
            if isinstance(errors, dict) and errors.get("count"):
                response.failure(f"{errors['count']} upstream calls failed")
