"""Turn a snapshot's observations into the subjects the rules run on.

Each subject is (kind, subject id, facts).  This module names no probe: what
a probe's observations mean is declared next to the probe (its Contribution,
qdiag/probe.py), and this module only joins what probes share:

- queues (every probe's "queues" records, one status vocabulary) get the
  derived values every queue rule wants (`backing_up`, `growing`, `drain_s`,
  the baseline, focus), then the owning probe's own extra facts;
- queue <-> consumer process: the pid's claim from discovery (RabbitMQ consumer
  connections, Kafka group members, Redis clients); when more processes claim
  a queue than it has consumers (Kafka can only name a member's host), only
  the pids the user named count, the others are out of focus.  Processes named
  with --pid/--process are taken to consume the one queue in focus;
- thread waits <-> dependency: a consumer's threads waiting on a peer
  (`thread_waits`, ip:port) are matched to the endpoint that peer belongs to
  (`endpoints`); waits on the brokers' own ports are the broker, not a
  dependency;
- focus: queues the user named (--queue/--group) are in focus; queues a probe
  lists for context are not, and rank after them.

The facts every subject carries (`shared`): `backlog_any`, `backlog_in_focus`,
`backlog_or_unknown`, `queues_backing_up`, `queues_known`, `symptoms` (backlogs
seen without a broker, e.g. "queue full" in a log: they count as a backlog in
focus), plus each probe's context facts (the host's, under "host").
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterator

from qdiag import brokers
from qdiag.endpoints import port_of
from qdiag.probe import TROUBLE_STATUSES, Probe, all_probes, common_status

# Seconds of work at the current consume rate that still count as messages in flight.
IN_FLIGHT_S = 2.0


@dataclass
class Subject:
    kind: str
    id: str
    facts: dict[str, Any]


def num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def probe_observations(snapshot: dict, name: str) -> dict | None:
    for item in snapshot.get("probes", []):
        if item.get("name") == name and isinstance(item.get("observations"), dict):
            return item["observations"]
    return None


def queue_subject(record: dict) -> str:
    system, name, group = record.get("system"), record.get("name"), record.get("group")
    return f"{system}:{name}/{group}" if group else f"{system}:{name}"


def _queue_records_with_owner(snapshot: dict) -> Iterator[tuple[str, dict]]:
    for item in snapshot.get("probes", []):
        obs = item.get("observations") or {}
        for record in obs.get("queues") or []:
            if isinstance(record, dict) and record.get("system") and record.get("name") is not None:
                yield item.get("name"), record


def queue_records(snapshot: dict) -> list[dict]:
    """Every probe's "queues", in probe order, their status in the shared vocabulary
    (the probe's own word kept as status_native)."""
    registry = all_probes()
    out = []
    for owner, record in _queue_records_with_owner(snapshot):
        probe = registry.get(owner)
        words = probe.diagnosis.status_words if probe and probe.diagnosis else {}
        out.append({**record, "status_native": record.get("status"),
                    "status": common_status(record.get("status"), words)})
    return out


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
    """The derived values every queue rule wants, whatever the broker."""
    facts = dict(record)
    depth = num(record.get("depth"))
    rate_in, rate_out = num(record.get("rate_in")), num(record.get("rate_out"))
    samples = [s for s in (record.get("depth_samples") or []) if num(s) is not None]
    trend = (samples[-1] - samples[0]) if len(samples) >= 2 else None
    trend_word = str(record.get("depth_trend") or record.get("lag_trend") or "").lower()
    growth = num(record.get("net_growth_per_s"))
    if growth is None:
        growth = num(record.get("lag_change_per_s"))
    growing = bool((rate_in is not None and rate_out is not None and rate_in > rate_out * 1.05 and rate_in > 0)
                   or (trend is not None and trend > 0) or trend_word == "growing" or (growth is not None and growth > 0))
    status = str(record.get("status") or "").lower()
    consumers = num(record.get("consumers"))
    fill = num(record.get("fill_ratio"))
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
    base_in, base_out = num((baseline or {}).get("rate_in")), num((baseline or {}).get("rate_out"))
    facts["rate_in_vs_baseline"] = rate_in / base_in if rate_in is not None and base_in else None
    facts["rate_out_vs_baseline"] = rate_out / base_out if rate_out is not None and base_out else None
    return facts


def _baseline_index(baseline_snapshot: dict | None) -> dict[str, dict]:
    if not baseline_snapshot:
        return {}
    return {queue_subject(r): {"rate_in": r.get("rate_in"), "rate_out": r.get("rate_out"), "depth": r.get("depth"),
                               "consumers": r.get("consumers")}
            for r in queue_records(baseline_snapshot)}


def cpu_busy(process: dict) -> float | None:
    """Percent of the CPU available to a process that it used: of one core, or of
    its cgroup's quota when that is smaller."""
    cpu = num(process.get("cpu_percent"))
    if cpu is None:
        return None
    quota = num(((process.get("cgroup_stats") or {}).get("cpu") or {}).get("quota_cores"))
    ceiling = min(100.0, quota * 100.0) if quota else 100.0
    return round(min(100.0, 100.0 * cpu / ceiling), 1)


def _explicit(process: dict) -> bool:
    return any(s == "--pid" or s.startswith("--process") for s in process.get("selected_by") or [])


# Facts of a queue that process-side rules see under `queue`.
# (A probe adds its own with Contribution.queue_summary.)
QUEUE_SUMMARY_KEYS = ("subject", "system", "name", "group", "depth", "rate_in", "rate_out", "consumers",
                      "consumer_procs", "status", "backing_up", "growing", "focus")


@dataclass
class Joined:
    """Everything the probes share, joined: handed to each probe's context and subjects hooks."""

    snapshot: dict
    queues: list[dict] = field(default_factory=list)  # queue facts
    shared: dict[str, Any] = field(default_factory=dict)  # facts every subject carries
    exported: dict[str, Any] = field(default_factory=dict)  # probe -> shared keys (SHARED_KEYS)
    consumer_of: dict[Any, str | None] = field(default_factory=dict)  # pid -> queue subject
    unsure: set = field(default_factory=set)  # pids whose claim on a queue is unsure
    waiting_on: dict[Any, dict] = field(default_factory=dict)  # pid -> {"url", "threads"}
    broker_ports: set[int] = field(default_factory=set)
    summary_keys: tuple[str, ...] = QUEUE_SUMMARY_KEYS  # what queue_of() shows of a queue

    @property
    def by_subject(self) -> dict[str, dict]:
        return {q["subject"]: q for q in self.queues}

    @property
    def processes(self) -> list[dict]:
        return self.exported.get("processes") or []

    @property
    def endpoints(self) -> list[dict]:
        return self.exported.get("endpoints") or []

    def process(self, pid) -> dict:
        return next((p for p in self.processes if p.get("pid") == pid), {})

    def queue_of(self, pid) -> dict:
        """The queue a process consumes, as the summary process-side rules see."""
        q = self.by_subject.get(self.consumer_of.get(pid))
        return {k: q.get(k) for k in self.summary_keys} if q else {}

    def focus(self, pid) -> bool:
        return pid not in self.unsure

    def cpu_facts(self, pid, cpu_percent) -> dict:
        """How busy the consumer is against the CPU it may use, and the rate it
        would reach with all of it (its share of the queue's consume rate,
        scaled up to a whole core or its whole quota): when that is above the
        inflow, the consumer is short of CPU rather than too slow per message."""
        busy = cpu_busy({**self.process(pid), "cpu_percent": cpu_percent})
        q = self.queue_of(pid)
        rate_out = num(q.get("rate_out"))
        sharing = num(q.get("consumer_procs")) or num(q.get("consumers")) or 1
        full = None
        if rate_out is not None and busy and busy >= 5:
            full = round(rate_out / max(1, sharing) * 100.0 / busy, 1)
        rate_in = num(q.get("rate_in"))
        if full is not None and rate_in is not None:
            note = (f"with all the CPU it may use it would take about {full:.0f} msg/s "
                    f"against {rate_in:.0f} msg/s arriving")
        else:
            note = "the queue's in and out rates are unknown, so what a whole core would give cannot be told"
        return {"cpu_busy": busy, "full_cpu_rate": full, "capacity_note": note}

    def consumer_facts(self, pid) -> dict:
        """What every process-side subject says about the queue its process consumes."""
        return {"consumer_of": self.consumer_of.get(pid), "queue": self.queue_of(pid), "focus": self.focus(pid)}

    def endpoint(self, url) -> dict:
        return next((e for e in self.endpoints if e.get("url") == url), {})


def _serves_a_broker(process: dict, broker_ports: set[int]) -> bool:
    """Whether the process listens on a broker's client port: it is the broker, not its consumer
    (discovery by host claims every local process connected to the broker, the broker included)."""
    for listener in process.get("listening") or []:
        address = listener.get("local") if isinstance(listener, dict) else listener
        if port_of(str(address or "")) in broker_ports:
            return True
    return False


def _consumer_map(snapshot: dict, processes: list[dict], queues: list[dict],
                  by_subject: dict[str, dict], broker_ports: set[int] = frozenset()) -> tuple[dict[Any, str | None], set]:
    """pid -> the queue subject it consumes, and the pids whose claim is unsure.

    Brokers that only name a consumer's host (Kafka members) make discovery
    claim every local process connected from that host: producers, other
    clients, other brokers.  When more processes claim a queue than it has
    consumers, only the ones the user named are taken as its consumers; the
    others stay unsure (reported, but out of focus)."""
    claims: dict[Any, list[str]] = {}
    brokers_here = {p.get("pid") for p in processes if _serves_a_broker(p, broker_ports) and not _explicit(p)}
    for d in snapshot.get("discovered") or []:
        if d.get("pid") and d["pid"] not in brokers_here:
            claims[d["pid"]] = [x for x in str(d.get("subject") or "").split(",") if x]
    for t in processes:
        if t.get("subject") and t.get("pid") not in claims and t.get("pid") not in brokers_here:
            claims[t.get("pid")] = [x for x in str(t["subject"]).split(",") if x]
    explicit = {t.get("pid") for t in processes if _explicit(t)}
    claimants: dict[str, set] = {}
    for pid, subjects in claims.items():
        for subject in subjects:
            claimants.setdefault(subject, set()).add(pid)
    consumer_of: dict[Any, str | None] = {}
    # The broker's own process is context, never a consumer in focus.
    unsure: set = set(brokers_here)
    for pid, subjects in claims.items():
        known = [x for x in subjects if x in by_subject]
        subject = known[0] if known else (subjects[0] if subjects else None)
        queue = by_subject.get(subject)
        members = num((queue or {}).get("consumers"))
        crowded = members is not None and len(claimants.get(subject, ())) > max(members, 1)
        if crowded and pid not in explicit:
            unsure.add(pid)
            continue
        consumer_of[pid] = subject
    sole = _sole_queue_in_focus(snapshot, queues)
    for t in processes:
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


def _waits(thread_waits: dict, processes: list[dict], endpoints: list[dict], broker_ports: set[int]) -> dict:
    """pid -> the endpoint most of its waiting threads wait on: {"url", "threads"}.

    A wait names its peer (ip:port); the endpoint is the one whose peers hold
    it.  A wait whose peer the probe could not tell counts for the one
    endpoint the process is connected to, if there is exactly one."""
    out = {}
    by_pid = {p.get("pid"): p for p in processes}
    for pid, peers in thread_waits.items():
        remotes = set(((by_pid.get(pid) or {}).get("connections") or {}).get("remotes") or {})
        counts: dict[str, float] = {}
        for peer, threads in (peers or {}).items():
            if peer and port_of(peer) in broker_ports:
                continue
            matches = [e for e in endpoints if peer and peer in (e.get("peers") or [])]
            if not matches and not peer:
                matches = [e for e in endpoints if remotes & set(e.get("peers") or [])]
            if len(matches) == 1:
                url = matches[0].get("url")
                counts[url] = counts.get(url, 0) + float(threads or 0)
        if counts:
            url = max(counts, key=lambda u: counts[u])
            out[pid] = {"url": url, "threads": counts[url]}
    return out


def contributors_of(snapshot: dict) -> list[tuple[Probe, dict]]:
    """(probe, its observations) for every registered probe that contributes and has observations."""
    registry = all_probes()
    out = []
    for item in snapshot.get("probes", []):
        probe = registry.get(item.get("name"))
        obs = item.get("observations")
        if probe and probe.diagnosis and isinstance(obs, dict) and obs:
            out.append((probe, obs))
    return out


def shares(contributors: list[tuple[Probe, dict]]) -> dict[str, Any]:
    """What the contributors share (SHARED_KEYS), lists concatenated and dicts merged."""
    exported: dict[str, Any] = {}
    for probe, obs in contributors:
        if probe.diagnosis.share:
            for key, value in (probe.diagnosis.share(obs) or {}).items():
                if isinstance(value, list):
                    exported.setdefault(key, []).extend(value)
                elif isinstance(value, dict):
                    exported.setdefault(key, {}).update(value)
    return exported


def join(snapshot: dict, baseline_snapshot: dict | None = None) -> tuple[Joined, list[tuple[Probe, dict]]]:
    contributors = contributors_of(snapshot)
    joined = join_core(snapshot, baseline_snapshot, contributors)
    add_context(joined, contributors)
    return joined, contributors


def join_core(snapshot: dict, baseline_snapshot: dict | None,
              contributors: list[tuple[Probe, dict]]) -> Joined:
    """The join without the contributors' context facts: queues, who consumes what, what
    was shared.  A snapshot of several hosts (qdiag/fleet) adds each host's context
    on a view of its own (its processes, its host) with `add_context`."""
    joined = Joined(snapshot=snapshot, broker_ports=brokers.client_ports(_targets(snapshot)),
                    exported=shares(contributors),
                    summary_keys=tuple(dict.fromkeys(QUEUE_SUMMARY_KEYS + tuple(
                        k for probe, _ in contributors for k in probe.diagnosis.queue_summary))))
    own_facts = {probe.name: probe.diagnosis.queue_facts(obs) for probe, obs in contributors
                 if probe.diagnosis.queue_facts}
    baselines = _baseline_index(baseline_snapshot)
    words = {probe.name: probe.diagnosis.status_words for probe, _ in contributors}
    for owner, record in _queue_records_with_owner(snapshot):
        record = {**record, "status_native": record.get("status"),
                  "status": common_status(record.get("status"), words.get(owner, {}))}
        facts = queue_facts(record, baselines.get(queue_subject(record)), snapshot)
        extra = own_facts.get(owner)
        if extra:
            facts.update(extra(record))
        joined.queues.append(facts)

    processes = [p for p in joined.processes if isinstance(p, dict)]
    by_subject = joined.by_subject
    joined.consumer_of, joined.unsure = _consumer_map(snapshot, processes, joined.queues, by_subject,
                                                      joined.broker_ports)
    for q in joined.queues:
        mine = [t for t in processes if joined.consumer_of.get(t.get("pid")) == q["subject"] and not t.get("gone")]
        cpu = [c for c in (num(t.get("cpu_percent")) for t in mine) if c is not None]
        busy = [b for b in (cpu_busy(t) for t in mine) if b is not None]
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
        q["consumer_threads"] = sum(num(t.get("threads")) or 0 for t in mine) if mine else None
    joined.waiting_on = _waits(joined.exported.get("thread_waits") or {}, processes, joined.endpoints,
                               joined.broker_ports)

    queues = joined.queues
    backlog_in_focus = any(q["backing_up"] and q["focus"] for q in queues)
    joined.shared.update({
        "backlog_any": any(q["backing_up"] for q in queues),
        "backlog_in_focus": backlog_in_focus,
        "queues_backing_up": sum(1 for q in queues if q["backing_up"]),
        "queues_known": len(queues),
        # Consumer-side rules explain a backlog; with no broker probed, or a queue in
        # focus whose figures were not measured, there is no way to know of one, and
        # they run on the consumer's evidence alone.
        "backlog_or_unknown": backlog_in_focus or not queues or any(
            q["focus"] and (q.get("depth_settled") is False or q.get("status") == "unknown") for q in queues),
    })
    return joined


def add_context(joined: Joined, contributors: list[tuple[Probe, dict]]) -> None:
    """The contributors' context facts (e.g. the host's), and the backlogs they see as symptoms."""
    symptoms: list[dict] = list(joined.shared.get("symptoms") or [])
    for probe, obs in contributors:
        if probe.diagnosis.context:
            context = dict(probe.diagnosis.context(obs, joined) or {})
            symptoms += context.pop("symptoms", None) or []
            joined.shared.update(context)
    if symptoms:
        # A backlog no broker shows (an in-process queue logging "queue full"):
        # the symptom stands for the backlog the consumer-side rules explain.
        joined.shared.update(symptoms=symptoms, backlog_in_focus=True, backlog_any=True, backlog_or_unknown=True)


def subjects(snapshot: dict, baseline_snapshot: dict | None = None) -> Iterator[Subject]:
    yield from subjects_of(*join(snapshot, baseline_snapshot))


def subjects_of(joined: Joined, contributors: list[tuple[Probe, dict]]) -> Iterator[Subject]:
    for facts in joined.queues:
        yield Subject("queue", facts["subject"], {**joined.shared, **facts})
    for probe, obs in contributors:
        if probe.diagnosis.subjects:
            for subject in probe.diagnosis.subjects(obs, joined) or ():
                yield Subject(subject.kind, subject.id, {**joined.shared, **subject.facts})


def steps_fed(step: int) -> tuple[str, ...]:
    """The probes whose evidence feeds a playbook step, in registry order."""
    return tuple(name for name, p in all_probes().items() if p.diagnosis and step in p.diagnosis.steps)
