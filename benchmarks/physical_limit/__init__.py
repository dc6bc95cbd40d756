"""Fan-out at the physical limit: the app's routes next to raw aiohttp, httpx and httpx2.

    python -m benchmarks.physical_limit          # ~4 minutes, from the repository root
    python -m benchmarks.physical_limit --ns 10,100 --delays-ms 50 --repeats 1 --out /tmp/b

One run, one stub upstream process, side by side:

* the stub's own zero-delay throughput, pinned to one core, under keep-alive load
  from client processes on the other cores (it must never be the bottleneck);
* every route of the real app process (`pytest_fanout.servers.stack.AppServer`), on each
  engine, at n in (10, 100, 1000) and upstream delay 50 ms and 0 ms;
* the same calls made directly by raw aiohttp, plain httpx and plain httpx2, each in a
  fresh client process (what a user would pick instead of the app's client).

Each row: median wall time of repeats, calls that succeeded, peak in flight at the
upstream (exact, from its gauge), efficiency against the ideal delay * ceil(n/c),
and client CPU per call (the app process's CPU from /proc/<pid>/stat; a raw
client's own process CPU). Writes docs/benchmark.md and docs/benchmark.png and
ends by printing the issue's ratios. Sequential patterns are capped at n <= 100 at
50 ms (n = 1000 would be 50 s by definition). Every load loop is bounded in count
and time; every child process is ended in a `finally`.

One module per job: `plan` (what is measured), `rows` (a result row), `app_rows`
(the app process), `raw_clients` (a raw client in its own process), `stub_load`
(the stub's throughput and what its route, recording and call log cost),
`guards` (what admission control and the deadline cost), `targets` (the issue's
ratios), `report` (Markdown, plot), `run` (the whole run and its command line).
"""
