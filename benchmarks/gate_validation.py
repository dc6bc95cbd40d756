"""Does the regression gate cry wolf, and does it catch a real slowdown? Rerun it to see.

Each round runs the performance suite (benchmarks/perf) three times, as a
pull request's CI would, each run a fresh pytest process with its own app and
upstream processes:

1. a baseline of the unchanged app (`--fanout-save`);
2. an A/A run: the unchanged app again, compared with that baseline;
3. a slowdown run: the app with FANOUT_CALL_OVERHEAD_MS=2 (2 ms of CPU burnt
   per upstream call), compared with the same baseline.

Runs 2 and 3 alternate their order between rounds, so a machine that gets
busier over time does not favour one of them. The gate must pass every A/A
run (exit 0: no false alarm) and fail every slowdown run (exit 1 with a
REGRESSION line) while every test itself passes.

    .venv/bin/python benchmarks/gate_validation.py            # 10 rounds, ~10 minutes
    .venv/bin/python benchmarks/gate_validation.py --rounds 3 --fail-on "efficiency-15%"

With `--ab`, every run is ONE pytest session in A/B mode (`--fanout-ab`): the
script clones this repository's HEAD into a temporary directory and commits
two real slowdowns there, each a one-line change of the app's default per-call
cost (`call_overhead_ms` in app/settings.py): 20 microseconds of CPU per
upstream call, and 2 ms. Each round runs, in rotating order, an A/A session
(HEAD measured against itself), the 20 us commit against HEAD and the 2 ms
commit against HEAD, on the suite's async cases (`AB_SELECT`; the 2 ms
commit on `AB_SELECT_2MS`). The gate must
pass every A/A session and fail both slowdown sessions, every test passing.

    .venv/bin/python benchmarks/gate_validation.py --ab    # 10 rounds, 30 sessions, ~8 min

With `--latency` (issue 21: the gate gates what users measure, with the
DEFAULT rules), each round runs, for the reference app's `/async/20` AND for
a service of our own measured without `n` (tests/e2e/gate_quote_app: two
upstreams, a POST with a JSON body), on real one-line commits in a clone:

1. A/A: HEAD against itself with `--fanout-ab` (must pass: exit 0);
2. +20% median: a commit adding 20% of the path's median as awaited work,
   `--fanout-ab=HEAD` (must fail: exit 1);
3. 2x: a commit doubling the median, against a baseline saved at HEAD on
   this machine (`--fanout-compare`, must fail);
4. gather made sequential: against the same baseline with its machine
   fingerprint rewritten to another machine's (latency is then not gated:
   only a portable metric can catch it; must fail, not exit 6).

    .venv/bin/python benchmarks/gate_validation.py --latency            # 10 rounds
    .venv/bin/python benchmarks/gate_validation.py --latency --rounds 1 # smoke

With `--cpu` (issue 31 item 4: the A/B gate takes the samples its cpu rule needs
itself), each round runs two A/B sessions of the shelf service
(tests/e2e/gate_cpu_app: a gather of 24 calls and 31 calls behind a Semaphore(5),
each test `repeat=10`, default rules) in a clone: an A/A session (HEAD against
itself, must pass) and a real one-line commit adding 40 microseconds of CPU after
every upstream call (must fail on cpu). The cpu rule needs 20 samples a side: the
gate takes at least the other 10 itself, on fresh app processes, and more while the
noise hides a 5% change (up to its bound).

    .venv/bin/python benchmarks/gate_validation.py --cpu            # 10 rounds
    .venv/bin/python benchmarks/gate_validation.py --cpu --rounds 1 # smoke

Exit status: 0 when there was no false alarm and every slowdown was caught.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "benchmarks" / "perf"
sys.path.insert(0, str(REPO))

from pytest_fanout.artifacts import render_markdown, render_text  # noqa: E402


@dataclass
class GateRun:
    """One pytest session of the suite compared with a baseline."""

    kind: str
    exit_code: int
    tests: str
    comparison: dict[str, Any] = field(default_factory=dict)
    regression_lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def regressed(self) -> list[str]:
        return [c["id"] for c in self.comparison.get("cases", []) if c["verdict"] == "regression"]

    @property
    def tests_passed(self) -> bool:
        return bool(re.search(r"\d+ passed", self.tests)) and "failed" not in self.tests


def run_suite(
    out: Path,
    name: str,
    *,
    slowdown_ms: float,
    baseline: Path | None,
    extra: list[str],
    suite: Path = SUITE,
    cwd: Path = REPO,
    kind: str | None = None,
) -> GateRun:
    """One session of the perf suite in a fresh process; the gate's verdict from its JSON."""
    env = dict(os.environ)
    env.pop("FANOUT_CALL_OVERHEAD_MS", None)
    if slowdown_ms:
        env["FANOUT_CALL_OVERHEAD_MS"] = f"{slowdown_ms:g}"
    saved = out / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--fanout-save={saved}",
        *extra,
    ]
    if baseline is not None:
        command.append(f"--fanout-compare={baseline}")
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    seconds = time.perf_counter() - start
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    tests = next(
        (line.strip("= ") for line in reversed(done.stdout.splitlines()) if " in " in line),
        "?",
    )
    if not saved.exists():
        raise SystemExit(
            f"gate_validation: {name} saved nothing (exit {done.returncode}); "
            f"see {out / (name + '.log')}"
        )
    comparison = json.loads(saved.read_text()).get("comparison", {})
    lines = [line for line in done.stdout.splitlines() if line.startswith("REGRESSION ")]
    if kind is None:
        kind = "baseline" if baseline is None else ("slowdown" if slowdown_ms else "A/A")
    return GateRun(kind, done.returncode, tests, comparison, lines, seconds)


#: The A/B rounds' cases: the async fan-outs (the sequential and bounded ones take 0.4-0.5 s a
#: sample and show neither slowdown better), so 30 sessions of 10 samples a side take minutes.
AB_SELECT = "gather_all or wide_gather or cpu_per_call"
#: The 2 ms commit's sessions skip the wide CPU cases (2 ms x 400 calls is 0.8 s a sample):
#: efficiency on /async/20 and /async/50 is what the 2 ms slowdown is checked on.
AB_SELECT_2MS = "gather_all or wide_gather"
#: The saved-baseline rounds' cases: the five the mode was validated on; the wide CPU cases
#: serve the A/B mode's cpu rule (their efficiency, at 0.5-0.7, is the suite's noisiest).
SAVED_SELECT = "not cpu_per_call"
#: The real commits the A/B rounds judge: the app's default CPU cost per upstream call.
AB_SLOWDOWNS = {"slow20us": 0.02, "slow2ms": 2.0}
#: The default of the app's injected CPU cost, as app/settings.py declares it.
SETTING = re.compile(r"^(    call_overhead_ms: .*= )0\.0$", re.MULTILINE)


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=gate-validation",
            "-c",
            "user.email=gate@localhost",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"gate_validation: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def make_slow_commits(clone: Path) -> tuple[str, dict[str, str]]:
    """(HEAD, {name: commit}) in a clone: each slowdown a real one-line commit on top of HEAD."""
    base = _git(clone, "rev-parse", "HEAD")
    commits = {}
    settings = clone / "app" / "settings.py"
    for name, overhead_ms in AB_SLOWDOWNS.items():
        _git(clone, "checkout", "--quiet", "--detach", base)
        text, found = SETTING.subn(rf"\g<1>{overhead_ms:g}", settings.read_text())
        if found != 1:
            raise SystemExit(
                f"gate_validation: {settings} no longer declares `call_overhead_ms: ... = 0.0`"
            )
        settings.write_text(text)
        _git(clone, "commit", "--quiet", "-am", f"slowdown: {overhead_ms:g} ms CPU per call")
        commits[name] = _git(clone, "rev-parse", "HEAD")
    _git(clone, "checkout", "--quiet", "--detach", base)
    return base, commits


def main_ab(args: argparse.Namespace, extra: list[str]) -> int:
    """Ten rounds of A/A, A/B 20 us and A/B 2 ms sessions, each in A/B mode (--fanout-ab)."""
    if _git(REPO, "status", "--porcelain", "--untracked-files=no"):
        print("gate_validation: note: uncommitted changes are not measured (HEAD is cloned)")
    tmp = Path(tempfile.mkdtemp(prefix="fanout-gate-validation-"))
    clone = tmp / "repo"
    try:
        _git(tmp, "clone", "--quiet", "--shared", str(REPO), str(clone))
        base, commits = make_slow_commits(clone)
        heads = {"aa": base, **commits}
        kinds = {"aa": "A/A", "slow20us": "A/B 20 us", "slow2ms": "A/B 2 ms"}
        selects = {"aa": args.select, "slow20us": args.select, "slow2ms": AB_SELECT_2MS}
        suite = clone / args.suite.resolve().relative_to(REPO)
        runs: dict[str, list[GateRun]] = {k: [] for k in heads}
        rows = []
        names = list(heads)
        for index in range(1, args.rounds + 1):
            shift = (index - 1) % len(names)
            for which in names[shift:] + names[:shift]:  # rotate the order between rounds
                _git(clone, "checkout", "--quiet", "--detach", heads[which])
                runs[which].append(
                    run_suite(
                        args.out,
                        f"ab-round{index:02d}-{which}",
                        slowdown_ms=0,
                        baseline=None,
                        extra=[*extra, f"--fanout-ab={base}", "-k", selects[which]],
                        suite=suite,
                        cwd=clone,
                        kind=kinds[which],
                    )
                )
            aa, slow, fast = (runs[k][-1] for k in names)
            row = [
                index,
                "false alarm" if aa.exit_code != 0 or aa.regressed else "ok",
                _caught(slow),
                _caught(fast),
            ]
            rows.append(row)
            print(f"round {index}: A/A {row[1]}, 20 us {row[2]}, 2 ms {row[3]}", flush=True)
            for run in (aa, slow, fast):
                if not run.tests_passed:
                    print(f"  note: {run.kind} run tests: {run.tests}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    false_alarms = sum(1 for r in runs["aa"] if r.exit_code != 0 or r.regressed)
    caught = {k: sum(1 for r in runs[k] if _caught(r) == "caught") for k in commits}
    headers = ["round", "A/A (HEAD vs HEAD)", "20 us per call", "2 ms per call"]
    summary = (
        f"A/B mode: A/A false alarms {false_alarms}/{args.rounds}; "
        f"20 us per call caught {caught['slow20us']}/{args.rounds}; "
        f"2 ms per call caught {caught['slow2ms']}/{args.rounds}"
    )
    worst = worst_changes(runs["aa"])
    weakest = weakest_detection(runs["slow20us"])
    margin_rows = [
        [
            rule,
            _fmt_change(rule, worst[rule][0]) + f" ({worst[rule][1]})" if rule in worst else "-",
            _fmt_change(rule, weakest[rule][0]) + f" ({weakest[rule][1]})"
            if rule in weakest
            else "-",
        ]
        for rule in sorted(set(worst) | set(weakest))
    ]
    margin_headers = ["rule", "worst A/A case (all rounds)", "weakest 20 us detection"]
    print()
    print(render_text(headers, rows))
    print()
    print(render_text(margin_headers, margin_rows))
    print()
    print(summary)
    (args.out / "summary-ab.md").write_text(
        "\n\n".join(
            [
                "### Gate validation, A/B mode",
                f"Cases: `-k {args.select}` (2 ms: `-k {AB_SELECT_2MS}`); {os.cpu_count()} CPUs.",
                render_markdown(headers, rows),
                render_markdown(margin_headers, margin_rows),
                f"**{summary}**",
            ]
        )
        + "\n"
    )
    (args.out / "summary-ab.json").write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "false_alarms": false_alarms,
                "caught": caught,
                "exit_codes": {k: [r.exit_code for r in v] for k, v in runs.items()},
                "regression_lines": {k: [r.regression_lines for r in v] for k, v in runs.items()},
                "seconds": {k: [round(r.seconds, 1) for r in v] for k, v in runs.items()},
            },
            indent=1,
        )
    )
    print(f"(runs, logs and summary-ab.md in {args.out})")
    ok = false_alarms == 0 and all(n == args.rounds for n in caught.values())
    return 0 if ok else 1


def _caught(run: GateRun) -> str:
    return "caught" if run.exit_code == 1 and run.regressed and run.tests_passed else "MISSED"


def worst_changes(runs: list[GateRun]) -> dict[str, tuple[float, str]]:
    """Per rule, the change furthest in the bad direction over all cases of these runs."""
    worst: dict[str, tuple[float, str]] = {}
    for run in runs:
        for case in run.comparison.get("cases", []):
            for m in case.get("metrics", []):
                if m["change"] is None:
                    continue
                # The sign before the limit is the bad direction ("efficiency-15%": a drop;
                # "load-p95+25%": a rise); metric names may hold "-" themselves.
                sign = re.search(r"([+-])[\d.]+", m["rule"])
                bad = -m["change"] if sign and sign.group(1) == "-" else m["change"]
                if m["rule"] not in worst or bad > worst[m["rule"]][0]:
                    worst[m["rule"]] = (bad, case["id"])
    return worst


def weakest_detection(runs: list[GateRun]) -> dict[str, tuple[float, str]]:
    """Per rule, the smallest bad-direction change among each run's strongest case."""
    weakest: dict[str, tuple[float, str]] = {}
    for run in runs:
        per_rule = worst_changes([run])
        for rule, (bad, cid) in per_rule.items():
            if rule not in weakest or bad < weakest[rule][0]:
                weakest[rule] = (bad, cid)
    return weakest


def _fmt_change(rule: str, bad: float) -> str:
    if rule.endswith("%"):
        return f"{bad * 100:.1f}% worse"
    if rule.endswith("ms") or rule.endswith("s"):
        return f"{bad * 1000:.2f} ms worse"
    return f"{bad:.3f} worse"


@dataclass(frozen=True)
class Service:
    """A suite to validate on, and the one-line commits that slow its path down."""

    name: str
    suite: str
    select: str
    #: kind -> (file, regex with one group before the value, replacement of the value)
    commits: dict[str, tuple[str, str, str]]


#: The gather of app/fanout.py's gather_all (the first in the file), as one group.
GATHER_ALL = (
    r"(            await asyncio\.gather\(\*\(call\(i, url\) for i, url in enumerate\(urls\)\)\))"
)
#: The latency validation's services: the reference app's /async/20 (n known: efficiency
#: too) and our quoting service, measured without n (latency and structure only).
LATENCY_SERVICES = (
    Service(
        "reference app /async/20",
        "benchmarks/perf",
        "gather_all",
        {
            # ~110 ms a request: 22 ms of awaited work after the gather = +20%; 110 ms = 2x.
            "plus20": ("app/fanout.py", GATHER_ALL, "\n            await asyncio.sleep(0.022)"),
            "slow2x": ("app/fanout.py", GATHER_ALL, "\n            await asyncio.sleep(0.110)"),
            "sequential": (
                "app/fanout.py",
                r"(\n            )await asyncio\.gather\(\*\(call\(i, url\) for i, url in "
                r"enumerate\(urls\)\)\)",
                "for i, url in enumerate(urls):\n                await call(i, url)",
            ),
        },
    ),
    Service(
        "quote service (no n)",
        "tests/e2e/gate_quote_app",
        "test_quote",
        {
            # ~85-90 ms a request: +18 ms of awaited work = +20%; +88 ms = 2x.
            "plus20": (
                "tests/e2e/gate_quote_app/quote/service.py",
                r"^(EXTRA_WAIT_S = )0\.0$",
                "0.018",
            ),
            "slow2x": (
                "tests/e2e/gate_quote_app/quote/service.py",
                r"^(EXTRA_WAIT_S = )0\.0$",
                "0.088",
            ),
            "sequential": (
                "tests/e2e/gate_quote_app/quote/service.py",
                r"^(GATHER = )True$",
                "False",
            ),
        },
    ),
)
#: The --cpu validation's service and commit: 40 us of CPU after every upstream call.
CPU_SERVICE = Service(
    "shelf service (repeat=10)",
    "tests/e2e/gate_cpu_app",
    "test_shelf or test_pages",
    {
        "cpu40us": (
            "tests/e2e/gate_cpu_app/shelf/service.py",
            r"^(CPU_PER_CALL_S = )0\.0$",
            "0.00004",
        ),
    },
)
#: What each latency session must end with: the exit status and its name.
LATENCY_EXPECTED = {"aa": 0, "plus20": 1, "slow2x": 1, "sequential": 1}


def make_commits(clone: Path, service: Service) -> tuple[str, dict[str, str]]:
    """(HEAD, {kind: commit}) in a clone: each change a real one-line commit on top of HEAD."""
    base = _git(clone, "rev-parse", "HEAD")
    commits = {}
    for kind, (relative, pattern, value) in service.commits.items():
        _git(clone, "checkout", "--quiet", "--detach", base)
        target = clone / relative
        regex = re.compile(pattern, re.MULTILINE)
        old = target.read_text()
        match = regex.search(old)
        found = 1 if match else 0
        text = old[: match.end(1)] + value + old[match.end() :] if match else old
        if found != 1:
            raise SystemExit(f"gate_validation: {relative} no longer matches {pattern!r}")
        target.write_text(text)
        _git(clone, "commit", "--quiet", "-am", f"validation: {service.name}: {kind}")
        commits[kind] = _git(clone, "rev-parse", "HEAD")
    _git(clone, "checkout", "--quiet", "--detach", base)
    return base, commits


def foreign_baseline(saved: Path, out: Path) -> Path:
    """A copy of a saved run as if measured on another machine (its fingerprint rewritten)."""
    data = json.loads(saved.read_text())
    data["context"]["fingerprint"] = {
        **data["context"].get("fingerprint", {}),
        "cpu_model": "another machine (gate validation)",
    }
    data.pop("comparison", None)
    out.write_text(json.dumps(data))
    return out


def main_latency(args: argparse.Namespace, extra: list[str]) -> int:
    """Per round and service: A/A and +20% in A/B mode, 2x against a saved baseline, a gather
    made sequential against a baseline from another machine. Default rules throughout."""
    if _git(REPO, "status", "--porcelain", "--untracked-files=no"):
        print("gate_validation: note: uncommitted changes are not measured (HEAD is cloned)")
    tmp = Path(tempfile.mkdtemp(prefix="fanout-gate-latency-"))
    results: dict[tuple[str, str], list[GateRun]] = {}
    rows = []
    try:
        for index, service in enumerate(LATENCY_SERVICES):
            clone = tmp / f"repo{index}"
            _git(tmp, "clone", "--quiet", "--shared", str(REPO), str(clone))
            base, commits = make_commits(clone, service)
            suite = clone / service.suite
            for round_index in range(1, args.rounds + 1):
                tag = f"lat{index}-r{round_index:02d}"
                got: dict[str, GateRun] = {}

                where = (args, clone, suite, [*extra, "-k", service.select], tag)
                got = {
                    "aa": _session(where, "aa", base, [f"--fanout-ab={base}"]),
                    "plus20": _session(where, "plus20", commits["plus20"], [f"--fanout-ab={base}"]),
                    "baseline": _session(where, "baseline", base, []),
                }
                saved = args.out / f"{tag}-baseline.json"
                got["slow2x"] = _session(
                    where, "slow2x", commits["slow2x"], [f"--fanout-compare={saved}"]
                )
                foreign = foreign_baseline(saved, args.out / f"{tag}-foreign.json")
                got["sequential"] = _session(
                    where, "sequential", commits["sequential"], [f"--fanout-compare={foreign}"]
                )
                row = [service.name, round_index]
                for kind, expected in LATENCY_EXPECTED.items():
                    run = got[kind]
                    results.setdefault((service.name, kind), []).append(run)
                    row.append(_latency_cell(run, expected))
                rows.append(row)
                print("  ".join(str(x) for x in row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    headers = [
        "service",
        "round",
        "A/A (A/B)",
        "+20% (A/B)",
        "2x (saved)",
        "sequential (other machine)",
    ]
    summary_rows = []
    ok = True
    for service in LATENCY_SERVICES:
        cells = [service.name]
        for kind, expected in LATENCY_EXPECTED.items():
            runs = results.get((service.name, kind), [])
            good = sum(1 for r in runs if _latency_cell(r, expected).startswith(("ok", "caught")))
            ok = ok and good == len(runs)
            word = "no false alarm" if kind == "aa" else "caught"
            cells.append(f"{word} {good}/{len(runs)}")
        summary_rows.append(cells)
    print()
    print(render_text(headers, rows))
    print()
    print(render_text(headers[:1] + headers[2:], summary_rows))
    (args.out / "summary-latency.md").write_text(
        "\n\n".join(
            [
                "### Gate validation, default rules (latency, structure, efficiency)",
                f"{args.rounds} round(s); {os.cpu_count()} CPUs.",
                render_markdown(headers[:1] + headers[2:], summary_rows),
                render_markdown(headers, rows),
            ]
        )
        + "\n"
    )
    (args.out / "summary-latency.json").write_text(
        json.dumps(
            {
                f"{name} / {kind}": {
                    "exit_codes": [r.exit_code for r in runs],
                    "regression_lines": [r.regression_lines for r in runs],
                    "seconds": [round(r.seconds, 1) for r in runs],
                }
                for (name, kind), runs in results.items()
            },
            indent=1,
        )
    )
    print(f"(runs, logs and summary-latency.md in {args.out})")
    return 0 if ok else 1


def main_cpu(args: argparse.Namespace, extra: list[str]) -> int:
    """Per round, on the shelf service (repeat=10): A/A and the 40 us commit, each A/B."""
    if _git(REPO, "status", "--porcelain", "--untracked-files=no"):
        print("gate_validation: note: uncommitted changes are not measured (HEAD is cloned)")
    tmp = Path(tempfile.mkdtemp(prefix="fanout-gate-cpu-"))
    runs: dict[str, list[GateRun]] = {"aa": [], "cpu40us": []}
    rows = []
    try:
        clone = tmp / "repo"
        _git(tmp, "clone", "--quiet", "--shared", str(REPO), str(clone))
        base, commits = make_commits(clone, CPU_SERVICE)
        suite = clone / CPU_SERVICE.suite
        heads = {"aa": base, "cpu40us": commits["cpu40us"]}
        for index in range(1, args.rounds + 1):
            where = (args, clone, suite, [*extra, "-k", CPU_SERVICE.select], f"cpu-r{index:02d}")
            order = ["aa", "cpu40us"] if index % 2 else ["cpu40us", "aa"]
            got = {k: _session(where, k, heads[k], [f"--fanout-ab={base}"]) for k in order}
            row = [index]
            for kind, expected in (("aa", 0), ("cpu40us", 1)):
                runs[kind].append(got[kind])
                row.append(_cpu_cell(got[kind], expected))
            rows.append(row)
            print("  ".join(str(x) for x in row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    false_alarms = sum(1 for r in runs["aa"] if not _cpu_cell(r, 0).startswith("ok"))
    caught = sum(1 for r in runs["cpu40us"] if _cpu_cell(r, 1).startswith("caught"))
    headers = ["round", "A/A (HEAD vs HEAD)", "40 us of CPU per upstream call"]
    summary = (
        f"A/B, repeat=10 in the tests: A/A false alarms {false_alarms}/{args.rounds}; "
        f"40 us per call caught {caught}/{args.rounds}"
    )
    print()
    print(render_text(headers, rows))
    print()
    print(summary)
    (args.out / "summary-cpu.md").write_text(
        "\n\n".join(
            [
                "### Gate validation, A/B cpu with repeat=10 (the gate takes the rest)",
                f"{args.rounds} round(s); {os.cpu_count()} CPUs.",
                render_markdown(headers, rows),
                f"**{summary}**",
            ]
        )
        + "\n"
    )
    (args.out / "summary-cpu.json").write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "false_alarms": false_alarms,
                "caught": caught,
                "cells": rows,
                "exit_codes": {k: [r.exit_code for r in v] for k, v in runs.items()},
                "seconds": {k: [round(r.seconds, 1) for r in v] for k, v in runs.items()},
            },
            indent=1,
        )
    )
    print(f"(runs, logs and summary-cpu.md in {args.out})")
    return 0 if false_alarms == 0 and caught == args.rounds else 1


def _cpu_cell(run: GateRun, expected: int) -> str:
    """ "ok"/"caught" or what happened instead, with each case's cpu change, its p-value and
    the samples a side it was judged from."""
    if expected == 0:
        word = "ok" if run.exit_code == 0 and not run.regressed else "FALSE ALARM"
    else:
        cpu_regressed = any(
            m.get("metric") == "cpu" and m.get("regressed")
            for case in run.comparison.get("cases", [])
            for m in case.get("metrics", [])
        )
        word = "caught" if run.exit_code == 1 and cpu_regressed and run.tests_passed else "MISSED"
    parts = []
    for case in run.comparison.get("cases", []):
        cpu = next((m for m in case.get("metrics", []) if m.get("metric") == "cpu"), None)
        name = case["id"].rsplit(" ", 1)[-1]
        if cpu is None or cpu.get("change") is None:
            parts.append(f"{name} no cpu")
            continue
        p = cpu.get("p_value")
        judged = "" if cpu.get("gated") else " NOT JUDGED"
        parts.append(
            f"{name} cpu {cpu['change'] * 100:+.1f}% p={p:.2g}{judged}" if p is not None else name
        )
    return f"{word} ({'; '.join(parts)}, exit {run.exit_code})"


def _session(where: tuple, kind: str, head: str, gate: list[str]) -> GateRun:
    """One pytest session of a service's suite at commit `head`, with the gate's options."""
    args, clone, suite, extra, tag = where
    _git(clone, "checkout", "--quiet", "--detach", head)
    return run_suite(
        args.out,
        f"{tag}-{kind}",
        slowdown_ms=0,
        baseline=None,
        extra=[*extra, *gate],
        suite=suite,
        cwd=clone,
        kind=kind,
    )


def _latency_cell(run: GateRun, expected: int) -> str:
    """ "ok" (A/A passed), "caught" (exit 1 with a regression), or what happened instead;
    with the median's change (or the metric that decided) in brackets."""
    if expected == 0:
        word = "ok" if run.exit_code == 0 and not run.regressed else "FALSE ALARM"
    else:
        word = "caught" if run.exit_code == 1 and run.regressed else "MISSED"
    return f"{word} ({_evidence(run)}, exit {run.exit_code})"


def _evidence(run: GateRun) -> str:
    """ "median +21.3%", or the regressed metric ("efficiency -94.6%"), from the run's JSON."""
    for case in run.comparison.get("cases", []):
        metrics = case.get("metrics", [])
        chosen = (
            next((m for m in metrics if m.get("regressed")), None)
            or next((m for m in metrics if m.get("metric") == "median"), None)
            or next((m for m in metrics if m.get("gated")), None)
        )
        if chosen is not None and chosen.get("change") is not None:
            label = f"{chosen['metric']} {chosen.get('part', '')}".strip()
            change = chosen["change"]
            amount = f"{change * 100:+.1f}%" if chosen.get("change_is_relative") else f"{change:+g}"
            return f"{label} {amount}"
        if case.get("verdict") == "not gated":
            return f"not gated: {case.get('reason', '')}"
    return "no case"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds (default: 10)")
    parser.add_argument(
        "--slowdown-ms",
        type=float,
        default=2.0,
        help="FANOUT_CALL_OVERHEAD_MS of the slowdown runs (default: 2)",
    )
    parser.add_argument(
        "--fail-on",
        default=None,
        help="--fanout-fail-on for the comparisons (default: the suite's ini)",
    )
    parser.add_argument("--alpha", default=None, help="--fanout-alpha (default: the suite's ini)")
    parser.add_argument(
        "--suite",
        type=Path,
        default=SUITE,
        help="the performance suite to run (default: benchmarks/perf; "
        "benchmarks/perf_load for the Locust cases)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "reports" / "gate-validation",
        help="where runs, logs and summary go (default: reports/gate-validation)",
    )
    parser.add_argument(
        "--ab",
        action="store_true",
        help="A/B mode: each round an A/A session and sessions of two real slowdown commits "
        "(20 us and 2 ms of CPU per upstream call), each with --fanout-ab against HEAD",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="the default rules on the reference app and a service without n: A/A and +20%% "
        "in A/B mode, 2x against a saved baseline, a gather made sequential against a baseline "
        "from another machine",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="A/B cpu with repeat=10 in the tests: A/A and a commit adding 40 us of CPU per "
        "upstream call on the shelf service (tests/e2e/gate_cpu_app), each with --fanout-ab",
    )
    parser.add_argument(
        "--select",
        default=AB_SELECT,
        help=f"-k expression of the A/B rounds' cases (default: {AB_SELECT!r})",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    extra = []
    if args.fail_on:
        extra.append(f"--fanout-fail-on={args.fail_on}")
    if args.alpha:
        extra.append(f"--fanout-alpha={args.alpha}")
    if args.ab:
        return main_ab(args, extra)
    if args.latency:
        return main_latency(args, extra)
    if args.cpu:
        return main_cpu(args, extra)
    if args.suite.resolve() == SUITE:
        extra += ["-k", SAVED_SELECT]

    rows = []
    aa_runs: list[GateRun] = []
    slow_runs: list[GateRun] = []
    for index in range(1, args.rounds + 1):
        base_path = args.out / f"round{index:02d}-baseline.json"
        base = run_suite(
            args.out, base_path.stem, slowdown_ms=0, baseline=None, extra=extra, suite=args.suite
        )
        order = ["aa", "slow"] if index % 2 else ["slow", "aa"]
        got: dict[str, GateRun] = {}
        for which in order:
            got[which] = run_suite(
                args.out,
                f"round{index:02d}-{which}",
                slowdown_ms=args.slowdown_ms if which == "slow" else 0,
                baseline=base_path,
                extra=extra,
                suite=args.suite,
            )
        aa, slow = got["aa"], got["slow"]
        aa_runs.append(aa)
        slow_runs.append(slow)
        row = [
            index,
            base.tests,
            f"exit {aa.exit_code}, {len(aa.regressed)} regression",
            "false alarm" if aa.exit_code != 0 or aa.regressed else "ok",
            f"exit {slow.exit_code}, {len(slow.regressed)} regression",
            "caught" if slow.exit_code == 1 and slow.regressed and slow.tests_passed else "MISSED",
        ]
        rows.append(row)
        print(
            render_text(["round", "baseline tests", "A/A", "", "slowdown", ""], [row]).splitlines()[
                -1
            ],
            flush=True,
        )
        for run in (aa, slow):
            if not run.tests_passed:
                print(f"  note: {run.kind} run tests: {run.tests}", flush=True)

    false_alarms = sum(1 for r in aa_runs if r.exit_code != 0 or r.regressed)
    caught = sum(1 for r in slow_runs if r.exit_code == 1 and r.regressed and r.tests_passed)
    rules = (aa_runs[0].comparison.get("rules") if aa_runs else None) or []
    headers = ["round", "baseline tests", "A/A", "", "slowdown", ""]
    margin_rows = []
    worst_aa = worst_changes(aa_runs)
    weakest_slow = weakest_detection(slow_runs)
    for rule in rules:
        aa_bad = worst_aa.get(rule)
        slow_bad = weakest_slow.get(rule)
        margin_rows.append(
            [
                rule,
                _fmt_change(rule, aa_bad[0]) + f" ({aa_bad[1]})" if aa_bad else "-",
                _fmt_change(rule, slow_bad[0]) + f" ({slow_bad[1]})" if slow_bad else "-",
            ]
        )
    margin_headers = ["rule", "worst A/A case (all rounds)", "weakest slowdown (best case/run)"]
    summary = (
        f"A/A false alarms: {false_alarms}/{len(aa_runs)}; "
        f"slowdown (FANOUT_CALL_OVERHEAD_MS={args.slowdown_ms:g}) caught: "
        f"{caught}/{len(slow_runs)}"
    )
    print()
    print(render_text(headers, rows))
    print()
    print(render_text(margin_headers, margin_rows))
    print()
    print(summary)
    alpha = aa_runs[0].comparison.get("alpha") if aa_runs else "-"
    markdown = (
        "\n\n".join(
            [
                "### Gate validation",
                f"Rules: `{','.join(rules)}`, alpha {alpha}; {os.cpu_count()} CPUs.",
                render_markdown(headers, rows),
                render_markdown(margin_headers, margin_rows),
                f"**{summary}**",
            ]
        )
        + "\n"
    )
    (args.out / "summary.md").write_text(markdown)
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "rules": rules,
                "false_alarms": false_alarms,
                "caught": caught,
                "aa_exit_codes": [r.exit_code for r in aa_runs],
                "slowdown_exit_codes": [r.exit_code for r in slow_runs],
                "regression_lines": [r.regression_lines for r in slow_runs],
            },
            indent=1,
        )
    )
    print(f"(runs, logs and summary.md in {args.out})")
    return 0 if false_alarms == 0 and caught == len(slow_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
