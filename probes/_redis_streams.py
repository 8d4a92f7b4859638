"""Redis streams and their consumer groups: one record per group (or per
stream with no group) from the samples, and the details read once after the
window for the groups with the most unfinished work (XINFO CONSUMERS,
XPENDING summary and a bounded sample, the first undelivered entry).

Depth is what the group has not been given yet (lag); pending entries were
delivered and not acknowledged; rate_in is entries-added per second and
rate_out entries-read (delivered to the group) per second.
"""

from __future__ import annotations

from typing import Any

from . import _redis_liveness as liveness
from . import _redis_parse as rp
from ._redis_link import Run, is_error
from ._redis_samples import last, parse_reply, series


def _group_of(groups: list[dict] | None, name: str) -> dict | None:
    for g in groups or []:
        if g["name"] == name:
            return g
    return None


def stream_records(run: Run, samples, stream_keys: list[bytes], details: dict, now_ms: int | None) -> tuple[list, list]:
    wanted_groups = set(run.ctx.targets.groups)
    records, streams = [], []
    for key in stream_keys:
        name = rp.text(key)
        s_series = series(samples, ("XINFO", "STREAM", key))
        g_series = series(samples, ("XINFO", "GROUPS", key))
        stream = last(s_series)
        groups = last(g_series)
        if stream is None or groups is None:
            err = run.errors.get(("XINFO", "STREAM", key)) or run.errors.get(("XINFO", "GROUPS", key))
            run.notes.append(f"stream '{name}' could not be read ({err or 'gone during the window'})")
            continue
        added = series(samples, ("XINFO", "STREAM", key), lambda s: s["entries_added"])
        length = series(samples, ("XINFO", "STREAM", key), lambda s: s["length"])
        rate_in = rp.rate(added, counter=True)
        rate_basis = "entries-added"
        if stream.get("lean"):
            rate_basis = "entries-added, then a group's entries-read + lag (entries too big to read XINFO STREAM again)"
        if rate_in is None and all(v is None for _, v in added):
            rate_in, rate_basis = None, "unknown (no entries-added before Redis 7.0)"
        summary = {
            "key": name, "length": stream["length"], "entries_added": stream["entries_added"],
            "first_id": stream["first_id"], "last_id": stream["last_id"],
            "last_generated_id": stream["last_generated_id"], "max_deleted_id": stream["max_deleted_id"],
            "last_entry_age_s": rp.id_age_s(stream["last_id"], now_ms),
            "first_entry_age_s": rp.id_age_s(stream["first_id"], now_ms),
            "groups": len(groups), "rate_in": rate_in, "rate_in_basis": rate_basis,
            "length_trend": rp.trend(length), "big_entries": bool(stream.get("lean")),
        }
        streams.append(summary)
        shown = [g for g in groups if not wanted_groups or g["name"] in wanted_groups]
        if not groups:
            records.append(_ungrouped_record(name, stream, summary, length, samples))
            continue
        for group in shown:
            records.append(_group_record(run, key, name, stream, group, summary, samples, details, now_ms))
    return records, streams


def _ungrouped_record(name: str, stream: dict, summary: dict, length_series, samples) -> dict:
    return {
        "system": "redis", "name": name, "group": None, "layout": "stream",
        "depth": stream["length"], "depth_basis": "stream length (no consumer group)",
        "rate_in": summary["rate_in"], "rate_out": None, "consumers": 0, "fill_ratio": None,
        "status": rp.NO_GROUP if stream["length"] else rp.OK,
        "status_reason": ("no consumer group: XREAD readers keep their position client-side, so the "
                          "length is what the stream retains, not a backlog") if stream["length"] else "empty",
        "key": name, "length": stream["length"], "entries_added": stream["entries_added"],
        "last_entry_age_s": summary["last_entry_age_s"], "depth_trend": rp.trend(length_series),
        "depth_samples": [v for _, v in length_series], "rate_source": summary["rate_in_basis"],
        "samples": len(samples),
    }


def _group_record(run: Run, key: bytes, name: str, stream: dict, group: dict, summary: dict,
                  samples, details: dict, now_ms: int | None) -> dict:
    opts = run.opts
    gname = group["name"]
    per_sample = []  # (t, stream, group) where both known
    for t, values in samples:
        s = values.get(("XINFO", "STREAM", key))
        g = _group_of(values.get(("XINFO", "GROUPS", key)), gname)
        if s is not None and g is not None:
            per_sample.append((t, s, g))

    def read_counter(s, g):
        if g["entries_read"] is not None:
            return g["entries_read"]
        if g["lag"] is not None and s["entries_added"] is not None:
            return s["entries_added"] - g["lag"]  # Redis' own definition of lag
        return None

    reads = [(t, read_counter(s, g)) for t, s, g in per_sample]
    depths = [(t, rp.group_depth(s, g)[0]) for t, s, g in per_sample]
    pendings = [(t, g["pending"]) for t, s, g in per_sample]
    rate_out = rp.rate(reads, counter=True)
    pending_rate = rp.rate(pendings)
    ack_rate = None if rate_out is None or pending_rate is None else round(max(0.0, rate_out - pending_rate), 3)
    depth, depth_basis = rp.group_depth(stream, group)
    first_ld = per_sample[0][2]["last_delivered_id"] if per_sample else None
    moved = first_ld is not None and first_ld != group["last_delivered_id"]
    pending_dropped = len(pendings) >= 2 and pendings[-1][1] is not None and pendings[0][1] is not None \
        and pendings[-1][1] < pendings[0][1]
    consumed = None if len(per_sample) < 2 else bool(moved or pending_dropped)

    d = details.get((key, gname), {})
    consumers = d.get("consumers")
    active = None
    listed = None
    if consumers is not None:
        limit_ms = opts["active_idle_s"] * 1000
        active = sum(1 for c in consumers
                     if (c["inactive_ms"] if c["inactive_ms"] is not None else c["idle_ms"] or 0) <= limit_ms)
        listed = [{"name": c["name"], "pending": c["pending"], "idle_s": _ms_to_s(c["idle_ms"]),
                   "inactive_s": _ms_to_s(c["inactive_ms"])} for c in consumers[: int(opts["max_listed"])]]
    alive = _alive(d, consumers, listed, consumed)
    summary_p = d.get("pending_summary")
    sample = d.get("pending_sample")
    poison = rp.poison_candidates(sample or [], int(opts["poison_deliveries"]), int(opts["max_listed"]))
    pending = group["pending"] or 0
    waiting = None if depth is None else depth + pending
    status, reason = rp.judge(waiting=waiting, consumers=group["consumers"], consumed=consumed,
                              depth_trend=rp.trend(depths), rate_in=summary["rate_in"], rate_out=rate_out,
                              poison=len(poison), samples=len(per_sample))
    if depth is None:
        # Nil lag with the group's position before the last entry: at least
        # that entry is waiting, only the count is unknown.
        unknown = f"undelivered count unknown: {rp.lag_null_reason(stream, group)}"
        if group["consumers"] == 0:
            status, reason = rp.STOP, f"entries waiting and no consumer in the group; {unknown}"
        elif consumed is False:
            status, reason = rp.STALL, f"entries waiting and nothing was taken during the window; {unknown}"
        else:
            status, reason = rp.UNKNOWN, unknown
    elif status in (rp.STALL, rp.STOP) and waiting:
        reason += f" ({depth} undelivered, {pending} pending)"
        if status == rp.STALL and active == 0 and consumers:
            reason += f"; none of the {len(consumers)} consumers read in the last {opts['active_idle_s']:g}s"
    unacked = never_acked(pendings, rate_out, ack_rate)
    if status == rp.OK and unacked:
        # Read and not finished: each entry delivered joins the pending list and stays there.
        # The undelivered count stays at zero, so the lag alone says healthy.
        status, reason = rp.WARN, unacked
    if alive["consumers_alive"] == 0 and (waiting or pending or (depth is None and status in (rp.STALL, rp.UNKNOWN))):
        status = rp.GONE
        reason = (f"{len(consumers)} consumer(s) listed in the group and none has a client connection: their "
                  f"processes are gone (the last read {alive['gone_last_seen_s']:.0f}s ago); "
                  f"{'unknown' if depth is None else depth} undelivered, {pending} pending with the gone consumers")
    record = {
        "system": "redis", "name": name, "group": gname, "layout": "stream",
        "depth": depth, "rate_in": summary["rate_in"], "rate_out": rate_out,
        "consumers": group["consumers"], "fill_ratio": None, "status": status, "status_reason": reason,
        "key": name, "depth_basis": depth_basis,
        "lag": group["lag"], "lag_null_reason": rp.lag_null_reason(stream, group),
        "pending": group["pending"], "unfinished": waiting,
        "last_delivered_id": group["last_delivered_id"], "entries_read": group["entries_read"],
        "entries_added": stream["entries_added"], "length": stream["length"],
        "trimmed_unread": rp.trimmed_unread(stream, group),
        "ack_rate": ack_rate, "pending_rate": _round3(pending_rate), "never_acked": bool(unacked),
        "pending_first": next((v for _, v in pendings if v is not None), None),
        "rate_source": f"in: {summary['rate_in_basis']}; out: entries-read (entries delivered to the group)",
        "depth_trend": rp.trend(depths), "depth_samples": [v for _, v in depths], "consumed_in_window": consumed,
        "oldest_age_s": _oldest(rp.id_age_s(d.get("next_undelivered_id"), now_ms),
                                rp.id_age_s(summary_p["min_id"], now_ms) if summary_p else None),
        "last_entry_age_s": summary["last_entry_age_s"],
        "oldest_undelivered_age_s": rp.id_age_s(d.get("next_undelivered_id"), now_ms),
        "oldest_pending_age_s": rp.id_age_s(summary_p["min_id"], now_ms) if summary_p else None,
        "oldest_pending_idle_s": _ms_to_s(max((e["idle_ms"] or 0 for e in sample), default=None)) if sample else None,
        "consumers_recently_active": active, "consumer_list": listed, **alive,
        "pending_by_consumer": summary_p["consumers"] if summary_p else None,
        "pending_sampled": len(sample) if sample is not None else None,
        "poison_candidates": poison, "poison_threshold": int(opts["poison_deliveries"]),
        "details_skipped": d.get("skipped"), "samples": len(per_sample),
    }
    return record


# An acknowledgement rate under this share of the delivery rate, with the pending list
# growing by half the deliveries or more, is "delivered and not acknowledged".
NEVER_ACKED_SHARE = 0.1


def never_acked(pendings: list[tuple[float, int | None]], rate_out: float | None, ack_rate: float | None) -> str | None:
    """Why the group's consumers read entries and do not acknowledge them, or None: under
    a tenth of what was delivered is acknowledged, and the pending list grew over the
    window by half of what was delivered or more (XACK removes an entry from it; an
    entry read and never acknowledged stays)."""
    known = [(t, v) for t, v in pendings if v is not None]
    if len(known) < 2 or rate_out is None or ack_rate is None or rate_out <= 0:
        return None
    (t0, first), (t1, last_) = known[0], known[-1]
    if t1 <= t0 or ack_rate > NEVER_ACKED_SHARE * rate_out or last_ - first < max(5, 0.5 * rate_out * (t1 - t0)):
        return None
    return (f"delivered and not acknowledged: {rate_out:g}/s read, {ack_rate:g}/s acknowledged; the pending list "
            f"grew from {first} to {last_} over {t1 - t0:.1f}s")


def _alive(d: dict, consumers: list[dict] | None, listed: list[dict] | None, consumed: bool | None) -> dict[str, Any]:
    """The record's liveness fields: how many listed consumers have a client
    connection (alive) and how many none (gone: their process died), the
    pending entries the gone ones hold, and how long ago the last of them read."""
    verdicts = d.get("liveness")
    out: dict[str, Any] = {"consumers_alive": None, "consumers_gone": None, "consumers_gone_list": None,
                           "gone_pending": None, "gone_last_seen_s": None,
                           "liveness_basis": d.get("liveness_unknown")}
    if consumers is None or verdicts is None:
        return out
    gone = [c for c in consumers if not (verdicts.get(c["name"]) or {}).get("alive")]
    for item in listed or []:
        v = verdicts.get(item["name"]) or {}
        item["connection"] = v.get("addr") if v.get("alive") else "gone"
    out.update(consumers_alive=len(consumers) - len(gone), consumers_gone=len(gone),
               consumers_gone_list=[{"name": c["name"], "pending": c["pending"], "idle_s": _ms_to_s(c["idle_ms"])}
                                    for c in sorted(gone, key=lambda c: -(c["pending"] or 0))[:20]],
               gone_pending=sum(c["pending"] or 0 for c in gone),
               gone_last_seen_s=_ms_to_s(min((c["idle_ms"] or 0 for c in gone), default=None)) if gone else None,
               liveness_basis=("CLIENT LIST: a consumer is alive when a client connection on this database was "
                               "open at its last read, used since, and named like it or last sent a stream-consumer "
                               "command (XREADGROUP, XACK, XCLAIM, XAUTOCLAIM, XPENDING); gone when none can be it"))
    if consumed and out["consumers_alive"] == 0:
        # Entries were delivered during the window, so some reader is connected
        # after all (a connection the test could not recognise): say unknown.
        out.update(consumers_alive=None, consumers_gone=None,
                   liveness_basis="unknown: entries were read during the window, yet no listed consumer "
                                  "has a recognisable connection")
    return out


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _oldest(*ages: float | None) -> float | None:
    known = [a for a in ages if a is not None]
    return max(known) if known else None


def _ms_to_s(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def group_details(run: Run, samples, stream_keys: list[bytes]) -> tuple[dict, int | None]:
    """XINFO CONSUMERS, XPENDING (summary and a bounded sample) and the first
    undelivered entry, for the groups with the most unfinished work."""
    if not samples:
        return {}, None
    last = samples[-1][1]
    wanted = set(run.ctx.targets.groups)
    candidates = []
    for key in stream_keys:
        stream = last.get(("XINFO", "STREAM", key))
        for g in last.get(("XINFO", "GROUPS", key)) or []:
            if wanted and g["name"] not in wanted:
                continue
            depth, _ = rp.group_depth(stream or {}, g)
            weight = (depth if depth is not None else (stream or {}).get("length") or 0) + (g["pending"] or 0)
            candidates.append((weight, key, g, depth))
    # Groups with nothing waiting and no consumers have nothing to detail.
    candidates = [c for c in candidates if c[0] or c[2]["consumers"]]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]["name"]))
    limit = int(run.opts["max_detailed_groups"])
    sampled = int(run.opts["max_pending_sampled_groups"])
    details: dict[tuple, dict] = {}
    for _, key, g, _ in candidates[limit:]:
        details[(key, g["name"])] = {"skipped": f"beyond max_detailed_groups={limit}"}
    if len(candidates) > limit:
        run.notes.append(f"{len(candidates) - limit} groups got no consumer/pending details (max_detailed_groups={limit})")
    with_pending = sum(1 for c in candidates[:limit] if c[2]["pending"])
    if with_pending > sampled:
        run.notes.append(f"{with_pending - sampled} groups with pending entries got no XPENDING sample, so no "
                         f"poison check (max_pending_sampled_groups={sampled}); their pending summary is complete")
    commands: list[tuple] = [("TIME",)]
    for rank, (_, key, g, depth) in enumerate(candidates[:limit]):
        if g["consumers"]:
            commands.append(("XINFO", "CONSUMERS", key, g["name"]))
        if g["pending"]:
            commands.append(("XPENDING", key, g["name"]))
            if rank < sampled:
                commands.append(("XPENDING", key, g["name"], "-", "+", int(run.opts["pending_sample"])))
        # (The entry comes whole: not for streams whose entries are too big to read.)
        lean = (last.get(("XINFO", "STREAM", key)) or {}).get("lean")
        if depth != 0 and rp.next_id(g["last_delivered_id"]) and not lean:
            commands.append(("XRANGE", key, rp.next_id(g["last_delivered_id"]), "+", "COUNT", 1))
    replies = dict(zip(commands, run.link.batch(commands)))
    now_ms = parse_reply(("TIME",), replies[("TIME",)]) if not is_error(replies[("TIME",)]) else None
    for _, key, g, depth in candidates[:limit]:
        d: dict[str, Any] = {"undelivered": depth}
        r = replies.get(("XINFO", "CONSUMERS", key, g["name"]))
        if r is not None and not is_error(r):
            d["consumers"] = rp.parse_xinfo_consumers(r)
        r = replies.get(("XPENDING", key, g["name"]))
        if r is not None and not is_error(r):
            d["pending_summary"] = rp.parse_xpending_summary(r)
        r = replies.get(("XPENDING", key, g["name"], "-", "+", int(run.opts["pending_sample"])))
        if r is not None and not is_error(r):
            d["pending_sample"] = rp.parse_xpending_range(r)
        r = replies.get(("XRANGE", key, rp.next_id(g["last_delivered_id"]), "+", "COUNT", 1))
        if r and not is_error(r):
            d["next_undelivered_id"] = rp.text(r[0][0])
        details[(key, g["name"])] = d
    return details, now_ms


def mark_liveness(run: Run, details: dict, clients: list[dict] | None, meta: dict, details_now_ms: int | None,
                  *, role: str | None) -> None:
    """Which listed consumers still have a connection (_redis_liveness): sets
    details[(key, group)]["liveness"] = {consumer: verdict}, or
    ["liveness_unknown"] = why it cannot be told."""
    groups = [d for d in details.values() if d.get("consumers")]
    if not groups:
        return
    why = None
    if clients is None:
        why = meta.get("skipped") or "CLIENT LIST not read"
    elif meta.get("truncated"):
        why = f"CLIENT LIST cut at max_clients={meta.get('limit')}: a consumer's connection may be among the rest"
    elif role not in (None, "master"):
        why = "this is a replica: consumers connect to the primary, whose clients this node does not list"
    if why:
        for d in groups:
            d["liveness_unknown"] = why
        return
    consumers = [{"stream": key, "group": group, "name": c["name"], "idle_ms": c["idle_ms"],
                  "undelivered": d.get("undelivered")}
                 for (key, group), d in details.items() for c in d.get("consumers") or []]
    # XINFO CONSUMERS was read a moment before CLIENT LIST: allow for the gap.
    gap_s = max(0.0, (meta["now_ms"] - details_now_ms) / 1000.0) if meta.get("now_ms") and details_now_ms else 1.0
    others = [c for c in clients if c.get("id") != run.own_id and liveness.may_be_a_consumer(c, run.target.db)]
    verdicts = liveness.match(consumers, others, run.target.db, slack_s=liveness.SLACK_S + gap_s)
    for (key, group), d in details.items():
        if d.get("consumers"):
            d["liveness"] = {c["name"]: verdicts[(key, group, c["name"])] for c in d["consumers"]}
