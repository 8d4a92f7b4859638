"""Calls into kafka-python that cannot hang the probe, and how their failures read.

kafka-python blocks without a bound in a few places (a TLS handshake with a
listener that never answers, for one), so every client call runs in a daemon
thread that the probe stops waiting for at its own timeout.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class Hung(Exception):
    pass


def bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """Run fn in a daemon thread; give up waiting after `timeout` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller as is
            box["error"] = exc

    worker = threading.Thread(target=run, name="qdiag-kafka-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise Hung()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return text if name in text else (f"{name}: {text}" if text else name)


# Failures of the connection rather than of one group or topic: asking again
# piece by piece would only multiply the wait.
TRANSPORT_ERRORS = {"KafkaConnectionError", "NodeNotReadyError", "KafkaTimeoutError", "RequestTimedOutError",
                     "NoBrokersAvailable"}


def is_transport(exc: BaseException) -> bool:
    return type(exc).__name__ in TRANSPORT_ERRORS


def hint(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Authorization" in name or "SaslAuthentication" in name or "Authentication" in name:
        return ("qdiag's principal needs DESCRIBE on the cluster, topics and groups; "
                "check the SASL/SSL settings in [probes.kafka]")
    if "Coordinator" in name or "LoadInProgress" in name:
        return "the group coordinator is moving or loading; run again in a few seconds"
    if name in ("NodeNotReadyError", "KafkaConnectionError", "RequestTimedOutError", "KafkaTimeoutError"):
        return "a broker did not answer: check that every broker's advertised.listeners address is reachable from here"
    if "UnsupportedVersion" in name:
        return "the broker is too old for this request"
    return "run with --debug for details"
