"""Kafka group members as seen from this host: which local processes may be
behind them (discovery), and whether a listed member's client is still here.

The broker tells a member's client host (the address its connection came
from), never its port or process.  What this host's kernel adds:

- Who is connected to the brokers from that address: processes with an
  established TCP connection from it to a broker's endpoint.  A process that
  listens on a broker port is a broker (brokers talk to each other, and a
  KRaft broker to itself), never a member; qdiag's own connections are not
  members either.
- Whether anyone is: a member's client keeps a connection to its group
  coordinator while it is in the group (it heartbeats on it).  When the
  member's host is an address of this host and no socket in this network
  namespace connects from that address to any broker at any sample, the
  member's client is gone: the broker keeps listing it until its
  session.timeout.ms passes, then rebalances its partitions away.
- When it went: a connection the client side closed first stays in TIME_WAIT
  for 60 s (Linux's TCP_TIMEWAIT_LEN), and /proc/net/tcp shows how much of
  that is left; the newest such socket from the member's address to a broker
  says when the last connection from there closed.

The /proc tables are parsed by _proc_parse; the readers here take the /proc root.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Iterable

from qdiag.endpoints import norm_ip, split_endpoint

from ._proc_parse import parse_proc_net_tcp
from ._proc_read import read_proc, socket_inodes

ESTABLISHED = "ESTABLISHED"
LISTEN = "LISTEN"
TIME_WAIT = "TIME_WAIT"
TIME_WAIT_S = 60.0  # TCP_TIMEWAIT_LEN: fixed in the kernel, not a sysctl
NET_TABLE_BYTES = 16 << 20  # a /proc/net/tcp row is 150 bytes: about 100,000 sockets


@dataclass(frozen=True)
class Sock:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    timer_left_s: float | None  # for TIME_WAIT: seconds left before the socket goes
    inode: int


def sockets_of(rows: list[dict]) -> list[Sock]:
    """parse_proc_net_tcp rows (read with clock_ticks) as Socks."""
    out = []
    for row in rows:
        local, remote = split_endpoint(row["local"]), split_endpoint(row["remote"])
        if local and remote:
            left = row.get("timer_left_s") if row["state"] == TIME_WAIT else None
            out.append(Sock((norm_ip(local[0]), local[1]), (norm_ip(remote[0]), remote[1]), row["state"], left,
                            row["inode"]))
    return out


def read_sockets(proc_root: str = "/proc") -> list[Sock] | None:
    """Every TCP socket of this network namespace, or None when unreadable."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    rows: list[dict] = []
    readable = False
    for name in ("tcp", "tcp6"):
        try:
            rows.extend(parse_proc_net_tcp(read_proc(f"{proc_root}/net/{name}", NET_TABLE_BYTES),
                                           clock_ticks=ticks))
            readable = True
        except OSError:
            continue
    return sockets_of(rows) if readable else None


def own_inodes(proc_root: str = "/proc", pid: int | None = None) -> set[int]:
    """Socket inodes of one process (qdiag itself by default): its connections are not members'."""
    try:
        return socket_inodes(proc_root, os.getpid() if pid is None else pid, 1 << 16)[1]
    except OSError:
        return set()


def local_addresses() -> set[str]:
    """This host's interface addresses (loopback included)."""
    import psutil

    out = set()
    try:
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    out.add(norm_ip(a.address))
    except OSError:
        pass
    return out


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def member_host_is_here(host: str, local: set[str], broker_ips: Iterable[str]) -> bool:
    """Whether a member's client host (as the broker saw it) is an address of this host.
    A loopback address is ours only when the broker is on this host too: otherwise
    it is the broker host's own loopback."""
    ip = norm_ip(host or "")
    if _loopback(ip):
        return any(_loopback(b) or norm_ip(b) in local for b in broker_ips)
    return ip in local


def presence(hosts: Iterable[str], brokers: set[tuple[str, int]], sockets: list[Sock],
             own: set[int] | set[tuple[str, int]]) -> dict[str, dict]:
    """For each host address: established connections from it to a broker (qdiag's
    own left out: `own` holds their socket inodes or their local (ip, port)), and,
    when there are none, how long ago the newest connection from it to a broker
    closed (its TIME_WAIT socket), if one is left."""
    wanted = {norm_ip(h) for h in hosts}
    out = {h: {"established": 0, "closed_s_ago": None} for h in wanted}
    for s in sockets:
        ip = s.local[0]
        if ip not in wanted or (norm_ip(s.remote[0]), s.remote[1]) not in brokers:
            continue
        if s.state == ESTABLISHED and s.inode not in own and s.local not in own:
            out[ip]["established"] += 1
        elif s.state == TIME_WAIT and s.timer_left_s is not None:
            ago = round(max(0.0, TIME_WAIT_S - s.timer_left_s), 1)
            previous = out[ip]["closed_s_ago"]
            out[ip]["closed_s_ago"] = ago if previous is None else min(previous, ago)
    return out


def process_sockets() -> list:
    """Every TCP socket of this host with its owning pid (one scan of /proc; pids
    other than qdiag's own need root)."""
    import psutil

    try:
        return psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return []


def broker_pids(conns: list, ports: set[int]) -> set[int]:
    """Local processes listening on a broker port: the brokers themselves."""
    return {c.pid for c in conns if c.status == "LISTEN" and c.pid and c.laddr and c.laddr.port in ports}


def pids_connected_from(conns: list, host: str, brokers: set[tuple[str, int]]) -> set[int]:
    """Local processes with an established connection from `host` to a broker endpoint."""
    host = norm_ip(host)
    return {c.pid for c in conns if c.status == "ESTABLISHED" and c.pid and c.raddr and c.laddr
            and norm_ip(c.laddr.ip) == host and (norm_ip(c.raddr.ip), c.raddr.port) in brokers}


# --- pure: which listed members are gone (from the samples' "local_hosts") ---------------------

def member_host(member: dict | None) -> str:
    return str((member or {}).get("host") or "").lstrip("/")


def gone_hosts(samples: list[dict]) -> dict[str, dict]:
    """Member hosts of this machine with no connection to any broker at any sample
    ("local_hosts" in the samples: what the probe read from this host's sockets,
    only for member hosts that are addresses of this host).  Needs two samples:
    one look is a moment, not an absence."""
    looked = [s["local_hosts"] for s in samples if isinstance(s.get("local_hosts"), dict)]
    if len(looked) < 2:
        return {}
    out = {}
    for host in set.intersection(*(set(x) for x in looked)):
        if all((x[host].get("established") or 0) == 0 for x in looked):
            out[host] = {"closed_s_ago": looked[-1][host].get("closed_s_ago"), "samples": len(looked)}
    return out


def still_listed(gid: str, group: dict, samples: list[dict]) -> set[str]:
    """Member ids listed at the last sample that described the group (else before the window)."""
    for sample in reversed(samples):
        desc = (sample.get("groups") or {}).get(gid)
        if isinstance(desc, dict) and not desc.get("error"):
            return {m.get("member_id") for m in desc.get("members") or []}
    return {m.get("member_id") for m in group.get("members") or []}


def gone_facts(member: dict, gone: dict, span: float | None) -> dict:
    if "gone" not in member:
        return {}
    if not member["gone"]:
        return {"gone": False}
    return {"gone": True, **gone_times(gone[member_host(member)], span)}


def gone_times(host_facts: dict, span: float | None) -> dict:
    """How long a member's client has been gone: since its last connection closed
    (TIME_WAIT, up to 60 s back), or at least the window."""
    ago = host_facts.get("closed_s_ago")
    out = {"gone_at_least_s": span}
    if ago is not None:
        out["gone_for_s"] = round(ago, 1)
    return out


def add_gone(record: dict, group: dict, topic: str, gone: dict, checked: set, span: float | None) -> None:
    """Members of the group assigned this topic whose client has gone from this host
    (None when none of their hosts is this host's: nothing was looked at)."""
    assigned = [m for m in group.get("members") or [] if (m.get("assignment") or {}).get(topic)]
    if not any(member_host(m) in checked for m in assigned):
        record["gone_members"] = None
        return
    away = [m for m in group.get("members") or [] if m.get("gone") and (m.get("assignment") or {}).get(topic)]
    record["gone_members"] = len(away)
    if away:
        times = [gone_times(gone[member_host(m)], span) for m in away]
        known = [t["gone_for_s"] for t in times if "gone_for_s" in t]
        record["gone_for_s"] = max(known) if known else None
        record["gone_at_least_s"] = span
        record["gone_hosts"] = sorted({member_host(m) for m in away})
        record["gone_partitions"] = sum(len((m.get("assignment") or {}).get(topic) or []) for m in away)
