"""Pure logic of the RabbitMQ probe: management-API rows in, figures out.

Nothing here talks to a broker; every function takes the JSON the management
API returned (or numbers derived from it) and is tested on recorded responses
from RabbitMQ 3.10 under tests/fixtures/rabbitmq/.

Facts this module relies on, checked on RabbitMQ 3.10.8:
- A length limit can come from the queue's `x-max-length` argument and from
  the effective policy's `max-length` (operator policies are already merged
  into `effective_policy_definition`); the lower one is enforced.  The same
  holds for the byte limits.  Only ready messages count against the limit.
- For `overflow` and the dead-letter settings the queue argument wins over the
  policy (a queue declared with x-overflow=reject-publish under a policy with
  overflow=drop-head rejects publishes).
- Management statistics (depths and the cumulative `message_stats` counters)
  are refreshed every `collect_statistics_interval` (5 s by default), so two
  samples closer together than that may show no change at all.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Mapping

# Cumulative per-queue counters sampled for qdiag's own rates.  Messages leave a
# queue for good on `ack` (deliveries with manual ack) or at delivery time for
# no-ack consumers (`deliver_no_ack`, `get_no_ack`).
COUNTERS = ("publish", "deliver_get", "ack", "redeliver", "deliver_no_ack", "get_no_ack")

DEFAULT_OVERFLOW = "drop-head"
OVERFLOW_MEANING = {
    "drop-head": "when full, the oldest ready messages are discarded to make room "
                 "(dead-lettered if a dead-letter exchange is set); publishers are not told",
    "reject-publish": "when full, new messages are refused: publishers using confirms get a nack, "
                      "publishers without confirms lose them silently",
    "reject-publish-dlx": "when full, new messages are refused (nack with confirms) and dead-lettered",
}

# Queue states that mean the queue cannot serve (classic: down/crashed/stopped;
# quorum: minority = no leader can be elected).
BAD_STATES = ("down", "minority", "crashed", "stopped", "terminated")

STATUS_ORDER = ("down", "full", "no-consumers", "stuck", "growing", "ok")

# Sample times carry request latency: a span within 10% of the statistics
# interval still covers one refresh of every emitter.
SPAN_TOLERANCE = 0.9


def covers_interval(span_s: float | None, stats_interval_s: float) -> bool:
    """Whether readings `span_s` apart can show a statistics refresh."""
    return span_s is not None and span_s >= stats_interval_s * SPAN_TOLERANCE


# ---------------------------------------------------------------- names


def display_name(vhost: str, name: str) -> str:
    """The queue's name in reports: the bare name in the default vhost '/',
    'vhost/name' elsewhere (the record also keeps `vhost` and `queue` apart,
    since queue names may themselves contain '/')."""
    return name if vhost in ("/", None) else f"{vhost}/{name}"


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def matches(pattern: str, vhost: str, name: str) -> bool:
    """--queue PATTERN against one queue: exact name, or 'vhost/name'; shell-style
    globs (*, ?, [...]) are matched the same two ways."""
    candidates = (name, f"{vhost}/{name}")
    if is_glob(pattern):
        return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)
    return pattern in candidates


def key_of(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row.get("vhost") or "/", row.get("name") or "")


# ---------------------------------------------------------------- numbers from rows


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def counters(row: Mapping[str, Any]) -> dict[str, int]:
    """The cumulative counters of one queue row.  A queue that never saw a
    message has no `message_stats` at all: every counter is then 0."""
    stats = row.get("message_stats")
    if not isinstance(stats, Mapping):
        stats = {}
    return {name: (_int(stats.get(name)) or 0) for name in COUNTERS}


def broker_rates(row: Mapping[str, Any], requested: bool = True) -> dict[str, float] | None:
    """The broker's own per-second rates (`message_stats.<x>_details.rate`).

    None when the row was fetched without the rate columns (`requested` False).
    The broker only lists counters that ever moved, so a counter missing from
    `message_stats` (or no `message_stats` at all) has rate 0."""
    if not requested:
        return None
    stats = row.get("message_stats")
    if not isinstance(stats, Mapping):
        stats = {}
    out: dict[str, float] = {}
    for name in COUNTERS:
        details = stats.get(f"{name}_details")
        rate = _num(details.get("rate")) if isinstance(details, Mapping) else None
        out[name] = 0.0 if rate is None else rate
    return out


def broker_depth_rate(row: Mapping[str, Any]) -> float | None:
    """The broker's rate of change of the queue depth (`messages_details.rate`)."""
    details = row.get("messages_details")
    return _num(details.get("rate")) if isinstance(details, Mapping) else None


# ---------------------------------------------------------------- limits and fill


def _lowest(arg_value: Any, policy_value: Any) -> tuple[int | None, str | None]:
    a, p = _int(arg_value), _int(policy_value)
    a = a if a is not None and a >= 0 else None
    p = p if p is not None and p >= 0 else None
    if a is None and p is None:
        return None, None
    if p is None:
        return a, "argument"
    if a is None:
        return p, "policy"
    if a == p:
        return a, "argument and policy"
    return (a, "argument") if a < p else (p, "policy")


def _arg_then_policy(args: Mapping, policy: Mapping, arg_key: str, policy_key: str) -> tuple[Any, str | None]:
    if arg_key in args:
        return args[arg_key], "argument"
    if policy_key in policy:
        return policy[policy_key], "policy"
    return None, None


def limits(row: Mapping[str, Any]) -> dict[str, Any]:
    """Length limits, overflow mode and dead-lettering as the broker enforces them."""
    args = row.get("arguments") if isinstance(row.get("arguments"), Mapping) else {}
    policy = row.get("effective_policy_definition")
    policy = policy if isinstance(policy, Mapping) else {}
    max_length, length_source = _lowest(args.get("x-max-length"), policy.get("max-length"))
    max_bytes, bytes_source = _lowest(args.get("x-max-length-bytes"), policy.get("max-length-bytes"))
    overflow, overflow_source = _arg_then_policy(args, policy, "x-overflow", "overflow")
    if not isinstance(overflow, str) or not overflow:
        overflow, overflow_source = DEFAULT_OVERFLOW, "default"
    dlx, dlx_source = _arg_then_policy(args, policy, "x-dead-letter-exchange", "dead-letter-exchange")
    dlrk, _ = _arg_then_policy(args, policy, "x-dead-letter-routing-key", "dead-letter-routing-key")
    out = {
        "max_length": max_length,
        "max_length_source": length_source,
        "max_length_bytes": max_bytes,
        "max_length_bytes_source": bytes_source,
        "overflow": overflow,
        "overflow_source": overflow_source,
        "overflow_meaning": OVERFLOW_MEANING.get(overflow, f"overflow mode '{overflow}' is not one qdiag knows"),
        "dead_letter_exchange": dlx if isinstance(dlx, str) else None,
        "dead_letter_exchange_source": dlx_source if isinstance(dlx, str) else None,
        "dead_letter_routing_key": dlrk if isinstance(dlrk, str) else None,
    }
    if row.get("type") == "stream":
        # A stream's max-length-bytes is retention (old segments are deleted),
        # not a limit that makes the queue full.
        out["note"] = "stream: length settings are retention, not a fill limit"
    return out


def _ratio(used: int | None, limit: int | None) -> float | None:
    if used is None or limit is None:
        return None
    if limit == 0:
        return 1.0  # max-length 0: the queue can never hold a message
    return round(used / limit, 4)


def fill(row: Mapping[str, Any], lim: Mapping[str, Any]) -> dict[str, float | None]:
    """Ready messages (and ready bytes) against the enforced limits; the fill
    ratio is the higher of the two.  None when there is no limit."""
    if row.get("type") == "stream":
        return {"fill_ratio": None, "fill_ratio_messages": None, "fill_ratio_bytes": None}
    by_count = _ratio(_int(row.get("messages_ready")), lim.get("max_length"))
    by_bytes = _ratio(_int(row.get("message_bytes_ready")), lim.get("max_length_bytes"))
    present = [r for r in (by_count, by_bytes) if r is not None]
    return {"fill_ratio": max(present) if present else None,
            "fill_ratio_messages": by_count, "fill_ratio_bytes": by_bytes}


# ---------------------------------------------------------------- rates over the window


def measured_rates(samples: list[tuple[float, Mapping[str, int] | None]], stats_interval_s: float,
                   stats_enabled: bool = True) -> dict[str, Any]:
    """qdiag's own rates from cumulative counters sampled at (seconds, counters).

    Returns {"rates": {counter: per second} or None, "window_s", "reason"}.
    Rates are None, with the reason, when they cannot be trusted: fewer than two
    samples, a window shorter than the broker's statistics interval (the
    counters move in steps of that interval), counters that did not change at
    all (an idle queue, or statistics not refreshed yet: the broker's own rate
    then says which), or counters that went backwards (queue recreated).
    """
    points = [(t, c) for t, c in samples if c is not None]
    if not stats_enabled:
        return {"rates": None, "window_s": None,
                "reason": "the broker does not collect message rates (rates_mode none or statistics disabled)"}
    if len(points) < 2:
        return {"rates": None, "window_s": None, "reason": "fewer than 2 samples of this queue in the window"}
    (t0, first), (t1, last) = points[0], points[-1]
    span = t1 - t0
    if not covers_interval(span, stats_interval_s):
        return {"rates": None, "window_s": round(span, 3),
                "reason": f"samples span {span:.1f}s, less than the broker's statistics interval "
                          f"({stats_interval_s:g}s): its counters may not have moved; use a longer --window"}
    if any(last.get(k, 0) < first.get(k, 0) for k in COUNTERS):
        return {"rates": None, "window_s": round(span, 3),
                "reason": "counters went backwards during the window (queue recreated or statistics reset)"}
    if all(last.get(k, 0) == first.get(k, 0) for k in COUNTERS):
        return {"rates": None, "window_s": round(span, 3),
                "reason": "counters did not change during the window (an idle queue, or the broker's "
                          "statistics did not refresh)"}
    rates = {k: round((last.get(k, 0) - first.get(k, 0)) / span, 3) for k in COUNTERS}
    return {"rates": rates, "window_s": round(span, 3), "reason": None}


def depth_delta(samples: list[tuple[float, int | None]]) -> tuple[int | None, float | None]:
    """(change in depth, seconds between first and last sample) over the window."""
    points = [(t, d) for t, d in samples if d is not None]
    if len(points) < 2:
        return None, None
    return points[-1][1] - points[0][1], round(points[-1][0] - points[0][0], 3)


def trend(change: int | None, window_s: float | None, stats_interval_s: float) -> str | None:
    """'growing', 'shrinking' or 'flat' from the depth change over the window;
    None when the window is too short for the statistics to have refreshed."""
    if change is None or not covers_interval(window_s, stats_interval_s):
        return None
    return "growing" if change > 0 else "shrinking" if change < 0 else "flat"


def _out_rate(rates: Mapping[str, float | None] | None) -> float | None:
    """Messages leaving the queue for good: acks plus no-ack deliveries."""
    if not rates or rates.get("ack") is None:
        return None
    return rates["ack"] + (rates.get("deliver_no_ack") or 0.0) + (rates.get("get_no_ack") or 0.0)


# ---------------------------------------------------------------- derived figures


def derive(*, ready: int | None, unacked: int | None, messages: int | None, consumers: int | None,
           state: str | None, lim: Mapping[str, Any], fill_info: Mapping[str, Any],
           message_bytes_ready: int | None, measured: Mapping[str, Any], broker: Mapping[str, float | None] | None,
           depth_change: int | None, depth_window_s: float | None, stats_interval_s: float,
           redeliver_ratio_high: float = 0.5) -> dict[str, Any]:
    """Net growth, time until full / to drain, findings and one status word.

    Which rates: qdiag's measured ones when they exist, else the broker's
    (`rate_source` says which).  Net growth: publish − out from the measured
    rates, else the depth change over the window (only when the window covers
    at least one statistics refresh), else publish − out from the broker's
    rates.
    """
    measured_rates_ = measured.get("rates")
    if measured_rates_:
        rates, rate_source = measured_rates_, "qdiag"
    elif broker:
        rates, rate_source = broker, "broker"
    else:
        rates, rate_source = None, None
    rate_in = rates.get("publish") if rates else None
    rate_out = _out_rate(rates)

    growth, growth_source = None, None
    if measured_rates_ and measured_rates_.get("publish") is not None and _out_rate(measured_rates_) is not None:
        growth, growth_source = measured_rates_["publish"] - _out_rate(measured_rates_), "qdiag rates (publish - ack - no-ack deliveries)"
    elif depth_change is not None and covers_interval(depth_window_s, stats_interval_s):
        growth, growth_source = depth_change / depth_window_s, "depth change over the window"
    elif broker and broker.get("publish") is not None and _out_rate(broker) is not None:
        growth, growth_source = broker["publish"] - _out_rate(broker), "broker rates (publish - ack - no-ack deliveries)"
    if growth is not None:
        growth = round(growth, 3)

    fill_ratio = fill_info.get("fill_ratio")
    time_to_full = None
    if fill_ratio is not None and fill_ratio >= 1.0:
        time_to_full = 0.0
    elif growth is not None and growth > 0:
        candidates = []
        if lim.get("max_length") is not None and ready is not None:
            candidates.append(max(0.0, (lim["max_length"] - ready) / growth))
        if lim.get("max_length_bytes") is not None and message_bytes_ready is not None and ready:
            per_message = message_bytes_ready / ready
            if per_message > 0:
                candidates.append(max(0.0, (lim["max_length_bytes"] - message_bytes_ready) / (growth * per_message)))
        if candidates:
            time_to_full = round(min(candidates), 1)

    time_to_drain = None
    if messages == 0:
        time_to_drain = 0.0
    elif growth is not None and growth < 0 and messages is not None:
        time_to_drain = round(messages / -growth, 1)

    redeliver_ratio = None
    if rates and rates.get("deliver_get") and rates.get("redeliver") is not None:
        redeliver_ratio = round(rates["redeliver"] / rates["deliver_get"], 3)

    findings: list[str] = []
    if state in BAD_STATES:
        findings.append("queue-down")
    if fill_ratio is not None and fill_ratio >= 1.0:
        findings.append("full")
    if consumers == 0 and ready:
        findings.append("no-consumers")
    if consumers and ready and rates and rates.get("deliver_get") == 0:
        findings.append("consumers-idle")  # consumers attached, messages waiting, nothing delivered
    if consumers and unacked and rates and rates.get("ack") == 0 and not (rates.get("deliver_no_ack") or 0):
        findings.append("prefetch-hoarding")  # deliveries outstanding, none acknowledged
    if redeliver_ratio is not None and redeliver_ratio >= redeliver_ratio_high:
        findings.append("redeliveries-high")  # poison messages going round

    status = status_of(findings, growth, depth_change)

    return {
        "rate_in": rate_in, "rate_out": None if rate_out is None else round(rate_out, 3), "rate_source": rate_source,
        "net_growth_per_s": growth, "net_growth_source": growth_source,
        "time_to_full_s": time_to_full, "time_to_drain_s": time_to_drain,
        "redeliver_ratio": redeliver_ratio, "findings": findings, "status": status,
    }


def status_of(findings: list[str], growth: float | None, depth_change: int | None) -> str:
    """One status word; the worst finding wins."""
    if "queue-down" in findings:
        return "down"
    if "full" in findings:
        return "full"
    if "no-consumers" in findings:
        return "no-consumers"
    if "consumers-idle" in findings or "prefetch-hoarding" in findings:
        return "stuck"
    if growth is not None and growth > 0 and (depth_change is None or depth_change > 0):
        # Two signals must agree: the rates say more comes in than leaves, and
        # the depth did rise (a balanced flow jitters by a prefetch's worth).
        return "growing"
    return "ok"


STUCK_FINDINGS = ("consumers-idle", "prefetch-hoarding")


def connection_ages(connections: Iterable[Mapping[str, Any]], now_ms: float) -> dict[str, float]:
    """Connection name -> seconds since it connected (`connected_at` is epoch ms)."""
    ages = {}
    for conn in connections:
        at = conn.get("connected_at")
        if isinstance(conn.get("name"), str) and isinstance(at, (int, float)) and not isinstance(at, bool):
            ages[conn["name"]] = max(0.0, (now_ms - at) / 1000.0)
    return ages


def stats_behind(counters: Mapping[str, int] | None, unacked: int | None) -> str | None:
    """Why the broker's statistics for a queue do not yet cover what happened,
    or None.  Every unacknowledged message was delivered, so fewer deliveries
    counted than messages out means the counters (and rates) lag behind."""
    if not counters or not unacked:
        return None
    delivered = counters.get("deliver_get", 0)
    if delivered < unacked:
        return (f"the broker's statistics count {delivered} deliveries while {unacked} messages are out "
                "unacknowledged: they lag behind the queue")
    return None


def discount_young_consumers(record: dict, ages: Mapping[str, float], stats_interval_s: float) -> None:
    """The broker's rates are the change between its last two stats refreshes:
    for a consumer that connected less than a refresh ago (plus a second of
    slack) they still read 0 acks and 0 deliveries while it works normally.  A "stuck" finding that rests only on
    those broker rates is withdrawn for such queues, and said so."""
    if record.get("rate_source") != "broker" or not any(f in record["findings"] for f in STUCK_FINDINGS):
        return
    young = [ages[name] for name in record.get("consumer_connections") or [] if name in ages
             and ages[name] < stats_interval_s + 1.0]
    if young:
        why = (f"a consumer connected {min(young):.0f}s ago, within one statistics interval: "
               "the broker's ack and deliver rates do not cover it yet")
    elif record.get("stats_behind"):
        why = record["stats_behind"]
    else:
        return
    record["findings"] = [f for f in record["findings"] if f not in STUCK_FINDINGS]
    record["status"] = status_of(record["findings"], record.get("net_growth_per_s"), record.get("depth_change"))
    record["rates_settling"] = why


# ---------------------------------------------------------------- which queues get details


def select(rows: Iterable[Mapping[str, Any]], patterns: Iterable[str], top_n: int) -> dict[tuple[str, str], list[str]]:
    """The queues worth a closer look, each with why: named by --queue, the N
    deepest, the N growing fastest (broker's depth rate), the N fullest (fill
    >= 0.9) and up to N in a bad state.  Insertion order = priority."""
    rows = list(rows)
    patterns = list(patterns)
    chosen: dict[tuple[str, str], list[str]] = {}

    def add(row, why):
        chosen.setdefault(key_of(row), []).append(why)

    for row in rows:
        vhost, name = key_of(row)
        if any(matches(p, vhost, name) for p in patterns):
            add(row, "named")
    deepest = sorted((r for r in rows if (_int(r.get("messages")) or 0) > 0),
                     key=lambda r: -(_int(r.get("messages")) or 0))[:top_n]
    for row in deepest:
        add(row, "deepest")
    growing = sorted((r for r in rows if (broker_depth_rate(r) or 0) > 0), key=lambda r: -broker_depth_rate(r))[:top_n]
    for row in growing:
        add(row, "growing")
    fullest = []
    for row in rows:
        ratio = fill(row, limits(row))["fill_ratio"]
        if ratio is not None and ratio >= 0.9:
            fullest.append((ratio, row))
    for _, row in sorted(fullest, key=lambda p: -p[0])[:top_n]:
        add(row, "nearly full")
    for row in [r for r in rows if r.get("state") in BAD_STATES][:top_n]:
        add(row, f"state {row.get('state')}")
    return chosen


def missing_patterns(rows: Iterable[Mapping[str, Any]], patterns: Iterable[str]) -> list[str]:
    rows = list(rows)
    return [p for p in patterns if not any(matches(p, *key_of(r)) for r in rows)]


# ---------------------------------------------------------------- dead-letter routing


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on '.', '*' is one word, '#' zero or more."""
    pw, kw = pattern.split("."), key.split(".")

    def walk(i: int, j: int) -> bool:
        if i == len(pw):
            return j == len(kw)
        if pw[i] == "#":
            return any(walk(i + 1, k) for k in range(j, len(kw) + 1))
        if j == len(kw):
            return False
        return (pw[i] == "*" or pw[i] == kw[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


def dead_letter_queues(*, exchange: str, routing_key: str | None, exchange_type: str | None,
                       bindings: list[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Queues a dead-letter exchange delivers to, from its bindings.

    exchange_type None means the exchange does not exist.  Returns
    {"queues": [names], "how": text}.  Without a dead-letter routing key the
    messages keep their original routing keys, which qdiag cannot know: then
    every queue bound to the exchange is a candidate.
    """
    if exchange == "":
        if routing_key:
            return {"queues": [routing_key], "how": "default exchange: the queue named by the dead-letter routing key"}
        return {"queues": [], "how": "default exchange without a dead-letter routing key: "
                                     "each message goes back by its original routing key"}
    if exchange_type is None:
        return {"queues": [], "how": f"dead-letter exchange '{exchange}' does not exist: dead-lettered messages are dropped"}
    queues, other = [], []
    for b in bindings or []:
        dest, kind, bkey = b.get("destination"), b.get("destination_type"), b.get("routing_key") or ""
        if exchange_type == "direct" and routing_key is not None and bkey != routing_key:
            continue
        if exchange_type == "topic" and routing_key is not None and not topic_matches(bkey, routing_key):
            continue
        if kind == "queue":
            if dest not in queues:
                queues.append(dest)
        elif kind == "exchange":
            other.append(dest)
    if not queues and not other:
        how = f"{exchange_type} exchange '{exchange}' has no matching queue binding: dead-lettered messages are dropped"
    elif routing_key is None and exchange_type in ("direct", "topic"):
        how = f"{exchange_type} exchange '{exchange}': candidates by binding (routing keys of the messages decide)"
    else:
        how = f"{exchange_type} exchange '{exchange}'"
    if other:
        how += "; also routes to exchange(s) " + ", ".join(sorted(set(other))) + " (not followed)"
    return {"queues": queues, "how": how}


# ---------------------------------------------------------------- node and connections


def node_health(nodes: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[str]]:
    """Per node: alarms and resource use vs limits; plus one line per problem."""
    out, problems = [], []

    def ratio(used, total):
        used, total = _num(used), _num(total)
        return round(used / total, 4) if used is not None and total else None

    for n in nodes:
        name = n.get("name")
        item = {
            "name": name, "running": n.get("running"),
            "mem_alarm": n.get("mem_alarm"), "disk_free_alarm": n.get("disk_free_alarm"),
            "mem_used": n.get("mem_used"), "mem_limit": n.get("mem_limit"), "mem_ratio": ratio(n.get("mem_used"), n.get("mem_limit")),
            "disk_free": n.get("disk_free"), "disk_free_limit": n.get("disk_free_limit"),
            "fd_used": n.get("fd_used"), "fd_total": n.get("fd_total"), "fd_ratio": ratio(n.get("fd_used"), n.get("fd_total")),
            "sockets_used": n.get("sockets_used"), "sockets_total": n.get("sockets_total"),
            "sockets_ratio": ratio(n.get("sockets_used"), n.get("sockets_total")),
            "partitions": n.get("partitions") or [],
        }
        out.append(item)
        if item["running"] is False:
            problems.append(f"node {name} is not running")
        if item["mem_alarm"]:
            problems.append(f"memory alarm on {name}: every publishing connection in the cluster is blocked")
        if item["disk_free_alarm"]:
            problems.append(f"disk alarm on {name}: every publishing connection in the cluster is blocked")
        for what, key in (("file descriptors", "fd_ratio"), ("sockets", "sockets_ratio")):
            if item[key] is not None and item[key] >= 0.9:
                problems.append(f"{name} uses {item[key]:.0%} of its {what}")
        if not item["mem_alarm"] and item["mem_ratio"] is not None and item["mem_ratio"] >= 0.9:
            problems.append(f"{name} memory at {item['mem_ratio']:.0%} of the alarm threshold: "
                            f"publishers get blocked when it is reached")
        free, limit = _num(item["disk_free"]), _num(item["disk_free_limit"])
        if not item["disk_free_alarm"] and free is not None and limit and free < 2 * limit:
            problems.append(f"{name} free disk {free:.0f} bytes is within twice the alarm limit ({limit:.0f})")
        if item["partitions"]:
            problems.append(f"{name} sees a network partition with {', '.join(map(str, item['partitions']))}")
    return out, problems


THROTTLED_STATES = ("blocked", "blocking", "flow")


def connection_summary(connections: Iterable[Mapping[str, Any]], channels: Iterable[Mapping[str, Any]],
                       top: int = 5, listed: int = 20, total: int | None = None,
                       others: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Connection states (blocked/blocking: alarm; flow: credit throttling), and
    the top publishers: channels sorted by publish rate, summed per connection.

    `connections` may be the first rows of a listing sorted by state (all the
    throttled ones, not every connection): `total` is then the broker's count
    and `by_state` counts the rows read.  `others`: rows read one by one
    (the top publishers' connections), used for their state and client only."""
    connections = list(connections)
    by_state: dict[str, int] = {}
    throttled = []
    for c in connections:
        state = c.get("state") or "unknown"
        by_state[state] = by_state.get(state, 0) + 1
        if state in THROTTLED_STATES:
            throttled.append(_connection_brief(c))
    per_conn: dict[str, dict[str, Any]] = {}
    for ch in channels:
        details = ch.get("connection_details") if isinstance(ch.get("connection_details"), Mapping) else {}
        stats = ch.get("message_stats") if isinstance(ch.get("message_stats"), Mapping) else {}
        rate = _num((stats.get("publish_details") or {}).get("rate")) if isinstance(stats.get("publish_details"), Mapping) else None
        if not rate:
            continue
        name = details.get("name") or ch.get("name")
        entry = per_conn.setdefault(name, {"connection": name, "user": ch.get("user"), "vhost": ch.get("vhost"),
                                           "peer": _peer(details.get("peer_host"), details.get("peer_port")),
                                           "publish_rate": 0.0})
        entry["publish_rate"] = round(entry["publish_rate"] + rate, 3)
    by_name = {c.get("name"): c for c in [*others, *connections]}
    top_publishers = sorted(per_conn.values(), key=lambda e: -e["publish_rate"])[:top]
    for entry in top_publishers:
        conn = by_name.get(entry["connection"])
        if conn is not None:
            entry["state"] = conn.get("state")
            entry["client"] = _client(conn)
    return {"total": len(connections) if total is None else total, "read": len(connections),
            "by_state": dict(sorted(by_state.items())),
            "throttled": throttled[:listed], "throttled_count": len(throttled), "top_publishers": top_publishers}


def _peer(host, port) -> str | None:
    if host is None:
        return None
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _client(c: Mapping[str, Any]) -> str | None:
    props = c.get("client_properties") if isinstance(c.get("client_properties"), Mapping) else {}
    parts = [props.get("connection_name"), props.get("product"), props.get("version")]
    text = " ".join(str(p) for p in parts if p)
    return text or None


def _connection_brief(c: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": c.get("name"), "state": c.get("state"), "user": c.get("user"), "vhost": c.get("vhost"),
            "peer": _peer(c.get("peer_host"), c.get("peer_port")), "client": _client(c),
            "recv_bytes_rate": _num((c.get("recv_oct_details") or {}).get("rate"))
            if isinstance(c.get("recv_oct_details"), Mapping) else None}


def severity(record: Mapping[str, Any]) -> tuple:
    """Sort key: worst status first, then deepest."""
    status = record.get("status")
    rank = STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)
    return (rank, -(record.get("depth") or 0))
