"""How the RabbitMQ probe lists every queue once (to choose the ones it looks
at closely), by the number of queues.  Pure: the choice, and the parsing of
the rabbitmq_prometheus plugin's text output.

Measured on RabbitMQ 3.10.8 (tests/bench/bench_rabbitmq.py, same runs,
against `rabbitmqctl list_queues name messages_ready messages_unacknowledged
consumers`): the management API builds every row with its statistics before
it filters columns, and grows worse than linearly; at 20,000 queues the
statistics listing is several times slower than rabbitmqctl.  Two cheaper
sources of every queue's depth:
- "prometheus": the plugin's `/metrics/detailed?family=queue_coarse_metrics&
  family=queue_consumer_count` (ready, unacknowledged, total, consumers per
  queue), used only when the broker lists the plugin's listener (qdiag never
  enables a plugin).  No queue state, type or arguments.
- "totals": the management API with `disable_stats=true&enable_queue_totals=
  true` and explicit columns: depths, state, type and arguments, no consumers
  and no policy.
Either way the queues chosen are then read in full, one by one, as always;
what the cheaper listing cannot show (growth rates for choosing the fastest
growing, policy limits for choosing the nearly full, consumers for the summary)
is said in a note, not guessed.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

SOURCES = ("auto", "management", "totals", "prometheus")
TOTALS_COLUMNS = "vhost,name,type,state,messages,messages_ready,messages_unacknowledged,arguments"
PROMETHEUS_PATH = "/metrics/detailed"
PROMETHEUS_FAMILIES = ("queue_coarse_metrics", "queue_consumer_count")
PROMETHEUS_METRICS = {
    "rabbitmq_detailed_queue_messages_ready": "messages_ready",
    "rabbitmq_detailed_queue_messages_unacked": "messages_unacknowledged",
    "rabbitmq_detailed_queue_messages": "messages",
    "rabbitmq_detailed_queue_consumers": "consumers",
}
# What each cheaper listing leaves out, for the note.
LEAVES_OUT = {
    "totals": "consumers, policies and growth rates are not in this listing: the fastest-growing and the nearly "
              "full by policy are looked for among the deepest only, and the summary has no consumer figures",
    "prometheus": "queue state, arguments, policies and growth rates are not in this listing: the fastest-growing, "
                  "the nearly full and the down are looked for among the deepest only",
}


def prometheus_listener(listeners: Any) -> tuple[str, int] | None:
    """(scheme, port) of the rabbitmq_prometheus plugin's listener, when the
    broker lists one in /api/overview."""
    if not isinstance(listeners, list):
        return None
    for item in listeners:
        if not isinstance(item, Mapping) or not isinstance(item.get("port"), int):
            continue
        if item.get("protocol") == "http/prometheus":
            return "http", item["port"]
        if item.get("protocol") == "https/prometheus":
            return "https", item["port"]
    return None


def choose(option: str, queue_count: Any, large_from: int, prometheus: tuple[str, int] | None) -> tuple[str, str]:
    """(source, why) for the listing of every queue."""
    if option != "auto":
        return option, f"[probes.rabbitmq] listing = {option}"
    if not isinstance(queue_count, int) or queue_count < large_from:
        return "management", (f"{queue_count} queue(s), fewer than {large_from} ([probes.rabbitmq] large_from_queues)"
                              if isinstance(queue_count, int) else "the broker did not say how many queues it has")
    if prometheus is not None:
        return "prometheus", f"{queue_count} queues, and the broker lists the rabbitmq_prometheus listener"
    return "totals", f"{queue_count} queues, and no rabbitmq_prometheus listener"


def _split_labels(labels: str) -> tuple[str, str] | None:
    # RabbitMQ 3.10 writes label values without escaping quotes or
    # backslashes, so the labels are taken apart by their fixed layout
    # (vhost, then queue), not by a quote-aware scan.
    head, sep = 'vhost="', '",queue="'
    if not labels.startswith(head) or not labels.endswith('"'):
        return None
    at = labels.find(sep)
    if at < 0:
        return None
    return labels[len(head):at], labels[at + len(sep):-1]


def parse_prometheus(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Rows {vhost, name, messages, messages_ready, messages_unacknowledged,
    consumers} from the detailed endpoint's text, in first-seen order."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        if not line.startswith("rabbitmq_detailed_queue_"):
            continue
        brace = line.find("{")
        end = line.rfind("} ")
        if brace < 0 or end < brace:
            continue
        field = PROMETHEUS_METRICS.get(line[:brace])
        if field is None:
            continue
        key = _split_labels(line[brace + 1:end])
        if key is None:
            continue
        try:
            value = float(line[end + 2:].split()[0])
        except (ValueError, IndexError):
            continue
        row = rows.setdefault(key, {"vhost": key[0], "name": key[1]})
        row[field] = int(value) if value.is_integer() else None
    return list(rows.values())
