"""Kafka: consumer groups, per-partition lag, produce/consume rates and a
Burrow-style verdict per partition and group, from offsets sampled over the window.

Read-only.  Everything goes through the admin client (ListGroups,
DescribeGroups, OffsetFetch, Metadata with topic auto-creation off,
ListOffsets), which never joins a group or commits.  The one exception is the
timestamp of the oldest unconsumed record of the worst partitions: it is read
with a KafkaConsumer that has no group id (so no group, no commits), topic
auto-creation off, assign() + seek() and a one-record fetch.

The admin client wrapper is _kafka_admin.py, the plain-socket preflight and
connection diagnosis _kafka_preflight.py, the bounded calls _kafka_calls.py,
the pure analysis of the sampled offsets _kafka_lag.py.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import time
from typing import Any

from qdiag.context import ProbeContext
from qdiag.endpoints import norm_ip
from qdiag.probe import ProbeError, Option, register

from . import _kafka_compact as compact_mod
from . import _kafka_facts
from . import _kafka_groups as groups_mod
from . import _kafka_lag as lag
from . import _kafka_members as members_mod
from ._kafka_admin import RESERVE_S, Admin, client_config, cluster_config, count_requests, no_auto_create
from ._kafka_calls import Hung, bounded, first_line

DEFAULTS: dict[str, Any] = {
    "allowed_lag": 0,            # Burrow's floor: lag at or below it is never a problem
    "read_committed": False,     # end offset = last stable offset (transactional topics)
    "samples": 3,                # offset samples over the window (3 to 20, at least 0.5 s apart)
    "timestamp_reads": 10,       # partitions (worst lag first) whose oldest unconsumed record is read; 0 = none
    "request_timeout": 5.0,      # seconds for one broker request
    "retention_margin": lag.DEFAULT_RETENTION_MARGIN,
    "underparallel_ratio": lag.DEFAULT_UNDERPARALLEL_RATIO,
    "client_id": "qdiag",
    "security_protocol": "PLAINTEXT",
    "ssl_cafile": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_check_hostname": True,
    "sasl_mechanism": None,
    "sasl_username": None,
    "sasl_password": None,
    "keep_raw": False,           # include the raw sampled offsets (for recording fixtures)
    "partition_rows": 1000,      # partition rows kept in full; beyond it only the ones showing a problem
}
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_TIMESTAMP_BUDGET_S = 3.0
# Shortest time between the start of one offset sample and the next: each sample is
# three or four requests to the coordinators and partition leaders, and a
# short window with many samples must not turn into back-to-back requests.
MIN_SAMPLE_INTERVAL_S = 0.5
# Record reads for seconds behind: each partition's fetch is held to its first record
# batch (max_partition_fetch_bytes = 1), and one Fetch may carry the first batches of
# many partitions up to this size, so ten partitions take one round trip, not ten.
_FETCH_MAX_BYTES = 1 << 20

# --- options ---------------------------------------------------------------------------

OPTIONS = (
    Option("allowed_lag", "int", DEFAULTS["allowed_lag"], "Burrow's floor: lag at or below it is never a problem",
           low=0),
    Option("read_committed", "bool", DEFAULTS["read_committed"], "end offset = last stable offset (transactions)"),
    Option("samples", "int", DEFAULTS["samples"],
           f"offset samples over the window (fewer when the window cannot keep them {MIN_SAMPLE_INTERVAL_S:g} s apart)",
           low=3, high=20),
    Option("timestamp_reads", "int", DEFAULTS["timestamp_reads"],
           "partitions whose oldest unconsumed record is read for seconds behind; 0 = none", low=0, high=1000),
    Option("request_timeout", "float", DEFAULTS["request_timeout"], "seconds for one broker request",
           low=0.05, high=300),
    Option("retention_margin", "float", DEFAULTS["retention_margin"],
           "share of retention left that counts as at risk", low=0.0001, high=1),
    Option("underparallel_ratio", "float", DEFAULTS["underparallel_ratio"],
           "partitions per member above which a group is under-parallel", low=0.0001, high=1e6),
    Option("client_id", "str", DEFAULTS["client_id"], "client id qdiag's requests carry"),
    Option("security_protocol", "str", DEFAULTS["security_protocol"], "how to talk to the brokers",
           choices=_PROTOCOLS),
    Option("ssl_cafile", "path", None, "CA bundle for SSL"),
    Option("ssl_certfile", "path", None, "client certificate for SSL"),
    Option("ssl_keyfile", "path", None, "client key for SSL"),
    Option("ssl_check_hostname", "bool", True, "check the broker certificate's host name"),
    Option("sasl_mechanism", "str", None, "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."),
    Option("sasl_username", "str", None, "SASL user"),
    Option("sasl_password", "str", None, "SASL password", secret=True),
    Option("keep_raw", "bool", False, "include the raw sampled offsets (for recording fixtures)"),
    Option("partition_rows", "int", DEFAULTS["partition_rows"],
           "partition rows kept in full in the snapshot; beyond it, rows showing a problem are kept (worst first) "
           "and the rest counted per group and topic", low=0, high=1_000_000),
)


def _options(ctx: ProbeContext) -> dict[str, Any]:
    return dict(ctx.options)


# --- narrowing to what the user named -------------------------------------------------------

GLOB_CHARS = set("*?[")


def _expand_globs(names: tuple[str, ...], admin: Admin) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """--queue names as topics: globs (orders-*) matched against every topic's name, the same
    way the other brokers match queue names.  Returns (topics, globs that matched none)."""
    globs = [n for n in names if GLOB_CHARS & set(n)]
    topics = [n for n in names if n not in globs]
    if not globs:
        return tuple(topics), ()
    every = admin.topic_names()
    unmatched = []
    for pattern in globs:
        matched = [t for t in every if fnmatch.fnmatchcase(t, pattern) and not t.startswith("__")]
        topics += [t for t in matched if t not in topics]
        if not matched:
            unmatched.append(pattern)
    return tuple(topics), tuple(unmatched)


def _missing(kind: str, named: tuple[str, ...], found: set[str], label: str, others: bool) -> list[str]:
    """Named items that do not exist.  An error when Kafka is the only system they
    can belong to (or none of them is here); otherwise they may name a RabbitMQ
    queue or a Redis key, and are just listed."""
    missing = [n for n in named if n not in found]
    if missing and (not others or len(missing) == len(named)):
        what = {"group": "consumer group", "topic": "topic"}[kind]
        hint = ("list them with kafka-consumer-groups --list; check --group" if kind == "group"
                else "topic names are case-sensitive; check --queue")
        names = ", ".join(f"'{m}'" for m in missing)
        raise ProbeError(f"kafka {label}: {what}{'s' if len(missing) > 1 else ''} {names} "
                         f"{'do' if len(missing) > 1 else 'does'} not exist ({hint})")
    return missing


# --- record timestamps ------------------------------------------------------------------------

def _read_timestamps(ctx: ProbeContext, opts: dict, admin: Admin,
                     wanted: list[tuple[str, int, int, int]], within_s: float | None = None) -> tuple[dict, dict]:
    """The first consumable record at or after each wanted offset, read without a
    group: {topic: {"p": [{"read_at", "offset", "timestamp_ms", "timestamp_type"}]}}.

    `wanted` holds (topic, partition, offset to read at, log end).  Offsets of
    one partition are read one after the other (a partition is assigned once).
    When the fetch position reaches the log end without a record, everything
    from the offset on is transaction markers (or aborted records under
    read_committed): recorded as {"read_at", "offset": None, "skipped_to": position}.
    """
    kafka = admin.kafka
    info: dict[str, Any] = {"requested": len(wanted), "read": 0}
    if not wanted:
        return {}, info
    if "allow_auto_create_topics" not in kafka.KafkaConsumer.DEFAULT_CONFIG:
        info["skipped"] = "this kafka-python cannot turn off topic auto-creation for a consumer"
        return {}, info
    budget = min(_TIMESTAMP_BUDGET_S, ctx.remaining() - RESERVE_S, within_s if within_s is not None else 1e9)
    if budget < 0.3:
        info["skipped"] = "no time left before the deadline"
        return {}, info
    io = max(0.2, min(admin.timeout, budget))
    config = client_config(kafka.KafkaConsumer.DEFAULT_CONFIG, opts, admin.bootstrap, io, budget + 1.0)
    # retry_backoff_ms: the fetcher and the metadata refresh would each wait out 100 ms
    # before this one-off reader's first fetch; a few extra requests cost less.
    config.update({
        "group_id": None, "enable_auto_commit": False, "allow_auto_create_topics": False,
        "auto_offset_reset": "none", "max_poll_records": 1, "fetch_max_bytes": _FETCH_MAX_BYTES,
        "max_partition_fetch_bytes": 1, "fetch_max_wait_ms": 100, "fetch_min_bytes": 1,
        "enable_incremental_fetch_sessions": False, "metrics_enabled": False, "retry_backoff_ms": 10,
        "isolation_level": "read_committed" if opts["read_committed"] else "read_uncommitted",
    })
    config = {k: v for k, v in config.items() if k in kafka.KafkaConsumer.DEFAULT_CONFIG}
    found: dict[str, dict] = {}
    stop_at = time.monotonic() + budget

    def read() -> None:
        consumer = kafka.KafkaConsumer(**config)
        metadata = cluster_config(consumer)
        if metadata is not None and "retry_backoff_ms" in metadata:  # not handed down by kafka-python 3.0
            metadata["retry_backoff_ms"] = config.get("retry_backoff_ms", 100)
        if not no_auto_create(consumer):
            consumer.close()
            info["skipped"] = "cannot make sure this kafka-python's consumer never auto-creates topics"
            return
        count_requests(consumer, admin.requests)
        queues: dict = {}
        for topic, p, offset, end in sorted(wanted):
            queues.setdefault(kafka.TopicPartition(topic, p), []).append((offset, end))
        current = {tp: todo.pop(0) for tp, todo in queues.items()}

        def done(tp, entry) -> None:
            found.setdefault(tp.topic, {}).setdefault(str(tp.partition), []).append(entry)
            if queues[tp]:
                current[tp] = queues[tp].pop(0)
                consumer.seek(tp, current[tp][0])
            else:
                del current[tp]
                consumer.pause(tp)

        try:
            consumer.assign(list(current))
            for tp, (offset, _) in current.items():
                consumer.seek(tp, offset)
            while current and time.monotonic() < stop_at:
                wait_ms = int(max(50, min(300, (stop_at - time.monotonic()) * 1000)))
                for tp, records in consumer.poll(timeout_ms=wait_ms, max_records=len(current)).items():
                    if tp in current and records and records[0].offset >= current[tp][0]:
                        rec = records[0]
                        done(tp, {"read_at": current[tp][0], "offset": rec.offset, "timestamp_ms": rec.timestamp,
                                  "timestamp_type": "log_append" if rec.timestamp_type == 1 else "create"})
                for tp in list(current):
                    position = consumer.position(tp)
                    if position is not None and position >= current[tp][1]:
                        # Fetched up to the log end and found nothing to consume.
                        done(tp, {"read_at": current[tp][0], "offset": None, "skipped_to": position})
        finally:
            consumer.close()  # no group id: there is nothing to commit

    try:
        bounded(read, budget + 1.0)
    except Hung:
        info["error"] = f"record reads did not finish within {budget:.1f}s"
    except Exception as exc:
        info["error"] = first_line(exc)
    info["read"] = sum(len(v) for parts in found.values() for v in parts.values())
    return found, info


# --- discovery ------------------------------------------------------------------------------

def discover(ctx: ProbeContext) -> list[dict]:
    """Local processes behind the groups' members.

    The broker names a member's client host, never its port or process, so a
    member is matched to the local processes connected to a broker from that
    address, leaving out the brokers themselves (they listen on the broker
    port and connect to it) and qdiag.  When more processes connect from the
    address than the groups have members there, which one is which cannot be
    told from here: each says so, with both counts (and the diagnosis keeps
    only the ones the user named)."""
    if ctx.targets.kafka is None:
        return []
    opts = _options(ctx)
    admin = Admin(ctx, opts)
    try:
        listed = admin.list_groups()
        chosen = [g for g in (ctx.targets.groups or sorted(listed)) if g in listed
                  and listed[g].get("group_type") != "consumer"]
        described = admin.describe_groups(chosen)
        brokers = _resolve(ctx, admin.broker_endpoints())
    finally:
        admin.close()
    members_by_host: dict[str, list[tuple[str, dict]]] = {}
    for gid, d in described.items():
        for member in d.get("members") or []:
            if member.get("host"):
                members_by_host.setdefault(member["host"].lstrip("/"), []).append((gid, member))
    conns = members_mod.process_sockets() if members_by_host else []
    not_members = {os.getpid()} | members_mod.broker_pids(conns, {port for _, port in brokers})
    found: dict[int | str, dict] = {}
    for host, members in members_by_host.items():
        pids = members_mod.pids_connected_from(conns, host, brokers) - not_members
        clients = sorted({m.get("client_id") or "?" for _, m in members})
        subjects = sorted({f"kafka:{t}/{gid}" for gid, m in members for t in (m.get("assignment") or {})}
                          or {f"kafka:*/{gid}" for gid, _ in members})
        via = f"kafka member {', '.join(clients)} from {host}"
        if not pids:
            # On another host: Kafka names only its address, which a fleet's snapshots are matched with.
            found.setdefault(f"peer:{host}", {"pid": None, "peer": host, "via": via, "subject": ",".join(subjects),
                                              "members_at_host": len(members)})
            continue
        if len(pids) > len(members):
            via += (f" (one of {len(pids)} local processes connected to the broker from {host}, for "
                    f"{len(members)} member(s) there: which is which cannot be told from the broker's side)")
        for pid in sorted(pids):
            found.setdefault(pid, {"pid": pid, "via": via, "subject": ",".join(subjects),
                                   "candidates": len(pids), "members_at_host": len(members)})
    return list(found.values())


# --- collect ----------------------------------------------------------------------------------

@register("kafka", description="Kafka consumer groups: lag per partition, produce and consume rates, "
                              "Burrow-style status, seconds behind, retention risk",
          needs=("kafka",), timeout_s=15, discover=discover, options=OPTIONS, diagnosis=_kafka_facts.CONTRIBUTION)
def collect(ctx: ProbeContext) -> dict:
    opts = _options(ctx)
    admin = Admin(ctx, opts)
    try:
        return _collect(ctx, opts, admin)
    finally:
        admin.close()


def _collect(ctx: ProbeContext, opts: dict, admin: Admin) -> dict:
    label = admin.label
    targets = ctx.targets
    obs: dict[str, Any] = ctx.partial
    obs.update({"bootstrap": label, "broker_version": admin.version,
                "client": f"kafka-python {admin.kafka.__version__}",
                "end_offset": "last_stable" if opts["read_committed"] else "high_watermark",
                "allowed_lag": opts["allowed_lag"]})

    # Which groups.  ListGroups first: a named group that is not there is reported
    # without ever asking for its coordinator (FindCoordinator can create
    # __consumer_offsets on a fresh cluster).
    listed = admin.list_groups()
    not_found: dict[str, list] = {}
    named_groups = tuple(targets.groups)
    if named_groups:
        missing = _missing("group", named_groups, set(listed), label, others=targets.redis is not None)
        if missing:
            not_found["groups"] = missing
        chosen = [g for g in named_groups if g in listed]
    else:
        chosen = sorted(listed)
    named_topics, unmatched = _expand_globs(targets.queues, admin)
    topics_meta: dict[str, dict] = {}
    if named_topics or unmatched:
        topics_meta.update(admin.metadata(list(named_topics)))
        existing = {t for t, m in topics_meta.items() if m.get("error") != lag.UNKNOWN_TOPIC}
        missing = _missing("topic", named_topics + unmatched, existing, label,
                           others=targets.rabbitmq is not None or targets.redis is not None)
        if missing:
            not_found["topics"] = missing
        wanted_topics = {t for t in named_topics if t in existing}
    else:
        wanted_topics = None
    if not_found:
        obs["not_found"] = not_found

    if not chosen and not wanted_topics:
        # Nothing to sample: no need to sit through the window.
        obs.update(groups=[], queues=[], note="no consumer groups on this cluster")
        obs["requests"] = _requests(admin)
        return obs
    groups = _describe(admin, {g: listed[g] for g in chosen})
    obs["groups"] = [{"group": g, "state": d.get("state")} for g, d in groups.items()]

    def keep(topic: str) -> bool:
        return wanted_topics is None or topic in wanted_topics

    # Sampling: the groups' descriptions (who is a member, in which state: one
    # DescribeGroups per coordinator), then committed offsets, then log ends, as
    # kafka-consumer-groups does (a commit landing in between cannot make lag negative).
    group_ids = list(groups)
    tracked = [g for g, d in groups.items() if d.get("members") is not None]
    here, brokers = _member_hosts_here(ctx, admin, groups)

    count = sample_count(opts["samples"], ctx.window_s)
    started: list[float] = []
    log_start: dict[str, dict] = {}
    start_errors: dict[str, str] = {}
    taken: list[dict] = []
    early_stamps: dict[str, dict] = {}

    def take() -> dict:
        if started:
            # A slow sample must not be followed by the next one at once.
            gap = started[-1] + MIN_SAMPLE_INTERVAL_S - ctx.clock()
            if 0 < gap < ctx.remaining() - RESERVE_S:
                ctx.sleeper(gap)
        started.append(ctx.clock())
        at = round(started[-1] - ctx.window_start, 3)  # when it was read, after any wait for the gap
        described, described_error = {}, None
        if tracked:
            try:
                described = {g: groups_mod.sample_entry(d) for g, d in admin.describe_groups(tracked).items()}
            except ProbeError as exc:  # the offsets still count; membership is unknown at this sample
                described_error = str(exc)
        committed, errors = admin.group_offsets(group_ids) if group_ids else ({}, {})
        committed = {g: {t: parts for t, parts in per.items() if keep(t)} for g, per in committed.items()}
        topics = {t for per in committed.values() for t in per}
        for g in group_ids:
            for member in groups[g].get("members") or []:
                topics.update(t for t in (member.get("assignment") or {}) if keep(t))
        topics.update(wanted_topics or ())
        unknown = sorted(t for t in topics if t not in topics_meta)
        if unknown:
            topics_meta.update(admin.metadata(unknown))
        leaders = [(t, int(p)) for t in sorted(topics)
                   for p, info in (topics_meta.get(t) or {}).get("partitions", {}).items()
                   if not topics_meta[t].get("error") and info["leader"] >= 0]
        log_end, end_errors = admin.partition_offsets(leaders, earliest=False)
        if len(started) == 1 and ctx.remaining() > RESERVE_S + 0.5:
            # Log starts move only when retention deletes a segment: read them in the
            # window's idle time after the first sample, not after the window.
            _read_log_start(admin, leaders, log_start, start_errors)
        sample = {"t": at, "wall": ctx.wall_clock(), "groups": described, "committed": committed, "committed_errors": errors,
                  "log_end": log_end, "log_end_errors": end_errors}
        if here:
            sockets = members_mod.read_sockets(ctx.paths.proc)
            if sockets is not None:
                # qdiag's own connections are not a member's: its client's own local
                # addresses where they can be read, else every socket of this process.
                own = admin.local_endpoints()
                sample["local_hosts"] = members_mod.presence(
                    here, brokers, sockets, own if own is not None else members_mod.own_inodes(ctx.paths.proc))
        if described_error:
            sample["groups_error"] = described_error
        taken.append(sample)
        if len(taken) == count - 1 >= 2:
            # The records at committed offsets that do not move by the last sample need
            # not be read after it: read the worst ones now, in the window's idle time,
            # within half the wait for the last sample.
            early = _worst_partitions(taken, log_start, opts["timestamp_reads"], opts["read_committed"])
            early_stamps.update(_read_timestamps(ctx, opts, admin, early,
                                                 within_s=0.5 * ctx.window_s / (count - 1))[0])
        return sample

    raw_samples = []
    for _, sample in ctx.sample(take, count=count):
        raw_samples.append(sample)
        obs["samples_taken"] = len(raw_samples)
    if not raw_samples:
        raise ProbeError(f"kafka {label}: the deadline passed before the first offset sample "
                         "(raise [probes.kafka] timeout or shorten --window)")

    # Groups that were only narrowed in by topic: drop the ones with nothing there.
    if wanted_topics is not None and not named_groups:
        involved = {g for s in raw_samples for g, per in s["committed"].items() if per}
        involved.update(g for g in group_ids for m in groups[g].get("members") or []
                        if any(keep(t) for t in (m.get("assignment") or {})))
        groups = {g: d for g, d in groups.items() if g in involved}
        for gdesc in groups.values():
            for member in gdesc.get("members") or []:
                if member.get("assignment") is not None:
                    member["assignment"] = {t: p for t, p in member["assignment"].items() if keep(t)}

    last = raw_samples[-1]
    unread = sorted({(t, int(p)) for t, parts in last["log_end"].items() for p in parts
                     if p not in (log_start.get(t) or {}) and t not in start_errors})
    if unread and ctx.remaining() > RESERVE_S + 0.5:  # partitions that appeared during the window
        _read_log_start(admin, unread, log_start, start_errors)

    wanted = _worst_partitions(raw_samples, log_start, opts["timestamp_reads"], opts["read_committed"])
    known = _records_read(early_stamps, wanted)
    stamps, stamp_info = _read_timestamps(ctx, opts, admin, [w for w in wanted if (w[0], w[1], w[2]) not in known])
    for (topic, p, _), entry in known.items():
        stamps.setdefault(topic, {}).setdefault(str(p), []).append(entry)
    if known:
        stamp_info.update(requested=len(wanted), read=stamp_info.get("read", 0) + len(known),
                          read_in_window=len(known))
    obs["requests"] = _requests(admin)
    # Nothing more to ask: the client's network thread would only compete with the analysis.
    admin.close()

    raw = {
        "groups": {g: _raw_group(d) for g, d in groups.items()},
        "topics": topics_meta,
        "samples": raw_samples,
        "log_start": log_start,
        "record_timestamps": stamps,
        "read_wall": ctx.wall_clock(),
        "named_topics": sorted(wanted_topics or ()),
    }
    result = lag.analyse(raw, allowed_lag=opts["allowed_lag"], now_wall=last["wall"],
                         retention_margin=float(opts["retention_margin"]),
                         underparallel_ratio=float(opts["underparallel_ratio"]))
    compacted = compact_mod.compact(result, opts["partition_rows"], opts["allowed_lag"], _kafka_facts.partition_facts)
    obs.update(result)
    if compacted:
        obs["partition_rows"] = compacted
    obs.pop("samples_taken", None)  # progress for a timed-out run; "window" says it now
    obs["window"] = {"samples": len(raw_samples),
                     "span_s": round(raw_samples[-1]["t"] - raw_samples[0]["t"], 3)}
    if count < opts["samples"]:
        obs["window"]["note"] = (f"{opts['samples']} samples asked for; {count} fit in the {ctx.window_s:g} s window "
                                 f"at least {MIN_SAMPLE_INTERVAL_S:g} s apart")
    obs["timestamp_reads"] = stamp_info
    if start_errors:
        obs["log_start_errors"] = start_errors
    if opts["keep_raw"]:
        obs["raw"] = raw
    return obs


def _records_read(stamps: dict, wanted: list[tuple[str, int, int, int]]) -> dict[tuple[str, int, int], dict]:
    """Of the records read earlier, those still wanted: (topic, partition, read_at) -> entry.
    Only reads that found a record count: a log's records at an offset never change,
    but one that reached the log end then may find a record now."""
    want = {(t, p, at) for t, p, at, _ in wanted}
    return {(t, int(p), e["read_at"]): e for t, parts in stamps.items() for p, entries in parts.items()
            for e in entries if e.get("offset") is not None and (t, int(p), e["read_at"]) in want}


def _read_log_start(admin: Admin, partitions: list[tuple[str, int]], into: dict, errors: dict) -> None:
    try:
        found, failed = admin.partition_offsets(partitions, earliest=True)
    except ProbeError as exc:
        errors["*"] = str(exc)
        return
    for topic, parts in found.items():
        into.setdefault(topic, {}).update(parts)
    errors.update(failed)


def sample_count(asked: int, window_s: float) -> int:
    """Samples over the window: as many as asked, as long as they stay
    MIN_SAMPLE_INTERVAL_S apart, and never fewer than two (a rate needs two)."""
    return max(2, min(asked, 1 + int(window_s / MIN_SAMPLE_INTERVAL_S + 1e-9)))


def _member_hosts_here(ctx: ProbeContext, admin: Admin, groups: dict[str, dict]) -> tuple[set[str], set]:
    """Member hosts that are addresses of this host, and the brokers' (ip, port)
    endpoints, so each sample can tell whether those members' clients are still
    connected.  Costs one DescribeCluster, only when such a member exists."""
    hosts = {str(m.get("host") or "").lstrip("/") for d in groups.values() for m in d.get("members") or []}
    hosts.discard("")
    if not hosts:
        return set(), set()
    local = members_mod.local_addresses()
    bootstrap = _resolve(ctx, [_split(a) for a in admin.bootstrap])
    here = {h for h in hosts if members_mod.member_host_is_here(h, local, {ip for ip, _ in bootstrap})}
    if not here:
        return set(), set()
    return here, _resolve(ctx, admin.broker_endpoints())


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _resolve(ctx: ProbeContext, endpoints) -> set[tuple[str, int]]:
    """(ip, port) of every address the endpoints' names resolve to (bounded: the
    C resolver has no timeout of its own)."""
    out = set()
    for host, port in endpoints:
        try:
            infos = bounded(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), ctx.io_timeout(1.0))
        except (Hung, OSError):
            continue
        out.update((norm_ip(info[4][0]), port) for info in infos)
    return out


def _requests(admin: Admin) -> dict:
    return {"total": sum(admin.requests.values()), "by_api": dict(sorted(admin.requests.items())),
            "not_counted": "connection set-up: ApiVersions per connection and one bootstrap Metadata per client"}


def _describe(admin: Admin, listed: dict[str, dict]) -> dict[str, dict]:
    """Describe the classic groups; consumer-protocol (KIP-848) groups are kept
    with the state ListGroups gave, since DescribeGroups cannot describe them."""
    classic = [g for g, info in listed.items() if info.get("group_type") != "consumer"]
    described = admin.describe_groups(classic)
    out: dict[str, dict] = {}
    failed = []
    for gid, info in listed.items():
        base = {"state": info.get("state"), "group_type": info.get("group_type"),
                "protocol_type": info.get("protocol_type"), "protocol": None,
                "describable": True, "note": None, "error": None, "members": None}
        d = described.get(gid)
        kip848 = info.get("group_type") == "consumer" or (
            d is not None and "not a classic group" in (d.get("error") or ""))
        if kip848:
            base.update(describable=False, note=(
                "consumer-protocol group (KIP-848): kafka-python speaks only the classic DescribeGroups, "
                "so its members and assignments cannot be described by this client; state is from ListGroups"))
        elif d is None or (d.get("error") and d.get("members") is None):
            base.update(describable=False, error=(d or {}).get("error") or "no description returned")
            failed.append(gid)
        else:
            base.update(state=d.get("state") or info.get("state"), protocol=d.get("protocol"),
                        protocol_type=d.get("protocol_type") or info.get("protocol_type"),
                        members=d.get("members"), error=d.get("error"))
            if d.get("error"):
                base["describable"] = False
                base["members"] = None
                failed.append(gid)
        out[gid] = base
    if out and len(failed) == len(out):
        # Nothing describable at all: one clear error rather than a report of unknowns.
        error = out[failed[0]]["error"]
        if not error.startswith("describing group"):
            error = f"describing group '{failed[0]}' failed: {error}"
        raise ProbeError(f"kafka {admin.label}: {error} (if this is a parsing problem with this broker's reply, "
                         "run with --debug and report it)")
    return out


def _raw_group(d: dict) -> dict:
    group = dict(d)
    # While assignments are being handed out, no owner is not "unowned".
    if groups_mod.rebalancing(group.get("state")) and group.get("members") is not None:
        # Mid-rebalance assignments are empty or stale: owners are unknown, not absent.
        group["describable"] = False
        group["note"] = group.get("note") or f"rebalancing ({group['state']}): partition owners are unknown"
    return group


def _worst_partitions(samples: list[dict], log_start: dict, limit: int,
                      small_first: bool) -> list[tuple[str, int, int, int]]:
    """The (topic, partition, committed offset, log end) whose oldest unconsumed
    record gets read: the `limit` biggest lags of the last sample.  Groups at the
    same offset share one read.

    With read_committed (the user says the topics are transactional) small lags
    whose committed offset did not move come first, for up to half the reads:
    such a lag is often nothing but a transaction marker.
    """
    if limit <= 0 or not samples:
        return []
    last = samples[-1]
    candidates: dict[tuple[str, int, int], tuple[int, int, bool]] = {}
    for gid, per_topic in last["committed"].items():
        for topic, parts in per_topic.items():
            for p, committed in parts.items():
                end = (last["log_end"].get(topic) or {}).get(p)
                start = (log_start.get(topic) or {}).get(p)
                if committed is None or committed < 0 or end is None or committed >= end:
                    continue
                if start is not None and committed < start:
                    continue  # deleted already: nothing to read there
                stuck = all(((s["committed"].get(gid) or {}).get(topic) or {}).get(p) == committed for s in samples)
                key = (topic, int(p), committed)
                previous = candidates.get(key)
                candidates[key] = (end - committed, end, stuck or bool(previous and previous[2]))
    ranked = sorted(candidates.items(), key=lambda kv: (-kv[1][0], kv[0]))
    chosen: list = []
    if small_first:
        chosen = [kv for kv in reversed(ranked) if kv[1][2] and kv[1][0] <= 2][: max(1, limit // 2)]
    for kv in ranked:
        if len(chosen) >= limit:
            break
        if kv not in chosen:
            chosen.append(kv)
    return [(topic, p, committed, end) for (topic, p, committed), (_, end, _) in chosen]
