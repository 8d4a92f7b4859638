"""Thresholds applied to one run's report and snapshot -> one result per check."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from qdiag.brokers import BROKERS, broker_flags
from qdiag.check.policy import METRICS, VERDICTS, Level, Metric, Policy
from qdiag.diagnosis.facts import probe_observations
from qdiag.exit_codes import ExitCode

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


def judge(subject: str, metric: Metric, value: float | None, level: Level, why_unknown: str | None = None) -> CheckResult:
    name = f"{subject} {metric.name}"
    if value is None:
        return CheckResult(name, UNKNOWN, None, level.warn, level.crit, metric.unit,
                           f"{name} could not be measured" + (f": {why_unknown}" if why_unknown else ""))

    def breaches(limit: float | None) -> bool:
        if limit is None:
            return False
        return value > limit if metric.direction == "max" else value < limit

    status = CRITICAL if breaches(level.crit) else WARNING if breaches(level.warn) else OK
    word = ">" if metric.direction == "max" else "<"
    limits = []
    if level.warn is not None:
        limits.append(f"warn {word} {_fmt(level.warn, metric)}")
    if level.crit is not None:
        limits.append(f"crit {word} {_fmt(level.crit, metric)}")
    return CheckResult(name, status, value, level.warn, level.crit, metric.unit,
                       f"{name} = {_fmt(value, metric)} ({', '.join(limits)})",
                       max=1.0 if metric.kind in ("ratio", "bool") else None)


def _queue_levels(policy: Policy, queue: dict) -> dict[str, Level]:
    levels = {name: Level(level.warn, level.crit) for name, level in policy.queues.items()}
    for pattern, override in policy.queue_overrides:
        if fnmatch.fnmatchcase(str(queue.get("name")), pattern) or fnmatch.fnmatchcase(queue["subject"], pattern):
            levels.update({name: Level(level.warn, level.crit) for name, level in override.items()})
    return levels


def _draining(queue: dict) -> tuple[float | None, str | None]:
    rate_in, rate_out = queue.get("rate_in"), queue.get("rate_out")
    if isinstance(rate_in, (int, float)) and isinstance(rate_out, (int, float)):
        return (1.0 if rate_out >= rate_in or not queue.get("depth") else 0.0), None
    samples = [s for s in queue.get("depth_samples") or [] if isinstance(s, (int, float))]
    if len(samples) >= 2:
        return (1.0 if samples[-1] <= samples[0] else 0.0), None
    return None, "neither rates nor a depth trend were measured"


def _queue_value(queue: dict, metric: str) -> tuple[float | None, str | None]:
    if metric == "draining":
        return _draining(queue)
    if metric == "lag_seconds":
        value = queue.get("lag_seconds", queue.get("oldest_age_s"))
        return value, None if value is not None else "the age of the oldest waiting message is not known"
    key = {"depth": "depth", "consumers": "consumers", "fill": "fill_ratio"}[metric]
    return queue.get(key), None if queue.get(key) is not None else f"{key} not reported"


def evaluate(report: dict, snapshot: dict, policy: Policy, queue_filter: tuple[str, ...] = ()) -> list[CheckResult]:
    results: list[CheckResult] = []
    probes = {p["name"]: p for p in snapshot.get("probes", [])}
    if policy.queues or policy.queue_overrides:
        results += _queue_checks(report, probes, policy, queue_filter)
    if policy.dependencies:
        results += _dependency_checks(snapshot, probes, policy)
    if policy.host:
        results += _host_checks(snapshot, probes, policy)
    if policy.diagnosis or policy.max_verdict or policy.allow:
        results += _diagnosis_checks(report, policy)
    return results


def _queue_checks(report, probes, policy, queue_filter) -> list[CheckResult]:
    out = []
    for name in BROKERS:  # each broker's probe carries its name
        probe = probes.get(name)
        if probe and probe["status"] in ("error", "timeout"):
            out.append(CheckResult(f"{name} probe", UNKNOWN, None, None, None, "",
                                   f"{name} could not be measured: {probe.get('error') or probe['status']}"))
    queues = [q for q in report.get("queues", [])
              if not queue_filter or any(fnmatch.fnmatchcase(str(q.get("name")), f) for f in queue_filter)]
    if not queues and not out:
        wanted = ", ".join(queue_filter) if queue_filter else "any queue"
        out.append(CheckResult("queues", UNKNOWN, None, None, None, "",
                               f"no queue matched {wanted}: give {broker_flags()} (and check --queue)"))
    for queue in queues:
        for metric_name, level in _queue_levels(policy, queue).items():
            if level.warn is None and level.crit is None:
                continue
            metric = METRICS["queues"][metric_name]
            value, why = _queue_value(queue, metric_name)
            if metric_name == "fill" and value is None:
                continue  # a queue without a length limit cannot fill up: nothing to check
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
    """Nagios plugin perfdata: 'label'=value[UOM];warn;crit;min;max"""
    parts = []
    for r in results:
        if r.value is None:
            continue
        label = r.name.replace("'", "").replace("=", ":")
        uom = r.unit if r.unit in ("s", "ms", "%", "B", "KB", "MB", "GB", "TB", "c") else ""

        def num(v):
            return "" if v is None else f"{v:g}"

        parts.append(f"'{label}'={num(r.value)}{uom};{num(r.warn)};{num(r.crit)};{num(r.min)};{num(r.max)}")
    return " ".join(parts)
