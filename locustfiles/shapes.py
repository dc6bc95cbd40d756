"""A step-load shape, used only when asked for (`--fanout-shape step`, or the web UI's
`--class-picker`): Locust would otherwise force the first shape it finds on every run.

    locust -f locustfiles/ --fanout-shape step --users 30 --fanout-step-users 10 \
        --fanout-step-s 10 --run-time 60s

adds 10 users every 10 s up to 30, holds, and stops at --run-time.
"""

from __future__ import annotations

from _fanout_support import option
from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    """Add --fanout-step-users every --fanout-step-s seconds, up to --users; stop at --run-time."""

    #: It reads --users, --spawn-rate and --run-time (so Locust does not warn they are ignored).
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        environment = self.runner.environment
        options = environment.parsed_options
        elapsed = self.get_run_time()
        run_time = getattr(options, "run_time", None)
        if run_time and elapsed >= run_time:
            return None
        step_users = int(option(environment, "fanout_step_users", 5))
        step_s = int(option(environment, "fanout_step_s", 5))
        ceiling = getattr(options, "num_users", None) or step_users
        users = min(ceiling, step_users * (int(elapsed // step_s) + 1))
        spawn_rate = getattr(options, "spawn_rate", None) or step_users
        return users, float(spawn_rate)
