"""Parsers and readers for the host probe: Linux /proc and /sys files in, plain dicts out.

Everything here takes raw text or a root path (so tests run it on recorded
trees under tests/fixtures/host/), never the live /proc implicitly.  Readers
raise OSError for a missing or unreadable file; callers turn that into a None
field plus a note, never a failed probe.

The cgroup part (cgroup_stats / cgroup_delta) is shared with the process
probe: read once at the start and once at the end of the window, then
cgroup_delta() turns the two readings into limits, usage and deltas.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any

from ._proc_parse import parse_proc_cgroup  # one parser of /proc/<pid>/cgroup, shared with the process probe

# /proc/stat cpu columns, in kernel order.  guest and guest_nice are already
# counted inside user and nice, so they never go into a total.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
CPU_TOTAL_MODES = CPU_MODES[:8]

# /proc/diskstats counts sectors of 512 bytes whatever the device's real sector size.
DISKSTATS_SECTOR_BYTES = 512

# A v1 memory limit at or above this is "no limit": the kernel shows
# PAGE_COUNTER_MAX in bytes (9223372036854771712 on 4 KiB pages), not -1.
V1_UNLIMITED_BYTES = 1 << 62


# ---------------------------------------------------------------- file access

def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def describe_error(path: str, exc: BaseException) -> str:
    """One line for a file that could not be read: which file and why."""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: not found"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied"
    if isinstance(exc, OSError) and exc.errno == errno.EOPNOTSUPP:
        return f"{path}: not supported by this kernel"
    if isinstance(exc, OSError):
        return f"{path}: {exc.strerror or exc}"
    return f"{path}: unreadable ({type(exc).__name__}: {exc})"


def _int(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- /proc text parsers

def parse_proc_stat(text: str) -> dict[str, Any]:
    """/proc/stat -> {"cpu": {mode: ticks}, "cpus": {"cpu0": {...}}, "procs_running", "procs_blocked", ...}."""
    out: dict[str, Any] = {"cpu": None, "cpus": {}}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        key = parts[0]
        if key.startswith("cpu"):
            # Older kernels have fewer columns; missing ones are absent, not zero.
            ticks = {mode: int(v) for mode, v in zip(CPU_MODES, parts[1:])}
            if key == "cpu":
                out["cpu"] = ticks
            else:
                out["cpus"][key] = ticks
        elif key in ("procs_running", "procs_blocked", "ctxt", "processes", "btime") and len(parts) > 1:
            out[key] = _int(parts[1])
    return out


def parse_loadavg(text: str) -> dict[str, Any]:
    """/proc/loadavg: "0.30 0.27 0.12 1/221 5621"."""
    parts = text.split()
    running, _, entities = parts[3].partition("/")
    return {"load1": float(parts[0]), "load5": float(parts[1]), "load15": float(parts[2]),
            "runnable": _int(running), "entities": _int(entities)}


def parse_psi(text: str) -> dict[str, Any]:
    """/proc/pressure/<res>: "some avg10=.. avg60=.. avg300=.. total=<µs>" and "full ..." lines.

    The cpu file has no "full" line before kernel 5.13; that side is None then.
    """
    out: dict[str, Any] = {"some": None, "full": None}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        out[parts[0]] = {"avg10": float(fields["avg10"]), "avg60": float(fields["avg60"]),
                         "avg300": float(fields["avg300"]), "total_us": int(fields["total"])}
    if out["some"] is None:
        raise ValueError("no 'some' line")
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes}; fields without a unit (HugePages_Total...) stay counts."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        value = _int(parts[0])
        if value is None:
            continue
        if len(parts) > 1 and parts[1] == "kB":
            value *= 1024
        out[name.strip()] = value
    return out


def parse_flat_keyed(text: str) -> dict[str, int]:
    """"key value" lines (/proc/vmstat, cgroup cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            value = _int(parts[1])
            if value is not None:
                out[parts[0]] = value
    return out


parse_vmstat = parse_flat_keyed

# Field names of /proc/diskstats after major, minor, name.  Kernels before 4.18
# have 11 numbers, 4.18 adds 4 discard fields, 5.5 two flush fields.
_DISK_FIELDS = ("reads", "reads_merged", "sectors_read", "read_ms", "writes", "writes_merged", "sectors_written",
                "write_ms", "in_flight", "io_ms", "weighted_io_ms", "discards", "discards_merged",
                "sectors_discarded", "discard_ms", "flushes", "flush_ms")


def parse_diskstats(text: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14:
            continue  # pre-2.6.25 partition lines had 4 numbers only
        out[parts[2]] = {name: int(v) for name, v in zip(_DISK_FIELDS, parts[3:])}
    return out


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev -> {iface: {rx_bytes, rx_packets, rx_errs, rx_drop, ..., tx_bytes, ...}}."""
    lines = text.splitlines()
    if len(lines) < 2 or "|" not in lines[1]:
        raise ValueError("unexpected header")
    _, rx_head, tx_head = lines[1].split("|")
    names = [f"rx_{n}" for n in rx_head.split()] + [f"tx_{n}" for n in tx_head.split()]
    out: dict[str, dict[str, int]] = {}
    for line in lines[2:]:
        iface, sep, rest = line.partition(":")
        if not sep:
            continue
        out[iface.strip()] = {name: int(v) for name, v in zip(names, rest.split())}
    return out


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/snmp and /proc/net/netstat: pairs of "Proto: names" / "Proto: values" lines."""
    out: dict[str, dict[str, int]] = {}
    header: dict[str, list[str]] = {}
    for line in text.splitlines():
        proto, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if proto not in header:
            header[proto] = fields
        else:
            out[proto] = {n: v for n, v in zip(header.pop(proto), (_int(f) for f in fields)) if v is not None}
    return out


def parse_file_nr(text: str) -> dict[str, int]:
    """/proc/sys/fs/file-nr: allocated handles, free allocated handles (0 since 2.6), maximum."""
    allocated, free, maximum = (int(p) for p in text.split()[:3])
    return {"allocated": allocated, "free": free, "max": maximum}


def parse_port_range(text: str) -> dict[str, int]:
    low, high = (int(p) for p in text.split()[:2])
    return {"low": low, "high": high, "size": high - low + 1}


def parse_uptime(text: str) -> float:
    return float(text.split()[0])


# ---------------------------------------------------------------- kernel log

# "Out of memory: Killed process 123 (java) total-vm:..." (global OOM) and
# "Memory cgroup out of memory: Killed process 123 (java) ..." (a cgroup hit its
# limit).  Kernels before 5.x said "Killed process 123 (java) total-vm" on a line
# of its own after "Out of memory: Kill process 123 (java) score N or sacrifice
# child"; matching "Killed process" only counts each kill once either way.
_OOM_KILLED = re.compile(r"Killed process (?P<pid>\d+) \((?P<comm>.*?)\)(?= total-vm|,|\s*$)")
_OOM_CONTEXT = re.compile(r"oom-kill:.*?task_memcg=(?P<memcg>[^,]*),task=(?P<comm>[^,]*),pid=(?P<pid>\d+)")


def parse_kmsg_records(text: str) -> list[dict[str, Any]]:
    """/dev/kmsg records: "prio,seq,usec,flags[,..];message", continuation lines start with a space."""
    records = []
    for line in text.splitlines():
        if not line or line[0] == " ":
            continue
        header, sep, message = line.partition(";")
        if not sep:
            continue
        fields = header.split(",")
        if len(fields) < 3:
            continue
        seq, usec = _int(fields[1]), _int(fields[2])
        if seq is None or usec is None:
            continue
        records.append({"seq": seq, "usec": usec, "message": message})
    return records


def parse_oom_kills(text: str, uptime_s: float | None) -> list[dict[str, Any]]:
    """OOM kills in /dev/kmsg text, oldest first: pid, process, scope (global/cgroup), memcg, age_s."""
    memcg_of: dict[int, str] = {}
    kills = []
    # Most of the log is something else: keep only the lines that can match.
    wanted = "\n".join(line for line in text.splitlines() if "Killed process" in line or "oom-kill:" in line)
    for rec in parse_kmsg_records(wanted):
        msg = rec["message"]
        ctx = _OOM_CONTEXT.search(msg)
        if ctx:
            memcg_of[int(ctx["pid"])] = ctx["memcg"]
            continue
        hit = _OOM_KILLED.search(msg)
        if not hit:
            continue
        pid = int(hit["pid"])
        at_s = rec["usec"] / 1e6
        kills.append({
            "pid": pid,
            "process": hit["comm"],
            "scope": "cgroup" if "Memory cgroup out of memory" in msg else "global",
            "memcg": memcg_of.get(pid),
            "at_uptime_s": round(at_s, 3),
            # /proc/uptime counts suspended time and the log clock does not; on a
            # server that never suspends the two agree.
            "age_s": round(uptime_s - at_s, 1) if uptime_s is not None else None,
        })
    return kills


def read_kmsg(path: str, max_bytes: int) -> tuple[str, bool]:
    """Everything /dev/kmsg holds, without blocking, at most max_bytes; returns (text, truncated).

    Each read() of /dev/kmsg returns one record and EAGAIN at the end; EPIPE
    means the record was overwritten while we read, so carry on.  A regular
    file (a recorded fixture) reads in chunks to EOF.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks: list[bytes] = []
    size = 0
    truncated = False
    try:
        while True:
            try:
                chunk = os.read(fd, 16384)  # a smaller buffer than one record gives EINVAL
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue
                raise
            if not chunk:
                break
            if size + len(chunk) > max_bytes:
                chunks.append(chunk[:max_bytes - size])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace"), truncated


# ---------------------------------------------------------------- block devices

def whole_disks(sys_root: str) -> set[str] | None:
    """Names under /sys/block (whole disks, no partitions), or None when it cannot be listed."""
    try:
        return set(os.listdir(os.path.join(sys_root, "block")))
    except OSError:
        return None


_PARTITION_SUFFIX = re.compile(r"p?\d+$")


def is_reported_disk(name: str, all_names: set[str], disks: set[str] | None) -> bool:
    """Skip loop and ram devices, and partitions of a disk that is itself listed."""
    if name.startswith(("loop", "ram")):
        return False
    if disks is not None:
        return name in disks
    # Without /sys/block: a name that is another listed name plus a partition
    # number (sda1, nvme0n1p2, vda3) is a partition.
    for other in all_names:
        if other != name and name.startswith(other) and _PARTITION_SUFFIX.fullmatch(name[len(other):]):
            return False
    return True


# ---------------------------------------------------------------- cgroups

def _unescape_mount(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo_cgroups(text: str) -> list[dict[str, Any]]:
    """cgroup and cgroup2 mounts from /proc/<pid>/mountinfo: root, mount point, fstype, super options."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        out.append({"root": _unescape_mount(fields[3]), "mount_point": _unescape_mount(fields[4]),
                    "fstype": tail[0], "options": tail[2].split(",") if len(tail) > 2 else []})
    return out


def _on_sys_root(mount_point: str, sys_root: str) -> str:
    """A mount point from mountinfo, seen through a (possibly redirected) /sys root."""
    if mount_point == "/sys" or mount_point.startswith("/sys/"):
        return os.path.join(sys_root, mount_point[len("/sys"):].lstrip("/"))
    return mount_point


def _default_mounts(sys_root: str) -> list[dict[str, Any]]:
    """Where cgroups usually are, for when mountinfo cannot be read."""
    base = os.path.join(sys_root, "fs", "cgroup")
    mounts = []
    if os.path.exists(os.path.join(base, "cgroup.controllers")):
        return [{"root": "/", "mount_point": "/sys/fs/cgroup", "fstype": "cgroup2", "options": []}]
    try:
        names = os.listdir(base)
    except OSError:
        names = []
    for name in names:
        if name == "unified":
            mounts.append({"root": "/", "mount_point": "/sys/fs/cgroup/unified", "fstype": "cgroup2", "options": []})
        elif os.path.isdir(os.path.join(base, name)) and not os.path.islink(os.path.join(base, name)):
            mounts.append({"root": "/", "mount_point": f"/sys/fs/cgroup/{name}", "fstype": "cgroup",
                           "options": name.split(",")})
    return mounts


def _place(controller: str, memberships: list[dict], mounts: list[dict]) -> tuple[str, dict, dict] | None:
    """(version, membership line, mount) that holds `controller` for this process, v1 first."""
    for line in memberships:
        if controller in line["controllers"]:
            for mount in mounts:
                if mount["fstype"] == "cgroup" and controller in mount["options"]:
                    return "v1", line, mount
    for line in memberships:
        if line["id"] == "0" and not line["controllers"]:
            for mount in mounts:
                if mount["fstype"] == "cgroup2":
                    return "v2", line, mount
    return None


def _resolve_dir(path: str, mount: dict, sys_root: str) -> tuple[str, str]:
    """Directory of cgroup `path` under `mount`: (directory, "exact" | "mount_root_fallback").

    /proc/<pid>/cgroup shows the path from the root of our cgroup namespace and
    mountinfo's root field says which cgroup the mount shows.  In a container
    those often disagree (the path names the host's cgroup, the mount shows just
    the container's), so when the path does not exist below the mount, the
    mount root, which then usually is the container's own cgroup, stands in.
    """
    mount_dir = _on_sys_root(mount["mount_point"], sys_root)
    root = mount["root"].rstrip("/")
    if path == root or path.startswith(root + "/"):
        candidate = os.path.join(mount_dir, path[len(root):].lstrip("/"))
        if os.path.isdir(candidate):
            return os.path.normpath(candidate), "exact"
    return os.path.normpath(mount_dir), "mount_root_fallback"


def _ancestors(directory: str, mount_dir: str) -> list[str]:
    """directory, its parent, ... up to and including the mount directory."""
    out = [directory]
    mount_dir = os.path.normpath(mount_dir)
    while directory != mount_dir and directory.startswith(mount_dir + os.sep):
        directory = os.path.dirname(directory)
        out.append(directory)
    return out


def _cgroup_name(directory: str, mount_dir: str, mount_root: str) -> str:
    rel = os.path.relpath(directory, os.path.normpath(mount_dir))
    rel = "" if rel == "." else rel
    return "/" + "/".join(p for p in (mount_root.strip("/"), rel) if p)


def _read_optional(path: str, notes: list[str]) -> str | None:
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        notes.append(describe_error(path, exc))
        return None


def _read_quiet(path: str) -> str | None:
    """An optional file whose absence is normal (no note)."""
    try:
        return read_text(path)
    except (OSError, UnicodeDecodeError):
        return None


def _tightest(levels: list[str], limit_of) -> tuple[Any, str | None]:
    """The smallest limit on the way up and the directory that sets it (None, None: unlimited)."""
    best, where = None, None
    for level in levels:
        value = limit_of(level)
        if value is not None and (best is None or value < best):
            best, where = value, level
    return best, where


def _v1_quota_cores(level: str) -> float | None:
    try:
        quota = int(read_text(os.path.join(level, "cpu.cfs_quota_us")))
        period = int(read_text(os.path.join(level, "cpu.cfs_period_us")))
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v2_quota_cores(level: str) -> float | None:
    try:
        quota, period = read_text(os.path.join(level, "cpu.max")).split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or int(period) <= 0:
        return None
    return int(quota) / int(period)


def _v1_memory_limit(level: str) -> int | None:
    try:
        value = int(read_text(os.path.join(level, "memory.limit_in_bytes")))
    except (OSError, ValueError):
        return None
    return value if 0 <= value < V1_UNLIMITED_BYTES else None


def _v2_memory_value(name: str):
    def value_at(level: str) -> int | None:
        try:
            text = read_text(os.path.join(level, name)).strip()
        except OSError:
            return None
        return None if text == "max" else _int(text)
    return value_at


def _cpu_reading(version: str, line: dict, mount: dict, sys_root: str, acct: tuple | None,
                 notes: list[str]) -> dict[str, Any]:
    directory, resolved = _resolve_dir(line["path"], mount, sys_root)
    mount_dir = _on_sys_root(mount["mount_point"], sys_root)
    levels = _ancestors(directory, mount_dir)
    cores, holder = _tightest(levels, _v1_quota_cores if version == "v1" else _v2_quota_cores)
    # Throttling is counted in the cgroup whose quota is hit, which may be a parent.
    stat_dir = holder or directory
    stat_text = _read_optional(os.path.join(stat_dir, "cpu.stat"), notes)
    stat = parse_flat_keyed(stat_text) if stat_text is not None else {}
    reading: dict[str, Any] = {
        "version": version, "path": line["path"], "dir": directory, "resolved": resolved,
        "quota_cores": cores,
        "quota_path": _cgroup_name(holder, mount_dir, mount["root"]) if holder else None,
        "nr_periods": stat.get("nr_periods"), "nr_throttled": stat.get("nr_throttled"),
        "throttled_s": None, "usage_s": None, "usage_path": None,
    }
    if version == "v1":
        if "throttled_time" in stat:
            reading["throttled_s"] = stat["throttled_time"] / 1e9
        if acct is not None:
            # cpuacct may be mounted apart from cpu, and the process may then sit
            # in another cgroup there (often the root, i.e. the whole host).
            acct_line, acct_mount = acct
            acct_dir = _resolve_dir(acct_line["path"], acct_mount, sys_root)[0]
            usage = _read_optional(os.path.join(acct_dir, "cpuacct.usage"), notes)
            if usage is not None and _int(usage.strip()) is not None:
                reading["usage_s"] = int(usage) / 1e9
                reading["usage_path"] = _cgroup_name(
                    acct_dir, _on_sys_root(acct_mount["mount_point"], sys_root), acct_mount["root"])
    else:
        if "throttled_usec" in stat:
            reading["throttled_s"] = stat["throttled_usec"] / 1e6
        own = stat if stat_dir == directory else parse_flat_keyed(
            _read_optional(os.path.join(directory, "cpu.stat"), notes) or "")
        if "usage_usec" in own:
            reading["usage_s"] = own["usage_usec"] / 1e6
            reading["usage_path"] = _cgroup_name(directory, mount_dir, mount["root"])
    return reading


def _memory_reading(version: str, line: dict, mount: dict, sys_root: str, notes: list[str]) -> dict[str, Any]:
    directory, resolved = _resolve_dir(line["path"], mount, sys_root)
    mount_dir = _on_sys_root(mount["mount_point"], sys_root)
    levels = _ancestors(directory, mount_dir)
    reading: dict[str, Any] = {"version": version, "path": line["path"], "dir": directory, "resolved": resolved}
    if version == "v1":
        limit, holder = _tightest(levels, _v1_memory_limit)
        usage = _read_optional(os.path.join(directory, "memory.usage_in_bytes"), notes)
        # Usage counts the whole subtree, so the limit holder's usage is what the limit is compared with.
        holder_usage = usage if holder in (None, directory) else _read_optional(
            os.path.join(holder, "memory.usage_in_bytes"), notes)
        # A charge that fails is counted on the page counter that refused it:
        # the cgroup holding the limit, which may be a parent.
        failcnt = _read_optional(os.path.join(holder or directory, "memory.failcnt"), notes)
        # With swap accounting the memory+swap counter is charged first, so when
        # its limit is the one hit (or equals the memory limit) only it counts.
        memsw_failcnt = _read_quiet(os.path.join(holder or directory, "memory.memsw.failcnt"))
        oom = _read_optional(os.path.join(directory, "memory.oom_control"), notes)
        oom_fields = parse_flat_keyed(oom) if oom is not None else {}
        reading.update({
            "limit_bytes": limit, "high_bytes": None,
            "current_bytes": _int(usage.strip()) if usage is not None else None,
            "limit_usage_bytes": _int(holder_usage.strip()) if holder_usage is not None else None,
            "failcnt": _int(failcnt.strip()) if failcnt is not None else None,
            "memsw_failcnt": _int(memsw_failcnt.strip()) if memsw_failcnt is not None else None,
            "under_oom": oom_fields.get("under_oom"), "oom_kill": oom_fields.get("oom_kill"),
            "events": None,
        })
    else:
        limit, holder = _tightest(levels, _v2_memory_value("memory.max"))
        high, _ = _tightest(levels, _v2_memory_value("memory.high"))
        current = _read_optional(os.path.join(directory, "memory.current"), notes)
        holder_current = current if holder in (None, directory) else _read_optional(
            os.path.join(holder, "memory.current"), notes)
        # memory.events counts the whole subtree, so the limit holder's file also
        # has the events of this cgroup.
        events = _read_optional(os.path.join(holder or directory, "memory.events"), notes)
        reading.update({
            "limit_bytes": limit, "high_bytes": high,
            "current_bytes": _int(current.strip()) if current is not None else None,
            "limit_usage_bytes": _int(holder_current.strip()) if holder_current is not None else None,
            "failcnt": None, "memsw_failcnt": None, "under_oom": None, "oom_kill": None,
            "events": parse_flat_keyed(events) if events is not None else None,
        })
    reading["limit_path"] = _cgroup_name(holder, mount_dir, mount["root"]) if holder else None
    return reading


def _v2_has(controller: str, line: dict, mount: dict, sys_root: str) -> bool:
    directory, _ = _resolve_dir(line["path"], mount, sys_root)
    try:
        return controller in read_text(os.path.join(directory, "cgroup.controllers")).split()
    except OSError:
        return False


# The kernel's cgroup freezer (`docker pause`, `systemctl freeze`, a CRIU checkpoint
# in progress) holds every task of a cgroup: under v1 they sleep in
# state D in __refrigerator, under v2 in state S inside the signal path, their
# system call left as it was (a paused consumer then looks idle).  Only the
# cgroup's own file says so plainly: v1 freezer.state (FREEZING while tasks are
# still being caught, FROZEN once all are; a parent's freeze shows in the child),
# v2 cgroup.events' "frozen" (the effective state, a frozen ancestor included).
FROZEN_V1_STATES = ("FROZEN", "FREEZING")


def freezer_reading(memberships: list[dict], mounts: list[dict], sys_root: str) -> dict[str, Any] | None:
    """Whether the cgroup freezer holds the process: {"frozen", "version", "path", "file", "value"};
    None when no freezer file of its cgroups could be read (the root cgroup of v2 has none)."""
    checks = []
    for line in memberships:
        for mount in mounts:
            if mount["fstype"] == "cgroup" and "freezer" in line["controllers"] and "freezer" in mount["options"]:
                checks.append(("v1", line, mount, "freezer.state"))
            elif mount["fstype"] == "cgroup2" and line["id"] == "0" and not line["controllers"]:
                checks.append(("v2", line, mount, "cgroup.events"))
    seen: set[str] = set()
    found = None
    for version, line, mount, name in checks:
        directory, resolved = _resolve_dir(line["path"], mount, sys_root)
        # A path that does not resolve would read some other cgroup (the mount's root): no guess here.
        if resolved != "exact" or directory in seen:
            continue
        seen.add(directory)
        text = _read_quiet(os.path.join(directory, name))
        if text is None:
            if directory == os.path.normpath(_on_sys_root(mount["mount_point"], sys_root)) and mount["root"] == "/":
                # A hierarchy's root cgroup has no freezer file: it cannot be frozen.
                found = found or {"frozen": False, "version": version, "path": line["path"], "file": None,
                                  "value": "the root cgroup, which cannot be frozen"}
            continue
        if version == "v1":
            value = text.strip()
            frozen = value in FROZEN_V1_STATES
        else:
            events = parse_flat_keyed(text)
            if "frozen" not in events:  # kernels before 5.2 have no v2 freezer
                continue
            value, frozen = f"frozen {events['frozen']}", events["frozen"] == 1
        reading = {"frozen": frozen, "version": version, "path": line["path"], "file": name, "value": value}
        if frozen:
            return reading
        found = found or reading
    return found


def cgroup_frozen(proc_root: str, sys_root: str, pid: int | str) -> dict[str, Any] | None:
    """freezer_reading() of one process, or None when unknown."""
    try:
        memberships = parse_proc_cgroup(read_text(os.path.join(proc_root, str(pid), "cgroup")))
    except (OSError, UnicodeDecodeError):
        return None
    try:
        mounts = parse_mountinfo_cgroups(read_text(os.path.join(proc_root, "self", "mountinfo")))
    except (OSError, UnicodeDecodeError):
        mounts = _default_mounts(sys_root)
    return freezer_reading(memberships, mounts, sys_root)


def cgroup_stats(proc_root: str, sys_root: str, pid: int | str = "self") -> dict[str, Any]:
    """One reading of the cgroup limits and counters of process `pid` (counters are raw totals).

    Call it at the start and the end of the window and give both to
    cgroup_delta().  Works with cgroup v1, v2 and hybrid hosts; paths are found
    through our own mountinfo, because that is the namespace we read files in.
    """
    notes: list[str] = []
    reading: dict[str, Any] = {"pid": pid, "version": None, "cpu": None, "memory": None, "notes": notes}
    cgroup_file = os.path.join(proc_root, str(pid), "cgroup")
    try:
        memberships = parse_proc_cgroup(read_text(cgroup_file))
    except OSError as exc:
        notes.append(describe_error(cgroup_file, exc) + ("" if pid == "self" else " (process exited?)"))
        return reading
    mountinfo_file = os.path.join(proc_root, "self", "mountinfo")
    try:
        mounts = parse_mountinfo_cgroups(read_text(mountinfo_file))
    except OSError as exc:
        notes.append(describe_error(mountinfo_file, exc) + "; guessing the usual /sys/fs/cgroup layout")
        mounts = _default_mounts(sys_root)

    versions = []
    for controller in ("cpu", "memory"):
        placed = _place(controller, memberships, mounts)
        if placed is None:
            notes.append(f"{controller}: no cgroup hierarchy with the {controller} controller is mounted")
            continue
        version, line, mount = placed
        if version == "v2" and not _v2_has(controller, line, mount, sys_root):
            notes.append(f"{controller}: controller not enabled for cgroup {line['path']} (v2)")
            continue
        if controller == "cpu":
            acct = _place("cpuacct", memberships, mounts) if version == "v1" else None
            section = _cpu_reading(version, line, mount, sys_root, acct[1:] if acct and acct[0] == "v1" else None,
                                   notes)
        else:
            section = _memory_reading(version, line, mount, sys_root, notes)
        if section["resolved"] != "exact":
            notes.append(f"{controller}: cgroup {line['path']} not found under {mount['mount_point']}; "
                         f"read the mount root instead (usual inside a container)")
        reading[controller] = section
        versions.append(version)
    if versions:
        reading["version"] = versions[0] if len(set(versions)) == 1 else "hybrid"
    reading["freezer"] = freezer_reading(memberships, mounts, sys_root)
    return reading


def _delta(before: dict | None, after: dict | None, key: str) -> int | float | None:
    if not before or not after:
        return None
    a, b = before.get(key), after.get(key)
    if a is None or b is None or b < a:  # absent, or reset (cgroup recreated)
        return None
    return b - a


def cgroup_delta(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Two cgroup_stats() readings -> limits, current usage and deltas over `seconds`."""
    notes = list(dict.fromkeys(before.get("notes", []) + after.get("notes", [])))
    out: dict[str, Any] = {"pid": after.get("pid"), "version": after.get("version"), "cpu": None, "memory": None,
                           "notes": notes}
    cpu0, cpu1 = before.get("cpu"), after.get("cpu")
    if cpu0 and cpu1 and _moved(cpu0, cpu1):
        notes.append(f"cpu: the process moved from {cpu0['path']} to {cpu1['path']} during the window")
        cpu0 = None
    if cpu1:
        periods, throttled = _delta(cpu0, cpu1, "nr_periods"), _delta(cpu0, cpu1, "nr_throttled")
        throttled_s = _delta(cpu0, cpu1, "throttled_s")
        usage_s = _delta(cpu0, cpu1, "usage_s")
        out["cpu"] = {
            "version": cpu1["version"], "path": cpu1["path"], "resolved": cpu1["resolved"],
            "quota_cores": _round(cpu1["quota_cores"], 4), "quota_path": cpu1["quota_path"],
            "usage_cores": _round(usage_s / seconds, 4) if usage_s is not None and seconds > 0 else None,
            "usage_path": cpu1["usage_path"],
            "nr_periods": periods, "nr_throttled": throttled,
            "throttled_ratio": _round(throttled / periods, 4) if throttled is not None and periods else None,
            "throttled_s": _round(throttled_s, 6),
            "throttled": throttled > 0 if throttled is not None else None,
        }
    mem0, mem1 = before.get("memory"), after.get("memory")
    if mem0 and mem1 and _moved(mem0, mem1):
        notes.append(f"memory: the process moved from {mem0['path']} to {mem1['path']} during the window")
        mem0 = None
    if mem1:
        limit, current, charged = mem1["limit_bytes"], mem1["current_bytes"], mem1["limit_usage_bytes"]
        events = None
        if mem1.get("events") is not None:
            events = {k: _delta(mem0.get("events") if mem0 else None, mem1["events"], k)
                      for k in ("high", "max", "oom", "oom_kill")}
        out["memory"] = {
            "version": mem1["version"], "path": mem1["path"], "resolved": mem1["resolved"],
            "limit_bytes": limit, "limit_path": mem1["limit_path"], "high_bytes": mem1["high_bytes"],
            "current_bytes": current,
            # Usage of the cgroup holding the limit (this one or a parent) over that limit.
            "usage_ratio": _round(charged / limit, 4) if limit and charged is not None else None,
            "failcnt": _delta(mem0, mem1, "failcnt"),
            "memsw_failcnt": _delta(mem0, mem1, "memsw_failcnt"),
            "under_oom": bool(mem1["under_oom"]) if mem1["under_oom"] is not None else None,
            "oom_kill": _delta(mem0, mem1, "oom_kill"),
            "events": events,
        }
    return out


def _moved(before: dict, after: dict) -> bool:
    return (before["version"], before["path"]) != (after["version"], after["path"])


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
