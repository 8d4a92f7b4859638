"""What the Redis probe reads at every sample of the window, and how a
value's series is read back out of the samples.

A sample is one pipelined batch (the plan): TIME, INFO, INFO commandstats,
XINFO STREAM/GROUPS per stream, and per job queue its lengths, the elements
at its ends and where the previous sample's newest job is now (LPOS).  Samples are [(monotonic seconds, {command: parsed
reply})]; a command the server refused is None there and its error is kept
once in run.errors.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from . import _redis_flow as flow
from . import _redis_parse as rp
from ._redis_link import Run, is_error

KEEP_INFO = (
    "redis_version", "redis_mode", "role", "uptime_in_seconds", "connected_clients", "maxclients",
    "blocked_clients", "used_memory", "used_memory_peak", "used_memory_rss", "maxmemory",
    "maxmemory_policy", "mem_fragmentation_ratio", "evicted_keys", "rejected_connections",
    "total_commands_processed", "expired_keys", "total_error_replies", "loading",
)


def sample_plan(stream_keys: list[bytes], queues: list[dict]) -> list[tuple]:
    plan: list[tuple] = [("TIME",), ("INFO",), ("INFO", "commandstats")]
    for key in stream_keys:
        plan += [("XINFO", "STREAM", key), ("XINFO", "GROUPS", key)]
    for q in queues:
        plan += queue_sample_commands(q)
    for prefix in sorted({q.get("prefix", "") for q in queues if q["layout"] == "celery"}):
        plan += [("HLEN", f"{prefix}unacked"), ("ZCARD", f"{prefix}unacked_index")]
    for ns in sorted({q.get("namespace", "") for q in queues if q["layout"] == "sidekiq"}):
        plan += [("ZCARD", f"{ns}retry"), ("ZCARD", f"{ns}dead"), ("ZCARD", f"{ns}schedule"),
                 ("GET", f"{ns}stat:processed"), ("GET", f"{ns}stat:failed")]
    for ns in sorted({q.get("namespace", "") for q in queues if q["layout"] == "dramatiq"}):
        plan.append(("ZCARD", f"{ns}__heartbeats__"))
    return list(dict.fromkeys(plan))  # each command once, in order


class Sampler:
    """Takes the samples: the plan's commands in one batch each time, plus, for
    every job list, LPOS for the element that was at its push end at the
    previous sample (see _redis_flow).  The LPOS placeholders of the plan,
    ("LPOS", key, end), are replaced by the real command when there is an
    element to look for; their result is {"pos": index or None}."""

    def __init__(self, run: Run, plan: list[tuple], maxlen: int, max_entry_bytes: int = 65_536):
        self.run = run
        self.plan = plan
        self.maxlen = maxlen
        self.max_entry_bytes = max_entry_bytes
        self.previous: dict[tuple, Any] | None = None
        # Streams whose first or last entry is bigger than max_entry_bytes: XINFO
        # STREAM sends both entries whole, so after the first sample they are read
        # with XLEN and XINFO GROUPS instead (rp.lean_stream).
        self.lean: dict[Any, dict] = {}

    def take(self) -> dict[tuple, Any]:
        run = self.run
        sent, batch = [], []
        out: dict[tuple, Any] = {}
        for cmd in self.plan:
            if cmd[:2] == ("XINFO", "STREAM") and cmd[2] in self.lean:
                batch.append(("XLEN", cmd[2]))
            elif cmd[0] == "LPOS":
                _, key, end, check_repeats = cmd
                anchor = ((self.previous or {}).get(("LINDEX", key, end)) or {}).get("value")
                if anchor is None:
                    out[cmd] = None  # nothing to look for: the list was empty (or the job too big to keep)
                    continue
                batch.append(flow.lpos_command(key, anchor, end, self.maxlen, check_repeats=check_repeats))
            else:
                batch.append(cmd)
            sent.append(cmd)
        for cmd, reply in zip(sent, run.link.batch(batch)):
            if is_error(reply):
                run.errors.setdefault(cmd, " ".join(str(reply).split()))
                out[cmd] = None
                continue
            if cmd[:2] == ("XINFO", "STREAM") and cmd[2] in self.lean:
                out[cmd] = ("XLEN", rp.as_int(reply))  # completed below, once the groups are known
            else:
                out[cmd] = flow.parse_lpos(reply) if cmd[0] == "LPOS" else parse_reply(cmd, reply)
        for cmd, value in out.items():
            if cmd[:2] != ("XINFO", "STREAM") or value is None:
                continue
            key = cmd[2]
            if isinstance(value, tuple):
                out[cmd] = rp.lean_stream(value[1], out.get(("XINFO", "GROUPS", key)), self.lean[key])
            elif (value.get("entry_bytes") or 0) > self.max_entry_bytes and key not in self.lean:
                self.lean[key] = value
                run.notes.append(f"stream '{rp.text(key)}' has entries over {self.max_entry_bytes} bytes "
                                 f"(max_entry_bytes): XINFO STREAM read once, then XLEN and XINFO GROUPS; "
                                 "its first and last entry ids and ages are not followed")
        self.previous = out
        return out


def queue_sample_commands(q: dict) -> list[tuple]:
    cmds: list[tuple] = []
    keys = q["keys"] or [q["key"]]
    push = flow.push_end(q["layout"], q["consume_index"])
    ends = [flow.HEAD, flow.TAIL] if push is None else [push]
    for key in keys:
        # Adjacent in the batch, so they see the list at (nearly always) the
        # same moment: where the last sample's newest job is now, the length,
        # the newest job (to look for next time), the oldest.
        cmds += [("LPOS", key, end, push is None) for end in ends]
        cmds.append(("LLEN", key))
        cmds += [("LINDEX", key, end) for end in ends]
        if q["consume_index"] is not None:
            cmds.append(("LINDEX", key, q["consume_index"]))
    name = q["name"]
    if q["layout"] == "rq":
        cmds += [("ZCARD", f"rq:{reg}:{name}") for reg in rp.RQ_REGISTRIES]
        cmds.append(("LLEN", f"rq:queue:{name}:intermediate"))
    elif q["layout"] == "dramatiq":
        ns = q.get("namespace", "dramatiq:")
        cmds.append(("HLEN", f"{ns}{name}.msgs"))
        if not q.get("delay_queue"):
            cmds.append(("ZCARD", f"{ns}{name}.XQ"))
    return cmds


def parse_reply(cmd: tuple, reply: Any) -> Any:
    op = cmd[0]
    if op == "XINFO":
        return rp.parse_xinfo_stream(reply) if cmd[1] == "STREAM" else rp.parse_xinfo_groups(reply)
    if op == "INFO":
        info = rp.parse_info(reply)
        if len(cmd) > 1:  # commandstats: calls only
            return {k[len("cmdstat_"):]: v.get("calls") for k, v in info.items()
                    if k.startswith("cmdstat_") and isinstance(v, dict)}
        kept = {k: info.get(k) for k in KEEP_INFO}
        kept["errorstat"] = {k[len("errorstat_"):]: v.get("count") for k, v in info.items()
                             if k.startswith("errorstat_") and isinstance(v, dict)}
        kept["keyspace"] = {k: v for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
        return kept
    if op == "TIME":
        return int(rp.as_int(reply[0]) * 1000 + rp.as_int(reply[1]) // 1000)
    if op == "LINDEX":
        # Kept per sample: a digest (has the consuming end moved?) and, when
        # small, the element itself (a job id, or a job to read a time from).
        if reply is None:
            return None
        raw = bytes(reply)
        return {"digest": digest(raw), "size": len(raw), "value": raw if len(raw) <= KEEP_ELEMENT_BYTES else None}
    if op == "GET":
        return rp.as_int(reply) if reply is not None else None
    return rp.as_int(reply)


# ---------------------------------------------------------------------------
# Series helpers over samples [(t, {cmd: value})]


def series(samples: list[tuple[float, dict]], cmd: tuple, pick: Callable[[Any], Any] | None = None) -> list[tuple[float, Any]]:
    out = []
    for t, values in samples:
        v = values.get(cmd)
        out.append((t, pick(v) if (pick and v is not None) else v))
    return out


def last(series: list[tuple[float, Any]]) -> Any:
    for _, v in reversed(series):
        if v is not None:
            return v
    return None


KEEP_ELEMENT_BYTES = 16_384


def digest(payload: bytes | None) -> str | None:
    return None if payload is None else hashlib.blake2b(payload, digest_size=12).hexdigest()

