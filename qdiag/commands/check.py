"""qdiag check: the same probes, with thresholds, for CI smoke checks and monitoring.

Exit codes follow monitoring plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from qdiag import outputs
from qdiag.check import evaluate as ev
from qdiag.check import junit, policy as pol
from qdiag.collect import collect, guard
from qdiag.config import Settings
from qdiag.environment import Environment
from qdiag.errors import UsageError
from qdiag.inputs import load_rules
from qdiag.isolated import ATTEMPT_GRACE_S, collect_in_child
from qdiag.report.build import build_report

SCHEMA = "qdiag.check/1"
FORMATS = ("text", "json")
# --wait re-checks no more often than this, whatever the window.
MIN_RETRY_INTERVAL_S = 1.0


def load_policy(settings: Settings, policy_file: str | None, flags: dict[str, Any]) -> pol.Policy:
    if policy_file:
        policy = pol.from_file(Path(policy_file))
    elif "check" in settings.sections:
        policy = pol.from_config_section(settings.sections["check"], settings.config_file)
    else:
        policy = pol.Policy()
    policy = pol.merge_flags(policy, flags)
    if policy.is_empty():
        raise UsageError("no thresholds to check", "give e.g. --max-depth 1000 or --min-consumers 1, "
                                                   "a [check] table in qdiag.toml, or --policy FILE")
    return policy


def run_once(settings: Settings, argv: list[str], policy: pol.Policy, rules: list,
             isolated: bool = False) -> tuple[list[ev.CheckResult], dict]:
    # With --wait, each attempt probes in a child process (qdiag/isolated.py): what
    # a hung broker's client leaves behind goes with the child.
    doc = collect_in_child(settings, argv) if isolated else collect(settings, argv)
    report = build_report(doc, rules)
    return ev.evaluate(report, doc, policy, settings.targets.queues), report


def _until_ok(env: Environment, settings: Settings, argv: list[str], policy: pol.Policy, rules: list,
              wait_s: float | None, began: float) -> tuple[list[ev.CheckResult], dict, str, int]:
    """One attempt, or (with --wait) attempts until OK or the wait is over:
    (results, report, worst status, attempts)."""
    show_progress = bool(env.stderr_isatty)
    attempts = 0
    while True:
        attempts += 1
        # Each attempt has the whole --timeout, counted from its own start; the first from the run's.
        attempt = settings if attempts == 1 else dataclasses.replace(settings, started_at=time.monotonic())
        results, report = run_once(attempt, argv, policy, rules, isolated=wait_s is not None)
        status = ev.worst(r.status for r in results)
        remaining = (wait_s or 0) - (time.monotonic() - began)
        if status == ev.OK or wait_s is None or remaining <= 0:
            return results, report, status, attempts
        if show_progress:
            failing = [r for r in results if r.status != ev.OK]
            env.stderr.write(f"\r[{time.monotonic() - began:5.0f}s/{wait_s:g}s] {status}: {failing[0].message[:100]}")
            env.stderr.flush()
        time.sleep(min(MIN_RETRY_INTERVAL_S, max(0.0, remaining)))


def render_text(results: list[ev.CheckResult], status: str) -> str:
    counts = {s: sum(1 for r in results if r.status == s) for s in (ev.CRITICAL, ev.WARNING, ev.UNKNOWN, ev.OK)}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    lines = [r.line() for r in sorted(results, key=lambda r: ({"CRITICAL": 0, "UNKNOWN": 1, "WARNING": 2, "OK": 3}[r.status], r.name))]
    perf = ev.perfdata(results)
    lines.append(f"QDIAG {status} - {summary or 'no checks'}" + (f" | {perf}" if perf else ""))
    return "\n".join(lines) + "\n"


def run(env: Environment, settings: Settings, argv: list[str], *, flags: dict[str, Any], policy_file: str | None,
        fmt: str, junit_file: str | None, wait_s: float | None, rules_files: list[str]) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not known for check", "use text or json")
    if wait_s is not None and wait_s < 0:
        raise UsageError(f"--wait {wait_s:g} must not be negative", "give seconds, e.g. --wait 300")
    outputs.check_writable(junit_file, "--junit", "qdiag-junit.xml")
    policy = load_policy(settings, policy_file, flags)
    rules = load_rules(rules_files)
    began = time.monotonic()
    # With --wait, the last attempt may start as the wait ends and take its own --timeout and grace.
    beyond = 0.0 if wait_s is None else (began - settings.run_started(began)) + wait_s + MIN_RETRY_INTERVAL_S \
        + ATTEMPT_GRACE_S
    with guard(env.stderr, settings, beyond_s=beyond):
        results, report, status, attempts = _until_ok(env, settings, argv, policy, rules, wait_s, began)
    show_progress = bool(env.stderr_isatty)
    if show_progress and attempts > 1:
        env.stderr.write("\n")
    elapsed = time.monotonic() - began
    code = ev.STATUS_CODE[status]
    if fmt == "json":
        doc = {"schema": SCHEMA, "status": status, "exit_code": int(code), "attempts": attempts,
               "elapsed_s": round(elapsed, 3), "checks": [r.as_dict() for r in results],
               "verdict": report.get("verdict"),
               "probes": report.get("probes")}
        env.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        env.stdout.write(render_text(results, status))
    env.stdout.flush()
    if junit_file:
        # Written after the results are shown: a failed write must not hide them.
        outputs.write_text(env, junit_file, junit.to_xml(results, elapsed, report.get("host") or "").decode("utf-8"))
    return int(code)
