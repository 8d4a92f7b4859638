"""What the host probe's observations mean to the diagnosis: the host's facts
(visible to every rule as `host`), and the host subject."""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution


def host_facts(host: dict, top_processes: list[dict], processes: list[dict]) -> dict[str, Any]:
    """The host probe's record plus the worst disk and NIC, the busiest process
    that is not a target, and the kernel's limits as ratios."""
    facts = dict(host)
    disks = [d for d in host.get("disks") or [] if num(d.get("busy_pct")) is not None]
    facts["worst_disk"] = max(disks, key=lambda d: d["busy_pct"], default=None)
    window = num(host.get("window_s")) or None
    nics = []
    for nic in (host.get("network") or {}).get("interfaces") or []:
        bad = sum(num(nic.get(k)) or 0 for k in ("rx_errors", "tx_errors", "rx_drops", "tx_drops"))
        nics.append((bad / window if window else None, nic))
    known = [(rate, nic) for rate, nic in nics if rate is not None]
    facts["nic_errors_per_s"] = sum(rate for rate, _ in known) if known else None
    facts["worst_nic"] = max(known, key=lambda item: item[0])[1] if known else None
    others = [p for p in top_processes if not p.get("is_target")]
    facts["noisy_neighbour"] = others[0] if others else None
    facts["busiest_is_consumer"] = bool(top_processes and top_processes[0].get("is_target"))
    targets = [t for t in processes if not t.get("gone")]
    cpu = [c for c in (num(t.get("cpu_percent")) for t in targets) if c is not None]
    facts["consumers_known"] = len(targets)
    facts["consumers_cpu_max"] = max(cpu) if cpu else None
    network = host.get("network") or {}
    listen = network.get("listen") or {}
    facts["listen_overflows"] = num(listen.get("overflows"))
    facts["listen_drops"] = num(listen.get("drops"))
    facts["conntrack_ratio"] = num((network.get("conntrack") or {}).get("ratio"))
    facts["files_ratio"] = num((host.get("files") or {}).get("ratio"))
    facts["oom_kills_in_window"] = num((host.get("oom") or {}).get("oom_kill"))
    return facts


def recent_kills(host: dict) -> list[dict]:
    """Kernel OOM kills logged during the window (or just before it)."""
    window = (num(host.get("window_s")) or 0) + 5.0
    kills = ((host.get("oom") or {}).get("kernel_log") or {}).get("kills") or []
    return [k for k in kills if isinstance(k, dict) and num(k.get("age_s")) is not None and k["age_s"] <= window]


def _context(obs: dict, joined) -> dict:
    # Consumers are the processes in focus: discovery by host also claims producers, other
    # clients and the broker itself, whose CPU says nothing about the consumers.
    consumers = [p for p in joined.processes if joined.focus(p.get("pid"))]
    facts = host_facts(obs, joined.exported.get("top_processes") or [], consumers)
    # Host-wide CPU evidence is about the consumer when there is one consumer here.
    by_subject = joined.by_subject
    local = [t for t in joined.processes if not t.get("gone") and joined.consumer_of.get(t.get("pid")) in by_subject]
    facts["consumer_subject"] = f"process:{local[0].get('pid')}" if len(local) == 1 else "host"
    return {"host": facts, "oom_kills_recent": recent_kills(obs)}


def _subjects(obs: dict, joined):
    yield Subject("host", "host", dict(joined.shared["host"]))


CONTRIBUTION = Contribution(steps=(2, 5), context=_context, subjects=_subjects)
