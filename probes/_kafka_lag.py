"""Kafka consumer lag from sampled offsets: pure logic, no client, no clock.

The Kafka probe collects a "raw" document (group descriptions, topic metadata,
committed and log-end offsets at several instants, log-start offsets, record
timestamps) and `analyse()` turns it into per-partition rows, per-group
verdicts and per group+topic queue records.  Everything here is plain data in,
plain data out, so recorded raw documents (tests/fixtures/kafka/) replay
exactly.

Raw document (partition numbers are string keys so that it survives JSON):

    {"groups": {group: {"state", "group_type", "protocol_type", "protocol",
                        "describable", "note", "error",
                        "members": [{"member_id", "client_id", "host",
                                     "group_instance_id", "assignment": {topic: [p]},
                                     "subscription": [topic] | None}] | None}},
     "topics": {topic: {"error": str | None, "partitions": {"p": {"leader": int}}}},
     "samples": [{"t": s since window start, "wall": epoch s,
                  "groups": {group: {"state", "members": [{"member_id", "client_id", "host",
                                                           "assignment", "generation"}]}
                                    | {"error"}},   (absent in documents recorded before it)
                  "committed": {group: {topic: {"p": offset}}},
                  "committed_errors": {group: message},
                  "log_end": {topic: {"p": offset}},
                  "log_end_errors": {topic: message}}],
     "log_start": {topic: {"p": offset}},
     "record_timestamps": {topic: {"p": [{"read_at": offset read from, "offset": o | None,
                                          "timestamp_ms": ms, "skipped_to": position}]}},
     "read_wall": epoch s of the timestamp reads,
     "named_topics": [topic]}

Three-way values: an offset is a number, or it is missing for a reason that is
said explicitly ("none": the group never committed it; "no_leader": the
partition has no leader, so its log end cannot be read; ...).  A missing
committed offset is never 0 and never the whole log.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from . import _kafka_groups as groups_mod
from . import _kafka_members as members_mod

# Value states for committed / log-end / lag.
OK = "ok"
NONE = "none"  # no committed offset
NO_LEADER = "no_leader"
UNKNOWN_TOPIC = "unknown_topic"  # committed for a topic that no longer exists
UNKNOWN_PARTITION = "unknown_partition"
UNAVAILABLE = "unavailable"  # the broker answered with an error for it

# Partition and group statuses, Burrow's words plus the ones a snapshot needs.
STATUS_RANK = {
    "NO_COMMIT": -1,  # nothing to judge: the group never committed this partition
    "OK": 0,
    "EMPTY": 0,
    "UNKNOWN": 1,     # offsets missing (no leader, errors) or too few samples
    "WARN": 2,
    "REWIND": 3,
    "STALL": 4,
    "STOP": 5,
    "NO_GROUP": 1,    # a named topic that no group consumes
}
SEVERITY = {"OK": "ok", "EMPTY": "ok", "NO_COMMIT": "unknown", "UNKNOWN": "unknown",
            "WARN": "warn", "REWIND": "err", "STALL": "err", "STOP": "err", "NO_GROUP": "unknown"}

# Membership facts (_kafka_groups.membership) every queue record of the group carries, as counts.
CHURN_KEYS = ("group_samples", "states_seen", "rebalancing_samples", "rebalances_seen", "generation")

DEFAULT_RETENTION_MARGIN = 0.1
DEFAULT_UNDERPARALLEL_RATIO = 4.0


# --- small helpers ----------------------------------------------------------------

def committed_value(raw: Any) -> tuple[int | None, str]:
    """An OffsetFetch answer as (offset, state): Kafka says "no commit" with -1."""
    if raw is None or isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        return None, NONE
    return raw, OK


def partition_lag(committed: int | None, committed_state: str,
                  log_end: int | None, log_end_state: str) -> tuple[int | None, str]:
    """Lag as kafka-consumer-groups computes it (log end - committed), or why there is none.

    A missing log end wins over a missing commit: with no leader nothing can be
    said even about a committed partition.
    """
    if log_end is None:
        return None, log_end_state
    if committed is None:
        return None, committed_state
    return log_end - committed, OK


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def rate(points: list[tuple[float, int | None]]) -> float | None:
    """Change per second between the first and last numeric point, or None."""
    numeric = [(t, v) for t, v in points if v is not None]
    if len(numeric) < 2:
        return None
    (t0, v0), (t1, v1) = numeric[0], numeric[-1]
    if t1 <= t0:
        return None
    return (v1 - v0) / (t1 - t0)


# --- Burrow-style evaluation --------------------------------------------------------

def consumable_lag(committed: int, log_end: int, invisible: tuple[int, int] | None) -> int:
    """Lag minus the offsets known to hold nothing to consume (transaction markers,
    aborted records): `invisible` = (committed offset, first consumable offset)."""
    if invisible is not None and committed == invisible[0] and invisible[1] > committed:
        return max(0, log_end - max(committed, min(invisible[1], log_end)))
    return log_end - committed


def evaluate_partition(series: list[tuple[int | None, int | None]], *, allowed_lag: int = 0,
                       owner_state: str = "owned", invisible: tuple[int, int] | None = None) -> tuple[str, str]:
    """Judge one partition from samples [(committed, log_end)], oldest first.

    Burrow's order, adapted to what OffsetFetch shows (committed offsets at the
    sample instants, not the commits themselves, so "no commit at all" and
    "the same offset committed again" look alike):
      STOP    lag above the allowed lag now and the committed offset did not move
              while no member owns the partition: nobody is there to consume it;
      REWIND  the committed offset went backwards and did not recover;
      then, only if lag was above the allowed lag at every sample:
      STALL   the committed offset did not move (an owner exists or is unknown);
      WARN    lag never decreased;
      OK      otherwise, including a quiet partition with no lag.
    Lag here leaves out offsets known to hold nothing to consume (`invisible`,
    see consumable_lag): a consumer parked after a transaction marker is caught up.
    """
    committed_all = [c for c, _ in series]
    if series and all(c is None for c in committed_all):
        return "NO_COMMIT", "no committed offset"
    points = [(c, e) for c, e in series if c is not None and e is not None]
    if not points:
        return "UNKNOWN", "log-end offset not available"
    lags = [consumable_lag(c, e, invisible) for c, e in points]
    commits = [c for c, _ in points]
    current = lags[-1]
    if len(points) < 2:
        if current <= allowed_lag:
            return "OK", "lag within the allowed lag (one sample)"
        return "UNKNOWN", "only one sample: cannot tell whether the consumer moves"
    unmoved = all(c == commits[0] for c in commits)
    if current > allowed_lag and unmoved and owner_state in ("unowned", "gone"):
        who = "its owner's client is gone" if owner_state == "gone" else "no member owns it"
        return "STOP", f"{who} and its committed offset stayed at {commits[0]} with lag {current}"
    best = max(commits[:-1])
    if commits[-1] < best:
        return "REWIND", f"committed offset went back from {best} to {commits[-1]}"
    if all(lag > allowed_lag for lag in lags):
        if unmoved:
            return "STALL", f"committed offset stayed at {commits[0]} while lag was {lags[0]}..{current}"
        if all(b >= a for a, b in zip(lags, lags[1:])):
            return "WARN", f"lag never decreased ({lags[0]} -> {current})"
    return "OK", "consumer keeps up" if current <= allowed_lag else "lag decreasing"


def worst_status(statuses: Iterable[str]) -> str | None:
    statuses = list(statuses)
    if not statuses:
        return None
    return max(statuses, key=lambda s: STATUS_RANK.get(s, 1))


def group_status(partition_statuses: Iterable[str], group_state: str | None) -> str:
    """The group takes its worst partition's status; a group with no members
    and nothing wrong is EMPTY."""
    worst = worst_status(partition_statuses)
    empty = (group_state or "").lower() == "empty"
    if worst is None:
        return "EMPTY" if empty else "UNKNOWN"
    if empty and worst in ("OK", "NO_COMMIT"):
        return "EMPTY"
    return worst


# --- seconds behind -------------------------------------------------------------------

def estimate_produce_time(history: list[tuple[float, int | None]], offset: int) -> tuple[float | None, str | None]:
    """When the record at `offset` was appended, from sampled (wall time, log end) points.

    The record exists once the log end passed it (log end >= offset + 1).
    Inside the sampled range the time is interpolated linearly between the two
    samples around it; before the first sample it is extrapolated backwards at
    the window's produce rate.  Equal log ends give no rate and no estimate
    (no division by zero, no invented number).
    """
    pts = sorted((w, e) for w, e in history if e is not None)
    if not pts:
        return None, None
    target = offset + 1
    if target > pts[-1][1]:
        return None, None  # not produced yet as far as the samples know
    if target <= pts[0][1]:
        (w0, e0), (w1, e1) = pts[0], pts[-1]
        if len(pts) < 2 or e1 <= e0 or w1 <= w0:
            return None, None
        produce_rate = (e1 - e0) / (w1 - w0)
        return w0 - (e0 - target) / produce_rate, "extrapolated"
    for (wa, ea), (wb, eb) in zip(pts, pts[1:]):
        if ea < target <= eb:
            return wa + (target - ea) / (eb - ea) * (wb - wa), "interpolated"
    return None, None


def seconds_behind(*, lag: int | None, committed: int | None, history: list[tuple[float, int | None]],
                   record: dict | None, read_wall: float | None, now_wall: float) -> dict:
    """Age of the oldest unconsumed message: exact from the record's timestamp,
    else an estimate from the log-end history, else unknown (with a lower bound
    when one is known)."""
    if lag is None or committed is None:
        return {"lag_seconds": None, "lag_seconds_source": "unknown"}
    if lag <= 0:
        return {"lag_seconds": 0.0, "lag_seconds_source": "caught_up"}
    if record and record.get("offset") is not None and record.get("timestamp_ms") is not None \
            and record["timestamp_ms"] >= 0 and record["offset"] >= committed:
        when = read_wall if read_wall is not None else now_wall
        return {"lag_seconds": round(max(0.0, when - record["timestamp_ms"] / 1000.0), 3),
                "lag_seconds_source": "record_timestamp",
                "oldest_unconsumed_offset": record["offset"]}
    produced, how = estimate_produce_time(history, committed)
    if produced is not None:
        return {"lag_seconds": round(max(0.0, now_wall - produced), 3),
                "lag_seconds_source": "estimate", "estimate_method": how}
    out = {"lag_seconds": None, "lag_seconds_source": "unknown"}
    first = next(((w, e) for w, e in sorted(history) if e is not None), None)
    if first is not None and committed < first[1]:
        # The record was already there at the first sample: at least this old.
        out["lag_seconds_min"] = round(max(0.0, now_wall - first[0]), 3)
    return out


# --- retention risk ---------------------------------------------------------------------

def retention_risk(committed: int | None, log_start: int | None, log_end: int | None,
                   margin_ratio: float = DEFAULT_RETENTION_MARGIN) -> dict:
    """Whether unconsumed messages are being, or are about to be, deleted by retention.

    Below the log start: already deleted unconsumed.  Otherwise, only where
    retention is deleting at all (log start above 0) and there is lag: the
    oldest unconsumed message sits within `margin_ratio` of the retained range
    from the log start, so the next segment deletion takes it.
    """
    if committed is None or log_start is None:
        return {"data_at_risk": None}
    if committed < log_start:
        return {"data_at_risk": True, "deleted_unconsumed": log_start - committed,
                "risk": f"committed offset {committed} is below the log start {log_start}: "
                        f"{log_start - committed} messages were deleted before being consumed"}
    if log_end is None:
        return {"data_at_risk": None}
    lag = log_end - committed
    if log_start <= 0 or lag <= 0:
        return {"data_at_risk": False}
    retained = max(0, log_end - log_start)
    margin = max(1, math.ceil(margin_ratio * retained))
    headroom = committed - log_start
    if headroom <= margin:
        return {"data_at_risk": True, "headroom_messages": headroom,
                "risk": f"oldest unconsumed offset {committed} is {headroom} messages from the log start "
                        f"{log_start}: the next retention cleanup deletes it"}
    return {"data_at_risk": False, "headroom_messages": headroom}


# --- assembling the document ------------------------------------------------------------

def _pkeys(mapping: dict | None) -> dict[int, Any]:
    return {int(p): v for p, v in (mapping or {}).items()}


def _pget(mapping: dict | None, partition: int, key: str | None = None) -> Any:
    """One partition's value from a {partition: value} map whose keys are strings
    (the probe's, and any JSON round trip's) or ints; O(1), unlike rebuilding it.
    `key` is str(partition) when the caller has it already."""
    if not mapping:
        return None
    value = mapping.get(key if key is not None else str(partition))
    return mapping.get(partition) if value is None else value


def _owners(group: dict) -> tuple[dict[tuple[str, int], dict], bool]:
    """(topic, partition) -> member, and whether every member's assignment was readable."""
    owners: dict[tuple[str, int], dict] = {}
    complete = True
    for member in group.get("members") or []:
        assignment = member.get("assignment")
        if assignment is None:
            complete = False
            continue
        for topic, parts in assignment.items():
            for p in parts:
                owners[(topic, int(p))] = member
    return owners, complete


def _owner_state(group: dict, owned: bool, complete: bool) -> str:
    if owned:
        return "owned"
    if (group.get("state") or "").lower() == "empty":
        return "unowned"
    if not group.get("describable", True) or group.get("members") is None or not complete:
        return "unknown"
    return "unowned"


def _partition_meta_state(meta: dict | None, p: int, key: str) -> str | None:
    """Why a partition has no log end whatever the sample says (its topic or
    partition is unknown, or it has no leader), or None when the samples decide.
    The metadata is one read for the whole window, so this holds at every sample."""
    if meta is None or meta.get("error"):
        return UNKNOWN_TOPIC if (meta is None or meta.get("error") == UNKNOWN_TOPIC) else UNAVAILABLE
    part = _pget(meta.get("partitions"), p, key)
    if part is None:
        return UNKNOWN_PARTITION
    leader = part.get("leader")
    if leader is None or leader < 0:
        return NO_LEADER
    return None


def _log_end_of(meta_state: str | None, log_ends: dict | None, failed: bool, p: int,
                key: str) -> tuple[int | None, str]:
    """One sample's log end of a partition: `log_ends` is that sample's {partition: offset}
    of the topic, `failed` whether that sample's ListOffsets for the topic failed."""
    if meta_state is not None:
        return None, meta_state
    if failed:
        return None, UNAVAILABLE
    value = _pget(log_ends, p, key)
    if value is None or value < 0:
        return None, UNAVAILABLE
    return value, OK


def _closest_read(reads: list[dict] | dict | None, committed: int | None) -> dict | None:
    """Of the records read on a partition, the one read nearest below or at the
    committed offset (what was read from there on holds for this group too)."""
    if not reads or committed is None:
        return None
    if isinstance(reads, dict):
        reads = [reads]
    usable = [r for r in reads if r.get("read_at") is None or r["read_at"] <= committed]
    return max(usable, key=lambda r: r.get("read_at") or 0, default=None)


def _invisible(record: dict | None, committed: int | None) -> tuple[int, int] | None:
    """(committed, first consumable offset) when the record read at or below the
    committed offset showed that the offsets from it on hold nothing to consume."""
    if not record or committed is None:
        return None
    read_at = record.get("read_at")
    if read_at is not None and read_at > committed:
        return None
    upto = record.get("offset")
    if upto is None:
        upto = record.get("skipped_to")
    if upto is None or upto <= committed:
        return None
    return committed, upto


def _member_summary(member: dict) -> dict:
    return {k: member.get(k) for k in ("member_id", "client_id", "host")}


def analyse(raw: dict, *, allowed_lag: int = 0, now_wall: float | None = None,
            retention_margin: float = DEFAULT_RETENTION_MARGIN,
            underparallel_ratio: float = DEFAULT_UNDERPARALLEL_RATIO) -> dict:
    samples = raw.get("samples") or []
    if now_wall is None:
        now_wall = samples[-1]["wall"] if samples else 0.0
    topics_meta = raw.get("topics") or {}
    log_start = raw.get("log_start") or {}
    stamps = raw.get("record_timestamps") or {}
    read_wall = raw.get("read_wall")

    last_errors = (samples[-1].get("committed_errors") or {}) if samples else {}
    groups_out: list[dict] = []
    queues: list[dict] = []
    gone = members_mod.gone_hosts(samples)
    checked = {h for s in samples for h in (s.get("local_hosts") or {})}
    span = round(samples[-1]["t"] - samples[0]["t"], 3) if len(samples) >= 2 else None
    for gid in sorted(raw.get("groups") or {}):
        group = raw["groups"][gid]
        if gone:
            listed = members_mod.still_listed(gid, group, samples)
            members = group.get("members")
            if members is not None:
                members = [{**m, "gone": members_mod.member_host(m) in gone and m.get("member_id") in listed}
                           for m in members]
            group = {**group, "members": members}
        owners, complete = _owners(group)
        keys: set[tuple[str, int]] = set(owners)
        for sample in samples:
            for topic, parts in ((sample.get("committed") or {}).get(gid) or {}).items():
                keys.update((topic, int(p)) for p in parts)
        rows = []
        offsets: dict = {}
        for topic, p in sorted(keys):
            rows.append(_partition_row(raw, gid, group, topic, p, owners, complete, samples,
                                       log_start, stamps, read_wall, now_wall, allowed_lag, retention_margin,
                                       offsets))
        churn = groups_mod.membership(gid, samples)
        statuses = [r["status"] for r in rows]
        status = group_status(statuses, group.get("state"))
        worst = max(rows, key=lambda r: STATUS_RANK.get(r["status"], 1), default=None)
        numeric = [r.get("effective_lag", r["lag"]) for r in rows if r["lag"] is not None]
        members = group.get("members")
        groups_out.append({
            "group": gid,
            "state": group.get("state"),
            "group_type": group.get("group_type"),
            "protocol_type": group.get("protocol_type"),
            "protocol": group.get("protocol"),
            "describable": group.get("describable", True),
            "note": group.get("note"),
            "error": group.get("error") or last_errors.get(gid),
            "member_count": len(members) if members is not None else None,
            "members": [{**_member_summary(m), "group_instance_id": m.get("group_instance_id"),
                         "assignment": m.get("assignment"), **members_mod.gone_facts(m, gone, span)}
                        for m in members] if members is not None else None,
            "status": status,
            "severity": SEVERITY.get(status, "unknown"),
            "status_reason": worst["status_reason"] if worst and status == worst["status"] else None,
            "total_lag": sum(max(0, x) for x in numeric) if numeric else None,
            "membership": churn,
            "topics": sorted({t for t, _ in keys}),
            "partitions": rows,
        })
        by_topic: dict[str, list[dict]] = {}
        for r in rows:
            by_topic.setdefault(r["topic"], []).append(r)
        for topic in sorted(by_topic):
            record = _queue_record(gid, group, topic, by_topic[topic], topics_meta, samples, underparallel_ratio,
                                   churn, offsets)
            members_mod.add_gone(record, group, topic, gone, checked, span)
            queues.append(record)

    consumed = {(q["name"]) for q in queues}
    for topic in raw.get("named_topics") or []:
        if topic in consumed or topic not in topics_meta or topics_meta[topic].get("error"):
            continue
        queues.append(_unconsumed_topic_record(raw, topic, samples))

    queues.sort(key=lambda q: (-STATUS_RANK.get(q["status"], 1), -(q["depth"] or 0), q["name"], q["group"] or ""))
    return {"groups": groups_out, "queues": queues}


def _partition_row(raw, gid, group, topic, p, owners, complete, samples, log_start, stamps, read_wall,
                   now_wall, allowed_lag, retention_margin, series_out=None) -> dict:
    series: list[tuple[int | None, int | None]] = []
    history: list[tuple[float, int | None]] = []
    commit_points: list[tuple[float, int | None]] = []
    end_points: list[tuple[float, int | None]] = []
    last = None
    key = str(p)
    meta_state = _partition_meta_state((raw.get("topics") or {}).get(topic), p, key)
    for sample in samples:
        raw_commit = _pget(((sample.get("committed") or {}).get(gid) or {}).get(topic), p, key)
        committed, committed_state = committed_value(raw_commit)
        log_end, log_end_state = _log_end_of(meta_state, (sample.get("log_end") or {}).get(topic),
                                             topic in (sample.get("log_end_errors") or {}), p, key)
        series.append((committed, log_end))
        history.append((sample["wall"], log_end))
        commit_points.append((sample["t"], committed))
        end_points.append((sample["t"], log_end))
        last = (committed, committed_state, log_end, log_end_state)
    committed, committed_state, log_end, log_end_state = last or (None, NONE, None, UNAVAILABLE)
    if series_out is not None:
        series_out[(topic, p)] = series
    lag, lag_state = partition_lag(committed, committed_state, log_end, log_end_state)
    start = _pget(log_start.get(topic), p)
    owner = owners.get((topic, p))
    owner_state = "gone" if owner and owner.get("gone") else _owner_state(group, owner is not None, complete)
    record = _closest_read(_pget(stamps.get(topic), p), committed)
    invisible = _invisible(record, committed)
    status, reason = evaluate_partition(series, allowed_lag=allowed_lag, owner_state=owner_state,
                                        invisible=invisible)
    row = {
        "topic": topic, "partition": p,
        "committed": committed, "committed_state": committed_state,
        "log_end": log_end, "log_end_state": log_end_state,
        "log_start": start,
        "lag": lag, "lag_state": lag_state,
        "owner": _member_summary(owner) if owner else None,
        "owner_state": owner_state,
        "status": status, "status_reason": reason,
        "rate_in": _round(rate(end_points)),
        "rate_out": _round(_nonnegative(rate(commit_points))),
    }
    effective = lag
    if invisible is not None and lag is not None:
        effective = consumable_lag(committed, log_end, invisible)
        row["unconsumable_offsets"] = min(invisible[1], log_end) - committed
        row["effective_lag"] = effective
    row.update(seconds_behind(lag=effective, committed=committed, history=history, record=record,
                              read_wall=read_wall, now_wall=now_wall))
    if committed is None and log_end is not None and start is not None:
        # No commit: what the group has not consumed is unknown; what is retained is
        # the most it can be (see _queue_record's depth_basis).
        row["backlog_from_log_start"] = max(0, log_end - start)
        if status == "NO_COMMIT" and owner_state == "owned" and (row["rate_in"] or 0) > 0:
            row["status_reason"] = (f"no committed offset at any sample while {row['rate_in']:.1f} records/s "
                                    f"arrive and member {owner.get('client_id') or owner.get('member_id')} owns it")
    risk = retention_risk(committed, start, log_end, retention_margin)
    row["data_at_risk"] = risk.pop("data_at_risk")
    if row["data_at_risk"]:
        row["retention"] = risk
    return row


def _nonnegative(value: float | None) -> float | None:
    # A rewind is reported as REWIND, not as a negative consume rate.
    return None if value is None else max(0.0, value)


def _sum(values: Iterable[float | None]) -> float | None:
    numeric = [v for v in values if v is not None]
    return round(sum(numeric), 3) if numeric else None


def _lag_trend(rows: list[dict], samples: list[dict], offsets: dict) -> tuple[str | None, float | None, list | None]:
    """Total lag per sample over the partitions that have a numeric lag at every
    sample (the same set throughout), compared first to last: (trend word,
    change per second, the totals).  `offsets`: (topic, partition) -> [(committed,
    log end)] per sample, as _partition_row read them."""
    if not samples or not rows:
        return None, None, None
    series = []
    for row in rows:
        if row["log_end_state"] != OK:
            continue
        points = offsets.get((row["topic"], row["partition"])) or []
        if len(points) == len(samples) and all(c is not None and e is not None for c, e in points):
            series.append([e - c for c, e in points])
    if not series:
        return None, None, None
    totals = [(sample["t"], sum(lags[i] for lags in series)) for i, sample in enumerate(samples)]
    if len(totals) < 2:
        return None, None, [v for _, v in totals]
    first, last = totals[0][1], totals[-1][1]
    trend = "growing" if last > first else "shrinking" if last < first else "steady"
    return trend, _round(rate(totals)), [v for _, v in totals]


# What a depth counted from the log start means, said wherever it is shown.
LOG_START_NOTE = ("no committed offset: the backlog is counted from the log start (the oldest retained record), "
                  "the most the group can have left; the consumers' auto.offset.reset is not visible to qdiag, "
                  "and with 'latest' they started at the log end and skipped part of it")


def _start_trend(rows: list[dict], samples: list[dict]) -> tuple[str | None, float | None, list | None]:
    """For partitions counted from the log start: retained records per sample (log
    end at the sample minus the log start read after the window)."""
    series = []
    for row in rows:
        start = row.get("log_start")
        ends = [_pget((sample.get("log_end") or {}).get(row["topic"]), row["partition"]) for sample in samples]
        if start is None or any(e is None or e < 0 for e in ends):
            continue
        series.append([max(0, e - start) for e in ends])
    if not series or len(samples) < 2:
        return None, None, None
    totals = [(sample["t"], sum(v[i] for v in series)) for i, sample in enumerate(samples)]
    first, last = totals[0][1], totals[-1][1]
    trend = "growing" if last > first else "shrinking" if last < first else "steady"
    return trend, _round(rate(totals)), [v for _, v in totals]


def _queue_record(gid, group, topic, rows, topics_meta, samples, underparallel_ratio, churn=None,
                  offsets=None) -> dict:
    numeric = [r for r in rows if r["lag"] is not None]
    no_commit = [r for r in rows if r["committed_state"] == NONE]
    from_start = [r for r in no_commit if r.get("backlog_from_log_start") is not None]
    worst_row = max(numeric, key=lambda r: r["lag"], default=None)
    members = group.get("members")
    empty = (group.get("state") or "").lower() == "empty"
    if members is not None:
        # Consumers attached: a member whose client is gone is listed, not attached.
        consumers = sum(1 for m in members if (m.get("assignment") or {}).get(topic) and not m.get("gone"))
        idle = sum(1 for m in members
                   if topic in (m.get("subscription") or []) and not (m.get("assignment") or {}).get(topic))
    else:
        consumers = 0 if empty else None
        idle = None
    meta = topics_meta.get(topic) or {}
    topic_partitions = len(meta.get("partitions") or {}) or None
    statuses = [r["status"] for r in rows]
    status = worst_status(statuses) or "UNKNOWN"
    if empty and status in ("OK", "NO_COMMIT"):
        status = "EMPTY"
    behind = [r for r in rows if r.get("lag_seconds") is not None]
    oldest = max(behind, key=lambda r: r["lag_seconds"], default=None)
    trend, change, totals = _lag_trend(rows, samples, offsets or {})
    if numeric:
        depth, basis = sum(max(0, r.get("effective_lag", r["lag"])) for r in numeric), "committed"
    elif from_start and len(from_start) == len(rows):
        # Not one committed offset: counted from the log start, and labelled so.
        depth, basis = sum(r["backlog_from_log_start"] for r in from_start), "log-start"
        trend, change, totals = _start_trend(from_start, samples)
    else:
        depth, basis = None, None
    per_consumer = round(topic_partitions / consumers, 2) if topic_partitions and consumers else None
    at_risk = [r for r in rows if r.get("data_at_risk")]
    known_risk = [r for r in rows if r.get("data_at_risk") is not None]
    record = {
        "system": "kafka",
        "name": topic,
        "group": gid,
        "depth": depth,
        "depth_basis": basis,
        "depth_complete": len(numeric) == len(rows) or basis == "log-start",
        "rate_in": _sum(r["rate_in"] for r in rows),
        "rate_out": _sum(r["rate_out"] for r in rows),
        "consumers": consumers,
        "fill_ratio": None,
        "status": status,
        "severity": SEVERITY.get(status, "unknown"),
        "group_state": group.get("state"),
        "max_lag": worst_row["lag"] if worst_row else None,
        "worst_partition": worst_row["partition"] if worst_row else None,
        "partitions": len(rows),
        "topic_partitions": topic_partitions,
        "members": len(members) if members is not None else None,
        "idle_members": idle,
        "partitions_per_consumer": per_consumer,
        "under_parallelised": (per_consumer >= underparallel_ratio) if per_consumer is not None else None,
        "lag_trend": trend,
        "lag_change_per_s": change,
        "depth_samples": totals,  # total lag at each sample, of the partitions known at all of them
        "lag_seconds": oldest["lag_seconds"] if oldest else None,
        "lag_seconds_source": oldest["lag_seconds_source"] if oldest else "unknown",
        "data_at_risk": True if at_risk else (False if known_risk else None),
        "at_risk_partitions": [r["partition"] for r in at_risk],
        "no_commit_partitions": len(no_commit),
        "no_commit_backlog": sum(r["backlog_from_log_start"] for r in from_start) if from_start else None,
        # Owned by a member, records arriving, and no commit at any sample: whatever
        # the member does, the group records no progress on them.
        "not_progressing_partitions": sum(1 for r in no_commit if r["owner_state"] == "owned"
                                          and (r["rate_in"] or 0) > 0),
        "unowned_partitions": sum(1 for r in rows if r["owner_state"] == "unowned"),
        "no_leader_partitions": sum(1 for r in rows if r["log_end_state"] == NO_LEADER),
        "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
    }
    if basis == "log-start":
        record["notes"] = [LOG_START_NOTE]  # "notes" reach the report's queue rows
    churn = churn or {}
    record.update({k: churn.get(k) for k in CHURN_KEYS})
    for key in ("members_joined", "members_left", "rejoined_clients"):  # the ids stay on the group
        record[key] = len(churn[key]) if isinstance(churn.get(key), list) else None
    record["window_s"] = round(samples[-1]["t"] - samples[0]["t"], 3) if len(samples) >= 2 else None
    if oldest is None and rows:
        mins = [r["lag_seconds_min"] for r in rows if r.get("lag_seconds_min") is not None]
        if mins:
            record["lag_seconds_min"] = max(mins)
    if record["idle_members"]:
        record["parallelism"] = (f"{record['idle_members']} idle member(s): more members than the "
                                 f"{topic_partitions} partitions")
    elif record["under_parallelised"]:
        record["parallelism"] = f"{topic_partitions} partitions over {consumers} consumer(s)"
    return record


def _unconsumed_topic_record(raw: dict, topic: str, samples: list[dict]) -> dict:
    meta = raw["topics"][topic]
    points: dict[int, list] = {}
    for sample in samples:
        for p in _pkeys(meta.get("partitions")):
            value = _pget((sample.get("log_end") or {}).get(topic), p)
            points.setdefault(p, []).append((sample["t"], value))
    return {
        "system": "kafka", "name": topic, "group": None,
        "depth": None, "rate_in": _sum(_round(rate(pts)) for pts in points.values()), "rate_out": None,
        "consumers": 0, "fill_ratio": None, "status": "NO_GROUP", "severity": "unknown",
        "topic_partitions": len(meta.get("partitions") or {}),
        "note": "no consumer group has committed offsets for or is assigned this topic",
    }
