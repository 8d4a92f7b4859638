"""Freeze a process with the kernel's cgroup freezer, as `docker pause` does, for tests.

    with frozen(pid, "v2") as cgroup:   # cgroup: its path as /proc/<pid>/cgroup shows it
        ...

A new cgroup is made beside the process's own (v1: the freezer hierarchy, v2: the
unified one), the process moved in and frozen; on the way out it is thawed, moved
back and the cgroup removed.  Needs root and a writable cgroup file system: the
test is skipped, with the reason, where either is missing.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import pytest

FREEZE_TIMEOUT_S = 10.0


def _mount_point(version: str) -> str | None:
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if version == "v2" and tail and tail[0] == "cgroup2":
                return fields[4]
            if version == "v1" and tail and tail[0] == "cgroup" and "freezer" in tail[-1].split(","):
                return fields[4]
    return None


@contextlib.contextmanager
def frozen(pid: int, version: str):
    mount = _mount_point(version)
    if os.geteuid() != 0 or mount is None:
        pytest.skip(f"cgroup {version} freezer: needs root and a mounted hierarchy")
    name = f"qdiag-test-{uuid.uuid4().hex[:8]}"
    directory = os.path.join(mount, name)
    try:
        os.mkdir(directory)
    except OSError as exc:
        pytest.skip(f"cgroup {version} freezer: cannot make a cgroup under {mount}: {exc.strerror}")
    freeze, thaw = (("cgroup.freeze", "1"), ("cgroup.freeze", "0")) if version == "v2" \
        else (("freezer.state", "FROZEN"), ("freezer.state", "THAWED"))
    if not os.path.exists(os.path.join(directory, freeze[0])):
        os.rmdir(directory)
        pytest.skip(f"cgroup {version}: no {freeze[0]} (kernel without that freezer)")
    try:
        _write(os.path.join(directory, "cgroup.procs"), str(pid))
        _write(os.path.join(directory, freeze[0]), freeze[1])
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        while not _is_frozen(directory, version):
            assert time.monotonic() < deadline, f"cgroup {directory} did not freeze within {FREEZE_TIMEOUT_S:.0f}s"
            time.sleep(0.05)
        yield "/" + name
    finally:
        with contextlib.suppress(OSError):
            _write(os.path.join(directory, thaw[0]), thaw[1])
        with contextlib.suppress(OSError):  # back to the hierarchy's root, if it still runs
            _write(os.path.join(mount, "cgroup.procs"), str(pid))
        for _ in range(50):
            try:
                os.rmdir(directory)
                break
            except OSError:
                time.sleep(0.1)


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _is_frozen(directory: str, version: str) -> bool:
    if version == "v2":
        with open(os.path.join(directory, "cgroup.events")) as fh:
            return "frozen 1" in fh.read().splitlines()
    with open(os.path.join(directory, "freezer.state")) as fh:
        return fh.read().strip() == "FROZEN"
