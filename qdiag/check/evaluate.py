"""Thresholds applied to one run's report and snapshot -> one result per check.

What could not be measured is UNKNOWN, never OK.  A queue record may say that
one of its figures is not a measurement of now: `<field>_settled: false`,
`<field>_settled_why`, and optionally `<field>_bounds: [low, high]` (either
end None when unknown).  Such a figure is judged on its bounds: a status both
ends agree on stands (a lower bound already past the critical level is
CRITICAL); anything else is UNKNOWN with the reason.

Which probes measure queues comes from their registrations (a probe that
needs a broker target); the hints name the brokers from the registry.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from qdiag.brokers import BROKER_NAMES, broker_flags
from qdiag.check.policy import METRICS, VERDICTS, Level, Metric, Policy
from qdiag.diagnosis.facts import in_focus, probe_observations, queue_records, queue_subject
from qdiag.exit_codes import ExitCode
from qdiag.probe import all_probes

OK, WARNING, CRITICAL, UNKNOWN = "OK", "WARNING", "CRITICAL", "UNKNOWN"
STATUS_CODE = {OK: ExitCode.OK, WARNING: ExitCode.WARNING, CRITICAL: ExitCode.CRITICAL, UNKNOWN: ExitCode.UNKNOWN}


@dataclass
class CheckResult:
    name: str  # "<subject> <metric>"
    status: str
    value: float | None
    warn: float | None
    crit: float | None
    unit: str
    message: str
    min: float | None = 0.0
    max: float | None = None
    direction: str = "max"  # "min": the thresholds are minimums (perfdata ranges "N:")

    def line(self) -> str:
        return f"{self.status}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "value": self.value, "warn": self.warn, "crit": self.crit,
                "unit": self.unit, "message": self.message}


def worst(statuses) -> str:
    order = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
    # CRITICAL outranks UNKNOWN: a measured failure says more than a missing measure.
    return max(statuses, key=lambda s: order[s], default=OK)


def _fmt(value: float | None, metric: Metric) -> str:
    if value is None:
        return "unknown"
    if metric.kind == "ratio":
        return f"{value:.0%}" if metric.name == "fill" else f"{value:.3g}"
    return f"{value:,.6g}{metric.unit}"


def _status(value: float, metric: Metric, level: Level) -> str:
    def breaches(limit: float | None) -> bool:
        if limit is None:
            return False
        return value > limit if metric.direction == "max" else value < limit

    return CRITICAL if breaches(level.crit) else WARNING if breaches(level.warn) else OK


def _limits_text(metric: Metric, level: Level) -> str:
    word = ">" if metric.direction == "max" else "<"
    limits = []
    if level.warn is not None:
        limits.append(f"warn {word} {_fmt(level.warn, metric)}")
    if level.crit is not None:
        limits.append(f"crit {word} {_fmt(level.crit, metric)}")
    return ", ".join(limits)


def _result(name: str, status: str, value: float | None, metric: Metric, level: Level, message: str) -> CheckResult:
    return CheckResult(name, status, value, level.warn, level.crit, metric.unit, message,
                       max=1.0 if metric.kind in ("ratio", "bool") else None, direction=metric.direction)


def judge(subject: str, metric: Metric, value: float | None, level: Level, why_unknown: str | None = None) -> CheckResult:
    name = f"{subject} {metric.name}"
    if value is None:
        return _result(name, UNKNOWN, None, metric, level,
                       f"{name} could not be measured" + (f": {why_unknown}" if why_unknown else ""))
    return _result(name, _status(value, metric, level), value, metric, level,
                   f"{name} = {_fmt(value, metric)} ({_limits_text(metric, level)})")


def judge_unsettled(subject: str, metric: Metric, value: float | None, bounds, level: Level, why: str) -> CheckResult:
    """A figure that is not a measurement of now, judged on what is known of
    it: `bounds` [low, high] (None ends unknown).  The status stands when both
    ends give it, or when the known end is already the worst; else UNKNOWN."""
    name = f"{subject} {metric.name}"
    low, high = (list(bounds) + [None, None])[:2] if isinstance(bounds, (list, tuple)) else (None, None)
    low = low if isinstance(low, (int, float)) and not isinstance(low, bool) else None
    high = high if isinstance(high, (int, float)) and not isinstance(high, bool) else None
    # The best case is the low end for a maximum, the high end for a minimum.
    best, worst = (low, high) if metric.direction == "max" else (high, low)
    best_status = _status(best, metric, level) if best is not None else None
    worst_status = _status(worst, metric, level) if worst is not None else None
    limits = _limits_text(metric, level)
    shown = value if value is not None else best
    if best_status == CRITICAL or (best_status is not None and best_status == worst_status):
        if low is not None and high is not None and low == high:
            text = f"{name} = {_fmt(low, metric)}"
        elif best_status == CRITICAL:
            text = f"{name} {'≥' if metric.direction == 'max' else '≤'} {_fmt(best, metric)}"
        else:
            text = f"{name} between {_fmt(low, metric)} and {_fmt(high, metric)}"
        return _result(name, best_status, shown, metric, level, f"{text} ({limits}; not settled: {why})")
    known = ("between " + f"{_fmt(low, metric)} and {_fmt(high, metric)}" if low is not None and high is not None
             else f"at least {_fmt(low, metric)}" if low is not None
             else f"at most {_fmt(high, metric)}" if high is not None else "unknown")
    return _result(name, UNKNOWN, shown, metric, level,
                   f"{name} is not settled ({known}; {limits}): {why}")


def _queue_levels(policy: Policy, queue: dict) -> dict[str, Level]:
    levels = {name: Level(level.warn, level.crit) for name, level in policy.queues.items()}
    for pattern, override in policy.queue_overrides:
        if fnmatch.fnmatchcase(str(queue.get("name")), pattern) or fnmatch.fnmatchcase(queue["subject"], pattern):
            levels.update({name: Level(level.warn, level.crit) for name, level in override.items()})
    return levels


def _num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _holds_messages(queue: dict) -> bool | None:
    """Whether the queue holds messages now; None when that is not known."""
    depth = _num(queue.get("depth"))
    if queue.get("depth_settled") is False:
        low = _num((queue.get("depth_bounds") or [None])[0])
        return True if low else None
    return None if depth is None else depth > 0


def _draining(queue: dict) -> tuple[float | None, str | None]:
    """1 when the queue is empty or its backlog is going down; 0 when it holds
    messages and does not move them out at least as fast as they come in."""
    holds = _holds_messages(queue)
    if holds is False:
        return 1.0, None
    rate_in, rate_out = _num(queue.get("rate_in")), _num(queue.get("rate_out"))
    if rate_in is not None and rate_out is not None:
        if rate_out > 0 and rate_out >= rate_in:
            return 1.0, None
        if holds:
            return 0.0, None
        return None, "the depth is not settled: " + str(queue.get("depth_settled_why") or "unknown")
    # A probe that knows when its depth samples can show a trend says so in its own trend word.
    for key in ("depth_trend", "lag_trend"):
        if key in queue:
            word = queue.get(key)
            if word == "shrinking":
                return 1.0, None
            if word in ("flat", "growing") and holds:
                return 0.0, None
            return None, f"neither rates nor a depth trend were measured ({key}: {word or 'none over this window'})"
    samples = [s for s in queue.get("depth_samples") or [] if _num(s) is not None]
    if len(samples) >= 2:
        if samples[-1] < samples[0]:
            return 1.0, None
        if holds:
            return 0.0, None
    return None, "neither rates nor a depth trend were measured"


QUEUE_FIELDS = {"depth": "depth", "consumers": "consumers", "fill": "fill_ratio"}


def _queue_value(queue: dict, metric: str) -> tuple[float | None, str | None]:
    if metric == "draining":
        return _draining(queue)
    if metric == "lag_seconds":
        value = queue.get("lag_seconds", queue.get("oldest_age_s"))
        return value, None if value is not None else "the age of the oldest waiting message is not known"
    key = QUEUE_FIELDS[metric]
    if queue.get(key) is None:
        return None, f"the {queue.get('system') or 'broker'} probe reports no {key} for this queue"
    return queue.get(key), None


def evaluate(report: dict, snapshot: dict, policy: Policy, queue_filter: tuple[str, ...] = ()) -> list[CheckResult]:
    results: list[CheckResult] = []
    probes = {p["name"]: p for p in snapshot.get("probes", [])}
    if policy.queues or policy.queue_overrides:
        results += _queue_checks(report, snapshot, probes, policy, tuple(queue_filter))
    if policy.dependencies:
        results += _dependency_checks(snapshot, probes, policy)
    if policy.host:
        results += _host_checks(snapshot, probes, policy)
    if policy.diagnosis or policy.max_verdict or policy.allow:
        results += _diagnosis_checks(report, policy)
    return results


def _queue_probe_names() -> set[str]:
    """Probes that measure queues: those that need a broker target."""
    return {name for name, probe in all_probes().items() if set(probe.needs) & set(BROKER_NAMES)}


def _names(record: dict) -> set[str]:
    names = {str(record.get(k)) for k in ("name", "queue", "key") if record.get(k) is not None}
    if record.get("vhost") and record.get("queue"):
        names.add(f"{record['vhost']}/{record['queue']}")
    return names


def _queues(report: dict, snapshot: dict, queue_filter: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """(every queue, the queues the check is about): the report's queue rows,
    each merged over its snapshot record (which keeps every detail the probe
    measured).  Focus is the diagnosis's: the names given (matched on the
    queue's name, key or vhost/name), or every queue when none is given."""
    records = {queue_subject(r): r for r in queue_records(snapshot)}
    targets = dict((snapshot.get("settings") or {}).get("targets") or {})
    targets["queues"] = list(queue_filter)
    view = {"settings": {"targets": targets}}
    every, focus = [], []
    for row in report.get("queues", []):
        record = records.get(row.get("subject"), {})
        queue = {**record, **row}
        every.append(queue)
        if in_focus(record or row, view):
            focus.append(queue)
    return every, focus


def _queue_checks(report, snapshot, probes, policy, queue_filter) -> list[CheckResult]:
    out = []
    queue_probes = [probes[name] for name in sorted(_queue_probe_names()) if name in probes]
    for probe in queue_probes:
        if probe["status"] in ("error", "timeout"):
            out.append(CheckResult(f"{probe['name']} probe", UNKNOWN, None, None, None, "",
                                   f"{probe['name']} could not be measured: {probe.get('error') or probe['status']}"))
    searched = [p["name"] for p in queue_probes if p["status"] == "ok"]
    every, queues = _queues(report, snapshot, queue_filter)
    if not searched and not out:
        given = (snapshot.get("settings") or {}).get("targets") or {}
        why = [f"{p['name']}: {p.get('error')}" for p in queue_probes
               if p["status"] == "not_applicable" and given.get(p["name"]) and p.get("error")]
        out.append(CheckResult("queues", UNKNOWN, None, None, None, "",
                               "no broker was probed: " + ("; ".join(why) if why else f"give {broker_flags()}")))
    elif searched:
        where = ", ".join(searched)
        for pattern in queue_filter:
            if not any(fnmatch.fnmatchcase(n, pattern) for q in every for n in _names(q)):
                out.append(CheckResult(f"queue {pattern}", UNKNOWN, None, None, None, "",
                                       f"no queue matches '{pattern}' on {where} (check the name, the vhost or "
                                       f"database in the broker URL, and that this is the right broker)"))
        if not queue_filter and not queues:
            out.append(CheckResult("queues", UNKNOWN, None, None, None, "",
                                   f"{where} listed no queue to check: name one with --queue"))
    for queue in queues:
        for metric_name, level in _queue_levels(policy, queue).items():
            if level.warn is None and level.crit is None:
                continue
            metric = METRICS["queues"][metric_name]
            value, why = _queue_value(queue, metric_name)
            if metric_name == "fill" and value is None:
                continue  # a queue without a length limit cannot fill up: nothing to check
            key = QUEUE_FIELDS.get(metric_name)
            if key and value is not None and queue.get(f"{key}_settled") is False:
                out.append(judge_unsettled(queue["subject"], metric, value, queue.get(f"{key}_bounds"), level,
                                           str(queue.get(f"{key}_settled_why") or "not a measurement of now")))
                continue
            out.append(judge(queue["subject"], metric, value, level, why))
    return out


def _dependency_checks(snapshot, probes, policy) -> list[CheckResult]:
    probe = probes.get("dependencies")
    endpoints = (probe_observations(snapshot, "dependencies") or {}).get("endpoints") or []
    if not probe or probe["status"] != "ok" or not endpoints:
        why = (probe or {}).get("error") or (probe or {}).get("status") or "no dependency probed"
        return [CheckResult("dependencies", UNKNOWN, None, None, None, "", f"dependencies could not be measured: {why}")]
    out = []
    for endpoint in endpoints:
        subject = f"dependency:{endpoint.get('url')}"
        for metric_name, level in policy.dependencies.items():
            metric = METRICS["dependencies"][metric_name]
            if metric_name == "p95_ms":
                value = ((endpoint.get("latency_ms") or {}).get("total") or {}).get("p95")
                why = endpoint.get("last_error") or "no sample got an answer"
            else:
                value, why = endpoint.get("error_rate"), "no samples"
            out.append(judge(subject, metric, value, level, why))
    return out


def _host_checks(snapshot, probes, policy) -> list[CheckResult]:
    host = probe_observations(snapshot, "host") or {}
    probe = probes.get("host") or {}
    why = probe.get("error") or probe.get("status") or "host probe did not run"
    values = {
        "cpu": (host.get("cpu") or {}).get("busy_pct"),
        "psi": (((host.get("psi") or {}).get("cpu") or {}).get("some") or {}).get("avg10"),
        "mem_available": (host.get("memory") or {}).get("available_pct"),
    }
    return [judge("host", METRICS["host"][name], values[name], level, why) for name, level in policy.host.items()]


def _diagnosis_checks(report, policy) -> list[CheckResult]:
    out = []
    level = policy.diagnosis.get("score")
    causes = [c for c in report.get("root_causes", []) if c["id"] not in policy.allow]
    if level is not None:
        top = causes[0] if causes else None
        result = judge("diagnosis", METRICS["diagnosis"]["score"], top["score"] if top else 0.0, level)
        if top:
            result.message += f"; top cause {top['id']} on {top['subject']}"
        out.append(result)
    if policy.max_verdict:
        verdict = report.get("verdict")
        if verdict == "unknown":
            status = UNKNOWN
        else:
            status = OK if VERDICTS.index(verdict) <= VERDICTS.index(policy.max_verdict) else CRITICAL
        out.append(CheckResult("diagnosis verdict", status, None, None, None, "",
                               f"verdict {verdict} (at most {policy.max_verdict})"))
    return out


def perfdata(results: list[CheckResult]) -> str:
    """Nagios plugin perfdata: 'label'=value[UOM];warn;crit;min;max.  A minimum
    threshold is the range "N:" (alert below N), as the plugin guidelines write it."""
    parts = []
    for r in results:
        if r.value is None:
            continue
        label = r.name.replace("'", "").replace("=", ":")
        uom = r.unit if r.unit in ("s", "ms", "%", "B", "KB", "MB", "GB", "TB", "c") else ""

        def num(v):
            return "" if v is None else f"{v:g}"

        def threshold(v):
            return "" if v is None else f"{v:g}:" if r.direction == "min" else f"{v:g}"

        parts.append(f"'{label}'={num(r.value)}{uom};{threshold(r.warn)};{threshold(r.crit)};{num(r.min)};{num(r.max)}")
    return " ".join(parts)
