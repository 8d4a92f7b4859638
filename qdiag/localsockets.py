"""Which local process owns a connection: how broker-side consumers (a Kafka
member's host, a RabbitMQ connection's peer, a Redis client's addr) become
process targets without --pid."""

from __future__ import annotations

from typing import Iterable

import psutil

from qdiag.endpoints import norm_ip


def _established() -> list:
    try:
        return [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED and c.raddr]
    except (psutil.AccessDenied, OSError):
        return []


def pids_by_local_address(addresses: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Map client addresses seen by a broker (ip, port) to the local pid whose
    socket has that local address.  Addresses not owned here are left out."""
    wanted = {(norm_ip(ip), int(port)) for ip, port in addresses}
    found: dict[tuple[str, int], int] = {}
    for conn in _established():
        key = (norm_ip(conn.laddr.ip), conn.laddr.port)
        if key in wanted and conn.pid:
            found[key] = conn.pid
    return found


def pids_connected_to(host_ips: Iterable[str], port: int, *, client_ip: str | None = None) -> set[int]:
    """Local pids with an established connection to one of `host_ips`:`port`
    (optionally only from `client_ip`)."""
    targets = {norm_ip(h) for h in host_ips}
    client = norm_ip(client_ip) if client_ip else None
    pids = set()
    for conn in _established():
        if conn.pid and conn.raddr.port == port and norm_ip(conn.raddr.ip) in targets:
            if client is None or norm_ip(conn.laddr.ip) == client:
                pids.add(conn.pid)
    return pids


def connections_to(endpoints: Iterable[tuple[str, int]]) -> dict[int, list[dict[str, str]]]:
    """Local pids with established connections to one of `endpoints` (ip, port), with each such
    socket's own address: the address a broker lists for that client, so another host's
    snapshot of the broker can be matched to this process by address and port."""
    from qdiag.endpoints import format_endpoint

    wanted = {(norm_ip(ip), int(port)) for ip, port in endpoints}
    found: dict[int, list[dict[str, str]]] = {}
    for conn in _established():
        if conn.pid and (norm_ip(conn.raddr.ip), conn.raddr.port) in wanted:
            found.setdefault(conn.pid, []).append({"local": format_endpoint(conn.laddr.ip, conn.laddr.port),
                                                   "remote": format_endpoint(conn.raddr.ip, conn.raddr.port)})
    return found
