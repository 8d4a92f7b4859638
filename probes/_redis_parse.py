"""Pure logic for the Redis probe: raw RESP replies and key names in, plain
JSON-ready dicts out.  Nothing here talks to a server, so every rule is
tested from recorded replies (tests/fixtures/redis/).

Raw replies are what the wire gives with no client-side parsing: bytes,
ints, None and nested lists.  Every parser also accepts str in place of bytes
(fixtures are JSON).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

# ---------------------------------------------------------------------------
# Raw reply helpers


def text(value: Any) -> str | None:
    """bytes -> str without ever failing on binary key names."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def as_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(text(value))
    except (TypeError, ValueError):
        return None


def pairs(flat: Sequence | None) -> dict[str, Any]:
    """[k1, v1, k2, v2, ...] (RESP2 maps) -> {"k1": v1, ...}."""
    if not flat:
        return {}
    if isinstance(flat, dict):  # a RESP3 map, should a caller ever pass one
        return {text(k): v for k, v in flat.items()}
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def clip(value: str | None, limit: int) -> str | None:
    if value is None or len(value) <= limit:
        return value
    return value[: max(0, limit - 1)] + "…"


# ---------------------------------------------------------------------------
# Stream ids.  "<ms>-<seq>": the ms part is the producer-side Redis server's
# clock when the id was auto-generated (XADD *).  Explicit ids ("1-1") are
# legal too, so an id is only read as a time when it looks like one.

_ID = re.compile(r"^(\d+)-(\d+)$")
# 2000-01-01 in ms: earlier "timestamps" are explicit ids, not times.
_EPOCH_2000_MS = 946_684_800_000
_DAY_MS = 86_400_000


def parse_id(stream_id: Any) -> tuple[int, int] | None:
    s = text(stream_id)
    if s is None:
        return None
    m = _ID.match(s)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2))


def id_ms(stream_id: Any) -> int | None:
    parsed = parse_id(stream_id)
    return parsed[0] if parsed else None


def compare_ids(a: Any, b: Any) -> int | None:
    pa, pb = parse_id(a), parse_id(b)
    if pa is None or pb is None:
        return None
    return (pa > pb) - (pa < pb)


def next_id(stream_id: Any) -> str | None:
    """The smallest id after `stream_id` (for an XRANGE that starts just past it)."""
    parsed = parse_id(stream_id)
    if parsed is None:
        return None
    ms, seq = parsed
    if seq >= 2**64 - 1:
        return f"{ms + 1}-0"
    return f"{ms}-{seq + 1}"


def id_age_s(stream_id: Any, now_ms: int | None) -> float | None:
    """Seconds since the id's timestamp, or None when the id is not a time
    (explicit ids, 0-0) or the server time is unknown."""
    ms = id_ms(stream_id)
    if ms is None or now_ms is None or ms < _EPOCH_2000_MS or ms > now_ms + _DAY_MS:
        return None
    return round(max(0, now_ms - ms) / 1000.0, 3)


def is_zero_id(stream_id: Any) -> bool:
    return parse_id(stream_id) in (None, (0, 0))


# ---------------------------------------------------------------------------
# XINFO / XPENDING replies


def _entry_id(entry: Any) -> str | None:
    # first-entry / last-entry are [id, [field, value, ...]] or nil.
    if isinstance(entry, (list, tuple)) and entry:
        return text(entry[0])
    return None


def _entry_bytes(entry: Any) -> int:
    """Bytes of an entry's field names and values ([id, [f, v, ...]])."""
    if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not isinstance(entry[1], (list, tuple)):
        return 0
    return sum(len(x) for x in entry[1] if isinstance(x, (bytes, bytearray, str)))


def parse_xinfo_stream(raw: Sequence) -> dict[str, Any]:
    """XINFO STREAM key (not FULL).  entries-added, max-deleted-entry-id and
    recorded-first-entry-id exist from Redis 7.0 on (None before).
    entry_bytes: the larger of the first and last entries, as XINFO STREAM
    sends both whole every time."""
    d = pairs(raw)
    return {
        "entry_bytes": max(_entry_bytes(d.get("first-entry")), _entry_bytes(d.get("last-entry"))),
        "length": as_int(d.get("length")),
        "entries_added": as_int(d.get("entries-added")),
        "groups": as_int(d.get("groups")),
        "last_generated_id": text(d.get("last-generated-id")),
        "max_deleted_id": text(d.get("max-deleted-entry-id")),
        "recorded_first_id": text(d.get("recorded-first-entry-id")),
        "first_id": _entry_id(d.get("first-entry")),
        "last_id": _entry_id(d.get("last-entry")),
    }


def parse_xinfo_groups(raw: Sequence) -> list[dict[str, Any]]:
    """XINFO GROUPS key.  entries-read and lag exist from 7.0; both may be nil."""
    groups = []
    for item in raw or []:
        d = pairs(item)
        groups.append({
            "name": text(d.get("name")),
            "consumers": as_int(d.get("consumers")),
            "pending": as_int(d.get("pending")),
            "last_delivered_id": text(d.get("last-delivered-id")),
            "entries_read": as_int(d.get("entries-read")),
            "lag": as_int(d.get("lag")),
            "lag_reported": "lag" in d,  # False on servers before 7.0
        })
    return groups


def parse_xinfo_consumers(raw: Sequence) -> list[dict[str, Any]]:
    """XINFO CONSUMERS key group.  `idle`: ms since the consumer's last
    attempted interaction (7.2+) or last successful one (before 7.2);
    `inactive`: ms since its last successful interaction, 7.2+ only."""
    out = []
    for item in raw or []:
        d = pairs(item)
        out.append({
            "name": text(d.get("name")),
            "pending": as_int(d.get("pending")),
            "idle_ms": as_int(d.get("idle")),
            "inactive_ms": as_int(d.get("inactive")) if "inactive" in d else None,
        })
    return out


def parse_xpending_summary(raw: Sequence) -> dict[str, Any]:
    """XPENDING key group -> [count, min-id, max-id, [[consumer, count], ...]]."""
    raw = list(raw or [])
    raw += [None] * (4 - len(raw))
    consumers = {}
    for row in raw[3] or []:
        if isinstance(row, (list, tuple)) and len(row) >= 2:
            consumers[text(row[0])] = as_int(row[1])
    return {"count": as_int(raw[0]) or 0, "min_id": text(raw[1]), "max_id": text(raw[2]), "consumers": consumers}


def parse_xpending_range(raw: Sequence) -> list[dict[str, Any]]:
    """XPENDING key group - + N -> [[id, consumer, idle-ms, delivery-count], ...]."""
    out = []
    for row in raw or []:
        if isinstance(row, (list, tuple)) and len(row) >= 4:
            out.append({"id": text(row[0]), "consumer": text(row[1]),
                        "idle_ms": as_int(row[2]), "deliveries": as_int(row[3])})
    return out


def poison_candidates(entries: Iterable[dict], threshold: int, limit: int = 20) -> list[dict[str, Any]]:
    """Pending entries delivered at least `threshold` times, worst first.
    Each delivery after the first is a consumer that took the entry and never
    acknowledged it (crash, timeout, or an error it swallowed)."""
    hits = [e for e in entries if (e.get("deliveries") or 0) >= threshold]
    hits.sort(key=lambda e: (-(e.get("deliveries") or 0), e.get("id") or ""))
    return [{"id": e["id"], "consumer": e["consumer"], "deliveries": e["deliveries"],
             "idle_s": None if e.get("idle_ms") is None else round(e["idle_ms"] / 1000.0, 3)}
            for e in hits[:limit]]


# ---------------------------------------------------------------------------
# Consumer-group depth.  `lag` (7.0+) = entries-added - entries-read: the
# entries the group has not been given yet, counting from the group's
# last-delivered-id.  Redis returns nil when it cannot count that exactly.


def lean_stream(length: int | None, groups: list[dict] | None, first: dict) -> dict[str, Any]:
    """A stream's state without XINFO STREAM (whose reply carries the first and
    last entries whole): the length from XLEN, entries-added from a group's
    entries-read + lag (Redis' own definition of lag), the rest unknown.  The
    deleted-entry mark is kept from the first sample's XINFO STREAM."""
    added = [g["entries_read"] + g["lag"] for g in groups or []
             if g.get("entries_read") is not None and g.get("lag") is not None]
    return {"entry_bytes": None, "length": length, "entries_added": max(added) if added else None,
            "groups": len(groups) if groups is not None else None, "last_generated_id": None,
            "max_deleted_id": first.get("max_deleted_id"), "recorded_first_id": None,
            "first_id": None, "last_id": None, "lean": True}


def lag_null_reason(stream: dict, group: dict) -> str | None:
    """Why XINFO GROUPS gave a nil lag, from the same facts Redis used."""
    if group.get("lag") is not None:
        return None
    if not group.get("lag_reported", True):
        return "this Redis is older than 7.0: XINFO GROUPS has no lag"
    last_delivered = group.get("last_delivered_id")
    max_deleted = stream.get("max_deleted_id")
    if not is_zero_id(max_deleted) and compare_ids(max_deleted, last_delivered) == 1:
        return ("entries were deleted (XDEL) after the group's last-delivered-id, "
                "so Redis cannot count what is left to read")
    if group.get("entries_read") is None:
        return ("the group's read counter is unknown: it was created or moved (XGROUP CREATE/SETID) "
                "at an id inside the stream; Redis counts again once the group reaches the end")
    return "Redis could not count the entries after the group's last-delivered-id"


def group_depth(stream: dict, group: dict) -> tuple[int | None, str]:
    """(entries not yet delivered to the group, how that number was obtained)."""
    lag = group.get("lag")
    length = stream.get("length")
    last_delivered = group.get("last_delivered_id")
    first_id, last_id = stream.get("first_id"), stream.get("last_id")
    if length == 0:
        return 0, "stream is empty"
    if lag is not None:
        # A group behind the stream's first entry lost what trimming removed;
        # Redis' lag still counts those entries, the stream no longer holds them.
        if length is not None and first_id and compare_ids(last_delivered, first_id) == -1 and lag > length:
            return length, "every entry still in the stream (lag also counts trimmed entries)"
        return lag, "lag"
    if last_id and compare_ids(last_delivered, last_id) in (0, 1):
        return 0, "last-delivered-id is at the end of the stream"
    if first_id and length is not None and compare_ids(last_delivered, first_id) == -1:
        return length, "last-delivered-id is before the first entry: every entry is undelivered"
    return None, "unknown"


def trimmed_unread(stream: dict, group: dict) -> int | None:
    """Entries the group never read that trimming (MAXLEN/MINID) already removed."""
    lag, length, first_id = group.get("lag"), stream.get("length"), stream.get("first_id")
    if lag is None or length is None or not first_id:
        return None
    if compare_ids(group.get("last_delivered_id"), first_id) == -1 and lag > length:
        return lag - length
    return 0


# ---------------------------------------------------------------------------
# INFO and CLIENT LIST


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def parse_info(raw: Any) -> dict[str, Any]:
    """INFO text -> {field: int | float | str}; keyspace lines become dicts."""
    out: dict[str, Any] = {}
    for line in (text(raw) or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        if re.match(r"^db\d+$", key) or key.startswith(("cmdstat_", "errorstat_")):
            fields = {}
            for part in value.split(","):
                k, _, v = part.partition("=")
                fields[k] = _number(v)
            out[key] = fields
        else:
            out[key] = _number(value)
    return out


def parse_client_list(raw: Any, limit: int | None = None) -> list[dict[str, str]]:
    """CLIENT LIST text -> one dict per client (all values str), at most
    `limit` of them.  Names cannot contain spaces (CLIENT SETNAME refuses
    them), so splitting on spaces is safe."""
    clients: list[dict[str, str]] = []
    body = text(raw) or ""
    start = 0
    while start < len(body) and (limit is None or len(clients) < limit):
        end = body.find("\n", start)
        end = len(body) if end < 0 else end
        line, start = body[start:end].strip(), end + 1
        if not line:
            continue
        client = {}
        for token in line.split(" "):
            key, sep, value = token.partition("=")
            if sep:
                client[key] = value
        if client:
            clients.append(client)
    return clients


def client_list_lines(raw: Any) -> int:
    """How many clients a CLIENT LIST reply lists (lines), without parsing them."""
    body = text(raw) or ""
    return body.count("\n") + (1 if body and not body.endswith("\n") else 0)


# Commands that block a client until a key gets data.  CLIENT LIST shows the
# client's last command; it never shows the keys the client waits on.
BLOCKING_COMMANDS = frozenset({
    "blpop", "brpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop",
    "xread", "xreadgroup", "wait", "waitaof",
})


def split_addr(addr: str | None) -> tuple[str, int] | None:
    """'127.0.0.1:5000' / '[::1]:5000' / '::1:5000' -> (ip, port)."""
    if not addr or ":" not in addr:
        return None
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def blocked_clients(clients: Iterable[dict], own_id: str | None) -> list[dict[str, Any]]:
    """Clients blocked in a command (flag 'b'), qdiag's own connection left out.
    `idle` of a blocked client is how long it has been waiting."""
    out = []
    for c in clients:
        if own_id is not None and c.get("id") == own_id:
            continue
        if "b" not in c.get("flags", ""):
            continue
        cmd = c.get("cmd", "")
        out.append({"id": as_int(c.get("id")), "addr": c.get("addr"), "name": c.get("name") or None,
                    "db": as_int(c.get("db")), "cmd": cmd, "blocked_for_s": as_int(c.get("idle")),
                    "known_blocking_command": cmd.split("|")[0] in BLOCKING_COMMANDS})
    out.sort(key=lambda c: (c["cmd"], c["addr"] or ""))
    return out


def count_by(items: Iterable[dict], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item.get(key))] = counts.get(str(item.get(key)), 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------
# Memory and eviction

EVICTION_MEANING = {
    "noeviction": "at maxmemory every write fails with an OOM error: producers cannot enqueue "
                  "(consumers still read); nothing already queued is lost",
    "allkeys-lru": "at maxmemory Redis evicts any key, queue keys included: jobs can vanish silently",
    "allkeys-lfu": "at maxmemory Redis evicts any key, queue keys included: jobs can vanish silently",
    "allkeys-random": "at maxmemory Redis evicts random keys, queue keys included: jobs can vanish silently",
    "volatile-lru": "at maxmemory only keys with a TTL are evicted; queue keys normally have none, "
                    "so once no TTL keys are left writes fail as with noeviction (job payload or result "
                    "keys that carry a TTL can be evicted)",
    "volatile-lfu": "at maxmemory only keys with a TTL are evicted; queue keys normally have none, "
                    "so once no TTL keys are left writes fail as with noeviction (job payload or result "
                    "keys that carry a TTL can be evicted)",
    "volatile-random": "at maxmemory only keys with a TTL are evicted; queue keys normally have none, "
                       "so once no TTL keys are left writes fail as with noeviction",
    "volatile-ttl": "at maxmemory keys closest to expiry are evicted first, only among keys with a TTL; "
                    "queue keys normally have none, so once no TTL keys are left writes fail",
}


def eviction_meaning(policy: str | None) -> str | None:
    if not policy:
        return None
    return EVICTION_MEANING.get(policy, f"unknown policy '{policy}'")


def memory_ratio(used: Any, maxmemory: Any) -> float | None:
    """used_memory / maxmemory; None when maxmemory is 0 (no limit)."""
    used, limit = as_int(used), as_int(maxmemory)
    if used is None or not limit:
        return None
    return round(used / limit, 4)


# ---------------------------------------------------------------------------
# Rates from samples [(seconds, value), ...]


def rate(samples: Sequence[tuple[float, Any]], *, counter: bool = False) -> float | None:
    """Change per second between the first and last known values.  For a
    counter a decrease means it was reset (or moved back): no rate."""
    points = [(t, v) for t, v in samples if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(points) < 2:
        return None
    (t0, v0), (t1, v1) = points[0], points[-1]
    if t1 - t0 <= 0:
        return None
    if counter and v1 < v0:
        return None
    return round((v1 - v0) / (t1 - t0), 3)


def delta(samples: Sequence[tuple[float, Any]]) -> int | float | None:
    points = [v for _, v in samples if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(points) < 2:
        return None
    return points[-1] - points[0]


def trend(samples: Sequence[tuple[float, Any]]) -> str | None:
    d = delta(samples)
    if d is None:
        return None
    return "growing" if d > 0 else "shrinking" if d < 0 else "flat"


# ---------------------------------------------------------------------------
# Job-queue layouts, recognised from key names.

CELERY_SEP = "\x06\x16"  # kombu's separator in priority queue names and bindings
RQ_REGISTRIES = ("wip", "finished", "failed", "deferred", "scheduled", "canceled")

_RQ_QUEUE = re.compile(r"^rq:queue:(?P<q>.+)$")
_SIDEKIQ_QUEUE = re.compile(r"^(?P<ns>(?:[^:]+:)*)queue:(?P<q>[^:]+)$")
_DRAMATIQ_QUEUE = re.compile(r"^(?P<ns>dramatiq):(?P<q>[^:]+)$")
_CELERY_PRIORITY = re.compile(r"^(?P<base>.+)" + CELERY_SEP + r"(?P<p>\d+)$")
KOMBU_BINDING = "_kombu.binding."


def kombu_binding_queue(member: Any) -> str | None:
    """A `_kombu.binding.<exchange>` set member is routing_key SEP pattern SEP
    queue.  Celery's broadcast queues (remote control "*.pidbox", events
    "celeryev.*") travel by PUBLISH, never as lists: they are not work queues."""
    parts = (text(member) or "").split(CELERY_SEP)
    if len(parts) != 3 or not parts[2]:
        return None
    queue = parts[2]
    if queue.endswith(".pidbox") or queue.startswith("celeryev."):
        return None
    return queue


def kombu_prefix(binding_key: str) -> str | None:
    """'myapp:_kombu.binding.celery' -> 'myapp:' (kombu's global_keyprefix)."""
    at = binding_key.find(KOMBU_BINDING)
    return binding_key[:at] if at >= 0 else None


def recognise(list_keys: Iterable[str], *, celery_queues: dict[str, set[str]] | None = None,
              rq_registered: Iterable[str] = (), sidekiq_registered: dict[str, set[str]] | None = None,
              named: Iterable[str] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """Group list keys into job queues by layout.

    list_keys: names of existing lists.  celery_queues: {key prefix: queue
    names found in that prefix's kombu binding sets}.  rq_registered: queue
    names in `rq:queues` (they exist even when empty, as no list).
    sidekiq_registered: {namespace: names in `<ns>queues`}.  named: keys the
    user named with --queue that are lists of no known layout.
    Returns (queues, unrecognised list keys).

    Each queue: layout, name, key (main list), keys (every list holding its
    jobs), consume_index (the end consumers pop: the oldest job), plus the
    layout's own prefix/namespace.
    """
    celery_queues = celery_queues or {}
    sidekiq_registered = sidekiq_registered or {}
    keys = sorted(set(list_keys))
    existing = set(keys)
    queues: dict[tuple, dict[str, Any]] = {}
    claimed: set[str] = set()

    def add(layout: str, name: str, main: str, consume_index: int | None, **extra) -> dict[str, Any]:
        ident = (layout, extra.get("prefix", extra.get("namespace", "")), name)
        q = queues.get(ident)
        if q is None:
            q = {"layout": layout, "name": name, "key": main, "keys": [], "consume_index": consume_index, **extra}
            queues[ident] = q
        if main in existing and main not in q["keys"]:
            q["keys"].append(main)
        claimed.add(main)
        return q

    # Celery/kombu: LPUSH by producers, BRPOP by workers -> oldest at index -1.
    # Priority p > 0 lives in "<queue>\x06\x16<p>"; priority 0 is the queue itself.
    for prefix, names in celery_queues.items():
        for name in sorted(names):
            q = add("celery", name, prefix + name, -1, prefix=prefix)
            for key in keys:
                m = _CELERY_PRIORITY.match(key)
                if m and m.group("base") == prefix + name:
                    q["keys"].append(key)
                    claimed.add(key)
    for key in keys:
        if key in claimed:
            continue
        m = _CELERY_PRIORITY.match(key)
        if m:  # a priority sibling names its queue even without a binding set
            base = m.group("base")
            q = add("celery", base, base, -1, prefix="")
            if key not in q["keys"]:
                q["keys"].append(key)
            claimed.add(key)

    # RQ: RPUSH to enqueue, LPOP/BLPOP by workers -> oldest at index 0.
    for key in keys:
        if key in claimed:
            continue
        m = _RQ_QUEUE.match(key)
        if m:
            name = m.group("q")
            if name.endswith(":intermediate"):  # RQ 2's in-transit list belongs to its queue
                claimed.add(key)
                continue
            add("rq", name, key, 0)
    for name in sorted(set(rq_registered)):
        add("rq", name, f"rq:queue:{name}", 0)

    # Dramatiq: RPUSH message ids, workers LPOP (in a Lua script) -> oldest at 0.
    for key in keys:
        if key in claimed:
            continue
        m = _DRAMATIQ_QUEUE.match(key)
        if m and not m.group("q").startswith("__"):
            name = m.group("q")
            add("dramatiq", name, key, 0, namespace=m.group("ns") + ":",
                delay_queue=name.endswith(".DQ"))

    # Sidekiq: LPUSH by clients, BRPOP by servers -> oldest at index -1.
    for key in keys:
        if key in claimed:
            continue
        m = _SIDEKIQ_QUEUE.match(key)
        if m:
            add("sidekiq", m.group("q"), key, -1, namespace=m.group("ns"))
    for ns, names in sidekiq_registered.items():
        for name in sorted(names):
            add("sidekiq", name, f"{ns}queue:{name}", -1, namespace=ns)

    named_set = set(named)
    for key in keys:
        if key not in claimed and key in named_set:
            add("list", key, key, None)

    unrecognised = [k for k in keys if k not in claimed]
    return sorted(queues.values(), key=lambda q: (q["layout"], q["name"])), unrecognised


def sidekiq_namespace(key: str) -> str | None:
    """'queue:default' -> '', 'myapp:queue:default' -> 'myapp:'; None when not Sidekiq-shaped."""
    if key.startswith("rq:"):
        return None
    m = _SIDEKIQ_QUEUE.match(key)
    return m.group("ns") if m else None


def sidekiq_namespaces(list_keys: Iterable[str]) -> list[str]:
    """Namespaces whose `<ns>queues` / `<ns>processes` are worth reading: the
    default one and every namespace a `<ns>queue:<q>` list shows."""
    found = {""}
    for key in list_keys:
        ns = sidekiq_namespace(key)
        if ns is not None:
            found.add(ns)
    return sorted(found)


def registry_inputs(list_keys: Iterable[str], sets: dict[str, list[str]],
                    sidekiq_live: Iterable[str] = ()) -> dict[str, Any]:
    """Turn registry sets into recognise()'s keyword arguments.

    sets: {set key: members} for `_kombu.binding.*`, `rq:queues`, `<ns>queues`.
    sidekiq_live: namespaces whose `<ns>processes` exists.  A bare set called
    `queues` is only taken as Sidekiq's when Sidekiq's process registry or a
    `queue:*` list of the same namespace is there too."""
    list_keys = list(list_keys)
    celery: dict[str, set[str]] = {}
    for key, members in sets.items():
        prefix = kombu_prefix(key)
        if prefix is None:
            continue
        for member in members:
            queue = kombu_binding_queue(member)
            if queue:
                celery.setdefault(prefix, set()).add(queue)
    rq_registered = sorted(m[len("rq:queue:"):] for m in sets.get("rq:queues", []) if m.startswith("rq:queue:"))
    with_lists = {sidekiq_namespace(k) for k in list_keys} - {None}
    live = set(sidekiq_live)
    sidekiq: dict[str, set[str]] = {}
    for key, members in sets.items():
        if key.startswith("rq:") or not (key == "queues" or key.endswith(":queues")):
            continue
        ns = key[: -len("queues")]
        if members and (ns in live or ns in with_lists):
            sidekiq[ns] = set(members)
    return {"celery_queues": celery, "rq_registered": rq_registered, "sidekiq_registered": sidekiq}


def candidate_keys(name: str) -> list[str]:
    """Keys that a --queue NAME can mean, in the default layouts."""
    return [name, f"rq:queue:{name}", f"queue:{name}", f"dramatiq:{name}"]


# ---------------------------------------------------------------------------
# Job payloads: when was the oldest job enqueued?

_RQ_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


def rq_time(value: Any) -> float | None:
    """RQ stores enqueued_at as UTC text: '2024-05-01T12:00:00.123456Z'."""
    s = text(value)
    if not s:
        return None
    for fmt in _RQ_TIME_FORMATS:
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def load_json(payload: Any) -> Any:
    try:
        return json.loads(text(payload) or "")
    except (ValueError, TypeError):
        return None


def sidekiq_job(payload: Any) -> dict[str, Any]:
    """A Sidekiq job: enqueued_at is epoch seconds (float, before 8.0) or
    epoch milliseconds (integer, 8.0+)."""
    job = load_json(payload)
    if not isinstance(job, dict):
        return {"enqueued_at": None, "job_class": None}
    at = job.get("enqueued_at")
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        at = None
    elif at > 1e11:
        at = at / 1000.0
    return {"enqueued_at": at, "job_class": job.get("wrapped") or job.get("class")}


def dramatiq_message(payload: Any) -> dict[str, Any]:
    """A Dramatiq message: message_timestamp is epoch milliseconds."""
    msg = load_json(payload)
    if not isinstance(msg, dict):
        return {"enqueued_at": None, "actor": None}
    at = msg.get("message_timestamp")
    at = at / 1000.0 if isinstance(at, (int, float)) and not isinstance(at, bool) else None
    return {"enqueued_at": at, "actor": msg.get("actor_name")}


def celery_message(payload: Any) -> dict[str, Any]:
    """A kombu/Celery message.  Protocol 2 carries no enqueue time, only the
    task name and id (and an optional ETA)."""
    msg = load_json(payload)
    headers = msg.get("headers") if isinstance(msg, dict) else None
    if not isinstance(headers, dict):
        return {"task": None, "task_id": None, "eta": None}
    return {"task": headers.get("task"), "task_id": headers.get("id"), "eta": headers.get("eta")}


def age_s(enqueued_at: float | None, now_s: float | None) -> float | None:
    if enqueued_at is None or now_s is None:
        return None
    return round(max(0.0, now_s - enqueued_at), 3)


# ---------------------------------------------------------------------------
# Status of one queue record, in the words the Kafka probe uses (after
# Burrow): OK, WARN (growing, or poison entries), STALL (work waiting, nothing
# taken during the window), STOP (work waiting, no consumer), UNKNOWN.

OK, WARN, STALL, STOP, UNKNOWN = "OK", "WARN", "STALL", "STOP", "UNKNOWN"
NO_GROUP = "NO_GROUP"  # a stream nobody reads through a consumer group (as Kafka's topic without a group)
GONE = "GONE"  # a group whose listed consumers all lost their connection: their processes are gone
SEVERITY = {OK: "ok", WARN: "warn", STALL: "err", STOP: "err", UNKNOWN: "unknown", NO_GROUP: "unknown", GONE: "err"}


def judge(*, waiting: int | None, consumers: int | None, consumed: bool | None,
          depth_trend: str | None, rate_in: float | None = None, rate_out: float | None = None,
          poison: int = 0, samples: int = 2) -> tuple[str, str]:
    """(status, reason).  waiting: work not finished (for a group: undelivered
    plus pending); consumed: whether anything was taken during the window
    (None: cannot tell)."""
    if waiting is None:
        return UNKNOWN, "depth unknown"
    if waiting == 0:
        return OK, "empty"
    if consumers == 0:
        return STOP, f"{waiting} waiting and no consumer"
    if consumed is False:
        return STALL, f"{waiting} waiting and nothing was taken during the window"
    if poison:
        return WARN, f"{poison} entries delivered repeatedly and never acknowledged (poison candidates)"
    if depth_trend == "growing":
        if rate_in is not None and rate_out is not None:
            return WARN, f"growing: {rate_in:g}/s in, {rate_out:g}/s out"
        return WARN, "growing over the window"
    if samples < 2:
        return UNKNOWN, f"{waiting} waiting; one sample only, no rates"
    if consumed is None and depth_trend == "flat":
        return UNKNOWN, f"{waiting} waiting, depth flat; cannot tell whether anything was consumed"
    return OK, "draining" if depth_trend == "shrinking" else "keeping up"
