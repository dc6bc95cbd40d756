"""The stack spec: [tool.fanout] read, options on top, every bad value one line (pure logic)."""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest

from pytest_fanout.limits import Behaviour
from pytest_fanout.servers.stub_server import StubUpstreamServer
from pytest_fanout.spec import (
    BEHAVIOUR_KEYS,
    DEFAULT_APP,
    OPTIONS,
    ROUTE_KEYS,
    SpecError,
    add_stack_options,
    find_config,
    parse_route,
    parse_token,
    parse_upstream,
    parse_values,
    read_config,
    resolve,
)

SHOP = """
[tool.fanout]
app = "svc:app"
delay_ms = 20
app_env = { PRICING_V2_URL = "{upstream_url:pricing}/v2" }

[tool.fanout.upstreams.inventory]
env = "INVENTORY_URL"
delay_ms = 30
routes = [
  { method = "get", path = "/stock/{sku}", json = { sku = "{sku}", available = 2 } },
  { method = "POST", path = "/quote", handler = "shop.stubs:quote", delay_ms = 5 },
]

[tool.fanout.upstreams.pricing]
env = "PRICING_URL"
"""


def write(directory: Path, text: str, name: str = "pyproject.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_the_whole_declaration_is_read_in_order(tmp_path: Path) -> None:
    spec = read_config(write(tmp_path, SHOP))
    assert spec.app == "svc:app"
    assert spec.delay_ms == 20
    assert spec.app_dir == str(tmp_path)  # handlers and the app import from the file's folder
    assert spec.upstream_env_names() == {"inventory": "INVENTORY_URL", "pricing": "PRICING_URL"}
    behaviours = spec.behaviours()
    assert behaviours["inventory"].delay_ms == 30  # its own
    assert behaviours["pricing"].delay_ms == 20  # the stack's
    routes = spec.routes()["inventory"]
    assert [(r["method"], r["path"]) for r in routes] == [
        ("GET", "/stock/{sku}"),
        ("POST", "/quote"),
    ]
    assert routes[0]["json"] == {"sku": "{sku}", "available": 2}
    assert routes[1]["where"].endswith("tool.fanout.upstreams.inventory.routes[1]")
    env = spec.app_environment({"inventory": "http://i", "pricing": "http://p"})
    assert env == {"PRICING_V2_URL": "http://p/v2"}


def test_no_declaration_is_the_reference_stack(tmp_path: Path) -> None:
    spec = resolve({}, start=tmp_path)
    assert spec.app == DEFAULT_APP
    assert spec.upstream_env_names() == {"default": "FANOUT_UPSTREAM_URL"}
    assert spec.source is None


def test_the_nearest_pyproject_with_the_table_is_found(tmp_path: Path) -> None:
    write(tmp_path, SHOP)
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    write(tmp_path / "a", "[project]\nname = 'x'\n")  # a pyproject without [tool.fanout]
    assert find_config(inner) == tmp_path / "pyproject.toml"
    assert resolve({}, start=inner).app == "svc:app"


def test_options_override_the_file(tmp_path: Path) -> None:
    write(tmp_path, SHOP)
    values = parse_values(
        {
            "app": "other:app",
            "delay_ms": "7",
            # the ini's old form too; the file's app_env needs pricing
            "upstream": ["inventory=STOCK_URL", "pricing=PRICING_URL", "extra EXTRA_URL"],
            "route": ['extra GET /x {"a": 1}', "POST /quote"],
        },
        {},
    )
    spec = resolve(values, start=tmp_path, where={"route": "--route"})
    assert spec.app == "other:app"
    assert spec.delay_ms == 7
    # The upstreams given replace the declared set; a declared one keeps its routes.
    assert spec.upstream_env_names() == {
        "inventory": "STOCK_URL",
        "pricing": "PRICING_URL",
        "extra": "EXTRA_URL",
    }
    routes = spec.routes()
    assert [(r["method"], r["path"]) for r in routes["inventory"]] == [
        ("GET", "/stock/{sku}"),
        ("POST", "/quote"),  # replaced by the option (same method and path), now last
    ]
    assert "handler" not in routes["inventory"][1]
    assert routes["extra"] == [
        {"method": "GET", "path": "/x", "json": {"a": 1}, "where": "--route"}
    ]


def test_a_config_file_named_explicitly(tmp_path: Path) -> None:
    write(tmp_path, SHOP, "stack.toml")
    spec = resolve({"config": "stack.toml"}, start=tmp_path)
    assert spec.source == tmp_path / "stack.toml"
    with pytest.raises(SpecError, match=r"nope\.toml: no such file"):
        resolve({"config": "nope.toml"}, start=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool.fanout]\nap = 'x:y'\n", r"tool\.fanout: unknown key\(s\) ap \(known: app, "),
        ("[tool.fanout]\ndelay_ms = 'soon'\n", r"tool\.fanout\.delay_ms: 'soon' is not a number"),
        ("[tool.fanout]\ndelay_ms = -1\n", r"tool\.fanout\.delay_ms: -1 must be a finite number"),
        ("[tool.fanout]\napp = 'svc'\n", r"tool\.fanout\.app: 'svc' is not an import string"),
        ("[tool.fanout]\napp_factory = 'maybe'\n", r"app_factory: 'maybe' is not true or false"),
        ("[tool.fanout\n", r"pyproject\.toml: is not valid TOML"),
        (
            "[tool.fanout.upstreams.inv]\ndelay_ms = 5\n",
            r"tool\.fanout\.upstreams\.inv: env is missing",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = '1X'\n",
            r"upstreams\.inv\.env: '1X' is not an environment variable name",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\ndelay = 5\n",
            r"upstreams\.inv: unknown key\(s\) delay",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\ndelay_ms = -4\n",
            r"upstreams\.inv: delay_ms=-4\.0 must be between 0 and 3600000",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\nroutes = [{ path = '/x' }]\n",
            r"upstreams\.inv\.routes\[0\]: method None is not one of GET",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\nroutes = [{ method = 'GET', path = 'x' }]\n",
            r"routes\[0\]: path 'x' must be a string starting with /",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\n"
            "routes = [{ method = 'GET', path = '/x', jsn = 1 }]\n",
            r"routes\[0\]: unknown key\(s\) jsn: a route takes method, path, status, json",
        ),
        (
            "[tool.fanout.upstreams.a]\nenv = 'X'\n[tool.fanout.upstreams.b]\nenv = 'X'\n",
            r"tool\.fanout: X is given to two upstreams \(a and b\)",
        ),
        (
            "[tool.fanout]\napp_env = { A = '$HOME' }\n",
            r"tool\.fanout\.app_env: 'A=\$HOME': \$HOME is not expanded",
        ),
        (
            "[tool.fanout]\napp_env = { A = '{upstream_url:nope}' }\n",
            r"app_env: 'A=\{upstream_url:nope\}': .*no upstream named 'nope'",
        ),
        # Issue 32, #12: each escaped as a raw ValueError (exit 1) before; one line now.
        (
            "[tool.fanout]\napp_env = { 'A=B' = 'x' }\n",
            r"tool\.fanout\.app_env: 'A=B' is not an environment variable name",
        ),
        (
            '[tool.fanout]\napp_env = { A = "x\\u0000y" }\n',
            r"tool\.fanout\.app_env: the value of A holds a NUL byte",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\n"
            "routes = [{ method = 'GET', path = '/x', headers = ['a', 'b'] }]\n",
            r"routes\[0\]: headers must map strings to strings",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\n"
            "routes = [{ method = 'GET', path = '/x', headers = { X = \"a\\r\\nb\" } }]\n",
            r"routes\[0\]: headers: the value of 'X' holds CR, LF or NUL",
        ),
        (
            "[tool.fanout.upstreams.inv]\nenv = 'X'\n"
            "routes = [{ method = 'GET', path = '/x', status = 999 }]\n",
            r"routes\[0\]: status 999 is not an HTTP status",
        ),
        # Issue 32, #13: 10,000 upstreams were accepted (and 60 started 60 processes at once).
        (
            "".join(f"[tool.fanout.upstreams.u{i}]\nenv = 'U{i}'\n" for i in range(65)),
            r"tool\.fanout: 65 upstreams are above the limit of 64",
        ),
    ],
)
def test_a_bad_declaration_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as caught:
        resolve({}, start=tmp_path)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith("pyproject.toml: "), line
    assert re.search(message, line), line


@pytest.mark.parametrize(
    ("raw", "where", "message"),
    [
        ({"upstream": ["a=A_URL", "a=B_URL"]}, "--upstream", "upstream 'a' is named twice"),
        ({"upstream": ["a=A_URL", "b=A_URL"]}, "--upstream", "A_URL is given to two upstreams"),
        ({"route": ["nope GET /x"]}, "--route", "no upstream named 'nope'"),
        ({"route": ["GET"]}, "--route", "is not '[UPSTREAM] METHOD PATH [JSON]'"),
        ({"route": ["GET /x {nope"]}, "--route", "is not valid JSON"),
        ({"route": ["GET /x [NaN]"]}, "--route", "NaN is not valid JSON"),
        ({"upstream": ["a b=C"]}, "--upstream", "is not NAME=ENVVAR"),
        ({"app_factory": "maybe"}, "--app-factory", "'maybe' is not true or false"),
        ({"stack_sampling": "sometimes"}, "--stack-sampling", "'sometimes' is not on or off"),
        ({"startup_timeout": "0"}, "--startup-timeout", "0 must be > 0"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(
    tmp_path: Path, raw: dict, where: str, message: str
) -> None:
    names = {key: OPTIONS[key].flag("") for key in raw}
    with pytest.raises(SpecError) as caught:
        resolve(parse_values(raw, names), start=tmp_path, where=names)
    assert str(caught.value).startswith(f"{where}: "), caught.value
    assert message in str(caught.value)


def test_the_route_syntax() -> None:
    assert parse_route('GET /stock/{sku} {"available": 2}') == {
        "method": "GET",
        "path": "/stock/{sku}",
        "json": {"available": 2},
    }
    assert parse_route("pricing post /quote") == {
        "method": "POST",
        "path": "/quote",
        "upstream": "pricing",
    }


def test_both_upstream_syntaxes() -> None:
    assert parse_upstream("geo-api=GEO_API_URL") == ("geo-api", "GEO_API_URL")
    assert parse_upstream("geo-api GEO_API_URL") == ("geo-api", "GEO_API_URL")


@pytest.mark.parametrize("token", ["a\nb", "a b", "", "tab\there"])
def test_a_token_with_a_newline_or_space_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="is not a token"):
        parse_token(token)


def test_the_spec_knows_every_route_and_behaviour_setting() -> None:
    """The declared keys are the stub's own: they cannot drift apart unnoticed."""
    route = set(inspect.signature(StubUpstreamServer.route).parameters) - {"self"}
    assert set(ROUTE_KEYS) == route
    assert set(BEHAVIOUR_KEYS) == {f.name for f in fields(Behaviour)}


def test_one_registrar_names_every_front_ends_flags() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_stack_options(parser.add_argument, prefix="fanout-", aliases={"delay_ms": ["--old-ms"]})
    help_text = parser.format_help()
    for flag in ("--fanout-app ", "--fanout-upstream NAME=ENVVAR", "--fanout-route", "--old-ms"):
        assert flag in help_text
    args = parser.parse_args(["--old-ms", "5", "--fanout-upstream", "a=A"])
    assert args.fanout_delay_ms == 5.0
    assert args.fanout_upstream == [("a", "A")]
    assert args.fanout_app is None  # not given: the spec's value stands
    with pytest.raises(argparse.ArgumentError, match="'soon' is not a number"):
        parser.parse_args(["--fanout-delay-ms", "soon"])


def test_adding_an_option_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What another feature does to get `--fanout-waterfall`, `--waterfall` and a TOML key."""
    from pytest_fanout import spec as spec_module
    from pytest_fanout.spec import Option, options_for, parse_switch

    extended = {**OPTIONS, "waterfall": Option("waterfall", "draw it", parse_switch, switch=True)}
    monkeypatch.setattr(spec_module, "OPTIONS", extended)
    assert "waterfall" in options_for("pytest") and "waterfall" in options_for("locust")

    parser = argparse.ArgumentParser()
    add_stack_options(parser.add_argument, prefix="", keys=options_for("fanout"))
    assert parser.parse_args(["--waterfall"]).fanout_waterfall is True

    assert resolve({}, start=tmp_path).get("waterfall") is None  # its default
    write(tmp_path, "[tool.fanout]\nwaterfall = true\n")
    assert resolve({}, start=tmp_path).get("waterfall") is True
    assert resolve({"waterfall": False}, start=tmp_path).get("waterfall") is False  # an option
    write(tmp_path, "[tool.fanout]\nwaterfall = 'maybe'\n")
    with pytest.raises(SpecError, match=r"tool\.fanout\.waterfall: 'maybe' is not true or false"):
        resolve({}, start=tmp_path)


def test_a_broken_pyproject_further_up_is_another_projects(tmp_path: Path) -> None:
    write(tmp_path, "[tool.fanout\n")  # not TOML, but not this project's file
    project = tmp_path / "project"
    project.mkdir()
    write(project, "[project]\nname = 'x'\n")
    assert find_config(project) is None
    with pytest.raises(SpecError, match="is not valid TOML"):
        find_config(tmp_path)  # the nearest one must parse


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 must be at least 1"),
        ("-5", "-5 must be at least 1"),
        ("lots", "'lots' is not"),
        ("1.5", "is not"),
        (str(2**31), "is above the limit of 1,073,741,824 bytes"),
    ],
)
def test_a_bad_max_answer_bytes_is_one_line(tmp_path: Path, value: str, message: str) -> None:
    """Issue 32 #6: the bound of an answer's body is checked like every other bound."""
    names = {"max_answer_bytes": "--max-answer-bytes"}
    with pytest.raises(SpecError) as caught:
        resolve(parse_values({"max_answer_bytes": value}, names), start=tmp_path, where=names)
    assert "\n" not in str(caught.value) and message in str(caught.value), caught.value


def test_max_answer_bytes_has_its_documented_default(tmp_path: Path) -> None:
    from pytest_fanout.limits import DEFAULT_MAX_ANSWER_BYTES

    assert resolve({}, start=tmp_path).get("max_answer_bytes") == DEFAULT_MAX_ANSWER_BYTES
    write(tmp_path, "[tool.fanout]\nmax_answer_bytes = 4096\n")
    assert resolve({}, start=tmp_path).get("max_answer_bytes") == 4096
