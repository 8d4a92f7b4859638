"""The brokers qdiag knows, registered once: their flag, URL forms, default
ports and how to find one listening on this host.

Everything outside the probes that needs to know "which brokers are there"
(configuration, auto-detection, the runner's hints, the diagnosis's idea of
which socket is the broker, `qdiag check`) reads this table.  Adding a broker
is a row here, a field in `targets.Targets` with its parser, a flag in the CLI
table, and its probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from qdiag import targets as tg

# Where auto-detection looks.
LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Broker:
    name: str  # also the Targets field, the probe's `needs` kind and the config key
    flag: str
    help: str
    example: str
    parse: Callable[[str], Any]
    # Ports of its client protocols: a consumer waiting on one of them waits on the broker.
    client_ports: tuple[int, ...]
    # Auto-detection: (port, target value) tried in order; the first that answers wins.
    detect: tuple[tuple[int, str], ...]
    # Whether --queue globs are matched against its queue names.
    takes_globs: bool = True

    def ports_of(self, label: str | None) -> set[int]:
        """The ports named in a target's label (as stored in a snapshot's settings)."""
        out: set[int] = set()
        for part in str(label or "").split(","):
            part = part.strip()
            if not part:
                continue
            try:
                parts = urlsplit(part if "://" in part else "//" + part)
                port = parts.port
            except ValueError:
                continue
            if port:
                out.add(port)
        return out


BROKERS: dict[str, Broker] = {b.name: b for b in (
    Broker("kafka", "--kafka", "Kafka bootstrap servers HOST:PORT[,HOST:PORT].", "localhost:9092",
           tg.parse_kafka, client_ports=(9092,), detect=((9092, f"{LOCAL_HOST}:9092"),)),
    # guest/guest is RabbitMQ's default user, which it accepts only from loopback.
    Broker("rabbitmq", "--rabbitmq",
           "RabbitMQ: management API http(s)://user:pass@host:15672, or amqp://user:pass@host:5672/vhost.",
           "http://guest:guest@localhost:15672", tg.parse_rabbitmq, client_ports=(5672, 5671),
           detect=((15672, f"http://guest:guest@{LOCAL_HOST}:15672"),
                   (5672, f"amqp://guest:guest@{LOCAL_HOST}:5672/%2F"))),
    Broker("redis", "--redis", "Redis URL redis://[user:pass@]host:6379/db (rediss:// for TLS).",
           "redis://localhost:6379/0", tg.parse_redis, client_ports=(6379,),
           detect=((6379, f"redis://{LOCAL_HOST}:6379/0"),)),
)}
BROKER_NAMES: tuple[str, ...] = tuple(BROKERS)


def broker_flags() -> str:
    """"--kafka, --rabbitmq or --redis", for hints."""
    flags = [b.flag for b in BROKERS.values()]
    return ", ".join(flags[:-1]) + " or " + flags[-1] if len(flags) > 1 else "".join(flags)


def default_client_ports() -> set[int]:
    return {port for b in BROKERS.values() for port in b.client_ports}


def client_ports(targets_doc: dict) -> set[int]:
    """The brokers' default client ports plus the ports of the brokers a run was
    given (from a snapshot's settings.targets): a socket wait on any of them is
    the consumer waiting for the broker, not a dependency."""
    ports = default_client_ports()
    for name, broker in BROKERS.items():
        ports |= broker.ports_of(targets_doc.get(name))
    return ports
