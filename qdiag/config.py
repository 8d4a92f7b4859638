"""Settings from four layers, lowest first: built-in defaults, the config file
(qdiag.toml), QDIAG_* environment variables, command-line flags.  A value set
in a higher layer replaces the lower one whole (lists are not merged)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from qdiag import targets as tg
from qdiag.brokers import BROKERS
from qdiag.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_WINDOW_S = 5.0
DEFAULT_TIMEOUT_S = 30.0
CONFIG_NAME = "qdiag.toml"


@dataclass(frozen=True)
class Settings:
    targets: tg.Targets = field(default_factory=tg.Targets)
    window_s: float = DEFAULT_WINDOW_S
    timeout_s: float = DEFAULT_TIMEOUT_S  # the whole run
    probe_timeout_s: float | None = None  # every probe, unless a [probes.NAME] timeout says otherwise
    # None: look for local brokers only when no broker is named; True: also then; False: never.
    auto_detect: bool | None = None
    only_probes: tuple[str, ...] = ()  # --probe NAME: run just these
    skip_probes: tuple[str, ...] = ()  # --no-probe NAME
    probe_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [probes.NAME] tables
    config_file: str | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)  # other tables ([check], ...), for their commands
    debug: bool = False

    def options_for(self, probe: str) -> Mapping[str, Any]:
        return self.probe_options.get(probe, {})


# The keys each layer understands: name -> (kind, parser)
_TARGET_KEYS = {
    **{name: "str" for name in BROKERS},
    "queues": "list", "groups": "list", "pids": "list", "processes": "list",
    "dependencies": "list", "logs": "list",
}
_RUN_KEYS = {"window": "float", "timeout": "float", "probe_timeout": "float", "auto_detect": "bool"}
_KNOWN_TABLES = {"targets", "run", "probes", "check", "playbooks"}


def find_config_file(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """--config, else QDIAG_CONFIG, else ./qdiag.toml, else the user's config directory."""
    chosen = explicit or env.get("QDIAG_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", "check the --config path or QDIAG_CONFIG")
        return path
    local = cwd / CONFIG_NAME
    if local.is_file():
        return local
    base = env.get("XDG_CONFIG_HOME") or (str(Path(env["HOME"]) / ".config") if env.get("HOME") else None)
    if base:
        user = Path(base) / "qdiag" / CONFIG_NAME
        if user.is_file():
            return user
    return None


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*[=\]]")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.search(line):
            return number
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", "check the file's permissions and encoding") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends in "(at line N, column M)".
        raise ConfigError(f"{path}: not valid TOML: {exc}", "fix the syntax at that line") from None
    for table, value in data.items():
        where = f"{path}:{_line_of(text, table) or 1}"
        if table not in _KNOWN_TABLES:
            raise ConfigError(f"{where}: unknown table [{table}]", "known tables: " + ", ".join(sorted(_KNOWN_TABLES)))
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{table}' must be a table", f"write it as [{table}]")
    for table, known in (("targets", _TARGET_KEYS), ("run", _RUN_KEYS)):
        for key in data.get(table, {}):
            if key not in known:
                raise ConfigError(f"{path}:{_line_of(text, key) or 1}: unknown key '{key}' in [{table}]",
                                  "known keys: " + ", ".join(sorted(known)))
    data["__text__"] = text
    return data


def _coerce(kind: str, value: Any, where: str) -> Any:
    try:
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise TypeError
        if kind == "list":
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list):
                return value
            raise TypeError
    except (TypeError, ValueError):
        pass
    expected = {"str": "a string", "float": "a number", "bool": "true or false", "list": "a list"}[kind]
    raise ConfigError(f"{where}: {value!r} is not {expected}", "fix the value")


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key, kind in {**_TARGET_KEYS, **_RUN_KEYS}.items():
        name = "QDIAG_" + key.upper()
        if name in env and env[name] != "":
            layer[key] = _coerce(kind, env[name], f"environment variable {name}")
    return layer


def _file_layer(data: dict[str, Any], path: Path) -> dict[str, Any]:
    text = data.get("__text__", "")
    layer: dict[str, Any] = {}
    for table, known in (("targets", _TARGET_KEYS), ("run", _RUN_KEYS)):
        for key, value in data.get(table, {}).items():
            layer[key] = _coerce(known[key], value, f"{path}:{_line_of(text, key) or 1}: '{key}'")
    return layer


def _probe_options(data: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """[probes.NAME] tables, each checked against the options its probe declares."""
    from qdiag.options import closest, validate
    from qdiag.probe import all_probes

    text = data.get("__text__", "")
    probes = all_probes()
    out: dict[str, dict[str, Any]] = {}
    for name, table in (data.get("probes") or {}).items():
        where = f"{path}:{_line_of(text, 'probes.' + name) or _line_of(text, name) or 1}"
        if name not in probes:
            near = closest(name, probes)
            raise ConfigError(f"{where}: unknown probe [probes.{name}]",
                              f"did you mean [probes.{near}]?" if near else "known probes: " + ", ".join(probes))
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: 'probes.{name}' must be a table", f"write it as [probes.{name}]")
        out[name] = validate(name, probes[name].options, table,
                             lambda key: f"{path}:{_line_of(text, key) or 1}")
    return out


def resolve(flags: Mapping[str, Any], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build Settings from flags (None or empty = not given), environment and config file."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    path = find_config_file(flags.get("config"), env, cwd)
    file_data = read_config_file(path) if path else {}
    merged: dict[str, Any] = {}
    merged.update(_file_layer(file_data, path) if path else {})
    merged.update(_env_layer(env))
    for key in list(_TARGET_KEYS) + list(_RUN_KEYS):
        value = flags.get(key)
        if value is None or value == [] or value == ():
            continue
        merged[key] = value

    targets = tg.Targets(
        **{name: broker.parse(merged[name]) if merged.get(name) else None for name, broker in BROKERS.items()},
        queues=tuple(str(q) for q in merged.get("queues", ())),
        groups=tuple(str(g) for g in merged.get("groups", ())),
        pids=tuple(tg.parse_pid(p) for p in merged.get("pids", ())),
        process_patterns=tuple(tg.parse_process_pattern(str(p)) for p in merged.get("processes", ())),
        dependencies=tuple(tg.parse_dependency(str(d)) for d in merged.get("dependencies", ())),
        logs=tuple(str(g) for g in merged.get("logs", ())),
    )
    window = merged.get("window", DEFAULT_WINDOW_S)
    timeout = merged.get("timeout", DEFAULT_TIMEOUT_S)
    probe_timeout = merged.get("probe_timeout")
    if not 0 < window <= 3600:
        raise UsageError(f"--window {window:g} is out of range", "give seconds between 0 and 3600, e.g. --window 5")
    if not 0 < timeout <= 86400:
        raise UsageError(f"--timeout {timeout:g} is out of range", "give a positive number of seconds")
    if timeout <= window:
        raise UsageError(f"--timeout {timeout:g}s must be longer than --window {window:g}s",
                         f"raise --timeout (e.g. --timeout {window + 20:g}) or shorten --window")
    if probe_timeout is not None and probe_timeout <= 0:
        raise UsageError(f"--probe-timeout {probe_timeout:g} must be positive", "give seconds, e.g. --probe-timeout 10")

    probe_options = _probe_options(file_data, path) if path else {}
    sections = {k: v for k, v in file_data.items() if k not in ("targets", "run", "probes", "__text__")}
    return Settings(
        targets=targets,
        window_s=float(window),
        timeout_s=float(timeout),
        probe_timeout_s=probe_timeout,
        auto_detect=merged.get("auto_detect"),
        only_probes=tuple(flags.get("only_probes") or ()),
        skip_probes=tuple(flags.get("skip_probes") or ()),
        probe_options=probe_options,
        config_file=str(path) if path else None,
        sections=sections,
        debug=bool(flags.get("debug")),
    )

