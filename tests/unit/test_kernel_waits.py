"""The kernel's view of waiting threads: /proc parsers and sock_diag on data
recorded from real processes (tests/fixtures/kernel/record.py), and the
classification and wait attribution built on them."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from qdiag import sockdiag
from qdiag.probes import _kernel_waits as kw
from qdiag.probes import _proc_parse as pp

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kernel"
ZOO = FIXTURES / "zoo"
META = json.loads((ZOO / "meta.json").read_text())
ROLES = META["roles"]
LINKS = {int(fd): link for fd, link in json.loads((ZOO / "fd.json").read_text()).items()}
HTTP_PEER = f"127.0.0.1:{META['http_port']}"


def task(role: str, name: str) -> str:
    return (ZOO / "task" / str(ROLES[role]) / name).read_text()


def zoo_sockets() -> dict[int, dict]:
    sockets = {}
    for table, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        for row in pp.parse_proc_net_tcp((ZOO / "net" / table).read_text(), byteorder="little"):
            sockets[row["inode"]] = {**row, "proto": proto}
    for inode, name in pp.parse_proc_net_unix((ZOO / "net" / "unix").read_text()).items():
        sockets[inode] = {"proto": "unix", "inode": inode, "name": name}
    return sockets


def memory(address: int) -> bytes:
    return bytes.fromhex((ZOO / "mem" / f"{address:x}.hex").read_text().strip())


def replay(role: str, *, broker_ports=None, awaiting=None, sockets=None) -> kw.Wait:
    """What the sampler does for one thread sample, on the recorded files."""
    stat = pp.parse_task_stat(task(role, "stat"))
    parsed = pp.parse_syscall(task(role, "syscall"))
    call = "running" if parsed["running"] else kw.syscall_name(META["machine"], parsed["nr"])
    args = parsed["args"]
    wchan = pp.parse_wchan(task(role, "wchan")) if kw.needs_wchan(stat["state"], call) else None
    fds = None
    request = kw.fd_request(call, args) if call != "running" else None
    if request is not None:
        numbers = list(request.fds)
        if request.pollfd:
            numbers += [fd for fd, _ in pp.parse_pollfds(memory(request.pollfd[0]))]
        if request.fdsets:
            for address in request.fdsets[1]:
                numbers += pp.parse_fd_set(memory(address), request.fdsets[0])
        if request.epoll is not None:
            numbers += pp.parse_epoll_fdinfo((ZOO / "fdinfo" / str(request.epoll)).read_text())
        fds = [kw.resolve_fd(fd, LINKS.get(fd), sockets or zoo_sockets()) for fd in numbers]
    return kw.classify(stat["state"], call, args, wchan, fds, broker_ports=broker_ports, awaiting=awaiting)


# ---------------------------------------------------------------- parsers on recorded files

def test_task_stat_splits_at_the_last_parenthesis():
    nap = pp.parse_task_stat(task("nap", "stat"))
    assert nap["comm"] == "nap) (x" and nap["state"] == "S" and nap["tid"] == ROLES["nap"]
    main = pp.parse_task_stat(task("main", "stat"))
    assert main["state"] == "R" and main["utime"] + main["stime"] > 0 and main["starttime"] > 0
    assert pp.parse_task_stat("garbage") is None
    assert pp.parse_task_stat("12 (x) S 1 2") is None


def test_syscall_file_forms():
    assert pp.parse_syscall(task("main", "syscall")) == {"nr": None, "args": (), "running": True}
    futex = pp.parse_syscall(task("lock_a", "syscall"))
    assert futex["nr"] == 202 and len(futex["args"]) == 6 and futex["args"][1] & kw.FUTEX_CMD_MASK == 9
    assert pp.parse_syscall("-1 0x7ffd1000 0x401000\n") == {"nr": -1, "args": (), "running": False}
    assert pp.parse_syscall("7 0x1 0x2\n") is None  # truncated
    assert pp.parse_syscall("") is None


def test_wchan_and_schedstat():
    assert pp.parse_wchan(task("child", "wchan")) == "do_wait"
    assert pp.parse_wchan("0") is None and pp.parse_wchan("") is None
    run_ns, wait_ns, slices = pp.parse_schedstat(task("main", "schedstat"))
    assert run_ns > 0 and wait_ns >= 0 and slices > 0
    assert pp.parse_schedstat("x") is None


def test_epoll_fdinfo_lists_the_watched_fds():
    (epfd,) = [fd for fd, link in LINKS.items() if link == "anon_inode:[eventpoll]"]
    watched = pp.parse_epoll_fdinfo((ZOO / "fdinfo" / str(epfd)).read_text())
    assert len(watched) == 2 and all(LINKS[fd].startswith("socket:[") for fd in watched)


def test_pollfd_array_and_fd_set_from_process_memory():
    poll = pp.parse_syscall(task("http", "syscall"))
    (fd, events), = pp.parse_pollfds(memory(poll["args"][0]))
    assert events == 1 and LINKS[fd].startswith("socket:[")  # POLLIN on the request's socket
    sel = pp.parse_syscall(task("select", "syscall"))
    nfds, readfds = kw.fd_request("pselect6", sel["args"]).fdsets[0], sel["args"][1]
    assert pp.parse_fd_set(memory(readfds), nfds) == [nfds - 1]  # select(fd + 1, [fd])
    assert pp.parse_pollfds(struct.pack("=ihh", -1, 1, 0) + struct.pack("=ihh", 3, 4, 0)) == [(3, 4)]


def test_socket_tables_of_the_zoo():
    sockets = zoo_sockets()
    tcp = [s for s in sockets.values() if s["proto"] == "tcp"]
    assert {s["remote"] for s in tcp} == {HTTP_PEER} and len(tcp) == 3
    assert {s["name"] for s in sockets.values() if s["proto"] == "unix"} == {None}  # clients are unnamed
    assert pp.parse_proc_net_unix("Num RefCount Protocol Flags Type St Inode Path\n"
                                  "0: 00000002 00000000 00010000 0001 01 1234 /run/a b.sock\n"
                                  "0: 00000002 00000000 00010000 0001 01 99 @abstract\n") \
        == {1234: "/run/a b.sock", 99: "@abstract"}


@pytest.mark.parametrize("link, expected", [
    ("socket:[123]", ("socket", 123)), ("pipe:[9]", ("pipe", 9)), ("anon_inode:[eventfd]", ("anon", "eventfd")),
    ("anon_inode:inotify", ("anon", "inotify")), ("/var/log/x.log (deleted)", ("file", "/var/log/x.log (deleted)")),
])
def test_fd_links(link, expected):
    assert pp.fd_target(link) == expected


# ---------------------------------------------------------------- each recorded thread classified

@pytest.mark.parametrize("role, kind, target", [
    ("main", "cpu", None),
    ("http", "peer", HTTP_PEER),     # poll() on the socket, found through the pollfd array
    ("loop", "peer", HTTP_PEER),     # epoll over the socket and a wake-up socketpair
    ("select", "peer", HTTP_PEER),   # pselect6 with an fd_set
    ("unix", "local", "unix"),       # an unnamed Unix socket, peer not looked up here
    ("nap", "sleep", None),
    ("child", "child", None),
])
def test_recorded_threads_are_classified_by_what_the_kernel_says(role, kind, target):
    wait = replay(role)
    assert wait.parts == ((kind, target),), wait


def test_the_two_deadlocked_threads_wait_on_different_futexes():
    a, b = replay("lock_a"), replay("lock_b")
    assert a.parts[0][0] == b.parts[0][0] == "lock"
    assert a.parts[0][1].startswith("futex 0x") and a.parts[0][1] != b.parts[0][1]


def test_a_broker_port_makes_the_same_wait_idle_on_the_broker():
    port = META["http_port"]
    assert replay("http", broker_ports={port: "kafka"}).parts == (("broker", HTTP_PEER),)


def test_a_unix_socket_whose_peer_is_bound_is_a_peer():
    sockets = zoo_sockets()
    for row in sockets.values():
        if row["proto"] == "unix":
            row["peer_name"] = "/run/postgresql/.s.PGSQL.5432"
    assert replay("unix", sockets=sockets).parts == (("peer", "unix:/run/postgresql/.s.PGSQL.5432"),)


# ---------------------------------------------------------------- classification rules

def _fd(kind, peer=None, label=None, detail=None):
    return {"fd": 3, "kind": kind, "peer": peer, "label": label or kind, "detail": detail}


def test_event_loop_prefers_the_socket_with_a_request_out():
    fds = [_fd("tcp", "10.0.0.1:9092"), _fd("tcp", "10.0.0.2:5432"), _fd("tcp", "10.0.0.3:443"),
           _fd("anon", label="eventfd", detail="eventfd")]
    ports = {9092: "kafka"}
    everything = kw.classify("S", "epoll_wait", (5, 0, 0, 0, 0, 0), None, fds, broker_ports=ports)
    assert set(everything.parts) == {("broker", "10.0.0.1:9092"), ("peer", "10.0.0.2:5432"), ("peer", "10.0.0.3:443")}
    waited = kw.classify("S", "epoll_wait", (5, 0, 0, 0, 0, 0), None, fds, broker_ports=ports,
                         awaiting={"10.0.0.3:443"})
    assert waited.parts == (("peer", "10.0.0.3:443"),)


def test_local_fds_and_sleeps():
    assert kw.classify("S", "read", (4,), None, [_fd("pipe")]).parts == (("local", "pipe"),)
    assert kw.classify("S", "epoll_wait", (4,), None, [_fd("anon", label="eventfd", detail="eventfd"),
                                                      _fd("file", label="/dev/pts/1")]).parts \
        == (("local", "/dev/pts/1"),)  # the wake-up eventfd does not count beside a real fd
    assert kw.classify("S", "read", (4,), None, [_fd("anon", label="timerfd", detail="timerfd")]).parts \
        == (("sleep", None),)
    assert kw.classify("S", "poll", (0, 0, 100), None, []).parts == (("sleep", None),)  # poll(NULL, 0, t)
    assert kw.classify("S", "accept4", (3,), None, [_fd("tcp", label="listen 0.0.0.0:8080")]).parts \
        == (("local", "listen 0.0.0.0:8080"),)
    assert kw.classify("S", "read", (4,), None, [_fd("socket", label="socket")]).parts == (("unknown", "socket"),)


def test_states_and_other_calls():
    assert kw.classify("D", "read", (3,), "folio_wait_bit_common", None).parts == (("disk", "folio_wait_bit_common"),)
    # The v1 cgroup freezer puts its tasks in D inside __refrigerator: frozen, not a disk wait.
    assert kw.classify("D", "clock_nanosleep", (1,), "__refrigerator", None).parts == (("other", "frozen"),)
    assert kw.classify("R", "futex", (1, 0), None, None).parts == (("cpu", None),)
    assert kw.classify("S", "running", (), None, None).parts == (("cpu", None),)
    assert kw.classify(None, None, (), None, None).parts == (("unreadable", None),)
    assert kw.classify("T", None, (), None, None).parts == (("other", "stopped"),)
    assert kw.classify("S", "fcntl", (3, kw.F_SETLKW), None, None).parts == (("lock", "file lock"),)
    assert kw.classify("S", "fcntl", (3, 1), None, None).parts == (("other", "fcntl"),)
    assert kw.classify("S", "io_getevents", (1,), None, None).parts == (("other", "io_getevents"),)
    assert kw.classify("S", "poll", (0x7f00, 1, 0), None, None, fd_problem="process memory unreadable").parts \
        == (("unreadable", None),)


@pytest.mark.parametrize("wchan, readable, kind", [
    ("futex_wait_queue", True, "lock"), ("hrtimer_nanosleep", True, "sleep"), ("do_wait", True, "child"),
    ("ep_poll", True, "unknown"), ("ep_poll", False, "unreadable"), (None, True, "unknown"),
])
def test_without_a_known_system_call_the_wchan_still_tells(wchan, readable, kind):
    assert kw.needs_wchan("S", None)
    assert kw.classify("S", None, (), wchan, None, syscall_readable=readable).parts[0][0] == kind
    assert kw.classify("S", "restart_syscall", (), wchan, None).parts[0][0] == (
        "unknown" if kind == "unreadable" else kind)


def test_aarch64_numbers():
    assert [kw.syscall_name("aarch64", n) for n in (98, 73, 22, 63, 207, 115, 260)] \
        == ["futex", "ppoll", "epoll_pwait", "read", "recvfrom", "clock_nanosleep", "wait4"]
    assert kw.syscall_name("riscv64", 98) is None and kw.syscall_name("x86_64", 99999) is None


def test_fd_requests_read_int_arguments_as_c_ints():
    assert kw.fd_request("recvfrom", (7, 0, 0, 0, 0, 0)) == kw.FdRequest(fds=(7,))
    assert kw.fd_request("ppoll", (0x1000, 100000, 0, 0, 0, 0)).pollfd == (0x1000, kw.MAX_POLL_FDS)
    assert kw.fd_request("epoll_pwait", (0xFFFFFFFF00000005, 0, 0, 0, 0, 0)).epoll == 5
    assert kw.fd_request("select", (1 << 40 | 3, 0x10, 0, 0, 0, 0)).fdsets == (3, (0x10,))
    assert kw.fd_request("futex", (1, 2, 3, 4, 5, 6)) is None
    assert kw.fd_set_bytes(7) == 8 and kw.fd_set_bytes(65) == 16


def test_protocol_is_only_a_port_guess():
    assert kw.protocol_guess("10.0.0.1:5432") == "postgresql"
    assert kw.protocol_guess("10.0.0.1:38243") is None
    assert kw.protocol_guess("unix:/run/x.sock") is None


# ---------------------------------------------------------------- sock_diag on recorded answers

def _hex(name: str) -> bytes:
    return bytes.fromhex((FIXTURES / "sock_diag" / name).read_text().strip())


SOCK_META = json.loads((FIXTURES / "sock_diag" / "meta.json").read_text())


def test_tcp_info_of_a_connection_that_sent_1234_and_received_5678_bytes():
    (record,), done = sockdiag.parse_sock_diag(_hex("tcp_info.hex"))
    tcp = SOCK_META["tcp"]
    assert not done  # an exact lookup answers with one message, no NLMSG_DONE
    assert record["local"] == "{}:{}".format(*tcp["local"]) and record["remote"] == "{}:{}".format(*tcp["remote"])
    assert record["inode"] == tcp["inode"] and record["state"] == "ESTABLISHED"
    info = record["tcp_info"]
    assert info["state"] == "ESTABLISHED"
    assert info["bytes_acked"] == tcp["sent"] + kw.SYN_BYTES and info["bytes_received"] == tcp["received"]
    assert info["bytes_sent"] == tcp["sent"] and info["data_segs_out"] >= 1
    # Recorded some 300 ms after the answer came in; the request went out just before it.
    assert info["last_data_recv_ms"] >= 250 and info["last_data_sent_ms"] >= info["last_data_recv_ms"]
    assert not kw.awaiting_answer(info)
    assert 0 < info["rtt_us"] < 1_000_000 and info["unacked"] == 0


def test_tcp_info_of_an_older_kernel_is_cut_short_not_guessed():
    (record,), _ = sockdiag.parse_sock_diag(_hex("tcp_info.hex"))
    info = sockdiag.parse_tcp_info(struct.pack("=B7x", 1) + b"\0" * 96)  # a 104-byte struct: no byte counters
    assert info["state"] == "ESTABLISHED" and "rtt_us" in info and "bytes_acked" not in info


def test_exact_lookup_request_names_the_connection():
    family, sid = sockdiag.sockid(("127.0.0.1", 5000), ("10.0.0.9", 443))
    assert family == socket.AF_INET
    assert sid[:4] == struct.pack("!HH", 5000, 443) and sid[4:8] == bytes([127, 0, 0, 1])
    assert sid[20:24] == bytes([10, 0, 0, 9]) and sid[-8:] == sockdiag.NO_COOKIE
    request = sockdiag.sock_diag_request(family, sockdiag.ALL_STATES, 7, ext=2, sockid_bytes=sid, dump=False)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert length == len(request) and kind == sockdiag.SOCK_DIAG_BY_FAMILY and flags == sockdiag.NLM_F_REQUEST
    assert seq == 7 and request[18] == 2  # ext: INET_DIAG_INFO
    assert sockdiag.sockid(("::1", 1), ("::1", 2))[0] == socket.AF_INET6


def test_unix_diag_names_the_peer_of_a_client_socket():
    unix = SOCK_META["unix"]
    (client,) = sockdiag.parse_unix_diag(_hex("unix_client.hex"))
    assert client == {"inode": unix["client_inode"], "name": None, "peer": unix["peer_inode"]}
    (peer,) = sockdiag.parse_unix_diag(_hex("unix_peer.hex"))
    assert peer["name"] == unix["path"]  # the accepted socket carries the listener's path
    (pair,) = sockdiag.parse_unix_diag(_hex("unix_socketpair.hex"))
    assert pair["name"] is None and pair["peer"] == unix["socketpair_inodes"][1]


# ---------------------------------------------------------------- TCP info over a window

def _info(sent_ago, recv_ago, **kw_):
    return {"last_data_sent_ms": sent_ago, "last_data_recv_ms": recv_ago, "data_segs_out": 1, "rtt_us": 50, **kw_}


def test_a_request_answered_between_samples_is_timed_from_the_kernels_stamps():
    # Sent at t=10.000 s; answered at 10.300 s; samples every 100 ms.
    series = [(10.05, _info(50, 1000)), (10.15, _info(150, 1100)), (10.25, _info(250, 1200)),
              (10.35, _info(350, 50))]
    assert kw.connection_requests(series) == [{"wait_ms": 300.0, "exact": True}]


def test_back_to_back_requests_each_timed_and_pipelining_left_as_a_lower_bound():
    # Request 1 sent at 0 ms, answered at 300; request 2 sent at 301, seen out at 350.
    series = [(0.1, _info(100, 5000)), (0.35, _info(49, 50))]
    assert kw.connection_requests(series) == [{"wait_ms": 300.0, "exact": True}, {"wait_ms": 49.0, "exact": False}]
    # Request 1 at 0; at 0.4 s the last send (250) is after the last receive (300): a second
    # request went out before any answer came back -- which answer is whose is unknown.
    pipelined = [(0.1, _info(100, 5000)), (0.4, _info(150, 5300))]
    assert [r["exact"] for r in kw.connection_requests(pipelined)] == [False, False]


def test_one_request_per_connection_closed_before_the_next_sample_gives_a_lower_bound():
    # On a fresh connection the "last receive" is the handshake, in the same ms as the request.
    # The server acknowledged the request (its ACK is more recent than the handshake).
    series = [(1.0, _info(80, 80, last_ack_recv_ms=40)), (1.1, _info(180, 180, last_ack_recv_ms=140)),
              (1.2, _info(280, 280, last_ack_recv_ms=240))]
    assert kw.connection_requests(series) == [{"wait_ms": 280.0, "exact": False}]
    assert kw.awaiting_answer(_info(80, 80, unacked=1))
    assert kw.awaiting_answer(_info(80, 80, last_ack_recv_ms=80, bytes_received=0))  # acked, never answered
    assert not kw.awaiting_answer(_info(80, 80, unacked=1, data_segs_out=0))
    # Sent and answered within the same millisecond: the answer carried the last ACK.
    assert not kw.awaiting_answer(_info(80, 80, last_ack_recv_ms=80, unacked=0))


def test_connection_summary_bytes_and_share():
    series = [(1.0, _info(10, 900, bytes_acked=101, bytes_received=50, total_retrans=0, unacked=1)),
              (1.1, _info(110, 1000, bytes_acked=101, bytes_received=50, total_retrans=2, unacked=1)),
              (1.2, _info(210, 5, bytes_acked=201, bytes_received=4050, total_retrans=2, unacked=0))]
    doc = kw.summarise_connection(series)
    assert doc["awaiting_answer_share"] == round(2 / 3, 3) and doc["bytes_out"] == 100 and doc["bytes_in"] == 4000
    assert doc["retransmits"] == 2 and doc["unacked_max"] == 1 and doc["rtt_ms"] == 0.05
    assert doc["request_waits"] == {"requests": 1, "exact": 1, "median_ms": 205.0, "max_ms": 205.0}
    fresh = kw.summarise_connection(series, opened_in_window=True)
    assert fresh["bytes_out"] == 200 and fresh["bytes_in"] == 4050


# ---------------------------------------------------------------- one process over the window

def _sample(t, state, call, args, wait):
    return {"t": t, "state": state, "call": call, "args": args, "wchan": None, "wait": wait}


def test_process_attribution_shares_threads_and_peers():
    http = kw.Wait((("peer", "10.0.0.3:8080"),), "poll")
    lock = kw.Wait((("lock", "futex 0x10"),), "futex")
    cpu = kw.Wait((("cpu", None),))
    threads = {
        11: {"comm": "worker", "samples": [_sample(i, "S", "poll", (1, 1, 0), http) for i in range(9)]
             + [_sample(9, "R", None, (), cpu)], "cpu_ticks": (100, 103), "sched": ((1, 2, 5), (9, 4, 15))},
        12: {"comm": "stuck", "samples": [_sample(i, "S", "futex", (0x10, 0x189), lock) for i in range(10)],
             "cpu_ticks": (7, 7), "sched": ((5, 5, 3), (5, 5, 3))},
    }
    conns = {1: {"local": "10.0.0.1:4000", "remote": "10.0.0.3:8080",
                 "series": [(1.0, _info(10, 900)), (1.1, _info(110, 1000))]},
             2: {"local": "10.0.0.1:4001", "remote": "10.0.0.9:9092", "series": [(1.0, _info(500, 10))]}}
    doc = kw.summarise_process(threads, conns, broker_ports={9092: "kafka"}, clk_tck=100)
    assert doc["thread_samples"] == 20
    assert doc["shares"]["peer"] == 0.45 and doc["shares"]["lock"] == 0.5 and doc["shares"]["cpu"] == 0.05
    top = doc["attribution"][0]
    assert top == {"kind": "lock", "target": "futex 0x10", "share": 0.5, "threads": 1, "max_thread_share": 1.0}
    http_entry = doc["attribution"][1]
    assert http_entry["target"] == "10.0.0.3:8080" and http_entry["max_thread_share"] == 0.9
    assert http_entry["protocol_guess"] == "http"
    worker = next(t for t in doc["threads"] if t["tid"] == 11)
    assert worker["dominant"] == {"kind": "peer", "target": "10.0.0.3:8080", "share": 0.9}
    assert worker["cpu_s"] == 0.03 and worker["never_woke"] is False and worker["runqueue_wait_s"] == 0.0
    assert doc["lock_waits_never_woke"] == [{"tid": 12, "name": "stuck", "wait": "futex 0x10"}]
    peers = {p["peer"]: p for p in doc["peers"]}
    assert peers["10.0.0.3:8080"]["wait_share"] == 0.45 and peers["10.0.0.3:8080"]["tcp"]["awaiting_answer_share"] == 1.0
    assert peers["10.0.0.9:9092"]["kind"] == "broker" and peers["10.0.0.9:9092"]["protocol_guess"] == "kafka"
    assert peers["10.0.0.9:9092"]["wait_share"] == 0.0


def test_a_thread_that_was_woken_is_not_never_woke_even_with_the_same_wait():
    lock = kw.Wait((("lock", "futex 0x10"),), "futex")
    samples = [_sample(i, "S", "futex", (0x10, 0x189), lock) for i in range(3)]
    assert kw.thread_never_woke({"samples": samples, "sched": ((5, 5, 3), (5, 5, 3))})
    assert not kw.thread_never_woke({"samples": samples, "sched": ((5, 5, 3), (6, 5, 4))})
    assert kw.thread_never_woke({"samples": samples, "sched": None, "cpu_ticks": (4, 4)})
    assert not kw.thread_never_woke({"samples": samples[:1], "sched": ((5, 5, 3), (5, 5, 3))})
    moved = samples[:2] + [_sample(3, "S", "futex", (0x20, 0x189), lock)]
    assert not kw.thread_never_woke({"samples": moved, "sched": ((5, 5, 3), (5, 5, 3))})


def test_no_samples_is_no_answer():
    doc = kw.summarise_process({}, {})
    assert doc["shares"] is None and doc["attribution"] == [] and doc["thread_samples"] == 0


def test_a_connection_the_process_accepted_is_its_clients_not_a_dependency():
    """A server thread waiting on a connection its own listener accepted waits for a client's
    request (a broker's network thread, a consumer's health endpoint): never a dependency."""
    sockets = {
        1: {"proto": "tcp", "inode": 1, "local": "127.0.0.1:9092", "remote": "0.0.0.0:0", "state": "LISTEN"},
        2: {"proto": "tcp", "inode": 2, "local": "127.0.0.1:9092", "remote": "127.0.0.1:38400",
            "state": "ESTABLISHED"},
        3: {"proto": "tcp", "inode": 3, "local": "127.0.0.1:51000", "remote": "10.0.0.5:5432",
            "state": "ESTABLISHED"},
    }
    listening = kw.listening_ports(sockets)
    assert listening == {9092}
    inbound = kw.resolve_fd(7, "socket:[2]", sockets, listening)
    outbound = kw.resolve_fd(8, "socket:[3]", sockets, listening)
    assert inbound["kind"] == "inbound" and inbound["peer"] is None and inbound["label"] == "clients on :9092"
    assert outbound["kind"] == "tcp" and outbound["peer"] == "10.0.0.5:5432"
    wait = kw._fd_wait("epoll_wait", [inbound], {}, None)
    assert wait.parts == (("local", "clients on :9092"),)


def test_a_connection_of_the_process_to_itself_is_its_wake_up_channel_not_a_dependency():
    """pika's pollers build their wake-up pair over loopback TCP: both ends belong to the
    consumer.  Its idle main thread polls the broker's socket and that pair; it waits for
    the broker, not for a peer at 127.0.0.1:<ephemeral> (seen as "slow-dependency" on an
    idle RabbitMQ consumer before this)."""
    sockets = {
        1: {"proto": "tcp", "inode": 1, "local": "127.0.0.1:55813", "remote": "127.0.0.1:60928",
            "state": "ESTABLISHED"},
        2: {"proto": "tcp", "inode": 2, "local": "127.0.0.1:60928", "remote": "127.0.0.1:55813",
            "state": "ESTABLISHED"},
        3: {"proto": "tcp", "inode": 3, "local": "127.0.0.1:41000", "remote": "127.0.0.1:5672",
            "state": "ESTABLISHED"},
        4: {"proto": "tcp", "inode": 4, "local": "127.0.0.1:41002", "remote": "127.0.0.1:8080",
            "state": "ESTABLISHED"},  # a sidecar on this host: another process, a real dependency
    }
    own = kw.own_ends(sockets)
    pair = kw.resolve_fd(5, "socket:[2]", sockets, frozenset(), own)
    broker = kw.resolve_fd(6, "socket:[3]", sockets, frozenset(), own)
    sidecar = kw.resolve_fd(7, "socket:[4]", sockets, frozenset(), own)
    assert pair["kind"] == "selfpair" and pair["peer"] is None
    assert sidecar["kind"] == "tcp" and sidecar["peer"] == "127.0.0.1:8080"
    assert kw._fd_wait("poll", [broker, pair], {5672: "rabbitmq"}, None).parts == (("broker", "127.0.0.1:5672"),)
    assert kw._fd_wait("poll", [pair], {}, None).parts == (("local", kw.SELF_PAIR),)
    assert kw._fd_wait("poll", [sidecar, pair], {}, None).parts == (("peer", "127.0.0.1:8080"),)
    late = kw.resolve_late(kw.Wait((("unknown", "socket:[2]"),), "poll"), sockets, frozenset(), {}, own)
    assert late.parts == (("local", kw.SELF_PAIR),)


def test_a_socket_too_young_for_the_tables_is_resolved_from_a_later_read():
    """A per-request connection is often younger than the last table read: the sample keeps the
    inode, and a later read that saw the connection names its peer."""
    unresolved = kw.resolve_fd(5, "socket:[77]", {}, frozenset())
    assert unresolved["kind"] == "socket" and unresolved["label"] == "socket:[77]"
    wait = kw._fd_wait("poll", [unresolved], {}, None)
    assert wait.parts == (("unknown", "socket:[77]"),)
    later = {77: {"proto": "tcp", "inode": 77, "local": "127.0.0.1:50000", "remote": "10.0.0.9:8080",
                  "state": "ESTABLISHED"},
             78: {"proto": "tcp", "inode": 78, "local": "127.0.0.1:50001", "remote": "127.0.0.1:9092",
                  "state": "ESTABLISHED"}}
    assert kw.resolve_late(wait, later, frozenset(), {}).parts == (("peer", "10.0.0.9:8080"),)
    broker_wait = kw.Wait((("unknown", "socket:[78]"),), "poll")
    assert kw.resolve_late(broker_wait, later, frozenset(), {9092: "kafka"}).parts == (("broker", "127.0.0.1:9092"),)
    # Never seen at all: stays unknown.
    assert kw.resolve_late(kw.Wait((("unknown", "socket:[99]"),), "poll"), later, frozenset(), {}).parts == \
        (("unknown", "socket:[99]"),)


@pytest.mark.parametrize("previous, args, wchan, expected", [
    ("poll", (0x7FFD1000, 1, 120000), "poll_schedule_timeout.constprop.0", "poll"),
    ("ppoll", (0x7FFD1000, 2, 0, 0), "do_sys_poll", "ppoll"),
    ("select", (8, 0x1000, 0, 0, 0x2000), "do_select", "select"),
    ("futex", (0x55D0C0DE, 137, 0), "futex_wait_queue", "futex"),
    # The thread moved on since: another kernel function, another call.
    ("poll", (0x7FFD1000, 1, 120000), "hrtimer_nanosleep", None),
    ("futex", (0x55D0C0DE, 137, 0), "poll_schedule_timeout.constprop.0", None),
    ("read", (5, 0x1000, 4096), "poll_schedule_timeout.constprop.0", None),
    (None, (), "poll_schedule_timeout.constprop.0", None),
    ("poll", (0x7FFD1000, 1, 120000), None, None),
])
def test_a_resumed_wait_is_the_call_of_the_sample_before(previous, args, wchan, expected):
    carried = kw.resumed_call(previous, args, wchan)
    if expected is None:
        assert carried is None
    else:
        assert carried == (expected, args)  # the same arguments: the same pollfd array, the same futex word


def test_a_lock_wait_restarted_by_our_own_dumps_still_never_woke():
    """py-spy's blocking dump stops every thread with ptrace: a futex wait is interrupted and
    restarted, a timeslice or two of microseconds.  With three dumps in the window, a worker
    that waited on the same futex all along still never woke; one that ran (milliseconds of
    CPU, or more timeslices than the dumps explain) did."""
    wait = kw.Wait((("lock", "futex 0x10"),), "futex")
    samples = [{"t": i / 10, "state": "S", "call": "futex", "args": (16, 128, 0), "wchan": "futex_wait_queue",
                "wait": wait} for i in range(20)]

    def track(runs: int, ran_ns: int) -> dict:
        return {"samples": samples, "sched": ((5_000_000, 0, 40), (5_000_000 + ran_ns, 0, 40 + runs))}

    assert kw.thread_never_woke(track(0, 0))
    assert not kw.thread_never_woke(track(3, 30_000))                     # no dump: it ran
    assert kw.thread_never_woke(track(3, 30_000), interruptions=3)        # the dumps' restarts
    assert not kw.thread_never_woke(track(7, 30_000), interruptions=3)    # more wakes than they explain
    assert not kw.thread_never_woke(track(3, 8_000_000), interruptions=3)  # 8 ms of CPU: it worked
