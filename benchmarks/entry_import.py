"""What loading the pytest plugin costs a project: the entry point's import, in a fresh process.

    python benchmarks/entry_import.py [runs]

pytest imports the `pytest11` entry (`pytest_fanout`) and its plugin modules in
every run of every project where the package is installed, whether or not a
test uses a fanout fixture. Each run is a fresh interpreter that imports pytest
first (it is there anyway), then times `import pytest_fanout` and the three
plugin modules it names, and reads the stack declaration the way
`pytest_configure` does in a directory without one. Prints every run, the
median and the minimum (docs/performance.md quotes them; target: under 30 ms), and the
heavy libraries that got imported (there must be none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

HEAVY = ("uvicorn", "fastapi", "starlette", "locust", "gevent", "httpx2", "pydantic", "aiohttp")

PROBE = f"""
import json, sys, time
begin = time.perf_counter()
import pytest
start = time.perf_counter()
import pytest_fanout, pytest_fanout.plugin, pytest_fanout.gate.plugin, pytest_fanout.load.plugin
imported = time.perf_counter() - start
from pytest_fanout.spec import resolve
resolve({{}}, start=".")
configured = time.perf_counter() - start
heavy = [name for name in {HEAVY!r} if name in sys.modules]
print(json.dumps({{
    "pytest_s": start - begin, "import_s": imported, "with_spec_s": configured, "heavy": heavy
}}))
"""


def one_run(directory: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def main(runs: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        results = [one_run(directory) for _ in range(runs)]
    imports = [r["import_s"] * 1000 for r in results]
    totals = [r["with_spec_s"] * 1000 for r in results]
    print("import of the entry point and its plugins (ms):", " ".join(f"{t:.1f}" for t in imports))
    print(
        f"median {statistics.median(imports):.1f} ms, min {min(imports):.1f} ms over {runs} runs;"
        f" with reading the (absent) [tool.fanout]: median {statistics.median(totals):.1f} ms"
    )
    own = statistics.median(r["pytest_s"] * 1000 for r in results)
    print(f"for scale, `import pytest` itself in the same processes: median {own:.1f} ms")
    heavy = sorted({name for r in results for name in r["heavy"]})
    print("heavy libraries imported:", ", ".join(heavy) or "none")
    return 1 if heavy else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=20)
    sys.exit(main(parser.parse_args().runs))
