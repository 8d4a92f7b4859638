"""Runs probes: concurrently, each under its own deadline, the whole run under a
global one.  Every outcome is data (a ProbeResult); nothing a probe does can
stop the others or the report."""

from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from qdiag import probe as P
from qdiag.brokers import BROKERS
from qdiag.config import Settings
from qdiag.context import DeadlineReached, Paths, ProbeContext
from qdiag.errors import UsageError

log = logging.getLogger("qdiag.runner")

# Seconds the discovery phase may take before the window opens, at most, and
# the share of the run's spare time (--timeout minus the window) it may take:
# with a short --timeout, discovery must not eat the probes' budget.
DISCOVERY_BUDGET_S = 3.0
DISCOVERY_SHARE = 0.2
# Time kept back from the global deadline to build and print the report.
REPORT_RESERVE_S = 0.5
# `while_waiting` work starts once every probe waits for its next sample, or after this.
IDLE_WAIT_CAP_S = 2.0
# A probe's own deadline falls this much before the runner stops waiting for it
# (at most; a tenth of its time when that is less): a client call bounded by
# ctx.io_timeout() times out at the deadline, and the probe then has this long
# to say so in its own words ("no answer from 10.0.0.5:9092 within 2.0s")
# before the runner records a bare timeout.
MESSAGE_ROOM_S = 0.5
MAX_ERROR_CHARS = 300


@dataclass
class ProbeResult:
    name: str
    status: str
    duration_s: float
    error: str | None = None
    observations: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None  # kept only with --debug

    def as_dict(self) -> dict[str, Any]:
        doc = {"name": self.name, "status": self.status, "duration_s": round(self.duration_s, 3),
               "error": self.error, "observations": self.observations}
        if self.traceback:
            doc["traceback"] = self.traceback
        return doc


def effective_timeout(probe: P.Probe, settings: Settings) -> float:
    """Seconds a probe may run: the sampling window plus its own allowance.

    The allowance, lowest precedence first: the probe's default, the global
    --probe-timeout, the probe's own `[probes.NAME] timeout` in the config.
    """
    allowance = probe.timeout_s
    if settings.probe_timeout_s is not None:
        allowance = settings.probe_timeout_s
    own = settings.options_for(probe.name).get("timeout")
    if isinstance(own, (int, float)) and not isinstance(own, bool) and own > 0:
        allowance = float(own)
    return settings.window_s + allowance


def discovery_budget(settings: Settings) -> float:
    """Seconds discovery may take: DISCOVERY_SHARE of the time the run has beside its window, at most DISCOVERY_BUDGET_S."""
    spare = settings.timeout_s - settings.window_s - REPORT_RESERVE_S
    return max(0.0, min(DISCOVERY_BUDGET_S, DISCOVERY_SHARE * spare))


def message_room(span: float) -> float:
    """Seconds between a probe's own deadline and the runner's cutoff, for a probe given `span` seconds."""
    return max(0.0, min(MESSAGE_ROOM_S, 0.1 * span))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if not isinstance(exc, (P.ProbeError, P.NotApplicable)) and text:
        first = f"{type(exc).__name__}: {first}"
    return first if len(first) <= MAX_ERROR_CHARS else first[: MAX_ERROR_CHARS - 1] + "…"


def _why_not_applicable(probe: P.Probe, settings: Settings) -> str | None:
    if not probe.needs:
        return None
    if any(settings.targets.has(kind) for kind in probe.needs):
        return None
    flags = {**{name: b.flag for name, b in BROKERS.items()}, "processes": "--pid/--process",
             "dependencies": "--dependency", "logs": "--log"}
    return "no target: give " + " or ".join(flags[k] for k in probe.needs)


def _detached_copy(data: dict) -> dict:
    try:
        return copy.deepcopy(data)
    except Exception:  # the probe thread may be mutating it; a shallow copy still keeps most
        return dict(data)


@dataclass
class _Running:
    probe: P.Probe
    thread: threading.Thread
    ctx: ProbeContext
    cutoff: float  # when the runner stops waiting for it


class Runner:
    def __init__(self, settings: Settings, probes: Iterable[P.Probe], *, paths: Paths | None = None,
                 clock: Callable[[], float] = time.monotonic, on_event: Callable[[str, str], None] | None = None):
        self.settings = settings
        self.probes = list(probes)
        self.paths = paths or Paths()
        self.clock = clock
        self.on_event = on_event or (lambda name, status: None)
        self._new_run()

    def _new_run(self) -> None:
        # Shared with the probe threads of one run: results, and when each began.
        self._done: dict[str, ProbeResult] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def _context(self, name: str, deadline: float, discovered: list[dict]) -> ProbeContext:
        return ProbeContext(settings=self.settings, name=name, deadline=deadline, window_start=self.clock(),
                            paths=self.paths, clock=self.clock, discovered=discovered,
                            log=logging.getLogger(f"qdiag.probe.{name}"))

    def run(self, while_waiting: Callable[[], None] | None = None) -> tuple[list[ProbeResult], list[dict]]:
        """Returns (one result per probe, in registry order; discovered consumers).

        `while_waiting` is the caller's own work (loading the rules the report needs), done
        in this thread once the probes' set-up is over and they wait between samples: the
        window's idle time, not the time before the first sample or after the last.  What
        it raises is raised here, after the probes end."""
        self._new_run()
        now = self.clock()
        # The --timeout counts from the run's start (the process's, for the CLI): time
        # spent starting up and reading the config comes out of the same budget.
        start = self.settings.run_started(now)
        global_deadline = start + self.settings.timeout_s - REPORT_RESERVE_S
        results: dict[str, ProbeResult] = {}
        runnable: list[P.Probe] = []
        for probe in self.probes:
            if self.settings.only_probes and probe.name not in self.settings.only_probes:
                results[probe.name] = ProbeResult(probe.name, P.SKIPPED, 0.0, "not selected by --probe")
            elif probe.name in self.settings.skip_probes:
                results[probe.name] = ProbeResult(probe.name, P.SKIPPED, 0.0, "turned off by --no-probe")
            elif self.settings.options_for(probe.name).get("enabled") is False:
                results[probe.name] = ProbeResult(probe.name, P.SKIPPED, 0.0, "turned off in the config file")
            elif (why := _why_not_applicable(probe, self.settings)) is not None:
                results[probe.name] = ProbeResult(probe.name, P.NOT_APPLICABLE, 0.0, why)
            else:
                runnable.append(probe)
        for result in results.values():
            self.on_event(result.name, result.status)

        # Discovery runs alongside the probes that do not need its answer (the brokers'
        # windows open at once); only the consumer-side probes wait for it.
        discovery_deadline = min(global_deadline, now + discovery_budget(self.settings))
        found: dict[str, list[dict]] = {}
        discovery = None
        if any(p.discover is not None or p.uses_discovery for p in runnable):
            discovery = threading.Thread(
                target=lambda: found.setdefault("items", self._discover(runnable, discovery_deadline)),
                name="discovery", daemon=True)
            discovery.start()
        running = self._start([p for p in runnable if not p.uses_discovery], global_deadline, [])
        if discovery is not None:
            discovery.join(max(0.0, discovery_deadline - self.clock()))
        discovered = list(found.get("items") or [])
        running += self._start([p for p in runnable if p.uses_discovery], global_deadline, discovered)
        failed: BaseException | None = None
        if while_waiting is not None:
            idle_from = min(global_deadline, self.clock() + min(IDLE_WAIT_CAP_S, self.settings.window_s))
            for r in running:
                r.ctx.waiting.wait(max(0.0, idle_from - self.clock()))
            try:
                while_waiting()
            except BaseException as exc:  # noqa: BLE001 - re-raised once the probes are accounted for
                failed = exc
        for result in self._finish(running, global_deadline):
            results[result.name] = result
        if failed is not None:
            raise failed
        return [results[p.name] for p in self.probes], discovered

    def _discover(self, probes: list[P.Probe], deadline: float) -> list[dict]:
        with_discovery = [p for p in probes if p.discover is not None]
        if not with_discovery:
            return []
        found: list[dict] = []
        lock = threading.Lock()

        def work(probe: P.Probe) -> None:
            ctx = self._context(probe.name, deadline, [])
            try:
                items = probe.discover(ctx) or []
            except Exception as exc:  # discovery is a bonus: its failure only loses the bonus
                log.debug("discovery of %s failed: %s", probe.name, one_line(exc), exc_info=self.settings.debug)
                return
            with lock:
                found.extend(items)

        threads = [threading.Thread(target=work, args=(p,), name=f"discover-{p.name}", daemon=True)
                   for p in with_discovery]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - self.clock()))
        with lock:
            unique = {}
            for item in found:
                # Consumers on other hosts have no pid here: one entry per address.
                unique.setdefault(item.get("pid") or ("peer", item.get("peer")), item)
            return list(unique.values())

    def _start(self, probes: list[P.Probe], global_deadline: float, discovered: list[dict]) -> list["_Running"]:
        running = []
        for probe in probes:
            # Probe threads are daemons: one stuck in a C call cannot be killed,
            # but it must never keep qdiag from exiting.
            now = self.clock()
            cutoff = min(global_deadline, now + effective_timeout(probe, self.settings))
            ctx = self._context(probe.name, cutoff - message_room(cutoff - now), discovered)
            thread = threading.Thread(target=self._run_one, args=(probe, ctx, self._done, self._lock, self._started),
                                      name=f"probe-{probe.name}", daemon=True)
            running.append(_Running(probe, thread, ctx, cutoff))
            self.on_event(probe.name, "running")
            thread.start()
        return running

    def _finish(self, running: list["_Running"], global_deadline: float) -> list[ProbeResult]:
        done, lock, started = self._done, self._lock, self._started
        for r in running:
            r.thread.join(max(0.0, r.cutoff - self.clock()))
        out = []
        for r in running:
            probe, ctx = r.probe, r.ctx
            with lock:
                result = done.get(probe.name)
                if result is None:
                    # Still running at its deadline: record a timeout, keep what it had.
                    waited = self.clock() - started.get(probe.name, ctx.window_start)
                    reason = ("the run's --timeout was reached" if r.cutoff >= global_deadline
                              else f"no answer within {effective_timeout(probe, self.settings):g}s")
                    result = ProbeResult(probe.name, P.TIMEOUT, waited, reason, _detached_copy(ctx.partial))
                    done[probe.name] = result
                    self.on_event(probe.name, P.TIMEOUT)
            out.append(result)
        return out

    def _run_one(self, probe: P.Probe, ctx: ProbeContext, done: dict, lock: threading.Lock, started: dict) -> None:
        began = self.clock()
        started[probe.name] = began
        tb = None
        try:
            observations = probe.collect(ctx)
            if observations is None:
                observations = {}
            if not isinstance(observations, dict):
                raise TypeError(f"probe returned {type(observations).__name__}, not a dict")
            status, error = P.OK, None
        except P.NotApplicable as exc:
            status, error, observations = P.NOT_APPLICABLE, one_line(exc), dict(ctx.partial)
        except DeadlineReached:
            status, error, observations = P.TIMEOUT, "deadline reached while sampling", dict(ctx.partial)
        except Exception as exc:
            status, error, observations = P.ERROR, one_line(exc), dict(ctx.partial)
            if self.settings.debug:
                tb = traceback.format_exc()
        result = ProbeResult(probe.name, status, self.clock() - began, error, observations, tb)
        ctx.waiting.set()
        with lock:
            if probe.name in done:  # already recorded as timed out; too late to count
                return
            done[probe.name] = result
        self.on_event(probe.name, status)


def run_probes(settings: Settings, probes: Iterable[P.Probe] | None = None, *,
               while_waiting: Callable[[], None] | None = None, **kwargs) -> tuple[list[ProbeResult], list[dict]]:
    chosen = list(P.all_probes().values()) if probes is None else list(probes)
    known = {p.name for p in chosen}
    for flag, names in (("--probe", settings.only_probes), ("--no-probe", settings.skip_probes)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"{flag} {unknown[0]}: no such probe", "known probes: " + ", ".join(sorted(known)))
    return Runner(settings, chosen, **kwargs).run(while_waiting)

