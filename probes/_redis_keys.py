"""Which keys the Redis probe looks at.  No --queue: SCAN ... TYPE for every
stream and list (and kombu's binding sets), then the registry sets of each
job-queue layout (rq:queues, Sidekiq's queues, kombu bindings) to recognise
the lists.  Plain --queue names: direct lookups of the keys each layout would
use, no SCAN.  Globs: SCAN, then keep what matches, by queue name or key.
"""

from __future__ import annotations

import math
from typing import Any

from . import _redis_parse as rp
from ._redis_link import Run, is_error


class ScanTypeUnsupported(Exception):
    """SCAN ... TYPE was refused (Redis before 6.0)."""


def is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def qid(q: dict) -> str:
    """A job queue's identity: its layout, key prefix or namespace, and name."""
    return f"{q['layout']}|{q.get('prefix', q.get('namespace', ''))}|{q['name']}"


def scan(run, passes: dict[str, tuple[str, str | None]]) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
    """Run several SCAN ... TYPE passes side by side (one pipeline per
    step), each stopping at max_scan_keys.  passes: {label: (type, match)}."""
    count = int(run.opts["scan_count"])
    max_calls = scan_call_budget(run)
    cursors = {label: b"0" for label in passes}
    found: dict[str, dict[bytes, None]] = {label: {} for label in passes}
    calls = {label: 0 for label in passes}
    active = list(passes)
    while active:
        commands = []
        for label in active:
            type_name, match = passes[label]
            args: list[Any] = ["SCAN", cursors[label]]
            if match:
                args += ["MATCH", match]
            args += ["COUNT", count, "TYPE", type_name]
            commands.append(tuple(args))
        replies = run.link.batch(commands)
        still = []
        for label, reply in zip(active, replies):
            if is_error(reply):
                raise ScanTypeUnsupported(str(reply))
            calls[label] += 1
            cursor, keys = reply[0], reply[1]
            for key in keys:
                found[label][bytes(key)] = None
            cursors[label] = cursor
            if cursor in (b"0", "0", 0):
                continue
            if calls[label] >= max_calls:
                continue
            still.append(label)
        active = still
    info = {}
    for label in passes:
        complete = cursors[label] in (b"0", "0", 0)
        info[label] = {"scan_calls": calls[label], "found": len(found[label]), "complete": complete}
        if not complete:
            run.notes.append(
                f"discovery of {label} stopped after {calls[label]} SCAN calls in a database of {run.dbsize} keys "
                f"(max_scan_keys={int(run.opts['max_scan_keys'])}); some may be missing: raise it, "
                "or name the queues with --queue")
    return {label: list(keys) for label, keys in found.items()}, info


def scan_call_budget(run) -> int:
    """SCAN calls per pass.  COUNT counts hash-table buckets, not keys, and
    the table can be twice the key count (more while it rehashes): a
    database within max_scan_keys gets room to finish; a bigger one is
    walked for about max_scan_keys and the cut is noted."""
    count = int(run.opts["scan_count"])
    limit = run.opts["max_scan_keys"]
    if run.dbsize is not None and run.dbsize <= limit:
        return max(1, math.ceil(4 * max(run.dbsize, count) / count)) + 2
    return max(1, math.ceil(limit / count))


def scan_untyped(run, passes: dict[str, tuple[str, str | None]]) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
    """Redis before 6.0 has no SCAN ... TYPE: one untyped pass, TYPE pipelined."""
    import fnmatch

    count = int(run.opts["scan_count"])
    max_calls = scan_call_budget(run)
    cursor, calls, seen = b"0", 0, {}
    while True:
        cursor, keys = run.link.call("SCAN", cursor, "COUNT", count)
        calls += 1
        types = run.link.batch([("TYPE", k) for k in keys])
        for key, t in zip(keys, types):
            if not is_error(t):
                seen[bytes(key)] = rp.text(t)
        if cursor in (b"0", "0", 0) or calls >= max_calls:
            break
    complete = cursor in (b"0", "0", 0)
    found, info = {}, {}
    for label, (type_name, match) in passes.items():
        found[label] = [k for k, t in seen.items() if t == type_name
                        and (match is None or fnmatch.fnmatchcase(rp.text(k), match))]
        info[label] = {"scan_calls": calls, "found": len(found[label]), "complete": complete}
    if not complete:
        run.notes.append(f"discovery stopped after {calls} SCAN calls; raise [probes.redis] max_scan_keys")
    return found, info


def read_sets(run, keys: list[str]) -> dict[str, list[str]]:
    """Members of registry sets, one SSCAN call each (bounded)."""
    if not keys:
        return {}
    limit = int(run.opts["max_set_members"])
    replies = run.link.batch([("SSCAN", k, 0, "COUNT", limit) for k in keys])
    out = {}
    for key, reply in zip(keys, replies):
        if is_error(reply):
            continue  # not a set (WRONGTYPE): not the registry we hoped for
        cursor, members = reply
        if cursor not in (b"0", "0", 0):
            run.notes.append(f"set '{key}' has more than about {limit} members; read only the first ones")
        out[key] = sorted(rp.text(m) for m in members)
    return out


def discover_keys(run) -> dict[str, Any]:
    """Keys to look at.  No --queue: SCAN for everything.  Plain names:
    direct lookups, no SCAN.  Glob patterns (orders-*): SCAN, then keep
    what matches, by queue name or key."""
    import fnmatch

    names = [q for q in run.ctx.targets.queues if not is_glob(q)]
    patterns = [q for q in run.ctx.targets.queues if is_glob(q)]
    if not names and not patterns:
        return discover_scan(run)
    found = discover_named(run, names) if names else {
        "mode": "named", "scan": None, "stream_keys": [], "queues": [], "unrecognised_lists": [],
        "missing": [], "celery_prefixes": [], "sidekiq_namespaces": []}
    if not patterns:
        return found
    scanned = discover_scan(run)

    def hit(*values) -> set[str]:
        return {p for p in patterns for v in values if v is not None and fnmatch.fnmatchcase(v, p)}

    matched: set[str] = set()
    streams = set(found["stream_keys"])
    for key in scanned["stream_keys"]:
        if (m := hit(rp.text(key))):
            streams.add(key)
            matched |= m
    queues = {qid(q): q for q in found["queues"]}
    for q in scanned["queues"]:
        if (m := hit(q["name"], q["key"])):
            queues.setdefault(qid(q), q)
            matched |= m
    named_lists = [k for k in scanned["unrecognised_lists"] if hit(k)]
    for key in named_lists:
        matched |= hit(key)
    extra, _ = rp.recognise(named_lists, named=named_lists)
    for q in extra:
        queues.setdefault(qid(q), q)
    found.update(mode="named+patterns", scan=scanned["scan"], stream_keys=sorted(streams),
                 queues=sorted(queues.values(), key=lambda q: (q["layout"], q["name"])),
                 missing=found["missing"] + [p for p in patterns if p not in matched])
    return found


def discover_scan(run) -> dict[str, Any]:
    size = run.link.call("DBSIZE")
    run.dbsize = rp.as_int(size)
    passes = {"streams": ("stream", None), "lists": ("list", None),
              "kombu bindings": ("set", "*" + rp.KOMBU_BINDING + "*")}
    try:
        found, scan_info = scan(run, passes)
    except ScanTypeUnsupported:
        found, scan_info = scan_untyped(run, passes)
    list_keys = [rp.text(k) for k in found["lists"]]
    binding_keys = sorted(rp.text(k) for k in found["kombu bindings"])
    namespaces = rp.sidekiq_namespaces(list_keys)
    sets = read_sets(run, ["rq:queues"] + [f"{ns}queues" for ns in namespaces] + binding_keys)
    exists = run.link.batch([("EXISTS", f"{ns}processes") for ns in namespaces])
    live = [ns for ns, e in zip(namespaces, exists) if e == 1]
    inputs = rp.registry_inputs(list_keys, sets, live)
    queues, unrecognised = rp.recognise(list_keys, **inputs)
    celery, sidekiq_registered = inputs["celery_queues"], inputs["sidekiq_registered"]
    scan_info = {"dbsize": run.dbsize, **scan_info}
    return {"mode": "scan", "scan": scan_info, "stream_keys": sorted(found["streams"]),
            "queues": queues, "unrecognised_lists": unrecognised, "missing": [],
            "celery_prefixes": sorted(celery), "sidekiq_namespaces": sorted(sidekiq_registered)}


def discover_named(run, names: list[str]) -> dict[str, Any]:
    """--queue NAME: look the candidate keys up directly, no SCAN."""
    commands: list[tuple] = []
    for name in names:
        for key in rp.candidate_keys(name):
            commands.append(("TYPE", key))
        for p in range(1, 10):  # kombu priority siblings (default steps 3, 6, 9)
            commands.append(("TYPE", f"{name}{rp.CELERY_SEP}{p}"))
        commands += [("EXISTS", f"{rp.KOMBU_BINDING}{name}"), ("SISMEMBER", "rq:queues", f"rq:queue:{name}"),
                     ("SISMEMBER", "queues", name), ("EXISTS", "processes")]
    commands = list(dict.fromkeys(commands))
    replies = dict(zip(commands, run.link.batch(commands)))
    stream_keys, list_keys, named_lists, missing = [], [], [], []
    celery: dict[str, set[str]] = {}
    rq_registered, sidekiq_registered = [], {}
    for name in names:
        hit = False
        for key in rp.candidate_keys(name) + [f"{name}{rp.CELERY_SEP}{p}" for p in range(1, 10)]:
            t = rp.text(replies.get(("TYPE", key)))
            if t == "stream" and key == name:
                stream_keys.append(name.encode())
                hit = True
            elif t == "list":
                list_keys.append(key)
                hit = True
                if key == name:
                    named_lists.append(name)
            elif t not in (None, "none") and key == name:
                run.notes.append(f"key '{name}' is a {t}, not a list or a stream: not a queue qdiag can read")
                hit = True
        if replies.get(("EXISTS", f"{rp.KOMBU_BINDING}{name}")) == 1:
            celery.setdefault("", set()).add(name)
            hit = True
        if replies.get(("SISMEMBER", "rq:queues", f"rq:queue:{name}")) == 1:
            rq_registered.append(name)
            hit = True
        if replies.get(("SISMEMBER", "queues", name)) == 1 and replies.get(("EXISTS", "processes")) == 1:
            sidekiq_registered.setdefault("", set()).add(name)
            hit = True
        if not hit:
            # Redis deletes a list when its last element is popped, so a
            # drained plain list and a mistyped name look the same.  Neither
            # is measured: the name is not found (never a healthy depth 0).
            # Job layouts keep their queues in registries, found above.
            missing.append(name)
    queues, _ = rp.recognise(list_keys, celery_queues=celery, rq_registered=rq_registered,
                             sidekiq_registered=sidekiq_registered, named=named_lists)
    # A named list that also matches a layout pattern belongs to that layout;
    # layout keys found only as a candidate of another name are kept too.
    return {"mode": "named", "scan": None, "stream_keys": sorted(set(stream_keys)), "queues": queues,
            "unrecognised_lists": [], "missing": missing, "celery_prefixes": sorted(celery),
            "sidekiq_namespaces": sorted(sidekiq_registered)}


def streams_with_groups(run: Run, stream_keys: list[bytes]) -> tuple[list[bytes], list[str]]:
    """--group narrows streams to those that have one of the named groups.
    Returns (those streams, the named groups no stream looked at has)."""
    wanted = set(run.ctx.targets.groups)
    replies = run.link.batch([("XINFO", "GROUPS", k) for k in stream_keys]) if stream_keys else []
    kept, seen = [], set()
    for key, reply in zip(stream_keys, replies):
        if is_error(reply):
            continue
        names = {g["name"] for g in rp.parse_xinfo_groups(reply)}
        if names & wanted:
            kept.append(key)
            seen |= names & wanted
    missing = sorted(wanted - seen)
    for g in missing:
        run.notes.append(f"consumer group '{g}' not found on any stream looked at")
    return kept, missing


def unrecognised_lists(run: Run, keys: list[str]) -> dict[str, Any] | None:
    """Lists of no known layout: a count and the longest few (LLEN on up to 1,000)."""
    if not keys:
        return {"count": 0, "longest": []}
    looked = keys[:1000]
    lengths = run.link.batch([("LLEN", k) for k in looked])
    pairs_ = sorted(((rp.as_int(n) or 0, k) for k, n in zip(looked, lengths) if not is_error(n)), reverse=True)
    return {"count": len(keys), "longest": [{"key": k, "length": n} for n, k in pairs_[:10]],
            "note": "not reported as queues: name one with --queue to sample it"}
