"""The one writer, the one secret policy and the tables (`pytest_fanout.artifacts`, issue 30/32).

The writer must never leave a half-written file: a failure (simulated by an
`os.replace` or a write that raises, and by a real file-size limit) leaves the
old file byte for byte and no temporary file, and is one `ArtifactError` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_fanout import artifacts
from pytest_fanout.artifacts import (
    MASK,
    ArtifactError,
    escape_markdown,
    is_secret_name,
    markdown_code,
    mask_argv,
    mask_data,
    mask_text,
    render_markdown,
    safe_headers,
    write_bytes,
    write_json,
    write_text,
)

# -- the writer ---------------------------------------------------------------------------------


def test_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "run.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"]


def test_a_failed_replace_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "pyproject.toml"
    target.write_text("[tool.other]\nkeep = 1  # a comment\n")

    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ArtifactError) as caught:
        write_text(target, "half")
    assert str(caught.value) == f"cannot write {target}: No space left on device"
    assert "\n" not in str(caught.value)
    assert target.read_text() == "[tool.other]\nkeep = 1  # a comment\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"]


def test_a_failed_write_keeps_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "base.json"
    target.write_text('{"old": true}\n')
    real_fsync = os.fsync

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ArtifactError, match="Input/output error"):
        write_json(target, {"new": True})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["base.json"]


def test_a_real_file_size_limit_keeps_the_old_file(tmp_path: Path) -> None:
    """`ulimit -f`: the kernel refuses the write half-way (Python ignores SIGXFSZ)."""
    resource = pytest.importorskip("resource")
    target = tmp_path / "pyproject.toml"
    old = "[project]\nname = 'x'\n" * 10
    target.write_text(old)
    script = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from pytest_fanout.artifacts import ArtifactError, write_text
        try:
            write_text({str(target)!r}, "x" * 100_000)
        except ArtifactError as exc:
            print(exc)
            sys.exit(3)
        """
    )
    assert resource.RLIMIT_FSIZE is not None
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"cannot write {target}: ")
    assert target.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"]


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "a.md").write_text("old")
    folder.chmod(0o555)
    try:
        with pytest.raises(ArtifactError, match="Permission denied"):
            write_text(folder / "a.md", "new")
        assert (folder / "a.md").read_text() == "old"
    finally:
        folder.chmod(0o755)


def test_the_file_keeps_its_mode_and_a_link_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("a = 1\n")
    real.chmod(0o640)
    link = tmp_path / "pyproject.toml"
    link.symlink_to(real)
    write_text(link, "a = 2\n", mask=False)
    assert link.is_symlink() and real.read_text() == "a = 2\n"
    assert real.stat().st_mode & 0o777 == 0o640


def test_nan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("{}")
    with pytest.raises(ArtifactError, match="cannot write"):
        write_json(target, {"x": float("nan")})
    assert target.read_text() == "{}"


def test_write_bytes_and_masking_defaults(tmp_path: Path) -> None:
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    write_text(tmp_path / "t.txt", "DB_PASS=hunter2")
    assert (tmp_path / "t.txt").read_text() == "DB_PASS=***"
    write_text(tmp_path / "raw.toml", 'key = "v"', mask=False)
    assert (tmp_path / "raw.toml").read_text() == 'key = "v"'


# -- the secret policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "STRIPE_KEY",
        "DB_PASS",
        "passwd",
        "pwd",
        "api-key",
        "apikey",
        "api_key",
        "apiKey",
        "auth",
        "Authorization",
        "credential",
        "session",
        "Cookie",
        "Set-Cookie",
        "signature",
        "sig",
        "private_key",
        "access_token",
        "refresh_token",
        "client_secret",
        "X-Api-Key",
        "X-Password",
        "PHPSESSID",
        "csrftoken",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["monkey", "keyboard", "author", "passed", "max_tokens", "path", "signal", "design"]
)
def test_names_that_only_look_secret(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("--fanout-app-env=STRIPE_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyj"),
        ("DB_PASS=hunter2-planted", "hunter2-planted"),
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ("call sk-proj-abcdefghijkl now", "sk-proj-abcdefghijkl"),
        ("pk_live_51Habcdefgh", "pk_live_51Habcdefgh"),
        ("sk_test_51Habcdefgh", "sk_test_51Habcdefgh"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnop"),
        ("github_pat_11ABCDEFG0123456789_abcdef", "github_pat_11ABCDEFG"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJzdWIiOiIxIn0"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("https://user:pw-planted@hooks.example/x", "pw-planted"),
        ("https://h.example/x?key=planted-q&y=1", "planted-q"),
        ("https://blob.example/c?sv=1&sig=planted%2Bsig", "planted%2Bsig"),
        ("/cb?access_token=planted-at", "planted-at"),
        ('{"client_secret": "planted-cs"}', "planted-cs"),
        ("Cookie: a=planted-c; b=planted-d", "planted-d"),
        ("X-Api-Key: planted-xk", "planted-xk"),
    ],
)
def test_mask_text_hides_secrets_by_name_and_shape(text: str, secret: str) -> None:
    masked = mask_text(text)
    assert secret not in masked
    assert MASK in masked


def test_mask_text_keeps_what_is_not_secret() -> None:
    for text in (
        "monkey=3 keyboard=qwerty",
        "GET /items/42?page=2",
        "p95: 12 ms",
        "http://127.0.0.1:8000/x",
        "FANOUT_DB_PASSWORD=fp:0a1b2c3d4e",
        "rounds[pricing] worse",
    ):
        assert mask_text(text) == text
    assert mask_text(mask_text("API_TOKEN=x")) == "API_TOKEN=***"  # idempotent


def test_mask_argv_hides_the_value_given_as_the_next_argument() -> None:
    argv = ["--api-key", "planted-1", "--password", "planted-2", "-k", "slow", "-o", "A_TOKEN=x"]
    assert mask_argv(argv) == [
        "--api-key",
        MASK,
        "--password",
        MASK,
        "-k",
        "slow",
        "-o",
        "A_TOKEN=***",
    ]
    assert mask_argv(["--fanout-app-env=STRIPE_KEY=sk_live_abcdefgh", "--token", "-v"]) == [
        "--fanout-app-env=STRIPE_KEY=***",
        "--token",
        "-v",
    ]


def test_mask_data_by_key_and_by_value() -> None:
    data = {
        "access_token": "planted-a",
        "refresh_token": "planted-r",
        "nested": [{"password": "planted-p", "user": "ann"}],
        "cookies": ["planted-c1"],
        "note": "webhook https://u:planted-w@h/x",
        "max_tokens": 100,
        "settings": {"FANOUT_DB_PASSWORD": "fp:0a1b2c3d4e"},
        "auth": {"delay_ms": 5},
        ("tuple",): None,
    }
    masked = mask_data(data)
    text = json.dumps(masked)
    assert "planted" not in text
    assert masked["nested"][0]["user"] == "ann" and masked["max_tokens"] == 100
    assert masked["settings"]["FANOUT_DB_PASSWORD"] == "fp:0a1b2c3d4e"  # fingerprints stay
    assert masked["auth"] == {"delay_ms": 5}  # an upstream named "auth" keeps its numbers


def test_safe_headers_drop_credentials_and_mask_values() -> None:
    kept = safe_headers(
        [
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer x"),
            ("Set-Cookie", "s=1"),
            ("X-Password", "p"),
            ("X-Api-Key", "k"),
            ("X-Session-Id", "9"),
            ("Location", "https://s3.example/o?X-Amz-Signature=planted-l&X-Amz-Date=1"),
            ("Link", '<https://api.example/p2?access_token=planted-k>; rel="next"'),
        ]
    )
    assert set(kept) == {"content-type", "location", "link"}
    assert "planted" not in json.dumps(kept) and "X-Amz-Date=1" in kept["location"]


# -- tables -------------------------------------------------------------------------------------


def test_markdown_cells_cannot_inject_html_links_or_break_the_table() -> None:
    hostile = "test_x[<img src=https://evil/x.png>] [click](https://evil) `code` a|b & c\nd"
    table = render_markdown(["case"], [[hostile]])
    body = table.splitlines()[2]
    assert "<img" not in body and "&lt;img" in body
    assert "](" not in body.replace("\\](", "")
    assert "\\`code\\`" in body and "a\\|b" in body and "&amp;" in body
    assert len(table.splitlines()) == 3  # the newline did not open a row


def test_markdown_code_spans_hold_any_backticks() -> None:
    assert markdown_code("tests/t.py::test_a /x") == "`tests/t.py::test_a /x`"
    span = markdown_code("a`b|c")
    assert span == "`` a`b\\|c ``"
    assert escape_markdown("rounds[pricing]") == "rounds[pricing]"


def test_artifacts_imports_nothing_of_the_project() -> None:
    source = Path(artifacts.__file__).read_text()
    assert "from pytest_fanout" not in source and "import pytest_fanout" not in source


def test_a_failed_write_in_any_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Every `fanout` command's files go through the writer; its ArtifactError ends the
    command in one line (exit 1), never a traceback or a class name."""
    from pytest_fanout import cli
    from pytest_fanout.artifacts import ArtifactError
    from pytest_fanout.cli import compare

    def fail(args: object) -> int:
        raise ArtifactError(tmp_path / "out.json", "No space left on device")

    monkeypatch.setattr(compare, "run", fail)
    assert cli.main(["compare", "a.json", "b.json"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "ArtifactError" not in err
    assert err.startswith("fanout: error: cannot write ") and "No space left on device" in err
