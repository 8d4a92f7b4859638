"""What the thread dumps mean to the diagnosis: where each consumer's threads
wait (shared as `thread_waits`, joined with the dependencies' endpoints by the
core), and one `threads` subject per dumped process."""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis.facts import Subject, num
from qdiag.probe import Contribution

# Thread classes of a consumer that is waiting for work or time, not working.
IDLE_THREAD_CLASSES = ("queue-wait", "sleep")


def _processes(obs: dict) -> list[dict]:
    return [p for p in obs.get("processes") or [] if isinstance(p, dict)]


def socket_waits(proc: dict) -> dict[str, int]:
    """peer ip:port (or "" when the dump could not tell) -> threads blocked in socket I/O on it."""
    out: dict[str, int] = {}
    for t in proc.get("threads") or []:
        if isinstance(t, dict) and t.get("class") == "socket-io":
            peer = t.get("peer") or ""
            out[peer] = out.get(peer, 0) + 1
    return out


def _share(obs: dict) -> dict:
    return {"thread_waits": {p.get("pid"): socket_waits(p) for p in _processes(obs)}}


def hottest(functions: list[dict]) -> dict | None:
    """The function most often on CPU, its samples summed over its lines (the
    probe counts each line of a function apart)."""
    totals: dict[str, dict] = {}
    for f in functions:
        if not isinstance(f, dict) or not f.get("function"):
            continue
        entry = totals.setdefault(f["function"], {"function": f["function"], "where": f.get("where"), "samples": 0,
                                                  "threads": []})
        entry["samples"] += num(f.get("samples")) or 0
        entry["threads"] = sorted(set(entry["threads"]) | set(f.get("threads") or []))
    return max(totals.values(), key=lambda e: e["samples"], default=None)


def thread_facts(proc: dict, waiting: dict | None, endpoint: dict) -> dict[str, Any]:
    counts = proc.get("counts") or {}
    total = num(proc.get("threads_total")) or 0
    # Counted from the class totals: the probe lists at most 100 threads.
    working = sum(n for c, n in counts.items() if c not in IDLE_THREAD_CLASSES and isinstance(n, int))
    lock_stuck = [s for s in proc.get("stuck") or [] if s.get("class") == "lock-wait"]
    waiting_on = (waiting or {}).get("url")
    latency = (endpoint.get("latency_ms") or {}).get("total") or {}
    return {
        "on_cpu_threads": counts.get("on-cpu", 0),
        "lock_wait_threads": counts.get("lock-wait", 0),
        "socket_threads": counts.get("socket-io", 0),
        "idle_threads": sum(counts.get(c, 0) for c in IDLE_THREAD_CLASSES),
        "working_threads": working,
        "busy_share": round(counts.get("on-cpu", 0) / total, 3) if total else None,
        # Of the threads doing something (not waiting for work), the share on CPU.
        "on_cpu_share": round(counts.get("on-cpu", 0) / working, 3) if working else None,
        "dumps": proc.get("dumps"),
        "lock_stuck_threads": len(lock_stuck),
        "lock_stuck_where": [s.get("where") for s in lock_stuck],
        "hot": hottest(proc.get("hot_functions") or []),
        "deadlocked": bool(proc.get("deadlock")),
        "dependency_waiting_threads": (waiting or {}).get("threads", 0),
        "waiting_on": waiting_on,
        "waiting_on_subject": f"dependency:{waiting_on}" if waiting_on else None,
        "waiting_share": round((waiting or {}).get("threads", 0) / working, 3) if waiting_on and working else None,
        "waiting_on_p50_ms": num(latency.get("p50")),
        "waiting_on_error_rate": num(endpoint.get("error_rate")),
    }


def _subjects(obs: dict, joined):
    for proc in _processes(obs):
        pid = proc.get("pid")
        waiting = joined.waiting_on.get(pid)
        yield Subject("threads", f"process:{pid}", {
            **proc, **joined.consumer_facts(pid),
            **joined.cpu_facts(pid, num(proc.get("cpu_percent"))),
            **thread_facts(proc, waiting, joined.endpoint((waiting or {}).get("url")))})


CONTRIBUTION = Contribution(steps=(3, 4), share=_share, subjects=_subjects)
