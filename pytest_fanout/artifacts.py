"""Every file the project writes, every secret it hides, every table it draws: one place.

Why one module: a saved run, a report, a recording, a waterfall and a capacity
table each travel (CI artifacts, pull-request comments, a user's pyproject.toml),
so each must be written the same safe way and hold no credential.

- The writer is atomic: a temporary file in the target's folder, fsync, then
  `os.replace`. A failed write removes the temporary file, leaves the old file
  whole and raises `ArtifactError`, one line naming the path and the reason.
  Readers never see a half-written file.
- The secret policy masks by name (a key, a header, an option, `KEY=VALUE`, a
  query parameter named like a credential) and by value shape (bearer tokens,
  `sk_live_...`, GitHub tokens, JWTs, AWS keys, URL passwords): `mask_text`,
  `mask_data` (any JSON-able structure), `mask_argv` and `safe_headers`.
- The table renderers: aligned text for a terminal, Markdown (every cell that
  is not marked `Markdown` escaped, so a test id cannot inject HTML or links).

Imports nothing of the project: servers/, gate/, record/, timeline/ and load/
all stand on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# The one atomic writer


class ArtifactError(OSError):
    """A file could not be written; `str()` is one line: "cannot write PATH: reason".

    An `OSError`, so callers that already turn an OSError into their own one-line
    error keep doing so; `strerror` holds the bare reason.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = str(path)
        self.strerror = reason

    def __str__(self) -> str:
        return str(self.args[0])


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (parents created); the old file stays whole on failure.

    A symbolic link is followed (the file it points to is replaced, the link
    kept); an existing file keeps its permission bits.
    """
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(path, _reason(exc)) from None
    temp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise ArtifactError(path, _reason(exc)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, target.stat().st_mode & 0o7777)
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise ArtifactError(path, _reason(exc)) from None
        raise
    _fsync_folder(target.parent)
    return Path(path)


def _fsync_folder(folder: Path) -> None:
    """The rename itself survives a power cut (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike[str], text: str, *, mask: bool = True) -> Path:
    """Write `text` (UTF-8) atomically; `mask`: credentials masked first (`mask_text`).

    `mask=False` only for a file whose content was already made safe structurally
    (a TOML spec, where masking `key = "..."` as text would break its syntax).
    """
    return write_bytes(path, (mask_text(text) if mask else text).encode("utf-8"))


def write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, mask: bool = True
) -> Path:
    """Write `data` as JSON atomically; `mask`: credentials masked first (`mask_data`).

    NaN and infinities are refused (they are not JSON): an `ArtifactError`.
    """
    try:
        text = json.dumps(mask_data(data) if mask else data, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(path, str(exc)) from None
    return write_bytes(path, (text + "\n").encode("utf-8"))


def write_figure(path: str | os.PathLike[str], figure: Any, **savefig: Any) -> Path:
    """A matplotlib figure saved atomically: drawn into memory, then written (`savefig`: its
    keyword arguments; `format` defaults to the path's suffix)."""
    import io

    buffer = io.BytesIO()
    savefig.setdefault("format", Path(path).suffix.lstrip(".").lower() or "png")
    figure.savefig(buffer, **savefig)
    return write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# The one secret policy

MASK = "***"
#: A fingerprinted value starts with this; an old file's clear values are fingerprinted on load.
FINGERPRINT_PREFIX = "fp:"
_SALT = b"pytest-fanout settings fingerprint v1"
#: Slow on purpose (a dictionary attack costs this much per guess) and short (many values share
#: one fingerprint): enough to tell "changed", not to recover a value.
_ITERATIONS = 20_000
_HEX_CHARS = 10

#: A name part that marks a credential ("DB_PASS", "x-api-key", "apiKey", "Set-Cookie"), matched
#: as a whole part of the name, case-insensitive: "monkey" and "keyboard" are not secrets.
SECRET_PARTS = frozenset(
    {
        "token",
        "secret",
        "password",
        "pass",
        "passwd",
        "pwd",
        "passphrase",
        "key",
        "apikey",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "session",
        "cookie",
        "cookies",
        "secrets",
        "passwords",
        "signature",
        "sig",
        "private",
        "csrf",
        "xsrf",
        "dsn",
        "otp",
    }
)
#: Whole names written as one word that hold a credential.
SECRET_NAMES = frozenset(
    {
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "csrftoken",
        "xsrftoken",
        "clientsecret",
        "secretkey",
        "privatekey",
        "accesskey",
        "sessionid",
        "sessid",
        "phpsessid",
        "jsessionid",
        "oauth",
        "bearer",
        "xapikey",
        "setcookie",
    }
)
#: Headers a recording never keeps: credentials sent or set, whatever their value looks like.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "proxy-authenticate",
        "www-authenticate",
        "cookie",
        "set-cookie",
        "set-cookie2",
        "x-api-key",
        "x-password",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
    }
)

_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_name(name: str) -> bool:
    """Does `name` (a key, a header, an option, an environment variable) name a credential?"""
    parts = [p.lower() for p in _PARTS.findall(str(name))]
    if not parts:
        return False
    if any(p in SECRET_PARTS for p in parts) or "".join(parts) in SECRET_NAMES:
        return True
    return any(a + b in SECRET_NAMES for a, b in zip(parts, parts[1:], strict=False))


# Value shapes masked wherever they appear.
# Each pattern starts at a boundary (a lookbehind or `\b`): a 100 kB word costs linear time.
_URL_PASSWORD = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s:/@]*):(?P<pw>[^\s/@]+)@"
)
_BEARER = re.compile(
    r"(?i)\b(?P<kind>bearer|basic|token|digest)\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})"
)
_SHAPES = re.compile(
    r"\b(?:"
    r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{6,}"  # Stripe
    r"|sk-[A-Za-z0-9_-]{8,}"  # OpenAI-like
    r"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}"  # GitHub
    r"|xox[abposr]-[A-Za-z0-9-]{8,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{30,}"  # Google
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"  # JWT
    r")"
)
#: A header line ("Cookie: a=b; c=d"): a credential header's whole value is masked.
_HEADER_LINE = re.compile(
    r"(?m)^(?P<name>[ \t]*[A-Za-z][A-Za-z0-9-]*)(?P<sep>:[ \t]*)(?P<value>\S.*)$"
)
#: NAME=VALUE, NAME: VALUE, "NAME": "VALUE", ?name=value&...: masked when NAME is secret-like.
_KEY_VALUE = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z0-9_.-]+)(?P<sep>[\"']?\s*(?:=|:(?!:))\s*[\"']?)"
)
_VALUE = re.compile(r"[^\s,;&'\"<>`)#]+")
#: An HTML form field or meta tag (`<input name="csrf_token" value="...">`, `<meta
#: name="csrf-token" content="...">`): its value is masked when its name is secret-like.
_TAG = re.compile(r"(?i)<(?:input|meta)\b[^<>]{0,4096}>")
_ATTR = re.compile(
    r"""(?i)(?<![\w-])(?P<attr>name|value|content)(?P<eq>\s*=\s*)(?P<q>["']?)(?P<v>[^"'\s>]*)(?P=q)"""
)


def _tag(match: re.Match[str]) -> str:
    tag = match.group(0)
    attrs = list(_ATTR.finditer(tag))
    if not any(a["attr"].lower() == "name" and is_secret_name(a["v"]) for a in attrs):
        return tag
    return _ATTR.sub(
        lambda a: (
            a.group(0)
            if a["attr"].lower() == "name"
            else f"{a['attr']}{a['eq']}{a['q']}{MASK}{a['q']}"
        ),
        tag,
    )


def _mask_key_values(text: str) -> str:
    """Each secret-like NAME's value masked; after any other NAME= the scan goes on inside its
    value ("--fanout-app-env=STRIPE_KEY=sk_...", "url=https://x/?sig=..."). A loop, not
    recursion: "a=b=c=..." of any length is fine."""
    out: list[str] = []
    pos = 0
    while (match := _KEY_VALUE.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        out.append(match.group(0))
        pos = match.end()
        if is_secret_name(match["key"]):
            value = _VALUE.match(text, pos)
            if value is not None and not value.group(0).startswith(FINGERPRINT_PREFIX):
                out.append(MASK)
                pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def _header_line(match: re.Match[str]) -> str:
    if is_secret_name(match["name"]) or match["name"].strip().lower() in CREDENTIAL_HEADERS:
        return f"{match['name']}{match['sep']}{MASK}"
    return match.group(0)


def mask_text(text: str) -> str:
    """`text` with every credential-looking value masked: by shape (URL passwords, bearer
    tokens, API keys, JWTs) and by name (KEY=VALUE, header lines, query parameters, an
    HTML form field or meta tag)."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)
    text = _SHAPES.sub(MASK, text)
    if ":" in text:
        text = _HEADER_LINE.sub(_header_line, text)
    if "<" in text:
        text = _TAG.sub(_tag, text)
    return _mask_key_values(text)


def mask_data(data: Any) -> Any:
    """Any JSON-able structure with its credentials masked: every string (`mask_text`), every
    key, and the string values (or lists of strings) under a secret-like key. Numbers,
    booleans and fingerprints ("fp:...") stay; tuples become lists."""
    if isinstance(data, str):
        return mask_text(data)
    if isinstance(data, Mapping):
        out = {}
        for key, value in data.items():
            name = mask_text(str(key))
            if is_secret_name(str(key)):
                value = _mask_value(value)
            out[name] = mask_data(value)
        return out
    if isinstance(data, list | tuple):
        return [mask_data(v) for v in data]
    return data


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return value if not value or value.startswith(FINGERPRINT_PREFIX) else MASK
    if isinstance(value, list | tuple):
        return [_mask_value(v) if isinstance(v, str) else v for v in value]
    return value


def mask_argv(argv: Iterable[str]) -> list[str]:
    """A command line with its credentials masked: each argument as text (`NAME=VALUE`,
    `--api-key=VALUE`), and the argument after a secret-like option (`--api-key VALUE`)."""
    out: list[str] = []
    hide_next = False
    for arg in map(str, argv):
        if hide_next and not arg.startswith("-"):
            out.append(MASK)
            hide_next = False
            continue
        hide_next = arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-"))
        out.append(mask_text(arg))
    return out


def safe_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers fit to be written down: credential headers dropped (lower-case names kept), and
    secrets inside the others' values (a presigned `Location`, a `Link` with `?access_token=`)
    masked."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    kept: dict[str, str] = {}
    for name, value in items:
        lower = str(name).lower()
        if lower in CREDENTIAL_HEADERS or is_secret_name(lower):
            continue
        kept[lower] = mask_text(str(value))
    return kept


def fingerprint_value(value: str) -> str:
    """ "fp:" and a short salted PBKDF2 hash of `value` (equal values, equal fingerprints)."""
    if value.startswith(FINGERPRINT_PREFIX):
        return value
    digest = hashlib.pbkdf2_hmac("sha256", value.encode("utf-8", "replace"), _SALT, _ITERATIONS)
    return FINGERPRINT_PREFIX + digest.hex()[:_HEX_CHARS]


def fingerprint_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """{name: fingerprint of its value}: the names stay, the values do not."""
    return {str(k): fingerprint_value(str(v)) for k, v in settings.items()}


# ---------------------------------------------------------------------------------------------
# Tables


class Markdown(str):
    """A cell that is Markdown already (made here or by the report itself): not escaped."""

    __slots__ = ()


_MD_SPECIAL = str.maketrans(
    {
        "\\": "\\\\",
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "`": "\\`",
        "|": "\\|",
        "\r": " ",
        "\n": " ",
    }
)


#: What makes brackets a link or an image: "](", "][" or "]:" (a reference definition).
_MD_LINK = re.compile(r"\][(\[:]")


def escape_markdown(text: object) -> Markdown:
    """`text` as literal Markdown text: no HTML, no link, no image, no code span, no table
    cell break (for anything that comes from a test id, a path or a message)."""
    text = str(text).translate(_MD_SPECIAL)
    if _MD_LINK.search(text):  # "rounds[pricing]" stays readable; "[x](url)" is no link
        text = text.replace("[", "\\[").replace("]", "\\]")
    return Markdown(text)


def markdown_code(text: object) -> Markdown:
    """`text` as an inline code span, whatever backticks it holds (HTML inside shows as text);
    safe inside a table cell."""
    value = " ".join(str(text).splitlines()).replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", value)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") or runs else ""
    return Markdown(f"{fence}{pad}{value}{pad}{fence}")


def render_text(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns for a terminal: text left, numbers right."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = [
            value.rjust(widths[i]) if numeric[i] and index else value.ljust(widths[i])
            for i, value in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; every cell not marked `Markdown` is escaped."""
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join(" --- " for _ in headers) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _md_cell(value: object) -> str:
    if isinstance(value, Markdown):
        return " ".join(value.splitlines())
    return escape_markdown(_cell(value))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) or value is None
