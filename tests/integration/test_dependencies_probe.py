"""The dependency probe against real local servers and a real child process."""

import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import uuid

import pytest

from qdiag import probe as P
from qdiag import targets as tg
from qdiag.config import Settings
from qdiag.context import ProbeContext
from qdiag.runner import Runner

from qdiag.probes import dependencies  # noqa: E402  (registers the probe)

pytestmark = pytest.mark.live  # runs the probe against this host: spawned processes, sockets, files

DELAY_S = 0.2


def make_ctx(*, window=1.0, allowance=10.0, options=None, **targets):
    settings = Settings(targets=tg.Targets(**targets), window_s=window,
                        probe_options={"dependencies": dict(options or {})})
    now = time.monotonic()
    return ProbeContext(settings=settings, name="dependencies", deadline=now + window + allowance, window_start=now)


class _Handler(http.server.BaseHTTPRequestHandler):
    delay = 0.0
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's naming)
        time.sleep(self.delay)
        body = b"ok\n"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(delay=0.0, status=200, tls_context=None):
    handler = type("Handler", (_Handler,), {"delay": delay, "status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def server_factory():
    servers = []

    def make(**kwargs):
        server = _serve(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def listener():
    """A TCP socket that completes handshakes (kernel backlog) but never answers."""
    socks = []

    def make():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        socks.append(sock)
        return sock.getsockname()[1]

    yield make
    for sock in socks:
        sock.close()


def _free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _only(doc):
    [endpoint] = doc["endpoints"]
    return endpoint


def test_known_delay_shows_in_time_to_first_byte(server_factory):
    server = server_factory(delay=DELAY_S)
    ctx = make_ctx(dependencies=(f"http://127.0.0.1:{server.server_address[1]}/health",),
                   options={"samples": 4})
    ep = _only(dependencies.collect(ctx))
    assert ep["samples"] == 4 and ep["errors"] == 0 and ep["error_rate"] == 0.0
    assert ep["statuses"] == {"200": 4}
    delay_ms = DELAY_S * 1000
    assert abs(ep["latency_ms"]["ttfb"]["p50"] - delay_ms) <= 0.2 * delay_ms
    assert abs(ep["latency_ms"]["total"]["p50"] - delay_ms) <= 0.2 * delay_ms
    # Phases add up: DNS of a literal and a loopback connect are a sliver of the total.
    assert ep["latency_ms"]["connect"]["p50"] < ep["latency_ms"]["ttfb"]["p50"]
    assert ep["latency_ms"]["tls"] is None
    assert ep["addresses"] == ["127.0.0.1"] and ep["discovered"] is False and ep["complete"] is True


def test_refused_port_is_an_error_every_time():
    ctx = make_ctx(dependencies=(f"tcp://127.0.0.1:{_free_port()}",))
    ep = _only(dependencies.collect(ctx))
    assert ep["error_rate"] == 1.0 and ep["timeouts"] == 0
    assert ep["error_kinds"] == {"refused": ep["samples"]}
    assert "connection refused" in ep["last_error"]
    assert ep["latency_ms"]["total"] is None


def test_server_that_never_answers_costs_at_most_its_timeout(listener):
    port = listener()
    ctx = make_ctx(window=1.0, dependencies=(f"http://127.0.0.1:{port}/",),
                   options={"samples": 3, "request_timeout": 0.5})
    began = time.monotonic()
    ep = _only(dependencies.collect(ctx))
    took = time.monotonic() - began
    assert ep["timeouts"] == 3 and ep["error_rate"] == 1.0
    assert "during HTTP response" in ep["last_error"]
    assert ep["latency_ms"]["connect"] is not None and ep["latency_ms"]["ttfb"] is None
    # window 1 s, the last sample starts at its end and may take 0.5 s: wide margin.
    assert took < 1.0 + 0.5 + 3.0


def test_probe_returns_before_its_deadline_whatever_the_timeout(listener):
    port = listener()
    ctx = make_ctx(window=1.0, allowance=1.0, dependencies=(f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{port}/"),
                   options={"samples": 5, "request_timeout": 30})
    began = time.monotonic()
    doc = dependencies.collect(ctx)
    took = time.monotonic() - began
    assert took < 2.0 + 1.5  # the deadline (window + allowance) plus scheduling slack
    http_ep = [e for e in doc["endpoints"] if e["kind"] == "http"][0]
    assert http_ep["complete"] is False and http_ep["timeouts"] >= 1
    assert any("not fully sampled" in note for note in doc["notes"])


def test_unresolvable_host_is_a_dns_error():
    ctx = make_ctx(dependencies=("https://nonexistent.invalid/health",), options={"samples": 2})
    ep = _only(dependencies.collect(ctx))
    assert ep["error_kinds"].get("dns", 0) + ep["error_kinds"].get("timeout", 0) == 2
    assert ep["error_rate"] == 1.0
    assert "nonexistent.invalid" in ep["last_error"]
    assert "DNS" in ep["last_error"]


def test_5xx_counts_as_an_error(server_factory):
    server = server_factory(status=503)
    ctx = make_ctx(dependencies=(f"http://127.0.0.1:{server.server_address[1]}/",))
    ep = _only(dependencies.collect(ctx))
    assert ep["statuses"] == {"503": ep["samples"]}
    assert ep["error_rate"] == 1.0 and ep["error_kinds"] == {"http_5xx": ep["samples"]}
    assert "HTTP 503" in ep["last_error"]
    assert ep["latency_ms"]["total"] is not None  # it answered: its latency is real


def test_password_in_a_url_never_comes_out(server_factory):
    server = server_factory()
    secret = "pw-" + uuid.uuid4().hex
    ctx = make_ctx(dependencies=(f"http://svc:{secret}@127.0.0.1:{server.server_address[1]}/x?token=t0ken-{secret}",
                                 f"postgres://app:{secret}@127.0.0.1:{_free_port()}/db"))
    doc = dependencies.collect(ctx)
    text = json.dumps(doc)
    assert secret not in text
    assert doc["endpoints"][0]["statuses"] == {"200": doc["endpoints"][0]["samples"]}


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, str(cert)


def test_tls_is_verified_by_default(server_factory, self_signed):
    context, _ = self_signed
    server = server_factory(tls_context=context)
    ctx = make_ctx(dependencies=(f"https://127.0.0.1:{server.server_address[1]}/",), options={"samples": 2})
    ep = _only(dependencies.collect(ctx))
    assert ep["error_kinds"] == {"tls": 2} and ep["tls_verify"] is True
    assert "insecure_tls" in ep["last_error"]


def test_tls_with_the_ca_given_times_the_handshake(server_factory, self_signed):
    context, cert = self_signed
    server = server_factory(tls_context=context)
    ctx = make_ctx(dependencies=(f"https://127.0.0.1:{server.server_address[1]}/",),
                   options={"samples": 2, "ca_file": cert})
    ep = _only(dependencies.collect(ctx))
    assert ep["errors"] == 0 and ep["statuses"] == {"200": 2}
    assert ep["latency_ms"]["tls"]["p50"] > 0 and ep["tls_verify"] is True


def test_insecure_tls_skips_verification_and_says_so(server_factory, self_signed):
    context, _ = self_signed
    server = server_factory(tls_context=context)
    ctx = make_ctx(dependencies=(f"https://127.0.0.1:{server.server_address[1]}/",),
                   options={"samples": 2, "insecure_tls": True})
    doc = dependencies.collect(ctx)
    ep = _only(doc)
    assert ep["errors"] == 0 and ep["tls_verify"] is False and doc["insecure_tls"] is True
    assert any("not verified" in note for note in doc["notes"])


_CHILD = r"""
import socket, sys, time
dep, broker = int(sys.argv[1]), int(sys.argv[2])
keep = [socket.create_connection(("127.0.0.1", dep)), socket.create_connection(("127.0.0.1", dep)),
        socket.create_connection(("127.0.0.1", broker))]
own = socket.socket()
own.bind(("127.0.0.1", 0))
own.listen(8)
keep.append(socket.create_connection(own.getsockname()))  # talks to itself
keep.append(own.accept()[0])
print(own.getsockname()[1], flush=True)
time.sleep(120)
"""


# Starts the child in its own session and exits, so the child is not qdiag's
# descendant: process selection leaves qdiag's own family out, and in these
# tests pytest is qdiag.
_LAUNCHER = """import subprocess, sys
child = subprocess.Popen(sys.argv[1:], start_new_session=True)
print("pid", child.pid, flush=True)
"""


@pytest.fixture
def child_with_connections(listener):
    dep_port, broker_port = listener(), listener()
    marker = f"qdiag-dep-test-{uuid.uuid4().hex[:8]}"
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, str(dep_port),
                                 str(broker_port), marker], stdout=subprocess.PIPE, text=True)
    lines = [launcher.stdout.readline().strip(), launcher.stdout.readline().strip()]
    launcher.wait(10)
    pid = int(next(line for line in lines if line.startswith("pid ")).split()[1])
    own_port = int(next(line for line in lines if not line.startswith("pid ")))
    child = types.SimpleNamespace(pid=pid)
    try:
        # A client of the child's own listener: an inbound connection, not a dependency.
        inbound = socket.create_connection(("127.0.0.1", own_port))
        yield child, dep_port, broker_port, marker
        inbound.close()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        launcher.stdout.close()


def test_discovers_what_a_target_process_is_connected_to(child_with_connections):
    child, dep_port, broker_port, _ = child_with_connections
    ctx = make_ctx(pids=(child.pid,), redis=tg.parse_redis(f"redis://127.0.0.1:{broker_port}/0"))
    doc = dependencies.collect(ctx)
    assert doc["target_processes"] == 1
    ep = _only(doc)  # the broker, the self-connection and the inbound client are left out
    assert ep["url"] == f"tcp://127.0.0.1:{dep_port}"
    assert ep["discovered"] is True and ep["pids"] == [child.pid] and ep["connections"] == 2
    assert ep["errors"] == 0 and ep["latency_ms"]["connect"] is not None


def test_discovers_through_a_process_pattern_and_skips_given_endpoints(child_with_connections):
    child, dep_port, broker_port, marker = child_with_connections
    ctx = make_ctx(process_patterns=(marker,), dependencies=(f"tcp://127.0.0.1:{dep_port}",),
                   options={"exclude": [f"127.0.0.1:{broker_port}"]})
    doc = dependencies.collect(ctx)
    # The one endpoint is the given one, not a discovered duplicate of it.
    ep = _only(doc)
    assert ep["discovered"] is False and doc["target_processes"] == 1


def test_broker_left_out_only_when_under_diagnosis(child_with_connections):
    child, dep_port, broker_port, _ = child_with_connections
    doc = dependencies.collect(make_ctx(pids=(child.pid,), options={"max_discovered": 1}))
    # Without the redis target the "broker" is a dependency too; the cap keeps the busiest.
    [ep] = doc["endpoints"]
    assert ep["port"] == dep_port and ep["connections"] == 2
    assert any("1 more discovered endpoint" in note for note in doc["notes"])


def test_not_applicable_without_any_endpoint():
    with pytest.raises(P.NotApplicable, match="--dependency"):
        dependencies.collect(make_ctx())


def test_vanished_pid_is_a_note_and_still_not_applicable():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    with pytest.raises(P.NotApplicable, match=f"pid {proc.pid} .*no longer exists"):
        dependencies.collect(make_ctx(pids=(proc.pid,)))


def test_bad_option_is_a_config_error():
    from qdiag.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[probes.dependencies\] samples = 'many' is not a whole number"):
        dependencies.collect(make_ctx(dependencies=("tcp://127.0.0.1:1",), options={"samples": "many"}))


def test_runs_under_the_runner(server_factory):
    server = server_factory(delay=0.05)
    settings = Settings(targets=tg.Targets(dependencies=(f"http://127.0.0.1:{server.server_address[1]}/",)),
                        window_s=1.0, timeout_s=20.0)
    [result], _ = Runner(settings, [P.REGISTRY["dependencies"]]).run()
    assert result.status == P.OK, result.error
    assert result.observations["endpoints"][0]["statuses"]
    json.dumps(result.observations)
