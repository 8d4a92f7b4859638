"""What the text and Markdown renderers say, derived from the report document
alone: the one-sentence answer, certainty in words, the queues in focus and
the rest, lag detail, step and probe summaries, and number formatting.

Everything reads the report defensively (a key may be missing, or new keys
present), so a report from an older or newer qdiag still renders.
"""

from __future__ import annotations

import re
from datetime import datetime
from itertools import zip_longest
from typing import Any

from qdiag.brokers import broker_flags

# Control characters (C0, DEL, C1), zero-width and bidirectional controls, line
# separators: a name taken from a broker is data and must not move the
# terminal's cursor, change its colours or reorder what the reader sees.
_SPACES = "\t\n\r\x0b\x0c\u2028\u2029"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\u2028\u2029]")

# Certainty of a cause, in words: the score is a judgement about which cause
# explains the backlog, not doubt about the measured facts behind it (those are
# shown as "measured").  The number itself stays in the JSON report.
CONFIDENCE = ((0.8, "very likely"), (0.6, "likely"), (0.4, "possible"), (0.0, "weak"))
TITLE_PREFIX = "Possible root cause: "
# The decisive phrase of line 1 is cut to about this many characters.
DECISIVE_CHARS = 110
# "(threshold ...)" in evidence, one level of parentheses inside it allowed: "(1 thread(s); threshold: ...)".
_THRESHOLD = re.compile(r"\s*\((?:[^()]|\([^()]*\))*threshold(?:[^()]|\([^()]*\))*\)")


def clean(value: Any) -> Any:
    """`value` with control characters removed from every string in it (whitespace ones become spaces)."""
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: " " if m.group() in _SPACES else "", value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def text(value: Any) -> str:
    """An evidence item or note as text, whether it is a string or a {"text": ...} record."""
    if isinstance(value, dict):
        return str(value.get("text") or value.get("message") or "")
    return "" if value is None else str(value)


def number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- formatting ----------------------------------------------------------------------------

def fmt_num(value: Any, dash: str = "-") -> str:
    if value is None:
        return dash
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def duration(seconds: Any) -> str | None:
    s = number(seconds)
    if s is None or s < 0:
        return None
    if s < 10:
        return f"{s:.1f}s"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _when(iso: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return None


def age_between(earlier: Any, later: Any) -> str | None:
    a, b = _when(earlier), _when(later)
    if a is None or b is None:
        return None
    seconds = (b - a).total_seconds()
    return f"{duration(seconds)} before" if seconds >= 0 else f"{duration(-seconds)} after"


# --- causes -----------------------------------------------------------------------------

def confidence(cause: dict) -> str:
    score = number(cause.get("score")) or 0.0
    return next(word for floor, word in CONFIDENCE if score >= floor)


def headline(cause: dict) -> str:
    """The cause in words: its title without the "Possible root cause:" preamble."""
    subject = cause.get("subject")
    title = text(cause.get("title")) or (f"{cause.get('id')}: {subject}" if subject else str(cause.get("id")))
    return title[len(TITLE_PREFIX):] if title.startswith(TITLE_PREFIX) else title


def without_subject(line: str, subject: Any) -> str:
    prefix = f"{subject}: "
    return line[len(prefix):] if subject and line.startswith(prefix) else line


def decisive(cause: dict) -> str:
    """The decisive measurement behind a cause, from its first evidence line, without thresholds."""
    evidence = [text(e) for e in cause.get("evidence") or [] if text(e)]
    if not evidence:
        return ""
    phrase = without_subject(evidence[0], cause.get("subject"))
    phrase = _THRESHOLD.sub("", phrase)
    phrase = phrase.split("; ")[0].strip().rstrip(".,;:")
    if len(phrase) > DECISIVE_CHARS:
        cut = phrase.rfind(", ", 0, DECISIVE_CHARS)
        phrase = phrase[:cut] if cut > DECISIVE_CHARS // 2 else phrase[:DECISIVE_CHARS].rsplit(" ", 1)[0]
    return phrase


def verdict_reasons(report: dict) -> list[str]:
    """Why the verdict is not plain (what qdiag could not see, the symptoms it counted)."""
    return [str(r) for r in report.get("verdict_reasons") or [] if r]


def causes_split(report: dict) -> tuple[list[dict], list[dict]]:
    """(causes about what the user asked for, causes resting only on queues they did not name)."""
    causes = [c for c in report.get("root_causes") or [] if isinstance(c, dict)]
    return [c for c in causes if not c.get("out_of_focus")], [c for c in causes if c.get("out_of_focus")]


def fold(causes: list[dict]) -> list[list[dict]]:
    """Causes that say the same thing about different subjects, one group each, in rank order:
    the same cause, rules, certainty and mitigations (none of which names the queue), so one
    box lists the queues instead of a box per queue."""
    groups: dict[tuple, list[dict]] = {}
    for cause in causes:
        mitigations = cause.get("mitigations") or {}
        key = (cause.get("id"), tuple(map(str, cause.get("rules") or ())), confidence(cause),
               tuple(text(m) for m in mitigations.get("immediate") or []),
               tuple(text(m) for m in mitigations.get("long_term") or []), tuple(cause.get("explained_by") or ()))
        groups.setdefault(key, []).append(cause)
    return list(groups.values())


def group_headline(group: list[dict]) -> str:
    """The cause in words, naming every subject of the group."""
    first = group[0]
    line = headline(first)
    if len(group) == 1:
        return line
    subjects = ", ".join(str(c.get("subject")) for c in group)
    subject = str(first.get("subject"))
    return line.replace(subject, subjects) if subject in line else f"{line} (and {subjects})"


def group_evidence(group: list[dict], *, strip: bool = True) -> list[str]:
    """Every evidence line of a lone cause (without its subject, which the title names, when
    `strip`); the first line of each cause of a group, naming its subject."""
    if len(group) == 1:
        subject = group[0].get("subject") if strip else None
        return [without_subject(text(e), subject) for e in group[0].get("evidence") or [] if text(e)]
    out = []
    for cause in group:
        lines = [text(e) for e in cause.get("evidence") or [] if text(e)]
        if lines:
            out.append(f"{cause.get('subject')}: {without_subject(lines[0], cause.get('subject'))}")
    return out


def group_union(group: list[dict], key: str) -> list[str]:
    """`key` ("next_commands", "explained_by") of every cause of a group, each once: the
    first item of each cause, then the second of each..., so the same command for several
    queues reads as one run of lines."""
    lists = [[str(v) for v in c.get(key) or []] for c in group]
    return list(dict.fromkeys(v for row in zip_longest(*lists) for v in row if v is not None))


def answer(report: dict) -> str:
    """Line 1 after the verdict: the top cause, its subject and the decisive number, in one sentence."""
    focused, others = causes_split(report)
    top = (focused or others or [None])[0]
    if top is not None:
        phrase = decisive(top)
        sentence = headline(top) + (f": {phrase}" if phrase else "")
        return f"{sentence} ({confidence(top)}{', not in focus' if top.get('out_of_focus') else ''})"
    queues, _ = queues_split(report)
    backing = [q for q in queues if q.get("backing_up")]
    why = verdict_reasons(report)
    if report.get("verdict") == "unknown":
        return "qdiag could not tell: " + (why[0] if why else "nothing was measured (see the probes below)")
    if backing:
        q = backing[0]
        return (f"{q.get('subject')} is backing up (depth {fmt_num(q.get('depth'))}, in {fmt_num(q.get('rate_in'))}/s, "
                f"out {fmt_num(q.get('rate_out'))}/s) but no cause scored above the floor")
    if why:
        return f"no possible root cause scored above the floor, but {why[0]}"
    if not report.get("queues"):
        return f"no possible root cause found, and no queue observed (give {broker_flags()})"
    return f"no possible root cause found; none of the {len(queues)} queue(s) in focus is backing up"


# --- queues -----------------------------------------------------------------------------

def queues_split(report: dict) -> tuple[list[dict], list[dict]]:
    """(queues in focus, the others) - rows without a focus flag count as in focus."""
    queues = [q for q in report.get("queues") or [] if isinstance(q, dict)]
    return [q for q in queues if q.get("focus", True) is not False], [q for q in queues if q.get("focus") is False]


def label(q: dict) -> str:
    if q.get("subject"):
        return str(q["subject"])
    name = f"{q.get('system')}:{q.get('name')}"
    return f"{name}/{q['group']}" if q.get("group") else name


def lag_time(q: dict) -> str | None:
    """How old the oldest waiting message is, when known."""
    for key in ("lag_seconds", "oldest_age_s"):
        if duration(q.get(key)) is not None:
            return duration(q.get(key))
    if duration(q.get("lag_seconds_min")) is not None:
        return ">" + duration(q.get("lag_seconds_min"))
    return None


def status_text(q: dict) -> str:
    parts = [str(q.get("status") or "?")]
    fill = number(q.get("fill_ratio"))
    if fill is not None:
        parts.append(f"{fill:.0%} full")
    if q.get("data_at_risk"):
        parts.append("data at risk")
    return ", ".join(parts)


def _owner(value: Any) -> str:
    if isinstance(value, dict):
        who = value.get("client_id") or value.get("member_id") or "?"
        return f"{who}@{value['host'].lstrip('/')}" if value.get("host") else str(who)
    return str(value) if value else "unowned"


def lag_detail(q: dict, worst: int = 3) -> list[str]:
    """Lines on where the lag is: oldest message, worst partitions, and per member when the rows say who owns them."""
    lines = []
    facts = []
    if q.get("depth") is not None:
        facts.append(f"{fmt_num(q.get('depth'))} behind")
    if lag_time(q):
        facts.append(f"oldest waiting {lag_time(q)}")
    rows = [r for r in q.get("partition_lags") or [] if isinstance(r, dict) and number(r.get("lag")) is not None]
    if not rows and q.get("worst_partition") is not None:
        facts.append(f"worst partition {q['worst_partition']}: {fmt_num(q.get('max_lag'))}")
    for key, words in (("unowned_partitions", "partition(s) without an owner"),
                       ("idle_members", "idle member(s)")):
        if number(q.get(key)):
            facts.append(f"{fmt_num(q[key])} {words}")
    if q.get("parallelism"):
        facts.append(str(q["parallelism"]))
    if facts:
        lines.append(", ".join(facts))
    if rows:
        ranked = sorted(rows, key=lambda r: -r["lag"])
        shown = [f"p{r.get('partition')} {fmt_num(r['lag'])}"
                 + (f" ({duration(r.get('lag_seconds'))})" if duration(r.get("lag_seconds")) else "")
                 for r in ranked[:worst] if r["lag"] > 0]
        if shown:
            lines.append("worst partitions: " + ", ".join(shown))
        members: dict[str, list] = {}
        for r in rows:
            members.setdefault(_owner(r.get("owner")), []).append(r)
        if len(members) > 1 or "unowned" not in members:
            split = sorted(members.items(), key=lambda item: -sum(r["lag"] for r in item[1]))
            lines.append("by member: " + "; ".join(
                f"{who} p{','.join(str(r.get('partition')) for r in sorted(rs, key=lambda r: str(r.get('partition'))))}"
                f" lag {fmt_num(sum(r['lag'] for r in rs))}" for who, rs in split))
    return lines


def has_lag_detail(q: dict) -> bool:
    return any(q.get(k) is not None for k in ("partition_lags", "worst_partition", "lag_seconds", "lag_seconds_min"))


# --- consumers ----------------------------------------------------------------------------

# How a wait kind reads after a share of thread-time ("12% on locks").
WAIT_WORDS = {"cpu": "on CPU", "broker": "idle, waiting for the broker", "lock": "in lock or condition waits",
              "sleep": "sleeping", "disk": "in disk waits", "child": "waiting for a child process",
              "local": "on pipes and local sockets", "other": "in other system calls", "unknown": "in unknown states",
              "unreadable": "unreadable"}
# A process none of whose code ran all window (build.py's "held").
HELD_WORDS = {"stopped": "stopped (state T) for the whole window, none of its code ran",
              "frozen": "frozen by its cgroup's freezer for the whole window, none of its code ran"}
# At most this many parts in a consumer's one-line wait summary.
CONSUMER_PARTS = 4


def consumers_split(report: dict) -> tuple[list[dict], list[dict]]:
    """(consumers of the queues in focus, the others)."""
    consumers = [c for c in report.get("consumers") or [] if isinstance(c, dict)]
    return [c for c in consumers if c.get("focus", True) is not False], [c for c in consumers if c.get("focus") is False]


def consumer_sampled(c: dict) -> bool:
    """Whether the kernel's view of the consumer's threads over the window is in the report."""
    return not c.get("gone") and bool((c.get("kernel") or {}).get("sampled"))


def consumer_brief(c: dict) -> str:
    if c.get("gone"):
        return "exited"
    cpu = number(c.get("cpu_percent"))
    return f"{cpu:.0f}% CPU" if cpu is not None else "CPU unknown"


def consumer_label(c: dict) -> str:
    name, runtime = c.get("name") or "?", c.get("runtime")
    return f"pid {c.get('pid')} {name}" + (f" ({runtime})" if runtime and runtime not in str(name) else "")


def _peer_detail(peer: dict | None, protocol: Any) -> str:
    """"(HTTP; answers 300 ms median, 410 ms max, 12 requests)": what the consumer's own connections saw."""
    parts = [str(protocol)] if protocol else []
    if peer and number(peer.get("answer_median_ms")) is not None:
        answer = f"answers {peer['answer_median_ms']:.0f} ms median"
        if number(peer.get("answer_max_ms")) is not None:
            answer += f", {peer['answer_max_ms']:.0f} ms max"
        if number(peer.get("requests")):
            answer += f", {fmt_num(peer['requests'])} requests"
        parts.append(answer)
    return f" ({'; '.join(parts)})" if parts else ""


def _peer_wait(wait: dict, peers: dict[str, dict]) -> str:
    target = wait.get("target")
    detail = _peer_detail(peers.get(target), wait.get("protocol_guess"))
    share, most = number(wait.get("share")) or 0.0, number(wait.get("max_thread_share"))
    threads = number(wait.get("threads")) or 1
    if threads <= 1 and most is not None:
        return f"{most:.0%} of a thread waiting for {target}{detail}"
    return f"{share:.0%} waiting for {target}{detail}, {int(threads)} threads"


def consumer_waits(c: dict) -> list[str]:
    """Where the consumer's threads spent the window, largest first: each peer apart
    (with the answer times its connections saw), every other kind summed."""
    kernel = c.get("kernel") if isinstance(c.get("kernel"), dict) else {}
    if not kernel.get("sampled"):
        return []
    peers = {p.get("peer"): p for p in kernel.get("peers") or [] if isinstance(p, dict)}
    parts: list[tuple[float, str]] = []
    for wait in kernel.get("waits") or []:
        if isinstance(wait, dict) and wait.get("kind") == "peer" and wait.get("target"):
            parts.append((number(wait.get("share")) or 0.0, _peer_wait(wait, peers)))
    for kind, share in (kernel.get("shares") or {}).items():
        if kind != "peer" and (number(share) or 0.0) >= 0.01:
            parts.append((share, f"{share:.0%} {WAIT_WORDS.get(kind, kind)}"))
    parts.sort(key=lambda p: -p[0])
    return [words for _, words in parts[:CONSUMER_PARTS]]


def consumer_line(c: dict) -> str:
    """One line on a consumer process: where its threads waited, its CPU, what never woke, its hottest code."""
    if c.get("gone"):
        return "exited before or during the window"
    parts = consumer_waits(c)
    if c.get("held") in HELD_WORDS:  # its threads' waits are only where it was caught
        parts = [HELD_WORDS[c["held"]] + (f" (threads left {', '.join(parts)})" if parts else "")]
    kernel = c.get("kernel") if isinstance(c.get("kernel"), dict) else {}
    if not parts and c.get("dump_classes"):
        classes = sorted(c["dump_classes"].items(), key=lambda kv: -kv[1])
        parts.append("threads in the dumps: " + ", ".join(f"{n} {cls}" for cls, n in classes))
    if not consumer_sampled(c) and number(c.get("cpu_percent")) is not None:
        parts.append(f"{c['cpu_percent']:.0f}% of a core")
    stuck = [t for t in kernel.get("lock_waits_never_woke") or [] if isinstance(t, dict)]
    if stuck:
        parts.append(f"{len(stuck)} thread(s) never woke from a lock wait")
    hot = [h for h in c.get("hot") or [] if isinstance(h, dict)]
    if hot:
        parts.append(f"hottest {hot[0].get('function')}" + (f" at {hot[0]['where']}" if hot[0].get("where") else ""))
    if not parts:
        parts.append("nothing measured" + (f": {kernel['sampled_why_not']}" if kernel.get("sampled_why_not") else ""))
    return ", ".join(parts)


# --- steps, probes, header ----------------------------------------------------------------

def step_line(step: dict, shown: set[tuple[str, str]]) -> tuple[str, list[str]]:
    """(one-line summary of a step, findings not already shown as causes)."""
    findings = [f for f in step.get("findings") or [] if isinstance(f, dict)]
    if not findings:
        return text(step.get("note")) or "nothing found", []
    ids = list(dict.fromkeys(str(f.get("cause")) for f in findings))
    summary = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}: {', '.join(ids)}"
    extra = [text(f) for f in findings if (f.get("cause"), f.get("subject")) not in shown]
    return summary, extra


def probe_groups(report: dict) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(["host 4.0s", ...] for probes that ran fine, [(name, status, why)] for the others)."""
    ok, other = [], []
    for p in report.get("probes") or []:
        if not isinstance(p, dict):
            continue
        seconds = number(p.get("duration_s"))
        if p.get("status") == "ok":
            ok.append(f"{p.get('name')} {seconds:.1f}s" if seconds is not None else str(p.get("name")))
        else:
            other.append((str(p.get("name")), str(p.get("status") or "?").replace("_", " "), text(p.get("error"))))
    return ok, other


def targets_text(report: dict) -> str:
    found = [f"{t.get('kind')} {t.get('target')} ({t.get('found')})" for t in report.get("targets") or []
             if isinstance(t, dict)]
    return ", ".join(found) if found else "no broker"


def named_text(report: dict, *, only: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> str:
    """What the user named, as the flags they used: "--queue a, b; --pid 42"."""
    flags = {"queues": "--queue", "groups": "--group", "pids": "--pid", "processes": "--process",
             "dependencies": "--dependency", "logs": "--log"}
    named = report.get("named") or {}
    parts = [f"{flags.get(kind, kind)} {', '.join(str(v) for v in values)}" for kind, values in named.items()
             if isinstance(values, list) and values and (not only or kind in only) and kind not in skip]
    return "; ".join(parts)


def baseline_text(report: dict) -> str:
    taken = report.get("baseline")
    if not taken:
        return "no baseline"
    age = age_between(taken, report.get("generated_at"))
    return f"baseline taken {taken}" + (f" ({age})" if age else "")


def command_text(report: dict) -> str:
    return " ".join(str(a) for a in report.get("command") or [])
