"""Issue 32, items 1-4 and 15, through the one writer and the one secret policy.

Each test fails on main (af2299a): the files were written in place, argv kept
`--api-key VALUE` and `key=`/`sig=` in clear, the recorder kept X-Password,
access tokens in bodies and presigned URLs, and test ids went raw into Markdown.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import tomlkit

from pytest_fanout.gate import GateConfig, GateError, Run, compare_runs
from pytest_fanout.gate.report import render_comparison_markdown, render_run_markdown
from pytest_fanout.gate.runs import collect_context
from pytest_fanout.measurement import Measurement
from pytest_fanout.record.spec_file import SpecFileError, write_routes
from pytest_fanout.record.traffic import Exchange, routes_from

PYPROJECT = """\
# The user's own comment
[project]
name = "shop"

[tool.other]
keep = [1, 2, 3]

[tool.fanout]
app = "shop.main:app"
"""


def no_replace(*_args: object) -> None:
    raise OSError(28, "No space left on device")


def test_item1_a_failed_record_write_leaves_pyproject_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "pyproject.toml"
    target.write_text(PYPROJECT)
    monkeypatch.setattr(os, "replace", no_replace)
    routes = {"prices": [{"method": "GET", "path": "/p", "status": 200, "body": "x" * 10_000}]}
    with pytest.raises(SpecFileError) as caught:
        write_routes(target, routes)
    assert str(caught.value) == f"{target}: cannot be written: No space left on device"
    assert target.read_text() == PYPROJECT
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"]


def measurement(test: str = "tests/t.py::test_a", path: str = "/x") -> Measurement:
    return Measurement(path=path, samples=[0.1, 0.11, 0.12, 0.1, 0.1], test=test)


def test_item2_a_failed_save_keeps_the_old_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base.json"
    Run.from_measurements([measurement()]).save(base)
    before = base.read_bytes()
    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(GateError, match=f"cannot write {base}: No space left on device"):
        Run.from_measurements([measurement(), measurement(path="/y")]).save(base)
    assert base.read_bytes() == before
    assert len(Run.load(base).cases) == 1  # still a whole, valid run
    assert [p.name for p in tmp_path.iterdir()] == ["base.json"]


def test_item2_a_failed_or_empty_session_keeps_an_existing_baseline(tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    run, empty = Run.from_measurements([measurement()]), Run.from_measurements([])
    assert run.keeps_baseline(base, failed=1) == ""  # no file yet: nothing to keep
    run.save(base)
    assert run.keeps_baseline(base, failed=2) == "2 test(s) failed"
    assert empty.keeps_baseline(base, failed=0) == "the session measured no case"
    assert run.keeps_baseline(base, failed=0) == ""


ARGV_SECRETS = {
    "--fanout-app-env=STRIPE_KEY=sk_live_planted0001": "sk_live_planted0001",
    "--fanout-app-env=DB_PASS=planted0002": "planted0002",
    "--fanout-app-env=HOOK=https://hooks.example/x?sig=planted0003&v=1": "planted0003",
    "key=planted0004": "planted0004",
    "pass=planted0005": "planted0005",
    "--fanout-app-env=BLOB=https://acct.blob.example/c?sv=1&sig=planted0006": "planted0006",
    "--fanout-app-env=URL=https://api.example/?key=planted0007": "planted0007",
    "--fanout-app-env=HOOK2=https://u:planted0008@hooks.example/": "planted0008",
}


def test_item3_argv_secrets_are_masked_in_the_context_and_the_saved_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["pytest", *ARGV_SECRETS, "--api-key", "planted0009", "--password", "planted0010"]
    monkeypatch.setattr(sys, "argv", argv)
    context = collect_context(tmp_path)
    run = Run.from_measurements([measurement()], context)
    saved = run.save(tmp_path / "run.json").read_text()
    for secret in [*ARGV_SECRETS.values(), "planted0009", "planted0010"]:
        assert secret not in json.dumps(context), secret
        assert secret not in saved, secret
    assert "--api-key" in saved and "STRIPE_KEY=***" in saved  # names stay
    # An old file with clear argv is masked when read, the next argument too.
    old = json.loads(saved)
    old["context"]["argv"] = ["--api-key", "planted0011", "DB_PASS=planted0012"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = Run.load(tmp_path / "old.json")
    assert loaded.context["argv"] == ["--api-key", "***", "DB_PASS=***"]


def exchange(headers: dict[str, str], body: bytes, path: str = "/login") -> Exchange:
    return Exchange("POST", path, 200, tuple(headers.items()), body, 12.0)


def test_item4_a_recording_writes_no_credential_into_pyproject(tmp_path: Path) -> None:
    answer = {
        "access_token": "planted-at-0001",
        "refresh_token": "planted-rt-0002",
        "token_type": "bearer",
        "expires_in": 3600,
        "user": {"name": "ann", "password": "planted-pw-0003"},
    }
    headers = {
        "Content-Type": "application/json",
        "X-Password": "planted-xp-0004",
        "X-Api-Key": "planted-xk-0005",
        "Authorization": "Bearer planted-au-0006",
        "Cookie": "s=planted-ck-0007",
        "Set-Cookie": "s=planted-sc-0008",
        "Location": "https://s3.example/o?X-Amz-Signature=planted-loc-0009&X-Amz-Expires=60",
        "Link": '<https://api.example/p?access_token=planted-link-0010>; rel="next"',
        "X-Region": "eu",
    }
    routes = routes_from([exchange(headers, json.dumps(answer).encode())])
    text_body = exchange({"Content-Type": "text/plain"}, b"token=planted-tb-0011", path="/t")
    routes += routes_from([text_body])
    target = tmp_path / "pyproject.toml"
    target.write_text(PYPROJECT)
    write_routes(target, {"auth": routes})
    written = target.read_text()
    assert "planted" not in written
    document = tomlkit.parse(written)  # still valid TOML, the user's tables kept
    assert document["tool"]["other"]["keep"] == [1, 2, 3]
    assert "# The user's own comment" in written
    login = document["tool"]["fanout"]["upstreams"]["auth"]["routes"][0]
    assert login["json"]["expires_in"] == 3600 and login["json"]["user"]["name"] == "ann"
    assert set(login["headers"]) == {"location", "link", "x-region"}
    assert "X-Amz-Expires=60" in login["headers"]["location"]


def test_item15_test_ids_and_paths_render_as_text_in_the_markdown_report() -> None:
    hostile = "tests/t.py::test_x[<img src=https://evil/p.png>]"
    link = "tests/t.py::test_y[[click](https://evil)]"
    base = Run.from_measurements([measurement(hostile), measurement(link, "/a`b<i>")])
    head = Run.from_measurements([measurement(hostile), measurement(link, "/a`b<i>")])
    comparison = compare_runs(base, head, GateConfig.from_options(None))
    for markdown in (render_comparison_markdown(comparison, head), render_run_markdown(head)):
        table = [line for line in markdown.splitlines() if line.startswith("| ")]
        cells = [c for line in table for c in line.split(" | ")]
        for cell in cells:
            inside = cell.strip("| ")
            if inside.startswith("`"):  # a code span: HTML and links are shown as text
                fence = inside[: len(inside) - len(inside.lstrip("`"))]
                assert inside.endswith(fence), cell
                assert fence not in inside[len(fence) : -len(fence)], cell
            else:
                assert "<img" not in cell and "](" not in cell.replace("\\](", ""), cell
        outside_code = re.sub(r"(`+).+?\1", "", markdown.split("```mermaid")[0])
        assert "<img" not in outside_code and "<i>" not in outside_code


def test_item2_readers_racing_a_save_never_see_partial_json(tmp_path: Path) -> None:
    """On main a read racing `--fanout-save` got half a file 150 times in 3780."""
    import threading

    target = tmp_path / "base.json"
    runs = [Run.from_measurements([measurement(path=f"/p{i}") for i in range(k)]) for k in (40, 80)]
    runs[0].save(target)
    done = threading.Event()

    def save_again() -> None:
        for index in range(60):
            runs[index % 2].save(target)
        done.set()

    writer = threading.Thread(target=save_again)
    writer.start()
    reads = bad = 0
    while not done.is_set() or reads == 0:
        try:
            json.loads(target.read_text())
        except ValueError:
            bad += 1
        reads += 1
    writer.join()
    assert bad == 0, f"{bad} partial reads in {reads}"


def test_a_run_in_memory_matches_its_masked_file(tmp_path: Path) -> None:
    """A measured path with a secret-like query finds its case in a saved baseline."""
    run = Run.from_measurements([measurement(path="/login?token=planted-q")])
    assert [c.id for c in run.cases] == ["tests/t.py::test_a /login?token=***"]
    base = Run.load(run.save(tmp_path / "base.json"))
    comparison = compare_runs(base, run, GateConfig.from_options(None))
    assert [v.id for v in comparison.verdicts] == [run.cases[0].id]
    assert "planted" not in (tmp_path / "base.json").read_text()
