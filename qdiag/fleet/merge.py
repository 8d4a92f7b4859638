"""Several hosts' snapshots -> one merged document.

The merged document is the primary snapshot (the one with the brokers' view:
queue records) with every other host's snapshot, or the reason it is missing,
under "fleet".  Kept whole, so that `qdiag report` re-renders it anywhere, and
`qdiag report merged.json.gz other.json.gz` merges again.

Matching: a broker lists each consumer by the address it connects from
(discovery records those that are not on the probing host as
{"pid": None, "peer": "ip:port"}, or just "ip" where the broker names only the
host); a consumer host's snapshot taken with --connected-to BROKER:PORT lists,
for each process it selected, the sockets it holds there ("sockets":
[{"local", "remote"}]).  The process whose socket's own address is the peer the
broker lists is that consumer: address and port, so two consumers on one host
(or two hosts behind one address) are told apart.  Where the broker gives
only a host, every process of that host connected to it claims it, as
discovery does on one host.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from qdiag.endpoints import norm_ip
from qdiag.errors import SnapshotError

SCHEMA = "qdiag.fleet/1"
# Snapshots whose ends lie further apart than their window plus this describe different moments.
SLACK_S = 5.0
# created_at has whole seconds: a remote clock within this of the interval the run
# was waited for agrees with ours.
CLOCK_RESOLUTION_S = 1.5


@dataclass
class Taken:
    """One host's snapshot, or why there is none."""

    name: str
    target: str | None = None  # ssh://web-1, kubectl://NS/POD, or the file it was read from
    doc: dict | None = None
    error: str | None = None
    # How to run a command there ("ssh web-1", "kubectl exec -n NS POD --"); None: run it on that host.
    access: str | None = None
    # Wall-clock time here when its run was started and its snapshot received (remote collection only).
    launched_at: float | None = None
    received_at: float | None = None
    primary: bool = False
    extra: dict = field(default_factory=dict)


def hostname(doc: dict) -> str:
    return str((doc.get("host") or {}).get("hostname") or "host")


def _has_queues(doc: dict) -> bool:
    return any((item.get("observations") or {}).get("queues") for item in doc.get("probes") or []
               if isinstance(item, dict))


def expand(taken: list[Taken]) -> list[Taken]:
    """A merged document given again stands for the hosts it holds."""
    out: list[Taken] = []
    for t in taken:
        fleet = (t.doc or {}).get("fleet")
        if not isinstance(fleet, dict):
            out.append(t)
            continue
        primary = {k: v for k, v in t.doc.items() if k != "fleet"}
        for h in fleet.get("hosts") or []:
            doc = primary if h.get("primary") else h.get("snapshot")
            out.append(Taken(name=h.get("name") or "host", target=h.get("target"), doc=doc, error=h.get("error"),
                             access=h.get("access"), launched_at=h.get("launched_at"),
                             received_at=h.get("received_at")))
    return out


def _unique_names(taken: list[Taken]) -> None:
    """Hosts are told apart by name in every subject: two snapshots of one name get #2, #3."""
    seen: dict[str, int] = {}
    for t in taken:
        base = "".join(c if c.isalnum() or c in "-_.:" else "-" for c in t.name) or "host"
        seen[base] = seen.get(base, 0) + 1
        t.name = base if seen[base] == 1 else f"{base}#{seen[base]}"


def merge(taken: list[Taken]) -> dict[str, Any]:
    """One document from several hosts' snapshots.  The primary is the first with queue
    records (the brokers' view), else the first; hosts without a snapshot keep their error."""
    taken = expand(taken)
    _unique_names(taken)
    good = [t for t in taken if t.doc is not None]
    if not good:
        raise SnapshotError("no host sent a snapshot: " + "; ".join(f"{t.name}: {t.error}" for t in taken),
                            "fix the first failure above and run again")
    primary = next((t for t in good if _has_queues(t.doc)), good[0])
    hosts = []
    for t in taken:
        entry = {"name": t.name, "target": t.target, "access": t.access,
                 "status": "ok" if t.doc is not None else "failed", "error": t.error,
                 "launched_at": t.launched_at, "received_at": t.received_at, "primary": t is primary,
                 "created_at": (t.doc or {}).get("created_at"), "window_s": (t.doc or {}).get("window_s"),
                 "snapshot": t.doc if (t.doc is not None and t is not primary) else None, **t.extra}
        hosts.append(entry)
    doc = {k: v for k, v in primary.doc.items() if k != "fleet"}
    doc["fleet"] = {"schema": SCHEMA, "primary": primary.name, "hosts": hosts}
    return doc


def is_merged(doc: dict) -> bool:
    return isinstance(doc.get("fleet"), dict) and bool(doc["fleet"].get("hosts"))


# --- the hosts of a merged document ------------------------------------------------------

@dataclass
class Host:
    name: str
    doc: dict | None  # pids qualified with the host's name
    entry: dict
    primary: bool = False


def qualify_pids(value: Any, name: str) -> Any:
    """A copy with every "pid" naming its host ("web-3/4127"): pids of two hosts collide,
    and a subject is named after its pid (process:web-3/4127)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "pid" and isinstance(item, int) and not isinstance(item, bool):
                out[key] = f"{name}/{item}"
            else:
                out[key] = qualify_pids(item, name)
        return out
    if isinstance(value, list):
        return [qualify_pids(v, name) for v in value]
    return value


def hosts(merged: dict) -> list[Host]:
    """Every host of a merged document, the primary first, snapshots validated and
    their pids qualified."""
    from qdiag import snapshot as snap

    out = []
    primary_doc = {k: v for k, v in merged.items() if k != "fleet"}
    for entry in merged["fleet"]["hosts"]:
        name = str(entry.get("name") or "host")
        if entry.get("primary"):
            doc = primary_doc
        elif isinstance(entry.get("snapshot"), dict):
            doc = snap.upgrade(copy.deepcopy(entry["snapshot"]), f"the snapshot of {name}")
        else:
            doc = None
        qualified = None
        if doc is not None:
            qualified = {**doc, "probes": qualify_pids(doc.get("probes") or [], name),
                         "discovered": qualify_pids(doc.get("discovered") or [], name)}
        out.append(Host(name, qualified, entry, bool(entry.get("primary"))))
    out.sort(key=lambda h: not h.primary)
    return out


# --- matching the brokers' consumers to the hosts' processes ------------------------------

def _sockets(value: Any) -> Iterator[tuple[Any, dict]]:
    """(pid, socket) for every record that names a pid and the sockets it holds."""
    if isinstance(value, dict):
        if value.get("pid") is not None and isinstance(value.get("sockets"), list):
            for sock in value["sockets"]:
                if isinstance(sock, dict) and sock.get("local"):
                    yield value["pid"], sock
        for item in value.values():
            yield from _sockets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _sockets(item)


def split_peer(peer: str) -> tuple[str, int | None]:
    """'10.0.0.2:4123' -> ('10.0.0.2', 4123); '[::1]:5' -> ('::1', 5); '10.0.0.2' -> ('10.0.0.2', None)."""
    peer = str(peer).strip()
    if peer.startswith("["):
        host, _, rest = peer[1:].partition("]")
        port = rest.lstrip(":")
        return norm_ip(host), int(port) if port.isdigit() else None
    host, sep, port = peer.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return norm_ip(host), int(port)
    return norm_ip(peer), None


@dataclass
class Matching:
    claims: list[dict]  # discovered entries for matched processes: pid (qualified), via, subject, peer, host
    unmatched: list[dict]  # broker-side peers no snapshot owns


def match(all_hosts: list[Host]) -> Matching:
    by_address: dict[tuple[str, int], list[tuple[str, Any]]] = {}
    by_ip: dict[str, list[tuple[str, Any]]] = {}
    for host in all_hosts:
        if host.doc is None:
            continue
        for pid, sock in _sockets(host.doc.get("probes")):
            ip, port = split_peer(sock["local"])
            for index, key in ((by_address, (ip, port)), (by_ip, ip)):
                owners = index.setdefault(key, [])
                if (host.name, pid) not in owners:
                    owners.append((host.name, pid))
    peers: dict[str, dict] = {}
    for host in all_hosts:
        for entry in (host.doc or {}).get("discovered") or []:
            if isinstance(entry, dict) and entry.get("pid") is None and entry.get("peer"):
                peers.setdefault(str(entry["peer"]), entry)
    claims, unmatched = [], []
    for peer, entry in peers.items():
        ip, port = split_peer(peer)
        owners = by_address.get((ip, port), []) if port is not None else by_ip.get(ip, [])
        if not owners:
            unmatched.append({"peer": peer, "via": entry.get("via"), "subject": entry.get("subject")})
            continue
        for name, pid in owners:
            how = "address and port" if port is not None else "address (the broker names only the host)"
            claims.append({"pid": pid, "subject": entry.get("subject"), "peer": peer, "host": name,
                           "via": f"{entry.get('via')}; on {name}, matched by {how}"})
    return Matching(claims, unmatched)


# --- time -------------------------------------------------------------------------------

def _when(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def time_checks(all_hosts: list[Host]) -> list[str]:
    """Snapshots that do not describe the same moments, and clocks that disagree with ours."""
    primary = next((h for h in all_hosts if h.primary), None)
    if primary is None or primary.doc is None:
        return []
    window = float(primary.doc.get("window_s") or 0)
    reference = _when(primary.doc.get("created_at"))
    out = []
    for host in all_hosts:
        if host.doc is None or host.primary:
            continue
        created = _when(host.doc.get("created_at"))
        if created is None:
            continue
        launched, received = host.entry.get("launched_at"), host.entry.get("received_at")
        limit = max(window, float(host.doc.get("window_s") or 0))
        if isinstance(launched, (int, float)) and isinstance(received, (int, float)):
            # Taken while this run waited for it: a time outside that interval is the host's clock.
            off = (launched - CLOCK_RESOLUTION_S - created if created < launched - CLOCK_RESOLUTION_S
                   else created - received - CLOCK_RESOLUTION_S if created > received + CLOCK_RESOLUTION_S else 0.0)
            if abs(off) > limit:
                ahead = "behind" if created < launched else "ahead of"
                out.append(f"{host.name}'s clock is about {abs(off):.0f} s {ahead} this host's (beyond the "
                           f"{limit:g} s window): times in its snapshot do not line up with the others'")
        elif reference is not None and abs(created - reference) > limit + SLACK_S:
            out.append(f"{host.name}'s snapshot ends {abs(created - reference):.0f} s "
                       f"{'after' if created > reference else 'before'} {primary.name}'s (window {limit:g} s): "
                       "they do not show the same moments (or the clocks disagree); take them together")
    return out
