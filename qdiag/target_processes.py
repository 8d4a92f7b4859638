"""Which local processes the process-level probes (process, threads,
dependencies) look at: --pid, --process REGEX, and consumers discovered from
the broker side.  One selection, so the three probes agree on it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import psutil


@dataclass
class Selection:
    # pid -> {"pid", "selected_by": ["--pid" | "--process <regex>" | "discovered"], "via"?, "subject"?}
    targets: dict[int, dict] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)  # --pid not running
    unmatched: list[str] = field(default_factory=list)  # --process patterns that matched nothing
    notes: list[str] = field(default_factory=list)

    def how(self, pid: int) -> str:
        """One line: how this pid became a target."""
        record = self.targets[pid]
        first = record["selected_by"][0]
        if first == "discovered":
            detail = " ".join(str(x) for x in (record.get("via"), record.get("subject")) if x)
            return f"discovered: {detail}" if detail else "discovered"
        return first


def own_family() -> set[int]:
    """qdiag itself, its children (py-spy, jcmd) and its ancestors: `sudo qdiag
    --process worker` has "worker" in its command line too."""
    family = {os.getpid()}
    try:
        me = psutil.Process()
        family.update(c.pid for c in me.children(recursive=True))
        family.update(p.pid for p in me.parents())
    except psutil.Error:
        pass
    return family


def _cpu_seconds(times) -> float:
    return (times.user + times.system) if times is not None else 0.0


def select(targets, discovered: list[dict], *, max_per_pattern: int = 20) -> Selection:
    """`targets` is the run's Targets; `discovered` the consumers found from the brokers."""
    selection = Selection()

    def add(pid: int, why: str) -> dict:
        record = selection.targets.setdefault(pid, {"pid": pid, "selected_by": []})
        if why not in record["selected_by"]:
            record["selected_by"].append(why)
        return record

    for pid in targets.pids:
        if psutil.pid_exists(pid):
            add(pid, "--pid")
        else:
            selection.missing.append(pid)
    if targets.process_patterns:
        family = own_family()
        table = {}
        for proc in psutil.process_iter(["cmdline", "cpu_times"], ad_value=None):
            if proc.pid not in family and proc.info["cmdline"]:  # kernel threads have no command line
                table[proc.pid] = proc.info
        for pattern in targets.process_patterns:
            regex = re.compile(pattern)
            matches = [pid for pid, info in table.items() if regex.search(" ".join(info["cmdline"]))]
            if not matches:
                selection.unmatched.append(pattern)
                continue
            if len(matches) > max_per_pattern:
                # Cumulative CPU only decides which to keep; it is never reported.
                matches.sort(key=lambda pid: -_cpu_seconds(table[pid]["cpu_times"]))
                selection.notes.append(f"--process '{pattern}' matched {len(matches)} processes; "
                                       f"kept the {max_per_pattern} with the most CPU time")
                matches = matches[:max_per_pattern]
            for pid in sorted(matches):
                add(pid, f"--process {pattern}")
    for item in discovered or []:
        pid = item.get("pid") if isinstance(item, dict) else None
        if isinstance(pid, int) and pid > 0:
            record = add(pid, "discovered")
            record.setdefault("via", item.get("via"))
            record.setdefault("subject", item.get("subject"))
    return selection
