"""Pure parsers of /proc files: text or bytes in, plain data out.

Used by the process probe (limits, context switches, cgroup membership, TCP
tables) and the kernel wait sampler (per-thread stat, syscall, schedstat,
fdinfo of epoll fds, pollfd arrays and fd_sets read from process memory,
Unix socket table).  Tested on recorded fixtures; no file is opened here.
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Any

from qdiag.endpoints import format_endpoint, ip_from_bytes
from qdiag.sockdiag import TCP_STATES

# ---------------------------------------------------------------- /proc/net/{tcp,tcp6,udp,udp6,unix}


def decode_proc_address(text: str, byteorder: str = sys.byteorder) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080).

    The kernel prints each 32-bit word of the address with %08X from its
    in-memory (network order) bytes read as a native integer, so on a
    little-endian host every 4-byte group reads backwards.  The port is a plain
    host-order number.
    """
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    if byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ip_from_bytes(raw), int(port_hex, 16)


def parse_proc_net_tcp(text: str, inodes: set[int] | None = None, byteorder: str = sys.byteorder,
                       clock_ticks: int | None = None) -> list[dict]:
    """Rows of /proc/net/tcp or /proc/net/tcp6 (only those whose socket inode is
    in `inodes`, when given).  /proc/net/udp{,6} has the same layout (its state
    1 is a connected socket, 7 an unconnected one).  With `clock_ticks` (USER_HZ),
    rows whose socket has a timer running also say how long it has left
    ("timer_left_s"; for TIME_WAIT, the rest of its 60 s).

    For a LISTEN socket the kernel puts the current accept-queue length
    (sk_ack_backlog) in rx_queue; its tx_queue is a send-queue figure that is 0
    for listeners, NOT the backlog limit (only sock_diag, i.e. `ss` Send-Q,
    exposes sk_max_ack_backlog).  Connections still waiting in an accept queue
    have no file yet, so they show inode 0.
    """
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            inode = int(fields[9])
            if inodes is not None and inode not in inodes:
                continue
            local_ip, local_port = decode_proc_address(fields[1], byteorder)
            remote_ip, remote_port = decode_proc_address(fields[2], byteorder)
            state = int(fields[3], 16)
            tx_queue, rx_queue = (int(v, 16) for v in fields[4].split(":"))
            uid = int(fields[7])
            timer, when = (int(v, 16) for v in fields[5].split(":"))
        except ValueError:
            continue
        row = {
            "local": format_endpoint(local_ip, local_port), "local_port": local_port,
            "remote": format_endpoint(remote_ip, remote_port),
            "state": TCP_STATES.get(state, str(state)),
            "tx_queue": tx_queue, "rx_queue": rx_queue, "uid": uid, "inode": inode,
        }
        if clock_ticks and timer:
            row["timer_left_s"] = when / clock_ticks
        rows.append(row)
    return rows


def parse_proc_net_unix(text: str) -> dict[int, str | None]:
    """/proc/net/unix -> {inode: the path the socket is bound to, or None}.
    Abstract names (a leading NUL) are shown by the kernel with a leading @."""
    found: dict[int, str | None] = {}
    for line in text.splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) < 7 or not fields[6].isdigit():
            continue
        found[int(fields[6])] = fields[7].strip() if len(fields) > 7 and fields[7].strip() else None
    return found


# ---------------------------------------------------------------- one process


def parse_limits(text: str) -> dict[str, tuple[int | None, int | None]]:
    """/proc/<pid>/limits -> {"Max open files": (soft, hard)}; "unlimited" is None."""
    limits = {}
    for line in text.splitlines()[1:]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) < 3:
            continue
        values = []
        for raw in parts[1:3]:
            values.append(None if raw == "unlimited" else int(raw) if raw.isdigit() else None)
        limits[parts[0]] = (values[0], values[1])
    return limits


def parse_ctx_switches(status_text: str) -> tuple[int, int] | None:
    """(voluntary, involuntary) context switches from a /proc/.../status text."""
    found = {}
    for line in status_text.splitlines():
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
            key, _, value = line.partition(":")
            found[key] = int(value)
    if len(found) != 2:
        return None
    return found["voluntary_ctxt_switches"], found["nonvoluntary_ctxt_switches"]


def parse_proc_cgroup(text: str) -> list[dict[str, Any]]:
    """/proc/<pid>/cgroup lines "id:controllers:path"; v2 is "0::path"."""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers = [c for c in parts[1].split(",") if c]
        out.append({"id": parts[0], "controllers": controllers, "path": parts[2]})
    return out


def cgroup_lines(memberships: list[dict[str, Any]]) -> list[str]:
    """parse_proc_cgroup()'s records written back as the kernel's lines, for reports."""
    return [f"{m['id']}:{','.join(m['controllers'])}:{m['path']}" for m in memberships]


# ---------------------------------------------------------------- one thread


def parse_task_stat(text: str) -> dict | None:
    """/proc/<pid>/task/<tid>/stat -> tid, comm, state letter, CPU ticks, start time.

    The command name is in parentheses and may itself hold spaces and ')'
    (a thread can name itself "a) b"), so the split is at the LAST ')'.
    Field numbers below are proc(5)'s, counted from 1.
    """
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        return None
    rest = text[close_paren + 1:].split()
    if len(rest) < 20:
        return None
    try:
        return {
            "tid": int(text[:open_paren]),
            "comm": text[open_paren + 1:close_paren],
            "state": rest[0],                 # field 3
            "utime": int(rest[11]),           # field 14, clock ticks
            "stime": int(rest[12]),           # field 15
            "starttime": int(rest[19]),       # field 22, ticks after boot: tells a reused tid apart
            "processor": int(rest[36]) if len(rest) > 36 else None,  # field 39
        }
    except ValueError:
        return None


def parse_syscall(text: str) -> dict | None:
    """/proc/<pid>/task/<tid>/syscall -> {"nr", "args", "running"}.

    "running" when the thread is on a CPU (the kernel cannot read its
    registers then); "-1 sp pc" when it is blocked outside any system call (a
    page fault, say): nr -1, no args; otherwise the number and the six raw
    arguments (then the stack and instruction pointers, not kept).
    """
    text = text.strip()
    if text == "running":
        return {"nr": None, "args": (), "running": True}
    fields = text.split()
    try:
        nr = int(fields[0])
        args = tuple(int(v, 16) for v in fields[1:7]) if nr >= 0 else ()
    except (ValueError, IndexError):
        return None
    if nr >= 0 and len(args) < 6:
        return None
    return {"nr": nr, "args": args, "running": False}


def parse_wchan(text: str) -> str | None:
    """/proc/<pid>/task/<tid>/wchan: the kernel function the thread sleeps in; "0" or "" when none."""
    text = text.strip()
    return None if text in ("", "0") else text


def parse_schedstat(text: str) -> tuple[int, int, int] | None:
    """/proc/<pid>/task/<tid>/schedstat -> (ns on a CPU, ns runnable but waiting
    for one, timeslices run).  A thread whose timeslice count did not move was
    never woken up in between."""
    fields = text.split()
    try:
        return int(fields[0]), int(fields[1]), int(fields[2])
    except (ValueError, IndexError):
        return None


def parse_epoll_fdinfo(text: str) -> list[int]:
    """The fds an epoll instance watches: its /proc/<pid>/fdinfo/<epfd> "tfd:" lines.

    A watched fd that was closed without EPOLL_CTL_DEL stays listed while
    another descriptor holds its file, so the caller resolves each through
    /proc/<pid>/fd and must expect some to be gone.
    """
    fds = []
    for line in text.splitlines():
        if line.startswith("tfd:"):
            try:
                fds.append(int(line.split()[1]))
            except (IndexError, ValueError):
                continue
    return fds


_POLLFD = struct.Struct("=ihh")  # struct pollfd {int fd; short events; short revents;}


def parse_pollfds(raw: bytes) -> list[tuple[int, int]]:
    """A `struct pollfd` array read from process memory -> [(fd, events)].
    Negative fds are ignored by poll() itself and left out here."""
    out = []
    for offset in range(0, len(raw) - len(raw) % _POLLFD.size, _POLLFD.size):
        fd, events, _revents = _POLLFD.unpack_from(raw, offset)
        if fd >= 0:
            out.append((fd, events & 0xFFFF))
    return out


def parse_fd_set(raw: bytes, nfds: int) -> list[int]:
    """An fd_set bitmap (select/pselect6) -> the fds below nfds whose bit is set.
    fd_set is an array of longs, so the bit of fd n is bit n % 8 of byte n // 8
    on a little-endian host; on a big-endian one bytes run backwards within each long."""
    if sys.byteorder == "big":
        word = struct.calcsize("l")
        raw = b"".join(raw[i:i + word][::-1] for i in range(0, len(raw), word))
    return [fd for fd in range(min(nfds, len(raw) * 8)) if raw[fd // 8] >> (fd % 8) & 1]


def fd_target(link: str) -> tuple[str, Any]:
    """A /proc/<pid>/fd/N link -> (kind, detail):
    ("socket", inode), ("pipe", inode), ("anon", "eventfd"/"eventpoll"/"timerfd"/...),
    ("file", path).  Deleted files keep their path with " (deleted)"."""
    for kind in ("socket", "pipe"):
        if link.startswith(kind + ":[") and link.endswith("]"):
            try:
                return kind, int(link[len(kind) + 2:-1])
            except ValueError:
                break
    if link.startswith("anon_inode:"):
        return "anon", link[len("anon_inode:"):].strip("[]")
    return "file", link
