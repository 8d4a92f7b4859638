"""The host probe on this real host: through the Runner, its CPU cost, and its
cgroup functions against cgroups created here (a CPU quota that is hit, a memory
limit that OOM-kills).  The cgroup tests need root and a writable cgroup
hierarchy; they skip with the reason otherwise and remove what they create."""

from __future__ import annotations

import errno
import os
import platform
import subprocess
import sys
import time
import uuid

import pytest

from qdiag import probe as P
from qdiag.config import Settings
from qdiag.context import ProbeContext
from qdiag.probes import _host_parse as hp
from qdiag.probes import host
from qdiag.runner import Runner

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(platform.system() != "Linux", reason="the host probe reads Linux /proc")]


def run_host_probe(window_s: float = 1.0) -> P.ProbeResult:
    settings = Settings(window_s=window_s, timeout_s=30.0)
    results, _ = Runner(settings, [P.REGISTRY["host"]]).run()
    return results[0]


def pct(value) -> bool:
    return value is not None and 0.0 <= value <= 100.0


def test_registered_and_always_applicable():
    probe = P.all_probes()["host"]
    assert probe.needs == () and probe.timeout_s == 5


def test_runner_on_this_host_gives_sane_ranges():
    result = run_host_probe(1.0)
    assert result.status == P.OK, result.error
    obs = result.observations
    assert 0.8 <= obs["window_s"] <= 3.0  # sampled over the 1 s window (slack for a loaded machine)
    cpu = obs["cpu"]
    for key in ("busy_pct", "user_pct", "system_pct", "iowait_pct", "steal_pct", "idle_pct", "max_cpu_busy_pct"):
        assert pct(cpu[key]), (key, cpu[key])
    assert cpu["cores"] == len(cpu["per_cpu_busy_pct"]) >= 1
    assert cpu["min_cpu_busy_pct"] <= cpu["max_cpu_busy_pct"]
    load = obs["load"]
    assert load["load1"] >= 0 and load["load1_per_core"] >= 0 and load["procs_running"] >= 1
    mem = obs["memory"]
    assert 0 < mem["available_bytes"] <= mem["total_bytes"] and pct(mem["available_pct"])
    assert mem["major_faults_per_s"] >= 0 and mem["swap_in_pages_per_s"] >= 0
    for resource, section in obs["psi"].items():
        if section is None:
            assert any(n.startswith(f"psi.{resource}:") for n in obs["notes"])
            continue
        assert 0.0 <= section["some"]["stall_fraction"] <= 1.0
        assert pct(section["some"]["avg10"])
    for disk in obs["disks"]:
        assert pct(disk["busy_pct"]) and disk["read_iops"] >= 0 and disk["write_bytes_per_s"] >= 0
        assert not disk["device"].startswith(("loop", "ram"))
    net = obs["network"]
    assert all(i["name"] != "lo" and i["rx_bytes_per_s"] >= 0 for i in net["interfaces"])
    assert net["tcp"]["retrans_segs"] >= 0 and net["listen"]["overflows"] >= 0
    assert 0 < obs["files"]["allocated"] <= obs["files"]["max"]
    assert obs["oom"]["oom_kill"] is None or obs["oom"]["oom_kill"] >= 0
    assert obs["cgroup"]["version"] in ("v1", "v2", "hybrid")
    assert isinstance(obs["notes"], list)


def test_own_cgroup_matches_proc_self_cgroup():
    obs = run_host_probe(0.5).observations
    paths = {}
    for line in open("/proc/self/cgroup").read().splitlines():
        hid, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else ["" if hid == "0" else hid]:
            paths[c] = path
    memory = obs["cgroup"]["memory"]
    if memory is not None:
        assert memory["path"] == paths.get("memory", paths.get(""))


def test_probe_cpu_time_is_small():
    settings = Settings(window_s=1.0)
    ctx = ProbeContext(settings=settings, name="host", deadline=time.monotonic() + 10, window_start=time.monotonic())
    started = time.process_time()
    host.collect(ctx)
    used = time.process_time() - started
    # Measured about 0.01 s here; the bound only catches something gone badly wrong.
    assert used < 0.25, f"host probe used {used:.3f} s of CPU for a 1 s window"


# ---------------------------------------------------------------- live cgroups

def _cgroup_mount(controller: str) -> tuple[str, str]:
    """(version, mount point) where a test cgroup for `controller` can be made, or skip."""
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    mounts = hp.parse_mountinfo_cgroups(open("/proc/self/mountinfo").read())
    for m in mounts:
        if m["fstype"] == "cgroup" and controller in m["options"]:
            return "v1", m["mount_point"]
    for m in mounts:
        if m["fstype"] == "cgroup2":
            try:
                available = open(os.path.join(m["mount_point"], "cgroup.subtree_control")).read().split()
            except OSError:
                continue
            if controller in available:
                return "v2", m["mount_point"]
    pytest.skip(f"no writable cgroup hierarchy with the {controller} controller here")


def _make_cgroup(mount_point: str, tag: str) -> str:
    path = os.path.join(mount_point, f"qdiag-test-{tag}-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(path)
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {mount_point}: {exc.strerror}")
    return path


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _remove_cgroup(path: str) -> None:
    # The kernel may need a moment after the last task exits before rmdir works.
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.05)
    os.rmdir(path)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait(timeout=10)


def test_busy_process_over_its_cpu_quota_is_throttled():
    version, mount_point = _cgroup_mount("cpu")
    cg = _make_cgroup(mount_point, "cpu")
    child = None
    try:
        if version == "v1":
            _write(os.path.join(cg, "cpu.cfs_period_us"), "100000")
            _write(os.path.join(cg, "cpu.cfs_quota_us"), "10000")
        else:
            _write(os.path.join(cg, "cpu.max"), "10000 100000")
        child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        _write(os.path.join(cg, "cgroup.procs"), str(child.pid))
        before = hp.cgroup_stats("/proc", "/sys", child.pid)
        time.sleep(1.0)
        after = hp.cgroup_stats("/proc", "/sys", child.pid)
        report = hp.cgroup_delta(before, after, 1.0)
    finally:
        _stop(child)
        _remove_cgroup(cg)
    cpu = report["cpu"]
    assert cpu is not None, report["notes"]
    assert cpu["version"] == version and cpu["resolved"] == "exact"
    assert cpu["path"].endswith(os.path.basename(cg))
    assert cpu["quota_cores"] == pytest.approx(0.1)
    assert cpu["nr_periods"] > 0 and cpu["nr_throttled"] > 0 and cpu["throttled"] is True
    assert 0 < cpu["throttled_ratio"] <= 1 and cpu["throttled_s"] > 0
    assert not os.path.exists(cg)


def test_memory_limit_oom_kill_is_counted_and_found_in_the_kernel_log():
    version, mount_point = _cgroup_mount("memory")
    cg = _make_cgroup(mount_point, "oom")
    limit = 32 << 20
    sleeper = victim = None
    try:
        swap = hp.parse_meminfo(open("/proc/meminfo").read()).get("SwapTotal", 0) > 0
        if version == "v1":
            _write(os.path.join(cg, "memory.limit_in_bytes"), str(limit))
            if swap and os.path.exists(os.path.join(cg, "memory.memsw.limit_in_bytes")):
                _write(os.path.join(cg, "memory.memsw.limit_in_bytes"), str(limit))  # no escape to swap
        else:
            _write(os.path.join(cg, "memory.max"), str(limit))
            if os.path.exists(os.path.join(cg, "memory.swap.max")):
                _write(os.path.join(cg, "memory.swap.max"), "0")
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        _write(os.path.join(cg, "cgroup.procs"), str(sleeper.pid))
        victim = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline(); "
                                   "b = bytearray(256 << 20); b[::4096] = b'x' * (len(b) // 4096)"],
                                  stdin=subprocess.PIPE)
        _write(os.path.join(cg, "cgroup.procs"), str(victim.pid))
        vm_before = hp.parse_vmstat(open("/proc/vmstat").read()).get("oom_kill")
        before = hp.cgroup_stats("/proc", "/sys", sleeper.pid)
        victim.stdin.write(b"go\n")
        victim.stdin.flush()
        victim.wait(timeout=60)
        after = hp.cgroup_stats("/proc", "/sys", sleeper.pid)
        vm_after = hp.parse_vmstat(open("/proc/vmstat").read()).get("oom_kill")
        uptime = hp.parse_uptime(open("/proc/uptime").read())
        log, reason = host.read_kernel_log_ooms("/dev/kmsg", 8 << 20, uptime)
    finally:
        _stop(victim)
        _stop(sleeper)
        _remove_cgroup(cg)
    assert victim.returncode == -9, "the allocation should have been OOM-killed"
    mem = hp.cgroup_delta(before, after, 1.0)["memory"]
    assert mem["limit_bytes"] == limit and mem["path"].endswith(os.path.basename(cg))
    if version == "v1":
        assert (mem["failcnt"] or 0) + (mem["memsw_failcnt"] or 0) > 0 and mem["oom_kill"] == 1
    else:
        assert mem["events"]["max"] > 0 and mem["events"]["oom_kill"] == 1
    if vm_before is not None:
        assert vm_after - vm_before >= 1
    if log is None:
        pytest.skip(f"kernel log not readable here: {reason}")
    ours = [k for k in log["kills"] if k["pid"] == victim.pid]
    assert ours and ours[-1]["scope"] == "cgroup" and 0 <= ours[-1]["age_s"] < 120
    assert ours[-1]["memcg"] is None or ours[-1]["memcg"].endswith(os.path.basename(cg))
    assert not os.path.exists(cg)
