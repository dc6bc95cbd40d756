"""Every fan-out pattern of the reference app under load: the harness of the package.

    locust -f locustfiles/                     # SyncUser, AsyncUser, AsyncSemUser
    locust -f locustfiles/ AsyncUser           # one pattern
    locust -f locustfiles/ --tags async_sem    # the same, by tag
    locust -f locustfiles/ BlockingUser        # the anti-pattern: only when asked for

The users, options, thresholds and embedded stack live in `pytest_fanout.locust`;
a locustfile of your own can be this same one line (docs/load-testing.md).
"""

from pytest_fanout.locust import *  # noqa: F403
