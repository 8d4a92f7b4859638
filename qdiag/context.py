"""What a probe gets to work with.  Injectable (clock, sleep, filesystem roots)
so tests drive probes without the real host where that matters."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from qdiag.config import Settings
from qdiag.targets import Targets


class DeadlineReached(Exception):
    """Raised inside a probe when its deadline passed; the runner records a timeout."""


@dataclass(frozen=True)
class Paths:
    """Filesystem roots, redirectable so parsers run on recorded fixture trees."""

    proc: str = "/proc"
    sys: str = "/sys"
    dev_kmsg: str = "/dev/kmsg"


@dataclass
class ProbeContext:
    settings: Settings
    name: str = ""
    deadline: float = float("inf")  # monotonic
    window_start: float = 0.0  # monotonic; shared by every probe of one run
    paths: Paths = field(default_factory=Paths)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleeper: Callable[[float], None] = time.sleep
    # Consumer processes discovered from the broker side before the window.
    discovered: list[dict] = field(default_factory=list)
    # What the probe has observed so far; kept if the probe times out.
    partial: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("qdiag"))
    # Set when the probe first waits for its next sample (its set-up is over), or ends:
    # the runner does its own work in that idle time (Runner.run's `while_waiting`).
    waiting: threading.Event = field(default_factory=threading.Event, repr=False)
    _options: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def targets(self) -> Targets:
        return self.settings.targets

    @property
    def window_s(self) -> float:
        return self.settings.window_s

    @property
    def options(self) -> Mapping[str, Any]:
        """This probe's [probes.NAME] options: every declared key, checked, defaults filled in."""
        if self._options is None:
            from qdiag.options import validate
            from qdiag.probe import REGISTRY

            given = self.settings.options_for(self.name)
            probe = REGISTRY.get(self.name)
            self._options = validate(self.name, probe.options, given) if probe else dict(given)
        return self._options

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def io_timeout(self, wanted: float) -> float:
        """A network timeout no longer than what is left of the deadline (at least 50 ms)."""
        return max(0.05, min(wanted, self.remaining()))

    def check_deadline(self) -> None:
        if self.clock() >= self.deadline:
            raise DeadlineReached(self.name)

    def sleep_until(self, when: float) -> None:
        """Sleep until the monotonic time `when`; never past the deadline."""
        delay = when - self.clock()
        if delay > 0:
            self.waiting.set()
            if self.clock() + delay > self.deadline:
                self.sleeper(max(0.0, self.deadline - self.clock()))
                raise DeadlineReached(self.name)
            self.sleeper(delay)

    def sample_times(self, count: int) -> list[float]:
        """`count` >= 2 monotonic instants spread evenly over the window, first at its start."""
        count = max(2, count)
        step = self.window_s / (count - 1)
        return [self.window_start + i * step for i in range(count)]

    def sample(self, take: Callable[[], Any], count: int = 3) -> list[tuple[float, Any]]:
        """Call `take` at `count` instants over the window; returns [(seconds since window start, value)].

        Stops early (keeping what it has) when the deadline would be passed, so a
        slow broker costs at most the probe's deadline.  Callers that need two
        samples to compute a rate must check len() of the result.
        """
        samples: list[tuple[float, Any]] = []
        for when in self.sample_times(count):
            try:
                self.sleep_until(when)
            except DeadlineReached:
                break
            samples.append((self.clock() - self.window_start, take()))
        return samples
