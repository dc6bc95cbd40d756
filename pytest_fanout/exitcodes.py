"""The exit statuses of every `fanout` command and of a Locust run of the harness.

One number, one meaning, everywhere (README, "Exit codes"). 0, 1 and 2 are
also Locust's own (1: failed requests, 2: a usage error or an unhandled
exception), so the harness keeps their sense. Under pytest, the plugin uses
pytest's own exit codes (0-5), plus `TARGET_UNUSABLE` when --fanout-ab's base
app cannot start and `NOT_GATED` (6, above pytest's) when the gate compared
nothing it could gate.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a run's exit status says."""

    #: Everything asked for ran, and every check held.
    OK = 0
    #: It ran, and a check did not hold: failed requests (Locust), a regression
    #: (`fanout compare`), an answer that was not the expected one (`fanout measure`).
    FAILED = 1
    #: Bad input, nothing was run: a flag, a [tool.fanout] value, a rule, a file.
    USAGE = 2
    #: A load threshold was violated (--fanout-max-p95-ms, --fanout-min-rps, ...).
    THRESHOLD = 3
    #: The target cannot be used: --host does not answer, the app, a stub or the base
    #: commit's app (--fanout-ab) did not start, a port is taken.
    TARGET_UNUSABLE = 4
    #: The regression gate compared nothing it could gate (a renamed suite, another
    #: machine's baseline and no portable metric); --fanout-allow-ungated accepts it.
    NOT_GATED = 6
    #: Stopped by Ctrl-C (128 + SIGINT), every process it started stopped too.
    INTERRUPTED = 130
