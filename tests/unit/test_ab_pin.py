"""A/B pins both apps to one CPU, every thread of them, so placement cannot favour a side."""

import os
import subprocess
import sys

import pytest

from pytest_fanout.gate.ab import pin_together

CHILD = """
import threading, sys
threading.Thread(target=sys.stdin.read, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

linux_only = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only"
)


def _threads_affinity(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


@linux_only
def test_every_thread_of_every_process_lands_on_one_cpu():
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == b"ready"  # its second thread runs
        cpu = pin_together([child.pid for child in children])
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            assert cpu is None
            return
        assert cpu == allowed[-1]
        for child in children:
            affinity = _threads_affinity(child.pid)
            assert len(affinity) == 2
            assert affinity == [{cpu}, {cpu}]
    finally:
        for child in children:
            child.kill()
            child.wait()


@linux_only
def test_a_process_already_gone_pins_nothing():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pin_together([child.pid]) is None
