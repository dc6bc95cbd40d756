"""Is `--host` there? The one check every load front end makes before it loads a host.

Locust (`pytest_fanout.locust`) and `fanout capacity` ask the same question and get
the same answer: a host that answers anything is there: any status (a redirect is
an answer, not followed), or a TLS handshake with a certificate that does not
verify (Locust's FastHttpUser does not verify certificates either, so a self-signed
staging host is loaded, not refused). A refused connection, a name that does not
resolve, or no answer within `HOST_CHECK_TIMEOUT_S` is one line naming the host and
the cause.

Standard library only (`http.client`): it runs inside Locust, under gevent, before
any user starts, and does not go through a proxy (Locust's users do not either).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse

from pytest_fanout.limits import HOST_CHECK_TIMEOUT_S

__all__ = ["NoAnswer", "first_answer", "host_problem"]

#: What the check sends as its User-Agent: a log line that names it.
USER_AGENT = "pytest-fanout host check"


class NoAnswer(Exception):
    """Nothing answered the URL; `str()` is the cause in a few words. `timed_out`: something
    may be there, too slow to answer (a path check leaves that to the load to measure)."""

    def __init__(self, cause: str, *, timed_out: bool = False) -> None:
        super().__init__(cause)
        self.timed_out = timed_out


def _no_verify() -> ssl.SSLContext:
    """TLS that takes any certificate: the check asks whether the host is there, not
    whether it is trusted (that is the load's concern, and Locust's users do not ask)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def first_answer(url: str, timeout_s: float = HOST_CHECK_TIMEOUT_S) -> tuple[int, str] | None:
    """The status and reason of one GET of `url`, or None when something at its address
    spoke TLS but no HTTP answer came of it (a failed handshake: it is there all the same).

    Raises NoAnswer when nothing answered, ValueError when `url` is not an http(s) URL.
    Connecting and reading each wait `timeout_s` at the most.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("no http:// or https:// and a host name")
    # parts.port: ValueError for a port that is not a number in range. Given always, so
    # that http.client does not read an IPv6 address's last group as one.
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout_s, context=_no_verify()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout_s)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    try:
        connection.request("GET", target, headers={"User-Agent": USER_AGENT})
        response = connection.getresponse()
        return response.status, response.reason
    except ssl.SSLError:
        return None  # it answered the handshake in its own way: something is there
    except TimeoutError:
        raise NoAnswer(f"no answer within {timeout_s:g} s", timed_out=True) from None
    except ConnectionRefusedError:
        raise NoAnswer("connection refused") from None
    except socket.gaierror as exc:
        raise NoAnswer(f"the name {parts.hostname!r} does not resolve ({exc.strerror})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


def host_problem(host: str) -> str:
    """Why `host` (--host) cannot be loaded, in one phrase that names it, or "" when it
    answers anything."""
    if not host.startswith(("http://", "https://")):
        return f"--host {host!r} must start with http:// or https://"
    try:
        first_answer(host)
    except ValueError as exc:
        return f"--host {host!r} is not a URL: {exc}"
    except NoAnswer as exc:
        return f"--host {host} does not answer: {exc}"
    return ""
