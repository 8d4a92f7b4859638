"""Pure parts of the dependency probe: URL -> endpoint, percentiles, per-endpoint summaries."""

import pytest

from qdiag.probes._latency import parse_endpoint, parse_status_line, percentile, spread, summarize


# ---------------------------------------------------------------- endpoints

@pytest.mark.parametrize("url, kind, host, port, path", [
    ("http://api.internal/health", "http", "api.internal", 80, "/health"),
    ("https://api.internal", "https", "api.internal", 443, "/"),
    ("https://api.internal:8443/v1/ping?deep=1", "https", "api.internal", 8443, "/v1/ping?deep=1"),
    ("tcp://db:5432", "tcp", "db", 5432, "/"),
    ("postgres://app@db.internal/orders", "tcp", "db.internal", 5432, "/"),
    ("postgresql://db:6432/orders", "tcp", "db", 6432, "/"),
    ("mysql://db", "tcp", "db", 3306, "/"),
    ("redis://cache", "tcp", "cache", 6379, "/"),
    ("amqp://mq", "tcp", "mq", 5672, "/"),
    ("amqps://mq", "tcp", "mq", 5671, "/"),
    ("http://[::1]:8080/x", "http", "::1", 8080, "/x"),
])
def test_parse_endpoint(url, kind, host, port, path):
    ep = parse_endpoint(url)
    assert (ep.kind, ep.host, ep.port, ep.path) == (kind, host, port, path)
    assert ep.discovered is False


def test_password_stays_out_of_the_label_but_is_kept_for_basic_auth():
    ep = parse_endpoint("https://svc:p%40ss-word@api.internal/health")
    assert "p%40ss-word" not in ep.label and "p@ss-word" not in ep.label
    assert ep.label == "https://svc:***@api.internal/health"
    assert (ep.username, ep.password) == ("svc", "p@ss-word")
    assert "p@ss-word" not in repr(ep)


def test_password_of_a_tcp_url_is_dropped():
    ep = parse_endpoint("postgres://app:topsecret@db:5432/orders")
    assert "topsecret" not in ep.label and "topsecret" not in repr(ep)
    assert ep.password is None


@pytest.mark.parametrize("url, reason", [
    ("tcp://db", "no port"),
    ("ftp://files.internal", "not supported"),
    ("http://", "no host"),
    ("http://host:99999/", "not a valid URL"),
])
def test_parse_endpoint_rejects(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_endpoint(url)


def test_host_header_includes_only_non_default_ports():
    assert parse_endpoint("http://a/").host_header() == "a"
    assert parse_endpoint("http://a:8080/").host_header() == "a:8080"
    assert parse_endpoint("https://a:443/").host_header() == "a"
    assert parse_endpoint("https://[::1]:8443/").host_header() == "[::1]:8443"


# ---------------------------------------------------------------- maths

def test_percentile_interpolates_between_ranks():
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0


def test_percentile_ignores_input_order_and_handles_edges():
    assert percentile([30.0, 10.0, 20.0], 50) == 20.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_spread_rounds_to_a_tenth_of_a_millisecond():
    assert spread([200.04, 210.0, 250.26]) == {"p50": 210.0, "p95": 246.2, "max": 250.3}
    assert spread([]) is None


@pytest.mark.parametrize("line, status", [
    (b"HTTP/1.1 200 OK", 200),
    (b"HTTP/1.0 503 Service Unavailable", 503),
    (b"HTTP/2 404", 404),
    (b"SSH-2.0-OpenSSH_9.2", None),
    (b"HTTP/1.1 2000 nope", None),
    (b"", None),
])
def test_parse_status_line(line, status):
    assert parse_status_line(line) == status


def _sample(total=None, dns=None, connect=None, ttfb=None, status=None, error=None, kind=None, timed_out=False):
    return {"dns_ms": dns, "connect_ms": connect, "tls_ms": None, "ttfb_ms": ttfb, "total_ms": total,
            "status": status, "error": error, "error_kind": kind, "timed_out": timed_out}


def test_summarize_counts_errors_timeouts_and_statuses():
    samples = [
        _sample(total=100.0, dns=1.0, connect=2.0, ttfb=97.0, status=200),
        _sample(total=300.0, dns=1.0, connect=2.0, ttfb=297.0, status=503, error="HTTP 503 from a:80", kind="http_5xx"),
        _sample(dns=1.0, error="timed out after 1s during TCP connect to a:80", kind="timeout", timed_out=True),
        _sample(total=200.0, dns=3.0, connect=4.0, ttfb=193.0, status=200),
    ]
    doc = summarize(samples)
    assert doc["samples"] == 4
    assert doc["errors"] == 2
    assert doc["error_rate"] == 0.5
    assert doc["timeouts"] == 1
    assert doc["statuses"] == {"200": 2, "503": 1}
    assert doc["error_kinds"] == {"http_5xx": 1, "timeout": 1}
    assert doc["last_error"].startswith("timed out")
    # The timed-out sample has no total; the 503 answered, so it has one.
    assert doc["latency_ms"]["total"] == {"p50": 200.0, "p95": 290.0, "max": 300.0}
    assert doc["latency_ms"]["dns"]["max"] == 3.0
    assert doc["latency_ms"]["connect"]["p50"] == 2.0
    assert doc["latency_ms"]["tls"] is None


def test_summarize_of_nothing():
    doc = summarize([])
    assert doc["samples"] == 0 and doc["error_rate"] is None and doc["latency_ms"]["total"] is None

