"""Dead versus stuck stream consumers: which consumers that XINFO CONSUMERS
still lists have a client connection that can be theirs.  Pure: parsed
XINFO CONSUMERS and CLIENT LIST in, a verdict per consumer out.

Redis keeps a consumer in its group, with its pending entries, until
XGROUP DELCONSUMER, whatever happened to the process; only its idle time
grows.  The process's connection is another matter: when the process dies
(or is killed) the kernel closes its socket and Redis drops the client at
once; CLIENT LIST no longer shows it.  A consumer is alive when some client
connection can be the one that made its last read, and gone when none can:

- the connection was open then (age >= the consumer's idle time) and has
  been used since (its idle <= the consumer's idle: a stuck consumer's
  connection has done nothing since its last read, a working one more);
- it is on the stream's database;
- it is not blocked while the group has entries nobody was given (a
  connection blocked in XREADGROUP on this group would have been served);
- it is named like the consumer (CLIENT SETNAME), or its last command is one
  a stream consumer sends (XREADGROUP, XACK, XCLAIM, XAUTOCLAIM, XPENDING):
  a producer's XADD or a monitor's XINFO is not a consumer's connection.

One connection is taken by one consumer (see match), except consumers of
the same name whose idle times agree to the millisecond: one XREADGROUP over
several streams reads for all of them at once.  The test is lenient: a connection of
another stream's consumer can pass for a dead one, so "gone" is said only
when no connection could be it.  CLIENT LIST's times are whole seconds, so a
slack of a second or two is allowed either way.  What cannot be seen from
Redis: a process frozen (SIGSTOP) or a host cut off without closing its
connections looks alive until Redis' TCP keepalive (300 s by default) drops
the connection; it is reported stuck, which is what it is until then.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable

# Commands a stream consumer's connection sends (CLIENT LIST's cmd, before any "|").
CONSUMER_COMMANDS = frozenset({"xreadgroup", "xack", "xclaim", "xautoclaim", "xpending"})
SLACK_S = 2  # CLIENT LIST reports whole seconds, and the two reads are moments apart
SAME_READ_MS = 20  # consumers whose idle times differ less than this were seen by one command


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def may_be_a_consumer(client: dict, db: int) -> bool:
    """Whether a connection can be any stream consumer's at all (cheap filter
    before matching): on the database, and named or last sending a consumer's command."""
    return _int(client.get("db")) == db and (bool(client.get("name"))
                                             or str(client.get("cmd") or "").split("|")[0] in CONSUMER_COMMANDS)


def connection_can_be(consumer: dict, client: dict, db: int, slack_s: float = SLACK_S) -> bool:
    """Whether `client` (a CLIENT LIST entry, values as text) can be the
    connection of `consumer` ({"name", "idle_ms"})."""
    if _int(client.get("db")) != db:
        return False
    if "b" in str(client.get("flags") or "") and consumer.get("undelivered"):
        # Blocked in XREADGROUP ... > on this group while entries wait undelivered
        # cannot be: the read would have been served.  It waits on another stream.
        return False
    named = bool(client.get("name")) and client.get("name") == consumer.get("name")
    cmd = str(client.get("cmd") or "").split("|")[0]
    if not named and cmd not in CONSUMER_COMMANDS:
        return False
    idle_s = (consumer.get("idle_ms") or 0) / 1000.0
    age, used = _int(client.get("age")), _int(client.get("idle"))
    if age is None or used is None:
        return False
    return age >= idle_s - slack_s and used <= idle_s + slack_s


def _same_read(a: dict, b: dict) -> bool:
    """Two consumers one connection can serve: the same name, last seen by the
    same command (one XREADGROUP over several streams sets their idle times
    alike, to the millisecond; two processes rarely read that close)."""
    return a.get("name") == b.get("name") and abs((a.get("idle_ms") or 0) - (b.get("idle_ms") or 0)) <= SAME_READ_MS


def match(consumers: Iterable[dict], clients: Iterable[dict], db: int, *,
          slack_s: float = SLACK_S) -> dict[tuple, dict[str, Any]]:
    """consumers: [{"stream", "group", "name", "idle_ms", "undelivered"}]; clients: CLIENT
    LIST entries (qdiag's own connection already left out).

    Returns {(stream, group, name): {"alive": bool, "addr": the connection's
    address or None, "why": a few words}}.

    A connection named like a consumer is its own.  The others go to the
    consumers in order of their last read, most recent first, each taking the
    free connection used least long ago that can be its: a consumer that read
    recently can only have a recently used connection, so it chooses first, and
    one that read long ago is left what nobody more recent could have had.
    Candidate sets grow with a consumer's idle time, so this matches as many
    consumers as can be matched (a gone verdict only when no assignment could
    give the consumer a connection).  O((consumers + connections) log n)."""
    consumers = list(consumers)
    clients = [c for c in clients if c.get("id") is not None and may_be_a_consumer(c, db)]
    chosen: dict[int, dict] = {}  # consumer index -> connection
    by_name: dict[str, list[dict]] = {}
    for client in clients:
        if client.get("name"):
            by_name.setdefault(client["name"], []).append(client)
    named_taken = set()
    for ci, consumer in enumerate(consumers):
        for client in by_name.get(consumer.get("name") or "", []):
            if connection_can_be(consumer, client, db, slack_s):
                chosen[ci] = client
                named_taken.add(id(client))
                break
    free = sorted((c for c in clients if id(c) not in named_taken
                   and str(c.get("cmd") or "").split("|")[0] in CONSUMER_COMMANDS),
                  key=lambda c: _int(c.get("idle")) or 0)
    used = [_int(c.get("idle")) or 0 for c in free]
    order = sorted((ci for ci in range(len(consumers)) if ci not in chosen),
                   key=lambda ci: consumers[ci].get("idle_ms") or 0)
    for ci in order:
        consumer = consumers[ci]
        at = bisect.bisect_right(used, (consumer.get("idle_ms") or 0) / 1000.0 + slack_s)
        for k in range(at - 1, -1, -1):  # the most recently used last: try the closest first
            if connection_can_be(consumer, free[k], db, slack_s):
                chosen[ci] = free.pop(k)
                used.pop(k)
                break
    # One XREADGROUP over several streams reads for consumers of one name at once.
    readers: dict[str, list[tuple[int, dict]]] = {}
    for ci, client in chosen.items():
        readers.setdefault(consumers[ci].get("name") or "", []).append((ci, client))
    for ci, consumer in enumerate(consumers):
        if ci not in chosen:
            for other, client in readers.get(consumer.get("name") or "", []):
                if _same_read(consumers[other], consumer):
                    chosen[ci] = client
                    break
    out = {}
    for ci, consumer in enumerate(consumers):
        ident = (consumer.get("stream"), consumer.get("group"), consumer.get("name"))
        client = chosen.get(ci)
        if client is not None:
            how = "named like it" if client.get("name") == consumer.get("name") else f"last command {client.get('cmd')}"
            out[ident] = {"alive": True, "addr": client.get("addr"),
                          "why": f"connection {client.get('addr')} ({how}, idle {client.get('idle')} s)"}
        else:
            out[ident] = {"alive": False, "addr": None,
                          "why": "no client connection on its database can be the one that made its last read"}
    return out
