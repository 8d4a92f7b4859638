"""What to probe: parsed and validated once, from flags, environment and config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from qdiag.errors import UsageError


@dataclass(frozen=True)
class KafkaTarget:
    bootstrap: tuple[str, ...]  # host:port
    auto_detected: bool = False

    def label(self) -> str:
        return ",".join(self.bootstrap)


@dataclass(frozen=True)
class RabbitTarget:
    """Either the management API (http/https) or AMQP (amqp/amqps)."""

    url: str
    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    vhost: str | None
    auto_detected: bool = False

    @property
    def is_management(self) -> bool:
        return self.scheme in ("http", "https")

    def label(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class RedisTarget:
    url: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    tls: bool = False
    auto_detected: bool = False

    def label(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class Targets:
    kafka: KafkaTarget | None = None
    rabbitmq: RabbitTarget | None = None
    redis: RedisTarget | None = None
    queues: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    process_patterns: tuple[str, ...] = ()
    # HOST:PORT: local processes connected there are consumers (a fleet's consumer hosts).
    connected_to: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    logs: tuple[str, ...] = ()

    def broker(self, name: str):
        """The target of the broker registered as `name` (qdiag/brokers.py), or None."""
        return getattr(self, name, None)

    def secrets(self) -> set[str]:
        """Passwords the user gave in URLs.  RabbitMQ's default `guest`, filled in
        by qdiag when the URL has none, is public knowledge and no secret: masking
        it would only mask the user `guest` in free text."""
        from qdiag.brokers import BROKERS

        found = set()
        for name in BROKERS:
            target = self.broker(name)
            password = getattr(target, "password", None)
            if password and _has_password(getattr(target, "url", "")):
                found.add(password)
        for dep in self.dependencies:
            try:
                pw = urlsplit(dep).password
            except ValueError:
                pw = None
            if pw:
                found.add(unquote(pw))
        return found

    def has(self, kind: str) -> bool:
        """Whether a target of this kind was given: used for probes' `needs`."""
        value = {
            "processes": self.pids or self.process_patterns or self.connected_to,
            "dependencies": self.dependencies,
            "logs": self.logs,
        }.get(kind, None) if kind in ("processes", "dependencies", "logs") else self.broker(kind)
        return bool(value)


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return True


_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def parse_kafka(value: str) -> KafkaTarget:
    if "@" in value:
        # user:password@host: credentials have no place in a bootstrap list; never echo the value.
        raise UsageError("--kafka: the bootstrap list holds credentials (user:password@), which it cannot use",
                         "give HOST:PORT and put SASL credentials under [probes.kafka] sasl_username/sasl_password")
    servers = []
    for part in value.split(","):
        part = part.strip()
        if part.startswith("kafka://"):
            part = part[len("kafka://"):]
        if not part:
            continue
        if not _HOSTPORT.match(part) or not 0 < int(part.rsplit(":", 1)[1]) < 65536:
            raise UsageError(f"--kafka: '{part}' is not HOST:PORT", "for example --kafka localhost:9092")
        servers.append(part)
    if not servers:
        raise UsageError("--kafka is empty", "for example --kafka localhost:9092")
    return KafkaTarget(tuple(servers))


def _split_url(value: str, flag: str, example: str):
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        if "@" in value:
            # urlsplit's message quotes the "port", which is then part of the password: never echo it.
            raise UsageError(f"{flag}: '{_safe(value)}' is not a valid URL",
                             "percent-encode / # ? @ inside credentials as %2F %23 %3F %40, "
                             f"for example {flag} {example}") from None
        raise UsageError(f"{flag}: '{_safe(value)}' is not a valid URL ({exc})", f"for example {flag} {example}") from None
    if not parts.scheme or not parts.hostname:
        raise UsageError(f"{flag}: '{_safe(value)}' is not a URL", f"for example {flag} {example}")
    return parts, port


def _safe(value: str) -> str:
    from qdiag.redact import redact_url

    return redact_url(value)


def parse_rabbitmq(value: str) -> RabbitTarget:
    example = "http://guest:guest@localhost:15672 or amqp://guest:guest@localhost:5672/%2F"
    parts, port = _split_url(value, "--rabbitmq", example)
    scheme = parts.scheme.lower()
    defaults = {"http": 15672, "https": 15671, "amqp": 5672, "amqps": 5671}
    if scheme not in defaults:
        raise UsageError(f"--rabbitmq: scheme '{scheme}' is not supported", f"use {example}")
    vhost = None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if scheme.startswith("amqp"):
        vhost = unquote(path) if path else "/"
    return RabbitTarget(
        url=value, scheme=scheme, host=parts.hostname, port=port or defaults[scheme],
        username=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
    )


def parse_redis(value: str) -> RedisTarget:
    example = "redis://localhost:6379/0"
    parts, port = _split_url(value, "--redis", example)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise UsageError(f"--redis: scheme '{scheme}' is not supported", f"use {example} (rediss:// for TLS)")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise UsageError(f"--redis: database '{path}' is not a number", f"use {example}")
    return RedisTarget(
        url=value, host=parts.hostname, port=port or 6379, db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=scheme == "rediss",
    )


_DEPENDENCY_SCHEMES = ("http", "https", "tcp", "postgres", "postgresql", "mysql", "redis", "rediss", "amqp", "amqps")


def parse_dependency(value: str) -> str:
    parts, _ = _split_url(value, "--dependency", "https://api.internal/health or tcp://db:5432")
    if parts.scheme.lower() not in _DEPENDENCY_SCHEMES:
        raise UsageError(
            f"--dependency: scheme '{parts.scheme}' is not supported",
            "use one of " + ", ".join(s + "://" for s in _DEPENDENCY_SCHEMES),
        )
    return value


def parse_process_pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise UsageError(f"--process: '{value}' is not a valid regular expression ({exc})", "quote it, e.g. --process 'worker\\.py'") from None
    return value


def parse_connected_to(value: str) -> str:
    value = str(value).strip()
    match = _HOSTPORT.match(value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise UsageError(f"--connected-to: '{value}' is not HOST:PORT", "give the broker's client address, "
                                                                          "e.g. --connected-to mq.internal:5672")
    return value


def parse_pid(value) -> int:
    try:
        pid = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--pid: '{value}' is not a process id", "give a number, e.g. --pid 1234") from None
    if pid <= 0:
        raise UsageError(f"--pid: '{value}' is not a process id", "give a positive number")
    return pid
