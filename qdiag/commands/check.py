"""qdiag check: the same probes, with thresholds, for CI smoke checks and monitoring.

Exit codes follow monitoring plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from qdiag import outputs
from qdiag.check import evaluate as ev
from qdiag.check import junit, policy as pol
from qdiag.collect import collect, lower_priority
from qdiag.config import Settings
from qdiag.environment import Environment
from qdiag import errors
from qdiag.errors import QdiagError, UsageError
from qdiag.inputs import load_rules
from qdiag.report.build import build_report

SCHEMA = "qdiag.check/1"
FORMATS = ("text", "json")
# --wait re-checks no more often than this, whatever the window.
MIN_RETRY_INTERVAL_S = 1.0
# With --wait, each attempt probes in a child process: a probe thread stuck in
# a client call cannot be killed, and a client abandoned at the deadline keeps
# its sockets and threads, so attempt after attempt against a hung broker
# would pile them up in one process.  A child takes them all with it when it
# exits.  It gets the run's --timeout plus this before it is killed.
ATTEMPT_GRACE_S = 5.0


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
    doc = collect_in_child(settings, argv) if isolated else collect(settings, argv)
    report = build_report(doc, rules)
    return ev.evaluate(report, doc, policy, settings.targets.queues), report


def collect_in_child(settings: Settings, argv: list[str]) -> dict:
    """collect() in a forked child that exits when it has answered (or is killed
    ATTEMPT_GRACE_S after the run's --timeout): nothing a probe leaves behind
    outlives the attempt."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_attempt, args=(settings, argv, sender), name="qdiag-check-attempt", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(settings.timeout_s + ATTEMPT_GRACE_S):
            raise QdiagError(f"a check attempt did not finish within --timeout {settings.timeout_s:g}s "
                             f"+ {ATTEMPT_GRACE_S:g}s and was stopped", "run again with --debug to see where it hung")
        answer = receiver.recv()
    except EOFError:
        raise QdiagError(f"a check attempt ended without an answer (exit status {child.exitcode})",
                         "run again with --debug") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(ATTEMPT_GRACE_S)
        child.close()
    if answer[0] == "ok":
        return answer[1]
    _, kind, message, hint = answer
    raise getattr(errors, kind, QdiagError)(message, hint)


def _attempt(settings: Settings, argv: list[str], sender) -> None:
    try:
        try:
            answer = ("ok", collect(settings, argv))
        except QdiagError as exc:
            answer = ("error", type(exc).__name__, exc.message, exc.hint)
        except BaseException as exc:  # noqa: BLE001 - the parent turns it into one line
            first = str(exc).splitlines()[0] if str(exc) else ""
            answer = ("error", "QdiagError", f"check attempt failed: {type(exc).__name__}: {first}",
                      "run again with --debug")
        sender.send(answer)
        sender.close()
    finally:
        # Not sys.exit(): interpreter shutdown would wait on stuck threads and
        # run the parent's exit handlers inherited through fork.
        os._exit(0)


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
    lower_priority()
    began = time.monotonic()
    attempts = 0
    show_progress = bool(env.stderr_isatty)
    while True:
        attempts += 1
        results, report = run_once(settings, argv, policy, rules, isolated=wait_s is not None)
        status = ev.worst(r.status for r in results)
        remaining = (wait_s or 0) - (time.monotonic() - began)
        if status == ev.OK or wait_s is None or remaining <= 0:
            break
        if show_progress:
            failing = [r for r in results if r.status != ev.OK]
            env.stderr.write(f"\r[{time.monotonic() - began:5.0f}s/{wait_s:g}s] {status}: {failing[0].message[:100]}")
            env.stderr.flush()
        time.sleep(min(MIN_RETRY_INTERVAL_S, max(0.0, remaining)))
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
