"""Whether a RabbitMQ queue's depth is a measurement of now: exact counts from a
passive queue.declare against the management API's statistics.  Pure.

What the broker gives (RabbitMQ 3.10):
- The management API's per-queue figures (`messages_ready`,
  `messages_unacknowledged`, `consumers`) are what the queue process last
  emitted; it emits once per `collect_statistics_interval` (5 s by default).
  A queue that received 500 messages a second ago can still read 0.
- A passive queue.declare is answered by the queue process itself: its ready
  count and consumer count are current.  It says nothing about messages
  delivered and not yet acknowledged.

So the depth (ready + unacknowledged) is settled when the ready count is exact
and the unacknowledged part cannot hide anything: nothing consumes (messages
held by consumers that left went back to ready), or the statistics have
caught up with the queue (they show the same ready and consumer counts as the
passive declare, so their unacknowledged count is from the same state).
Otherwise the figure is reported with `depth_settled: false`, the reason, and
the bounds that are known: at least the exact ready count; at most that plus
what the consumers' prefetch limits let them hold, when every consumer has one.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

AMQP_PORT, AMQPS_PORT = 5672, 5671


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def amqp_endpoint(listeners: Any, management_scheme: str, port_override: int = 0) -> tuple[int | None, bool, str]:
    """(port, tls, how it was chosen) of the AMQP listener qdiag reads exact
    counts from; port None (with why) when there is none it may use.

    TLS follows the management URL: credentials given for https are never sent
    over plaintext AMQP."""
    tls = management_scheme == "https"
    wanted = "amqp/ssl" if tls else "amqp"
    if port_override:
        return port_override, tls, f"[probes.rabbitmq] amqp_port = {port_override}"
    if not isinstance(listeners, list):
        port = AMQPS_PORT if tls else AMQP_PORT
        return port, tls, f"the default {wanted} port (the API did not list its listeners)"
    ports = sorted({item.get("port") for item in listeners
                    if isinstance(item, Mapping) and item.get("protocol") == wanted and _count(item.get("port"))})
    if ports:
        return ports[0], tls, f"the broker's {wanted} listener"
    if tls and any(isinstance(i, Mapping) and i.get("protocol") == "amqp" for i in listeners):
        return None, tls, ("the broker has only a plaintext AMQP listener, and credentials given for https are not "
                           "sent over plaintext (set [probes.rabbitmq] amqp_port to a TLS port)")
    return None, tls, f"the broker lists no {wanted} listener"


def prefetch_bound(consumer_details: Any, consumers: int | None) -> tuple[int | None, str]:
    """(the most messages the consumers can hold unacknowledged, or None; why).

    The sum of their prefetch counts, when the listing covers every consumer
    and each has one (prefetch 0 means unlimited)."""
    if not isinstance(consumer_details, list) or consumers is None:
        return None, "the consumers' prefetch limits were not read"
    counts = [_count(c.get("prefetch_count")) for c in consumer_details if isinstance(c, Mapping)]
    if len(counts) != consumers:
        return None, (f"the statistics list {len(counts)} of the {consumers} consumer(s), so their prefetch "
                      f"limits are not all known")
    if any(c is None or c == 0 for c in counts):
        return None, "a consumer without a prefetch limit can hold any number"
    return sum(counts), f"the consumers' prefetch limits bound the unacknowledged messages at {sum(counts)}"


def settle(row: Mapping[str, Any], exact: Mapping[str, Any] | None, why_not: str | None,
           stats_interval_s: float) -> dict[str, Any]:
    """The queue's figures with their provenance.

    row: the management API's latest detail row (with `consumer_details` when
    it was fetched); exact: {"ready", "consumers"} from a passive declare made
    right after that row, or None with `why_not`."""
    api_ready = _count(row.get("messages_ready"))
    api_unacked = _count(row.get("messages_unacknowledged"))
    api_consumers = _count(row.get("consumers"))
    api_depth = _count(row.get("messages"))
    if api_depth is None and api_ready is not None and api_unacked is not None:
        api_depth = api_ready + api_unacked
    statistics = {"messages": api_depth, "messages_ready": api_ready, "messages_unacknowledged": api_unacked,
                  "consumers": api_consumers}
    lag = f"up to {stats_interval_s:g}s old"
    if exact is None or _count(exact.get("ready")) is None or _count(exact.get("consumers")) is None:
        why = f"management statistics ({lag}) and no exact count: {why_not or 'not read'}"
        return {
            "depth": api_depth, "messages_ready": api_ready, "messages_unacknowledged": api_unacked,
            "consumers": api_consumers, "counts_source": "management statistics", "statistics": statistics,
            "depth_settled": False, "depth_bounds": [None, None], "depth_settled_why": why,
            # The consumer count and the fill (ready messages against the limit) are as old.
            "counts_settled": False, "counts_settled_why": why,
        }
    ready, consumers = exact["ready"], exact["consumers"]
    caught_up = api_ready == ready and api_consumers == consumers
    if consumers == 0:
        # Messages held by consumers that left went back to ready; the only
        # unacknowledged messages left are basic.get's without ack, which the
        # statistics show once they catch up.  The statistics' consumer count
        # drops when the channel closes, their message counts only at the next
        # emission: their unacknowledged count is of now only when their ready
        # count is too.
        unacked = (api_unacked or 0) if api_consumers == 0 and api_ready == ready else 0
        settled, high = True, ready + unacked
        why = None
    else:
        unacked = api_unacked or 0
        bound, bound_why = prefetch_bound(row.get("consumer_details"), consumers)
        high = ready + max(unacked, bound) if bound is not None else None
        settled = caught_up
        why = None if settled else (
            f"ready count exact ({ready}, passive declare); the {unacked} unacknowledged come from statistics "
            f"{lag} that show {api_ready} ready and {api_consumers} consumer(s); {bound_why}")
    depth = ready + unacked
    return {
        "depth": depth, "messages_ready": ready, "messages_unacknowledged": unacked, "consumers": consumers,
        "counts_source": "passive queue.declare (ready, consumers) + management statistics (unacknowledged)",
        "statistics": statistics, "depth_settled": settled,
        "depth_bounds": [depth, depth] if settled and consumers == 0 else [ready, high],
        "depth_settled_why": why, "counts_settled": True, "counts_settled_why": None,
    }


def exact_reason(code: int | None, text: str | None) -> str:
    """Why a passive declare gave no count, from the broker's refusal."""
    if code == 404:
        return "the queue no longer exists (deleted during the window)"
    if code == 405:
        return "an exclusive queue of another connection: AMQP cannot read it"
    if code == 403:
        return f"the user may not read it over AMQP ({text})"
    return f"the broker refused the passive declare ({code} {text})"


def vhosts_in_order(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Queue names per vhost, in selection order."""
    out: dict[str, list[str]] = {}
    for vhost, name in keys:
        out.setdefault(vhost, []).append(name)
    return out
