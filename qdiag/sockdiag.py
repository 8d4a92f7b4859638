"""The kernel's socket diagnostics over netlink (NETLINK_SOCK_DIAG, what `ss` uses).

Two things only this interface gives: a TCP listener's backlog limit, and the
per-connection TCP info (`ss -ti`: round-trip time, time since the last send
and receive, bytes acked and received, retransmits).  Also the peer of a Unix
socket, which /proc/net/unix does not show.

Message builders and parsers are pure (bytes in, dicts out) and tested on
recorded datagrams; the three query functions do the socket I/O.  Everything
here sees only qdiag's own network namespace.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Iterator

from qdiag.endpoints import format_endpoint, ip_from_bytes, port_of

# The kernel's TCP state numbers (include/net/tcp_states.h), as /proc/net/tcp and sock_diag report them.
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
    7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}
TCP_LISTEN = 10
ALL_STATES = 0xFFFFFFFF

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2  # attribute carrying struct tcp_info
UNIX_DIAG_NAME, UNIX_DIAG_PEER = 0, 2
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER = 0x1, 0x4
NO_COOKIE = b"\xff" * 8  # INET_DIAG_NOCOOKIE: look the socket up by address alone

_NLMSG_HDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_INET_DIAG_REQ = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states; then a 48-byte sockid
_SOCKID_LEN = 48
_DIAG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_INET_DIAG_MSG_LEN = 4 + _SOCKID_LEN + _DIAG_TAIL.size
_UNIX_DIAG_REQ = struct.Struct("=BBxxIII8s")  # family, protocol, pad, states, inode, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBxI8s")  # family, type, state, pad, inode, cookie
RECV_BYTES = 65536

# struct tcp_info (include/uapi/linux/tcp.h): (name, offset, format).  Older kernels
# send a shorter struct; fields past its end are left out, never guessed.
_TCP_INFO_FIELDS = (
    ("state", 0, "B"), ("retransmits", 2, "B"), ("probes", 3, "B"), ("backoff", 4, "B"),
    ("rto_us", 8, "I"), ("ato_us", 12, "I"), ("snd_mss", 16, "I"), ("rcv_mss", 20, "I"),
    ("unacked", 24, "I"), ("sacked", 28, "I"), ("lost", 32, "I"), ("retrans", 36, "I"),
    ("last_data_sent_ms", 44, "I"), ("last_data_recv_ms", 52, "I"), ("last_ack_recv_ms", 56, "I"),
    ("pmtu", 60, "I"), ("rtt_us", 68, "I"), ("rttvar_us", 72, "I"), ("snd_cwnd", 80, "I"),
    ("total_retrans", 100, "I"), ("bytes_acked", 120, "Q"), ("bytes_received", 128, "Q"),
    ("segs_out", 136, "I"), ("segs_in", 140, "I"), ("notsent_bytes", 144, "I"), ("min_rtt_us", 148, "I"),
    ("data_segs_in", 152, "I"), ("data_segs_out", 156, "I"), ("bytes_sent", 200, "Q"),
    ("bytes_retrans", 208, "Q"),
)


# ---------------------------------------------------------------- messages (pure)

def _nlmsg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body


def sockid(local: tuple[str, int] | None = None, remote: tuple[str, int] | None = None) -> tuple[int, bytes]:
    """(family, struct inet_diag_sockid) naming one connection by its addresses;
    no addresses -> a zero sockid for dumps.  IPv4-mapped peers are looked up
    as IPv4 (that is how the kernel hashes them)."""
    if local is None or remote is None:
        return socket.AF_INET, b"\0" * _SOCKID_LEN
    family = socket.AF_INET6 if ":" in local[0] or ":" in remote[0] else socket.AF_INET
    src = socket.inet_pton(family, local[0]).ljust(16, b"\0")
    dst = socket.inet_pton(family, remote[0]).ljust(16, b"\0")
    return family, struct.pack("!HH", local[1], remote[1]) + src + dst + struct.pack("=I", 0) + NO_COOKIE


def sock_diag_request(family: int, states: int, seq: int = 1, *, ext: int = 0, sockid_bytes: bytes | None = None,
                      dump: bool = True) -> bytes:
    """An inet_diag_req_v2 for TCP: a dump of `family`'s sockets in `states` (a
    bit mask, 1 << state), or with dump=False the one socket `sockid_bytes` names.
    ext is a mask of the INET_DIAG_* attributes wanted (1 << (attr - 1))."""
    body = _INET_DIAG_REQ.pack(family, socket.IPPROTO_TCP, ext, states) + (sockid_bytes or b"\0" * _SOCKID_LEN)
    return _nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | (NLM_F_DUMP if dump else 0), seq, body)


def unix_diag_request(inode: int, seq: int = 1, show: int = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER) -> bytes:
    """A unix_diag_req for the one Unix socket with this inode."""
    body = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, ALL_STATES, inode, show, NO_COOKIE)
    return _nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, body)


def _attributes(data: bytes, start: int, end: int) -> dict[int, bytes]:
    found = {}
    while start + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, start)
        if length < _RTATTR.size:
            break
        found[kind] = data[start + _RTATTR.size: min(start + length, end)]
        start += (length + 3) & ~3
    return found


_TCP_INFO_STRUCTS = [(name, offset, struct.Struct("=" + fmt)) for name, offset, fmt in _TCP_INFO_FIELDS]


def parse_tcp_info(payload: bytes) -> dict:
    """struct tcp_info -> its fields (times in ms or µs as the names say, counters raw)."""
    info = {}
    size = len(payload)
    for name, offset, field in _TCP_INFO_STRUCTS:
        if offset + field.size <= size:
            info[name] = field.unpack_from(payload, offset)[0]
    if "state" in info:
        info["state"] = TCP_STATES.get(info["state"], str(info["state"]))
    return info


def _messages(data: bytes):
    """(kind, body start, message end) of each netlink message in one datagram; raises on NLMSG_ERROR."""
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size:
            return
        body = offset + _NLMSG_HDR.size
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", data, body)[0]
            raise OSError(errno, f"sock_diag: {os.strerror(errno)}")
        yield kind, body, min(offset + length, len(data))
        offset += (length + 3) & ~3


def parse_sock_diag(data: bytes) -> tuple[list[dict], bool]:
    """One netlink datagram of inet_diag_msg records -> (records, done).

    For a LISTEN socket the kernel reports rqueue = current accept-queue length
    and wqueue = the backlog limit (sk_max_ack_backlog, after the somaxconn cap).
    A record carries "tcp_info" when the request asked for INET_DIAG_INFO.
    """
    records = []
    for kind, body, end in _messages(data):
        if kind == NLMSG_DONE:
            return records, True
        if kind != SOCK_DIAG_BY_FAMILY or body + _INET_DIAG_MSG_LEN > end:
            continue
        family, state = data[body], data[body + 1]
        sport, dport = struct.unpack_from("!HH", data, body + 4)
        addr_len = 4 if family == socket.AF_INET else 16
        src = ip_from_bytes(data[body + 8: body + 8 + addr_len])
        dst = ip_from_bytes(data[body + 24: body + 24 + addr_len])
        _exp, rqueue, wqueue, uid, inode = _DIAG_TAIL.unpack_from(data, body + 4 + _SOCKID_LEN)
        record = {"family": "ipv4" if family == socket.AF_INET else "ipv6",
                  "state": TCP_STATES.get(state, str(state)), "local": format_endpoint(src, sport),
                  "remote": format_endpoint(dst, dport),
                  "rqueue": rqueue, "wqueue": wqueue, "uid": uid, "inode": inode}
        attrs = _attributes(data, body + _INET_DIAG_MSG_LEN, end)
        if INET_DIAG_INFO in attrs:
            record["tcp_info"] = parse_tcp_info(attrs[INET_DIAG_INFO])
        records.append(record)
    return records, False


def _unix_name(raw: bytes) -> str:
    if raw[:1] == b"\0":  # abstract namespace: ss writes these with a leading @
        return "@" + raw[1:].decode("utf-8", "replace")
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_unix_diag(data: bytes) -> list[dict]:
    """unix_diag_msg records -> [{"inode", "name" (None if unbound), "peer" (inode or None)}]."""
    records = []
    for kind, body, end in _messages(data):
        if kind != SOCK_DIAG_BY_FAMILY or body + _UNIX_DIAG_MSG.size > end:
            continue
        _family, _type, _state, inode, _cookie = _UNIX_DIAG_MSG.unpack_from(data, body)
        attrs = _attributes(data, body + _UNIX_DIAG_MSG.size, end)
        name = _unix_name(attrs[UNIX_DIAG_NAME]) if attrs.get(UNIX_DIAG_NAME) else None
        peer = struct.unpack_from("=I", attrs[UNIX_DIAG_PEER])[0] if len(attrs.get(UNIX_DIAG_PEER, b"")) >= 4 else None
        records.append({"inode": inode, "name": name, "peer": peer or None})
    return records


# ---------------------------------------------------------------- queries (I/O)

def _netlink(timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    sock.settimeout(timeout)
    return sock


def _dump(states: int, timeout: float) -> Iterator[dict]:
    """Every TCP socket of qdiag's network namespace in `states` (a bit mask, 1 << state),
    IPv4 then IPv6, from sock_diag dumps.  Raises OSError (AttributeError: no AF_NETLINK)."""
    with _netlink(timeout) as sock:
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            sock.sendto(sock_diag_request(family, states, seq), (0, 0))
            done = False
            while not done:
                records, done = parse_sock_diag(sock.recv(RECV_BYTES))
                yield from records


def listen_backlogs(timeout: float) -> dict[int, int] | None:
    """{socket inode: backlog limit} for every TCP listener in qdiag's network
    namespace, or None when sock_diag is unavailable."""
    try:
        return {rec["inode"]: rec["wqueue"] for rec in _dump(1 << TCP_LISTEN, timeout)}
    except (OSError, AttributeError):  # AttributeError: no AF_NETLINK (not Linux)
        return None


# Every TCP state but TIME_WAIT: sockets in TIME_WAIT belong to no process (inode 0), and
# a client opening a connection per request leaves tens of thousands of them, which
# /proc/net/tcp lists and parses line by line.
LIVE_STATES = ALL_STATES & ~(1 << 6)


def tcp_sockets(inodes: set[int], timeout: float) -> list[dict] | None:
    """The TCP sockets of qdiag's network namespace whose inode is in `inodes`, as rows
    like /proc/net/tcp's ({"local", "local_port", "remote", "state", "inode", ...}),
    from one sock_diag dump per address family that leaves TIME_WAIT out in the
    kernel; None when sock_diag is unavailable."""
    try:
        return [{"local": rec["local"], "local_port": port_of(rec["local"]), "remote": rec["remote"],
                 "state": rec["state"], "tx_queue": rec["wqueue"], "rx_queue": rec["rqueue"], "uid": rec["uid"],
                 "inode": rec["inode"]}
                for rec in _dump(LIVE_STATES, timeout) if rec["inode"] in inodes]
    except (OSError, AttributeError):  # AttributeError: no AF_NETLINK (not Linux)
        return None


class TcpInfoReader:
    """TCP info of given connections, looked up one by one by their addresses
    (a dump of every socket on a busy host would cost far more than the few
    connections a consumer holds).  Keeps one netlink socket open; close() it."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.seq = 0

    def read(self, local: tuple[str, int], remote: tuple[str, int], inode: int | None = None) -> dict | None:
        """tcp_info of the connection local->remote (and with this inode, when given);
        None when it no longer exists.  Raises OSError when sock_diag itself fails."""
        if self.sock is None:
            self.sock = _netlink(self.timeout)
        self.seq += 1
        family, sid = sockid(local, remote)
        self.sock.sendto(sock_diag_request(family, ALL_STATES, self.seq, ext=1 << (INET_DIAG_INFO - 1),
                                           sockid_bytes=sid, dump=False), (0, 0))
        try:
            records, _ = parse_sock_diag(self.sock.recv(RECV_BYTES))
        except FileNotFoundError:  # ENOENT: the connection is gone
            return None
        except TimeoutError:  # a late answer would be read as the next one's: start afresh
            self.close()
            return None
        for rec in records:
            if "tcp_info" in rec and (inode is None or rec["inode"] == inode):
                return rec["tcp_info"]
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def unix_peer_names(inodes: list[int], timeout: float) -> dict[int, str | None]:
    """{Unix socket inode: the name its peer is bound to, or None}.  A client's
    socket is unnamed; its peer (the server's accepted socket) carries the
    listener's path.  Sockets that are gone or unknown are left out."""
    found: dict[int, str | None] = {}
    try:
        with _netlink(timeout) as sock:
            for seq, inode in enumerate(inodes, 1):
                own = _unix_query(sock, inode, seq * 2)
                if own is None:
                    continue
                peer = _unix_query(sock, own["peer"], seq * 2 + 1) if own["peer"] else None
                found[inode] = peer["name"] if peer else None
    except (OSError, AttributeError):
        return found
    return found


def _unix_query(sock: socket.socket, inode: int, seq: int) -> dict | None:
    sock.sendto(unix_diag_request(inode, seq), (0, 0))
    try:
        records = parse_unix_diag(sock.recv(RECV_BYTES))
    except FileNotFoundError:
        return None
    return next((r for r in records if r["inode"] == inode), None)
