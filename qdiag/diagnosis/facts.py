"""Turn a snapshot's observations into the subjects the rules run on.

Each subject is (kind, subject id, facts).  Facts are the probe's own record
plus derived values the rules want (`backing_up`, `growing`, a Kafka topic's
hottest partition, the consumer processes of a queue, the dependency a
consumer's threads wait on) and the shared context (`host`, `backlog_any`,
`baseline`).  This is the one place that knows both the probes' observation
shapes and the rules' names: when a probe changes shape, only this file moves.

Joins between probes:
- queue <-> consumer process: the pid's claim from discovery (RabbitMQ consumer
  connections, Kafka group members, Redis clients); when more processes claim
  a queue than it has consumers (Kafka can only name a member's host), only
  the pids the user named count, the others are out of focus.  Processes named
  with --pid/--process are taken to consume the one queue in focus.
- consumer process <-> its CPU: busy against what it may use (a core, or its
  cgroup quota), and the rate it would reach with all of it (`full_cpu_rate`),
  which tells "too slow per message" from "short of CPU".
- thread waits <-> dependency: a thread blocked reading a socket of a
  non-broker client is matched to the --dependency endpoint the process holds
  a connection to.
- focus: queues the user named (--queue/--group) are in focus; queues a probe
  lists for context are not, and rank after them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterator

# Queue status words (from any probe) that mean "not draining as it should".
TROUBLE_STATUSES = {"growing", "full", "rejecting", "stuck", "stalled", "stall", "stop", "warn", "rewind",
                    "no-consumers", "err", "error", "at-risk", "backlog"}
# Thread classes of a consumer that is waiting for work or time, not working.
IDLE_THREAD_CLASSES = ("queue-wait", "sleep")
# Default ports of the brokers' client protocols: a socket wait there is the
# broker, not a dependency (the run's own broker ports are added, broker_ports()).
BROKER_PORTS = {9092, 5672, 5671, 6379}
# RabbitMQ connection states of a throttled publisher.
BLOCKED_STATES = ("blocked", "blocking")
# Seconds of work at the current consume rate that still count as messages in flight.
IN_FLIGHT_S = 2.0
# Kafka: a partition counts as lagging when it holds at least this share of the worst one's lag.
LAGGING_SHARE = 0.1


@dataclass
class Subject:
    kind: str
    id: str
    facts: dict[str, Any]


def probe_observations(snapshot: dict, name: str) -> dict | None:
    for item in snapshot.get("probes", []):
        if item.get("name") == name and isinstance(item.get("observations"), dict):
            return item["observations"]
    return None


def queue_subject(record: dict) -> str:
    system, name, group = record.get("system"), record.get("name"), record.get("group")
    return f"{system}:{name}/{group}" if group else f"{system}:{name}"


def queue_records(snapshot: dict) -> list[dict]:
    """Every probe's "queues", in probe order."""
    records = []
    for item in snapshot.get("probes", []):
        obs = item.get("observations") or {}
        for record in obs.get("queues") or []:
            if isinstance(record, dict) and record.get("system") and record.get("name") is not None:
                records.append(record)
    return records


def _num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _targets(snapshot: dict) -> dict:
    return ((snapshot.get("settings") or {}).get("targets") or {})


def in_focus(record: dict, snapshot: dict | None) -> bool:
    """Whether the user pointed at this queue (--queue / --group), or pointed at none.

    Probes also report queues nobody asked about (RabbitMQ's deepest, every
    Kafka group): those are context, and rank after the ones named."""
    if not snapshot:
        return True
    targets = _targets(snapshot)
    patterns = [p for p in targets.get("queues") or [] if isinstance(p, str)]
    groups = [g for g in targets.get("groups") or [] if isinstance(g, str)]
    if not patterns and not groups:
        return True
    if "named" in (record.get("selected_because") or []):
        return True
    names = {str(record.get(k)) for k in ("name", "queue", "key") if record.get(k) is not None}
    if record.get("vhost") and record.get("queue"):
        names.add(f"{record['vhost']}/{record['queue']}")
    if patterns and not any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns):
        return False
    if groups and record.get("group") is not None and record.get("group") not in groups:
        return False
    return True


def queue_facts(record: dict, baseline: dict | None, snapshot: dict | None = None) -> dict[str, Any]:
    facts = dict(record)
    depth = _num(record.get("depth"))
    rate_in, rate_out = _num(record.get("rate_in")), _num(record.get("rate_out"))
    samples = [s for s in (record.get("depth_samples") or []) if _num(s) is not None]
    trend = (samples[-1] - samples[0]) if len(samples) >= 2 else None
    trend_word = str(record.get("depth_trend") or record.get("lag_trend") or "").lower()
    growth = _num(record.get("net_growth_per_s"))
    if growth is None:
        growth = _num(record.get("lag_change_per_s"))
    growing = bool((rate_in is not None and rate_out is not None and rate_in > rate_out * 1.05 and rate_in > 0)
                   or (trend is not None and trend > 0) or trend_word == "growing" or (growth is not None and growth > 0))
    status = str(record.get("status") or "").lower()
    consumers = _num(record.get("consumers"))
    fill = _num(record.get("fill_ratio"))
    # Messages in flight are not a backlog: a depth the consumers clear within
    # IN_FLIGHT_S at their current rate is what a healthy queue looks like
    # between two samples, whatever the noise in its trend says.
    drain_s = depth / rate_out if depth is not None and rate_out else None
    in_flight = drain_s is not None and drain_s <= IN_FLIGHT_S
    backing_up = bool(depth and depth > 0 and (consumers == 0 or (fill is not None and fill >= 0.8)
                                               or (not in_flight and (growing or status in TROUBLE_STATUSES))))
    facts.update(
        subject=queue_subject(record),
        depth_trend=trend if trend is not None else record.get("depth_trend"),
        growing=growing,
        net_rate=(rate_in - rate_out) if rate_in is not None and rate_out is not None else None,
        in_out_ratio=(rate_in / rate_out) if rate_in is not None and rate_out else None,
        drain_s=drain_s,
        backing_up=backing_up,
        baseline=baseline or {},
        focus=in_focus(record, snapshot),
    )
    base_in, base_out = _num((baseline or {}).get("rate_in")), _num((baseline or {}).get("rate_out"))
    facts["rate_in_vs_baseline"] = rate_in / base_in if rate_in is not None and base_in else None
    facts["rate_out_vs_baseline"] = rate_out / base_out if rate_out is not None and base_out else None
    if record.get("system") == "rabbitmq":
        facts.update(_rabbitmq_queue_facts(record))
    elif record.get("system") == "redis":
        facts.update(_redis_queue_facts(record))
    return facts


def _rabbitmq_queue_facts(record: dict) -> dict[str, Any]:
    prefetch = [p for p in record.get("consumer_prefetch") or [] if _num(p) is not None]
    limits = record.get("limits") or {}
    broker_rates = record.get("rates_broker") or {}
    measured = record.get("rates_measured") or {}
    rates = measured or broker_rates
    dead = record.get("dead_letter") or {}
    dlq_growth = [q.get("depth_change") for q in dead.get("queues") or [] if _num(q.get("depth_change"))]
    return {
        "prefetch_max": max(prefetch) if prefetch else None,
        "prefetch_unlimited": bool(prefetch) and any(p == 0 for p in prefetch),
        "overflow": limits.get("overflow"),
        "max_length": limits.get("max_length"),
        "redeliver_rate": _num(rates.get("redeliver")),
        "deliver_rate": _num(rates.get("deliver_get")),
        "ack_rate": _num(rates.get("ack")),
        "dead_letter_growth": sum(dlq_growth) if dlq_growth else None,
        "findings": record.get("findings") or [],
    }


def _redis_queue_facts(record: dict) -> dict[str, Any]:
    poison = record.get("poison_candidates") or []
    deliveries = [_num(p.get("deliveries")) for p in poison if isinstance(p, dict)]
    deliveries = [d for d in deliveries if d is not None]
    return {
        "poison_count": len(poison),
        "poison_max_deliveries": max(deliveries) if deliveries else None,
        "poison_example": poison[0] if poison else None,
        "consumers_idle": (record.get("consumers") or 0) - (record.get("consumers_recently_active") or 0)
        if record.get("consumers_recently_active") is not None else None,
    }


def _kafka_partitions(snapshot: dict) -> dict[tuple[str, str], list[dict]]:
    """(topic, group) -> the Kafka probe's partition rows."""
    out: dict[tuple[str, str], list[dict]] = {}
    for group in (probe_observations(snapshot, "kafka") or {}).get("groups") or []:
        for row in group.get("partitions") or []:
            out.setdefault((row.get("topic"), group.get("group")), []).append(row)
    return out


def partition_facts(rows: list[dict]) -> dict[str, Any]:
    """Where a topic's lag sits: the hottest partition, its share of the lag
    and of the produce rate, and how many partitions carry lag at all."""
    lags = [(r, _num(r.get("lag"))) for r in rows if _num(r.get("lag")) is not None]
    total = sum(max(0, lag) for _, lag in lags)
    hot = max(lags, key=lambda item: item[1], default=(None, None))
    rates = [_num(r.get("rate_in")) for r in rows]
    known_rates = [r for r in rates if r is not None]
    rate_total = sum(known_rates) if known_rates else None
    hot_rate = max(rows, key=lambda r: _num(r.get("rate_in")) or -1.0, default=None) if known_rates else None
    hot_lag = hot[1] if hot[0] is not None else None
    lagging = sum(1 for _, lag in lags if hot_lag and lag >= max(1, LAGGING_SHARE * hot_lag))
    return {
        "partition_count": len(rows),
        "hot_partition": hot[0].get("partition") if hot[0] else None,
        "hot_partition_lag": hot_lag,
        "hot_lag_share": round(hot_lag / total, 4) if total and hot_lag is not None else None,
        "hot_rate_partition": hot_rate.get("partition") if hot_rate else None,
        "hot_rate_share": round((_num(hot_rate.get("rate_in")) or 0) / rate_total, 4) if hot_rate and rate_total else None,
        "lagging_partitions": lagging,
        "other_partitions_lag": (total - hot_lag) if hot_lag is not None else None,
    }


def _baseline_index(baseline_snapshot: dict | None) -> dict[str, dict]:
    if not baseline_snapshot:
        return {}
    return {queue_subject(r): {"rate_in": r.get("rate_in"), "rate_out": r.get("rate_out"), "depth": r.get("depth"),
                               "consumers": r.get("consumers")}
            for r in queue_records(baseline_snapshot)}


def host_facts(host: dict, processes: dict) -> dict[str, Any]:
    """The host probe's record plus the worst disk and NIC, the busiest process
    that is not a target, and the kernel's limits as ratios."""
    facts = dict(host)
    disks = [d for d in host.get("disks") or [] if _num(d.get("busy_pct")) is not None]
    facts["worst_disk"] = max(disks, key=lambda d: d["busy_pct"], default=None)
    window = _num(host.get("window_s")) or None
    nics = []
    for nic in (host.get("network") or {}).get("interfaces") or []:
        bad = sum(_num(nic.get(k)) or 0 for k in ("rx_errors", "tx_errors", "rx_drops", "tx_drops"))
        nics.append((bad / window if window else None, nic))
    known = [(rate, nic) for rate, nic in nics if rate is not None]
    facts["nic_errors_per_s"] = sum(rate for rate, _ in known) if known else None
    facts["worst_nic"] = max(known, key=lambda item: item[0])[1] if known else None
    top = processes.get("top_cpu") or []
    others = [p for p in top if not p.get("is_target")]
    facts["noisy_neighbour"] = others[0] if others else None
    facts["busiest_is_consumer"] = bool(top and top[0].get("is_target"))
    targets = [t for t in processes.get("targets") or [] if not t.get("gone")]
    cpu = [_num(t.get("cpu_percent")) for t in targets]
    cpu = [c for c in cpu if c is not None]
    facts["consumers_known"] = len(targets)
    facts["consumers_cpu_max"] = max(cpu) if cpu else None
    network = host.get("network") or {}
    listen = network.get("listen") or {}
    facts["listen_overflows"] = _num(listen.get("overflows"))
    facts["listen_drops"] = _num(listen.get("drops"))
    facts["conntrack_ratio"] = _num((network.get("conntrack") or {}).get("ratio"))
    facts["files_ratio"] = _num((host.get("files") or {}).get("ratio"))
    facts["oom_kills_in_window"] = _num((host.get("oom") or {}).get("oom_kill"))
    return facts


def _recent_kills(host: dict) -> list[dict]:
    """Kernel OOM kills logged during the window (or just before it)."""
    window = (_num(host.get("window_s")) or 0) + 5.0
    kills = ((host.get("oom") or {}).get("kernel_log") or {}).get("kills") or []
    return [k for k in kills if isinstance(k, dict) and _num(k.get("age_s")) is not None and k["age_s"] <= window]


def broker_ports(snapshot: dict) -> set[int]:
    """The default broker ports plus those of the brokers this run was given."""
    ports = set(BROKER_PORTS)
    targets = (snapshot.get("settings") or {}).get("targets") or {}
    for server in str(targets.get("kafka") or "").split(","):
        ports.add(_port(server))
    for url in (targets.get("rabbitmq"), targets.get("redis")):
        if url:
            ports.add(_port(str(url).split("://", 1)[-1].split("/", 1)[0]))
    return ports - {None}


def _thread_facts(proc: dict, process: dict | None, endpoints: list[dict], brokers: set[int]) -> dict[str, Any]:
    counts = proc.get("counts") or {}
    total = _num(proc.get("threads_total")) or 0
    threads = [t for t in proc.get("threads") or [] if isinstance(t, dict)]
    # Counted from the class totals: the probe lists at most 100 threads.
    working = sum(n for c, n in counts.items() if c not in IDLE_THREAD_CLASSES and isinstance(n, int))
    lock_stuck = [s for s in proc.get("stuck") or [] if s.get("class") == "lock-wait"]
    hot = _hottest(proc.get("hot_functions") or [])
    # Which dependency the socket waits are on: the thread's own peer when the
    # probe could tell, else the one --dependency endpoint this process is connected to.
    remotes = set(((process or {}).get("connections") or {}).get("remotes") or {})
    socket_threads = [t for t in threads if t.get("class") == "socket-io"]
    waits: dict[str, int] = {}
    for t in socket_threads:
        peer = t.get("peer")
        if peer and _port(peer) in brokers:
            continue
        matches = [e for e in endpoints if peer and peer in (e.get("peers") or [])]
        if not matches and not peer:
            matches = [e for e in endpoints if remotes & set(e.get("peers") or [])]
        if len(matches) == 1:
            url = matches[0].get("url")
            waits[url] = waits.get(url, 0) + 1
    waiting_on = max(waits, key=lambda u: waits[u]) if waits else None
    endpoint = next((e for e in endpoints if e.get("url") == waiting_on), {})
    latency = (endpoint.get("latency_ms") or {}).get("total") or {}
    return {
        "on_cpu_threads": counts.get("on-cpu", 0),
        "lock_wait_threads": counts.get("lock-wait", 0),
        "socket_threads": counts.get("socket-io", 0),
        "idle_threads": sum(counts.get(c, 0) for c in IDLE_THREAD_CLASSES),
        "working_threads": working,
        "busy_share": round(counts.get("on-cpu", 0) / total, 3) if total else None,
        # Of the threads doing something (not waiting for work), the share on CPU.
        "on_cpu_share": round(counts.get("on-cpu", 0) / working, 3) if working else None,
        "dumps": proc.get("dumps"),
        "lock_stuck_threads": len(lock_stuck),
        "lock_stuck_where": [s.get("where") for s in lock_stuck],
        "hot": hot,
        "deadlocked": bool(proc.get("deadlock")),
        "dependency_waiting_threads": waits.get(waiting_on, 0) if waiting_on else 0,
        "waiting_on": waiting_on,
        "waiting_on_subject": f"dependency:{waiting_on}" if waiting_on else None,
        "waiting_share": round(waits[waiting_on] / working, 3) if waiting_on and working else None,
        "waiting_on_p50_ms": _num(latency.get("p50")),
        "waiting_on_error_rate": _num(endpoint.get("error_rate")),
    }


def _hottest(functions: list[dict]) -> dict | None:
    """The function most often on CPU, its samples summed over its lines (the
    probe counts each line of a function apart)."""
    totals: dict[str, dict] = {}
    for f in functions:
        if not isinstance(f, dict) or not f.get("function"):
            continue
        entry = totals.setdefault(f["function"], {"function": f["function"], "where": f.get("where"), "samples": 0,
                                                  "threads": []})
        entry["samples"] += _num(f.get("samples")) or 0
        entry["threads"] = sorted(set(entry["threads"]) | set(f.get("threads") or []))
    return max(totals.values(), key=lambda e: e["samples"], default=None)


def _port(address: str) -> int | None:
    try:
        return int(str(address).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _system_facts(snapshot: dict) -> dict[str, dict[str, Any]]:
    """Per broker, what its queue rules need to name it (addresses for the next commands)."""
    out: dict[str, dict[str, Any]] = {}
    kafka = probe_observations(snapshot, "kafka")
    if kafka:
        out["kafka"] = {"bootstrap": kafka.get("bootstrap")}
    redis = probe_observations(snapshot, "redis")
    if redis:
        server = redis.get("server") or {}
        out["redis"] = {"redis_address": server.get("address"),
                        "redis_blocked_clients": server.get("blocked_clients")}
    rabbit = probe_observations(snapshot, "rabbitmq")
    if rabbit:
        out["rabbitmq"] = {"rabbitmq_api": (rabbit.get("broker") or {}).get("target")}
    return out


def _cpu_busy(target: dict) -> float | None:
    """Percent of the CPU available to a process that it used: of one core, or of
    its cgroup's quota when that is smaller."""
    cpu = _num(target.get("cpu_percent"))
    if cpu is None:
        return None
    quota = _num(((target.get("cgroup_stats") or {}).get("cpu") or {}).get("quota_cores"))
    ceiling = min(100.0, quota * 100.0) if quota else 100.0
    return round(min(100.0, 100.0 * cpu / ceiling), 1)


def _explicit(target: dict) -> bool:
    return any(s == "--pid" or s.startswith("--process") for s in target.get("selected_by") or [])


def _consumer_map(snapshot: dict, targets: list[dict], queues: list[dict],
                  by_subject: dict[str, dict]) -> tuple[dict[Any, str | None], set]:
    """pid -> the queue subject it consumes, and the pids whose claim is unsure.

    Brokers that only name a consumer's host (Kafka members) make discovery
    claim every local process connected from that host: producers, other
    clients, other brokers.  When more processes claim a queue than it has
    consumers, only the ones the user named are taken as its consumers; the
    others stay unsure (reported, but out of focus)."""
    claims: dict[Any, list[str]] = {}
    for d in snapshot.get("discovered") or []:
        if d.get("pid"):
            claims[d["pid"]] = [x for x in str(d.get("subject") or "").split(",") if x]
    for t in targets:
        if t.get("subject") and t.get("pid") not in claims:
            claims[t.get("pid")] = [x for x in str(t["subject"]).split(",") if x]
    explicit = {t.get("pid") for t in targets if _explicit(t)}
    claimants: dict[str, set] = {}
    for pid, subjects in claims.items():
        for subject in subjects:
            claimants.setdefault(subject, set()).add(pid)
    consumer_of: dict[Any, str | None] = {}
    unsure: set = set()
    for pid, subjects in claims.items():
        known = [x for x in subjects if x in by_subject]
        subject = known[0] if known else (subjects[0] if subjects else None)
        queue = by_subject.get(subject)
        members = _num((queue or {}).get("consumers"))
        crowded = members is not None and len(claimants.get(subject, ())) > max(members, 1)
        if crowded and pid not in explicit:
            unsure.add(pid)
            continue
        consumer_of[pid] = subject
    sole = _sole_queue_in_focus(snapshot, queues)
    for t in targets:
        pid = t.get("pid")
        if sole and _explicit(t) and consumer_of.get(pid) not in by_subject:
            consumer_of[pid] = sole
    return consumer_of, unsure


def _sole_queue_in_focus(snapshot: dict, queues: list[dict]) -> str | None:
    """The one queue the user pointed at (or the only one there is), if exactly one."""
    targets = _targets(snapshot)
    if not (targets.get("queues") or targets.get("groups")) and len(queues) != 1:
        return None
    focused = [q["subject"] for q in queues if q["focus"]]
    return focused[0] if len(focused) == 1 else None


def _rabbitmq_broker(obs: dict) -> dict[str, Any]:
    nodes = [n for n in obs.get("nodes") or [] if isinstance(n, dict)]
    conns = obs.get("connections") or {}
    states = conns.get("by_state") or {}

    def worst(key):
        values = [_num(n.get(key)) for n in nodes]
        values = [v for v in values if v is not None]
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
        "connections_total": conns.get("total"),
        "problems": obs.get("problems") or [],
    }


def _redis_broker(obs: dict) -> dict[str, Any]:
    server = dict(obs.get("server") or {})
    clients = obs.get("clients") or {}
    server.update(blocked_count=clients.get("blocked_count"), hints=obs.get("hints") or [])
    return server


def subjects(snapshot: dict, baseline_snapshot: dict | None = None) -> Iterator[Subject]:
    processes = probe_observations(snapshot, "process") or {}
    host_obs = probe_observations(snapshot, "host")
    host = host_facts(host_obs, processes) if host_obs else {}
    baselines = _baseline_index(baseline_snapshot)
    partitions = _kafka_partitions(snapshot)
    system_facts = _system_facts(snapshot)
    queues = []
    for record in queue_records(snapshot):
        facts = queue_facts(record, baselines.get(queue_subject(record)), snapshot)
        facts.update(system_facts.get(record.get("system"), {}))
        if record.get("system") == "kafka":
            facts.update(partition_facts(partitions.get((record.get("name"), record.get("group"))) or []))
        queues.append(facts)

    # Which process consumes which queue.
    targets = [t for t in processes.get("targets") or [] if isinstance(t, dict)]
    by_subject = {q["subject"]: q for q in queues}
    consumer_of, unsure = _consumer_map(snapshot, targets, queues, by_subject)
    for q in queues:
        mine = [t for t in targets if consumer_of.get(t.get("pid")) == q["subject"] and not t.get("gone")]
        cpu = [c for c in (_num(t.get("cpu_percent")) for t in mine) if c is not None]
        busy = [b for b in (_cpu_busy(t) for t in mine) if b is not None]
        q["consumer_procs"] = len(mine) if mine else None
        # How much of the CPU it may use each consumer uses: a consumer at its cgroup
        # quota is busy, however few percent of a core that is.
        q["consumer_cpu_busy_max"] = max(busy) if busy else None
        q["consumer_pids"] = [t.get("pid") for t in mine]
        # Evidence about one queue's consumers is filed under the consumer process when
        # there is exactly one, so queue-side and process-side evidence add up.
        q["consumer_subject"] = f"process:{mine[0].get('pid')}" if len(mine) == 1 else q["subject"]
        q["consumer_cpu_max"] = max(cpu) if cpu else None
        q["consumer_cpu_total"] = round(sum(cpu), 1) if cpu else None
        q["consumer_threads"] = sum(_num(t.get("threads")) or 0 for t in mine) if mine else None

    if host:
        # Host-wide CPU evidence is about the consumer when there is one consumer here.
        local = [t for t in targets if not t.get("gone") and consumer_of.get(t.get("pid")) in by_subject]
        host["consumer_subject"] = f"process:{local[0].get('pid')}" if len(local) == 1 else "host"
    backlog_in_focus = any(q["backing_up"] and q["focus"] for q in queues)
    shared = {"host": host, "backlog_any": any(q["backing_up"] for q in queues),
              "backlog_in_focus": backlog_in_focus,
              "queues_backing_up": sum(1 for q in queues if q["backing_up"]),
              "queues_known": len(queues),
              # Consumer-side rules explain a backlog; with no broker probed there is
              # no way to know of one, and they run on the consumer's evidence alone.
              "backlog_or_unknown": backlog_in_focus or not queues}

    for facts in queues:
        yield Subject("queue", facts["subject"], {**shared, **facts})
    if host:
        yield Subject("host", "host", {**shared, **host})

    kills = _recent_kills(host_obs or {})
    thread_procs = {p.get("pid"): p for p in (probe_observations(snapshot, "threads") or {}).get("processes") or []}
    brokers = broker_ports(snapshot)
    endpoints = [e for e in (probe_observations(snapshot, "dependencies") or {}).get("endpoints") or []
                 if isinstance(e, dict)]
    process_by_pid = {t.get("pid"): t for t in targets}

    def queue_of(pid):
        q = by_subject.get(consumer_of.get(pid))
        if q is None:
            return {}
        return {k: q.get(k) for k in ("subject", "system", "name", "group", "depth", "rate_in", "rate_out",
                                      "consumers", "consumer_procs", "status", "backing_up", "growing", "focus")}

    def cpu_facts(pid, cpu_percent) -> dict:
        """How busy the consumer is against the CPU it may use, and the rate it
        would reach with all of it (its share of the queue's consume rate,
        scaled up to a whole core or its whole quota): when that is above the
        inflow, the consumer is short of CPU rather than too slow per message."""
        target = process_by_pid.get(pid) or {}
        busy = _cpu_busy({**target, "cpu_percent": cpu_percent})
        q = queue_of(pid)
        rate_out = _num(q.get("rate_out"))
        sharing = _num(q.get("consumer_procs")) or _num(q.get("consumers")) or 1
        full = None
        if rate_out is not None and busy and busy >= 5:
            full = round(rate_out / max(1, sharing) * 100.0 / busy, 1)
        rate_in = _num(q.get("rate_in"))
        if full is not None and rate_in is not None:
            note = (f"with all the CPU it may use it would take about {full:.0f} msg/s "
                    f"against {rate_in:.0f} msg/s arriving")
        else:
            note = "the queue's in and out rates are unknown, so what a whole core would give cannot be told"
        return {"cpu_busy": busy, "full_cpu_rate": full, "capacity_note": note}

    for target in targets:
        pid = target.get("pid")
        killed = [k for k in kills if k.get("pid") == pid]
        listeners = [l for l in target.get("listening") or [] if _num(l.get("fill_ratio")) is not None]
        yield Subject("process", f"process:{pid}", {
            **shared, **target, "consumer_of": consumer_of.get(pid), "queue": queue_of(pid),
            "focus": pid not in unsure,
            "oom_killed": killed[0] if killed else None,
            "fd_ratio": _num((target.get("fds") or {}).get("ratio")),
            "fullest_listener": max(listeners, key=lambda l: l["fill_ratio"], default=None),
            **cpu_facts(pid, _num(target.get("cpu_percent"))),
        })
    for pid, proc in thread_procs.items():
        yield Subject("threads", f"process:{pid}", {
            **shared, **proc, "consumer_of": consumer_of.get(pid), "queue": queue_of(pid),
            "focus": pid not in unsure,
            **cpu_facts(pid, _num(proc.get("cpu_percent"))),
            **_thread_facts(proc, process_by_pid.get(pid), endpoints, brokers)})

    waiting = {}
    for pid, proc in thread_procs.items():
        summary = _thread_facts(proc, process_by_pid.get(pid), endpoints, brokers)
        if summary["waiting_on"]:
            waiting.setdefault(summary["waiting_on"], []).append(pid)
    for endpoint in endpoints:
        latency = (endpoint.get("latency_ms") or {})
        total, ttfb = latency.get("total") or {}, latency.get("ttfb") or {}
        kinds = endpoint.get("error_kinds") or {}
        yield Subject("dependency", f"dependency:{endpoint.get('url')}", {
            **shared, **endpoint,
            "p50_ms": _num(total.get("p50")), "p95_ms": _num(total.get("p95")), "max_ms": _num(total.get("max")),
            "ttfb_p50_ms": _num(ttfb.get("p50")),
            "error_summary": ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "none",
            "status_summary": ", ".join(f"HTTP {k} x{v}" for k, v in sorted((endpoint.get("statuses") or {}).items()))
            or "none",
            "refused": _num(kinds.get("refused")) or 0,
            "http_5xx": _num(kinds.get("http_5xx")) or 0,
            "waiting_pids": waiting.get(endpoint.get("url"), []),
            "consumers_wait_here": bool(waiting.get(endpoint.get("url"))),
        })
    for pattern in (probe_observations(snapshot, "logs") or {}).get("patterns") or []:
        yield Subject("log", f"log:{pattern.get('id')}", {**shared, **pattern})
    for name in ("rabbitmq", "redis", "kafka"):
        obs = probe_observations(snapshot, name)
        if not obs:
            continue
        if name == "rabbitmq" and isinstance(obs.get("broker"), dict):
            yield Subject("broker", name, {**shared, **obs["broker"], **_rabbitmq_broker(obs), "system": name})
        elif name == "redis" and isinstance(obs.get("server"), dict):
            yield Subject("broker", name, {**shared, **_redis_broker(obs), "system": name})
        elif isinstance(obs.get("broker"), dict):
            yield Subject("broker", name, {**shared, **obs["broker"], "system": name})
