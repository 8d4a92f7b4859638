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
    }


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
