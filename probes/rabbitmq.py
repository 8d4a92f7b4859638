"""RabbitMQ: queue depth, rates, consumers, fill against length limits, dead
letters, node alarms and throttled connections.

Two ways in:
- the management API (http/https URL), read with GET only: one cheap pass over
  every queue (explicit `columns=`; on large brokers the rabbitmq_prometheus
  plugin's endpoint or the API's totals, see _rabbitmq_listing), then small per-queue GETs for the
  queues that matter (named, deepest, fastest growing, nearly full, down),
  sampled over the window for qdiag's own rates; and, since the API's
  counts trail the queues by up to one statistics interval, a passive
  queue.declare over AMQP for each examined queue at the last sample, which
  gives its ready count and consumer count as of now (_rabbitmq_counts says
  when a depth is then settled);
- AMQP (amqp/amqps URL), when no management API is reachable: a passive
  queue.declare per named queue gives the ready count and the consumer count.
  Passive declare never creates anything; basic.get is never used.

Nothing here writes to the broker: no POST (the API's `.../get` consumes), no
declare that could create, no consume, no ack.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote

from qdiag.context import DeadlineReached
from qdiag.probe import NotApplicable, ProbeError, Option, register
from . import _rabbitmq_amqp as amqp
from . import _rabbitmq_consumers as rcn
from . import _rabbitmq_counts as rc
from . import _rabbitmq_facts
from . import _rabbitmq_listing as rl
from . import _rabbitmq_parse as rp
from ._rabbitmq_api import ManagementApi, queue_path

# The cheap pass over every queue: what depth, selection (deepest, growing,
# nearly full by argument or policy, down) and the summary need; no rates.
# Measured on RabbitMQ 3.10.8 with 5,000 queues (tests/bench/bench_rabbitmq.py,
# medians of 7): these columns 0.76 s / 1.4 MB; the default payload 1.25 s / 7 MB;
# all 11 pages of 500 sorted by depth 3.2 s (the server sorts for every page);
# disable_stats=true&enable_queue_totals=true 0.31 s but without consumers,
# effective policy, byte counts and growth rate, which selection needs.
LIST_COLUMNS = ",".join([
    "vhost", "name", "type", "state", "messages", "messages_ready", "messages_unacknowledged", "consumers",
    "message_bytes_ready", "arguments", "effective_policy_definition", "messages_details.rate",
])
# Per-queue samples of the queues that matter: the cumulative counters for
# qdiag's own rates, the broker's rates, and the details.
DETAIL_COLUMNS = ",".join([
    LIST_COLUMNS, "message_bytes", "message_bytes_unacknowledged", "consumer_utilisation", "consumer_capacity",
    "policy", "operator_policy", "node", "idle_since",
    *(f"message_stats.{c}" for c in rp.COUNTERS),
    *(f"message_stats.{c}_details.rate" for c in rp.COUNTERS),
])
CONSUMER_COLUMNS = "consumer_details"
NODE_COLUMNS = ("name,running,mem_alarm,disk_free_alarm,mem_used,mem_limit,disk_free,disk_free_limit,"
                "fd_used,fd_total,sockets_used,sockets_total,partitions")
CONNECTION_COLUMNS = "name,state,user,vhost,peer_host,peer_port,client_properties,recv_oct_details.rate,connected_at"
# Connections looked at one by one: with the heartbeat timeout (`timeout`, 0 = off).
CONNECTION_DETAIL_COLUMNS = CONNECTION_COLUMNS + ",timeout"
CONNECTION_PAGE_SIZE = 500
CONNECTION_PAGES = 4  # pages of throttled connections read at most
MAX_CONSUMER_CONNECTIONS = 20  # consumer connections of stuck queues looked at one by one
CHANNEL_COLUMNS = "name,user,vhost,connection_details.name,connection_details.peer_host,connection_details.peer_port,message_stats.publish_details.rate"
OVERVIEW_COLUMNS = ("rabbitmq_version,management_version,cluster_name,rates_mode,disable_stats,object_totals,node,"
                    "listeners")

DEFAULTS = {"top_n": 20, "samples": 3, "stats_interval_s": 5.0, "request_timeout_s": 10.0,
            "redeliver_ratio_high": 0.5, "top_connections": 5, "max_examined": 100,
            "exact_counts": True, "amqp_port": 0, "amqp_timeout_s": 3.0, "listing": "auto", "large_from_queues": 5000}


OPTIONS = (
    Option("top_n", "int", DEFAULTS["top_n"], "deepest queues reported besides the named ones", low=1, high=1000),
    Option("samples", "int", DEFAULTS["samples"], "samples over the window", low=2, high=20),
    Option("stats_interval_s", "float", DEFAULTS["stats_interval_s"],
           "the broker's collect_statistics_interval (the API does not report it)", low=0.1, high=3600),
    Option("request_timeout_s", "float", DEFAULTS["request_timeout_s"], "seconds for one API request",
           low=0.05, high=300),
    Option("redeliver_ratio_high", "float", DEFAULTS["redeliver_ratio_high"],
           "redeliveries per delivery above which a queue is looping", low=0.0001, high=1),
    Option("top_connections", "int", DEFAULTS["top_connections"], "busiest publishing connections listed",
           low=1, high=1000),
    Option("max_examined", "int", DEFAULTS["max_examined"], "queues sampled one by one", low=1, high=100000),
    Option("exact_counts", "bool", DEFAULTS["exact_counts"],
           "read the examined queues' ready and consumer counts with a passive queue.declare over AMQP (the "
           "management API's trail by up to one statistics interval); false leaves their depths unsettled"),
    Option("amqp_port", "int", DEFAULTS["amqp_port"],
           "AMQP port for the exact counts (0: the broker's listener from /api/overview)", low=0, high=65535),
    Option("listing", "str", DEFAULTS["listing"],
           "how every queue is listed once: auto (by the queue count), management (with statistics), totals "
           "(disable_stats), prometheus (the rabbitmq_prometheus plugin, when the broker runs it)",
           choices=rl.SOURCES),
    Option("large_from_queues", "int", DEFAULTS["large_from_queues"],
           "with listing = auto, the queue count from which the cheaper listing is used", low=1, high=10_000_000),
    Option("amqp_timeout_s", "float", DEFAULTS["amqp_timeout_s"],
           "seconds for one AMQP call (connect, handshake, one passive declare)", low=0.05, high=300),
)


def _options(ctx) -> dict[str, float]:
    return {key: ctx.options[key] for key in DEFAULTS}


# ---------------------------------------------------------------- sampling


class _Sampler:
    """One cheap pass over every queue, then selection and dead-letter routing;
    every sample is then a small GET per selected queue.

    Each sample maps (vhost, queue) -> (seconds since the window opened, row)."""

    def __init__(self, ctx, api: ManagementApi, opts: Mapping[str, float], read_exact=None):
        self.ctx = ctx
        self.api = api
        self.opts = opts
        # keys -> {key: {"ready", "consumers"} or {"why"}}, called right after the last sample
        self.read_exact = read_exact
        self.exact: dict[tuple[str, str], dict] = {}
        self.exact_unavailable: str | None = None  # why no exact counts are read at all
        # How every queue is listed: {"source", "why", "endpoint" (prometheus)}; then "seconds", "leaves_out".
        self.listing: dict[str, Any] = {"source": "management", "why": "default"}
        self.all_rows: list[dict] = []
        self.selected: dict[tuple[str, str], list[str]] = {}
        self.dead_letter: dict[tuple[str, str], dict] = {}
        self.details: dict[tuple[str, str], dict] = {}  # latest detail row per selected queue
        self.truncated = 0  # selected queues left out by max_examined
        self.span_s = 0.0  # planned time between the first and the last sample

    def run(self) -> list[dict[tuple[str, str], tuple[float, dict]]]:
        """One pass over every queue to choose, then the samples of the chosen.

        The broker refreshes each channel's and queue's statistics once per
        interval, each on its own phase.  Two readings exactly n intervals apart
        contain exactly n refreshes of every emitter, so the samples are spread
        over the largest whole number of intervals that fits in the window, and
        anchored on the first per-queue reading (the cheap pass over thousands
        of queues takes too long to date its figures precisely).  A window
        shorter than one interval still gives depths, but no measured rates.
        """
        ctx = self.ctx
        interval = self.opts["stats_interval_s"]
        count = int(self.opts["samples"])
        whole = int(ctx.window_s / interval + 1e-9) * interval
        self.span_s = whole if whole > 0 else ctx.window_s
        self._choose()
        samples = []
        anchor = ctx.clock()
        for k in range(count):
            if k:
                try:
                    ctx.sleep_until(anchor + k * self.span_s / (count - 1))
                except DeadlineReached:
                    break
            samples.append(self._selected_rows(with_consumers=k == count - 1))
            if k == 0 and self.listing["source"] == "prometheus":
                # That listing has no arguments: dead-letter settings come from the first detail rows.
                self._resolve_dead_letters({**{rp.key_of(r): r for r in self.all_rows}, **self.details})
        if self.read_exact is not None and self.selected:
            self.exact = self.read_exact(list(self.selected))
        return samples

    def _get_timed(self, path: str, params: Mapping[str, Any], **kw) -> tuple[float, Any]:
        """(midpoint of the request in seconds since the window opened, JSON)."""
        began = self.ctx.clock()
        body = self.api.get(path, params, **kw)
        return (began + self.ctx.clock()) / 2 - self.ctx.window_start, body

    def _list_every_queue(self) -> list[dict]:
        """Every queue once, from the source chosen for this broker's size
        (_rabbitmq_listing); a Prometheus endpoint that fails falls back to
        the management API's totals, and the listing says so."""
        source = self.listing["source"]
        began = self.ctx.clock()
        if source == "prometheus":
            try:
                rows = self._prometheus_rows()
            except ProbeError as exc:
                self.listing.update(source="totals", why=f"the Prometheus endpoint failed ({exc}); totals instead")
                source = "totals"
        if source == "totals":
            rows = self.api.get("/queues", {"disable_stats": "true", "enable_queue_totals": "true",
                                            "columns": rl.TOTALS_COLUMNS})
        elif source == "management":
            rows = self.api.get("/queues", {"columns": LIST_COLUMNS})
        if not isinstance(rows, list):
            raise ProbeError(f"{self.api.where}: GET /queues did not return a list (not a RabbitMQ management API?)")
        self.listing["seconds"] = round(self.ctx.clock() - began, 3)
        if source in rl.LEAVES_OUT:
            self.listing["leaves_out"] = rl.LEAVES_OUT[source]
        return [r for r in rows if isinstance(r, dict)]

    def _prometheus_rows(self) -> list[dict]:
        import requests

        scheme, port = self.listing["endpoint"]
        host = self.api.target.host
        url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        timeout = self.ctx.io_timeout(self.opts["request_timeout_s"])
        self.api.count += 1
        try:
            # The endpoint needs no credentials: none are sent to it.
            resp = requests.get(url + rl.PROMETHEUS_PATH, params=[("family", f) for f in rl.PROMETHEUS_FAMILIES],
                                timeout=(timeout, timeout), allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            raise ProbeError(f"{type(exc).__name__} from port {port}") from None
        if resp.status_code != 200:
            raise ProbeError(f"HTTP {resp.status_code} from port {port}")
        return rl.parse_prometheus(resp.text.splitlines())

    def _choose(self) -> None:
        self.all_rows = self._list_every_queue()
        self.ctx.partial["queue_summary"] = _summary(self.all_rows, None)
        patterns = self.ctx.targets.queues
        chosen = rp.select(self.all_rows, patterns, int(self.opts["top_n"]))
        cap = int(self.opts["max_examined"])
        if len(chosen) > cap:
            self.truncated = len(chosen) - cap
            chosen = dict(list(chosen.items())[:cap])
        self.selected = chosen
        if self.listing["source"] != "prometheus":
            self._resolve_dead_letters({rp.key_of(r): r for r in self.all_rows})

    def _resolve_dead_letters(self, by_key: Mapping[tuple[str, str], dict]) -> None:
        """For each selected queue with a dead-letter exchange, find the queues it
        routes to (2 GETs per distinct exchange) and sample them too."""
        cache: dict[tuple[str, str], tuple[str | None, list]] = {}
        for key in list(self.selected):
            row = by_key.get(key)
            if row is None:
                continue
            lim = rp.limits(row)
            dlx = lim["dead_letter_exchange"]
            if dlx is None:
                continue
            vhost = key[0]
            ex_type, bindings = None, []
            if dlx != "":
                if (vhost, dlx) not in cache:
                    base = f"/exchanges/{quote(vhost, safe='')}/{quote(dlx, safe='')}"
                    exchange = self.api.get(base, {"columns": "name,type"}, missing_ok=True)
                    found_type = exchange.get("type") if isinstance(exchange, dict) else None
                    found_bindings = (self.api.get(base + "/bindings/source", missing_ok=True) or []) if found_type else []
                    cache[(vhost, dlx)] = (found_type, found_bindings if isinstance(found_bindings, list) else [])
                ex_type, bindings = cache[(vhost, dlx)]
            routed = rp.dead_letter_queues(exchange=dlx, routing_key=lim["dead_letter_routing_key"],
                                           exchange_type=ex_type, bindings=bindings)
            self.dead_letter[key] = routed
            for qname in routed["queues"]:
                dlq = (vhost, qname)
                if dlq in by_key and dlq != key:
                    self.selected.setdefault(dlq, []).append(f"dead-letter queue of {rp.display_name(*key)}")

    def _selected_rows(self, with_consumers: bool) -> dict[tuple[str, str], tuple[float, dict]]:
        columns = DETAIL_COLUMNS + ("," + CONSUMER_COLUMNS if with_consumers else "")
        out = {}
        for key in self.selected:
            when, row = self._get_timed(queue_path(*key), {"columns": columns}, missing_ok=True)
            if row == []:
                # A queue younger than one statistics interval: the API has no
                # figures for it yet and answers an empty list.
                row = {"statistics_pending": True}
            if isinstance(row, dict):
                row.setdefault("vhost", key[0])
                row.setdefault("name", key[1])
                out[key] = (when, row)
                self.details[key] = row
        return out


def _collect_management(ctx, target, opts) -> dict:
    api = ManagementApi(ctx, target, opts["request_timeout_s"])
    try:
        return _management(ctx, api, opts)
    finally:
        ctx.partial["api_requests"] = api.count
        api.close()


def _management(ctx, api: ManagementApi, opts) -> dict:
    notes: list[str] = []
    overview = api.get("/overview", {"columns": OVERVIEW_COLUMNS})
    if not isinstance(overview, dict) or ("rabbitmq_version" not in overview and "management_version" not in overview):
        raise ProbeError(f"{api.where} answered /api/overview without a RabbitMQ version (not a RabbitMQ management API?)")
    rates_mode = overview.get("rates_mode")
    stats_enabled = rates_mode != "none" and not overview.get("disable_stats")
    broker = {
        "target": api.target.label(), "mode": "management",
        "version": overview.get("rabbitmq_version"), "management_version": overview.get("management_version"),
        "cluster_name": overview.get("cluster_name"), "rates_mode": rates_mode,
        "stats_interval_s": opts["stats_interval_s"],
        "object_totals": overview.get("object_totals"),
    }
    ctx.partial["broker"] = broker
    notes.append(f"management statistics refresh every {opts['stats_interval_s']:g}s (collect_statistics_interval, "
                 f"set with [probes.rabbitmq] stats_interval_s): depths can lag rabbitmqctl by that much")
    read_exact, broker["exact_counts"] = _exact_reader(ctx, api.target, overview.get("listeners"), opts)
    if read_exact is None:
        notes.append(f"no exact counts: {broker['exact_counts']['why']}; depths are the management statistics "
                     f"and marked depth_settled false")

    sampler = _Sampler(ctx, api, opts, read_exact)
    sampler.exact_unavailable = broker["exact_counts"].get("why")
    endpoint = rl.prometheus_listener(overview.get("listeners"))
    source, why = rl.choose(opts["listing"], (overview.get("object_totals") or {}).get("queues"),
                            int(opts["large_from_queues"]), endpoint)
    if source == "prometheus" and endpoint is None:
        raise ProbeError(f"[probes.rabbitmq] listing = prometheus, but {api.where} lists no rabbitmq_prometheus "
                         f"listener (rabbitmq-plugins enable rabbitmq_prometheus, or listing = auto)")
    sampler.listing = {"source": source, "why": why, "endpoint": endpoint}
    broker["listing"] = sampler.listing
    samples = sampler.run()

    rows = sampler.all_rows
    patterns = ctx.targets.queues
    missing = rp.missing_patterns(rows, patterns)
    for pattern in missing:
        notes.append(f"no queue matches '{pattern}' on {api.where} (in any vhost)")
    summary = _summary(rows, len(sampler.selected))
    ctx.partial["queue_summary"] = summary

    if sampler.listing.get("leaves_out"):
        notes.append(f"every queue was listed from {sampler.listing['source']} ({sampler.listing['why']}): "
                     f"{sampler.listing['leaves_out']}")
    if sampler.truncated:
        notes.append(f"{sampler.truncated} more queue(s) matched the selection; only the first "
                     f"{int(opts['max_examined'])} were examined ([probes.rabbitmq] max_examined)")
    records = [_record(key, why, samples, sampler, opts, stats_enabled) for key, why in sampler.selected.items()
               if any(key in snap for snap in samples)]
    records.sort(key=rp.severity)
    ctx.partial["queues"] = records

    nodes_raw = api.get("/nodes", {"columns": NODE_COLUMNS})
    nodes, node_problems = rp.node_health(nodes_raw if isinstance(nodes_raw, list) else [])
    ctx.partial["nodes"] = nodes
    connections, total, complete = _throttled_connections(api)
    channels = api.get("/channels", {"columns": CHANNEL_COLUMNS, "pagination": "true", "page": 1,
                                     "page_size": int(opts["top_connections"]) * 4,
                                     "sort": "message_stats.publish_details.rate", "sort_reverse": "true"})
    channel_items = channels.get("items", []) if isinstance(channels, dict) else []
    top = int(opts["top_connections"])
    conns = rp.connection_summary(connections, channel_items, top=top, total=total)
    # One by one: the top publishers' connections, and those of consumers that hold messages and move none.
    wanted = [e["connection"] for e in conns["top_publishers"] if "state" not in e]
    wanted += [n for n in rcn.stuck_connection_names(records, MAX_CONSUMER_CONNECTIONS) if n not in wanted]
    looked_up = _connection_rows(api, wanted)
    conns = rp.connection_summary(connections, channel_items, top=top, total=total, others=looked_up.values())
    if not complete:
        notes.append(f"more than {CONNECTION_PAGES * CONNECTION_PAGE_SIZE} connections are blocked, blocking, "
                     f"closing or in flow control; only the first {len(connections)} (by state) were read")
    ages = rp.connection_ages([*connections, *looked_up.values()], ctx.wall_clock() * 1000)
    for rec in records:
        rp.discount_young_consumers(rec, ages, opts["stats_interval_s"])
        rcn.heartbeat_findings(rec, looked_up)
    problems = list(node_problems)
    if conns["throttled_count"]:
        problems.append(f"{conns['throttled_count']} connection(s) blocked or in flow control "
                        f"({', '.join(f'{k} {v}' for k, v in conns['by_state'].items() if k in rp.THROTTLED_STATES)})")
    for rec in records:
        if rec["status"] != "ok":
            problems.append(f"queue {rec['name']}: {rec['status']}" +
                            (f" ({', '.join(rec['findings'])})" if rec["findings"] else ""))

    return {
        "broker": broker,
        "queues": records,
        "queue_summary": summary,
        "nodes": nodes,
        "connections": conns,
        "consumers": _local_consumers(sampler.details),
        "not_found": [{"kind": "queue", "name": p} for p in missing],
        "problems": problems,
        "notes": notes,
        "api_requests": api.count,
    }


def _throttled_connections(api: ManagementApi) -> tuple[list[dict], int | None, bool]:
    """(connection rows read, the broker's connection count, whether every
    throttled one was read).  Paginated and sorted by state, so the blocked,
    blocking and flow connections come first and 50,000 connections are never
    one reply; reading stops at the first page past those states."""
    rows: list[dict] = []
    total = None
    for page in range(1, CONNECTION_PAGES + 1):
        body = api.get("/connections", {"columns": CONNECTION_COLUMNS, "pagination": "true", "page": page,
                                        "page_size": CONNECTION_PAGE_SIZE, "sort": "state"})
        if not isinstance(body, dict):
            break
        items = [r for r in body.get("items") or [] if isinstance(r, dict)]
        rows += items
        total = body.get("total_count") if isinstance(body.get("total_count"), int) else total
        if rcn.throttled_pages_done(items) or page >= (body.get("page_count") or 0):
            return rows, total, True
    return rows, total, False


def _connection_rows(api: ManagementApi, names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        row = api.get(f"/connections/{quote(name, safe='')}", {"columns": CONNECTION_DETAIL_COLUMNS}, missing_ok=True)
        if isinstance(row, dict):
            out[name] = row
    return out


def _exact_reader(ctx, target, listeners, opts):
    """(keys -> exact counts, or None; what the snapshot says about it).

    The AMQP connection uses the management target's host and credentials, the
    port of the broker's AMQP listener, and TLS when the management URL has it."""
    if not opts["exact_counts"]:
        return None, {"read": False, "why": "[probes.rabbitmq] exact_counts = false"}
    port, tls, how = rc.amqp_endpoint(listeners, target.scheme, int(opts["amqp_port"]))
    if port is None:
        return None, {"read": False, "why": how}

    def connect(vhost):
        return amqp.PassiveClient(target.host, port, username=target.username, password=target.password,
                                  vhost=vhost, tls=tls, timeout=lambda: ctx.io_timeout(opts["amqp_timeout_s"]))

    def read(keys):
        return amqp.read_counts(rc.vhosts_in_order(keys), connect=connect, time_left=ctx.remaining,
                                refused=rc.exact_reason)

    return read, {"read": True, "port": port, "tls": tls, "port_from": how}


def _summary(rows: list[dict], examined: int | None) -> dict[str, Any]:
    def total(field):
        values = [r.get(field) for r in rows if isinstance(r.get(field), int)]
        return sum(values) if values else None

    down = [{"name": rp.display_name(*rp.key_of(r)), "state": r.get("state")} for r in rows if r.get("state") in rp.BAD_STATES]
    # A listing without consumer counts (totals) does not say how many backlogs have none.
    no_consumers = (sum(1 for r in rows if r.get("consumers") == 0 and (r.get("messages_ready") or 0) > 0)
                    if any("consumers" in r for r in rows) else None)
    has_state = any("state" in r for r in rows)  # the Prometheus listing has no queue state
    return {"queues": len(rows), "examined": examined, "messages": total("messages"),
            "messages_ready": total("messages_ready"), "messages_unacknowledged": total("messages_unacknowledged"),
            "backlog_without_consumers": no_consumers, "not_running": down[:50] if has_state else None,
            "not_running_count": len(down) if has_state else None}


def _record(key, why, samples, sampler: _Sampler, opts, stats_enabled: bool) -> dict[str, Any]:
    vhost, name = key
    series = [snap[key] for snap in samples if key in snap]
    rows = [r for _, r in series]
    detailed = key in sampler.details
    api_row = sampler.details.get(key) or rows[-1]
    counter_series = [(t, rp.counters(r)) for t, r in series]
    measured = rp.measured_rates(counter_series, opts["stats_interval_s"], stats_enabled)
    delta, delta_window = rp.depth_delta([(t, r.get("messages")) for t, r in series])
    exact = sampler.exact.get(key) or {}
    counts = rc.settle(api_row, exact if "ready" in exact else None,
                       exact.get("why") or sampler.exact_unavailable or "not read", opts["stats_interval_s"])
    # The figures of now (exact where read) drive fill, status and findings.
    row = {**api_row, "messages_ready": counts["messages_ready"], "consumers": counts["consumers"],
           "messages_unacknowledged": counts["messages_unacknowledged"], "messages": counts["depth"]}
    lim = rp.limits(row)
    fill_info = rp.fill(row, lim)
    broker = rp.broker_rates(row, requested=detailed and stats_enabled)
    derived = rp.derive(
        ready=row.get("messages_ready"), unacked=row.get("messages_unacknowledged"), messages=row.get("messages"),
        consumers=row.get("consumers"), state=row.get("state"), lim=lim, fill_info=fill_info,
        message_bytes_ready=row.get("message_bytes_ready"), measured=measured, broker=broker,
        depth_change=delta, depth_window_s=delta_window, stats_interval_s=opts["stats_interval_s"],
        redeliver_ratio_high=opts["redeliver_ratio_high"],
    )
    consumers_detail = row.get("consumer_details") if isinstance(row.get("consumer_details"), list) else None
    prefetch, consumer_connections = None, None
    if consumers_detail is not None:
        prefetch = [c.get("prefetch_count") for c in consumers_detail if isinstance(c, dict)]
        consumer_connections = sorted({(c.get("channel_details") or {}).get("connection_name")
                                       for c in consumers_detail if isinstance(c, dict)} - {None})
    record = {
        "system": "rabbitmq", "name": rp.display_name(vhost, name), "group": None,
        "vhost": vhost, "queue": name, "type": row.get("type"), "state": row.get("state"),
        "depth": row.get("messages"), "depth_settled": counts["depth_settled"],
        "depth_settled_why": counts["depth_settled_why"], "depth_bounds": counts["depth_bounds"],
        "counts_source": counts["counts_source"], "statistics": counts["statistics"],
        # `<field>_settled`: qdiag check judges a figure that is not of now on what is known of it.
        "consumers_settled": counts["counts_settled"], "consumers_settled_why": counts["counts_settled_why"],
        "fill_ratio_settled": counts["counts_settled"], "fill_ratio_settled_why": counts["counts_settled_why"],
        "messages_ready": row.get("messages_ready"), "messages_unacknowledged": row.get("messages_unacknowledged"),
        "message_bytes": row.get("message_bytes"), "message_bytes_ready": row.get("message_bytes_ready"),
        "rate_in": derived["rate_in"], "rate_out": derived["rate_out"], "rate_source": derived["rate_source"],
        "consumers": row.get("consumers"),
        "consumer_utilisation": row.get("consumer_utilisation"), "consumer_capacity": row.get("consumer_capacity"),
        "consumer_prefetch": prefetch, "consumer_connections": consumer_connections,
        "fill_ratio": fill_info["fill_ratio"], "fill_ratio_messages": fill_info["fill_ratio_messages"],
        "fill_ratio_bytes": fill_info["fill_ratio_bytes"],
        "limits": lim, "overflow": lim["overflow"], "limit": lim["max_length"],
        "status": derived["status"], "findings": derived["findings"],
        "net_growth_per_s": derived["net_growth_per_s"], "net_growth_source": derived["net_growth_source"],
        "time_to_full_s": derived["time_to_full_s"], "time_to_drain_s": derived["time_to_drain_s"],
        "redeliver_ratio": derived["redeliver_ratio"],
        "depth_change": delta, "depth_window_s": delta_window,
        "depth_samples": [r.get("messages") for _, r in series],
        "sample_times_s": [round(t, 3) for t, _ in series],
        "depth_trend": rp.trend(delta, delta_window, opts["stats_interval_s"]),
        "stats_behind": rp.stats_behind(counter_series[-1][1] if counter_series else None,
                                        api_row.get("messages_unacknowledged")),
        "rates_measured": measured["rates"], "rates_measured_window_s": measured["window_s"],
        "rates_measured_reason": measured["reason"],
        "rates_broker": broker, "depth_rate_broker": rp.broker_depth_rate(row),
        "samples": len(rows),
        "statistics_pending": bool(row.get("statistics_pending")),
        "arguments": row.get("arguments"), "policy": row.get("policy"), "operator_policy": row.get("operator_policy"),
        "effective_policy_definition": row.get("effective_policy_definition"),
        "selected_because": why,
        "dead_letter": None,
    }
    routed = sampler.dead_letter.get(key)
    if routed is not None:
        dlqs = []
        for qname in routed["queues"]:
            dkey = (vhost, qname)
            dseries = [(snap[dkey][0], snap[dkey][1].get("messages")) for snap in samples if dkey in snap]
            dchange, dwindow = rp.depth_delta(dseries)
            latest = sampler.details.get(dkey) or next((r for r in sampler.all_rows if rp.key_of(r) == dkey), None)
            dlqs.append({"name": rp.display_name(vhost, qname), "exists": latest is not None,
                         "depth": latest.get("messages") if latest else None,
                         "depth_change": dchange, "depth_window_s": dwindow})
        record["dead_letter"] = {"exchange": lim["dead_letter_exchange"], "routing_key": lim["dead_letter_routing_key"],
                                 "routing": routed["how"], "queues": dlqs}
    return record


def _local_consumers(details: Mapping[tuple[str, str], dict]) -> list[dict]:
    """Consumers of the examined queues that run on this host."""
    peers: dict[tuple[str, int], str] = {}
    for key, row in details.items():
        for c in row.get("consumer_details") or []:
            ch = c.get("channel_details") if isinstance(c, dict) else None
            if isinstance(ch, dict) and ch.get("peer_host") and isinstance(ch.get("peer_port"), int):
                peers.setdefault((ch["peer_host"], ch["peer_port"]), rp.display_name(*key))
    return _pids_for(peers)


def _pids_for(peers: Mapping[tuple[str, int], str]) -> list[dict]:
    if not peers:
        return []
    from qdiag.localsockets import pids_by_local_address

    found = pids_by_local_address(peers)
    out, seen = [], set()
    for (host, port), queue in peers.items():
        norm = _norm_key(host, port, found)
        pid = found.get(norm) if norm else None
        if pid is not None and (pid, queue) not in seen:
            seen.add((pid, queue))
            out.append({"pid": pid, "via": f"rabbitmq consumer connection from {host}:{port}",
                        "subject": f"rabbitmq:{queue}"})
    return out


def _norm_key(host, port, found: Mapping[tuple[str, int], int]):
    from qdiag.endpoints import norm_ip

    key = (norm_ip(host), int(port))
    return key if key in found else None


# ---------------------------------------------------------------- AMQP fallback


def _collect_amqp(ctx, target, opts) -> dict:
    names = list(ctx.targets.queues)
    if not names:
        raise NotApplicable("an amqp:// URL cannot list queues: give --queue NAME for a passive check of ready "
                            "count and consumers, or the management API (http://HOST:15672) for everything")
    globs = [n for n in names if rp.is_glob(n)]
    exact = [n for n in names if not rp.is_glob(n)]
    notes = ["AMQP only: a passive queue.declare reports ready messages and consumers; unacknowledged "
             "messages, rates and limits need the management API"]
    if globs:
        notes.append("glob patterns need the management API, skipped: " + ", ".join(globs))
    if not exact:
        raise NotApplicable("only glob patterns were given and an amqp:// URL cannot list queues: "
                            "use the management API (http://HOST:15672)")
    vhost = target.vhost or "/"
    client = amqp.PassiveClient(target.host, target.port, username=target.username, password=target.password,
                                vhost=vhost, tls=target.scheme == "amqps",
                                timeout=lambda: ctx.io_timeout(opts["amqp_timeout_s"]))
    where = client.where
    try:
        client.open()
    except amqp.AmqpFailure as exc:
        raise ProbeError(str(exc)) from None
    missing: set[str] = set()

    def declare(name):
        got = client.declare(name)
        if got.code == amqp.NOT_FOUND:
            missing.add(name)
        elif got.ready is None:
            raise ProbeError(f"passive declare of queue '{name}' on {where} refused: {got.code} {got.text}")
        return {"messages_ready": got.ready, "consumers": got.consumers} if got.ready is not None else None

    def take():
        ctx.check_deadline()
        return {name: declare(name) for name in exact if name not in missing}

    try:
        samples = ctx.sample(take, count=int(opts["samples"]))
    except amqp.AmqpFailure as exc:
        raise ProbeError(f"{exc} (while sampling)") from None
    finally:
        client.close()
    if not samples:
        raise ProbeError(f"no passive declare of the named queues on {where} finished before the deadline")
    for name in sorted(missing):
        notes.append(f"queue '{name}' does not exist in vhost '{vhost}' on {where}")
    records = []
    for name in exact:
        if name in missing:
            continue
        series = [(t, snap.get(name)) for t, snap in samples]
        latest = next((s for _, s in reversed(series) if s is not None), None)
        if latest is None:
            continue
        change, window = rp.depth_delta([(t, s["messages_ready"] if s else None) for t, s in series])
        growth = round(change / window, 3) if change is not None and window else None
        if latest["consumers"] == 0 and latest["messages_ready"]:
            status = "no-consumers"
        elif growth is not None and growth > 0:
            status = "growing"
        else:
            status = "ok"
        records.append({
            "system": "rabbitmq", "name": rp.display_name(vhost, name), "group": None, "vhost": vhost, "queue": name,
            "depth": latest["messages_ready"], "depth_kind": "ready only",
            # Exact for what it counts: the queue process answered the passive declare.
            "depth_settled": True, "depth_settled_why": None,
            "depth_bounds": [latest["messages_ready"], latest["messages_ready"] if latest["consumers"] == 0 else None],
            "counts_source": "passive queue.declare",
            "messages_ready": latest["messages_ready"], "messages_unacknowledged": None,
            "rate_in": None, "rate_out": None, "rate_source": None,
            "net_growth_per_s": growth, "net_growth_source": "ready count change over the window" if growth is not None else None,
            "depth_change": change, "depth_window_s": window,
            "depth_samples": [s["messages_ready"] if s else None for _, s in series],
            "consumers": latest["consumers"], "fill_ratio": None, "status": status, "findings":
                ["no-consumers"] if status == "no-consumers" else [],
            "samples": sum(1 for _, s in series if s is not None),
        })
    records.sort(key=rp.severity)
    return {"broker": {"target": target.label(), "mode": "amqp", "vhost": vhost}, "queues": records,
            "not_found": [{"kind": "queue", "name": n} for n in sorted(missing)], "notes": notes, "consumers": []}


# ---------------------------------------------------------------- entry points


def discover(ctx) -> list[dict]:
    """Local processes consuming from this broker (named queues only, when given),
    from the consumers' peer addresses: one GET /api/consumers."""
    target = ctx.targets.rabbitmq
    if target is None or not target.is_management:
        return []
    api = ManagementApi(ctx, target, min(DEFAULTS["request_timeout_s"], 3.0))
    try:
        rows = api.get("/consumers", {"columns": "queue.name,queue.vhost,channel_details.peer_host,channel_details.peer_port"})
    finally:
        api.close()
    patterns = ctx.targets.queues
    peers: dict[tuple[str, int], str] = {}
    for c in rows if isinstance(rows, list) else []:
        queue = c.get("queue") or {}
        ch = c.get("channel_details") or {}
        vhost, name = queue.get("vhost") or "/", queue.get("name")
        if not name or not ch.get("peer_host") or not isinstance(ch.get("peer_port"), int):
            continue
        if patterns and not any(rp.matches(p, vhost, name) for p in patterns):
            continue
        peers.setdefault((ch["peer_host"], ch["peer_port"]), rp.display_name(vhost, name))
    return _pids_for(peers)


@register("rabbitmq", description="RabbitMQ queues: depth, rates, consumers, fill vs length limits, dead letters, "
                                  "node alarms, throttled connections (management API, or AMQP passive declare)",
          needs=("rabbitmq",), timeout_s=15, discover=discover, options=OPTIONS,
          diagnosis=_rabbitmq_facts.CONTRIBUTION)
def collect(ctx) -> dict:
    target = ctx.targets.rabbitmq
    if target is None:
        raise NotApplicable("no RabbitMQ target: give --rabbitmq http://USER:PASS@HOST:15672")
    opts = _options(ctx)
    if target.is_management:
        return _collect_management(ctx, target, opts)
    return _collect_amqp(ctx, target, opts)
