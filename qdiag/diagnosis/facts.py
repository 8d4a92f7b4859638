"""Turn a snapshot's observations into the subjects the rules run on.

Each subject is (kind, subject id, facts).  Facts are the probe's own record
plus a few derived values every rule may want (`backing_up`, `growing`) and the
shared context (`host`, `baseline`).  This is the one place that knows both the
probes' observation shapes and the rules' names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

# Queue status words (from any probe) that mean "not draining as it should".
TROUBLE_STATUSES = {"growing", "full", "rejecting", "stuck", "stalled", "stall", "stop", "warn", "rewind",
                    "no-consumers", "err", "error", "at-risk", "backlog"}


@dataclass
class Subject:
    kind: str
    id: str
    facts: dict[str, Any]


def probe_observations(snapshot: dict, name: str) -> dict | None:
    for item in snapshot.get("probes", []):
        if item.get("name") == name and isinstance(item.get("observations"), dict):
            return item["observations"]
    return None


def queue_subject(record: dict) -> str:
    system, name, group = record.get("system"), record.get("name"), record.get("group")
    return f"{system}:{name}/{group}" if group else f"{system}:{name}"


def queue_records(snapshot: dict) -> list[dict]:
    """Every probe's "queues", in probe order."""
    records = []
    for item in snapshot.get("probes", []):
        obs = item.get("observations") or {}
        for record in obs.get("queues") or []:
            if isinstance(record, dict) and record.get("system") and record.get("name") is not None:
                records.append(record)
    return records


def _num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def queue_facts(record: dict, baseline: dict | None) -> dict[str, Any]:
    facts = dict(record)
    depth = _num(record.get("depth"))
    rate_in, rate_out = _num(record.get("rate_in")), _num(record.get("rate_out"))
    samples = [s for s in (record.get("depth_samples") or []) if _num(s) is not None]
    trend = (samples[-1] - samples[0]) if len(samples) >= 2 else None
    growing = bool((rate_in is not None and rate_out is not None and rate_in > rate_out * 1.05 and rate_in > 0)
                   or (trend is not None and trend > 0))
    status = str(record.get("status") or "").lower()
    consumers = _num(record.get("consumers"))
    fill = _num(record.get("fill_ratio"))
    facts.update(
        subject=queue_subject(record),
        depth_trend=trend,
        growing=growing,
        net_rate=(rate_in - rate_out) if rate_in is not None and rate_out is not None else None,
        backing_up=bool(depth and depth > 0 and (growing or status in TROUBLE_STATUSES or consumers == 0
                                                  or (fill is not None and fill >= 0.8))),
        baseline=baseline or {},
    )
    return facts


def _baseline_index(baseline_snapshot: dict | None) -> dict[str, dict]:
    if not baseline_snapshot:
        return {}
    return {queue_subject(r): {"rate_in": r.get("rate_in"), "rate_out": r.get("rate_out"), "depth": r.get("depth"),
                               "consumers": r.get("consumers")}
            for r in queue_records(baseline_snapshot)}


def host_facts(host: dict, processes: dict) -> dict[str, Any]:
    """The host probe's record plus the worst disk and NIC and the busiest process that is not a target."""
    facts = dict(host)
    disks = [d for d in host.get("disks") or [] if _num(d.get("busy_pct")) is not None]
    facts["worst_disk"] = max(disks, key=lambda d: d["busy_pct"], default=None)
    window = _num(host.get("window_s")) or None
    nics = []
    for nic in (host.get("network") or {}).get("interfaces") or []:
        bad = sum(_num(nic.get(k)) or 0 for k in ("rx_errors", "tx_errors", "rx_drops", "tx_drops"))
        nics.append((bad / window if window else None, nic))
    known = [(rate, nic) for rate, nic in nics if rate is not None]
    facts["nic_errors_per_s"] = sum(rate for rate, _ in known) if known else None
    facts["worst_nic"] = max(known, key=lambda item: item[0])[1] if known else None
    others = [p for p in processes.get("top_cpu") or [] if not p.get("is_target")]
    facts["noisy_neighbour"] = others[0] if others else None
    return facts


def subjects(snapshot: dict, baseline_snapshot: dict | None = None) -> Iterator[Subject]:
    processes = probe_observations(snapshot, "process") or {}
    host = probe_observations(snapshot, "host")
    host = host_facts(host, processes) if host else {}
    baselines = _baseline_index(baseline_snapshot)
    queues = [queue_facts(r, baselines.get(queue_subject(r))) for r in queue_records(snapshot)]
    shared = {"host": host, "backlog_any": any(q["backing_up"] for q in queues),
              "queues_backing_up": sum(1 for q in queues if q["backing_up"])}
    consumer_of = {d.get("pid"): d.get("subject") for d in snapshot.get("discovered") or [] if d.get("pid")}

    for facts in queues:
        yield Subject("queue", facts["subject"], {**shared, **facts})
    if host:
        yield Subject("host", "host", {**shared, **host})
    for target in processes.get("targets") or []:
        pid = target.get("pid")
        yield Subject("process", f"process:{pid}", {**shared, **target, "consumer_of": consumer_of.get(pid)})
    for proc in (probe_observations(snapshot, "threads") or {}).get("processes") or []:
        pid = proc.get("pid")
        yield Subject("threads", f"process:{pid}", {**shared, **proc, "consumer_of": consumer_of.get(pid)})
    for endpoint in (probe_observations(snapshot, "dependencies") or {}).get("endpoints") or []:
        yield Subject("dependency", f"dependency:{endpoint.get('url')}", {**shared, **endpoint})
    for pattern in (probe_observations(snapshot, "logs") or {}).get("patterns") or []:
        yield Subject("log", f"log:{pattern.get('id')}", {**shared, **pattern})
    for name in ("rabbitmq", "redis", "kafka"):
        obs = probe_observations(snapshot, name)
        broker = (obs or {}).get("broker")
        if isinstance(broker, dict):
            yield Subject("broker", name, {**shared, **broker, "system": name})
