"""The host probe: is the machine itself the bottleneck?

USE-method view of one Linux host over the window: CPU (utilisation per mode,
per-CPU imbalance, load and run queue), pressure stall information, memory,
swap and OOM kills, qdiag's own cgroup limits and throttling, disks and
network (throughput, errors, retransmits, listen-queue overflows, conntrack and
file-handle tables).  It reads a handful of small /proc and /sys files at the
start and the end of the window (plus once in between, for the run-queue
gauges) and reports every counter as a delta or a rate.

cgroup_stats / cgroup_delta are re-exported for the process probe.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Callable

from qdiag.probe import NotApplicable, ProbeError, Option, register

from . import _host_facts
from . import _host_parse as hp

DEFAULT_SAMPLES = 3
DEFAULT_KMSG_MAX_BYTES = 2 * 1024 * 1024
KERNEL_LOG_KILLS_SHOWN = 20
RECENT_OOM_S = 3600.0

PSI_RESOURCES = ("cpu", "memory", "io")

# What a missing PSI file most likely means, for the note.
_PSI_MISSING = "kernel older than 4.20 or built without CONFIG_PSI"
_PSI_OFF = "PSI is compiled in but switched off (boot with psi=1)"


# ---------------------------------------------------------------- one sample

def take_sample(proc: str, sys_root: str, clock: Callable[[], float]) -> dict[str, Any]:
    """Read every file once: {"t": monotonic, "<part>": parsed or None, "errors": {part: reason}}."""
    sample: dict[str, Any] = {"t": clock(), "errors": {}}

    def read(part: str, rel: str, parse: Callable[[str], Any], root: str = proc) -> None:
        path = os.path.join(root, rel)
        try:
            sample[part] = parse(hp.read_text(path))
        except (OSError, UnicodeDecodeError) as exc:
            sample[part] = None
            sample["errors"][part] = hp.describe_error(path, exc)
        except (ValueError, IndexError, KeyError) as exc:
            sample[part] = None
            sample["errors"][part] = f"{path}: unexpected format ({exc})"

    read("stat", "stat", hp.parse_proc_stat)
    read("loadavg", "loadavg", hp.parse_loadavg)
    for resource in PSI_RESOURCES:
        read(f"psi.{resource}", f"pressure/{resource}", hp.parse_psi)
    read("meminfo", "meminfo", hp.parse_meminfo)
    read("vmstat", "vmstat", hp.parse_vmstat)
    read("diskstats", "diskstats", hp.parse_diskstats)
    read("net_dev", "net/dev", hp.parse_net_dev)
    read("snmp", "net/snmp", hp.parse_snmp)
    read("netstat", "net/netstat", hp.parse_snmp)
    read("conntrack_count", "sys/net/netfilter/nf_conntrack_count", int)
    read("conntrack_max", "sys/net/netfilter/nf_conntrack_max", int)
    read("file_nr", "sys/fs/file-nr", hp.parse_file_nr)
    read("port_range", "sys/net/ipv4/ip_local_port_range", hp.parse_port_range)
    read("uptime", "uptime", hp.parse_uptime)
    sample["cgroup"] = hp.cgroup_stats(proc, sys_root, "self")
    return sample


# ---------------------------------------------------------------- report parts

def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _counter_delta(before: dict | None, after: dict | None, key: str) -> int | None:
    """after - before for a cumulative counter; None when absent or when it went backwards (reset)."""
    if not before or not after or key not in before or key not in after:
        return None
    delta = after[key] - before[key]
    return delta if delta >= 0 else None


def _rate(delta: float | None, seconds: float) -> float | None:
    return None if delta is None or seconds <= 0 else delta / seconds


def _cpu_split(t0: dict, t1: dict) -> tuple[float, dict[str, float]] | None:
    """(total tick delta, {mode: percent}) between two /proc/stat cpu lines."""
    # iowait may go backwards on NOHZ kernels: a negative delta counts as zero.
    deltas = {m: max(0, t1[m] - t0[m]) for m in hp.CPU_TOTAL_MODES if m in t0 and m in t1}
    total = sum(deltas.values())
    if total <= 0:
        return None
    return total, {m: 100.0 * d / total for m, d in deltas.items()}


def _busy_pct(split: dict[str, float]) -> float:
    # Busy is everything but idle and iowait; steal counts as busy because that
    # time was not available to this machine.
    return max(0.0, 100.0 - split.get("idle", 0.0) - split.get("iowait", 0.0))


def cpu_report(first: dict, last: dict) -> dict[str, Any] | None:
    s0, s1 = first.get("stat"), last.get("stat")
    if not s0 or not s1 or not s0.get("cpu") or not s1.get("cpu"):
        return None
    whole = _cpu_split(s0["cpu"], s1["cpu"])
    if whole is None:
        return None
    _, split = whole
    per_cpu = {}
    for name, ticks in s1["cpus"].items():
        if name in s0["cpus"]:  # CPUs hot-plugged during the window are left out
            one = _cpu_split(s0["cpus"][name], ticks)
            if one is not None:
                per_cpu[name] = _busy_pct(one[1])
    busy = _busy_pct(split)
    report: dict[str, Any] = {
        "busy_pct": _r(busy),
        "user_pct": _r(split.get("user", 0.0) + split.get("nice", 0.0)),
        "system_pct": _r(split.get("system")),
        "iowait_pct": _r(split.get("iowait")),
        "steal_pct": _r(split.get("steal")),
        "irq_pct": _r(split.get("irq")),
        "softirq_pct": _r(split.get("softirq")),
        "idle_pct": _r(split.get("idle")),
        "cores": len(s1["cpus"]) or None,
        "per_cpu_busy_pct": {name: _r(v) for name, v in sorted(per_cpu.items(), key=lambda kv: _cpu_index(kv[0]))},
        "max_cpu": None, "max_cpu_busy_pct": None, "min_cpu_busy_pct": None, "imbalance_pct": None,
    }
    if per_cpu:
        busiest = max(per_cpu, key=per_cpu.get)
        report.update(max_cpu=busiest, max_cpu_busy_pct=_r(per_cpu[busiest]),
                      min_cpu_busy_pct=_r(min(per_cpu.values())),
                      # One saturated CPU among idle ones is a single-threaded bottleneck.
                      imbalance_pct=_r(per_cpu[busiest] - sum(per_cpu.values()) / len(per_cpu)))
    return report


def _cpu_index(name: str) -> int:
    digits = name[3:]
    return int(digits) if digits.isdigit() else 1 << 30


def load_report(samples: list[dict]) -> dict[str, Any] | None:
    last = samples[-1]
    load, stat = last.get("loadavg"), last.get("stat")
    if load is None and stat is None:
        return None
    cores = len(stat["cpus"]) if stat and stat.get("cpus") else None
    report: dict[str, Any] = {"load1": None, "load5": None, "load15": None, "cores": cores,
                              "load1_per_core": None, "load5_per_core": None, "load15_per_core": None}
    if load is not None:
        for k in ("load1", "load5", "load15"):
            report[k] = load[k]
            report[f"{k}_per_core"] = _r(load[k] / cores, 3) if cores else None
    # procs_running/procs_blocked are gauges: the last value and the worst one seen.
    for key in ("procs_running", "procs_blocked"):
        seen = [s["stat"][key] for s in samples if s.get("stat") and s["stat"].get(key) is not None]
        report[key] = seen[-1] if seen else None
        report[f"{key}_max"] = max(seen) if seen else None
    return report


def psi_report(first: dict, last: dict, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for resource in PSI_RESOURCES:
        p0, p1 = first.get(f"psi.{resource}"), last.get(f"psi.{resource}")
        if p1 is None:
            out[resource] = None
            continue
        section = {}
        for kind in ("some", "full"):
            now = p1.get(kind)
            if now is None:
                section[kind] = None
                continue
            before = p0.get(kind) if p0 else None
            stalled_us = _counter_delta(before, now, "total_us")
            fraction = None
            if stalled_us is not None and seconds > 0:
                # The two reads are a few µs apart from the window's clock, so a
                # fully stalled window can come out a hair above 1.
                fraction = min(1.0, stalled_us / (seconds * 1e6))
            section[kind] = {"avg10": now["avg10"], "avg60": now["avg60"], "avg300": now["avg300"],
                             "stall_fraction": _r(fraction, 4)}
        out[resource] = section
    return out


def memory_report(first: dict, last: dict, seconds: float) -> dict[str, Any] | None:
    mem = last.get("meminfo")
    v0, v1 = first.get("vmstat"), last.get("vmstat")
    if mem is None and v1 is None:
        return None
    report: dict[str, Any] = {}
    total, available = (mem or {}).get("MemTotal"), (mem or {}).get("MemAvailable")
    swap_total, swap_free = (mem or {}).get("SwapTotal"), (mem or {}).get("SwapFree")
    report["total_bytes"] = total
    report["available_bytes"] = available  # absent before 3.14
    report["available_pct"] = _r(100.0 * available / total) if total and available is not None else None
    report["swap_total_bytes"] = swap_total
    report["swap_used_bytes"] = swap_total - swap_free if swap_total is not None and swap_free is not None else None
    report["swap_in_pages_per_s"] = _r(_rate(_counter_delta(v0, v1, "pswpin"), seconds))
    report["swap_out_pages_per_s"] = _r(_rate(_counter_delta(v0, v1, "pswpout"), seconds))
    report["major_faults_per_s"] = _r(_rate(_counter_delta(v0, v1, "pgmajfault"), seconds))
    return report


def disk_report(first: dict, last: dict, seconds: float, disks: set[str] | None) -> list[dict[str, Any]] | None:
    d0, d1 = first.get("diskstats"), last.get("diskstats")
    if d1 is None:
        return None
    names = set(d1)
    out = []
    for name, now in d1.items():
        if not hp.is_reported_disk(name, names, disks):
            continue
        before = (d0 or {}).get(name)
        delta = {k: _counter_delta(before, now, k) for k in
                 ("reads", "writes", "sectors_read", "sectors_written", "read_ms", "write_ms", "io_ms",
                  "weighted_io_ms")}
        ios = None if delta["reads"] is None or delta["writes"] is None else delta["reads"] + delta["writes"]
        wait_ms = None
        if delta["read_ms"] is not None and delta["write_ms"] is not None:
            wait_ms = delta["read_ms"] + delta["write_ms"]
        busy = None
        if delta["io_ms"] is not None and seconds > 0:
            busy = min(100.0, 100.0 * delta["io_ms"] / (seconds * 1000.0))
        out.append({
            "device": name,
            "busy_pct": _r(busy),
            "await_ms": _r(wait_ms / ios, 3) if ios and wait_ms is not None else None,
            "read_iops": _r(_rate(delta["reads"], seconds)),
            "write_iops": _r(_rate(delta["writes"], seconds)),
            "read_bytes_per_s": _r(_rate(_bytes(delta["sectors_read"]), seconds), 1),
            "write_bytes_per_s": _r(_rate(_bytes(delta["sectors_written"]), seconds), 1),
            # Average number of requests queued or in service (iostat's aqu-sz).
            "queue_depth": _r(delta["weighted_io_ms"] / (seconds * 1000.0), 3)
            if delta["weighted_io_ms"] is not None and seconds > 0 else None,
            "in_flight": now.get("in_flight"),
        })
    return out


def _bytes(sectors: int | None) -> int | None:
    return None if sectors is None else sectors * hp.DISKSTATS_SECTOR_BYTES


def network_report(first: dict, last: dict, seconds: float) -> dict[str, Any]:
    n0, n1 = first.get("net_dev"), last.get("net_dev")
    interfaces = None
    if n1 is not None:
        interfaces = []
        for name, now in n1.items():
            if name == "lo":
                continue
            before = (n0 or {}).get(name)
            interfaces.append({
                "name": name,
                "rx_bytes_per_s": _r(_rate(_counter_delta(before, now, "rx_bytes"), seconds), 1),
                "tx_bytes_per_s": _r(_rate(_counter_delta(before, now, "tx_bytes"), seconds), 1),
                "rx_packets_per_s": _r(_rate(_counter_delta(before, now, "rx_packets"), seconds), 1),
                "tx_packets_per_s": _r(_rate(_counter_delta(before, now, "tx_packets"), seconds), 1),
                "rx_errors": _counter_delta(before, now, "rx_errs"),
                "tx_errors": _counter_delta(before, now, "tx_errs"),
                "rx_drops": _counter_delta(before, now, "rx_drop"),
                "tx_drops": _counter_delta(before, now, "tx_drop"),
            })

    tcp = None
    t0, t1 = (first.get("snmp") or {}).get("Tcp"), (last.get("snmp") or {}).get("Tcp")
    if t1 is not None:
        retrans, out_segs = _counter_delta(t0, t1, "RetransSegs"), _counter_delta(t0, t1, "OutSegs")
        tcp = {
            "retrans_segs": retrans,
            "out_segs": out_segs,
            "retrans_ratio": _r(retrans / out_segs, 4) if retrans is not None and out_segs else None,
            "retrans_per_s": _r(_rate(retrans, seconds)),
            "in_errs": _counter_delta(t0, t1, "InErrs"),
            "out_rsts": _counter_delta(t0, t1, "OutRsts"),
            "attempt_fails": _counter_delta(t0, t1, "AttemptFails"),
            "curr_estab": t1.get("CurrEstab"),
        }

    listen = None
    x0, x1 = (first.get("netstat") or {}).get("TcpExt"), (last.get("netstat") or {}).get("TcpExt")
    if x1 is not None:
        listen = {
            "overflows": _counter_delta(x0, x1, "ListenOverflows"),
            "drops": _counter_delta(x0, x1, "ListenDrops"),
            # SYN cookies are sent only when a listen queue's SYN backlog is full.
            "syncookies_sent": _counter_delta(x0, x1, "SyncookiesSent"),
        }

    conntrack = None
    count, maximum = last.get("conntrack_count"), last.get("conntrack_max")
    if count is not None and maximum is not None:
        conntrack = {"count": count, "max": maximum, "ratio": _r(count / maximum, 4) if maximum > 0 else None}

    ports = last.get("port_range")
    return {"interfaces": interfaces, "tcp": tcp, "listen": listen, "conntrack": conntrack,
            "ephemeral_ports": dict(ports) if ports else None}


def files_report(last: dict) -> dict[str, Any] | None:
    nr = last.get("file_nr")
    if nr is None:
        return None
    in_use = nr["allocated"] - nr["free"]
    return {"allocated": in_use, "max": nr["max"], "ratio": _r(in_use / nr["max"], 6) if nr["max"] > 0 else None}


def oom_report(first: dict, last: dict, kernel_log: dict | None) -> dict[str, Any]:
    return {"oom_kill": _counter_delta(first.get("vmstat"), last.get("vmstat"), "oom_kill"),
            "kernel_log": kernel_log}


def read_kernel_log_ooms(path: str, max_bytes: int, uptime_s: float | None) -> tuple[dict | None, str | None]:
    """({kills, kills_total, kills_last_hour, scanned_bytes, truncated} or None, reason when None)."""
    try:
        text, truncated = hp.read_kmsg(path, max_bytes)
    except PermissionError:
        return None, f"{path}: permission denied (needs root or CAP_SYSLOG when kernel.dmesg_restrict=1)"
    except OSError as exc:
        return None, hp.describe_error(path, exc)
    kills = hp.parse_oom_kills(text, uptime_s)
    recent = [k for k in kills if k["age_s"] is not None and k["age_s"] <= RECENT_OOM_S]
    return {
        "kills": kills[-KERNEL_LOG_KILLS_SHOWN:],
        "kills_total": len(kills),
        "kills_last_hour": len(recent) if uptime_s is not None else None,
        "scanned_bytes": len(text.encode("utf-8")),
        "truncated": truncated,
    }, None


# Where a note about a None field comes from: the sample part that failed.
_PART_FIELDS = {
    "stat": "cpu", "loadavg": "load", "psi.cpu": "psi.cpu", "psi.memory": "psi.memory", "psi.io": "psi.io",
    "meminfo": "memory", "vmstat": "memory, oom.oom_kill", "diskstats": "disks", "net_dev": "network.interfaces",
    "snmp": "network.tcp", "netstat": "network.listen", "conntrack_count": "network.conntrack",
    "conntrack_max": "network.conntrack", "file_nr": "files", "port_range": "network.ephemeral_ports",
    "uptime": "oom.kernel_log.kills.age_s",
}


def _notes(samples: list[dict]) -> list[str]:
    notes: list[str] = []
    # One note per part: the last sample's reason, else the first's.
    reasons = {**samples[0]["errors"], **samples[-1]["errors"]}
    for part, reason in reasons.items():
        text = f"{_PART_FIELDS.get(part, part)}: {reason}"
        if part.startswith("psi.") and reason.endswith("not found"):
            text += f" ({_PSI_MISSING})"
        elif part.startswith("psi.") and "not supported" in reason:
            text += f" ({_PSI_OFF})"
        elif part.startswith("conntrack") and reason.endswith("not found"):
            text += " (nf_conntrack not loaded: no connection tracking table to fill)"
        notes.append(text)
    return notes


def build_report(samples: list[dict], disks: set[str] | None, kernel_log: dict | None = None,
                 kernel_log_reason: str | None = None) -> dict[str, Any]:
    """The observations from samples taken over the window (deltas between the first and the last)."""
    first, last = samples[0], samples[-1]
    seconds = last["t"] - first["t"]
    notes = _notes(samples)
    if len(samples) < 2 or seconds <= 0:
        notes.append("window: only one sample was taken before the deadline, so rates and deltas are unknown")
        seconds = 0.0
    cgroup = hp.cgroup_delta(first["cgroup"], last["cgroup"], seconds)
    notes.extend(f"cgroup.{n}" for n in cgroup.pop("notes"))
    if kernel_log_reason:
        notes.append(f"oom.kernel_log: {kernel_log_reason}")
    return {
        "cpu": cpu_report(first, last) if seconds > 0 else None,
        "load": load_report(samples),
        "psi": psi_report(first, last, seconds),
        "memory": memory_report(first, last, seconds),
        "oom": oom_report(first, last, kernel_log),
        "cgroup": cgroup,
        "disks": disk_report(first, last, seconds, disks),
        "network": network_report(first, last, seconds),
        "files": files_report(last),
        "window_s": round(seconds, 3),
        "samples": len(samples),
        "notes": notes,
    }


# ---------------------------------------------------------------- the probe

@register("host", description="CPU, load, PSI, memory and OOM kills, cgroup throttling, disks, network", timeout_s=5,
          options=(
              Option("samples", "int", DEFAULT_SAMPLES, "samples over the window", low=2, high=20),
              Option("kernel_log", "bool", True, "read OOM kills from the kernel log (/dev/kmsg)"),
              Option("kmsg_max_bytes", "int", DEFAULT_KMSG_MAX_BYTES, "bytes of the kernel log read, from the end",
                     low=4096, high=64 << 20),
          ), diagnosis=_host_facts.CONTRIBUTION)
def collect(ctx) -> dict:
    system = platform.system()
    if system != "Linux":
        raise NotApplicable(f"host probe reads Linux /proc; this is {system}")
    proc = ctx.paths.proc
    disks = hp.whole_disks(ctx.paths.sys)

    def take() -> dict:
        sample = take_sample(ctx.paths.proc, ctx.paths.sys, ctx.clock)
        if not ctx.partial:  # what we know if the window never completes
            ctx.partial.update(build_report([sample], disks))
        return sample

    count = ctx.options["samples"]
    samples = [s for _, s in ctx.sample(take, count=count)]
    if not samples:
        raise ProbeError(f"no sample of {proc} taken before the deadline (raise --probe-timeout)")
    if all(samples[0].get(p) is None for p in ("stat", "meminfo", "loadavg")):
        raise ProbeError(f"cannot read {proc}/stat, meminfo or loadavg ({samples[0]['errors'].get('stat')}); "
                         f"is /proc mounted?")

    kernel_log, reason = None, "turned off by [probes.host] kernel_log = false"
    if ctx.options["kernel_log"]:
        kernel_log, reason = read_kernel_log_ooms(
            ctx.paths.dev_kmsg, ctx.options["kmsg_max_bytes"],
            samples[-1].get("uptime"))
    return build_report(samples, disks, kernel_log, reason)

