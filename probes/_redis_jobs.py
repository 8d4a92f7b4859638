"""List-based job queues (Celery/kombu, RQ, Sidekiq, Dramatiq, and plain
lists named with --queue): one record per queue from the samples, the
details read once after the window (the oldest job's enqueue time where the
layout stores one, worker registries and heartbeats, Celery's unacked
deliveries), and a per-layout summary.
"""

from __future__ import annotations

from typing import Any

from . import _redis_flow as flow
from . import _redis_parse as rp
from ._redis_keys import qid
from ._redis_link import Run, is_error
from ._redis_samples import last, series


def job_details(run: Run, samples, queues: list[dict]) -> dict[str, Any]:
    """The oldest job's enqueue time where the layout stores one, worker
    registries, abandoned RQ jobs, Celery's oldest unacked delivery."""
    if not samples:
        return {}
    last = samples[-1][1]
    now_ms = last.get(("TIME",))
    now_s = now_ms / 1000.0 if now_ms else None
    commands: list[tuple] = []
    oldest_ref: dict[str, tuple] = {}
    for q in queues:
        ident = qid(q)
        if q["layout"] in ("rq", "dramatiq") and q["keys"]:
            head = last.get(("LINDEX", q["keys"][0], 0))
            if head and head["value"] is not None:
                job_id = rp.text(head["value"])
                cmd = (("HGET", f"rq:job:{job_id}", "enqueued_at") if q["layout"] == "rq"
                       else ("HGET", f"{q.get('namespace', 'dramatiq:')}{q['name']}.msgs", job_id))
                oldest_ref[ident] = cmd
                commands.append(cmd)
        if q["layout"] in ("sidekiq", "celery"):
            for k in q["keys"]:
                tail = last.get(("LINDEX", k, -1))
                if tail and tail["value"] is None:  # too big to keep per sample: read it once
                    commands.append(("LINDEX", k, -1))
        if q["layout"] == "rq" and now_s is not None:
            commands.append(("ZCOUNT", f"rq:wip:{q['name']}", "-inf", f"({now_s:.6f}"))
    rq_workers_cmd = ("SSCAN", "rq:workers", 0, "COUNT", int(run.opts["max_set_members"]))
    if any(q["layout"] == "rq" for q in queues):
        commands.append(rq_workers_cmd)
    prefixes = sorted({q.get("prefix", "") for q in queues if q["layout"] == "celery"})
    for p in prefixes:
        commands.append(("ZRANGE", f"{p}unacked_index", 0, 0, "WITHSCORES"))
    namespaces = sorted({q.get("namespace", "") for q in queues if q["layout"] == "sidekiq"})
    for ns in namespaces:
        commands.append(("SSCAN", f"{ns}processes", 0, "COUNT", int(run.opts["max_set_members"])))
    d_namespaces = sorted({q.get("namespace", "dramatiq:") for q in queues if q["layout"] == "dramatiq"})
    for ns in d_namespaces:
        if now_ms:
            commands.append(("ZCOUNT", f"{ns}__heartbeats__", now_ms - 60_000, "+inf"))
    replies = dict(zip(commands, run.link.batch(commands))) if commands else {}

    def ok(cmd):
        r = replies.get(cmd)
        return None if r is None or is_error(r) else r

    # Second round: are the registered workers/processes alive?
    follow: list[tuple] = []
    # RQ: every worker is in `rq:workers`; its hash (gone once the worker
    # stops heartbeating) lists the queues it listens on.
    r = ok(rq_workers_cmd)
    rq_worker_keys = sorted(rp.text(m) for m in (r[1] if r else []))
    follow += [("HMGET", w, "queues", "state") for w in rq_worker_keys]
    sk_processes: dict[str, list[str]] = {}
    for ns in namespaces:
        r = ok(("SSCAN", f"{ns}processes", 0, "COUNT", int(run.opts["max_set_members"])))
        idents = sorted(rp.text(m) for m in (r[1] if r else []))
        sk_processes[ns] = idents
        follow += [("HMGET", f"{ns}{i}", "info", "beat", "quiet") for i in idents]
    more = dict(zip(follow, run.link.batch(follow))) if follow else {}

    out: dict[str, Any] = {"now_s": now_s, "queues": {}, "celery": {}, "sidekiq": {}, "dramatiq": {},
                           "rq_workers": {}}
    for w in rq_worker_keys:
        fields = more.get(("HMGET", w, "queues", "state"))
        if fields and not is_error(fields) and fields[0] is not None:
            out["rq_workers"][w[len("rq:worker:"):]] = [q for q in (rp.text(fields[0]) or "").split(",") if q]
    for q in queues:
        ident = qid(q)
        d: dict[str, Any] = {}
        if ident in oldest_ref:
            value = ok(oldest_ref[ident])
            if q["layout"] == "rq":
                d["oldest_enqueued_at"] = rp.rq_time(value)
                d["oldest_basis"] = "enqueued_at of the job at the head of the list"
            else:
                m = rp.dramatiq_message(value)
                d["oldest_enqueued_at"] = m["enqueued_at"]
                d["oldest_actor"] = m["actor"]
                d["oldest_basis"] = "message_timestamp of the message at the head of the list"
        if q["layout"] in ("sidekiq", "celery") and q["keys"]:
            payloads = []
            for k in q["keys"]:  # the main key first: workers pop it before the priority siblings
                tail = last.get(("LINDEX", k, -1))
                if tail:
                    payloads.append((k, tail["value"] if tail["value"] is not None else ok(("LINDEX", k, -1))))
            payloads = [(k, p) for k, p in payloads if p]
            if q["layout"] == "sidekiq" and payloads:
                job = rp.sidekiq_job(payloads[0][1])
                d["oldest_enqueued_at"] = job["enqueued_at"]
                d["oldest_job_class"] = job["job_class"]
                d["oldest_basis"] = "enqueued_at of the job at the tail (Sidekiq's latency)"
            elif q["layout"] == "celery" and payloads:
                msg = rp.celery_message(payloads[0][1])
                d["next_task"] = msg["task"]
                d["next_eta"] = msg["eta"]
                d["oldest_basis"] = "Celery messages carry no enqueue time: age unknown"
        if q["layout"] == "rq":
            if now_s is not None:
                d["abandoned"] = rp.as_int(ok(("ZCOUNT", f"rq:wip:{q['name']}", "-inf", f"({now_s:.6f}")))
            listening = busy = 0
            for w in rq_worker_keys:
                fields = more.get(("HMGET", w, "queues", "state"))
                if not fields or is_error(fields) or fields[0] is None:
                    continue  # hash expired: the worker stopped heartbeating
                if q["name"] in (rp.text(fields[0]) or "").split(","):
                    listening += 1
                    busy += rp.text(fields[1]) == "busy"
            d["workers_alive"] = listening
            d["workers_busy"] = busy
            d["workers_registered_total"] = len(rq_worker_keys)
        out["queues"][ident] = d
    for p in prefixes:
        r = ok(("ZRANGE", f"{p}unacked_index", 0, 0, "WITHSCORES"))
        oldest = float(rp.text(r[1])) if r and len(r) >= 2 else None
        out["celery"][p] = {"oldest_unacked_age_s": rp.age_s(oldest, now_s)}
    for ns in namespaces:
        procs = []
        for ident in sk_processes.get(ns, []):
            r = more.get(("HMGET", f"{ns}{ident}", "info", "beat", "quiet"))
            if not r or is_error(r):
                continue
            info = rp.load_json(r[0]) if r[0] else None
            beat = float(rp.text(r[1])) if r[1] else None
            procs.append({"identity": ident, "queues": (info or {}).get("queues") or [],
                          "beat_age_s": rp.age_s(beat, now_s), "quiet": rp.text(r[2]) == "true"})
        out["sidekiq"][ns] = {"processes": procs}
    for ns in d_namespaces:
        out["dramatiq"][ns] = {"workers_alive": rp.as_int(ok(("ZCOUNT", f"{ns}__heartbeats__", now_ms - 60_000, "+inf")))
                               if now_ms else None}
    return out


def job_records(run: Run, samples, queues: list[dict], details: dict) -> list[dict]:
    records = []
    now_s = details.get("now_s")
    for q in queues:
        keys = q["keys"] or [q["key"]]
        per_key = {k: series(samples, ("LLEN", k)) for k in keys}
        depth_series = []
        for i, (t, _) in enumerate(samples):
            vals = [per_key[k][i][1] for k in keys]
            depth_series.append((t, None if any(v is None for v in vals) else sum(vals)))
        depth = last(depth_series)
        net = rp.rate(depth_series)
        consumed = list_consumed(samples, q, keys, depth_series)
        d = details.get("queues", {}).get(qid(q), {})
        rate_in = rate_out = None
        basis = "net only (depth change): Redis lists keep no per-queue in/out counters"
        extra: dict[str, Any] = {}
        counted = list_flow(samples, q, keys, int(run.opts["flow_maxlen"]))
        if counted is not None:
            extra.update(rate_in_min=counted.rate_in_min, rate_out_min=counted.rate_out_min,
                         jobs_pushed=counted.pushed, jobs_taken=counted.taken, flow_exact=counted.exact)
            basis = counted.basis
            if counted.exact:
                rate_in, rate_out = counted.rate_in, counted.rate_out
            if counted.taken:
                consumed = True
            elif counted.exact and counted.taken == 0 and consumed is None and depth_series \
                    and all(v for _, v in depth_series):
                # Every job pushed during the window is accounted for in the depth: none was taken
                # (the ends' comparison cannot say so for a list whose push end is unknown).
                consumed = False
        elif len(samples) >= 2 and any(cmd[0] == "LPOS" and cmd[1] in keys for cmd in run.errors):
            basis = "unknown: LPOS failed (it needs Redis 6.0.6 or later, and the @read ACL category)"
        consumers = None
        if q["layout"] == "rq":
            regs = {reg: last(series(samples, ("ZCARD", f"rq:{reg}:{q['name']}"))) for reg in rp.RQ_REGISTRIES}
            deltas = {reg: rp.delta(series(samples, ("ZCARD", f"rq:{reg}:{q['name']}"))) for reg in rp.RQ_REGISTRIES}
            extra["registries"] = regs
            extra["failed_delta"] = deltas["failed"]
            extra["intermediate"] = last(series(samples, ("LLEN", f"rq:queue:{q['name']}:intermediate")))
            extra["abandoned"] = d.get("abandoned")
            taken = rq_taken(samples, q["name"])
            if rate_in is None and taken is not None and net is not None:
                rate_out = taken
                rate_in = round(net + taken, 3)
                basis = ("out from the wip+finished+failed+canceled registry deltas, in = out + depth change; "
                         "a lower bound if RQ cleaned a registry or jobs ran with result_ttl=0"
                         + (f" (LPOS counts: {basis})" if counted is not None else ""))
            consumers = d.get("workers_alive")
            extra["workers_busy"] = d.get("workers_busy")
        elif q["layout"] == "dramatiq":
            msgs = last(series(samples, ("HLEN", f"{q.get('namespace', 'dramatiq:')}{q['name']}.msgs")))
            extra["in_flight"] = None if msgs is None or depth is None else max(0, msgs - depth)
            xq = series(samples, ("ZCARD", f"{q.get('namespace', 'dramatiq:')}{q['name']}.XQ"))
            extra["dead_letters"] = last(xq)
            extra["dead_letters_delta"] = rp.delta(xq)
            extra["delay_queue"] = bool(q.get("delay_queue"))
            if d.get("oldest_actor"):
                extra["oldest_actor"] = d["oldest_actor"]
        elif q["layout"] == "celery":
            extra["key_lengths"] = {rp.text(k): last(per_key[k]) for k in keys}
            # The message a worker takes next: the tail of the highest-priority non-empty list.
            if d.get("next_task"):
                extra["next_task"] = d["next_task"]
            if d.get("next_eta"):
                extra["next_eta"] = d["next_eta"]
        elif q["layout"] == "sidekiq":
            procs = details.get("sidekiq", {}).get(q.get("namespace", ""), {}).get("processes")
            if procs is not None:
                consumers = sum(1 for p in procs if q["name"] in p["queues"] and not p["quiet"]
                                and (p["beat_age_s"] is None or p["beat_age_s"] <= 60))
            if d.get("oldest_job_class"):
                extra["oldest_job_class"] = d["oldest_job_class"]
        if consumers == 0 and consumed:
            # Jobs left the list, so something consumes it: the layout's worker
            # registry does not know that consumer (another worker kind, or one
            # that registers elsewhere).  No count rather than a wrong zero.
            consumers = None
            extra["consumers_note"] = "jobs were taken during the window, but no registered worker listens on this queue"
        oldest_age = rp.age_s(d.get("oldest_enqueued_at"), now_s) if depth else None
        status, reason = rp.judge(waiting=depth, consumers=consumers, consumed=consumed,
                                  depth_trend=rp.trend(depth_series), rate_in=rate_in, rate_out=rate_out,
                                  samples=len(samples))
        record = {
            "system": "redis", "name": q["name"], "group": None, "layout": q["layout"],
            "depth": depth, "rate_in": rate_in, "rate_out": rate_out, "consumers": consumers,
            "fill_ratio": None, "status": status, "status_reason": reason,
            "key": rp.text(q["key"]), "key_exists": bool(q["keys"]), "net_rate": net, "rate_source": basis,
            "depth_trend": rp.trend(depth_series), "depth_samples": [v for _, v in depth_series],
            "consumed_in_window": consumed,
            "oldest_age_s": oldest_age, "oldest_basis": d.get("oldest_basis") if depth else None,
            "samples": len(samples),
        }
        if q.get("prefix"):
            record["key_prefix"] = q["prefix"]
        if q.get("namespace") and q["layout"] == "sidekiq":
            record["namespace"] = q["namespace"]
        record.update(extra)
        records.append(record)
    return records


def list_flow(samples, q: dict, keys: list, maxlen: int) -> flow.Flow | None:
    """Jobs pushed and taken over the window, summed over the queue's lists
    (Celery's priority siblings), from LLEN and LPOS at each sample."""
    if len(samples) < 2:
        return None
    push = flow.push_end(q["layout"], q["consume_index"])
    steps, ends = [], set()
    for (_, before), (_, after) in zip(samples, samples[1:]):
        step = []
        for key in keys:
            n0, n1 = before.get(("LLEN", key)), after.get(("LLEN", key))
            looked, repeats = {}, False
            for end in (flow.HEAD, flow.TAIL) if push is None else (push,):
                newest = before.get(("LINDEX", key, end)) or {}
                anchor = newest.get("value") is not None  # (a job over 16 KB is not kept, nor looked for)
                found = after.get(("LPOS", key, end, push is None))
                if anchor and found is None:  # there was a job to look for, and LPOS failed
                    return None
                looked[end] = (anchor, found["pos"] if found else None)
                repeats = repeats or bool(found and found["repeats"])
            if push is None:
                iv, end = flow.plain_interval(n0, looked[flow.HEAD], looked[flow.TAIL], n1, maxlen, repeats=repeats)
                if end is not None:
                    ends.add(end)
            else:
                iv = flow.interval(n0, *looked[push], n1, push, maxlen)
            step.append(iv)
        steps.append(step)
    if len(ends) > 1:  # a plain list pushed at both ends between samples: no push end to count at
        steps = [[flow.Interval(0, 0, False, "elements added at both ends")]]
    end = push if push is not None else next(iter(ends), None)
    word = {flow.HEAD: "head (LPUSH end)", flow.TAIL: "tail (RPUSH end)"}.get(end, "push end")
    return flow.window_flow(steps, samples[-1][0] - samples[0][0], end_word=word)


def rq_taken(samples, name: str) -> float | None:
    """Jobs taken from an RQ queue per second: each taken job enters wip and
    then finished/failed/canceled, so the sum of those deltas counts it once."""
    parts = [rp.delta(series(samples, ("ZCARD", f"rq:{reg}:{name}"))) for reg in ("wip", "finished", "failed", "canceled")]
    if any(p is None for p in parts) or len(samples) < 2:
        return None
    span = samples[-1][0] - samples[0][0]
    total = sum(parts)
    if span <= 0 or total < 0:
        return None
    return round(total / span, 3)


def list_consumed(samples, q: dict, keys: list, depth_series) -> bool | None:
    """Whether anything left the queue during the window.  Producers add at
    one end and consumers take from the other, so while jobs wait the element
    at the consuming end changes exactly when something was taken.  For a
    list of unknown layout both ends are compared: unchanged ends and a
    depth that never fell mean nothing was taken; a change there says only
    that something happened."""
    if len(samples) < 2:
        return None
    depths = [v for _, v in depth_series]
    if any(v is None for v in depths):
        return None
    if any(b < a for a, b in zip(depths, depths[1:])):
        return True
    if depths[0] == 0:
        return None  # nothing was waiting when the window opened
    ends = [q["consume_index"]] if q["consume_index"] is not None else [0, -1]
    for key in keys:
        for end in ends:
            first = samples[0][1].get(("LINDEX", key, end)) or {}
            last = samples[-1][1].get(("LINDEX", key, end)) or {}
            if first.get("digest") != last.get("digest"):
                return True if q["consume_index"] is not None else None
    return False


def layout_summary(samples, queues: list[dict], details: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix in sorted({q.get("prefix", "") for q in queues if q["layout"] == "celery"}):
        unacked = series(samples, ("HLEN", f"{prefix}unacked"))
        out.setdefault("celery", {})[prefix or "(no prefix)"] = {
            "unacked": last(unacked), "unacked_delta": rp.delta(unacked),
            "unacked_index": last(series(samples, ("ZCARD", f"{prefix}unacked_index"))),
            "oldest_unacked_age_s": details.get("celery", {}).get(prefix, {}).get("oldest_unacked_age_s"),
            "note": "unacked: messages workers reserved and have not acknowledged; restored to their queue "
                    "after the visibility timeout (1 hour by default)",
        }
    for ns in sorted({q.get("namespace", "") for q in queues if q["layout"] == "sidekiq"}):
        processed = series(samples, ("GET", f"{ns}stat:processed"))
        failed = series(samples, ("GET", f"{ns}stat:failed"))
        out.setdefault("sidekiq", {})[ns or "(no namespace)"] = {
            "retry": last(series(samples, ("ZCARD", f"{ns}retry"))),
            "retry_delta": rp.delta(series(samples, ("ZCARD", f"{ns}retry"))),
            "dead": last(series(samples, ("ZCARD", f"{ns}dead"))),
            "scheduled": last(series(samples, ("ZCARD", f"{ns}schedule"))),
            "processed_rate": rp.rate(processed, counter=True), "failed_rate": rp.rate(failed, counter=True),
            "processes": details.get("sidekiq", {}).get(ns, {}).get("processes"),
            "note": "processed/failed counters are flushed by each Sidekiq process's heartbeat: coarse over a short window",
        }
    for ns in sorted({q.get("namespace", "dramatiq:") for q in queues if q["layout"] == "dramatiq"}):
        out.setdefault("dramatiq", {})[ns] = {
            "workers_seen": last(series(samples, ("ZCARD", f"{ns}__heartbeats__"))),
            "workers_alive": details.get("dramatiq", {}).get(ns, {}).get("workers_alive"),
            "note": "workers_alive: heartbeat within the last 60 s (Dramatiq's default heartbeat timeout)",
        }
    return out
