"""The probe contract.

A probe is a module under probes/ that registers one function:

    @register("host", timeout_s=5, description="CPU, memory, PSI, cgroups, disks, network")
    def collect(ctx: ProbeContext) -> dict: ...

`collect` returns JSON-serialisable observations.  It signals outcomes that are
not data by raising:  NotApplicable("why") when the probe has nothing to look
at here (no target, not Linux, no permission), ProbeError("what failed, where,
the likely fix") for a failure the user can act on.  Anything else it raises is
recorded as an error too; the runner owns isolation, so a probe never has to
catch broadly.

Well-known observation keys that the report reads:
  "queues":    list of queue records (system, name, group, depth, rate_in,
               rate_out, consumers, fill_ratio, status, plus any detail)
  "consumers": processes found from the broker side, as {"pid", "via", "subject"}
Everything else is the probe's own and goes into the snapshot as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

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
TARGET_KINDS = ("kafka", "rabbitmq", "redis", "processes", "dependencies", "logs")


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
    # Its [probes.NAME] keys, the runner's `enabled` and `timeout` included.
    options: dict[str, Option] = field(default_factory=dict)


REGISTRY: dict[str, Probe] = {}


def register(name: str, *, description: str, needs: tuple[str, ...] = (), timeout_s: float = 10.0,
             discover: Callable | None = None, options: tuple[Option, ...] = ()):
    """Decorator: register `collect` as the probe `name`. One line per probe
    (plus its option declarations)."""
    unknown = [n for n in needs if n not in TARGET_KINDS]
    if unknown:
        raise ValueError(f"probe {name}: unknown target kinds {unknown}")

    def wrap(collect):
        if name in REGISTRY and REGISTRY[name].collect is not collect:
            raise ValueError(f"probe {name} registered twice")
        REGISTRY[name] = Probe(name, collect, description, tuple(needs), float(timeout_s), discover,
                               declared(options))
        return collect

    return wrap


def all_probes() -> dict[str, Probe]:
    """Every probe, loaded on first use (broker clients stay unimported until a probe runs)."""
    from qdiag import probes  # noqa: F401  (importing the package registers them)

    probes.load_all()
    return dict(sorted(REGISTRY.items()))
