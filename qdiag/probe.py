"""The probe contract.

A probe is a module under probes/ that registers one function:

    @register("host", timeout_s=5, description="CPU, memory, PSI, cgroups, disks, network",
              options=(Option("samples", "int", 3, "samples over the window", low=2, high=20),),
              diagnosis=_host_facts.CONTRIBUTION)
    def collect(ctx: ProbeContext) -> dict: ...

`collect` returns JSON-serialisable observations.  It signals outcomes that are
not data by raising:  NotApplicable("why") when the probe has nothing to look
at here (no target, not Linux, no permission), ProbeError("what failed, where,
the likely fix") for a failure the user can act on.  Anything else it raises is
recorded as an error too; the runner owns isolation, so a probe never has to
catch broadly.

Options are declared with the probe (qdiag/options.py) and read, validated and
complete, as `ctx.options["key"]`.

Observation keys every probe shares (the report, `check` and the diagnosis read
them without knowing which probe wrote them):
  "queues":    queue records: system, name, group, depth, rate_in, rate_out,
               consumers, fill_ratio, status (the probe's own word, e.g. Burrow's
               STALL, mapped onto QUEUE_STATUSES by its Contribution's
               status_words; the report shows the shared word and keeps the
               probe's as status_native), plus any detail of the probe's own
  "consumers": processes found from the broker side, as {"pid", "via", "subject"}
Everything else is the probe's own and goes into the snapshot as is.

What a probe's observations mean to the diagnosis is declared next to it, as a
Contribution (`diagnosis=`): the playbook steps it feeds, what it shares with
the other probes' evidence (processes, endpoints, thread waits: the keys of
SHARED_KEYS), extra facts for its own queue records, facts every rule may see,
and the subjects (kinds of thing a rule is written for) it builds.  The core
(qdiag/diagnosis/facts.py) only joins what probes share; it names no probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from qdiag.brokers import BROKER_NAMES
from qdiag.options import Option, declared

if TYPE_CHECKING:
    from qdiag.context import ProbeContext

# Outcomes, as data.
OK = "ok"
ERROR = "error"
TIMEOUT = "timeout"
SKIPPED = "skipped"
NOT_APPLICABLE = "not_applicable"
STATUSES = (OK, ERROR, TIMEOUT, SKIPPED, NOT_APPLICABLE)

# Target kinds a probe can need; a probe whose needs are all absent is not applicable.
# Brokers come from the broker registry (qdiag/brokers.py).
TARGET_KINDS = (*BROKER_NAMES, "processes", "dependencies", "logs")

# One queue-status vocabulary for every broker and for the report.  Each probe
# maps its own words onto these and keeps its own in `status_native`.
QUEUE_STATUSES = {
    "ok": "consumers keep up: nothing waits longer than the flow needs",
    "idle": "nothing waiting and nothing flowing",
    "growing": "more arrives than leaves: the depth or lag rose over the window",
    "stalled": "consumers are attached but did not progress over the window",
    "stopped": "consumers stopped reporting progress (no commit for longer than the window)",
    "no-consumers": "messages wait and nothing consumes them",
    "no-commit": "consumed without committed offsets: progress cannot be measured",
    "rewind": "committed offsets went backwards",
    "full": "at its length limit",
    "rejecting": "at its limit and refusing publishers",
    "at-risk": "messages are about to be lost (retention, eviction)",
    "down": "the queue is not available (its node or replica is down)",
    "unknown": "not measured over the window",
}
# The words that mean "not draining as it should".
TROUBLE_STATUSES = frozenset({"growing", "stalled", "stopped", "no-consumers", "rewind", "full", "rejecting",
                              "at-risk", "down"})


def common_status(native: Any, words: dict[str, str]) -> str:
    """A probe's own status word in the shared vocabulary (QUEUE_STATUSES);
    a word neither the probe's map nor the vocabulary knows is "unknown"."""
    if native in words:
        return words[native]
    return native if native in QUEUE_STATUSES else "unknown"


class NotApplicable(Exception):
    """Nothing for this probe to look at here; the message says why."""


class ProbeError(Exception):
    """A failure with a one-line explanation the user can act on."""


@dataclass(frozen=True)
class Probe:
    name: str
    collect: Callable[["ProbeContext"], dict]
    description: str
    # Any one of these target kinds makes the probe applicable; empty = always.
    needs: tuple[str, ...] = ()
    # Seconds of the probe's own work allowed beyond the sampling window.
    timeout_s: float = 10.0
    # Optional: called before the window starts, returns consumer processes found
    # from the broker side ([{"pid", "via", "subject"}]) so that process-level
    # probes look at them without --pid.
    discover: Callable[["ProbeContext"], list] | None = None
    # Whether it looks at what discovery found (ctx.discovered): such a probe starts
    # once discovery is done; the others start at once, alongside it.
    uses_discovery: bool = False
    # Its [probes.NAME] keys, the runner's `enabled` and `timeout` included.
    options: dict[str, Option] = field(default_factory=dict)
    # What its observations contribute to the diagnosis.
    diagnosis: "Contribution | None" = None


# Keys a probe may share with the others' evidence (Contribution.share):
SHARED_KEYS = {
    "processes": "consumer processes measured on this host: pid, cpu_percent, threads, fds, cgroup_stats, "
                 "connections.remotes, selected_by, subject, gone",
    "top_processes": "the busiest processes on the host: pid, cpu_percent, is_target",
    "endpoints": "downstream endpoints timed: url, host, peers (ip:port), latency_ms, error_rate",
    "thread_waits": "per consumer pid, where its threads wait: {pid: {peer ip:port: thread-equivalents waiting "
                    "there (threads x share of the window)}}",
}


@dataclass(frozen=True)
class Contribution:
    """What a probe's observations mean to the diagnosis; every hook is pure.

    steps:       the playbook steps (1-6) its evidence feeds ("looked at: ...").
    status_words: its queue records' status words -> QUEUE_STATUSES.
    share:       observations -> {SHARED_KEYS key: value}: what the other probes' rules may join with.
    queue_facts: observations -> (queue record -> extra facts), for the queue records it wrote
                 (a function of the observations first, so it can index them once).
    context:     (observations, joined) -> facts every rule sees (e.g. {"host": {...}}).
    subjects:    (observations, joined) -> Subjects of its own kinds (process, threads, dependency, ...).
    queue_summary: its queue facts that process-side rules also see under `queue` (the queue a
                 process consumes), beside facts.QUEUE_SUMMARY_KEYS.
    `joined` is qdiag.diagnosis.facts.Joined: the queues, who consumes what, what was shared."""

    steps: tuple[int, ...] = ()
    status_words: dict[str, str] = field(default_factory=dict)
    share: Callable[[dict], dict] | None = None
    queue_facts: Callable[[dict], Callable[[dict], dict]] | None = None
    context: Callable[[dict, Any], dict] | None = None
    subjects: Callable[[dict, Any], Iterable] | None = None
    queue_summary: tuple[str, ...] = ()


REGISTRY: dict[str, Probe] = {}


def register(name: str, *, description: str, needs: tuple[str, ...] = (), timeout_s: float = 10.0,
             discover: Callable | None = None, uses_discovery: bool = False, options: tuple[Option, ...] = (),
             diagnosis: Contribution | None = None):
    """Decorator: register `collect` as the probe `name`. One line per probe
    (plus its option declarations)."""
    unknown = [n for n in needs if n not in TARGET_KINDS]
    if unknown:
        raise ValueError(f"probe {name}: unknown target kinds {unknown}")

    def wrap(collect):
        if name in REGISTRY and REGISTRY[name].collect is not collect:
            raise ValueError(f"probe {name} registered twice")
        REGISTRY[name] = Probe(name, collect, description, tuple(needs), float(timeout_s), discover,
                               uses_discovery, declared(options), diagnosis)
        return collect

    return wrap


def all_probes() -> dict[str, Probe]:
    """Every probe, loaded on first use (broker clients stay unimported until a probe runs)."""
    from qdiag import probes  # noqa: F401  (importing the package registers them)

    probes.load_all()
    return dict(sorted(REGISTRY.items()))
