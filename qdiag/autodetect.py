"""Find brokers listening on this host's default ports, so that a bare
`qdiag investigate` looks at them.  A TCP connect each, concurrently, 300 ms
at most: cheap enough to do on every run, and it sends nothing."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

from qdiag import targets as tg
from qdiag.config import Settings
from dataclasses import replace

HOST = "127.0.0.1"
PORTS = {"kafka": 9092, "rabbitmq_amqp": 5672, "rabbitmq_http": 15672, "redis": 6379}
CONNECT_TIMEOUT_S = 0.3


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def listening() -> dict[str, bool]:
    with ThreadPoolExecutor(max_workers=len(PORTS)) as pool:
        return dict(zip(PORTS, pool.map(_answers, PORTS.values())))


def detect(settings: Settings) -> tuple[Settings, list[str]]:
    """Fill in broker targets that were not given and answer locally; returns the new settings and what was found."""
    t = settings.targets
    if not settings.auto_detect or (t.kafka and t.rabbitmq and t.redis):
        return settings, []
    up = listening()
    found, changes = [], {}
    if t.kafka is None and up["kafka"]:
        changes["kafka"] = replace(tg.parse_kafka(f"{HOST}:{PORTS['kafka']}"), auto_detected=True)
        found.append(f"kafka {HOST}:{PORTS['kafka']}")
    if t.rabbitmq is None and (up["rabbitmq_http"] or up["rabbitmq_amqp"]):
        # guest/guest is RabbitMQ's default user, which it only accepts from loopback.
        url = (f"http://guest:guest@{HOST}:{PORTS['rabbitmq_http']}" if up["rabbitmq_http"]
               else f"amqp://guest:guest@{HOST}:{PORTS['rabbitmq_amqp']}/%2F")
        changes["rabbitmq"] = replace(tg.parse_rabbitmq(url), auto_detected=True)
        found.append(f"rabbitmq {url.split('@')[1]}")
    if t.redis is None and up["redis"]:
        changes["redis"] = replace(tg.parse_redis(f"redis://{HOST}:{PORTS['redis']}/0"), auto_detected=True)
        found.append(f"redis {HOST}:{PORTS['redis']}")
    if not changes:
        return settings, []
    return replace(settings, targets=replace(t, **changes)), found
