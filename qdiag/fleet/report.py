"""A merged document -> the report (`qdiag.report/1`, plus "fleet").

The report is the primary's (its queues, its targets), with the causes, the
steps and the verdict of the joined diagnosis (diagnose.py).  What the other
hosts add is said where the report already says things: each host's probes in
the probe list (process@web-3), each host that sent nothing and each consumer
the brokers listed on no host that sent a snapshot among the verdict's reasons
(a healthy-looking run that could not see them is "unknown"), and the time
checks there too.  "fleet" carries the same for tools.
"""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis import engine
from qdiag.diagnosis.playbook import Rule
from qdiag.fleet import diagnose
from qdiag.fleet.merge import split_peer, time_checks
from qdiag.report import build as report_build
from qdiag.report.build import build_report


def _unseen(fj: diagnose.FleetJoin) -> list[str]:
    """What could not be seen: hosts that sent nothing, consumers on no host that did."""
    out = []
    for host in fj.hosts:
        if host.doc is None:
            out.append(f"{host.name} ({host.entry.get('target') or 'no target'}) sent no snapshot: "
                       f"{host.entry.get('error') or 'unknown error'}; its consumers' CPU, threads and "
                       "dependencies were not seen")
    for host in fj.hosts:
        for item in (host.doc or {}).get("probes") or [] if not host.primary else []:
            if item.get("status") in ("error", "timeout") and not diagnose.about_brokers(item):
                out.append(f"the {item.get('name')} probe on {host.name} "
                           f"{'timed out' if item.get('status') == 'timeout' else 'failed'}: "
                           f"{item.get('error') or item.get('status')}")
    by_ip: dict[str, list[dict]] = {}
    for peer in fj.unmatched:
        ip = split_peer(peer["peer"])[0]
        by_ip.setdefault(ip, []).append(peer)
    for ip, peers in sorted(by_ip.items()):
        subjects = sorted({str(p.get("subject")) for p in peers if p.get("subject")})
        out.append(f"{len(peers)} client connection(s) the brokers list from {ip} "
                   f"({', '.join(subjects) or 'no queue named'}) belong to no host that sent a snapshot: "
                   f"collect that host too (--collect ssh://{ip})")
    return out


def _probe_rows(fj: diagnose.FleetJoin) -> list[dict]:
    rows = []
    for host in fj.hosts:
        if host.primary:
            continue
        if host.doc is None:
            rows.append({"name": f"{host.entry.get('target') or host.name}", "status": "error", "duration_s": 0.0,
                         "error": host.entry.get("error")})
            continue
        for p in host.doc.get("probes") or []:
            if diagnose.about_brokers(p) and p.get("status") in ("not_applicable", "skipped"):
                continue  # a consumer host probes no broker: the primary does
            rows.append({"name": f"{p.get('name')}@{host.name}", "status": p.get("status"),
                         "duration_s": p.get("duration_s", 0.0), "error": p.get("error")})
    return rows


def _consumers(fj: diagnose.FleetJoin) -> list[dict]:
    return [{"host": c["host"], "pid": c["pid"], "peer": c["peer"], "subject": c.get("subject")} for c in fj.claims]


def _pasteable(causes: list[dict], consumers: list[dict], all_hosts) -> None:
    """The report's own filter (no command qdiag has just run, no thread-dump tool of another
    runtime), host by host: a pid is a pid on its own host."""
    by_host: dict[str, list[dict]] = {}
    for c in consumers:
        host, _, pid = str(c.get("pid")).rpartition("/")
        if host and pid.isdigit():
            by_host.setdefault(host, []).append({**c, "pid": int(pid)})
    for cause in causes:
        kept = []
        for command in cause.get("next_commands") or []:
            host = diagnose.host_named(command, all_hosts)
            mine = by_host.get(host.name, []) if host else []
            plain = diagnose.plain_pids(command, host) if host else command
            runtimes = {c["pid"]: c.get("runtime") for c in mine}
            if report_build.suggestable(plain, runtimes, report_build.done_by_qdiag(mine)):
                kept.append(command)
        cause["next_commands"] = kept


def build_fleet_report(merged: dict, rules: list[Rule], baseline: dict | None = None) -> dict[str, Any]:
    fj = diagnose.join(merged, baseline)
    primary = fj.hosts[0]
    report = build_report({k: v for k, v in merged.items() if k != "fleet"}, rules, baseline)
    hits = diagnose.evaluate(rules, fj)
    ranked = engine.rank(hits)
    causes = [c for c in ranked if c["score"] >= engine.SCORE_FLOOR]
    consumers = report_build._consumers(fj.subjects, {q["subject"] for q in report["queues"]})
    for consumer in consumers:
        if consumer.get("pid") is None and str(consumer.get("subject")).startswith("process:"):
            consumer["pid"] = consumer["subject"].split(":", 1)[1]  # host/pid: pids are named with their host
    # What this run did itself (a thread dump) is not suggested again; then each command for its host.
    _pasteable(causes, consumers, fj.hosts)
    diagnose.localise(causes, fj.hosts)
    assessed = engine.assess(fj.doc, report["queues"], ranked, fj.shared)
    unseen = _unseen(fj)
    checks = time_checks(fj.hosts)
    verdict = assessed["verdict"]
    if verdict == "healthy" and (unseen or checks):
        # Nothing found is not health when part of the fleet was not seen.
        verdict = "unknown"
    names = [h.name for h in fj.hosts]
    report.update(
        verdict=verdict,
        verdict_reasons=list(assessed["reasons"]) + unseen + checks,
        root_causes=causes,
        consumers=consumers,
        steps=engine.steps(hits, fj.doc),
        host=", ".join(names),
        probes=report["probes"] + _probe_rows(fj),
        discovered=report["discovered"] + [{"pid": c["pid"], "via": c["via"], "subject": c.get("subject")}
                                           for c in fj.claims],
        fleet={
            "primary": primary.name,
            "hosts": [{"name": h.name, "target": h.entry.get("target"), "status": h.entry.get("status"),
                       "error": h.entry.get("error"), "created_at": h.entry.get("created_at"),
                       "primary": h.primary} for h in fj.hosts],
            "consumers": _consumers(fj),
            "unmatched": fj.unmatched,
            "time_checks": checks,
        },
    )
    return report


def build_any(doc: dict, rules: list[Rule], baseline: dict | None = None) -> dict[str, Any]:
    """The report of a snapshot, merged (several hosts) or not."""
    from qdiag.fleet.merge import is_merged

    return build_fleet_report(doc, rules, baseline) if is_merged(doc) else build_report(doc, rules, baseline)
