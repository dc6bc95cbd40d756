"""Hold mode of the stub upstream: the concurrency a client's code allows, by construction.

A timed peak (calls in flight while each waits the configured delay) is what
the machine reached before the first answers came back: it depends on the
client's CPU per call and on the runner's load. In hold mode the stub answers
nothing until the app has nothing more to send: it holds each arriving call,
and when no new call came for a quiet window (and the app's process is idle,
when its pid is known), it answers every held call at once. That is one
*wave*; the next calls the app makes start the next one. The wave sizes are
the request's concurrency structure: `[20]` for a gather of 20, `[100, 100]`
for 200 calls through a pool of 100, `[7, 7, 7, 7, 7, 5]` for a semaphore of 7
over 40 calls, `[1] * 8` for 8 calls awaited one after the other; the same on
any machine, at any load.

The quiet window adapts to the gaps between arrivals: `quiet_factor` times
the longest gap seen in the wave, within [quiet_min_ms, quiet_max_ms]. With
`app_pid`, the stub also reads the app's threads' CPU and run-queue time
(`/proc/<pid>/task/*/schedstat`, Linux) and waits while the app is busy or
waiting for a CPU: a starved runner or a garbage-collection pause delays the
release instead of splitting a wave. A `count` releases a wave as soon as it
holds that many calls.

Bounded: a wave held longer than `max_wave_s`, or more than `max_calls` calls
held in all, ends the hold: the held calls are answered, later calls are
answered as usual, and the report carries an `error` naming the bound (the
harness raises it as one line). A client that never stops sending cannot hang
a test. An app that never goes idle (a thread at 100% CPU outside the request)
cannot hold it either: once it stayed busy `max_busy_s` with no new call, the
hold ends the same way with `never_idle` set, and the harness measures without
the structure, saying why.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from pytest_fanout.servers.proctree import thread_schedstats

#: How long the app's CPU demand is sampled before a release (seconds).
BUSY_SAMPLE_S = 0.010
#: The app is busy when its threads ran, or waited for a CPU, this fraction of the sample.
BUSY_SHARE = 0.25
#: Largest accepted value of each bound (a mistake beyond, not a slow client).
_MAX_CALLS = 1_000_000
_MAX_SECONDS = 3600.0


class HoldError(ValueError):
    """A hold setting the stub cannot use; `str()` is one line."""


@dataclass
class HoldSettings:
    """How a hold decides that a wave is complete, and its bounds."""

    #: The quiet window: quiet_factor x the longest gap between arrivals in the wave,
    #: never under quiet_min_ms nor over quiet_max_ms.
    quiet_min_ms: float = 30.0
    quiet_max_ms: float = 500.0
    quiet_factor: float = 4.0
    #: The first wave of ONE call is held at least this long after its arrival (0: off):
    #: a call paced by a rate limiter comes within it and joins the wave, where an awaited
    #: loop's next call cannot come while its call is held. Set for a rate-limited upstream
    #: (`held.paced_hold`); once a hold, so a loop that awaits pays it once.
    single_quiet_ms: float = 0.0
    #: Release a wave as soon as it holds this many calls (0: by the quiet window alone).
    count: int = 0
    #: Bounds: calls held over the whole hold, and how long one wave may be held.
    max_calls: int = 10_000
    max_wave_s: float = 20.0
    #: The app's process id: release only once its threads are idle (0: not known).
    app_pid: int = 0
    #: How long the app may stay busy with no new call before the hold gives up on its
    #: idleness (a thread at 100% CPU outside the request never lets it go idle): the held
    #: calls are answered and the report says `never_idle`. Under the 5 s an app's own
    #: HTTP client often waits, with the quiet window on top.
    max_busy_s: float = 2.0

    @classmethod
    def from_json(cls, data: Any) -> HoldSettings:
        """Settings from a control request body: every value checked, unknown names refused."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise HoldError("hold settings must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise HoldError(f"unknown hold setting(s): {', '.join(unknown)}")
        settings = cls()
        for name, value in data.items():
            whole = isinstance(known[name].default, int)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise HoldError(f"{name}={value!r} is not a number")
            if not math.isfinite(value) or value < 0:
                raise HoldError(f"{name}={value!r} must be a finite number >= 0")
            if whole and value != int(value):
                raise HoldError(f"{name}={value!r} must be a whole number")
            setattr(settings, name, int(value) if whole else float(value))
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.quiet_min_ms > self.quiet_max_ms:
            raise HoldError("quiet_min_ms must not exceed quiet_max_ms")
        if self.single_quiet_ms / 1000 >= self.max_wave_s:
            raise HoldError("single_quiet_ms must be shorter than max_wave_s")
        if self.quiet_max_ms > _MAX_SECONDS * 1000 or self.max_wave_s > _MAX_SECONDS:
            raise HoldError(f"a hold lasts at most {_MAX_SECONDS:.0f} s")
        if not 1 <= self.max_calls <= _MAX_CALLS or self.count > _MAX_CALLS:
            raise HoldError(f"max_calls must be from 1 to {_MAX_CALLS} (count at most that)")
        if self.max_wave_s <= 0:
            raise HoldError("max_wave_s must be > 0")
        if self.quiet_max_ms / 1000 >= self.max_wave_s:
            raise HoldError("quiet_max_ms must be shorter than max_wave_s")
        if not 0 < self.max_busy_s <= _MAX_SECONDS:
            raise HoldError(f"max_busy_s must be > 0 and at most {_MAX_SECONDS:.0f} s")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _task_times(pid: int) -> tuple[int, bool] | None:
    """(nanoseconds the process's threads have run or waited for a CPU, whether one of them
    is runnable now), or None when /proc does not say (not Linux, the process is gone).

    The kernel adds a thread's wait for a CPU when the wait ends, so a thread starved
    right now shows no wait yet: its state (R) says it instead."""
    stats = thread_schedstats(pid)
    if stats is None:
        return None
    total, runnable = 0, False
    for tid, (run, wait) in stats.items():
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                # "pid (comm) S ...": the state follows the last ')' (comm may hold one).
                state = f.read().rpartition(b")")[2].split(maxsplit=1)[0]
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        total += run + wait
        runnable = runnable or state in (b"R", b"D")
    return total, runnable


async def app_busy(pid: int, sample_s: float = BUSY_SAMPLE_S) -> bool:
    """Whether the app is still at work over the next `sample_s`: a thread runnable (running
    or waiting for a CPU) at either end, or its threads ran more than BUSY_SHARE of it:
    issuing calls, parsing, collecting garbage, or starved by a loaded runner. False when
    /proc cannot be read (the quiet window alone decides then)."""
    before = _task_times(pid)
    if before is None:
        return False
    start = time.perf_counter()
    await asyncio.sleep(sample_s)
    after = _task_times(pid)
    elapsed = time.perf_counter() - start
    if after is None or elapsed <= 0:
        return False
    return before[1] or after[1] or (after[0] - before[0]) / 1e9 > BUSY_SHARE * elapsed


class Holder:
    """The stub process's hold: armed by the control API, awaited by every item call."""

    def __init__(self) -> None:
        self.settings = HoldSettings()
        self.armed = False
        #: Sizes of the waves released since arming, in order.
        self.waves: list[int] = []
        #: Why the hold ended early (a bound), or None.
        self.error: str | None = None
        #: The hold ended because the app never went idle (max_busy_s), not for its calls.
        self.never_idle = False
        self._wave: list[asyncio.Future[None]] = []
        self._wave_start = 0.0
        self._last = 0.0
        self._longest_gap = 0.0
        self._held_total = 0
        #: A wave of one call was held its `single_quiet_ms` already in this hold.
        self._single_done = False
        self._watcher: asyncio.Task[None] | None = None
        #: The quiet window that closed the last wave (seconds): what the hold waited.
        self.last_quiet_s = 0.0

    def arm(self, settings: HoldSettings) -> dict[str, Any]:
        """Start holding (again): waves and error forgotten, calls held now released."""
        self._release()
        self.settings = settings
        self.waves = []
        self.error = None
        self.never_idle = False
        self._held_total = 0
        self._single_done = False
        self.armed = True
        return self.report()

    def disarm(self) -> dict[str, Any]:
        """Stop holding; calls still held are released as a last wave. The final report."""
        self._release()
        self.armed = False
        return self.report()

    def report(self) -> dict[str, Any]:
        return {
            "armed": self.armed,
            "waves": list(self.waves),
            "held_now": len(self._wave),
            "error": self.error,
            "never_idle": self.never_idle,
            "last_quiet_ms": round(self.last_quiet_s * 1000, 3),
            "settings": self.settings.to_json(),
        }

    async def hold(self) -> bool:
        """Called by an item call instead of its delay: returns when its wave is released.
        False at once when the hold is not armed (the call then waits its usual delay)."""
        if not self.armed:
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._wave:
            self._longest_gap = max(self._longest_gap, now - self._last)
        else:
            self._wave_start = now
            self._longest_gap = 0.0
        self._last = now
        future: asyncio.Future[None] = loop.create_future()
        self._wave.append(future)
        self._held_total += 1
        settings = self.settings
        if self._held_total >= settings.max_calls:
            self._fail(
                f"held {self._held_total} calls in all (max_calls={settings.max_calls}): "
                "the client kept sending"
            )
        elif settings.count and len(self._wave) >= settings.count:
            self._release()
        elif self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch())
        await future
        return True

    def quiet_s(self) -> float:
        """The quiet window now: quiet_factor x the longest gap, within its bounds."""
        s = self.settings
        window = self._gap_quiet_s()
        if s.single_quiet_ms and len(self._wave) == 1 and not self._single_done:
            window = max(window, s.single_quiet_ms / 1000)
        return window

    def _gap_quiet_s(self) -> float:
        """The quiet window from the gaps alone (without a lone call's longer one)."""
        s = self.settings
        window = max(s.quiet_min_ms / 1000, s.quiet_factor * self._longest_gap)
        return min(window, s.quiet_max_ms / 1000)

    async def _watch(self) -> None:
        """Release the wave once no call came for the quiet window and the app is idle; give
        up on the app's idleness once it stayed busy `max_busy_s` with no new call."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        busy_since: float | None = None
        while self._wave:
            now = loop.time()
            deadline = self._wave_start + settings.max_wave_s
            if now >= deadline:
                self._fail(
                    f"a wave was still open after {settings.max_wave_s:g} s (max_wave_s) with "
                    f"{len(self._wave)} calls held: the client never stopped sending"
                )
                return
            quiet_until = self._last + self.quiet_s()
            if now < quiet_until:
                # in steps of the gaps' window: a call that joins a lone one ends its
                # longer window at once (a wave of four must not wait out a lone call's)
                await asyncio.sleep(min(quiet_until, deadline, now + self._gap_quiet_s()) - now)
                continue
            if settings.app_pid and await app_busy(settings.app_pid):
                # computing or starved: more calls may come, unless it is never idle
                if busy_since is None or busy_since < self._last:
                    busy_since = now
                elif loop.time() - busy_since >= settings.max_busy_s:
                    self.never_idle = True
                    self._fail(
                        f"the app's process stayed busy {settings.max_busy_s:g} s with "
                        f"{len(self._wave)} calls held and no new one (max_busy_s): a thread "
                        "at work outside this request never lets it go idle"
                    )
                    return
                continue
            busy_since = None
            if loop.time() - self._last >= self.quiet_s():
                self.last_quiet_s = self.quiet_s()
                self._release()

    def _release(self) -> None:
        wave, self._wave = self._wave, []
        if not wave:
            return
        if len(wave) == 1 and self.settings.single_quiet_ms:
            self._single_done = True
        self.waves.append(len(wave))
        for future in wave:
            if not future.done():
                future.set_result(None)

    def _fail(self, reason: str) -> None:
        """A bound was reached: answer what is held, stop holding, keep the reason."""
        self.error = reason
        self._release()
        self.armed = False
