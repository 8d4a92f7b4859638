"""Find brokers listening on this host's default ports, so that a bare
`qdiag investigate` looks at them.  A TCP connect each, concurrently, 300 ms
at most: cheap enough to do on every run, and it sends nothing.  Which ports
and what target each gives come from the broker registry (qdiag/brokers.py)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from qdiag.brokers import BROKERS, LOCAL_HOST
from qdiag.config import Settings

CONNECT_TIMEOUT_S = 0.3


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((LOCAL_HOST, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def listening(ports) -> dict[int, bool]:
    ports = sorted(set(ports))
    if not ports:
        return {}
    with ThreadPoolExecutor(max_workers=len(ports)) as pool:
        return dict(zip(ports, pool.map(_answers, ports)))


def detect(settings: Settings) -> tuple[Settings, list[str]]:
    """Fill in broker targets that were not given and answer locally; returns the new settings and what was found."""
    t = settings.targets
    missing = [b for name, b in BROKERS.items() if t.broker(name) is None]
    named = len(missing) < len(BROKERS)
    # Naming a broker scopes the run to it: a Kafka found by chance must not
    # turn a RabbitMQ-only check into UNKNOWN.  --auto-detect asks for both.
    if settings.auto_detect is False or (named and settings.auto_detect is not True) or not missing:
        return settings, []
    up = listening(port for b in missing for port, _ in b.detect)
    found, changes = [], {}
    for broker in missing:
        for port, value in broker.detect:
            if up.get(port):
                changes[broker.name] = replace(broker.parse(value), auto_detected=True)
                found.append(f"{broker.name} {LOCAL_HOST}:{port}")
                break
    if not changes:
        return settings, []
    return replace(settings, targets=replace(t, **changes)), found
