"""What the RabbitMQ probe's observations mean to the diagnosis: prefetch,
limits, redelivery and dead-letter facts per queue, and the broker subject
(alarms, throttled connections, resource ratios)."""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution

# The probe's words onto the shared queue-status vocabulary.
STATUS_WORDS = {"ok": "ok", "growing": "growing", "stuck": "stalled", "no-consumers": "no-consumers",
                "full": "full", "down": "down"}
# Connection states of a throttled publisher.
BLOCKED_STATES = ("blocked", "blocking")


def _queue_facts(obs: dict):
    return lambda record: queue_facts(record, obs)


def queue_facts(record: dict, obs: dict) -> dict[str, Any]:
    prefetch = [p for p in record.get("consumer_prefetch") or [] if num(p) is not None]
    limits = record.get("limits") or {}
    rates = record.get("rates_measured") or record.get("rates_broker") or {}
    dead = record.get("dead_letter") or {}
    dlq_growth = [q.get("depth_change") for q in dead.get("queues") or [] if num(q.get("depth_change"))]
    return {
        "prefetch_max": max(prefetch) if prefetch else None,
        "prefetch_unlimited": bool(prefetch) and any(p == 0 for p in prefetch),
        "overflow": limits.get("overflow"),
        "max_length": limits.get("max_length"),
        "redeliver_rate": num(rates.get("redeliver")),
        "deliver_rate": num(rates.get("deliver_get")),
        "ack_rate": num(rates.get("ack")),
        "dead_letter_growth": sum(dlq_growth) if dlq_growth else None,
        "findings": record.get("findings") or [],
        # Consumer connections with heartbeats off on a queue that holds messages and moves none:
        # dead or stuck, the broker cannot tell (consumers_unverifiable says how to recover).
        "heartbeat_off_connections": len((record.get("consumers_unverifiable") or {}).get("connections") or []),
        "rabbitmq_api": (obs.get("broker") or {}).get("target"),
    }


def broker_facts(obs: dict) -> dict[str, Any]:
    nodes = [n for n in obs.get("nodes") or [] if isinstance(n, dict)]
    states = (obs.get("connections") or {}).get("by_state") or {}

    def worst(key):
        values = [v for v in (num(n.get(key)) for n in nodes) if v is not None]
        return max(values) if values else None

    alarms = [f"{'memory' if n.get('mem_alarm') else 'disk'} alarm on {n.get('name')}"
              for n in nodes if n.get("mem_alarm") or n.get("disk_free_alarm")]
    return {
        "mem_alarm": any(n.get("mem_alarm") for n in nodes),
        "disk_free_alarm": any(n.get("disk_free_alarm") for n in nodes),
        "alarms": alarms,
        "mem_ratio": worst("mem_ratio"),
        "fd_ratio": worst("fd_ratio"),
        "sockets_ratio": worst("sockets_ratio"),
        "blocked_connections": sum(states.get(s, 0) for s in BLOCKED_STATES),
        "flow_connections": states.get("flow", 0),
        "connections_total": (obs.get("connections") or {}).get("total"),
        "problems": obs.get("problems") or [],
    }


def _subjects(obs: dict, joined):
    if isinstance(obs.get("broker"), dict):
        yield Subject("broker", "rabbitmq", {**obs["broker"], **broker_facts(obs), "system": "rabbitmq"})


CONTRIBUTION = Contribution(steps=(1, 3, 5, 6), status_words=STATUS_WORDS, queue_facts=_queue_facts, subjects=_subjects,
                            # Whether a consumer's attempts fail or are never acknowledged, for its own rules.
                            queue_summary=("redeliver_ratio", "ack_rate", "deliver_rate", "messages_unacknowledged",
                                           "prefetch_max"))
