"""The helpers every probe shares: endpoint spelling (the join key between
thread waits, connections and dependencies), runtime detection, cgroup lines."""

from __future__ import annotations

import pytest

from qdiag.endpoints import format_endpoint, ip_from_bytes, norm_ip, port_of
from qdiag.probes import _proc_parse as pp
from qdiag.runtime import detect_runtime


@pytest.mark.parametrize("raw, expected", [
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("/127.0.0.1", "127.0.0.1"),          # Kafka's member host
    ("[::1]", "::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    (" 10.0.0.5 ", "10.0.0.5"),
    ("broker.example", "broker.example"),  # a name is left alone
])
def test_norm_ip(raw, expected):
    assert norm_ip(raw) == expected


def test_format_endpoint_brackets_ipv6_and_unmaps_ipv4():
    assert format_endpoint("127.0.0.1", 80) == "127.0.0.1:80"
    assert format_endpoint("::1", 80) == "[::1]:80"
    # psutil reports a dual-stack socket's IPv4 peer as ::ffff:a.b.c.d; the
    # dependencies probe resolves the same peer to a.b.c.d.  Both must meet.
    assert format_endpoint("::ffff:10.1.2.3", 5432) == format_endpoint("10.1.2.3", 5432) == "10.1.2.3:5432"


def test_ip_from_bytes():
    assert ip_from_bytes(bytes([127, 0, 0, 1])) == "127.0.0.1"
    assert ip_from_bytes(b"\0" * 10 + b"\xff\xff" + bytes([10, 0, 0, 9])) == "10.0.0.9"
    assert ip_from_bytes(b"\0" * 15 + b"\1") == "::1"


def test_port_of():
    assert port_of("[::1]:8080") == 8080 and port_of("10.0.0.1:53") == 53
    assert port_of("unix:/run/x.sock") is None and port_of("host") is None


@pytest.mark.parametrize("name, exe, cmdline, expected", [
    ("python3.11", None, None, "python"),
    ("python3.13t", None, None, "python"),     # free-threaded build
    ("python3.11-dbg", None, None, "python"),
    (None, "/usr/bin/Python3", None, "python"),
    ("javaw", None, None, "java"),
    ("python3-config", None, None, None),
    ("javac", None, None, None),
])
def test_runtime_names_agree_for_both_probes(name, exe, cmdline, expected):
    assert detect_runtime(name, exe, cmdline) == expected


def test_cgroup_lines_round_trip():
    text = "12:cpu,cpuacct:/docker/abc\n1:name=systemd:/init.scope\n0::/user.slice/session-1.scope\n"
    records = pp.parse_proc_cgroup(text)
    assert records[0] == {"id": "12", "controllers": ["cpu", "cpuacct"], "path": "/docker/abc"}
    assert pp.cgroup_lines(records) == text.splitlines()
