"""Check thresholds: from flags, the [check] table of qdiag.toml, or --policy FILE.

    [check]                       # applies to every selected queue
    warn_depth = 1000
    max_depth = 10000             # max_* is the critical level, warn_* the warning level
    min_consumers = 1
    [check.queues."orders*"]      # per queue (glob on the name or on the subject kafka:topic/group)
    max_depth = 500
    [check.dependencies]
    max_p95_ms = 500
    [check.host]
    max_cpu = 95
    [check.diagnosis]
    max_score = 0.7
    allow = ["traffic-spike"]     # causes that never fail the check
    max_verdict = "degraded"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from qdiag.config import parse_toml
from qdiag.diagnosis.taxonomy import CAUSES
from qdiag.errors import ConfigError, UsageError
from qdiag.tomlpos import key_line


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    direction: str  # "max": bad when above; "min": bad when below
    kind: str  # "number", "ratio", "bool"


# Every threshold a user can set, per scope.  Key names in files and flags are
# warn_<metric> / max_<metric> (or min_<metric> for "min" metrics).
METRICS: dict[str, dict[str, Metric]] = {
    "queues": {
        "depth": Metric("depth", "", "max", "number"),
        "lag_seconds": Metric("lag_seconds", "s", "max", "number"),
        "consumers": Metric("consumers", "", "min", "number"),
        "fill": Metric("fill", "", "max", "ratio"),
        "draining": Metric("draining", "", "min", "bool"),
    },
    "dependencies": {
        "p95_ms": Metric("p95_ms", "ms", "max", "number"),
        "error_rate": Metric("error_rate", "", "max", "ratio"),
    },
    "host": {
        "cpu": Metric("cpu", "%", "max", "number"),
        "psi": Metric("psi", "%", "max", "number"),
        "mem_available": Metric("mem_available", "%", "min", "number"),
    },
    "diagnosis": {
        "score": Metric("score", "", "max", "ratio"),
    },
}
VERDICTS = ("healthy", "degraded", "critical")


@dataclass
class Level:
    warn: float | None = None
    crit: float | None = None


@dataclass
class Policy:
    queues: dict[str, Level] = field(default_factory=dict)
    queue_overrides: list[tuple[str, dict[str, Level]]] = field(default_factory=list)  # (glob, levels)
    dependencies: dict[str, Level] = field(default_factory=dict)
    host: dict[str, Level] = field(default_factory=dict)
    diagnosis: dict[str, Level] = field(default_factory=dict)
    allow: tuple[str, ...] = ()
    max_verdict: str | None = None

    def is_empty(self) -> bool:
        return not (self.queues or self.queue_overrides or self.dependencies or self.host or self.diagnosis
                    or self.max_verdict)


def threshold_keys(scope: str) -> dict[str, tuple[Metric, str]]:
    """Accepted key -> (metric, "warn" | "crit"): warn_<name>, and max_<name> or min_<name> by direction."""
    keys = {}
    for metric in METRICS[scope].values():
        keys[f"warn_{metric.name}"] = (metric, "warn")
        keys[f"{metric.direction}_{metric.name}"] = (metric, "crit")
    return keys


def _line_of(text: str, key: str) -> int:
    return key_line(text, key) or 1


def parse_levels(scope: str, table: Mapping[str, Any], where) -> dict[str, Level]:
    """{"warn_depth": 10, "max_depth": 100} -> {"depth": Level(10, 100)}; `where(key)` names the place for errors."""
    levels: dict[str, Level] = {}
    known = threshold_keys(scope)
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where(key)}: unknown threshold '{key}'", "known: " + ", ".join(sorted(known)))
        metric, which = known[key]
        if metric.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{where(key)}: '{key}' must be true or false (found {value!r})", f"{key} = true")
            number = 1.0 if value else None
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where(key)}: '{key}' must be a number (found {value!r})", f"e.g. {key} = 10")
            if value < 0 or (metric.kind == "ratio" and value > 1):
                raise ConfigError(f"{where(key)}: '{key}' = {value} is out of range",
                                  "ratios are between 0 and 1" if metric.kind == "ratio" else "give a positive number")
            number = float(value)
        level = levels.setdefault(metric.name, Level())
        if which == "warn":
            level.warn = number
        else:
            level.crit = number
    for name, level in levels.items():
        metric = METRICS[scope][name]
        if level.warn is not None and level.crit is not None:
            wrong = level.warn > level.crit if metric.direction == "max" else level.warn < level.crit
            if wrong and metric.kind != "bool":
                word = "above" if metric.direction == "max" else "below"
                raise ConfigError(f"{where('warn_' + name)}: warning level {level.warn:g} is {word} the critical level "
                                  f"{level.crit:g} for '{name}'", "the warning level must trip first")
    return levels


def from_table(table: Mapping[str, Any], where) -> Policy:
    policy = Policy()
    flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
    policy.queues = parse_levels("queues", flat, where)
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        if key == "queues":
            for pattern, levels in value.items():
                if not isinstance(levels, dict):
                    raise ConfigError(f"{where(pattern)}: [check.queues.\"{pattern}\"] must be a table", "see the README")
                policy.queue_overrides.append((pattern, parse_levels("queues", levels, where)))
        elif key in ("dependencies", "host"):
            setattr(policy, key, parse_levels(key, value, where))
        elif key == "diagnosis":
            rest = {k: v for k, v in value.items() if k not in ("allow", "max_verdict")}
            policy.diagnosis = parse_levels("diagnosis", rest, where)
            allow = value.get("allow", [])
            if not isinstance(allow, list) or any(a not in CAUSES for a in allow):
                raise ConfigError(f"{where('allow')}: 'allow' must list root-cause ids", "ids: " + ", ".join(CAUSES))
            policy.allow = tuple(allow)
            verdict = value.get("max_verdict")
            if verdict is not None and verdict not in VERDICTS:
                raise ConfigError(f"{where('max_verdict')}: max_verdict must be one of {', '.join(VERDICTS)}",
                                  'e.g. max_verdict = "degraded"')
            policy.max_verdict = verdict
        else:
            raise ConfigError(f"{where(key)}: unknown table [check.{key}]", "known: queues, dependencies, host, diagnosis")
    return policy


def from_file(path: Path) -> Policy:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}: {getattr(exc, 'strerror', None) or exc}",
                          "check the --policy path") from None
    data = parse_toml(text, str(path))  # bad syntax or nesting: one error naming the file
    table = data.get("check", data)
    return from_table(table, lambda key: f"{path}:{_line_of(text, key)}")


def from_config_section(table: Mapping[str, Any], path: str | None) -> Policy:
    """The [check] table of the config file at `path`; errors name `path:line`."""
    text = Path(path).read_text(encoding="utf-8") if path else ""
    return from_table(table, lambda key: f"{path}:{_line_of(text, key)}")


def merge_flags(policy: Policy, flags: Mapping[str, Any]) -> Policy:
    """Flags beat the file: they set the levels for every selected queue (and the diagnosis)."""
    queue_flags = {k: v for k, v in flags.items() if v is not None and k in (
        "warn_depth", "max_depth", "min_consumers", "warn_fill", "max_fill", "warn_lag_seconds", "max_lag_seconds",
        "min_draining")}
    diag_flags = {k: v for k, v in flags.items() if v is not None and k in ("warn_score", "max_score")}
    where = lambda key: "--" + key.replace("_", "-")  # noqa: E731
    try:
        for name, level in parse_levels("queues", queue_flags, where).items():
            current = policy.queues.setdefault(name, Level())
            current.warn = level.warn if level.warn is not None else current.warn
            current.crit = level.crit if level.crit is not None else current.crit
            # A flag's level applies over per-queue overrides too: clear the override's level.
            for _, levels in policy.queue_overrides:
                levels.pop(name, None)
        for name, level in parse_levels("diagnosis", diag_flags, where).items():
            policy.diagnosis[name] = level
    except ConfigError as exc:
        raise UsageError(exc.message, exc.hint) from None
    if flags.get("allow"):
        bad = [a for a in flags["allow"] if a not in CAUSES]
        if bad:
            raise UsageError(f"--allow-cause {bad[0]}: not a root-cause id", "ids: " + ", ".join(CAUSES))
        policy.allow = tuple(flags["allow"])
    if flags.get("max_verdict"):
        if flags["max_verdict"] not in VERDICTS:
            raise UsageError(f"--max-verdict {flags['max_verdict']}: not a verdict", "use healthy or degraded")
        policy.max_verdict = flags["max_verdict"]
    for name, level in list(policy.queues.items()):
        if level.warn is not None and level.crit is not None:
            metric = METRICS["queues"][name]
            wrong = level.warn > level.crit if metric.direction == "max" else level.warn < level.crit
            if wrong and metric.kind != "bool":
                raise UsageError(f"warning level {level.warn:g} for '{name}' is beyond its critical level {level.crit:g}",
                                 "the warning level must trip first")
    return policy
