"""Probing for the commands that probe (investigate, snapshot, check): find
local brokers, run the probes with live progress on a terminal, and return the
redacted snapshot document."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Callable, TextIO

from qdiag import autodetect, snapshot, watchdog
from qdiag.brokers import BROKERS
from qdiag.config import Settings
from qdiag.redact import Redactor, redact_url
from qdiag.runner import run_probes

log = logging.getLogger("qdiag")


def guard(stderr: TextIO, settings: Settings, *, beyond_s: float = 0.0):
    """The watchdog over the probing (qdiag/watchdog.py): the run ends within its
    --timeout (plus `beyond_s`, for what is allowed longer, and a grace), counted
    from the run's start.

    qdiag used to lower its own CPU priority (nice 10) here.  On a host whose
    cores are all busy, which is when it is run, that left it a few percent of
    one core: a 30 s deadline became minutes.  It now runs at the priority it is
    started with; its cost is small (see the README), and `nice -n 10 qdiag ...`
    still puts the workload first for those who want that."""
    started = settings.run_started(time.monotonic())
    return watchdog.guard(stderr, deadline=started + settings.timeout_s + beyond_s, timeout_s=settings.timeout_s,
                          debug=settings.debug)


def _broker_label(target: Any) -> str | None:
    """A broker target as the snapshot records it: its URL with the password masked, or its label."""
    if target is None:
        return None
    return redact_url(target.url) if getattr(target, "url", None) else target.label()


def settings_doc(settings: Settings, auto_found: list[str]) -> dict[str, Any]:
    t = settings.targets
    return {
        "targets": {
            **{name: _broker_label(t.broker(name)) for name in BROKERS},
            "queues": list(t.queues), "groups": list(t.groups), "pids": list(t.pids),
            "processes": list(t.process_patterns), "dependencies": [redact_url(d) for d in t.dependencies],
            "logs": list(t.logs),
        },
        "auto_detected": auto_found,
        "window_s": settings.window_s,
        "timeout_s": settings.timeout_s,
        "probe_timeout_s": settings.probe_timeout_s,
        "only_probes": list(settings.only_probes),
        "skip_probes": list(settings.skip_probes),
        "config_file": settings.config_file,
    }


@contextmanager
def _progress(stream: TextIO | None, color: bool):
    """Live per-probe progress on `stream` (stderr, when it is a terminal); silent without one."""
    if stream is None:
        yield lambda name, status: None
        return
    from rich.console import Console

    console = Console(file=stream, force_terminal=True, no_color=not color, highlight=False)
    states: dict[str, str] = {}

    def line() -> str:
        running = sorted(n for n, s in states.items() if s == "running")
        done = sum(1 for s in states.values() if s != "running")
        return f"probing: {done}/{len(states)} done" + (f"; waiting for {', '.join(running)}" if running else "")

    with console.status(line()) as status:
        def on_event(name: str, state: str) -> None:
            states[name] = state
            status.update(line())

        yield on_event


def collect(settings: Settings, argv: list[str], *, progress: TextIO | None = None,
            color: bool = False, while_waiting: Callable[[], None] | None = None) -> dict[str, Any]:
    """Probe and return the snapshot document; `progress` is the terminal to show progress on, if any;
    `while_waiting` is work done while the probes wait between samples (runner.Runner.run)."""
    settings, auto_found = autodetect.detect(settings)
    for found in auto_found:
        log.info("auto-detected %s", found)
    with _progress(progress, color) as on_event:
        results, discovered = run_probes(settings, on_event=on_event, while_waiting=while_waiting)
    doc = snapshot.build(
        probes=[r.as_dict() for r in results],
        settings_doc=settings_doc(settings, auto_found),
        command=list(argv),
        window_s=settings.window_s,
        discovered=discovered,
    )
    # Redaction happens once, here, before anything is written or printed.
    return Redactor(secrets_of(settings))(doc)


def secrets_of(settings: Settings) -> set[str]:
    """Passwords in target URLs, and secret-looking values of [probes.NAME] options (sasl_password, ...)."""
    found = set(settings.targets.secrets())
    for options in settings.probe_options.values():
        for key, value in options.items():
            if isinstance(value, str) and value and Redactor.is_secret_key(key):
                found.add(value)
    return found


def anything_probed(doc: dict) -> bool:
    return any(p.get("status") == "ok" for p in doc.get("probes", []))
