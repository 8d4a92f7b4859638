"""Benchmark: the RabbitMQ probe with many queues (default 5,000).

    python tests/bench/bench_rabbitmq.py [--queues 5000] [--window 5] [--reps 5] [--keep] [--vhost NAME]

Not collected by pytest (its name does not start with test_).  Creates a
throwaway vhost on the broker at 127.0.0.1 (AMQP 5672, management 15672),
fills it with queues (every tenth holds messages, every other one has a
length limit), then:
  1. times the ways of listing every queue's depth with the management API;
  2. times one listing pass of the probe (what one sample of every queue
     costs) with each source it can use (management, totals, and prometheus
     when the broker runs the rabbitmq_prometheus plugin), interleaved with
     `rabbitmqctl list_queues name messages_ready messages_unacknowledged
     consumers` on the same vhost, in the same run;
  3. runs the probe through the real runner and reports its wall time and
     the number of HTTP requests it made (discovery included);
and deletes the vhost (unless --keep; --vhost reuses one kept earlier).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import requests

from qdiag.config import resolve
from qdiag.context import ProbeContext
from qdiag.probe import all_probes
from qdiag.probes import _rabbitmq_listing as rl
from qdiag.probes import rabbitmq as probe
from qdiag.probes._rabbitmq_api import ManagementApi
from qdiag.runner import Runner

API = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")
BASE_COLUMNS = "vhost,name,type,state,messages,messages_ready,messages_unacknowledged,consumers"


def create(vhost: str, count: int) -> float:
    s = requests.Session()
    s.auth = AUTH
    s.put(f"{API}/vhosts/{vhost}", timeout=30).raise_for_status()
    s.put(f"{API}/permissions/{vhost}/{AUTH[0]}", json={"configure": ".*", "write": ".*", "read": ".*"},
          timeout=30).raise_for_status()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, vhost, pika.PlainCredentials(*AUTH)))
    ch = conn.channel()
    began = time.monotonic()
    for i in range(count):
        name = f"bench.{i:05d}"
        ch.queue_declare(name, arguments={"x-max-length": 10_000} if i % 2 else {})
        if i % 10 == 0:
            for _ in range(i % 37):
                ch.basic_publish("", name, b"m")
    conn.close()
    return time.monotonic() - began


def wait_listed(vhost: str, count: int, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        rows = requests.get(f"{API}/queues/{vhost}", auth=AUTH, params={"columns": "name,messages"}, timeout=60).json()
        if len(rows) >= count and all("messages" in q for q in rows):
            return
        time.sleep(1)
    raise SystemExit(f"the management API did not list {count} queues with statistics within {limit_s}s")


def time_listing(reps: int) -> dict:
    """Each way of reading every queue's depth, timed in interleaved rounds (so
    load from other work on the machine spreads over all of them)."""
    s = requests.Session()
    s.auth = AUTH
    ways = {
        "probe's cheap pass (LIST_COLUMNS)": {"columns": probe.LIST_COLUMNS},
        "depth columns only": {"columns": BASE_COLUMNS},
        "depth + arguments + effective policy": {"columns": BASE_COLUMNS + ",arguments,effective_policy_definition"},
        "depth + cumulative counters": {"columns": BASE_COLUMNS + "," + ",".join(
            f"message_stats.{c}" for c in ("publish", "deliver_get", "ack", "redeliver"))},
        "disable_stats+enable_queue_totals": {"disable_stats": "true", "enable_queue_totals": "true"},
        "default (no parameters)": {},
    }
    times = {label: [] for label in ways}
    sizes = {}
    for _ in range(reps):
        for label, params in ways.items():
            began = time.perf_counter()
            r = s.get(f"{API}/queues", params=params, timeout=120)
            sizes[label] = len(r.content)
            times[label].append(time.perf_counter() - began)
    out = {label: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                   "max_s": round(max(t), 3), "bytes": sizes[label], "requests": 1} for label, t in times.items()}
    times_paged = []
    pages = 0
    for _ in range(max(1, reps // 2)):
        began = time.perf_counter()
        page = 1
        while True:
            body = s.get(f"{API}/queues", timeout=120, params={
                "columns": BASE_COLUMNS, "pagination": "true", "page": page, "page_size": 500,
                "sort": "messages", "sort_reverse": "true"}).json()
            if page >= body["page_count"]:
                break
            page += 1
        pages = page
        times_paged.append(time.perf_counter() - began)
    out["paginated 500/page sorted by messages (all pages)"] = {
        "median_s": round(statistics.median(times_paged), 3), "min_s": round(min(times_paged), 3),
        "max_s": round(max(times_paged), 3), "requests": pages}
    single = []
    for _ in range(reps):
        began = time.perf_counter()
        s.get(f"{API}/queues", timeout=120, params={"columns": BASE_COLUMNS, "pagination": "true", "page": 1,
                                                    "page_size": 20, "sort": "messages", "sort_reverse": "true"})
        single.append(time.perf_counter() - began)
    out["one page of the 20 deepest (sorted)"] = {"median_s": round(statistics.median(single), 3), "requests": 1}
    return out


def rabbitmqctl(vhost: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "list_queues", "-q", "-p", vhost, "name", "messages_ready", "messages_unacknowledged",
                    "consumers"], capture_output=True, check=True, timeout=300)


def listing_pass(source: str) -> tuple[float, int]:
    """One listing pass of every queue exactly as the probe makes it: (seconds, rows)."""
    settings = resolve({"rabbitmq": "http://guest:guest@127.0.0.1:15672", "window": 1, "timeout": 300},
                       env={}, cwd=Path("/"))
    ctx = ProbeContext(settings=settings, name="rabbitmq", deadline=time.monotonic() + 300)
    opts = dict(probe.DEFAULTS, request_timeout_s=120.0)
    api = ManagementApi(ctx, settings.targets.rabbitmq, opts["request_timeout_s"])
    try:
        overview = api.get("/overview", {"columns": probe.OVERVIEW_COLUMNS})
        sampler = probe._Sampler(ctx, api, opts)
        sampler.listing = {"source": source, "why": "benchmark",
                           "endpoint": rl.prometheus_listener(overview.get("listeners"))}
        began = time.perf_counter()
        rows = sampler._list_every_queue()
        return time.perf_counter() - began, len(rows)
    finally:
        api.close()


def time_sources(vhost: str, reps: int) -> dict:
    """One sample of every queue, each source against rabbitmqctl, interleaved."""
    listeners = requests.get(f"{API}/overview", auth=AUTH, params={"columns": "listeners"}, timeout=30).json()
    sources = ["management", "totals"] + (["prometheus"] if rl.prometheus_listener(listeners.get("listeners"))
                                          else [])
    times: dict[str, list[float]] = {"rabbitmqctl list_queues": [], **{s: [] for s in sources}}
    rows = {}
    for _ in range(reps):
        began = time.perf_counter()
        rabbitmqctl(vhost)
        times["rabbitmqctl list_queues"].append(time.perf_counter() - began)
        for source in sources:
            took, rows[source] = listing_pass(source)
            times[source].append(took)
    ctl = statistics.median(times["rabbitmqctl list_queues"])
    return {label: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3), "max_s": round(max(t), 3),
                    "vs_rabbitmqctl": round(statistics.median(t) / ctl, 2), "rows": rows.get(label)}
            for label, t in times.items()}


def run_probe(window: float) -> dict:
    methods = []
    original = requests.Session.request

    def counting(self, method, url, *args, **kwargs):
        methods.append(method.upper())
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = counting
    try:
        settings = resolve({"rabbitmq": "http://guest:guest@127.0.0.1:15672", "window": window,
                            "timeout": window + 60}, env={}, cwd=Path("/"))
        began = time.monotonic()
        results, discovered = Runner(settings, [all_probes()["rabbitmq"]]).run()
        wall = time.monotonic() - began
    finally:
        requests.Session.request = original
    result = results[0]
    obs = result.observations
    return {"status": result.status, "error": result.error, "window_s": window, "wall_s": round(wall, 2),
            "work_beyond_window_s": round(wall - window, 2), "http_requests_total": len(methods),
            "methods": sorted(set(methods)), "probe_api_requests": obs.get("api_requests"),
            "queues_listed": (obs.get("queue_summary") or {}).get("queues"),
            "listing": (obs.get("broker") or {}).get("listing"),
            "queues_examined": len(obs.get("queues") or [])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=5000)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the vhost and its queues in place")
    ap.add_argument("--vhost", help="use this vhost, made earlier with --keep, instead of a new one")
    ap.add_argument("--sources-only", action="store_true", help="only the probe's listing sources vs rabbitmqctl")
    args = ap.parse_args()
    vhost = args.vhost or f"qdiag-bench-{uuid.uuid4().hex[:8]}"
    report = {"queues": args.queues, "vhost": vhost, "date": time.strftime("%Y-%m-%d"),
              "machine": f"{__import__('os').cpu_count()} cores"}
    try:
        if not args.vhost:
            report["create_s"] = round(create(vhost, args.queues), 1)
        wait_listed(vhost, args.queues)
        time.sleep(6)  # one more statistics interval so every queue has figures
        report["one_sample_of_every_queue"] = time_sources(vhost, args.reps)
        if args.sources_only:
            return
        report["listing"] = time_listing(args.reps)
        report["probe_run"] = run_probe(args.window)
        report["probe_run_again"] = run_probe(args.window)
    finally:
        if not args.keep:
            requests.delete(f"{API}/vhosts/{vhost}", auth=AUTH, timeout=300)
        json.dump(report, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
