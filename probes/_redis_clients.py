"""Who is connected to Redis, from CLIENT LIST: blocked clients (a consumer
waiting for work) and the queue their connection name tells, and, before
the window, the local processes connected to this Redis (consumers to look
at without --pid).
"""

from __future__ import annotations

import os
from typing import Any

from . import _redis_parse as rp
from ._redis_link import Link, Run, is_error, tls_options
from ._redis_samples import parse_reply


def read_client_list(link: Link, connected: int | None, limit: int) -> tuple[list[dict] | None, dict[str, Any]]:
    """CLIENT LIST TYPE normal (no replicas, no pub/sub connections), bounded:
    not read at all when INFO counts more than `limit` connected clients (a
    reply of 50,000 clients is megabytes of text, every sample), and parsed
    up to `limit` clients when more connected meanwhile.

    Returns (clients or None, {"listed", "truncated", "skipped", "now_ms"});
    skipped says why the list was not read (refused, too many clients);
    now_ms is the server's time when it was read."""
    meta: dict[str, Any] = {"listed": None, "truncated": False, "skipped": None, "limit": limit}
    if connected is not None and connected > limit:
        meta["skipped"] = (f"{connected} clients connected, more than max_clients={limit}: CLIENT LIST not read "
                           "(blocked clients, consumer connections and liveness unknown)")
        return None, meta
    now, raw = link.batch([("TIME",), ("CLIENT", "LIST", "TYPE", "normal")])
    if is_error(raw) and "syntax" in str(raw).lower():  # Redis before 5.0: no TYPE filter
        raw = link.batch([("CLIENT", "LIST")])[0]
    meta["now_ms"] = None if is_error(now) else parse_reply(("TIME",), now)
    if is_error(raw):
        meta["skipped"] = f"CLIENT LIST refused ({' '.join(str(raw).split())}); blocked clients unknown"
        return None, meta
    clients = [c for c in rp.parse_client_list(raw, limit) if not set(c.get("flags", "")) & set("MSOP")]
    meta["listed"] = len(clients)
    if rp.client_list_lines(raw) > limit:
        meta["truncated"] = True
    return clients, meta


def client_summary(run: Run, clients: list[dict], meta: dict, streams_details: dict,
                   list_details: dict) -> dict[str, Any]:
    blocked = rp.blocked_clients(clients, run.own_id)
    # Which queue a blocked connection serves, where its name tells: a
    # connection named like a stream consumer, or an RQ worker (RQ names its
    # connection after the worker).  Values are queue subjects, "redis:<name>[/<group>]".
    by_name: dict[str, list[str]] = {}
    for (key, group), d in streams_details.items():
        for c in d.get("consumers") or []:
            by_name.setdefault(c["name"], []).append(f"redis:{rp.text(key)}/{group}")
    for worker, queues in (list_details.get("rq_workers") or {}).items():
        by_name.setdefault(worker, []).extend(f"redis:{q}" for q in queues)
    limit = int(run.opts["max_listed"])
    for c in blocked:
        if c["name"] and c["name"] in by_name:
            c["consumer_of"] = by_name[c["name"]][:5]
    out = {
        "total": len([c for c in clients if c.get("id") != run.own_id]),
        "blocked_count": len(blocked),
        "blocked_by_command": rp.count_by(blocked, "cmd"),
        "blocked_by_db": rp.count_by(blocked, "db"),
        "blocked": blocked[:limit],
        "note": "CLIENT LIST shows each client's last command, not the keys a blocked client waits on",
    }
    if meta.get("truncated"):
        out["truncated"] = f"only the first {meta['listed']} clients of CLIENT LIST were read (max_clients)"
    return out


def discover_consumers(ctx) -> list[dict]:
    """Local processes connected to this Redis, from CLIENT LIST addresses.
    CLIENT LIST never says which key a client waits on; RQ, though, names each
    worker connection after the worker, and the worker's hash lists its
    queues: that is the one case where the queue is known."""
    from qdiag.endpoints import format_endpoint, norm_ip
    from qdiag.localsockets import pids_by_local_address

    target = ctx.targets.redis
    if target is None:
        return []
    opts = ctx.options
    link = Link(ctx, target, connect_timeout_s=2.0, call_timeout_s=2.0, tls=tls_options(opts))
    link.open()
    try:
        own, info = link.batch([("CLIENT", "ID"), ("INFO", "clients")])
        connected = None if is_error(info) else rp.as_int(rp.parse_info(info).get("connected_clients"))
        listed, _ = read_client_list(link, connected, int(opts["max_clients"]))
        if listed is None:
            return []
        own_id = None if is_error(own) else str(rp.as_int(own))
        clients = [c for c in listed if c.get("id") != own_id]
        named = [c for c in clients if c.get("name") and c.get("db") == str(target.db)][:200]
        queues = link.batch([("HGET", f"rq:worker:{c['name']}", "queues") for c in named]) if named else []
    finally:
        link.close()
    rq_queues = {c["name"]: rp.text(q) for c, q in zip(named, queues) if q is not None and not is_error(q)}
    by_addr = {}
    for c in clients:
        addr = rp.split_addr(c.get("addr"))
        if addr:
            by_addr[addr] = c
    pids = pids_by_local_address(by_addr)
    me = os.getpid()

    def subject_of(c: dict) -> str:
        # The subject names the queue record it consumes ("redis:<record name>",
        # as the report's queue subjects): RQ records are named by queue.
        names = [n for n in (rq_queues.get(c.get("name")) or "").split(",") if n]
        return f"redis:{names[0]}" if len(names) == 1 else "redis"

    found = []
    for addr, pid in sorted(pids.items()):
        if pid == me:
            continue
        c = by_addr[addr]
        blocked = "b" in c.get("flags", "")
        via = (f"redis client {c.get('addr')} on db {c.get('db')}, "
               f"{'blocked in' if blocked else 'last command'} {c.get('cmd')}")
        found.append({"pid": pid, "via": via, "subject": subject_of(c)})
    for (ip, port), c in sorted(by_addr.items()):
        if (norm_ip(ip), port) not in pids and c.get("db") == str(target.db):
            # On another host: its address and port are what a fleet's snapshots are matched with.
            found.append({"pid": None, "peer": format_endpoint(ip, port), "subject": subject_of(c),
                          "via": f"redis client {c.get('addr')} on db {c.get('db')}, last command {c.get('cmd')}"})
    return found

