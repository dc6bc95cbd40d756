"""Reading call stacks: which line of the user's own code held the event loop.

(`stack.py` beside it is the other kind of stack: the stub processes and the app.)

The probe's sampler (`servers.stallwatch`) reports raw frames. Here they
become one line a user can act on: the innermost frame of the user's own
code (not the standard library's, not an installed package's, not the
harness's) and the library call it was inside,

    shop/helpers.py:14 in load_rates -> requests.api.get
    app/main.py:80 in blocking -> time.sleep
    shop/pricing.py:31 in total (CPU)

`(CPU)` means the loop was held by the user's own bytecode, not by a call.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

# The sampler's pseudo-frames: a C function (time.sleep, a socket read), garbage collection.
from pytest_fanout.limits import BUILTIN_FILE, GC_FUNCTION
from pytest_fanout.measurement import at_loop_runner, loop_off_cpu_s

_HARNESS_DIR = str(Path(__file__).resolve().parent)
#: How a stall is named when the loop thread waited for the GIL at its runner.
GIL_WAIT = "another thread holding the GIL"
_REFERENCE_APP = f"{os.sep}pytest_fanout{os.sep}reference_app{os.sep}"


@lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    """Directories whose files are not the user's: the standard library and installed packages."""
    dirs: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            dirs.add(paths[key])
    dirs.update(getattr(site, "getsitepackages", list)())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        dirs.add(user_site)
    dirs.add(_HARNESS_DIR)
    resolved = {os.path.realpath(d) for d in dirs}
    return tuple(sorted(dirs | resolved, key=len, reverse=True))


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def is_user_file(path: str) -> bool:
    """True for the user's own code: not `<frozen ...>`/`<built-in>`, not the standard
    library, not site-packages, not pytest_fanout itself (but its reference app, yes)."""
    if not path or path.startswith("<"):
        return False
    if _REFERENCE_APP in path:
        return True  # the demo service in the wheel is the "user's" code of `fanout patterns`
    if f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path:
        return False
    real = os.path.realpath(path)
    return not any(_under(path, d) or _under(real, d) for d in _library_dirs())


def module_of(path: str) -> str:
    """The dotted module a library file is (`httpx2/_client.py` -> `httpx2._client`), read
    off the import path; the file's stem when it is on none."""
    roots = sorted({*sys.path, *_library_dirs()} - {""}, key=len, reverse=True)
    for root in roots:
        if _under(path, root) and path != root:
            rel = os.path.relpath(path, root)
            parts = rel[: -len(".py")].split(os.sep) if rel.endswith(".py") else rel.split(os.sep)
            if parts and parts[-1] == "__init__":
                parts.pop()
            if parts and all(p.isidentifier() for p in parts):
                return ".".join(parts)
    for marker in (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}"):
        if marker in path:  # an installed package of another environment
            rel = path.rsplit(marker, 1)[1].removesuffix(".py")
            parts = [p for p in rel.split(os.sep) if p != "__init__"]
            if parts and all(p.isidentifier() for p in parts):
                return ".".join(parts)
    return Path(path).stem


def library_call(frame: dict[str, Any]) -> str:
    """How a user would name the call: `time.sleep`, `httpx2.Client.get`,
    `requests.api.get` (the module up to its first private part, then the function)."""
    if frame.get("file") == BUILTIN_FILE:
        return str(frame.get("function", "?"))
    public = []
    for part in module_of(str(frame.get("file", ""))).split("."):
        if part.startswith("_"):
            break
        public.append(part)
    return ".".join([*public, str(frame.get("function", "?"))])


def display_path(path: str, root: str | None = None) -> str:
    """`path` relative to `root` (default: the working directory) when it is inside it."""
    base = os.path.abspath(root or os.getcwd())
    if _under(path, base):
        return os.path.relpath(path, base)
    return path


def _user_index(frames: Sequence[dict[str, Any]]) -> int | None:
    """The innermost frame of the user's code, or None."""
    return next(
        (i for i in range(len(frames) - 1, -1, -1) if is_user_file(str(frames[i]["file"]))), None
    )


def _library_span(frames: Sequence[dict[str, Any]]) -> tuple[str, str, str] | None:
    """(package, outermost function, innermost function) of the innermost installed
    package on a stack with no user frame: `("fastapi", "serialize_response",
    "jsonable_encoder")`. The standard library's frames inside it (`dataclasses`) are
    skipped, so the same code gets the same name whichever of them a sample caught."""
    packaged = [
        (i, f)
        for i, f in enumerate(frames)
        if f["file"] != BUILTIN_FILE and _in_site_packages(str(f["file"]))
    ]
    if not packaged:
        return None
    inner = packaged[-1][1]
    module = module_of(str(inner["file"]))
    package = module.split(".")[0]
    caller = inner
    for _, frame in reversed(packaged):
        # Out of the innermost module (jsonable_encoder's recursion): its caller, when it is
        # the same package (fastapi.routing.serialize_response).
        frame_module = module_of(str(frame["file"]))
        if frame_module == module:
            continue
        if frame_module.split(".")[0] == package:
            caller = frame
        break
    return package, _short(str(caller["function"])), _short(str(inner["function"]))


def _short(function: str) -> str:
    """A function's name without its module; a method keeps its class (`Client.get`)."""
    parts = function.split(".")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return ".".join(parts[-2:])
    return parts[-1]


def _in_site_packages(path: str) -> bool:
    return f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path


def _key_of(
    frames: Sequence[dict[str, Any]], root: str | None, *, waiting: bool = False
) -> tuple[tuple[str, ...], str]:
    """(what identifies the place whatever the sampled line, its description). `waiting`:
    the loop thread was off the CPU (asleep, not runnable) while this stack held it, so a
    user frame with no call named is not `(CPU)`."""
    if not frames:
        return ("none",), "no stack sampled"
    index = _user_index(frames)
    if index is None and waiting and at_loop_runner(frames):
        # Off the CPU at its runner while a tick was overdue: the poller would have returned,
        # so the loop thread waited for the GIL, which another thread held.
        return ("gil",), f"{GIL_WAIT} (the loop thread waited for it in its runner)"
    if index is None:
        span = _library_span(frames)
        if span is not None:
            package, outer, inner = span
            inside = inner if outer == inner else f"{outer} -> {inner}"
            return ("lib", *span), f"{package} ({inside}) (no frame of your code)"
        inner = next((f for f in reversed(frames) if f["file"] != BUILTIN_FILE), frames[-1])
        where = f"{display_path(str(inner['file']), root)}:{inner['line']}"
        text = f"{library_call(frames[-1])} (no frame of your code; innermost {where})"
        return ("raw", library_call(frames[-1])), text
    frame = frames[index]
    head = f"{display_path(str(frame['file']), root)}:{frame['line']} in {frame['function']}"
    if index == len(frames) - 1:
        if waiting:
            key = ("user", str(frame["file"]), str(frame["function"]), "wait")
            return key, f"{head} (waiting, not CPU)"
        return ("user", str(frame["file"]), str(frame["function"]), "cpu"), f"{head} (CPU)"
    call = library_call(frames[index + 1])
    return ("user", str(frame["file"]), str(frame["function"]), call), f"{head} -> {call}"


def describe_frames(frames: Sequence[dict[str, Any]], root: str | None = None) -> str:
    """One stack (innermost last) as `file:line in function -> library call`,
    `file:line in function (CPU)`, or, with no frame of the user's code,
    `package (outer -> inner) (no frame of your code)`."""
    return _key_of(frames, root)[1]


def _without_gc(stacks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stacks sampled outside garbage collection (all of them, GC frame dropped, when
    every sample caught the collector)."""
    plain = [s for s in stacks if not _is_gc(s.get("frames", []))]
    if plain:
        return plain
    return [{**s, "frames": list(s.get("frames", []))[:-1]} for s in stacks]


def _is_gc(frames: Sequence[dict[str, Any]]) -> bool:
    return bool(frames) and frames[-1].get("function") == GC_FUNCTION


def describe_stall(stall: dict[str, Any], root: str | None = None, *, gc: bool = False) -> str:
    """Where a stall held the loop, over all its samples: the place (the user's function
    and the call it was in, or the library) that held it longest (`stack_weight`; the
    sample count for stalls without the sampler's times), so a stall sampled several
    times gets the same name in every run, however busy the runner. `gc=True`: where the collections
    happened instead (the stacks sampled while the collector ran)."""
    stacks = stall.get("stacks") or []
    if gc:
        stacks = [
            {**s, "frames": list(s["frames"])[:-1]} for s in stacks if _is_gc(s.get("frames", []))
        ]
    else:
        stacks = _without_gc(stacks)
    if not stacks:
        return "no stack sampled"
    weight: dict[tuple[str, ...], float] = {}
    count: dict[tuple[str, ...], int] = {}
    text: dict[tuple[str, ...], tuple[float, str]] = {}
    for stack in stacks:
        key, description = _key_of(stack.get("frames", []), root, waiting=_waiting(stack, stall))
        held = stack_weight(stack)
        weight[key] = weight.get(key, 0) + held
        count[key] = count.get(key, 0) + int(stack.get("count", 0))
        if held > text.get(key, (-1.0, ""))[0]:
            text[key] = (held, description)
    mine = [k for k in weight if k[0] == "user"]
    others = [k for k in weight if k[0] != "user"]
    if mine and sum(weight[k] for k in mine) >= sum(weight[k] for k in others):
        # The user's places by the time each held the loop (a 50 ms sleep beside a 25 ms
        # client build: the sleep, however the samples fell).
        best = max(mine, key=lambda k: (weight[k], text[k][1]))
    else:
        # No frame of the user's: one library's steps in turn (fastapi's encoder, then
        # starlette's render), each CPU-bound, named by the one most samples caught, as a
        # busy runner stretches the held times of both alike.
        best = max(others or mine, key=lambda k: (count[k], weight[k], text[k][1]))
    return text[best][1]


def stack_weight(stack: dict[str, Any]) -> float:
    """How long a sampled stack held its stall's loop: the sampler's `held_s` (the seconds
    from the sample before it, less the process's waits for a CPU meanwhile: a slow
    neighbour on a busy runner is not the hold), else its sample count."""
    if "held_s" in stack:
        return float(stack["held_s"])
    return float(stack.get("count", 0))


def _waiting(stack: dict[str, Any], stall: dict[str, Any]) -> bool:
    """True when the loop thread was asleep (not running, not waiting for a CPU) for most
    of the time this stack held the loop: measured per stack by the sampler from the
    thread's own scheduler times, else over the whole stall. At the loop's runner, by the
    loop thread's own times over the stall when known: the per-stack figures take every
    thread's waits out, and a thread holding the GIL beside CPU hogs waits for a CPU too."""
    off_cpu = loop_off_cpu_s(stall)
    if off_cpu is not None and at_loop_runner(stack.get("frames", [])):
        return off_cpu > float(stall.get("duration_s", 0.0)) / 2
    if "ran_s" in stack and "slept_s" in stack:
        return float(stack["slept_s"]) > float(stack["ran_s"])
    ran = stall.get("ran_s")
    if ran is None:
        return False
    busy = float(stall.get("duration_s", 0.0)) - float(stall.get("starved_s", 0.0))
    return busy > 0 and float(ran) < busy / 2


def longest_stall(stalls: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    return max(stalls, key=lambda s: s.get("duration_s", 0.0), default=None)


def blocking_line(stalls: Iterable[dict[str, Any]], root: str | None = None) -> str | None:
    """`file:line in function -> call (longest stall 203 ms)`, or None with no stall."""
    stall = longest_stall(stalls)
    if stall is None:
        return None
    ms = stall.get("duration_s", 0.0) * 1000
    return f"{describe_stall(stall, root)} (longest stall {ms:.0f} ms)"
