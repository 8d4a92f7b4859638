"""The connections behind a RabbitMQ queue's consumers, and which connections
the probe reads at all (paginated, so 50,000 connections are never one reply).
Pure: management-API rows in, figures out.

What RabbitMQ 3.10 does with a consumer whose process or host is gone, measured
on the rig (tests/brokers/test_rabbitmq_consumers.py):
- process killed (SIGKILL, crash, OOM kill): its kernel closes the TCP
  connection; the broker drops the connection, its channels and consumers at
  once (within 0.1 s in /api/consumers and a passive declare) and requeues the
  unacknowledged messages.  Only the queue's statistics (consumer count,
  unacknowledged) keep the dead consumer for up to one statistics interval
  (7 s measured), which the exact counts (passive declare) see through.
- host or network gone without a TCP close (power loss, partition, a NAT or
  load balancer dropping the flow): nothing reaches the broker.  With
  heartbeats on it closes the connection after about two heartbeat timeouts
  (a 4 s heartbeat: 9 s) and requeues.  With heartbeats off (timeout 0) the
  consumer stays listed, holding its unacknowledged messages, for as long as
  the broker has nothing to send it: a held prefetch means forever.  From the
  broker's side it is then indistinguishable from a live consumer that is stuck.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# Connection states sort blocked < blocking < closing < flow < opening <
# running < starting < tuning: sorted by state, the throttled ones come first.
THROTTLED_LAST = "flow"
STUCK_FINDINGS = ("consumers-idle", "prefetch-hoarding")


def throttled_pages_done(items: list[Mapping[str, Any]]) -> bool:
    """Reading connections sorted by state: whether the page's last row is
    past every throttled state, so later pages hold none."""
    if not items:
        return True
    return str(items[-1].get("state") or "") > THROTTLED_LAST


def stuck_connection_names(records: Iterable[Mapping[str, Any]], cap: int) -> list[str]:
    """Consumer connections of the queues whose consumers hold messages and
    move none: the ones worth a look one by one (at most `cap`)."""
    names: list[str] = []
    for rec in records:
        if not set(rec.get("findings") or []) & set(STUCK_FINDINGS):
            continue
        for name in rec.get("consumer_connections") or []:
            if name not in names:
                names.append(name)
    return names[:cap]


def _peer(row: Mapping[str, Any]) -> str | None:
    host, port = row.get("peer_host"), row.get("peer_port")
    if host is None:
        return None
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def heartbeat_findings(record: dict, connections: Mapping[str, Mapping[str, Any]]) -> None:
    """For a queue whose consumers hold messages and move none: the heartbeat
    of each consumer connection, and on connections with heartbeats off the
    finding `heartbeat-off` with how to recover if the consumer is gone (the
    broker cannot tell, and never will)."""
    if not set(record.get("findings") or []) & set(STUCK_FINDINGS):
        return
    seen = []
    for name in record.get("consumer_connections") or []:
        row = connections.get(name)
        if row is None:
            continue
        heartbeat = row.get("timeout")
        seen.append({"connection": name, "peer": _peer(row), "heartbeat_s": heartbeat,
                     "user": row.get("user"), "state": row.get("state")})
    if not seen:
        return
    record["consumer_heartbeats"] = seen
    silent = [c for c in seen if c["heartbeat_s"] == 0]
    if not silent:
        return
    record["findings"].append("heartbeat-off")
    held = record.get("messages_unacknowledged")
    record["consumers_unverifiable"] = {
        "connections": [c["connection"] for c in silent],
        "why": (f"{len(silent)} consumer connection(s) have heartbeats off: if the consumer's process or host is "
                f"gone without closing TCP, the broker never notices, and its {held if held is not None else 'held'} "
                f"unacknowledged message(s) stay held; from the broker's side that looks like a stuck consumer"),
        "recover": [f"if nothing runs the consumer at {c['peer']} any more: rabbitmqctl close_connection "
                    f"\"{c['connection']}\" \"consumer gone\" (its unacknowledged messages go back to the queue)"
                    for c in silent] + ["turn heartbeats on in the consumer's client (e.g. 30 s) so the broker "
                                        "drops dead consumers by itself"],
    }
