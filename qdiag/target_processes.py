"""Which local processes the process-level probes (process, threads,
dependencies) look at: --pid, --process REGEX, and consumers discovered from
the broker side.  One selection, so the three probes agree on it."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import psutil

from qdiag.regex_worker import RegexTimeout, search_all

# --process patterns are the user's regexes: they run in a child process killed
# after this long (qdiag/regex_worker.py), on command lines cut to this length
# (a JVM's class path can be long; /proc allows megabytes).
MATCH_BUDGET_S = 5.0
MAX_CMDLINE_CHARS = 32 * 1024
# Kept back from the caller's deadline, so that the note naming a slow pattern
# is recorded before the runner gives up on the probe.
_MARGIN_S = 0.3


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


def _match(patterns: tuple[str, ...], table: dict[int, dict], deadline: float,
           selection: Selection) -> dict[str, list[int] | None]:
    """pattern -> pids whose command line it matches; None for a pattern still
    running at the deadline (it gets a note instead)."""
    pids = list(table)
    lines = [" ".join(table[pid]["cmdline"])[:MAX_CMDLINE_CHARS] for pid in pids]
    try:
        hits = search_all(patterns, lines, deadline=deadline)
    except RegexTimeout as exc:
        slow = patterns[exc.index:]
        selection.notes.append(f"--process '{slow[0]}' did not finish matching {len(lines)} command lines before "
                               "the deadline: it backtracks (nested repeats such as (a+)+); simplify it"
                               + (f" ({len(slow) - 1} later pattern(s) not tried)" if len(slow) > 1 else ""))
        hits = exc.partial + [None for _ in slow]
    return {pattern: None if found is None else [pids[i] for i in found] for pattern, found in zip(patterns, hits)}


def select(targets, discovered: list[dict], *, max_per_pattern: int = 20, deadline: float | None = None) -> Selection:
    """`targets` is the run's Targets; `discovered` the consumers found from the brokers.
    `deadline` (monotonic) bounds the --process regexes; MATCH_BUDGET_S from now by default."""
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
        budget_end = time.monotonic() + MATCH_BUDGET_S
        deadline = budget_end if deadline is None else min(deadline - _MARGIN_S, budget_end)
        matched = _match(tuple(targets.process_patterns), table, deadline, selection)
        for pattern in targets.process_patterns:
            matches = matched[pattern]
            if matches is None:
                continue  # unknown, not unmatched: noted by _match
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
    if targets.connected_to:
        _select_connected(targets.connected_to, add, selection, max_per_pattern)
    for item in discovered or []:
        pid = item.get("pid") if isinstance(item, dict) else None
        if isinstance(pid, int) and pid > 0:
            record = add(pid, "discovered")
            record.setdefault("via", item.get("via"))
            record.setdefault("subject", item.get("subject"))
    return selection


def _resolve(endpoint: str) -> list[tuple[str, int]]:
    host, port = endpoint.rsplit(":", 1)
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({(info[4][0], int(port)) for info in infos})


def _select_connected(endpoints: tuple[str, ...], add, selection: Selection, limit: int) -> None:
    """--connected-to HOST:PORT: the local processes with a connection there, each with the
    addresses of those sockets (kept in its record as `sockets`: the join key with a broker's
    list of its clients, which names them by address and port)."""
    from qdiag.localsockets import connections_to

    family = own_family()
    for endpoint in endpoints:
        # A name that does not resolve here, or no process connected: no target, and the
        # snapshot's empty target list says so (a host may run no consumer at the moment).
        found = {pid: socks for pid, socks in connections_to(_resolve(endpoint)).items() if pid not in family}
        pids = sorted(found)
        if len(pids) > limit:
            pids.sort(key=lambda pid: -len(found[pid]))
            selection.notes.append(f"--connected-to {endpoint}: {len(found)} processes are connected there; "
                                   f"kept the {limit} with the most connections")
            pids = sorted(pids[:limit])
        for pid in pids:
            record = add(pid, f"--connected-to {endpoint}")
            sockets = record.setdefault("sockets", [])
            sockets.extend(s for s in found[pid] if s not in sockets)
