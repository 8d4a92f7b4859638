"""How qdiag writes a network endpoint: one IP normaliser and one `ip:port`
formatter for every probe.

The formatted string is a join key: the threads probe names the peer a thread
waits on, the process probe lists a consumer's connections, the dependencies
probe lists the addresses of each endpoint, and the diagnosis joins them.  If
two probes spelled one address differently ('::ffff:127.0.0.1' against
'127.0.0.1') that join would fail silently, so all of them format here.
"""

from __future__ import annotations

import functools
import ipaddress
import socket


@functools.lru_cache(maxsize=4096)  # the same few addresses come back at every sample
def norm_ip(ip: str) -> str:
    """'::ffff:127.0.0.1' -> '127.0.0.1'; '/127.0.0.1' (Kafka's member host) -> '127.0.0.1';
    '[::1]' -> '::1'; 'fe80::1%eth0' -> 'fe80::1'.  A host name comes back unchanged."""
    ip = ip.strip().lstrip("/").strip("[]")
    if "%" in ip:  # the zone of a link-local address is not part of the address
        ip = ip.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        # A dual-stack socket talking IPv4 shows its peer as ::ffff:a.b.c.d; it is the IPv4 peer.
        return str(addr.ipv4_mapped)
    return str(addr)


def format_endpoint(ip: str, port: int) -> str:
    """('127.0.0.1', 80) -> '127.0.0.1:80'; ('::1', 80) -> '[::1]:80' (the IP normalised first)."""
    ip = norm_ip(ip)
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def ip_from_bytes(raw: bytes) -> str:
    """4 or 16 address bytes in network order -> text; an IPv4-mapped IPv6 address
    comes back as the IPv4 address it is."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def port_of(endpoint: str) -> int | None:
    """'127.0.0.1:80' or '[::1]:80' -> 80; None when there is no port."""
    _, sep, port = endpoint.rpartition(":")
    return int(port) if sep and port.isdigit() else None


def split_endpoint(endpoint: str) -> tuple[str, int] | None:
    """'127.0.0.1:80' -> ('127.0.0.1', 80); '[::1]:80' -> ('::1', 80); None without a port."""
    port = port_of(endpoint)
    if port is None:
        return None
    return endpoint.rpartition(":")[0].strip("[]"), port
