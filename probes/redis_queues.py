"""Redis: streams and their consumer groups, list-based job queues (Celery,
RQ, Sidekiq, Dramatiq, and any list named with --queue), memory and
eviction, blocked clients.

Read-only.  Every command qdiag sends reads: SCAN, TYPE, EXISTS, SSCAN,
SISMEMBER, XINFO, XLEN, XPENDING, XRANGE (one entry), LLEN, LINDEX, LPOS, HLEN, HGET,
HMGET, ZCARD, ZCOUNT, ZRANGE, GET, DBSIZE, INFO, TIME, CLIENT ID, CLIENT
LIST, MEMORY DOCTOR.  The handshake is AUTH and SELECT only: qdiag sets no
connection name (CLIENT SETNAME would only label its own connection, but
"sends nothing that changes server state" is simpler to check) and turns off
redis-py's CLIENT SETINFO where the client allows it.  Reads still refresh
a key's LRU/LFU access time, as any reader does.

One connection, raw replies (no client-side reply parsing: the shapes are
checked in probes/_redis_parse.py against recorded replies), commands
pipelined in batches so 2,000 streams cost a few round trips per sample.

This module is the probe itself: its options, and the order of the run
(discover keys, sample over the window, details, records).  The parts:
  _redis_link     the connection, pipelined batches, one-line errors
  _redis_keys     which keys to look at (SCAN, registry sets, --queue names and globs)
  _redis_samples  what each sample reads, series over the samples
  _redis_streams  stream and consumer-group records
  _redis_jobs     list-based job-queue records (Celery, RQ, Sidekiq, Dramatiq)
  _redis_server   INFO over the window, hints
  _redis_clients  CLIENT LIST: blocked clients, local consumer processes
  _redis_parse    pure parsers and judgements (tested on recorded replies)
  _redis_facts    what the observations mean to the diagnosis
"""

from __future__ import annotations

from typing import Any

from qdiag.context import DeadlineReached
from qdiag.probe import NotApplicable, ProbeError, Option, register

from . import _redis_facts
from . import _redis_parse as rp
from ._redis_clients import client_summary, discover_consumers, read_client_list
from ._redis_jobs import job_details, job_records, layout_summary
from ._redis_keys import discover_keys, is_glob, streams_with_groups, unrecognised_lists
from ._redis_link import Link, Run, is_error, tls_options
from ._redis_samples import Sampler, sample_plan
from ._redis_server import hints, server_state
from ._redis_streams import group_details, mark_liveness, stream_records

DEFAULTS: dict[str, float | int] = {
    "samples": 3,                # samples over the window (>= 2 for rates)
    "scan_count": 1000,          # SCAN ... COUNT per call
    "max_scan_keys": 100_000,    # keys walked per SCAN pass before discovery stops
    "max_streams": 5000,         # streams looked at
    "max_queues": 2000,          # list-based job queues looked at
    "max_detailed_groups": 5000,  # groups (most work first) that get XINFO CONSUMERS, XPENDING, XRANGE
    "max_pending_sampled_groups": 200,  # of those, groups whose pending entries are sampled
    "pending_sample": 100,       # entries read by XPENDING key group - + N (delivery counts)
    "poison_deliveries": 3,      # delivery count that makes a pending entry a poison candidate
    "active_idle_s": 60,         # a consumer idle longer than this is not "recently active"
    "pipeline_batch": 500,       # commands per round trip
    "call_timeout_s": 5.0,       # per round trip, never past the probe deadline
    "connect_timeout_s": 3.0,
    "doctor_chars": 2000,        # MEMORY DOCTOR text kept
    "max_listed": 50,            # consumers per group, blocked clients, poison entries listed
    "max_set_members": 1000,     # members read from registry sets (rq:queues, queues, bindings)
    "flow_maxlen": 100_000,      # elements LPOS may scan per job list and sample to find the last newest job
    "max_clients": 10_000,       # CLIENT LIST is read only up to this many connected clients
    "max_entry_bytes": 65_536,   # a stream whose first/last entry is bigger is not read with XINFO STREAM again
}


# ---------------------------------------------------------------------------
# Options


_HELP = {
    "samples": "samples over the window", "scan_count": "SCAN ... COUNT per call",
    "max_scan_keys": "keys walked per SCAN pass", "max_streams": "streams looked at",
    "max_queues": "list-based job queues looked at",
    "max_detailed_groups": "groups (most work first) that get XINFO CONSUMERS, XPENDING, XRANGE",
    "max_pending_sampled_groups": "groups whose pending entries are sampled",
    "pending_sample": "entries read by XPENDING per group",
    "poison_deliveries": "delivery count that makes a pending entry a poison candidate",
    "active_idle_s": "a consumer idle longer than this is not recently active",
    "pipeline_batch": "commands per round trip", "call_timeout_s": "seconds per round trip",
    "connect_timeout_s": "seconds to connect", "doctor_chars": "MEMORY DOCTOR text kept",
    "max_listed": "consumers per group, blocked clients, poison entries listed",
    "max_set_members": "members read from registry sets",
    "flow_maxlen": "elements LPOS may scan per job list and sample (exact in/out rates up to this many pushes)",
    "max_clients": "CLIENT LIST is not read when more clients are connected (blocked clients, consumer liveness)",
    "max_entry_bytes": "streams with a bigger first or last entry are sampled with XLEN and XINFO GROUPS after "
                       "the first XINFO STREAM (which sends both entries whole)",
}
OPTIONS = tuple(
    Option(key, "float" if isinstance(default, float) else "int", default, _HELP[key],
           low=2 if key == "samples" else (0.05 if isinstance(default, float) else 1),
           high=20 if key == "samples" else None)
    for key, default in DEFAULTS.items()) + (
    Option("ca_file", "path", None, "rediss:// only: PEM bundle of the CA that signed the server's certificate"),
    Option("insecure_tls", "bool", False, "rediss:// only: do not verify the server's certificate "
                                          "(encrypted, but anyone on the path can pose as the server)"),
)


def _options(ctx) -> tuple[dict[str, Any], list[str]]:
    opts = {option.name: ctx.options[option.name] for option in OPTIONS}
    notes = []
    if not ctx.targets.redis.tls and (opts["ca_file"] or opts["insecure_tls"]):
        notes.append("ca_file / insecure_tls apply to rediss:// URLs only; this one is redis:// (no TLS)")
    return opts, notes


# Below this many seconds left after the window, the records are made once without
# details first, as the partial result of a probe the runner may give up on.
PARTIAL_RECORDS_BELOW_S = 4.0

# ---------------------------------------------------------------------------
# The probe


def discover(ctx) -> list[dict]:
    """Before the window: local processes connected to this Redis (consumers to look at)."""
    try:
        return discover_consumers(ctx)
    except (ProbeError, DeadlineReached):
        return []


@register("redis", description="Redis streams and consumer groups, Celery/RQ/Sidekiq/Dramatiq list queues, "
                               "memory and eviction, blocked clients (read-only)",
          needs=("redis",), timeout_s=15, discover=discover, options=OPTIONS,
          diagnosis=_redis_facts.CONTRIBUTION)
def collect(ctx) -> dict:
    target = ctx.targets.redis
    if target is None:
        raise NotApplicable("no Redis target: give --redis redis://host:port/db")
    opts, notes = _options(ctx)
    link = Link(ctx, target, connect_timeout_s=opts["connect_timeout_s"], call_timeout_s=opts["call_timeout_s"],
                batch=int(opts["pipeline_batch"]), tls=tls_options(opts))
    link.open()
    try:
        return _collect(ctx, target, opts, link, notes)
    finally:
        link.close()


def _collect(ctx, target, opts, link: Link, notes: list[str]) -> dict:
    from redis.exceptions import ResponseError

    run = Run(ctx, target, opts, link, notes)
    try:
        run.own_id = str(rp.as_int(link.call("CLIENT", "ID")))
    except ResponseError:  # CLIENT may be renamed or denied; only the self-exclusion suffers
        notes.append("CLIENT ID refused: qdiag's own connection cannot be told apart in CLIENT LIST")
    requests = ctx.partial.setdefault("requests", {})

    def count():
        requests.update({"round_trips": link.round_trips, "commands": link.commands,
                         "command_names": sorted(link.used)})

    try:
        found = discover_keys(run)
    except ResponseError as exc:
        raise ProbeError(f"{target.label()}: key discovery refused ({rp.clip(' '.join(str(exc).split()), 120)}); "
                         "grant the user +scan +type, or name the queues with --queue") from None
    stream_keys = found["stream_keys"]
    queues = found["queues"]
    if len(stream_keys) > opts["max_streams"]:
        notes.append(f"{len(stream_keys)} streams found; looked at the first {int(opts['max_streams'])} (max_streams)")
        stream_keys = stream_keys[: int(opts["max_streams"])]
    if len(queues) > opts["max_queues"]:
        notes.append(f"{len(queues)} list queues found; looked at the first {int(opts['max_queues'])} (max_queues)")
        queues = queues[: int(opts["max_queues"])]
    missing_groups: list[str] = []
    if ctx.targets.groups:
        stream_keys, missing_groups = streams_with_groups(run, stream_keys)
    for name in found["missing"]:
        if is_glob(name):
            notes.append(f"no stream or list queue on {target.label()} matches '{name}'")
        else:
            notes.append(f"queue '{name}' not found on {target.label()}: no stream or list named {name}, "
                         f"rq:queue:{name}, queue:{name} or dramatiq:{name}, and no RQ, Sidekiq or Celery registry "
                         "lists it (Redis deletes a list when its last job is taken, so a drained plain list "
                         "looks the same); check the name and the database number in the URL")
    not_found = [{"kind": "queue", "name": name} for name in found["missing"]]
    not_found += [{"kind": "group", "name": g} for g in missing_groups]
    if not_found:
        ctx.partial["not_found"] = not_found
    discovery = {
        "mode": found["mode"], "scan": found["scan"], "streams": len(stream_keys),
        "list_queues": rp.count_by(queues, "layout"), "missing": found["missing"],
        "unrecognised_lists": len(found["unrecognised_lists"]),
    }
    ctx.partial["discovery"] = discovery
    count()

    plan = sample_plan(stream_keys, queues)
    sampler = Sampler(run, plan, int(opts["flow_maxlen"]), int(opts["max_entry_bytes"]))
    samples = ctx.sample(sampler.take, int(opts["samples"]))
    count()
    if not samples:
        raise DeadlineReached(ctx.name)
    if len(samples) < 2:
        notes.append("only one sample before the deadline: no rates")
    ctx.partial["notes"] = notes
    if ctx.remaining() < PARTIAL_RECORDS_BELOW_S:
        # Little time left: records without details now, kept should the runner give up on
        # this thread.  With time to spare it is not worth a second pass over every group
        # (0.15 s at 2,000 streams): every round trip of the details is bounded by the
        # deadline, and a detail pass that fails or is cut leaves the records without them.
        ctx.partial["queues"] = _ranked(stream_records(run, samples, stream_keys, {}, samples[-1][1].get(("TIME",)))[0]
                                        + job_records(run, samples, queues, {}))

    d = _details(run, samples, stream_keys, queues)
    stream_details, list_details, now_ms = d["streams"], d["lists"], d["now_ms"]
    records, streams = stream_records(run, samples, stream_keys, stream_details, now_ms)
    records = _ranked(records + job_records(run, samples, queues, list_details))
    server = server_state(run, samples, d["doctor"])
    if server["mode"] == "cluster":
        notes.append("Redis Cluster: SCAN and CLIENT LIST cover this node only; keys in other nodes' slots are not seen")
    if server["role"] == "slave":
        notes.append("this is a replica: key state is replicated, but CLIENT LIST shows this node's clients only")
    if server["loading"]:
        notes.append("the server is still loading its dataset: numbers may be incomplete")
    clients = (client_summary(run, d["clients"], d["clients_meta"], stream_details, list_details)
               if d["clients"] is not None else None)
    unrecognised = unrecognised_lists(run, found["unrecognised_lists"]) if not d["cut"] else None
    for cmd, err in sorted(run.errors.items(), key=lambda kv: str(kv[0]))[:10]:
        notes.append(f"{' '.join(rp.text(a) for a in cmd)}: {err}")
    count()
    out = {
        "queues": records,
        "streams": streams,
        "layouts": layout_summary(samples, queues, list_details),
        "server": server,
        "clients": clients,
        "hints": hints(server, clients or {}, records, target),
        "discovery": discovery,
        **({"not_found": not_found} if not_found else {}),
        "unrecognised_lists": unrecognised,
        "window": {"samples": len(samples), "span_s": round(samples[-1][0] - samples[0][0], 3)},
        "requests": {"round_trips": link.round_trips, "commands": link.commands,
                     "command_names": sorted(link.used)},
        "notes": list(dict.fromkeys(notes)),
    }
    return out


def _details(run: Run, samples, stream_keys: list[bytes], queues: list[dict]) -> dict[str, Any]:
    """What is read once, after the window: consumer and pending details of the
    groups with the most work, then at once CLIENT LIST (whose connections
    tell live consumers from dead ones), the job queues' details, MEMORY DOCTOR.
    Whatever the deadline leaves out stays out, and a note says so."""
    last = samples[-1][1]
    out: dict[str, Any] = {"streams": {}, "lists": {}, "now_ms": last.get(("TIME",)), "clients": None,
                           "clients_meta": {}, "doctor": None, "cut": None}
    info = last.get(("INFO",)) or {}
    try:
        out["streams"], detail_now = group_details(run, samples, stream_keys)
        out["now_ms"] = detail_now or out["now_ms"]
        clients, meta = read_client_list(run.link, info.get("connected_clients"), int(run.opts["max_clients"]))
        out["clients"], out["clients_meta"] = clients, meta
        if meta.get("skipped"):
            run.notes.append(meta["skipped"])
        mark_liveness(run, out["streams"], clients, meta, detail_now, role=info.get("role"))
        out["lists"] = job_details(run, samples, queues)
        raw_doctor = run.link.batch([("MEMORY", "DOCTOR")])[0]
        if is_error(raw_doctor):
            run.notes.append(f"MEMORY DOCTOR refused ({raw_doctor})")
        else:
            out["doctor"] = rp.clip(rp.text(raw_doctor), int(run.opts["doctor_chars"]))
    except DeadlineReached:
        out["cut"] = "deadline reached: consumer, pending and oldest-job details are partly missing"
        run.notes.append(out["cut"])
    except ProbeError as exc:  # the connection failed after the window: the samples still stand
        out["cut"] = f"details not read ({exc}): consumer, pending and oldest-job details are partly missing"
        run.notes.append(out["cut"])
    return out


_STATUS_ORDER = {rp.STOP: 0, rp.GONE: 0, rp.STALL: 1, rp.WARN: 2, rp.UNKNOWN: 3, rp.NO_GROUP: 4, rp.OK: 5}


def _ranked(records: list[dict]) -> list[dict]:
    """Severity added, biggest problem first."""
    for rec in records:
        rec["severity"] = rp.SEVERITY.get(rec["status"], "unknown")
    return sorted(records, key=_severity)


def _severity(record: dict) -> tuple:
    return (_STATUS_ORDER.get(record["status"], 5), -(record["depth"] or 0), record["name"], record["group"] or "")
