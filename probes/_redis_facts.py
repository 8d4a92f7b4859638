"""What the Redis probe's observations mean to the diagnosis: poison entries
and idle consumers per stream group, the server's address for the next
commands, and the broker subject (memory, eviction, blocked clients)."""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution

# The probe's (Burrow-like) words onto the shared queue-status vocabulary.
STATUS_WORDS = {"OK": "ok", "WARN": "growing", "STALL": "stalled", "STOP": "stopped", "UNKNOWN": "unknown",
                "NO_GROUP": "no-consumers", "GONE": "no-consumers"}


def _queue_facts(obs: dict):
    return lambda record: queue_facts(record, obs)


def queue_facts(record: dict, obs: dict) -> dict[str, Any]:
    poison = record.get("poison_candidates") or []
    deliveries = [d for d in (num(p.get("deliveries")) for p in poison if isinstance(p, dict)) if d is not None]
    server = obs.get("server") or {}
    return {
        "poison_count": len(poison),
        "poison_max_deliveries": max(deliveries) if deliveries else None,
        "poison_example": poison[0] if poison else None,
        "consumers_idle": (record.get("consumers") or 0) - (record.get("consumers_recently_active") or 0)
        if record.get("consumers_recently_active") is not None else None,
        "redis_address": server.get("address"),
        "redis_blocked_clients": server.get("blocked_clients"),
        **_gone_facts(record),
        **_list_waiter_facts(record, obs),
    }


# Commands that block a client until one of its lists gets an element.  Redis serves
# such a command at once when one of its keys holds an element, so a client blocked
# in one while a list holds jobs all along waits on other keys (or another database).
LIST_POPS = frozenset({"blpop", "brpop", "brpoplpush", "blmove", "blmpop"})


def _list_waiter_facts(record: dict, obs: dict) -> dict[str, Any]:
    """Clients blocked in a list pop, on this database and on others, for a list whose
    jobs waited at every sample: they cannot be waiting on this list."""
    depths = record.get("depth_samples") or []
    clients = obs.get("clients") or {}
    blocked = [c for c in clients.get("blocked") or [] if isinstance(c, dict)
               and str(c.get("cmd") or "").split("|")[0] in LIST_POPS]
    if record.get("layout") == "stream" or not depths or not all(num(d) for d in depths) or not blocked:
        return {"list_waiters_here": 0 if depths and clients else None, "list_waiters_other_db": None}
    db = _db_of(obs)
    here = [c for c in blocked if db is not None and c.get("db") == db]
    return {"list_waiters_here": len(here), "list_waiters_other_db": len(blocked) - len(here),
            "list_waiter_commands": ", ".join(sorted({str(c.get("cmd")) for c in blocked})),
            "list_waiter_dbs": ", ".join(str(d) for d in sorted({c.get("db") for c in blocked if c.get("db") is not None}))}


def _db_of(obs: dict) -> int | None:
    address = str((obs.get("server") or {}).get("address") or "")
    tail = address.rsplit("/", 1)[-1] if address.count("/") >= 3 else ""
    return int(tail) if tail.isdigit() else 0 if address else None


def _gone_facts(record: dict) -> dict[str, Any]:
    """For the recovery commands of a group whose consumers are gone: the one
    holding most pending entries, and an XAUTOCLAIM min-idle that takes what
    the gone consumers hold (their entries were delivered before their last
    read, so they have been idle at least that long)."""
    gone = record.get("consumers_gone_list") or []
    seen = num(record.get("gone_last_seen_s"))
    return {"gone_consumer": gone[0].get("name") if gone and isinstance(gone[0], dict) else None,
            "claim_min_idle_ms": int(seen * 1000) // 1000 * 1000 if seen is not None else None}


def _subjects(obs: dict, joined):
    if isinstance(obs.get("server"), dict):
        server = dict(obs["server"])
        server.update(blocked_count=(obs.get("clients") or {}).get("blocked_count"), hints=obs.get("hints") or [])
        yield Subject("broker", "redis", {**server, "system": "redis"})


CONTRIBUTION = Contribution(steps=(1, 3, 5, 6), status_words=STATUS_WORDS, queue_facts=_queue_facts, subjects=_subjects)
