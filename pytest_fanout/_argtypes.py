"""argparse types shared by the `fanout` command and the locustfiles' own options.

Each turns a string into a checked value or raises ArgumentTypeError with a
message that names the problem, so bad input ends as one line from argparse.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _integer(text: str, what: str = "an integer") -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (inf and nan would make a delay hang forever)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def fraction(text: str) -> float:
    """A number between 0 and 1."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def http_status(text: str) -> int:
    """An HTTP status code, 100 to 599."""
    value = _integer(text, "an HTTP status")
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"{value} is not an HTTP status (100-599)")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    value = _integer(text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def import_string(text: str) -> str:
    """An import string, MODULE:ATTRIBUTE (`spec.parse_import_string`, the one rule)."""
    from pytest_fanout.spec import parse_import_string  # here: spec imports load.limits

    try:
        return parse_import_string(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an integer in [low, high] (keeps a benchmark's run bounded)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be between {low} and {high}")
        return value

    return parse
