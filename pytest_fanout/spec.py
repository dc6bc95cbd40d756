"""The stack, declared once: `[tool.fanout]` in pyproject.toml, read by every front end.

A user's stack (the app, its upstreams and the environment variables that
name them, delays, routes with canned answers) is written once::

    [tool.fanout]
    app = "svc:app"
    delay_ms = 50
    [tool.fanout.upstreams.inventory]
    env = "INVENTORY_URL"
    routes = [{ method = "GET", path = "/stock/{sku}", json = { available = 2 } }]

and the pytest plugin, every `fanout` command and the Locust harness read it
(`--fanout-config FILE` names another TOML file). Their own options override
it, and are declared once, here: `OPTIONS`, which `add_options` adds to a
parser with each front end's prefix (`--fanout-delay-ms` for pytest and
Locust, `--delay-ms` for `fanout measure`), as pytest-benchmark does. Every
other option of every front end is in the same registry, in its group: the
regression gate's (pytest's `--fanout-fail-on`, `fanout compare --fail-on`),
the load harness's (Locust's reference users, thresholds, step shape, open
model), `fanout measure --waterfall`; pytest's ini keys come from the same
declarations (`add_inis`), and `value_of` reads a parsed value back. Every
value goes through the option's one parser, so names, syntax (`NAME=ENV`
everywhere, the ini's old `NAME ENV` still read), defaults and validation are
the same everywhere, and a bad value is one `SpecError` line naming the file,
the key and what was expected.

Nothing here imports a server, a web framework or Locust: the pytest entry
point reads the spec at start-up, in every run of every project.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pytest_fanout import limits
from pytest_fanout.limits import (
    BEHAVIOUR_KEYS,
    DEFAULT_APP,
    DEFAULT_DELAY_MS,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_ENV,
    ENV_NAME,
    HTTP_METHODS,
    MAX_UPSTREAMS,
    ROUTE_KEYS,
    STACK_SAMPLING_ENV,
    UPSTREAM_NAME,
    Behaviour,
    ConfigError,
    ExitCode,
    check_headers,
    expand_placeholders,
    fraction,
    parse_import_string,
    strict_json_loads,
)

_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")


class SpecError(ValueError):
    """A stack declaration that cannot be used; `str()` is one line: where, key, what."""


# ---- value parsers: raw (a flag's or an ini's string, or a TOML value) -> value ----------
# Each raises ValueError with a message that says what was expected; the caller says where.


def _limited(argtype: Callable[[str], float]) -> Callable[[Any], float]:
    """A parser from one of `limits`' argparse types (the one set of bounds): a TOML
    number or a flag's text in, a ValueError with its one-line reason out."""

    def parse(raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError(f"{raw!r} is not a number")
        try:
            return float(argtype(str(raw)))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None

    return parse


def parse_directory(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{raw!r} is not a directory path")
    return raw


def parse_switch(raw: Any) -> bool:
    """true/false (also on/off, yes/no, 1/0)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not true or false")


def parse_on_off(raw: Any) -> bool:
    """on/off (also true/false)."""
    try:
        return parse_switch(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not on or off") from None


def parse_upstream(raw: Any) -> tuple[str, str]:
    """NAME=ENV_VAR (the ini's old `NAME ENV_VAR` is still read)."""
    text = str(raw).strip() if isinstance(raw, str) else ""
    if "=" in text:
        name, _, env = text.partition("=")
        name, env = name.strip(), env.strip()
    else:
        parts = text.split()
        name, env = parts if len(parts) == 2 else ("", "")
    shape = f"{raw!r} is not NAME=ENVVAR like inventory=INVENTORY_URL"
    if not name or not env:
        raise ValueError(shape)
    try:
        check_upstream_name(name)
        check_env_name(env)
    except ValueError as exc:
        raise ValueError(f"{shape}: {exc}") from None
    return name, env


def check_upstream_name(name: str) -> str:
    if not isinstance(name, str) or not UPSTREAM_NAME.match(name):
        raise ValueError(f"{name!r} is not an upstream name (letters, digits, _ and -)")
    return name


def check_env_name(env: Any) -> str:
    if not isinstance(env, str) or not ENV_NAME.match(env):
        raise ValueError(f"{env!r} is not an environment variable name")
    return env


def parse_env_line(raw: Any) -> tuple[str, str]:
    """KEY=VALUE, one entry of the app's environment."""
    key, sep, value = str(raw).partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{raw!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def parse_route(raw: Any) -> dict[str, Any]:
    """`[UPSTREAM] METHOD PATH [JSON]`, a route given on a command line: e.g.
    `inventory GET /stock/{sku} {"available": 2}`; without UPSTREAM, the first upstream's."""
    text = str(raw).strip()
    upstream = None
    first, _, rest = text.partition(" ")
    if first and first.upper() not in HTTP_METHODS:
        upstream, text = first, rest.strip()
    words = text.split(None, 2)
    if len(words) < 2 or words[0].upper() not in HTTP_METHODS:
        raise ValueError(
            f"{raw!r} is not '[UPSTREAM] METHOD PATH [JSON]' like"
            " 'GET /stock/{sku} {\"available\": 2}'"
        )
    route: dict[str, Any] = {"method": words[0].upper(), "path": words[1]}
    if upstream is not None:
        check_upstream_name(upstream)
        route["upstream"] = upstream
    if len(words) == 3:
        route["json"] = strict_json_loads(words[2])
    check_route(route)
    return route


def check_route(route: Any) -> dict[str, Any]:
    """A route's shape (its values are checked by the stub when it is added)."""
    if not isinstance(route, dict):
        raise ValueError(f"{route!r} is not a table like {{ method = 'GET', path = '/x' }}")
    unknown = sorted(set(route) - set(ROUTE_KEYS) - {"upstream"})
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}: a route takes {', '.join(ROUTE_KEYS)}"
        )
    method, path = route.get("method"), route.get("path")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(HTTP_METHODS)}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path {path!r} must be a string starting with /")
    route["method"] = method.upper()
    if "headers" in route:
        check_headers(route["headers"])
    status = route.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"status {status!r} is not an HTTP status (100-599)")
    if "rate_limit" in route or "burst" in route:
        _route_rate(route.get("rate_limit"), route.get("burst"))
    return route


def _route_rate(rate_limit: Any, burst: Any) -> None:
    """A route's rate limit and burst, checked before anything starts (the stub's rule)."""
    if burst is not None:
        limits.Behaviour(rate_limit=rate_limit or "50/s").update({"burst": burst})
    limits.check_rate(rate_limit, burst)


def parse_rate_limit(raw: Any) -> str:
    """A rate limit, "50/s", "3000/min" or "100/h" (`limits.parse_rate`); "" for none."""
    text = str(raw).strip()
    if text:
        limits.parse_rate(text)
    return text


def parse_token(raw: Any) -> str:
    """A bearer token: printable, no whitespace (it goes into an HTTP header)."""
    text = str(raw)
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{raw!r} is not a token (printable characters, no spaces or newlines)")
    return text


# ---- the options: declared once, added by each front end with its prefix -----------------


#: The groups of options: the stack ([tool.fanout]), the regression gate, the load harness
#: (Locust, its thresholds, `fanout capacity`), what `fanout measure` shows.
GROUPS = ("stack", "gate", "load", "measure")


@dataclass(frozen=True)
class Option:
    """One option of any front end: its key (the flag's stem, and for the stack its key in
    [tool.fanout]), its one help text and its one parser; each front end names it with its
    own prefix (`--fanout-<key>` for pytest and Locust, `--<key>` for `fanout`)."""

    key: str
    help: str
    parse: Callable[[Any], Any]
    metavar: str | None = None
    #: A flag given once per value (`--upstream a=A --upstream b=B`), an ini linelist.
    repeat: bool = False
    #: A flag without a value (store_true).
    switch: bool = False
    #: The ini key, when it is not `fanout_<key>`; "" for none.
    ini: str | None = None
    #: Its value when nothing gives one (a `StackSpec` field's own default wins). Outside
    #: the stack group it is also the flag's default; `%(default)s` in `help` shows it.
    default: Any = None
    #: The front ends that take it: "pytest", "fanout" (the commands), "locust".
    front_ends: frozenset[str] = frozenset({"pytest", "fanout", "locust"})
    #: False: an option only (`config`, `upstream`, `route` have their own TOML shape).
    in_file: bool = True
    #: Which registrar adds it (GROUPS); only the "stack" group is read from [tool.fanout].
    group: str = "stack"
    #: The argparse dest when it is not `fanout_<key>` (Locust's web UI labels options with
    #: their dest, split at capitals and digits: words, not `n` or `p95`).
    dest_name: str | None = None
    choices: tuple[str, ...] | None = None
    #: Shown in Locust's web UI (Locust's include_in_web_ui).
    web_ui: bool = False
    #: A front end's other flag names for it, kept from before: front end -> flags.
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: pytest's ini type, when not "string" (or "linelist" for a repeatable one).
    ini_type: str | None = None

    @property
    def dest(self) -> str:
        return self.dest_name or "fanout_" + self.key

    @property
    def ini_name(self) -> str:
        return self.ini if self.ini is not None else "fanout_" + self.key

    def flag(self, prefix: str) -> str:
        return "--" + prefix + self.key.replace("_", "-")

    def help_text(self, default: Any = None) -> str:
        """The help, with `%(default)s` filled in here (Locust's web UI shows help raw)."""
        shown = self.default if default is None else default
        return self.help.replace("%(default)s", f"{shown:g}" if _is_number(shown) else str(shown))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _typed(argtype: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A parser from an argparse type of `load.limits` (the one set of bounds) that keeps
    its result's type: a ValueError with the one-line reason."""

    def parse(raw: Any) -> Any:
        try:
            return argtype(str(raw).strip())
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None

    parse.__name__ = getattr(argtype, "__name__", "value")
    return parse


def _text(raw: Any) -> str:
    """A string taken as given; its own module checks it (a gate rule, a path)."""
    return str(raw)


_DELAY = _limited(limits.delay_ms)

_PYTEST = frozenset({"pytest"})
_FANOUT = frozenset({"fanout"})
_LOCUST = frozenset({"locust"})
_GATE_FRONT_ENDS = frozenset({"pytest", "fanout"})
_REFERENCE = frozenset({"locust", "fanout"})


def _gate(
    key: str,
    help_text: str,
    front_ends: frozenset[str],
    parse: Callable[[Any], Any] = _text,
    **kwargs: Any,
) -> Option:
    """A regression-gate option: a flag only (not in [tool.fanout]), by default a string that
    the gate itself checks (`gate.GateConfig.from_options`)."""
    return Option(
        key, help_text, parse, group="gate", front_ends=front_ends, in_file=False, **kwargs
    )


def _gate_path(key: str, help_text: str, front_ends: frozenset[str]) -> Option:
    """A gate option naming a file (`PATH`): a flag only, no ini key (a file is one run's)."""
    return _gate(key, help_text, front_ends, metavar="PATH", ini="")


#: The regression gate's options: pytest's `--fanout-<key>` and `fanout compare`'s `--<key>`.
#: Their values are strings the gate itself checks (`gate.GateConfig.from_options`).
_GATE_OPTIONS = (
    _gate_path(
        "save",
        "write the session's measurements (every sample, statistics, upstream settings,"
        " machine and git context) and Locust results (one case per endpoint and one for the"
        " total, with the response-time histogram) as versioned JSON to PATH",
        _PYTEST,
    ),
    _gate(
        "save_failed",
        "with --fanout-save: replace an existing file even when tests failed or no case was"
        " measured (by default such a session keeps the old baseline)",
        _PYTEST,
        parse_switch,
        switch=True,
        default=False,
        ini="",
    ),
    _gate_path(
        "compare",
        "compare the session with the baseline saved at PATH, case by case"
        " (test node id + path), and print the gate's verdicts",
        _PYTEST,
    ),
    _gate(
        "fail_on",
        "what fails the run when the comparison finds it beyond the noise: comma-separated"
        " METRIC-N%%/METRIC+N%% (or ms/s, a plain count, or Nabs on a ratio) rules over median,"
        " p95, first-byte (streamed answers), cpu (same machine only), structure, orphaned,"
        " after_disconnect (exact, where measured), efficiency,"
        " overhead, speedup (measurements) and load-p95, rps, completed, fail-ratio (Locust"
        " rows), e.g. median+10%%,structure+0,load-p95+25%%; 'none' reports only (default:"
        " the gate's rules, docs 'Gating pull requests')",
        _GATE_FRONT_ENDS,
        metavar="RULES",
    ),
    _gate(
        "alpha",
        "significance level of the one-sided Mann-Whitney test that a change must pass to"
        " count (default: the gate's, 0.01)",
        _GATE_FRONT_ENDS,
        metavar="P",
    ),
    _gate(
        "allow_ungated",
        "pass when no case was gated (a renamed suite, a baseline from another machine and"
        f" no portable metric); by default that fails with exit status {ExitCode.NOT_GATED:d}",
        _GATE_FRONT_ENDS,
        parse_switch,
        switch=True,
        default=False,
        ini_type="bool",
    ),
    _gate_path(
        "report_md",
        "write a Markdown report (verdict table, or the measurements without a baseline)"
        " to PATH, for a pull-request comment or $GITHUB_STEP_SUMMARY",
        _GATE_FRONT_ENDS,
    ),
    _gate_path(
        "report_json",
        "also write the comparison (every metric, p-value, interval) as JSON to PATH",
        _FANOUT,
    ),
    _gate(
        "ab",
        "A/B in one run: also start the app at git REF (a temporary worktree, removed"
        " afterwards) on the same upstream, alternate every fanout.measure sample between the"
        " working tree (head) and REF (base), and compare head against base",
        _PYTEST,
        metavar="REF",
    ),
)


def _load(key: str, help_text: str, argtype: Callable[[str], Any], **kwargs: Any) -> Option:
    """A load-harness option: Locust's `--fanout-<key>` (not in [tool.fanout])."""
    kwargs.setdefault("front_ends", _LOCUST)
    return Option(key, help_text, _typed(argtype), group="load", in_file=False, **kwargs)


def _reference(key: str, help_text: str, default: int, dest_name: str) -> Option:
    """A count the reference app's routes take: Locust's (in its web UI, under `dest_name`)
    and `fanout patterns`/`capacity`'s."""
    return _load(
        key,
        help_text,
        limits.calls,
        default=default,
        metavar=key.upper(),
        dest_name=dest_name,
        web_ui=True,
        front_ends=_REFERENCE,
    )


#: The load harness's options: Locust's reference users, thresholds, step shape, open
#: model, abort; `n` and `max_concurrent` are also `fanout patterns`/`capacity`'s.
_LOAD_OPTIONS = (
    _reference(
        "n",
        "upstream calls per request of the reference app's routes (default: %(default)s)",
        10,
        "fanout_calls",
    ),
    _reference(
        "max_concurrent",
        "the semaphore's bound of the async_sem route (AsyncSemUser) (default: %(default)s)",
        5,
        "fanout_semaphore",
    ),
    _load(
        "max_fail_ratio",
        "fail the run (exit 3) when an endpoint or the total fails more often than this"
        " ratio, 0 to 1; empty: not checked",
        fraction,
        dest_name="fanout_max_failure_ratio",
        web_ui=True,
    ),
    _load(
        "max_p95_ms",
        "fail the run (exit 3) when an endpoint's or the total's p95 response time is above"
        " this many milliseconds; empty: not checked",
        limits.delay_ms,
        dest_name="fanout_max_latency_ms",
        web_ui=True,
    ),
    _load(
        "min_rps",
        "fail the run (exit 3) when an endpoint or the total makes fewer requests per"
        " second; empty: not checked",
        limits.threshold_rate,
        dest_name="fanout_min_throughput",
        web_ui=True,
    ),
    _load(
        "min_completed",
        "fail the run (exit 3) when an endpoint or the total completed fewer requests"
        " without failure (default 1: zero is never a pass)",
        limits.threshold_count,
        web_ui=True,
    ),
    _load(
        "max_dropped_ratio",
        "open model: fail (exit 3) if more of the scheduled starts were dropped",
        fraction,
    ),
    _load(
        "shape",
        "load shape: 'step' adds --fanout-step-users every --fanout-step-s up to --users"
        " (default: %(default)s)",
        str,
        default="none",
        choices=("none", "step"),
    ),
    _load("step_users", "users added per step (default: %(default)s)", limits.users, default=5),
    _load("step_s", "seconds per step (default: %(default)s)", limits.whole_seconds, default=5),
    _load(
        "arrival_rate",
        "open model: start R requests (tasks) per second for the whole run, over all"
        " workers; --users is the pool that may be in flight at once (default: closed model)",
        limits.rate_rps,
    ),
    _load(
        "arrivals",
        "open model: evenly spaced starts, or a Poisson process (default: %(default)s)",
        str,
        default="constant",
        choices=("constant", "poisson"),
    ),
    _load(
        "start_grace_ms",
        "open model: how long a start may wait for a free user before it is dropped;"
        " 0 = k6's rule, drop at once (default: %(default)s)",
        limits.grace_ms,
        default=1000.0,
    ),
    Option(
        "abort_on_fail",
        "end the run (exit 3) as soon as --fanout-max-fail-ratio or"
        " --fanout-max-dropped-ratio is exceeded after --fanout-abort-after requests",
        parse_switch,
        switch=True,
        default=False,
        group="load",
        front_ends=_LOCUST,
        in_file=False,
    ),
    _load(
        "abort_after",
        "requests (or scheduled starts) before --fanout-abort-on-fail may act"
        " (default: %(default)s)",
        limits.threshold_count,
        default=100,
    ),
    _load(
        "capacity_path",
        "the path every request GETs (default: %(default)s)",
        str,
        default="/",
    ),
)

#: Every option, in help order. Adding one is one entry here: pytest gets
#: `--fanout-<key>` and the ini key `fanout_<key>`, Locust `--fanout-<key>`, the
#: `fanout` commands `--<key>` (those in `front_ends`), [tool.fanout] the key (the
#: "stack" group only); a stack option's value is `spec.get("<key>")` (or the StackSpec
#: field of that name), another's `value_of(namespace, "<key>")` or pytest's getoption.
OPTIONS: dict[str, Option] = {
    option.key: option
    for option in (
        Option(
            "config",
            "a TOML file with a [tool.fanout] table (default: the nearest pyproject.toml"
            " that has one)",
            parse_directory,
            metavar="FILE",
            ini="",
            in_file=False,
            aliases={"fanout": ("--fanout-config",)},
        ),
        Option(
            "app",
            "import string of the app under test (ASGI, WSGI or aiohttp), MODULE:ATTR"
            f" (default: {DEFAULT_APP}, the reference app)",
            parse_import_string,
            metavar="MODULE:ATTR",
        ),
        Option(
            "app_dir",
            "directory the app and stub handlers are imported from (default: the config"
            " file's directory, else the rootdir or the current directory)",
            parse_directory,
            metavar="DIR",
        ),
        Option(
            "app_factory",
            "the import string names a factory to call for the app",
            parse_switch,
            switch=True,
        ),
        Option(
            "app_env",
            "KEY=VALUE for the app's environment (repeatable); {upstream_url:NAME} is that"
            " upstream's URL",
            parse_env_line,
            metavar="KEY=VALUE",
            repeat=True,
        ),
        Option(
            "upstream",
            "a stub upstream whose URL the app reads from ENVVAR (repeatable; default: one,"
            f" in {DEFAULT_UPSTREAM_ENV})",
            parse_upstream,
            metavar="NAME=ENVVAR",
            repeat=True,
            ini="fanout_upstreams",
            in_file=False,
        ),
        Option(
            "route",
            "a canned answer: '[UPSTREAM] METHOD PATH [JSON]' (repeatable; default"
            " upstream: the first)",
            parse_route,
            metavar="ROUTE",
            repeat=True,
            ini="",
            in_file=False,
        ),
        Option(
            "delay_ms",
            f"the stub upstreams' delay in ms (default: {DEFAULT_DELAY_MS:g})",
            _DELAY,
            metavar="MS",
            aliases={"locust": ("--fanout-upstream-delay-ms",)},
        ),
        Option(
            "rate_limit",
            "the stub upstreams' rate limit, like 50/s, 3000/min or 100/h: calls past it are"
            " answered 429 at once, with Retry-After (default: none; an upstream's or route's"
            " own rate_limit wins)",
            parse_rate_limit,
            metavar="N/s",
        ),
        Option(
            "burst",
            "calls a rate-limited stub takes at once (its token bucket; default: the limit's"
            " count over one second, at least 1)",
            _typed(limits.bounded(limits.non_negative_int, limits.MAX_BURST)),
            metavar="N",
        ),
        Option(
            "startup_timeout",
            f"seconds each server process may take to answer (default:"
            f" {DEFAULT_STARTUP_TIMEOUT_S:g})",
            _limited(limits.duration_s),
            metavar="S",
        ),
        Option(
            "request_timeout",
            f"seconds one request to the app may take (default: {DEFAULT_REQUEST_TIMEOUT_S:g})",
            _limited(limits.duration_s),
            metavar="S",
            front_ends=frozenset({"pytest", "fanout"}),  # Locust times its own requests
            aliases={"fanout": ("--timeout",)},
        ),
        Option(
            "max_answer_bytes",
            "bytes of one answer's body (as sent, and once decoded) the harness reads from the"
            f" app (default: {limits.DEFAULT_MAX_ANSWER_BYTES:,}, 64 MiB); a longer one fails"
            " in one line",
            _typed(limits.answer_bytes),
            metavar="BYTES",
            default=limits.DEFAULT_MAX_ANSWER_BYTES,
            front_ends=frozenset({"pytest", "fanout"}),  # Locust reads its own answers
        ),
        Option(
            "stack_sampling",
            "on/off: sample the stack that blocks the app's event loop (default: on)",
            parse_on_off,
            metavar="on|off",
        ),
        *_GATE_OPTIONS,
        *_LOAD_OPTIONS,
        Option(
            "disconnect_after",
            "hang up S seconds after sending each request and count the upstream calls still"
            " running 0.1 s later, or begun after (work for a caller who left)",
            limits.disconnect_s,
            metavar="S",
            group="measure",
            front_ends=_FANOUT,
        ),
        Option(
            "ideal_s",
            "the path's ideal time in seconds (what it would take with no overhead), for the"
            " efficiency when --n and --concurrency cannot say it (measure(ideal_s=))",
            _typed(limits.bounded(limits.positive_float, limits.MAX_DURATION_S, " s")),
            metavar="S",
            group="measure",
            front_ends=_FANOUT,
        ),
        Option(
            "repeat",
            "timed requests; the median and p95 are over these (default: %(default)s)",
            _typed(limits.repeats),
            metavar="N",
            default=5,
            group="measure",
            front_ends=_FANOUT,
        ),
        Option(
            "waterfall",
            "also print the median request's upstream calls on a time axis and save them to"
            " FILE (.svg, .png, .txt, .mmd, .md or .json)",
            _text,
            metavar="FILE",
            group="measure",
            front_ends=_FANOUT,
        ),
    )
}


# ---- a value that starts with a dash: "--fanout-rate-limit -1/s" ---------------------------
# argparse takes a word that starts with a dash and is no plain number ("-1/s", "-5ms",
# "-1e-3") for an option, and says "argument --rate-limit: expected one argument" of a flag
# that was given one. Every front end joins such a word to OUR flag before it ("--rate-limit=
# -1/s", which argparse reads as the value), so the value reaches the option's own check
# and its one line. A dash and a digit starts no option of anyone's; "--" ends the options.

#: A word that is a value, never an option: a dash, then a digit (or a dot and a digit).
DASH_VALUE = re.compile(r"-\.?\d")


def value_flags(prefix: str, front_end: str) -> frozenset[str]:
    """Every flag of `front_end` that takes a value (no switch), with `prefix`, and its own
    old names: the flags whose dash-led value `join_dash_values` joins."""
    flags: set[str] = set()
    for option in OPTIONS.values():
        if front_end in option.front_ends and not option.switch:
            flags.add(option.flag(prefix))
            flags.update(option.aliases.get(front_end, ()))
    return frozenset(flags)


def join_dash_values(args: Sequence[str], flags: Container[str] | None) -> list[str]:
    """`args` with each `FLAG VALUE` whose VALUE starts with a dash and a digit (DASH_VALUE)
    written `FLAG=VALUE`, for the long flags in `flags` (None: every long flag, for a parser
    whose options are all ours). Nothing else changes; nothing after "--" (positionals)."""
    out: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            out += args[index:]
            break
        following = args[index + 1] if index + 1 < len(args) else ""
        ours = word.startswith("--") and "=" not in word and (flags is None or word in flags)
        if ours and DASH_VALUE.match(following):
            out.append(f"{word}={following}")
            index += 2
        else:
            out.append(word)
            index += 1
    return out


#: What pytest stores for a flag of ours given without a value, when it was read before
#: its arguments were joined (see `_PytestValue`); `missing_value` names it.
MISSING = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def missing_value(value: Any) -> bool:
    """True when a flag of ours came without its value (`MISSING`, alone or in a list)."""
    if isinstance(value, list | tuple):
        return any(item is MISSING for item in value)
    return value is MISSING


class _EarlyParse:
    """Whether pytest may still parse its arguments before they are joined."""

    def __init__(self) -> None:
        self.open = True


#: The registrations of pytest flags whose early parse is not over yet (`end_early_parse`).
_EARLY: list[_EarlyParse] = []


def end_early_parse() -> None:
    """pytest's arguments are joined (`join_dash_values`, in the plugin's
    `pytest_load_initial_conftests`): the flags of ours registered so far take exactly one
    value again (argparse's own "expected one argument" for one given none; --help
    shows `--fanout-delay-ms=MS`)."""
    for early in _EARLY:
        early.open = False
    _EARLY.clear()


def _pytest_action(early: _EarlyParse, *, repeat: bool) -> type[argparse.Action]:
    """The argparse action of a pytest flag of ours that takes a value (`store`, or `append`
    when `repeat`). pytest parses its arguments once with the plugins' flags known before any
    plugin hook may see (and join) them (`Config._preparse`, for
    `pytest_load_initial_conftests`' early config); there a dash-led value made argparse fail
    with "expected one argument". Until `end_early_parse`, the flag's value is optional (a
    dash-led word is left for later, the value read is thrown away with that parse); after,
    it is one value, as declared."""

    class Value(argparse.Action):
        @property  # type: ignore[override]
        def nargs(self) -> str | None:
            return "?" if early.open else None

        @nargs.setter
        def nargs(self, _value: Any) -> None:  # argparse.Action.__init__ sets it
            pass

        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            if repeat:
                values = [*(getattr(namespace, self.dest, None) or []), values]
            setattr(namespace, self.dest, values)

    return Value


def _argparse_type(parse: Callable[[Any], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # argparse names the type in some messages
    return convert


def add_options(
    add: Callable[..., Any],
    *,
    prefix: str,
    group: str = "stack",
    front_end: str | None = None,
    keys: Iterable[str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    typed: bool = True,
    **extra: Any,
) -> None:
    """Add the options of `group` that `front_end` takes (or `keys`) through `add`
    (argparse's `add_argument`, pytest's `addoption`, Locust's parser), named
    `--{prefix}{key}` plus the option's own old names for `front_end` and `aliases`.
    `typed`: parse each value as it is read (argparse front ends); pytest parses after
    the ini. A stack option's default is None (a flag left out does not override the
    spec); another's is the option's default, or `defaults[key]` for this front end.
    pytest's flags that take a value get `_pytest_action` (a dash-led value apart)."""
    if keys is None:
        keys = [
            key
            for key, option in OPTIONS.items()
            if option.group == group and (front_end is None or front_end in option.front_ends)
        ]
    early = _EarlyParse() if front_end == "pytest" else None
    if early is not None:
        _EARLY.append(early)
    for key in keys:
        option = OPTIONS[key]
        names = [option.flag(prefix)]
        names += option.aliases.get(front_end or "", ())
        names += (aliases or {}).get(key, ())
        default = None if option.group == "stack" else option.default
        default = (defaults or {}).get(key, default)
        kwargs: dict[str, Any] = dict(dest=option.dest, default=default, **extra)
        kwargs["help"] = option.help_text(default)
        if front_end == "locust":
            kwargs.setdefault("include_in_web_ui", option.web_ui)
        if option.switch:
            kwargs["action"] = "store_true"
        else:
            if early is not None:  # pytest: a dash-led value may come apart (see above)
                kwargs["action"] = _pytest_action(early, repeat=option.repeat)
                kwargs["const"] = MISSING
            else:
                kwargs["action"] = "append" if option.repeat else "store"
            kwargs["metavar"] = option.metavar
            if option.choices:
                kwargs["choices"] = option.choices
            if typed:
                kwargs["type"] = _argparse_type(option.parse)
        add(*names, **kwargs)


def value_of(namespace: Any, key: str) -> Any:
    """An option's value in a parsed namespace (argparse's, Locust's `parsed_options`):
    text (Locust's web UI sends text) goes through the option's one parser; absent or
    empty, or no namespace at all (Locust as a library), it is the option's default."""
    option = OPTIONS[key]
    value = getattr(namespace, option.dest, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return option.default
    return option.parse(value) if isinstance(value, str) else value


def add_stack_options(add: Callable[..., Any], *, prefix: str, **kwargs: Any) -> None:
    """The stack options (`add_options` of the "stack" group), as pytest-benchmark adds its
    own: every front end through this one registrar, with its prefix."""
    add_options(add, prefix=prefix, group="stack", **kwargs)


def add_inis(addini: Callable[..., Any], *, group: str) -> None:
    """pytest's ini keys of `group`'s options (pytest's `parser.addini`), from the same
    declarations as the flags: an ini value is the default of its flag."""
    for key in options_for("pytest", group):
        option = OPTIONS[key]
        if not option.ini_name:
            continue
        kind = option.ini_type or ("linelist" if option.repeat else "string")
        help_text = option.help_text()
        if option.key == "upstream":
            help_text = "NAME=ENV_VAR lines (or the old 'NAME ENV_VAR'): " + help_text
        default = option.default if option.ini_type == "bool" else None
        addini(option.ini_name, help_text, type=kind, default=default)


# ---- the spec ------------------------------------------------------------------------------


@dataclass
class UpstreamSpec:
    """One named upstream: the app's variable for its URL, its behaviour, its routes."""

    name: str
    env: str
    #: Behaviour settings of this upstream (over the stack's `delay_ms`).
    behaviour: dict[str, Any] = field(default_factory=dict)
    #: `route(...)` keyword arguments, each with "where" (for messages) popped before use.
    routes: list[dict[str, Any]] = field(default_factory=list)
    where: str = ""


@dataclass
class StackSpec:
    """The whole stack: what every front end turns its input into."""

    app: str = DEFAULT_APP
    app_dir: str | None = None
    app_factory: bool = False
    app_env: dict[str, str] = field(default_factory=dict)
    delay_ms: float = DEFAULT_DELAY_MS
    #: Every stub's rate limit and burst ("" / 0: none), under an upstream's own.
    rate_limit: str = ""
    burst: int = 0
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    stack_sampling: bool = True
    upstreams: dict[str, UpstreamSpec] = field(default_factory=dict)
    #: The file the spec came from (None: defaults and options only).
    source: Path | None = None
    #: Where each `app_env` entry was given (a file's key, a flag, an ini key).
    app_env_where: dict[str, str] = field(default_factory=dict)
    #: The values of options without a field of their own (`get`).
    settings: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        """An option's value: given (file or option), else the option's default."""
        if key in self.settings:
            return self.settings[key]
        if hasattr(self, key) and key in OPTIONS:
            return getattr(self, key)
        return OPTIONS[key].default

    def upstream_env_names(self) -> dict[str, str]:
        """name -> the app's environment variable, in order (the default one if none)."""
        if not self.upstreams:
            return {DEFAULT_UPSTREAM: DEFAULT_UPSTREAM_ENV}
        return {name: up.env for name, up in self.upstreams.items()}

    def behaviours(self) -> dict[str, Behaviour]:
        """Each upstream's Behaviour: the stack's delay, then its own settings (checked)."""
        result = {}
        if self.burst and not self.rate_limit:
            raise SpecError(f"burst={self.burst} needs a rate_limit (the rate it refills at)")
        for name in self.upstream_env_names():
            behaviour = Behaviour(delay_ms=self.delay_ms)
            upstream = self.upstreams.get(name)
            if self.rate_limit and not (upstream and "rate_limit" in upstream.behaviour):
                try:
                    behaviour.update({"rate_limit": self.rate_limit, "burst": self.burst})
                except ConfigError as exc:
                    raise SpecError(f"rate_limit: {exc}") from None
            if upstream is not None and upstream.behaviour:
                try:
                    behaviour.update(dict(upstream.behaviour))
                except ConfigError as exc:
                    raise SpecError(f"{upstream.where}: {exc}") from None
            result[name] = behaviour
        return result

    def routes(self) -> dict[str, list[dict[str, Any]]]:
        """name -> its routes, as `route(...)` keyword arguments plus "where"."""
        return {name: list(up.routes) for name, up in self.upstreams.items() if up.routes}

    def app_env_entries(self) -> dict[str, str]:
        """`app_env` as given (placeholders not expanded), with the stack sampler's switch."""
        env = dict(self.app_env)
        if not self.stack_sampling:
            env[STACK_SAMPLING_ENV] = "0"
        return env

    def app_environment(self, urls: Mapping[str, str] | None = None) -> dict[str, str]:
        """`app_env_entries()` with placeholders expanded (checked with dummy URLs when
        None); the upstream URLs themselves are the Stack's to add."""
        if urls is None:
            urls = {name: f"http://127.0.0.1:0/{name}" for name in self.upstream_env_names()}
        env = {}
        for key, value in self.app_env_entries().items():
            where = self.app_env_where.get(key, "app_env")
            if not key or "=" in key or "\0" in key:
                raise SpecError(f"{where}: {key!r} is not an environment variable name")
            if "\0" in value:
                raise SpecError(f"{where}: the value of {key} holds a NUL byte")
            try:
                env[key] = expand_placeholders(value, urls)
            except ValueError as exc:
                raise SpecError(f"{where}: '{key}={value}': {exc}") from None
        return env

    def check(self) -> StackSpec:
        """What can be checked without starting anything: placeholders, behaviours."""
        self.app_environment()
        if self.rate_limit or self.burst or any(up.behaviour for up in self.upstreams.values()):
            self.behaviours()
        return self


# ---- reading [tool.fanout] -------------------------------------------------------------------


def find_config(start: str | os.PathLike[str]) -> Path | None:
    """The nearest pyproject.toml with a [tool.fanout] table, from `start` upwards (as
    pytest looks for its ini file); None when there is none. The nearest pyproject.toml
    must parse (it may hold the stack: running without it would be a silent surprise);
    one further up that does not is another project's, and is passed over."""
    import tomllib

    here = Path(start).resolve()
    nearest = True
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            if nearest:
                raise SpecError(f"{_shown(candidate)}: is not valid TOML: {exc}") from None
            continue
        finally:
            nearest = False
        if "fanout" in data.get("tool", {}):
            return candidate
    return None


def read_config(path: str | os.PathLike[str]) -> StackSpec:
    """The StackSpec of a TOML file's [tool.fanout] table (an empty one: the defaults)."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{_shown(path)}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{_shown(path)}: cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{_shown(path)}: is not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("fanout", {})
    shown = _shown(path)
    if not isinstance(table, dict):
        raise SpecError(f"{shown}: tool.fanout must be a table")
    spec = StackSpec(source=path)
    _read_table(spec, table, path, shown)
    return spec


def _shown(path: Path) -> str:
    """`path` as a message shows it: relative to the current directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _file_keys() -> tuple[str, ...]:
    """The keys [tool.fanout] may hold: every option's that is `in_file`, and the upstreams."""
    stack = (key for key, option in OPTIONS.items() if option.in_file and option.group == "stack")
    return (*stack, "upstreams")


def _read_table(spec: StackSpec, table: dict[str, Any], path: Path, shown: str) -> None:
    where = f"{shown}: tool.fanout"
    known = _file_keys()
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key == "upstreams":
            continue
        if key == "app_env":
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise SpecError(f"{where}.app_env: expected a table of strings, got {raw!r}")
            values[key] = [(str(k), v) for k, v in raw.items()]
            continue
        values[key] = _parse(OPTIONS[key], raw, f"{where}.{key}")
    _apply(spec, values, {"app_env": f"{where}.app_env"}, path.parent)
    if spec.app_dir is None:
        spec.app_dir = str(path.parent)
    upstreams = table.get("upstreams", {})
    if not isinstance(upstreams, dict):
        raise SpecError(f"{where}.upstreams: expected a table of upstreams, got {upstreams!r}")
    for name, body in upstreams.items():
        spec.upstreams[name] = _read_upstream(name, body, f"{where}.upstreams.{name}")
    _check_distinct(spec, where)


def _read_upstream(name: str, body: Any, where: str) -> UpstreamSpec:
    try:
        check_upstream_name(name)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None
    if not isinstance(body, dict):
        raise SpecError(f'{where}: expected a table with env = "ENV_VAR", got {body!r}')
    known = ("env", "routes", *BEHAVIOUR_KEYS)
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    if "env" not in body:
        raise SpecError(f"{where}: env is missing: the variable the app reads this URL from")
    try:
        env = check_env_name(body["env"])
    except ValueError as exc:
        raise SpecError(f"{where}.env: {exc}") from None
    behaviour = {k: v for k, v in body.items() if k in BEHAVIOUR_KEYS}
    for key, value in behaviour.items():
        if key == "rate_limit":  # text, checked by Behaviour ("50/s")
            if not isinstance(value, str):
                raise SpecError(f"{where}.{key}: expected a rate like '50/s', got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where}.{key}: expected a number, got {value!r}")
    routes = body.get("routes", [])
    if not isinstance(routes, list):
        raise SpecError(f"{where}.routes: expected a list of route tables, got {routes!r}")
    checked = []
    for index, route in enumerate(routes):
        place = f"{where}.routes[{index}]"
        try:
            route = check_route(dict(route) if isinstance(route, dict) else route)
        except ValueError as exc:
            raise SpecError(f"{place}: {exc}") from None
        if "upstream" in route:
            raise SpecError(f"{place}: unknown key(s) upstream (the table names the upstream)")
        checked.append({**route, "where": place})
    return UpstreamSpec(name, env, behaviour, checked, where)


def _parse(option: Option, raw: Any, where: str) -> Any:
    try:
        return option.parse(raw)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None


_FIELDS = frozenset(f.name for f in fields(StackSpec))


def _apply(
    spec: StackSpec, values: Mapping[str, Any], where: Mapping[str, str], base: Path | None
) -> None:
    """Set the parsed `values` (option key -> value; None: not given) on `spec`; relative
    directories are taken from `base`."""
    for key, value in values.items():
        if value is None or key in ("config", "upstream", "route"):
            continue
        if key == "app_dir":
            directory = Path(value).expanduser()
            if not directory.is_absolute() and base is not None:
                directory = base / directory
            spec.app_dir = str(directory)
        elif key == "app_env":
            for name, text in value:
                spec.app_env[name] = text
                spec.app_env_where[name] = where.get(key, key)
        elif key in _FIELDS:
            setattr(spec, key, value)
        else:
            spec.settings[key] = value


def options_for(front_end: str, group: str = "stack") -> list[str]:
    """The keys of `group`'s options that `front_end` ("pytest", "fanout", "locust") takes."""
    return [
        key
        for key, option in OPTIONS.items()
        if front_end in option.front_ends and option.group == group
    ]


def _check_distinct(spec: StackSpec, where: str) -> None:
    """Each upstream has a variable of its own, and there are not more than a machine runs."""
    if len(spec.upstreams) > MAX_UPSTREAMS:
        raise SpecError(
            f"{where}: {len(spec.upstreams)} upstreams are above the limit of {MAX_UPSTREAMS}"
            " (each is a process of its own)"
        )
    seen: dict[str, str] = {}
    for name, upstream in spec.upstreams.items():
        if upstream.env in seen:
            raise SpecError(
                f"{where}: {upstream.env} is given to two upstreams ({seen[upstream.env]} and"
                f" {name})"
            )
        seen[upstream.env] = name


def parse_values(raw: Mapping[str, Any], where: Mapping[str, str]) -> dict[str, Any]:
    """Parse a front end's raw strings (option key -> a string, a list for a repeatable
    one, or None), each error one line naming where it came from."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None or value == []:
            continue
        option = OPTIONS[key]
        if option.repeat:
            items = value if isinstance(value, list | tuple) else [value]
            values[key] = [_parse(option, item, where.get(key, key)) for item in items]
        else:
            values[key] = _parse(option, value, where.get(key, key))
    return values


def resolve(
    values: Mapping[str, Any],
    *,
    start: str | os.PathLike[str],
    where: Mapping[str, str] | None = None,
    base: str | os.PathLike[str] | None = None,
) -> StackSpec:
    """The spec of [tool.fanout] (the `config` value's file, or the nearest pyproject.toml
    from `start`) with a front end's parsed `values` on top (option key -> value; None or
    [] for not given). `where` names each key's origin for messages (a flag, an ini key);
    `base` is the directory relative option values are taken from (default: `start`)."""
    where = dict(where or {})
    config = values.get("config")
    if config:
        path = Path(config).expanduser()
        if not path.is_absolute():
            path = Path(base or start) / path
        spec = read_config(path)
    else:
        found = find_config(start)
        spec = read_config(found) if found is not None else StackSpec()
    _apply(spec, values, where, Path(base or start))
    given = values.get("upstream") or []
    if given:
        _override_upstreams(spec, given, where.get("upstream", "upstream"))
    for route in values.get("route") or []:
        _add_route(spec, dict(route), where.get("route", "route"))
    return spec.check()


def _override_upstreams(spec: StackSpec, given: Iterable[tuple[str, str]], where: str) -> None:
    """Upstreams given as options replace the declared set (each keeps its declared
    behaviour and routes when the file names it too)."""
    chosen: dict[str, UpstreamSpec] = {}
    for name, env in given:
        if name in chosen:
            raise SpecError(f"{where}: upstream {name!r} is named twice")
        declared = spec.upstreams.get(name)
        if declared is None:
            chosen[name] = UpstreamSpec(name, env, where=where)
        else:
            chosen[name] = replace(declared, env=env)
    spec.upstreams = chosen
    _check_distinct(spec, where)


def _add_route(spec: StackSpec, route: dict[str, Any], where: str) -> None:
    names = list(spec.upstream_env_names())
    name = route.pop("upstream", None) or names[0]
    if name not in names:
        raise SpecError(f"{where}: no upstream named {name!r} (the upstreams: {', '.join(names)})")
    if name not in spec.upstreams:
        spec.upstreams[name] = UpstreamSpec(name, DEFAULT_UPSTREAM_ENV, where=where)
    routes = spec.upstreams[name].routes
    key = (route["method"], route["path"])
    routes[:] = [r for r in routes if (r["method"], r["path"]) != key]
    routes.append({**route, "where": where})
