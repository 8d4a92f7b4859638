"""The host probe's parsers and reports, on recorded /proc and /sys trees.

Expected values are worked out here from the raw numbers in the fixture files
(split by hand), not by calling the code under test.  The trees are described
in tests/fixtures/host/README.md; v1_throttled, v1_oom and no_psi were recorded
on a real cgroup-v1 host by tests/fixtures/host/record.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from qdiag.config import Settings
from qdiag.context import Paths, ProbeContext
from qdiag.probe import NotApplicable, ProbeError
from qdiag.probes import _host_parse as hp
from qdiag.probes import host

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "host"


# ---------------------------------------------------------------- helpers

def meta(case: str) -> dict:
    return json.loads((FIX / case / "meta.json").read_text())


def raw(case: str, stage: str, rel: str) -> str:
    return (FIX / case / stage / rel).read_text()


def root(case: str, stage: str, tree: str) -> str:
    return str(FIX / case / stage / tree)


def first_line_numbers(text: str, prefix: str) -> list[int]:
    for line in text.splitlines():
        if line.split()[0] == prefix:
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no {prefix} line")


def key_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, value = line.split()[:2]
        if name == key:
            return int(value)
    raise AssertionError(f"no {key}")


def header_value(text: str, proto: str, field: str) -> int:
    lines = [line.split() for line in text.splitlines() if line.startswith(proto + ":")]
    names, values = lines[0][1:], lines[1][1:]
    return int(values[names.index(field)])


def samples_of(case: str) -> list[dict]:
    """A t0 and a t1 sample as the probe takes them, timed as recorded."""
    window = meta(case)["window_s"]
    times = iter([100.0, 100.0 + window])
    return [host.take_sample(root(case, stage, "proc"), root(case, stage, "sys"), lambda: next(times))
            for stage in ("t0", "t1")]


def report_of(case: str, kernel_log=None, reason=None) -> dict:
    return host.build_report(samples_of(case), hp.whole_disks(root(case, "t0", "sys")), kernel_log, reason)


def copy_case(case: str, tmp_path: Path) -> Path:
    dest = tmp_path / case
    shutil.copytree(FIX / case, dest)
    return dest


# ---------------------------------------------------------------- CPU and load

def test_cpu_utilisation_from_recorded_proc_stat():
    before = first_line_numbers(raw("v1_throttled", "t0", "proc/stat"), "cpu")
    after = first_line_numbers(raw("v1_throttled", "t1", "proc/stat"), "cpu")
    d = [max(0, b - a) for a, b in zip(before[:8], after[:8])]  # user nice system idle iowait irq softirq steal
    total = sum(d)
    cpu = report_of("v1_throttled")["cpu"]
    assert cpu["busy_pct"] == pytest.approx(100 * (total - d[3] - d[4]) / total, abs=0.01)
    assert cpu["user_pct"] == pytest.approx(100 * (d[0] + d[1]) / total, abs=0.01)
    assert cpu["system_pct"] == pytest.approx(100 * d[2] / total, abs=0.01)
    assert cpu["iowait_pct"] == pytest.approx(100 * d[4] / total, abs=0.01)
    assert cpu["steal_pct"] == pytest.approx(100 * d[7] / total, abs=0.01)
    assert cpu["softirq_pct"] == pytest.approx(100 * d[6] / total, abs=0.01)
    assert cpu["cores"] == 2


def test_per_cpu_busiest_and_imbalance():
    busy = {}
    for name in ("cpu0", "cpu1"):
        a = first_line_numbers(raw("v1_throttled", "t0", "proc/stat"), name)[:8]
        b = first_line_numbers(raw("v1_throttled", "t1", "proc/stat"), name)[:8]
        d = [y - x for x, y in zip(a, b)]
        busy[name] = 100 * (sum(d) - d[3] - d[4]) / sum(d)
    cpu = report_of("v1_throttled")["cpu"]
    top = max(busy, key=busy.get)
    assert cpu["max_cpu"] == top
    assert cpu["max_cpu_busy_pct"] == pytest.approx(busy[top], abs=0.01)
    assert cpu["min_cpu_busy_pct"] == pytest.approx(min(busy.values()), abs=0.01)
    assert cpu["imbalance_pct"] == pytest.approx(busy[top] - sum(busy.values()) / 2, abs=0.02)
    assert set(cpu["per_cpu_busy_pct"]) == {"cpu0", "cpu1"}


def test_cpu_modes_on_a_kernel_with_steal_and_iowait():
    # Written by hand: 4 s of 2 CPUs at USER_HZ 100 = 800 ticks.
    t0 = ("cpu  1000 0 500 8000 100 10 20 30 0 0\ncpu0 500 0 250 4000 50 5 10 15 0 0\n"
          "cpu1 500 0 250 4000 50 5 10 15 0 0\n")
    t1 = ("cpu  1400 0 600 8140 180 10 40 70 200 0\ncpu0 890 0 290 4010 50 5 20 35 200 0\n"
          "cpu1 510 0 310 4130 130 5 20 35 0 0\nprocs_running 7\nprocs_blocked 3\n")
    first = {"stat": hp.parse_proc_stat(t0)}
    last = {"stat": hp.parse_proc_stat(t1)}
    cpu = host.cpu_report(first, last)
    # deltas: user 400 system 100 idle 140 iowait 80 softirq 20 steal 40 -> total 780 (guest is inside user)
    assert cpu["busy_pct"] == pytest.approx(100 * 560 / 780, abs=0.01)
    assert cpu["iowait_pct"] == pytest.approx(100 * 80 / 780, abs=0.01)
    assert cpu["steal_pct"] == pytest.approx(100 * 40 / 780, abs=0.01)
    # cpu0: user 390 + system 40 + softirq 10 + steal 20 busy of 470 ticks;
    # cpu1: 10 + 60 + 10 + 20 busy of 310 (130 idle, 80 iowait)
    assert cpu["max_cpu"] == "cpu0"
    assert cpu["max_cpu_busy_pct"] == pytest.approx(100 * 460 / 470, abs=0.01)
    assert cpu["min_cpu_busy_pct"] == pytest.approx(100 * 100 / 310, abs=0.01)
    load = host.load_report([first, last])
    assert (load["procs_running"], load["procs_blocked"]) == (7, 3)


def test_load_per_core_and_run_queue():
    load_text = raw("v1_throttled", "t1", "proc/loadavg").split()
    stat = raw("v1_throttled", "t1", "proc/stat")
    load = report_of("v1_throttled")["load"]
    assert load["load1"] == float(load_text[0])
    assert load["load1_per_core"] == pytest.approx(float(load_text[0]) / 2, abs=0.001)
    assert load["load15_per_core"] == pytest.approx(float(load_text[2]) / 2, abs=0.001)
    assert load["procs_running"] == first_line_numbers(stat, "procs_running")[0]
    assert load["procs_blocked"] == first_line_numbers(stat, "procs_blocked")[0]
    assert load["procs_running_max"] == max(
        first_line_numbers(raw("v1_throttled", s, "proc/stat"), "procs_running")[0] for s in ("t0", "t1"))


# ---------------------------------------------------------------- PSI

def _psi_total(text: str, kind: str) -> int:
    for line in text.splitlines():
        if line.startswith(kind):
            return int(line.rsplit("total=", 1)[1])
    raise AssertionError(kind)


def test_psi_stall_fraction_from_total_delta():
    window = meta("v1_throttled")["window_s"]
    psi = report_of("v1_throttled")["psi"]
    for resource in ("cpu", "memory", "io"):
        a = raw("v1_throttled", "t0", f"proc/pressure/{resource}")
        b = raw("v1_throttled", "t1", f"proc/pressure/{resource}")
        for kind in ("some", "full"):
            expected = min(1.0, (_psi_total(b, kind) - _psi_total(a, kind)) / (window * 1e6))
            assert psi[resource][kind]["stall_fraction"] == pytest.approx(expected, abs=1e-4), (resource, kind)
    avg10 = float(raw("v1_throttled", "t1", "proc/pressure/cpu").split()[1].split("=")[1])
    assert psi["cpu"]["some"]["avg10"] == avg10
    # The recording had a busy loop on a 2-core host: somebody waited for CPU.
    assert psi["cpu"]["some"]["stall_fraction"] > 0


def test_psi_absent_is_none_with_a_reason_not_an_error():
    report = report_of("no_psi")
    assert report["psi"] == {"cpu": None, "memory": None, "io": None}
    psi_notes = [n for n in report["notes"] if n.startswith("psi.")]
    assert len(psi_notes) == 3
    assert all("not found" in n and "CONFIG_PSI" in n for n in psi_notes)
    assert report["cpu"]["busy_pct"] is not None and report["memory"]["total_bytes"] > 0


def test_psi_cpu_without_full_line_before_5_13():
    text = "some avg10=1.50 avg60=0.80 avg300=0.20 total=1000000\n"
    later = "some avg10=2.00 avg60=0.90 avg300=0.25 total=1500000\n"
    first, last = {"psi.cpu": hp.parse_psi(text)}, {"psi.cpu": hp.parse_psi(later)}
    psi = host.psi_report(first, last, 2.0)
    assert psi["cpu"]["full"] is None
    assert psi["cpu"]["some"]["stall_fraction"] == pytest.approx(0.25)
    assert psi["memory"] is None


def test_psi_switched_off_note():
    sample = {"t": 0.0, "errors": {"psi.io": hp.describe_error("/proc/pressure/io", OSError(errno.EOPNOTSUPP, "x"))}}
    assert "psi=1" in host._notes([sample])[0]


# ---------------------------------------------------------------- memory and OOM

def test_memory_from_meminfo_and_vmstat():
    window = meta("v1_throttled")["window_s"]
    mem_text = raw("v1_throttled", "t1", "proc/meminfo")
    kb = {line.split(":")[0]: int(line.split()[1]) for line in mem_text.splitlines()}
    v0, v1 = raw("v1_throttled", "t0", "proc/vmstat"), raw("v1_throttled", "t1", "proc/vmstat")
    mem = report_of("v1_throttled")["memory"]
    assert mem["total_bytes"] == kb["MemTotal"] * 1024
    assert mem["available_bytes"] == kb["MemAvailable"] * 1024
    assert mem["available_pct"] == pytest.approx(100 * kb["MemAvailable"] / kb["MemTotal"], abs=0.01)
    assert mem["swap_used_bytes"] == (kb["SwapTotal"] - kb["SwapFree"]) * 1024
    majflt = (key_value(v1, "pgmajfault") - key_value(v0, "pgmajfault")) / window
    assert mem["major_faults_per_s"] == pytest.approx(majflt, abs=0.01)
    assert mem["swap_in_pages_per_s"] == pytest.approx((key_value(v1, "pswpin") - key_value(v0, "pswpin")) / window)


def test_swap_rates_by_hand():
    first = {"vmstat": {"pswpin": 100, "pswpout": 1000, "pgmajfault": 5}, "meminfo": None}
    last = {"vmstat": {"pswpin": 160, "pswpout": 1400, "pgmajfault": 25},
            "meminfo": {"MemTotal": 8 << 30, "MemAvailable": 1 << 30, "SwapTotal": 2 << 30, "SwapFree": 1 << 30}}
    mem = host.memory_report(first, last, 4.0)
    assert (mem["swap_in_pages_per_s"], mem["swap_out_pages_per_s"], mem["major_faults_per_s"]) == (15.0, 100.0, 5.0)
    assert mem["available_pct"] == 12.5 and mem["swap_used_bytes"] == 1 << 30


def test_oom_kill_delta_and_kernel_log_of_a_real_cgroup_oom():
    info = meta("v1_oom")
    kmsg = FIX / "v1_oom" / "t1" / "dev" / "kmsg"
    kill_line = next(line for line in kmsg.read_text().splitlines() if "Killed process" in line)
    kill_usec = int(kill_line.split(";")[0].split(",")[2])
    uptime = float(raw("v1_oom", "t1", "proc/uptime").split()[0])
    log, reason = host.read_kernel_log_ooms(str(kmsg), 1 << 20, uptime)
    report = report_of("v1_oom", log, reason)
    delta = (key_value(raw("v1_oom", "t1", "proc/vmstat"), "oom_kill")
             - key_value(raw("v1_oom", "t0", "proc/vmstat"), "oom_kill"))
    assert report["oom"]["oom_kill"] == delta == 1
    kills = report["oom"]["kernel_log"]["kills"]
    assert len(kills) == 1
    assert kills[0]["pid"] == info["victim_pid"]
    assert kills[0]["scope"] == "cgroup"
    assert kills[0]["memcg"].startswith("/qdiag-rec-oom-")
    assert kills[0]["age_s"] == pytest.approx(uptime - kill_usec / 1e6, abs=0.1)
    assert report["oom"]["kernel_log"]["kills_last_hour"] == 1
    assert report["oom"]["kernel_log"]["truncated"] is False


def test_oom_kill_lines_of_older_kernels_count_once():
    text = ("3,100,5000000,-;Out of memory: Kill process 4242 (java) score 901 or sacrifice child\n"
            "3,101,5000100,-;Killed process 4242 (java) total-vm:8123456kB, anon-rss:7000000kB, file-rss:0kB\n"
            "6,102,9000000,-;eth0: link up\n"
            "3,103,9500000,-;Out of memory: Killed process 77 (my worker) total-vm:10kB, anon-rss:5kB\n"
            " SUBSYSTEM=memory\n")
    kills = hp.parse_oom_kills(text, uptime_s=10.0)
    assert [(k["pid"], k["process"], k["scope"]) for k in kills] == [
        (4242, "java", "global"), (77, "my worker", "global")]
    assert kills[0]["age_s"] == pytest.approx(5.0, abs=0.01)


def test_kernel_log_unreadable_is_none_with_reason(tmp_path):
    log, reason = host.read_kernel_log_ooms(str(tmp_path / "no-kmsg"), 1 << 20, 100.0)
    assert log is None and "not found" in reason


def test_kernel_log_read_is_bounded():
    kmsg = FIX / "v1_oom" / "t1" / "dev" / "kmsg"
    text, truncated = hp.read_kmsg(str(kmsg), 1000)
    assert truncated and len(text.encode()) < kmsg.stat().st_size


# ---------------------------------------------------------------- disks

def _disk_row(case: str, stage: str, name: str) -> list[int]:
    for line in raw(case, stage, "proc/diskstats").splitlines():
        parts = line.split()
        if parts[2] == name:
            return [int(x) for x in parts[3:]]
    raise AssertionError(name)


def test_disk_busy_await_iops_and_bytes():
    window = meta("v1_throttled")["window_s"]
    a, b = _disk_row("v1_throttled", "t0", "vda"), _disk_row("v1_throttled", "t1", "vda")
    d = [y - x for x, y in zip(a, b)]
    disks = {row["device"]: row for row in report_of("v1_throttled")["disks"]}
    vda = disks["vda"]
    assert vda["busy_pct"] == pytest.approx(min(100.0, 100 * d[9] / (window * 1000)), abs=0.01)
    assert vda["await_ms"] == pytest.approx((d[3] + d[7]) / (d[0] + d[4]), abs=0.001)
    assert vda["read_iops"] == pytest.approx(d[0] / window, abs=0.01)
    assert vda["write_iops"] == pytest.approx(d[4] / window, abs=0.01)
    assert vda["write_bytes_per_s"] == pytest.approx(d[6] * 512 / window, abs=0.1)
    assert vda["write_bytes_per_s"] > 1e6  # the recording wrote 8 MiB with fsync
    assert not any(name.startswith("loop") for name in disks)


def test_partitions_dropped_without_sys_block():
    names = {"sda", "sda1", "sda2", "nvme0n1", "nvme0n1p1", "vda", "loop0", "ram0", "dm-0", "md127"}
    kept = {n for n in names if hp.is_reported_disk(n, names, None)}
    assert kept == {"sda", "nvme0n1", "vda", "dm-0", "md127"}


def test_disk_await_none_without_io():
    row = "   8       0 sda 10 0 80 5 20 0 160 7 0 9 12 0 0 0 0\n"
    first, last = {"diskstats": hp.parse_diskstats(row)}, {"diskstats": hp.parse_diskstats(row)}
    disk = host.disk_report(first, last, 1.0, {"sda"})[0]
    assert disk["await_ms"] is None and disk["busy_pct"] == 0.0 and disk["read_iops"] == 0.0


# ---------------------------------------------------------------- network, files

def test_tcp_retransmits_and_listen_overflows_recorded():
    snmp = [raw("v1_throttled", s, "proc/net/snmp") for s in ("t0", "t1")]
    netstat = [raw("v1_throttled", s, "proc/net/netstat") for s in ("t0", "t1")]
    retrans = header_value(snmp[1], "Tcp", "RetransSegs") - header_value(snmp[0], "Tcp", "RetransSegs")
    out_segs = header_value(snmp[1], "Tcp", "OutSegs") - header_value(snmp[0], "Tcp", "OutSegs")
    overflows = (header_value(netstat[1], "TcpExt", "ListenOverflows")
                 - header_value(netstat[0], "TcpExt", "ListenOverflows"))
    drops = header_value(netstat[1], "TcpExt", "ListenDrops") - header_value(netstat[0], "TcpExt", "ListenDrops")
    net = report_of("v1_throttled")["network"]
    assert net["tcp"]["retrans_segs"] == retrans > 0
    assert net["tcp"]["retrans_ratio"] == pytest.approx(retrans / out_segs, abs=1e-4)
    assert net["listen"]["overflows"] == overflows > 0
    assert net["listen"]["drops"] == drops
    assert net["tcp"]["curr_estab"] == header_value(snmp[1], "Tcp", "CurrEstab")


def test_interfaces_skip_loopback_and_give_rates():
    window = meta("v1_throttled")["window_s"]
    rows = [dict((line.split(":")[0].strip(), [int(x) for x in line.split(":")[1].split()])
                 for line in raw("v1_throttled", s, "proc/net/dev").splitlines()[2:]) for s in ("t0", "t1")]
    net = report_of("v1_throttled")["network"]
    names = [i["name"] for i in net["interfaces"]]
    assert "lo" not in names and "eth0" in names
    eth0 = next(i for i in net["interfaces"] if i["name"] == "eth0")
    assert eth0["rx_bytes_per_s"] == pytest.approx((rows[1]["eth0"][0] - rows[0]["eth0"][0]) / window, abs=0.1)
    assert eth0["tx_bytes_per_s"] == pytest.approx((rows[1]["eth0"][8] - rows[0]["eth0"][8]) / window, abs=0.1)


def test_interface_errors_and_drops_by_hand():
    head = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast"
            "|bytes    packets errs drop fifo colls carrier compressed\n")
    t0 = head + "  eth1: 1000 10 1 2 0 0 0 0 5000 50 0 0 0 0 0 0\n    lo: 9 9 0 0 0 0 0 0 9 9 0 0 0 0 0 0\n"
    t1 = head + "  eth1: 21000 30 4 12 0 0 0 0 7000 60 2 1 0 0 0 0\n    lo: 99 99 0 0 0 0 0 0 99 99 0 0 0 0 0 0\n"
    net = host.network_report({"net_dev": hp.parse_net_dev(t0)}, {"net_dev": hp.parse_net_dev(t1)}, 2.0)
    assert net["interfaces"] == [{"name": "eth1", "rx_bytes_per_s": 10000.0, "tx_bytes_per_s": 1000.0,
                                  "rx_packets_per_s": 10.0, "tx_packets_per_s": 5.0, "rx_errors": 3,
                                  "tx_errors": 2, "rx_drops": 10, "tx_drops": 1}]


def test_conntrack_file_handles_and_ports():
    count = int(raw("v1_throttled", "t1", "proc/sys/net/netfilter/nf_conntrack_count"))
    maximum = int(raw("v1_throttled", "t1", "proc/sys/net/netfilter/nf_conntrack_max"))
    allocated, free, file_max = (int(x) for x in raw("v1_throttled", "t1", "proc/sys/fs/file-nr").split())
    low, high = (int(x) for x in raw("v1_throttled", "t1", "proc/sys/net/ipv4/ip_local_port_range").split())
    report = report_of("v1_throttled")
    assert report["network"]["conntrack"] == {"count": count, "max": maximum, "ratio": round(count / maximum, 4)}
    assert report["files"]["allocated"] == allocated - free
    assert report["files"]["ratio"] == pytest.approx((allocated - free) / file_max, abs=1e-6)
    assert report["network"]["ephemeral_ports"]["size"] == high - low + 1


def test_conntrack_absent_is_none_with_reason(tmp_path):
    case = copy_case("v1_throttled", tmp_path)
    for stage in ("t0", "t1"):
        shutil.rmtree(case / stage / "proc" / "sys" / "net" / "netfilter")
    samples = [host.take_sample(str(case / s / "proc"), str(case / s / "sys"), lambda: t) for s, t in
               (("t0", 0.0), ("t1", 2.0))]
    report = host.build_report(samples, None)
    assert report["network"]["conntrack"] is None
    assert any(n.startswith("network.conntrack:") and "nf_conntrack not loaded" in n for n in report["notes"])
    assert report["network"]["tcp"] is not None


# ---------------------------------------------------------------- cgroups

def cgroup_over(case: str, pid="self") -> dict:
    before = hp.cgroup_stats(root(case, "t0", "proc"), root(case, "t0", "sys"), pid)
    after = hp.cgroup_stats(root(case, "t1", "proc"), root(case, "t1", "sys"), pid)
    return hp.cgroup_delta(before, after, meta(case)["window_s"])


def _find(case: str, stage: str, pattern: str) -> Path:
    found = list((FIX / case / stage).glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_v1_cpu_quota_hit_shows_as_throttled():
    info = meta("v1_throttled")
    stat = [_find("v1_throttled", s, "sys/fs/cgroup/cpu/qdiag-rec-*/cpu.stat").read_text() for s in ("t0", "t1")]
    periods = key_value(stat[1], "nr_periods") - key_value(stat[0], "nr_periods")
    throttled = key_value(stat[1], "nr_throttled") - key_value(stat[0], "nr_throttled")
    throttled_ns = key_value(stat[1], "throttled_time") - key_value(stat[0], "throttled_time")
    cg = cgroup_over("v1_throttled", info["throttled_pid"])
    cpu = cg["cpu"]
    assert cg["version"] == "v1" and cpu["resolved"] == "exact"
    assert cpu["quota_cores"] == pytest.approx(info["quota_cores"])
    assert cpu["nr_periods"] == periods and cpu["nr_throttled"] == throttled > 0
    assert cpu["throttled_ratio"] == pytest.approx(throttled / periods, abs=1e-4)
    assert cpu["throttled_s"] == pytest.approx(throttled_ns / 1e9, abs=1e-6)
    assert cpu["throttled"] is True
    # cpuacct is its own hierarchy on this host and the child sat at its root.
    assert cpu["usage_path"] == "/"


def test_v1_memory_of_qdiags_own_cgroup_is_unlimited():
    cg = cgroup_over("v1_throttled")
    own = raw("v1_throttled", "t1", "proc/self/cgroup")
    memory_path = next(line.split(":", 2)[2] for line in own.splitlines() if line.split(":")[1] == "memory")
    assert cg["memory"]["path"] == memory_path
    assert cg["memory"]["limit_bytes"] is None and cg["memory"]["usage_ratio"] is None
    usage = int(raw("v1_throttled", "t1", f"sys/fs/cgroup/memory{memory_path}/memory.usage_in_bytes"))
    assert cg["memory"]["current_bytes"] == usage
    assert cg["cpu"]["quota_cores"] is None and cg["cpu"]["throttled"] is False


def test_v1_memory_limit_failcnt_and_oom_kill_of_a_real_oom():
    info = meta("v1_oom")
    files = {s: _find("v1_oom", s, "sys/fs/cgroup/memory/qdiag-rec-oom-*/memory.failcnt").parent for s in ("t0", "t1")}
    failcnt = int((files["t1"] / "memory.failcnt").read_text()) - int((files["t0"] / "memory.failcnt").read_text())
    usage = int((files["t1"] / "memory.usage_in_bytes").read_text())
    mem = cgroup_over("v1_oom", info["member_pid"])["memory"]
    assert mem["limit_bytes"] == info["limit_bytes"]
    assert mem["limit_path"] == mem["path"]
    assert mem["failcnt"] == failcnt > 0
    assert mem["memsw_failcnt"] == 0  # no swap on the recording host: its limit is never the one hit
    assert mem["oom_kill"] == 1
    assert mem["under_oom"] is False
    assert mem["usage_ratio"] == pytest.approx(usage / info["limit_bytes"], abs=1e-4)


def test_v2_quota_throttling_and_parent_memory_limit():
    cg = cgroup_over("v2_handmade")
    cpu, mem = cg["cpu"], cg["memory"]
    assert cg["version"] == "v2"
    # cpu.max "50000 100000"; cpu.stat deltas: 20 periods, 15 throttled, 750000 µs, usage 1000000 µs over 2 s
    assert cpu["quota_cores"] == 0.5 and cpu["quota_path"] == "/system.slice/worker.service"
    assert (cpu["nr_periods"], cpu["nr_throttled"]) == (20, 15)
    assert cpu["throttled_ratio"] == 0.75 and cpu["throttled_s"] == pytest.approx(0.75)
    assert cpu["usage_cores"] == pytest.approx(0.5)
    # memory.max 2 GiB on the service, 1 GiB on system.slice: the parent's is the one that bites.
    assert mem["limit_bytes"] == 1 << 30 and mem["limit_path"] == "/system.slice"
    assert mem["high_bytes"] == 1610612736
    assert mem["current_bytes"] == 1040187392
    assert mem["usage_ratio"] == pytest.approx(1065353216 / (1 << 30), abs=1e-4)
    # events of the limit holder: max 12 -> 40, oom 1 -> 2, oom_kill 1 -> 2
    assert mem["events"] == {"high": 0, "max": 28, "oom": 1, "oom_kill": 1}


def test_v2_controller_not_enabled_and_unlimited_memory():
    cg = cgroup_over("v2_handmade", 777)
    assert cg["cpu"] is None
    assert any("cpu: controller not enabled" in n for n in cg["notes"])
    assert cg["memory"]["limit_bytes"] is None and cg["memory"]["usage_ratio"] is None
    assert cg["memory"]["current_bytes"] == 54525952


def test_container_path_is_mapped_through_the_mount_root():
    cg = cgroup_over("v1_container")
    cpu, mem = cg["cpu"], cg["memory"]
    assert cpu["resolved"] == mem["resolved"] == "exact"
    # cpu,cpuacct co-mounted: quota 150000/100000; stat 4000->4030 periods, 300->310 throttled, 0.75 s; usage 3 s in 3 s
    assert cpu["quota_cores"] == 1.5
    assert (cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_ratio"]) == (30, 10, pytest.approx(1 / 3, abs=1e-4))
    assert cpu["throttled_s"] == pytest.approx(0.75) and cpu["usage_cores"] == pytest.approx(1.0)
    assert mem["limit_bytes"] == 536870912 and mem["failcnt"] == 4
    assert mem["memsw_failcnt"] == 2  # memory.memsw.failcnt 0 -> 2
    assert mem["usage_ratio"] == pytest.approx(301989888 / 536870912, abs=1e-4)
    assert cg["notes"] == []


def test_container_path_not_found_falls_back_to_mount_root():
    cg = cgroup_over("v1_container_fallback")
    assert cg["cpu"]["resolved"] == cg["memory"]["resolved"] == "mount_root_fallback"
    assert cg["cpu"]["quota_cores"] is None  # -1
    assert cg["memory"]["limit_bytes"] is None  # 9223372036854771712: no limit
    assert cg["memory"]["current_bytes"] == 301989888
    assert cg["cpu"]["usage_cores"] == pytest.approx(1.0)
    assert sum("read the mount root instead" in n for n in cg["notes"]) == 2


def test_without_mountinfo_the_usual_layout_is_guessed(tmp_path):
    case = copy_case("v1_container", tmp_path)
    for stage in ("t0", "t1"):
        (case / stage / "proc" / "self" / "mountinfo").unlink()
    before = hp.cgroup_stats(str(case / "t0" / "proc"), str(case / "t0" / "sys"))
    after = hp.cgroup_stats(str(case / "t1" / "proc"), str(case / "t1" / "sys"))
    cg = hp.cgroup_delta(before, after, 3.0)
    assert cg["cpu"]["quota_cores"] == 1.5 and cg["cpu"]["nr_throttled"] == 10
    assert cg["memory"]["limit_bytes"] == 536870912
    assert any("mountinfo: not found" in n for n in cg["notes"])


def test_exited_process_gives_notes_not_an_exception():
    cg = cgroup_over("v1_throttled", 999999)
    assert cg["cpu"] is None and cg["memory"] is None and cg["version"] is None
    assert any("process exited?" in n for n in cg["notes"])


def test_process_that_moved_cgroup_has_no_deltas():
    before = hp.cgroup_stats(root("v2_handmade", "t0", "proc"), root("v2_handmade", "t0", "sys"), "self")
    after = hp.cgroup_stats(root("v2_handmade", "t1", "proc"), root("v2_handmade", "t1", "sys"), 777)
    cg = hp.cgroup_delta(before, after, 2.0)
    assert cg["memory"]["events"] == {"high": None, "max": None, "oom": None, "oom_kill": None}
    assert any("moved" in n for n in cg["notes"])


def test_mountinfo_escapes_and_cgroup_lines():
    mounts = hp.parse_mountinfo_cgroups(
        "40 31 0:37 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw\n"
        "22 1 0:21 / /proc rw - proc proc rw\n")
    assert [m["mount_point"] for m in mounts] == ["/sys/fs/cgroup/my dir", "/sys/fs/cgroup/unified"]
    assert mounts[0]["options"] == ["rw", "name=systemd"]
    lines = hp.parse_proc_cgroup("4:cpu,cpuacct:/a/b\n0::/c\n")
    assert lines == [{"id": "4", "controllers": ["cpu", "cpuacct"], "path": "/a/b"},
                     {"id": "0", "controllers": [], "path": "/c"}]


# ---------------------------------------------------------------- the probe on fixture trees

def fixture_ctx(case: str, options=None) -> ProbeContext:
    """A context whose clock is fake and whose first sleep moves /proc from t0 to t1."""
    window = meta(case)["window_s"]
    now = [0.0]
    stage_paths = {s: Paths(proc=root(case, s, "proc"), sys=root(case, s, "sys"),
                            dev_kmsg=str(FIX / case / "t1" / "dev" / "kmsg")) for s in ("t0", "t1")}
    settings = Settings(window_s=window, probe_options={"host": options or {}})
    ctx = ProbeContext(settings=settings, name="host", deadline=window + 5, window_start=0.0,
                       paths=stage_paths["t0"], clock=lambda: now[0])

    def sleep(seconds: float) -> None:
        now[0] += seconds
        ctx.paths = stage_paths["t1"]

    ctx.sleeper = sleep
    return ctx


def test_collect_on_recorded_tree():
    ctx = fixture_ctx("v1_oom")
    report = host.collect(ctx)
    assert report["window_s"] == pytest.approx(meta("v1_oom")["window_s"], abs=1e-3)
    assert report["samples"] == 3
    assert report["oom"]["oom_kill"] == 1
    assert [k["pid"] for k in report["oom"]["kernel_log"]["kills"]] == [meta("v1_oom")["victim_pid"]]
    assert report["cgroup"]["version"] == "v1" and report["cgroup"]["memory"]["limit_bytes"] is None
    assert report["notes"] == []
    assert ctx.partial["cpu"] is None and ctx.partial["memory"]["total_bytes"] > 0  # from the first sample alone
    json.dumps(report)


def test_collect_kernel_log_missing_and_switched_off():
    report = host.collect(fixture_ctx("v1_throttled"))
    assert report["oom"]["kernel_log"] is None
    assert any(n.startswith("oom.kernel_log:") and "not found" in n for n in report["notes"])
    off = host.collect(fixture_ctx("v1_throttled", {"kernel_log": False}))
    assert any("kernel_log = false" in n for n in off["notes"])


def test_collect_one_sample_only_reports_gauges():
    sample = samples_of("v1_throttled")[0]
    report = host.build_report([sample], None)
    assert report["cpu"] is None and report["memory"]["swap_in_pages_per_s"] is None
    assert report["load"]["load1"] is not None and report["memory"]["total_bytes"] > 0
    assert report["psi"]["cpu"]["some"]["stall_fraction"] is None
    assert any("only one sample" in n for n in report["notes"])


def test_collect_without_proc_is_a_probe_error(tmp_path):
    ctx = fixture_ctx("v1_throttled")
    ctx.paths = Paths(proc=str(tmp_path / "proc"), sys=str(tmp_path / "sys"), dev_kmsg=str(tmp_path / "kmsg"))
    ctx.sleeper = lambda s: None
    with pytest.raises(ProbeError, match="is /proc mounted"):
        host.collect(ctx)


def test_not_linux_is_not_applicable(monkeypatch):
    monkeypatch.setattr(host.platform, "system", lambda: "Darwin")
    with pytest.raises(NotApplicable, match="this is Darwin"):
        host.collect(fixture_ctx("v1_throttled"))


def test_fixture_trees_were_recorded_where_expected():
    # Guards the helpers above against silently reading nothing.
    for case in ("v1_throttled", "no_psi", "v1_oom", "v2_handmade", "v1_container", "v1_container_fallback"):
        for stage in ("t0", "t1"):
            assert os.path.isfile(FIX / case / stage / "proc" / "self" / "cgroup"), (case, stage)


def _freezer_tree(tmp_path: Path, v1_state: str | None, v2_events: str | None) -> tuple[list, list, str]:
    """A hybrid host's /sys: the v1 freezer at /sys/fs/cgroup/freezer, cgroup2 at .../unified."""
    sys_root = tmp_path / "sys"
    v1 = sys_root / "fs/cgroup/freezer/docker/ab12"
    v2 = sys_root / "fs/cgroup/unified/system.slice/docker-ab12.scope"
    for directory, name, text in ((v1, "freezer.state", v1_state), (v2, "cgroup.events", v2_events)):
        directory.mkdir(parents=True)
        if text is not None:
            (directory / name).write_text(text)
    memberships = [{"id": "6", "controllers": ["freezer"], "path": "/docker/ab12"},
                   {"id": "0", "controllers": [], "path": "/system.slice/docker-ab12.scope"}]
    mounts = [{"root": "/", "mount_point": "/sys/fs/cgroup/freezer", "fstype": "cgroup", "options": ["rw", "freezer"]},
              {"root": "/", "mount_point": "/sys/fs/cgroup/unified", "fstype": "cgroup2", "options": ["rw"]}]
    return memberships, mounts, str(sys_root)


def test_freezer_read_from_either_hierarchy(tmp_path):
    thawed_v2 = "populated 1\nfrozen 0\n"
    reading = hp.freezer_reading(*_freezer_tree(tmp_path / "a", "FROZEN\n", thawed_v2))
    assert reading == {"frozen": True, "version": "v1", "path": "/docker/ab12", "file": "freezer.state",
                       "value": "FROZEN"}
    reading = hp.freezer_reading(*_freezer_tree(tmp_path / "b", "THAWED\n", "populated 1\nfrozen 1\n"))
    assert (reading["frozen"], reading["version"], reading["value"]) == (True, "v2", "frozen 1")
    # Still catching tasks: some already frozen, the cgroup will not run.
    assert hp.freezer_reading(*_freezer_tree(tmp_path / "c", "FREEZING\n", thawed_v2))["frozen"] is True
    assert hp.freezer_reading(*_freezer_tree(tmp_path / "d", "THAWED\n", thawed_v2))["frozen"] is False
    # No freezer file (the v2 root cgroup; a kernel before 5.2 has no "frozen" key): unknown, not thawed.
    assert hp.freezer_reading(*_freezer_tree(tmp_path / "e", None, "populated 1\n")) is None


def test_freezer_of_a_root_cgroup_is_thawed(tmp_path):
    """The root of a hierarchy has no freezer file: it cannot be frozen."""
    memberships, mounts, sys_root = _freezer_tree(tmp_path, None, None)
    at_root = [dict(m, path="/") for m in memberships]
    reading = hp.freezer_reading(at_root, mounts, sys_root)
    assert reading["frozen"] is False and reading["value"] == "the root cgroup, which cannot be frozen"


def test_freezer_of_a_cgroup_that_does_not_resolve_is_unknown(tmp_path):
    """A path absent under the mount would make the mount's root stand in: another cgroup, no guess."""
    memberships, mounts, sys_root = _freezer_tree(tmp_path, "FROZEN\n", "frozen 1\n")
    moved = [dict(m, path="/elsewhere") for m in memberships]
    assert hp.freezer_reading(moved, mounts, sys_root) is None
