"""Under Locust the buckets run on (issue 33): a Locust run on the embedded stack with a
rate-limited stub names the limit that caps the service, from the stub's exact counts."""

from __future__ import annotations

import re

from tests.helpers import locust


def test_locust_names_the_limit_that_caps_the_run() -> None:
    """The reference app's gather makes 10 calls a request; a 20/s stub caps it at 2 req/s,
    which 4 users, each sending back to back, pass at once."""
    code, output, _ = locust(
        "-f",
        "locustfiles/",
        "--headless",
        "--run-time",
        "3s",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--fanout-rate-limit",
        "20/s",
        "AsyncUser",
    )
    assert "Traceback" not in output
    found = re.search(
        r"fanout: upstream '(\w+)' answered 429 to (\d+) of (\d+) calls; it allows 20/s and each "
        r"request calls it 10 times: at most 2 req/s here \(this run: [\d.]+/s\)",
        output,
    )
    assert found is not None, output[-3000:]
    rejected, calls = int(found[2]), int(found[3])
    assert 0 < rejected < calls
