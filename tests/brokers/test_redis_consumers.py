"""Dead versus stuck stream consumers, CLIENT LIST bounds and the rediss://
options, against the rig's real Redis (database 15).  Consumers are real
processes: one killed with SIGKILL while it holds pending entries, one stuck
in its handler with its connection open."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.brokers.test_redis_probe import made, r, record, run_probe, uid, url  # noqa: F401 (fixtures)
from qdiag.diagnosis import engine, playbook
from qdiag.errors import ConfigError
from qdiag.probe import ProbeError

pytestmark = pytest.mark.broker

# A stream consumer: reads a batch, then either hangs in its handler for ever
# (stuck, connection open) or waits to be killed (the harness kills it).
_CONSUMER = """
import sys, time, redis
url, key, group, name = sys.argv[1:5]
c = redis.Redis.from_url(url, protocol=2, single_connection_client=True)
c.xreadgroup(group, name, {key: ">"}, count=5)
print("read", flush=True)
while True:
    time.sleep(0.5)
"""


def _consumer(url, key, group, name):
    p = subprocess.Popen([sys.executable, "-c", _CONSUMER, url, key, group, name], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "read"
    return p


def _stream(r, made, entries=30):
    key = made.key(uid("qdt-live"))
    r.xgroup_create(key, "g", id="0", mkstream=True)
    for i in range(entries):
        r.xadd(key, {"n": i})
    return key


def _dead_and_stuck(url, r, made, dead_name, stuck_name):
    """Two streams of group g: one whose consumer was killed, one whose consumer is
    stuck with its connection open.  Returns (dead stream, stuck stream, the probe's output)."""
    dead_key, stuck_key = _stream(r, made), _stream(r, made)
    dead = _consumer(url, dead_key, "g", dead_name)
    stuck = _consumer(url, stuck_key, "g", stuck_name)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        out = run_probe(url, window=1.0, queues=[dead_key, stuck_key], options={"samples": 2})
    finally:
        stuck.kill()
        stuck.wait(10)
    return dead_key, stuck_key, out


def test_killed_consumer_is_gone_and_stuck_one_is_alive(url, r, made):
    dead_key, stuck_key, out = _dead_and_stuck(url, r, made, "worker-1", "worker-2")
    gone = record(out, dead_key, "g")
    assert gone["status"] == "GONE"
    assert (gone["consumers"], gone["consumers_alive"], gone["consumers_gone"]) == (1, 0, 1)
    assert gone["gone_pending"] == 5 and gone["consumers_gone_list"][0]["name"] == "worker-1"
    assert gone["consumer_list"][0]["connection"] == "gone"
    assert "none has a client connection" in gone["status_reason"]
    alive = record(out, stuck_key, "g")
    assert alive["status"] == "STALL"
    assert (alive["consumers_alive"], alive["consumers_gone"]) == (1, 0)
    assert alive["consumer_list"][0]["connection"].startswith("127.0.0.1:")


def test_rules_call_the_dead_group_absent_and_the_stuck_one_stuck(url, r, made):
    """The same two groups through the diagnosis: consumers-absent with the
    recovery commands filled in for the dead one, consumer-stuck for the other."""
    dead_key, stuck_key, obs = _dead_and_stuck(url, r, made, "worker-9", "worker-8")
    snapshot = {"schema": "qdiag.snapshot/1", "settings": {"targets": {"queues": [dead_key, stuck_key]}},
                "probes": [{"name": "redis", "status": "ok", "observations": obs}]}
    causes = {(c["id"], c["subject"]): c for c in engine.rank(engine.evaluate(playbook.load(), snapshot))}
    absent = causes[("consumers-absent", f"redis:{dead_key}/g")]
    assert any("XAUTOCLAIM" in step and "worker-9" not in step for step in absent["mitigations"]["immediate"])
    assert any(f"XGROUP DELCONSUMER {dead_key} g worker-9" in step for step in absent["mitigations"]["immediate"])
    assert ("consumers-absent", f"redis:{stuck_key}/g") not in causes
    assert ("consumer-stuck", f"redis:{stuck_key}/g") in causes


def test_liveness_unknown_when_client_list_is_not_read(url, r, made):
    """Fewer clients allowed than are connected: CLIENT LIST is not read, the
    consumers' liveness is unknown (not gone), and a note says why."""
    key = _stream(r, made)
    dead = _consumer(url, key, "g", "w")
    dead.send_signal(signal.SIGKILL)
    dead.wait(10)
    out = run_probe(url, window=0.5, queues=[key], options={"samples": 2, "max_clients": 1})
    rec = record(out, key, "g")
    assert rec["consumers_alive"] is None and rec["status"] != "GONE"
    assert "max_clients=1" in rec["liveness_basis"]
    assert out["clients"] is None
    assert any("CLIENT LIST not read" in n for n in out["notes"])


def test_client_list_is_cut_at_max_clients(url, r):
    """More clients than max_clients connect between INFO and CLIENT LIST:
    what is parsed stops at the bound and the summary says so."""
    import redis

    extra = [redis.Redis.from_url(url, protocol=2, single_connection_client=True) for _ in range(4)]
    try:
        for c in extra:
            c.ping()
        from qdiag.probes._redis_clients import read_client_list
        from qdiag.probes._redis_link import Link
        from tests.brokers.test_redis_probe import make_ctx
        from qdiag import targets as tg

        ctx = make_ctx(url)
        link = Link(ctx, tg.parse_redis(url), connect_timeout_s=2, call_timeout_s=2)
        link.open()
        try:
            clients, meta = read_client_list(link, connected=2, limit=2)
        finally:
            link.close()
    finally:
        for c in extra:
            c.close()
    assert len(clients) == 2 and meta["truncated"] is True
    assert "CLIENT|LIST" in link.used and all(c.get("flags", "").find("P") < 0 for c in clients)


# --- rediss:// options ------------------------------------------------------------------

def test_tls_arguments_are_built_from_the_options(tmp_path):
    from qdiag import targets as tg
    from qdiag.probes._redis_link import connection_kwargs

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    accepted = {"host", "port", "db", "username", "password", "socket_timeout", "socket_connect_timeout",
                "retry_on_timeout", "health_check_interval", "ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname"}
    tls_target = tg.parse_redis("rediss://h:6380/0")
    kw = connection_kwargs(tls_target, {"ca_file": str(ca), "insecure": False}, accepted,
                           connect_timeout_s=1, call_timeout_s=2)
    assert kw["ssl_ca_certs"] == str(ca) and kw["ssl_cert_reqs"] == "required" and "ssl_check_hostname" not in kw
    kw = connection_kwargs(tls_target, {"ca_file": None, "insecure": True}, accepted, connect_timeout_s=1,
                           call_timeout_s=2)
    assert kw["ssl_cert_reqs"] == "none" and kw["ssl_check_hostname"] is False and "ssl_ca_certs" not in kw
    plain = connection_kwargs(tg.parse_redis("redis://h:6379/0"), {"ca_file": str(ca), "insecure": True}, accepted,
                              connect_timeout_s=1, call_timeout_s=2)
    assert not {k for k in plain if k.startswith("ssl_")}


def test_bad_ca_file_is_a_clear_error(url, tmp_path):
    tls_url = url.replace("redis://", "rediss://")
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ProbeError, match=f"ca_file '{missing}' is not a readable file"):
        run_probe(tls_url, window=0.2, options={"ca_file": str(missing)})
    with pytest.raises(ConfigError, match="insecure_tls"):
        run_probe(tls_url, window=0.2, options={"insecure_tls": "yes"})


def test_tls_options_on_a_plain_url_are_noted(url, tmp_path):
    out = run_probe(url, window=0.2, queues=[uid("qdt-none")], options={"insecure_tls": True, "samples": 2})
    assert any("apply to rediss:// URLs only" in n for n in out["notes"])


# --- bounded replies --------------------------------------------------------------------

def test_stream_with_big_entries_is_read_lean_after_the_first_sample(url, r, made):
    """XINFO STREAM sends the first and last entries whole: a stream of 300 KB
    entries is read that way once, then with XLEN and XINFO GROUPS; its rates
    still come (entries-read + lag), and the server sends far less."""
    key = made.key(uid("qdt-big"))
    r.xgroup_create(key, "g", id="0", mkstream=True)
    blob = "x" * 300_000
    for i in range(3):
        r.xadd(key, {"blob": blob, "n": i})
    r.xreadgroup("g", "c", {key: ">"}, count=1)
    sent_before = r.info("stats")["total_net_output_bytes"]
    out = run_probe(url, window=1.0, queues=[key], options={"samples": 4})
    sent = r.info("stats")["total_net_output_bytes"] - sent_before
    rec = record(out, key, "g")
    assert rec["depth"] == 2 and rec["pending"] == 1 and rec["samples"] == 4
    assert rec["rate_in"] == 0 and "entries-read + lag" in rec["rate_source"]
    assert {s["key"]: s for s in out["streams"]}[key]["big_entries"] is True
    assert any("max_entry_bytes" in n for n in out["notes"])
    # One XINFO STREAM (two 300 KB entries), no XRANGE of the next entry, nothing per later sample:
    # well under what four samples of XINFO STREAM (2.4 MB) would send.
    assert sent < 1_000_000, sent
