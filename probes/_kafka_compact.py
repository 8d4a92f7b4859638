"""Partition rows kept in a Kafka snapshot: pure logic.

A row per (group, topic, partition) is about 440 bytes of JSON; a cluster
with 10,000 of them made a 4.4 MB snapshot that no one reads row by row.
Above a row budget, the rows that say something is wrong are kept in full
(not OK by Burrow's rules, no commit, no leader, owned by nobody or by a gone
member while lagging, data at risk), worst first up to the budget, and every
other row is summarised per group and topic with counts.  The facts the
diagnosis reads from rows (where a topic's lag sits among its partitions) are
computed over all rows first and kept on each queue record, so nothing a rule
sees changes with the budget.
"""

from __future__ import annotations

from typing import Any, Callable

from ._kafka_lag import OK, STATUS_RANK

QUIET = ("OK", "EMPTY")


def matters(row: dict, allowed_lag: int = 0) -> bool:
    """Whether a row says something is wrong (and so is kept in full)."""
    lagging = (row.get("lag") or 0) > allowed_lag
    return bool(row.get("status") not in QUIET
                or row.get("committed_state") != OK or row.get("log_end_state") != OK
                or row.get("data_at_risk")
                or row.get("owner_state") == "gone"
                or (row.get("owner_state") == "unowned" and lagging))


def _importance(row: dict) -> tuple:
    return (-STATUS_RANK.get(row.get("status"), 1), -(row.get("lag") or 0), row.get("topic"), row.get("partition"))


def _summary(rows: list[dict]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r.get("status")] = statuses.get(r.get("status"), 0) + 1
    lags = [r["lag"] for r in rows if isinstance(r.get("lag"), int)]
    rates_in = [r["rate_in"] for r in rows if isinstance(r.get("rate_in"), (int, float))]
    rates_out = [r["rate_out"] for r in rows if isinstance(r.get("rate_out"), (int, float))]
    return {"rows": len(rows), "status_counts": dict(sorted(statuses.items())),
            "lag_total": sum(max(0, x) for x in lags) if lags else None, "lag_max": max(lags) if lags else None,
            "rate_in": round(sum(rates_in), 3) if rates_in else None,
            "rate_out": round(sum(rates_out), 3) if rates_out else None}


def compact(result: dict, limit: int, allowed_lag: int,
            partition_facts: Callable[[list[dict]], dict]) -> dict | None:
    """Cut `result` (analyse()'s groups and queues) down to `limit` partition rows,
    in place.  Returns what was done ({"total", "kept", "summarised", "limit"}),
    or None when everything fits."""
    groups = result.get("groups") or []
    total = sum(len(g.get("partitions") or []) for g in groups)
    if total <= limit:
        return None
    by_key: dict[tuple, list[dict]] = {}
    for g in groups:
        for row in g.get("partitions") or []:
            by_key.setdefault((row.get("topic"), g["group"]), []).append(row)
    for record in result.get("queues") or []:
        rows = by_key.get((record.get("name"), record.get("group")))
        if rows is not None:
            record["partition_facts"] = partition_facts(rows)
    candidates = sorted(((g["group"], row) for g in groups for row in g.get("partitions") or []
                         if matters(row, allowed_lag)), key=lambda item: _importance(item[1]))
    keep = {id(row) for _, row in candidates[:limit]}
    kept = 0
    for g in groups:
        rows = g.get("partitions") or []
        full = [r for r in rows if id(r) in keep]
        rest = [r for r in rows if id(r) not in keep]
        kept += len(full)
        g["partitions"] = full
        if rest:
            topics: dict[str, list[dict]] = {}
            for r in rest:
                topics.setdefault(r.get("topic"), []).append(r)
            g["partitions_summarised"] = {t: _summary(rs) for t, rs in sorted(topics.items())}
    return {"total": total, "kept": kept, "summarised": total - kept, "limit": limit,
            "note": (f"{total} partition rows: the {kept} that show a problem are kept in full (worst first, "
                     f"at most {limit}); the others are counted per group and topic under "
                     "partitions_summarised")}
