"""Which language runtime a process runs, so the right thread-dump tool is used
(py-spy for CPython, jcmd for a JVM).  Shared by the process and threads probes."""

from __future__ import annotations

import os
import re

# python, python3, python3.11, python3.11d, python3.13t (free-threaded), python3.7m,
# python3.11-dbg, pypy3; not pythonista or python3-config.
_PYTHON_NAME = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?[dmt]*(-dbg)?$")
_JAVA_NAME = re.compile(r"^javaw?$")
_LIBPYTHON = re.compile(r"/libpython\d")
MAX_MAPS_LINES = 50000


def detect_runtime(name: str | None, exe: str | None, cmdline: list[str] | None,
                   maps_text: str | None = None) -> str | None:
    """'python', 'java' or None.

    The executable tells most (a `gunicorn` script still runs /usr/bin/python3);
    embedded interpreters (uwsgi, a JVM launched by a wrapper binary) show up
    only as a mapped libpython / libjvm, so `maps_text` is the fallback.
    """
    candidates = []
    if exe:
        candidates.append(os.path.basename(exe))
    if cmdline and cmdline[0]:
        candidates.append(os.path.basename(cmdline[0].split()[0]))
    if name:
        candidates.append(name)
    for candidate in candidates:
        candidate = candidate.lower()
        if _PYTHON_NAME.match(candidate):
            return "python"
        if _JAVA_NAME.match(candidate):
            return "java"
    if maps_text:
        if "/libjvm.so" in maps_text:
            return "java"
        if _LIBPYTHON.search(maps_text):
            return "python"
    return None


def read_runtime_maps(proc_root: str, pid: int) -> str | None:
    """The lines of /proc/<pid>/maps that tell a runtime apart (libjvm, libpython),
    read line by line and bounded; None when unreadable."""
    keep = []
    try:
        with open(f"{proc_root}/{pid}/maps", encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh):
                if number >= MAX_MAPS_LINES:
                    break
                if "libjvm" in line or "libpython" in line:
                    keep.append(line.rstrip())
    except OSError:
        return None
    return "\n".join(keep)


def process_runtime(proc_root: str, pid: int, name: str | None, exe: str | None,
                    cmdline: list[str] | None) -> str | None:
    """detect_runtime() from the names, then from the mapped libraries when the names do not tell."""
    found = detect_runtime(name, exe, cmdline)
    if found is None:
        found = detect_runtime(None, None, None, read_runtime_maps(proc_root, pid))
    return found
