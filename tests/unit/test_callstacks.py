"""Reading sampled stacks: the user's innermost line and the library call it was in."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import httpx2

from pytest_fanout.servers.callstacks import (
    blocking_line,
    describe_frames,
    describe_stall,
    is_user_file,
    library_call,
)

ROOT = "/srv/shop"
STDLIB = sysconfig.get_paths()["stdlib"]
HTTPX2_CLIENT = str(Path(httpx2.__file__).parent / "_client.py")


def frame(file: str, line: int, function: str) -> dict:
    return {"file": file, "line": line, "function": function}


SERVER = [
    frame(f"{STDLIB}/asyncio/events.py", 80, "Handle._run"),
    frame(f"{ROOT}/shop/main.py", 30, "quote"),
    frame(f"{ROOT}/shop/helpers.py", 14, "load_rates"),
]


def test_a_library_call_is_named_by_its_public_module_and_qualname() -> None:
    frames = [
        *SERVER,
        frame(HTTPX2_CLIENT, 1000, "Client.get"),
        frame(f"{STDLIB}/socket.py", 700, "SocketIO.readinto"),
        frame("<built-in>", 0, "socket.socket.recv_into"),
    ]
    assert describe_frames(frames, ROOT) == "shop/helpers.py:14 in load_rates -> httpx2.Client.get"


def test_a_c_function_is_named_as_called() -> None:
    frames = [*SERVER, frame("<built-in>", 0, "time.sleep")]
    assert describe_frames(frames, ROOT) == "shop/helpers.py:14 in load_rates -> time.sleep"


def test_the_users_own_bytecode_is_cpu() -> None:
    assert describe_frames(SERVER, ROOT) == "shop/helpers.py:14 in load_rates (CPU)"


def test_a_stdlib_call_keeps_its_submodule() -> None:
    frames = [*SERVER, frame(f"{STDLIB}/urllib/request.py", 200, "urlopen")]
    assert describe_frames(frames, ROOT).endswith("-> urllib.request.urlopen")


def test_a_stack_without_user_code_says_so() -> None:
    frames = [SERVER[0], frame(HTTPX2_CLIENT, 1000, "Client.get")]
    text = describe_frames(frames, ROOT)
    assert text == "httpx2 (Client.get) (no frame of your code)"


def test_paths_outside_the_root_stay_absolute() -> None:
    assert describe_frames(SERVER, "/elsewhere").startswith(f"{ROOT}/shop/helpers.py:14")


def test_user_files_are_neither_stdlib_nor_packages_nor_the_harness() -> None:
    assert is_user_file(f"{ROOT}/shop/helpers.py")
    assert is_user_file(__file__)
    assert not is_user_file(f"{STDLIB}/json/encoder.py")
    assert not is_user_file(HTTPX2_CLIENT)
    assert not is_user_file("<frozen importlib._bootstrap>")
    wheel_app = Path(HTTPX2_CLIENT).parent.parent / "pytest_fanout/reference_app/fanout.py"
    assert is_user_file(str(wheel_app))
    assert not is_user_file(
        os.path.join(os.path.dirname(library_call.__code__.co_filename), "measure.py")
    )


def test_the_most_frequent_stack_and_the_longest_stall_win() -> None:
    rare = {"count": 1, "frames": [*SERVER, frame("<built-in>", 0, "time.sleep")]}
    common = {"count": 9, "frames": SERVER}
    short = {"duration_s": 0.05, "stacks": [rare]}
    long = {"duration_s": 0.4, "stacks": [rare, common]}
    assert describe_stall(long, ROOT) == "shop/helpers.py:14 in load_rates (CPU)"
    assert blocking_line([short, long], ROOT) == (
        "shop/helpers.py:14 in load_rates (CPU) (longest stall 400 ms)"
    )
    assert blocking_line([]) is None
    assert describe_stall({"duration_s": 0.1, "stacks": []}) == "no stack sampled"
