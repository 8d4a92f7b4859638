"""What the Kafka probe's observations mean to the diagnosis: where a topic's
lag sits among its partitions (for each topic/group record), the bootstrap
address for the next commands, and the broker subject."""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution

# A partition counts as lagging when it holds at least this share of the worst one's lag.
LAGGING_SHARE = 0.1

# Burrow's words (and the probe's own) onto the shared queue-status vocabulary.
STATUS_WORDS = {"OK": "ok", "EMPTY": "idle", "NO_COMMIT": "no-commit", "UNKNOWN": "unknown", "WARN": "growing",
                "REWIND": "rewind", "STALL": "stalled", "STOP": "stopped", "NO_GROUP": "no-consumers"}


def partition_facts(rows: list[dict]) -> dict[str, Any]:
    """Where a topic's lag sits: the hottest partition, its share of the lag
    and of the produce rate, and how many partitions carry lag at all."""
    lags = [(r, num(r.get("lag"))) for r in rows if num(r.get("lag")) is not None]
    total = sum(max(0, lag) for _, lag in lags)
    hot = max(lags, key=lambda item: item[1], default=(None, None))
    rates = [num(r.get("rate_in")) for r in rows]
    known_rates = [r for r in rates if r is not None]
    rate_total = sum(known_rates) if known_rates else None
    hot_rate = max(rows, key=lambda r: num(r.get("rate_in")) or -1.0, default=None) if known_rates else None
    hot_lag = hot[1] if hot[0] is not None else None
    lagging = sum(1 for _, lag in lags if hot_lag and lag >= max(1, LAGGING_SHARE * hot_lag))
    return {
        "partition_count": len(rows),
        "hot_partition": hot[0].get("partition") if hot[0] else None,
        "hot_partition_lag": hot_lag,
        "hot_lag_share": round(hot_lag / total, 4) if total and hot_lag is not None else None,
        "hot_rate_partition": hot_rate.get("partition") if hot_rate else None,
        "hot_rate_share": round((num(hot_rate.get("rate_in")) or 0) / rate_total, 4) if hot_rate and rate_total else None,
        "lagging_partitions": lagging,
        "other_partitions_lag": (total - hot_lag) if hot_lag is not None else None,
    }


def _queue_facts(obs: dict):
    rows: dict[tuple, list[dict]] = {}  # (topic, group) -> partition rows, indexed once
    for group in obs.get("groups") or []:
        for row in group.get("partitions") or []:
            rows.setdefault((row.get("topic"), group.get("group")), []).append(row)

    def facts(record: dict) -> dict:
        # A snapshot that keeps only some rows (_kafka_compact) carries these, computed over all of them.
        stored = record.get("partition_facts")
        if not isinstance(stored, dict):
            stored = partition_facts(rows.get((record.get("name"), record.get("group"))) or [])
        return {"bootstrap": obs.get("bootstrap"), **stored}

    return facts


def _subjects(obs: dict, joined):
    if isinstance(obs.get("broker"), dict):
        yield Subject("broker", "kafka", {**obs["broker"], "system": "kafka"})


CONTRIBUTION = Contribution(steps=(1, 3, 5, 6), status_words=STATUS_WORDS, queue_facts=_queue_facts, subjects=_subjects)
