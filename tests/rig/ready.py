"""Wait until one broker of the test rig serves; used by tests/rig.sh.

    python tests/rig/ready.py kafka 127.0.0.1:9092 [--timeout S] [--pid PID] [--log FILE]
    python tests/rig/ready.py rabbitmq 127.0.0.1:15672 ...
    python tests/rig/ready.py redis 127.0.0.1:6379 ...

"Serves" means a real request succeeds, not just that the port accepts:
Kafka answers metadata with an unfenced broker and has a group coordinator
(so its __consumer_offsets topic exists), the RabbitMQ management API
answers GET /api/overview as guest and the AMQP listener it reports accepts
connections, Redis answers PING. Exits 0 once that holds; otherwise exits 1
with one line on stderr when the time is up, or as soon as the process given
with --pid has died. Without --log the broker is taken to be one that
tests/rig.sh found running, and the error says so.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import socket
import sys
import time
import urllib.request

ATTEMPT_TIMEOUT_S = 5.0


def kafka_serves(host: str, port: int) -> None:
    from kafka import KafkaAdminClient

    # Fail fast while nothing listens: the client would retry for its whole
    # bootstrap timeout.
    socket.create_connection((host, port), timeout=ATTEMPT_TIMEOUT_S).close()
    # The admin client never creates topics (a KafkaConsumer's metadata
    # requests could).
    timeout_ms = int(ATTEMPT_TIMEOUT_S * 1000)
    config = {"bootstrap_servers": f"{host}:{port}", "client_id": "qdiag-rig-ready",
              "request_timeout_ms": timeout_ms}
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python 3.x
        config["bootstrap_timeout_ms"] = timeout_ms
    admin = KafkaAdminClient(**config)
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        if not any(not b.get("is_fenced") for b in brokers):
            raise RuntimeError("no unfenced broker in the cluster metadata yet")
        admin.list_topics()
        # A new cluster creates its __consumer_offsets topic on the first
        # group request and answers COORDINATOR_NOT_AVAILABLE until that is
        # done. Ask once here (offsets of a group that does not exist: nothing
        # is created but the internal topic), so the first test does not.
        list_offsets = getattr(admin, "list_group_offsets", None) or admin.list_consumer_group_offsets
        list_offsets("qdiag-rig-ready")
    finally:
        admin.close()


def rabbitmq_serves(host: str, port: int) -> None:
    request = urllib.request.Request(f"http://{host}:{port}/api/overview")
    token = base64.b64encode(b"guest:guest").decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=ATTEMPT_TIMEOUT_S) as response:
        overview = json.load(response)
    if not overview.get("management_version"):
        raise RuntimeError("/api/overview has no management_version")
    amqp = [item for item in overview.get("listeners", []) if item.get("protocol") == "amqp"]
    if not amqp:
        raise RuntimeError("/api/overview lists no amqp listener")
    with socket.create_connection((host, int(amqp[0]["port"])), timeout=ATTEMPT_TIMEOUT_S):
        pass


def redis_serves(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=ATTEMPT_TIMEOUT_S) as conn:
        conn.sendall(b"PING\r\n")
        reply = conn.recv(64)
    if not reply.startswith(b"+PONG"):
        # e.g. "-LOADING Redis is loading the dataset in memory"
        raise RuntimeError(reply.decode(errors="replace").strip() or "empty reply to PING")


CHECKS = {"kafka": kafka_serves, "rabbitmq": rabbitmq_serves, "redis": redis_serves}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited even though kill(0) still finds it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", choices=sorted(CHECKS))
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--pid", type=int, help="process that must stay alive while we wait")
    parser.add_argument("--log", default=None,
                        help="log file of the process we started (none: we found it running)")
    args = parser.parse_args()

    # kafka-python logs every refused connection; the outcome is reported below.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    host, _, port = args.address.rpartition(":")
    check = CHECKS[args.broker]
    deadline = time.monotonic() + args.timeout
    last_error = "no attempt made"
    while True:
        try:
            check(host, int(port))
            return 0
        except Exception as exc:  # any failure means "not yet"
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            name = type(exc).__name__
            last_error = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
        if args.pid and not alive(args.pid):
            print(f"qdiag rig: {args.broker} (pid {args.pid}) exited before serving on "
                  f"{args.address}; see {args.log}", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            if args.log:
                print(f"qdiag rig: {args.broker} did not serve on {args.address} within "
                      f"{args.timeout:.0f} s (last error: {last_error}); see {args.log}",
                      file=sys.stderr)
            else:
                print(f"qdiag rig: something listens on {args.address} but does not serve as "
                      f"{args.broker} within {args.timeout:.0f} s (last error: {last_error}); "
                      f"tests/rig.sh did not start it: stop it or move the rig to another port",
                      file=sys.stderr)
            return 1
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
