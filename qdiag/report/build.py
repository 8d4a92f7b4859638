"""snapshot -> report document (`qdiag.report/1`).  Pure: no I/O, so a
snapshot re-renders to the same report anywhere.

Format history: qdiag.report/1 first version.  Keys may be added; renaming or
removing one means qdiag.report/2.  Added since: "qdiag_version", "command",
"targets", "named", "discovered" (what produced the snapshot and what it looked
at); "focus" on each queue row; more queue detail keys (QUEUE_DETAIL_KEYS);
"consumers" (each consumer process: where its threads spent the window);
"broken_rules" (rules that raised and were left out; only when there are some).
"""

from __future__ import annotations

import shlex
from typing import Any

from qdiag.diagnosis import engine, facts
from qdiag.diagnosis.facts import Subject, num, queue_facts, queue_records
from qdiag.diagnosis.playbook import Rule

SCHEMA = "qdiag.report/1"
QUEUE_KEYS = ("system", "name", "group", "depth", "rate_in", "rate_out", "consumers", "fill_ratio", "status")
# Detail keys worth carrying into the report's queue rows (the snapshot keeps everything).
QUEUE_DETAIL_KEYS = ("status_native", "depth_settled", "depth_settled_why", "depth_bounds", "depth_basis",
                     "consumers_gone", "gone_members", "rebalances_seen", "depth_samples", "lag_seconds", "lag_seconds_source", "max_lag", "worst_partition",
                     "partitions", "overflow", "limit", "data_at_risk", "trend", "rate_source", "notes",
                     "time_to_full_s", "time_to_drain_s", "vhost", "pending", "oldest_age_s", "layout",
                     # Lag detail: the worst partitions and who owns them, when a probe gives them.
                     "partition_lags", "lag_seconds_min", "topic_partitions", "unowned_partitions",
                     "at_risk_partitions", "idle_members", "parallelism", "group_state")


def _queue_row(facts: dict) -> dict[str, Any]:
    row = {key: facts.get(key) for key in QUEUE_KEYS}
    for key in QUEUE_DETAIL_KEYS:
        if facts.get(key) is not None:
            row[key] = facts[key]
    row["subject"] = facts["subject"]
    row["backing_up"] = facts["backing_up"]
    row["focus"] = facts.get("focus", True) is not False
    return row


def _queue_order(row: dict) -> tuple:
    """Biggest problem first: backing up, fuller, deeper."""
    fill = row.get("fill_ratio") if isinstance(row.get("fill_ratio"), (int, float)) else -1
    depth = row.get("depth") if isinstance(row.get("depth"), (int, float)) else -1
    return (not row["backing_up"], -fill, -depth, row["subject"])


def _targets(settings: dict) -> list[dict[str, str]]:
    """The endpoints probed (broker URLs, passwords already masked) and how each was found."""
    auto = {str(found).split(" ", 1)[0] for found in settings.get("auto_detected") or []}
    return [{"kind": kind, "target": value, "found": "auto-detected" if kind in auto else "given"}
            for kind, value in (settings.get("targets") or {}).items() if isinstance(value, str) and value]


def _named(settings: dict) -> dict[str, list]:
    """What the user pointed at: queues, groups, pids, process patterns, dependencies, logs."""
    return {kind: list(value) for kind, value in (settings.get("targets") or {}).items()
            if isinstance(value, list) and value}


# --- consumers ------------------------------------------------------------------------------
# A consumer process is any subject "process:PID" (the user's --pid/--process, or
# found from the broker side); its facts come from every probe that wrote about it.
CONSUMER_WAITS = 6  # attribution entries kept per process
CONSUMER_PEERS = 4
CONSUMER_HOT = 3


def _first(facts: list[dict], key: str, kind: type | tuple = object) -> Any:
    return next((f[key] for f in facts if isinstance(f.get(key), kind) and not isinstance(f.get(key), bool)), None)


def _waits(kernel: dict) -> list[dict]:
    out = []
    for entry in kernel.get("attribution") or []:
        if not isinstance(entry, dict) or not num(entry.get("share")):
            continue
        wait = {key: entry.get(key) for key in ("kind", "target", "share", "max_thread_share", "threads")}
        if entry.get("kind") in ("peer", "broker"):
            wait["protocol_guess"] = entry.get("protocol_guess")
        out.append(wait)
    return out[:CONSUMER_WAITS]


def _peers(kernel: dict) -> list[dict]:
    """The peers the process waited on, with the latency its own connections saw (TCP info):
    how long requests waited for their answers, and the round trip."""
    out = []
    for peer in kernel.get("peers") or []:
        # Peers no thread waited on (an idle keep-alive connection) are not where the window went.
        if not isinstance(peer, dict) or peer.get("kind") != "peer" or not num(peer.get("wait_share")):
            continue
        tcp = peer.get("tcp") if isinstance(peer.get("tcp"), dict) else {}
        answers = tcp.get("request_waits") if isinstance(tcp.get("request_waits"), dict) else {}
        out.append({"peer": peer.get("peer"), "protocol_guess": peer.get("protocol_guess"),
                    "wait_share": peer.get("wait_share"), "threads_waiting": peer.get("threads_waiting"),
                    "connections": peer.get("connections"), "answer_median_ms": answers.get("median_ms"),
                    "answer_max_ms": answers.get("max_ms"), "requests": answers.get("requests"),
                    "rtt_ms": tcp.get("rtt_ms"), "awaiting_answer_share": tcp.get("awaiting_answer_share")})
    return out[:CONSUMER_PEERS]


def _kernel_view(kernel: dict) -> dict[str, Any]:
    sampled = bool(num(kernel.get("thread_samples")))
    view: dict[str, Any] = {"sampled": sampled}
    if not sampled:
        why = kernel.get("error") or "; ".join(map(str, kernel.get("notes") or []))
        return {**view, "sampled_why_not": why} if why else view
    threads = len(kernel.get("threads") or []) + (num(kernel.get("threads_listed_omitted")) or 0)
    view.update({
        "window_s": kernel.get("window_s"), "threads_sampled": int(threads) or None,
        "shares": {k: v for k, v in (kernel.get("shares") or {}).items() if num(v)},
        "waits": _waits(kernel), "peers": _peers(kernel),
        "lock_waits_never_woke": [{"tid": t.get("tid"), "name": t.get("name"), "wait": t.get("wait")}
                                  for t in kernel.get("lock_waits_never_woke") or [] if isinstance(t, dict)],
    })
    return view


def _hot(functions: Any) -> list[dict]:
    rows = [f for f in functions or [] if isinstance(f, dict) and f.get("function") and num(f.get("samples"))]
    rows.sort(key=lambda f: -f["samples"])
    return [{"function": f["function"], "where": f.get("where"), "samples": f["samples"]} for f in rows[:CONSUMER_HOT]]


def _held(facts: list[dict]) -> str | None:
    """What kept all of the process's code from running for the whole window, as the kernel
    says: "stopped" (state T at both ends) or "frozen" (its cgroup's freezer at both ends)."""
    if any(f.get("state") == "T" and f.get("state_at_start") == "T" for f in facts):
        return "stopped"
    if any(f.get("frozen") is True and f.get("frozen_at_start") is True for f in facts):
        return "frozen"
    return None


def _consumer(subject_id: str, facts: list[dict], queues: set[str]) -> dict[str, Any]:
    kernel = _first(facts, "kernel", dict) or {}
    dumped = next((f for f in facts if f.get("tool") and num(f.get("dumps"))), {})
    classes = _first(facts, "counts", dict) or {}
    queue = _first(facts, "consumer_of", str)
    return {
        "pid": _first(facts, "pid", int), "subject": subject_id,
        "name": _first(facts, "name", str), "runtime": _first(facts, "runtime", str),
        "cpu_percent": _first(facts, "cpu_percent", (int, float)),
        "threads": _first(facts, "threads_total", int) or _first(facts, "threads", int),
        "queue": queue if queue in queues else None, "focus": all(f.get("focus", True) is not False for f in facts),
        "gone": any(f.get("gone") is True for f in facts), "held": _held(facts),
        "dumped_with": dumped.get("tool"), "dumps": dumped.get("dumps"),
        "dump_classes": {c: n for c, n in classes.items() if num(n)} if dumped else {},
        "kernel": _kernel_view(kernel) if kernel else {"sampled": False},
        "hot": _hot(_first(facts, "hot_functions", list)),
    }


def _consumers(all_subjects: list[Subject], queues: set[str]) -> list[dict[str, Any]]:
    """Per consumer process: what it is, and where its threads spent the window."""
    by_id: dict[str, list[dict]] = {}
    for subject in all_subjects:
        if subject.id.startswith("process:"):
            by_id.setdefault(subject.id, []).append(subject.facts)
    consumers = [_consumer(subject_id, facts, queues) for subject_id, facts in by_id.items()]
    return sorted(consumers, key=lambda c: (not c["focus"], c["gone"], c["pid"] if isinstance(c["pid"], int) else 0))


# --- commands that can be pasted ------------------------------------------------------------
# Tools that read one runtime's threads: suggested only for a process running it.
RUNTIME_TOOLS = {"py-spy": "python", "jcmd": "java"}


def _command_pid(words: list[str]) -> int | None:
    """The process a thread-dump command is about: py-spy's --pid, jcmd's first argument."""
    if words[0] == "py-spy":
        for flag, value in zip(words, words[1:]):
            if flag in ("--pid", "-p") and value.isdigit():
                return int(value)
    elif words[0] == "jcmd" and len(words) > 1 and words[1].isdigit():
        return int(words[1])
    return None


def done_by_qdiag(consumers: list[dict]) -> set[str]:
    """The commands this run has just done itself, as a playbook would write them."""
    done = set()
    for c in consumers:
        pid = c.get("pid")
        if c.get("dumped_with") == "py-spy":
            done.add(f"py-spy dump --pid {pid}")
        if c.get("dumped_with") in ("jcmd", "jstack"):  # the same thread dump either way
            done |= {f"jcmd {pid} Thread.print", f"jstack {pid}"}
        if (c.get("kernel") or {}).get("sampled"):
            done.add(f"cat /proc/{pid}/task/*/wchan")
        done.add(f"qdiag investigate --pid {pid}")
    return done


def suggestable(command: str, runtimes: dict, done: set[str]) -> bool:
    """Whether to suggest `command`: not what qdiag has just done, and not a thread-dump
    tool of another runtime than the process's (no jcmd for a Python process)."""
    plain = command.split()
    if " ".join(plain) in done:
        return False
    if not plain or plain[0].strip("'\"") not in RUNTIME_TOOLS:
        return True  # not a thread-dump tool: no need to parse its quoting (shlex is slow at 10,000 queues)
    try:
        words = shlex.split(command)
    except ValueError:
        return True
    needed = RUNTIME_TOOLS.get(words[0]) if words else None
    pid = _command_pid(words) if needed else None
    return pid is None or pid not in runtimes or runtimes[pid] == needed


def _pasteable(causes: list[dict], consumers: list[dict]) -> None:
    runtimes = {c["pid"]: c.get("runtime") for c in consumers if isinstance(c.get("pid"), int)}
    done = done_by_qdiag(consumers)
    for cause in causes:
        cause["next_commands"] = [c for c in cause.get("next_commands") or [] if suggestable(c, runtimes, done)]


def _verdict(assessed: dict) -> dict[str, Any]:
    return {"verdict": assessed["verdict"], "verdict_reasons": assessed["reasons"]}


def build_report(snapshot: dict, rules: list[Rule], baseline: dict | None = None) -> dict[str, Any]:
    queues = sorted((_queue_row(queue_facts(r, None, snapshot)) for r in queue_records(snapshot)), key=_queue_order)
    settings = snapshot.get("settings") or {}
    joined, contributors = facts.join(snapshot, baseline)
    all_subjects = list(facts.subjects_of(joined, contributors))
    broken: list[dict] = []  # rules that raised: left out, and said so (engine.evaluate_subjects)
    hits = engine.evaluate_subjects(rules, all_subjects, broken)
    ranked = engine.rank(hits)
    root_causes = [c for c in ranked if c["score"] >= engine.SCORE_FLOOR]
    consumers = _consumers(all_subjects, {q["subject"] for q in queues})
    _pasteable(root_causes, consumers)
    return {
        "schema": SCHEMA,
        "generated_at": snapshot["created_at"],
        "host": snapshot["host"].get("hostname"),
        "window_s": snapshot["window_s"],
        **_verdict(engine.assess(snapshot, queues, ranked, joined.shared, broken)),
        "queues": queues,
        "consumers": consumers,
        "root_causes": root_causes,
        "steps": engine.steps(hits, snapshot),
        **({"broken_rules": broken} if broken else {}),
        "probes": [{"name": p["name"], "status": p["status"], "duration_s": p.get("duration_s", 0.0),
                    "error": p.get("error")} for p in snapshot["probes"]],
        "baseline": baseline.get("created_at") if baseline else None,
        "qdiag_version": snapshot.get("qdiag_version"),
        "command": list(snapshot.get("command") or []),
        "targets": _targets(settings),
        "named": _named(settings),
        "discovered": [{"pid": d.get("pid"), "via": d.get("via"), "subject": d.get("subject")}
                       for d in snapshot.get("discovered") or [] if isinstance(d, dict)],
    }
