"""Settings from four layers, lowest first: built-in defaults, the config file
(qdiag.toml), QDIAG_* environment variables, command-line flags.  A value set
in a higher layer replaces the lower one whole (lists are not merged)."""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from qdiag import targets as tg
from qdiag.brokers import BROKERS
from qdiag.tomlpos import key_line
from qdiag.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_WINDOW_S = 5.0
DEFAULT_TIMEOUT_S = 30.0
CONFIG_NAME = "qdiag.toml"
# qdiag's TOML files (config, playbooks, policies) need a few levels; a deeper
# file is a mistake or an attack on the parsers' recursion.
MAX_TOML_DEPTH = 32
MAX_CONFIG_BYTES = 1024 * 1024


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
    # Monotonic moment the run began (for the CLI, the process's start): the
    # --timeout counts from it.  None: from when the probes start.
    started_at: float | None = None

    def run_started(self, now: float) -> float:
        """When the --timeout began counting, given the monotonic `now`."""
        return now if self.started_at is None else min(now, self.started_at)

    def options_for(self, probe: str) -> Mapping[str, Any]:
        return self.probe_options.get(probe, {})

    def secrets(self) -> set[str]:
        """Passwords in the targets' URLs and the values of secret [probes.NAME] options."""
        return self.targets.secrets() | _option_secrets(self.probe_options)


# The keys each layer understands: name -> (kind, parser)
_TARGET_KEYS = {
    **{name: "str" for name in BROKERS},
    "queues": "list", "groups": "list", "pids": "list", "processes": "list", "connected_to": "list",
    "dependencies": "list", "logs": "list",
}
_RUN_KEYS = {"window": "float", "timeout": "float", "probe_timeout": "float", "auto_detect": "bool"}
_KNOWN_TABLES = {"targets", "run", "probes", "check", "playbooks"}


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    explicit: bool  # named with --config or QDIAG_CONFIG, rather than found


def find_config_file(explicit: str | None, env: Mapping[str, str], cwd: Path) -> ConfigFile | None:
    """--config, else QDIAG_CONFIG, else ./qdiag.toml, else the user's config directory.

    A file named explicitly is the user's choice.  A file found implicitly is
    loaded only if it is trusted (see `check_trusted`): qdiag runs as root
    during incidents, often from a directory others can write to."""
    chosen = explicit or env.get("QDIAG_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", "check the --config path or QDIAG_CONFIG")
        return ConfigFile(path, explicit=True)
    local = cwd / CONFIG_NAME
    if local.is_file():
        return ConfigFile(local, explicit=False)
    base = env.get("XDG_CONFIG_HOME") or (str(Path(env["HOME"]) / ".config") if env.get("HOME") else None)
    if base:
        user = Path(base) / "qdiag" / CONFIG_NAME
        if user.is_file():
            return ConfigFile(user, explicit=False)
    return None


def check_trusted(path: Path, st: os.stat_result, link: os.stat_result | None) -> None:
    """The rule for a config file found implicitly: the file (and the symlink
    that led to it, if any) is owned by the user running qdiag or by root, and
    nobody else can write to it.  Raises ConfigError naming the file and the fix."""
    me = os.geteuid()
    fix = f"pass --config {path} if you trust it"
    for what, info in (("symlink", link), ("file", st)):
        if info is not None and info.st_uid not in (0, me):
            raise ConfigError(f"not loading {path}: the {what} is owned by uid {info.st_uid}, neither you nor root "
                              "(a config file found implicitly can point qdiag anywhere)",
                              f"{fix}, or run qdiag from another directory")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"not loading {path}: it is writable by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o})", f"chmod go-w {path}, or {fix}")


def _read_text(config: ConfigFile) -> str:
    """The file's text, read from the descriptor whose owner and mode were checked."""
    path = config.path
    try:
        link = os.lstat(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}",
                          "check the file's permissions") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config file {path} is not a regular file", "give the path of a TOML file")
        if not config.explicit:
            check_trusted(path, st, link if stat.S_ISLNK(link.st_mode) else None)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is {st.st_size} bytes, more than a config file needs",
                              f"keep it under {MAX_CONFIG_BYTES // 1024} KiB")
        data = f.read(MAX_CONFIG_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", "save it as UTF-8") from None


def parse_toml(text: str, source: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """TOML text -> dict, or one `error` naming `source`: bad syntax, or nesting
    deeper than MAX_TOML_DEPTH (tomllib recurses once per level)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends in "(at line N, column M)".
        raise error(f"{source}: not valid TOML: {exc}", "fix the syntax at that line") from None
    except RecursionError:
        data = None
    if data is None or _deeper_than(data, MAX_TOML_DEPTH):
        raise error(f"{source}: tables or arrays nested more than {MAX_TOML_DEPTH} levels deep",
                    "flatten the file: qdiag's files need a few levels")
    return data


def _deeper_than(doc: Any, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def _line_of(text: str, key: str) -> int | None:
    return key_line(text, key)


def read_config_file(config: ConfigFile | Path) -> dict[str, Any]:
    if not isinstance(config, ConfigFile):
        config = ConfigFile(Path(config), explicit=True)
    path = config.path
    text = _read_text(config)
    data = parse_toml(text, str(path))
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


def _probe_options(data: dict[str, Any], path: Path, explicit: bool = True) -> dict[str, dict[str, Any]]:
    """[probes.NAME] tables, each checked against the options its probe declares.

    Options of kind "executable" name programs qdiag runs (as root, during an
    incident): they are taken only from a file named with --config or
    QDIAG_CONFIG, never from one found in the current or the user's directory,
    and only as absolute paths."""
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
        declared = probes[name].options
        for key, value in table.items():
            option = declared.get(key)
            if option is None or option.kind != "executable":
                continue
            where_key = f"{path}:{_line_of(text, key) or 1}"
            if not explicit:
                raise ConfigError(f"{where_key}: [probes.{name}] {key} names a program to run, and qdiag takes "
                                  "programs only from a config file named with --config or QDIAG_CONFIG",
                                  f"pass --config {path} if you trust this file, or remove {key} "
                                  "(the tool is then looked up on PATH)")
            if isinstance(value, str) and not os.path.isabs(value):
                raise ConfigError(f"{where_key}: [probes.{name}] {key} = {value!r} is not an absolute path",
                                  f"give the full path, e.g. {key} = \"/usr/local/bin/{Path(value).name}\"")
        out[name] = validate(name, declared, table, lambda key: f"{path}:{_line_of(text, key) or 1}")
    return out


def _option_secrets(probe_options: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Values of secret options (sasl_password, ...): declared secret, or named like one."""
    from qdiag.probe import all_probes
    from qdiag.redact import Redactor

    probes = all_probes()
    found = set()
    for name, options in probe_options.items():
        declared = probes[name].options if name in probes else {}
        for key, value in options.items():
            option = declared.get(key)
            if isinstance(value, str) and value and ((option is not None and option.secret)
                                                     or Redactor.is_secret_key(key)):
                found.add(value)
    return found


def resolve(flags: Mapping[str, Any], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build Settings from flags (None or empty = not given), environment and config file."""
    from qdiag.redact import set_run_secrets

    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    set_run_secrets(())  # a previous run's secrets are not this run's
    config = find_config_file(flags.get("config"), env, cwd)
    path = config.path if config else None
    file_data = read_config_file(config) if config else {}
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
        connected_to=tuple(tg.parse_connected_to(str(c)) for c in merged.get("connected_to", ())),
        dependencies=tuple(tg.parse_dependency(str(d)) for d in merged.get("dependencies", ())),
        logs=tuple(str(g) for g in merged.get("logs", ())),
    )
    set_run_secrets(targets.secrets())  # from here on, error messages mask them
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

    probe_options = _probe_options(file_data, path, config.explicit) if config else {}
    set_run_secrets(targets.secrets() | _option_secrets(probe_options))
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

