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


def kernel_waits(proc: dict) -> dict[str, float] | None:
    """peer ip:port -> thread-equivalents the kernel saw waiting on it (brokers left out); None
    when the kernel was not sampled."""
    kernel = proc.get("kernel") or {}
    if not kernel.get("thread_samples"):
        return None
    threads = len(kernel.get("threads") or []) + (kernel.get("threads_listed_omitted") or 0)
    return {p["peer"]: round((p.get("wait_share") or 0.0) * max(1, threads), 3)
            for p in kernel.get("peers") or [] if p.get("kind") == "peer" and p.get("peer") and p.get("wait_share")}


def _share(obs: dict) -> dict:
    # What the kernel saw beats what a stack can tell: it names the peer of every socket wait.
    return {"thread_waits": {p.get("pid"): kernel_waits(p) if kernel_waits(p) is not None else socket_waits(p)
                             for p in _processes(obs)}}


# Wait kinds in the order they are told in a summary.
_KIND_WORDS = {"cpu": "on CPU", "peer": "waiting for", "broker": "idle, waiting for the broker", "lock": "on locks",
               "sleep": "sleeping", "disk": "in disk waits", "child": "waiting for a child process",
               "local": "on pipes and local sockets", "other": "in other system calls", "unknown": "unknown",
               "unreadable": "unreadable"}


def wait_summary(kernel: dict) -> str | None:
    """"96% waiting for 127.0.0.1:38243, 2% on CPU, ..." over all sampled thread-time: each peer
    apart, every other kind summed (a JVM's twenty futex addresses are one "on locks")."""
    totals: dict[str, float] = {}
    for entry in kernel.get("attribution") or []:
        kind, target = entry.get("kind"), entry.get("target")
        if kind == "peer" and target:
            guess = f" ({entry['protocol_guess']})" if entry.get("protocol_guess") else ""
            words = f"waiting for {target}{guess}"
        else:
            words = _KIND_WORDS.get(kind, str(kind))
        totals[words] = totals.get(words, 0.0) + (entry.get("share") or 0.0)
    parts = [f"{share:.0%} {words}" for words, share in sorted(totals.items(), key=lambda kv: -kv[1])
             if share >= 0.01]
    return ", ".join(parts[:6]) or None


# Less than this many bytes sent to the broker over the window is no acknowledgement, no
# commit and no request: AMQP's smallest basic.ack frame is 21 bytes, its heartbeat frame 8;
# Kafka's and Redis's requests are larger than both.
BROKER_SILENT_BYTES = 21


def broker_silent(kernel: dict) -> bool | None:
    """Whether the process sent the broker nothing but heartbeats all window, from the kernel's
    TCP counters of its connections to the broker (read at every sample, so fresher than a
    broker's statistics, which RabbitMQ refreshes every few seconds); None when they were not
    read at two samples or more."""
    tcps = [p.get("tcp") for p in kernel.get("peers") or [] if p.get("kind") == "broker"]
    if not tcps or any(not t or t.get("bytes_out") is None
                       or (num(t.get("samples")) or 0) < 2 * (num(t.get("connections_sampled")) or 1) for t in tcps):
        return None
    return sum(t["bytes_out"] for t in tcps) < BROKER_SILENT_BYTES


def kernel_facts(proc: dict) -> dict[str, Any]:
    """Where the consumer's threads spent the window, as the kernel saw it."""
    kernel = proc.get("kernel") or {}
    shares = kernel.get("shares") or {}
    peers = [p for p in kernel.get("peers") or [] if p.get("kind") == "peer" and p.get("wait_share")]
    top = max(peers, key=lambda p: p["wait_share"], default=None)
    entry = next((a for a in kernel.get("attribution") or []
                  if top and a.get("kind") == "peer" and a.get("target") == top["peer"]), {})
    tcp = (top or {}).get("tcp") or {}
    answers = tcp.get("request_waits") or {}
    return {
        "kernel_sampled": bool(kernel.get("thread_samples")),
        "broker_silent": broker_silent(kernel),
        "kernel_cpu_share": num(shares.get("cpu")),
        "kernel_lock_share": num(shares.get("lock")),
        "kernel_peer_share": num(shares.get("peer")),
        "kernel_broker_share": num(shares.get("broker")),
        "kernel_sleep_share": num(shares.get("sleep")),
        "kernel_disk_share": num(shares.get("disk")),
        "peer_waited": top["peer"] if top else None,
        "peer_protocol": (top or {}).get("protocol_guess"),
        # The largest share of one thread's window spent waiting there: a serial
        # consumer waiting on a peer all window reads 1.0 however many idle threads it has.
        "peer_thread_share": num(entry.get("max_thread_share")),
        "peer_threads_waiting": (top or {}).get("threads_waiting"),
        "peer_answer_ms": num(answers.get("median_ms")),
        "peer_answer_max_ms": num(answers.get("max_ms")),
        "peer_requests": answers.get("requests"),
        "peer_rtt_ms": num(tcp.get("rtt_ms")),
        "peer_awaiting_share": num(tcp.get("awaiting_answer_share")),
        # Where in the kernel the disk waits were (fsync, page faults, ...), most first.
        "disk_wait_where": [a.get("target") for a in kernel.get("attribution") or []
                            if a.get("kind") == "disk" and a.get("target")][:3],
        "disk_wait_thread_share": max((num(a.get("max_thread_share")) or 0.0 for a in kernel.get("attribution") or []
                                       if a.get("kind") == "disk"), default=None),
        # Threads that spent the whole window in one write to a pipe or local socket without being
        # scheduled: the pipe is full and its reader (a log shipper, a terminal) does not read.
        "local_writes_blocked": [f"{t.get('name')} ({t.get('tid')}) writing to a {t['dominant'].get('target')}"
                                 for t in kernel.get("threads") or [] if _blocked_local_write(t)],
        "lock_never_woke_threads": len(kernel.get("lock_waits_never_woke") or []),
        "lock_never_woke": [f"{t.get('name')} ({t.get('tid')})" for t in kernel.get("lock_waits_never_woke") or []],
        "wait_summary": wait_summary(kernel),
    }


_WRITE_CALLS = {"write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg", "sendmmsg", "splice"}


def _blocked_local_write(thread: dict) -> bool:
    dominant = thread.get("dominant") or {}
    return (bool(thread.get("never_woke")) and dominant.get("kind") == "local" and (dominant.get("share") or 0) >= 0.9
            and thread.get("detail") in _WRITE_CALLS)


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
        facts = {**proc, **joined.consumer_facts(pid), **joined.cpu_facts(pid, num(proc.get("cpu_percent"))),
                 **thread_facts(proc, waiting, joined.endpoint((waiting or {}).get("url"))), **kernel_facts(proc)}
        if facts["peer_waited"] and not facts["waiting_on_subject"]:
            # A peer no dependency probe timed is still a dependency: named as the probe would name it.
            facts["waiting_on_subject"] = f"dependency:tcp://{facts['peer_waited']}"
        if facts.get("cpu_percent") is None and facts["kernel_sampled"]:
            facts["cpu_percent"] = _kernel_cpu_percent(proc)
        facts["nothing_drained"] = nothing_drained(facts.get("queue") or {}, facts["broker_silent"])
        yield Subject("threads", f"process:{pid}", facts)


def nothing_drained(queue: dict, silent: bool | None) -> bool:
    """Whether the consumer's queue lost nothing to it over the window: the broker's out rate is not
    above zero, or the process is the queue's one consumer and sent the broker nothing (RabbitMQ's
    rates describe its last statistics interval: for a few seconds after a consumer wedges they
    still show its acks from before, while its connection, read by the kernel, is silent)."""
    rate_out = num(queue.get("rate_out"))
    return not (rate_out is not None and rate_out > 0) or (silent is True and queue.get("consumers") == 1)


def _kernel_cpu_percent(proc: dict) -> float | None:
    """Percent of a core the sampled threads used, from the kernel's CPU ticks (no dump taken)."""
    kernel = proc.get("kernel") or {}
    seconds = [t.get("cpu_s") for t in kernel.get("threads") or [] if num(t.get("cpu_s")) is not None]
    window = num(kernel.get("window_s"))
    return round(100.0 * sum(seconds) / window, 1) if seconds and window else None


CONTRIBUTION = Contribution(steps=(3, 4), share=_share, subjects=_subjects)
