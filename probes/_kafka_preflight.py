"""Why a Kafka bootstrap server cannot be used, from plain sockets: a TCP
connect before kafka-python is started (refused or unresolvable fails at once
instead of after the client's bootstrap retries), and on failure a hand-built
ApiVersions v0 request (or a TLS handshake) that tells a Kafka listener from
something else."""

from __future__ import annotations

import socket
import ssl
import struct
import time

from ._kafka_calls import first_line


def _api_versions_request() -> bytes:
    client = b"qdiag"
    body = struct.pack(">hhih", 18, 0, 0x51D1A6, len(client)) + client  # ApiVersions v0
    return struct.pack(">i", len(body)) + body


def diagnose(bootstrap: list[str], budget: float, security_protocol: str) -> str | None:
    """Why none of the bootstrap servers works, in words, from plain sockets."""
    reasons = []
    per_server = max(0.2, budget / max(1, len(bootstrap)))
    for address in bootstrap:
        host, port = address.rsplit(":", 1)
        host, port = host.strip("[]"), int(port)
        reasons.append(f"{address}: {_diagnose_one(host, port, per_server, security_protocol)}")
    return "; ".join(reasons) if reasons else None


def _tcp_connect(host: str, port: int, timeout: float) -> tuple[socket.socket | None, str | None]:
    """A connected socket, or why there is none, in words."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return None, f"the name does not resolve ({exc.strerror}; check --kafka)"
    family, _, _, _, sockaddr = addresses[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(max(0.1, timeout))
    try:
        sock.connect(sockaddr)
        return sock, None
    except ConnectionRefusedError:
        reason = "connection refused (nothing listens on that port; is Kafka running? check --kafka)"
    except socket.timeout:
        reason = f"no answer to a TCP connect within {timeout:.1f}s (host down, or a firewall drops the packets)"
    except OSError as exc:
        reason = f"TCP connect failed ({exc.strerror or exc}; check --kafka and the network)"
    sock.close()
    return None, reason


def preflight(bootstrap: list[str], timeout: float) -> str | None:
    """None when a TCP connection to some bootstrap server opens, else why not.
    Costs one TCP handshake (no Kafka request) and turns "refused" or "no such
    host" into an immediate answer instead of kafka-python's retries until its
    bootstrap timeout."""
    reasons = []
    for address in bootstrap:
        host, port = address.rsplit(":", 1)
        sock, reason = _tcp_connect(host.strip("[]"), int(port), timeout)
        if sock is not None:
            sock.close()
            return None
        reasons.append(f"{address}: {reason}")
    return "; ".join(reasons)


def _diagnose_one(host: str, port: int, timeout: float, security_protocol: str) -> str:
    deadline = time.monotonic() + timeout
    sock, reason = _tcp_connect(host, port, timeout)
    if sock is None:
        return reason
    try:
        if security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                with context.wrap_socket(sock, server_hostname=host):
                    pass
            except socket.timeout:
                return "TCP connect works but the TLS handshake got no answer (is this a Kafka TLS listener?)"
            except (ssl.SSLError, OSError) as exc:
                return (f"TLS handshake failed ({first_line(exc)}): the listener is probably PLAINTEXT; "
                        "set [probes.kafka] security_protocol = \"PLAINTEXT\"")
            return ("TLS works but Kafka did not answer over it (check ssl_cafile / certificates, "
                    "or SASL settings in [probes.kafka])")
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(_api_versions_request())
            reply = sock.recv(8)
        except socket.timeout:
            return ("TCP connect works but nothing answers a Kafka request (not a Kafka listener, or a TLS "
                    "listener: set [probes.kafka] security_protocol = \"SSL\")")
        except OSError as exc:
            return f"the connection was reset on a Kafka request ({exc.strerror or exc}): not a Kafka listener?"
        if not reply:
            return ("the server closed the connection on a Kafka request (a TLS or SASL listener? set "
                    "[probes.kafka] security_protocol)")
        return ("the bootstrap server answers, but the cluster is unusable from here (check the brokers' "
                "advertised.listeners and the security settings)")
    finally:
        sock.close()
