"""Server-wide state of the Redis probe: INFO over the window (memory and
its limit, eviction, rejected connections, OOM refusals, queue-command
rates), and the hints a reader needs when list queues hold jobs that no
blocked client waits for.
"""

from __future__ import annotations

from typing import Any

from . import _redis_parse as rp
from ._redis_link import Run
from ._redis_samples import last

# Commands whose call rates say something about queue traffic server-wide.
QUEUE_COMMANDS = (
    "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "blpop", "brpop", "lmove", "blmove",
    "rpoplpush", "brpoplpush", "lmpop", "blmpop", "xadd", "xreadgroup", "xack", "xclaim",
    "xautoclaim", "xdel", "xtrim", "evalsha", "eval", "fcall",
)


def server_state(run: Run, samples, doctor: str | None) -> dict[str, Any]:
    infos = [(t, v.get(("INFO",))) for t, v in samples]
    info = last(infos) or {}
    stats = [(t, v.get(("INFO", "commandstats"))) for t, v in samples]
    policy = info.get("maxmemory_policy")

    def d(field):
        return rp.delta([(t, (i or {}).get(field)) for t, i in infos])

    def errs(kind):
        return rp.delta([(t, ((i or {}).get("errorstat") or {}).get(kind, 0) if i else None) for t, i in infos])

    command_rates = {}
    if len([s for _, s in stats if s]) >= 2:
        for cmd in QUEUE_COMMANDS:
            r = rp.rate([(t, (s or {}).get(cmd, 0) if s else None) for t, s in stats], counter=True)
            if r:
                command_rates[cmd] = r
    db_key = f"db{run.target.db}"
    return {
        "address": run.target.label().replace("redis://", "rediss://") if run.target.tls else run.target.label(),
        "version": info.get("redis_version"), "mode": info.get("redis_mode"), "role": info.get("role"),
        "loading": bool(info.get("loading")) if info.get("loading") is not None else None,
        "used_memory": info.get("used_memory"), "used_memory_peak": info.get("used_memory_peak"),
        "maxmemory": info.get("maxmemory") or None,
        "memory_ratio": rp.memory_ratio(info.get("used_memory"), info.get("maxmemory")),
        "maxmemory_policy": policy, "eviction_meaning": rp.eviction_meaning(policy),
        "no_memory_limit": info.get("maxmemory") == 0,
        "memory_note": ("maxmemory is 0: Redis grows until the host or container runs out of memory "
                        "(then the OOM killer, not the eviction policy, decides)") if info.get("maxmemory") == 0 else None,
        "mem_fragmentation_ratio": info.get("mem_fragmentation_ratio"),
        "evicted_keys_delta": d("evicted_keys"), "expired_keys_delta": d("expired_keys"),
        "rejected_connections_delta": d("rejected_connections"),
        "oom_errors_delta": errs("OOM"),
        "error_replies_delta": d("total_error_replies"),
        "ops_per_s": rp.rate([(t, (i or {}).get("total_commands_processed")) for t, i in infos], counter=True),
        "connected_clients": info.get("connected_clients"), "maxclients": info.get("maxclients"),
        "blocked_clients": info.get("blocked_clients"),
        "db_keys": ((info.get("keyspace") or {}).get(db_key) or {}).get("keys", 0) if info else None,
        "queue_command_rates": command_rates,
        "memory_doctor": doctor,
    }


def hints(server: dict, clients: dict, records: list[dict], target) -> list[str]:
    hints = []
    backlog = [r for r in records if r["layout"] != "stream" and (r["depth"] or 0) > 0]
    list_waiters = sum(n for cmd, n in clients.get("blocked_by_command", {}).items()
                       if cmd.split("|")[0] in ("blpop", "brpop", "brpoplpush", "blmove", "blmpop"))
    if backlog and list_waiters:
        other_db = {db for db in clients.get("blocked_by_db", {}) if db != str(target.db)}
        where = f" (blocked clients are on db {', '.join(sorted(other_db))})" if other_db else ""
        hints.append(f"{list_waiters} clients wait in a blocking list pop while {len(backlog)} list queues hold jobs: "
                     f"they wait on other keys or another database{where}; check that consumers listen on "
                     "the queues that hold the jobs")
    if backlog and server.get("blocked_clients") == 0:
        hints.append("no client is blocked waiting for jobs while list queues hold jobs: every consumer is busy, or none is connected")
    if server.get("memory_ratio") is not None and server["memory_ratio"] >= 0.9:
        hints.append(f"memory at {server['memory_ratio']:.0%} of maxmemory; {server.get('eviction_meaning')}")
    if server.get("evicted_keys_delta"):
        hints.append(f"{server['evicted_keys_delta']} keys evicted during the window (policy {server.get('maxmemory_policy')})")
    if server.get("oom_errors_delta"):
        hints.append(f"{server['oom_errors_delta']} commands refused with OOM during the window: writes fail at maxmemory")
    if server.get("rejected_connections_delta"):
        hints.append(f"{server['rejected_connections_delta']} connections rejected during the window (maxclients {server.get('maxclients')})")
    return hints
