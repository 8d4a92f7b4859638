"""Pure helpers of the dependency probe: which endpoint a URL names, and the
summary statistics of a set of timed samples.  No sockets here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from qdiag.redact import redact_url

# Schemes probed at the TCP level only: a connect is what every client of these
# does first, and a protocol handshake would need credentials.
TCP_DEFAULT_PORTS = {
    "postgres": 5432, "postgresql": 5432, "mysql": 3306,
    "redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671,
}
HTTP_DEFAULT_PORTS = {"http": 80, "https": 443}

# Phases a sample can time, in the order they happen.
PHASES = ("dns", "connect", "tls", "ttfb")


@dataclass(frozen=True)
class Endpoint:
    """One thing to time.  `label` is the URL with any password masked; the
    credentials themselves stay here (for HTTP basic auth) and never in output."""

    label: str
    kind: str  # "http", "https" or "tcp"
    host: str
    port: int
    path: str = "/"  # request target for http(s), with its query
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    discovered: bool = False
    pids: tuple[int, ...] = ()
    connections: int = 0

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = HTTP_DEFAULT_PORTS.get(self.kind)
        return host if self.port == default else f"{host}:{self.port}"


def parse_endpoint(url: str) -> Endpoint:
    """A --dependency URL -> Endpoint.  ValueError with a one-line reason when it
    cannot be probed (unknown scheme, no host, tcp:// without a port)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"'{redact_url(url)}' is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    host = parts.hostname
    label = redact_url(url.strip())
    if not host:
        raise ValueError(f"'{label}' has no host")
    if scheme in HTTP_DEFAULT_PORTS:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Endpoint(label, scheme, host, port or HTTP_DEFAULT_PORTS[scheme], path,
                        unquote(parts.username) if parts.username else None,
                        unquote(parts.password) if parts.password is not None else None)
    if scheme == "tcp":
        if port is None:
            raise ValueError(f"'{label}' has no port (write tcp://HOST:PORT)")
        return Endpoint(label, "tcp", host, port)
    if scheme in TCP_DEFAULT_PORTS:
        return Endpoint(label, "tcp", host, port or TCP_DEFAULT_PORTS[scheme])
    raise ValueError(f"'{label}': scheme '{scheme}' is not supported")


def tcp_label(ip: str, port: int) -> str:
    return f"tcp://[{ip}]:{port}" if ":" in ip else f"tcp://{ip}:{port}"


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between the two
    nearest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values_ms: list[float]) -> dict | None:
    """{"p50", "p95", "max"} in milliseconds (0.1 ms resolution), or None with no values."""
    if not values_ms:
        return None
    return {"p50": round(percentile(values_ms, 50), 1), "p95": round(percentile(values_ms, 95), 1),
            "max": round(max(values_ms), 1)}


def parse_status_line(line: bytes) -> int | None:
    """b"HTTP/1.1 503 Service Unavailable" -> 503; None when it is not an HTTP status line."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    return int(code)


def summarize(samples: list[dict]) -> dict:
    """Per-endpoint figures from samples shaped like
    {"dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms" (None when the phase
    did not complete), "status" (int|None), "error" (str|None), "error_kind"
    (str|None), "timed_out" (bool)}.

    A phase's spread covers the samples that completed that phase; `total`
    covers the samples that got an answer (an HTTP response, 5xx included, or
    an established connection for tcp), so timeouts show in `timeouts` and
    `error_rate` rather than as a made-up latency.
    """
    count = len(samples)
    errors = [s for s in samples if s.get("error")]
    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for s in samples:
        if s.get("status") is not None:
            statuses[str(s["status"])] = statuses.get(str(s["status"]), 0) + 1
        if s.get("error_kind"):
            kinds[s["error_kind"]] = kinds.get(s["error_kind"], 0) + 1
    latency = {"total": spread([s["total_ms"] for s in samples if s.get("total_ms") is not None])}
    for phase in PHASES:
        latency[phase] = spread([s[f"{phase}_ms"] for s in samples if s.get(f"{phase}_ms") is not None])
    return {
        "samples": count,
        "errors": len(errors),
        "error_rate": round(len(errors) / count, 3) if count else None,
        "timeouts": sum(1 for s in samples if s.get("timed_out")),
        "error_kinds": kinds,
        "last_error": errors[-1]["error"] if errors else None,
        "statuses": statuses,
        "latency_ms": latency,
    }
