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

One connection is taken by one consumer (the closest in time first), except
consumers of the same name whose idle times agree to the millisecond: one
XREADGROUP over several streams reads for all of them at once.  The test is lenient: a connection of
another stream's consumer can pass for a dead one, so "gone" is said only
when no connection could be it.  CLIENT LIST's times are whole seconds, so a
slack of a second or two is allowed either way.  What cannot be seen from
Redis: a process frozen (SIGSTOP) or a host cut off without closing its
connections looks alive until Redis' TCP keepalive (300 s by default) drops
the connection; it is reported stuck, which is what it is until then.
"""

from __future__ import annotations

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
    address or None, "why": a few words}}."""
    consumers = list(consumers)
    clients = [c for c in clients if c.get("id") is not None]
    pairs = []
    for ci, consumer in enumerate(consumers):
        idle_s = (consumer.get("idle_ms") or 0) / 1000.0
        for ki, client in enumerate(clients):
            if not connection_can_be(consumer, client, db, slack_s):
                continue
            named = client.get("name") == consumer.get("name")
            reader = str(client.get("cmd") or "").split("|")[0] in ("xreadgroup", "xclaim", "xautoclaim")
            # Closest first: a name says most; then the connection whose last
            # use is nearest the consumer's last read; a read before an ack.
            pairs.append(((0 if named else 1, abs((_int(client.get("idle")) or 0) - idle_s), 0 if reader else 1),
                          ci, ki))
    pairs.sort()
    taken_by: dict[int, dict] = {}  # connection -> the first consumer it serves
    verdict: dict[int, int] = {}  # consumer -> connection
    for _, ci, ki in pairs:
        consumer = consumers[ci]
        first = taken_by.get(ki)
        if ci in verdict or (first is not None and not _same_read(first, consumer)):
            continue
        verdict[ci] = ki
        taken_by.setdefault(ki, consumer)
    out = {}
    for ci, consumer in enumerate(consumers):
        ident = (consumer.get("stream"), consumer.get("group"), consumer.get("name"))
        if ci in verdict:
            client = clients[verdict[ci]]
            how = "named like it" if client.get("name") == consumer.get("name") else f"last command {client.get('cmd')}"
            out[ident] = {"alive": True, "addr": client.get("addr"),
                          "why": f"connection {client.get('addr')} ({how}, idle {client.get('idle')} s)"}
        else:
            out[ident] = {"alive": False, "addr": None,
                          "why": "no client connection on its database can be the one that made its last read"}
    return out
