"""The README's benchmark table: qdiag against each broker's own tool, on the
same data, at two or three sizes.  Not collected by pytest.  Needs the rig
(bash tests/rig.sh).

    python tests/bench/table.py [--runs 3] [--window 5] [--only kafka,rabbitmq,redis]
                                [--kafka-partitions 100,1000,5000] [--rabbitmq-queues 1000,5000,20000]
                                [--redis-streams 500,2000] [--json FILE]

For every size, `--runs` times, interleaved (load from other work on the
machine falls on both sides alike):
  * qdiag: the whole command as an engineer runs it, `qdiag investigate
    --probe BROKER --BROKER URL --no-auto-detect --format json --window W
    --snapshot S`, in a child process;
  * the peer, what the engineer would run instead:
      Kafka     kafka-consumer-groups --describe --all-groups (tests/bench/bench_kafka.py
                builds the data and runs both; rows are compared, see there);
      RabbitMQ  rabbitmqctl list_queues -p VHOST name messages_ready messages_unacknowledged consumers;
      Redis     redis-cli --scan --pattern (the streams' keys), piped into redis-cli as one XINFO
                GROUPS per stream (every group's lag and pending count).
Each measured by wait4 (tests/bench/_measure.py): wall seconds, CPU seconds and
peak RSS, children included.  qdiag's wall time is given beyond its sampling
window (the peers take one look; qdiag watches rates over the window, which
is time spent waiting, not working); its requests are the probe's own count
from the snapshot.  Prints a Markdown table (medians) with the date, the
machine and the brokers' versions; deletes everything it made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import REPO, kill_all, machine, measured, median  # noqa: E402

KAFKA = "127.0.0.1:9092"
RABBIT_API = "http://127.0.0.1:15672/api"
RABBIT_URL = "http://guest:guest@127.0.0.1:15672"
REDIS_URL = "redis://127.0.0.1:6379/14"  # a database of its own, never 0
PARTITIONS_PER_TOPIC = 20


def qdiag_cli(probe: str, url: str, window: float, workdir: Path, run: int) -> dict:
    """The whole qdiag command, measured; the probe's own figures from its snapshot."""
    from qdiag import snapshot

    snap = workdir / f"{probe}-{run}.json.gz"
    cmd = [sys.executable, "-m", "qdiag", "investigate", "--probe", probe, f"--{probe}", url, "--no-auto-detect",
           "--format", "json", "--window", f"{window:g}", "--snapshot", str(snap)]
    m = measured(cmd, cwd=workdir)
    if not snap.is_file():
        raise SystemExit(f"qdiag wrote no snapshot (exit {m['exit']}): {m['stderr'].strip()[-500:]}")
    [result] = [p for p in snapshot.load(snap)["probes"] if p["name"] == probe]
    snap.unlink()
    obs = result["observations"]
    span = (obs.get("window") or {}).get("span_s") or window
    m.update(status=result["status"], error=result["error"], beyond_window_s=m["wall_s"] - span, obs=obs)
    return m


def _row(broker: str, size: str, peer: str, qdiag_runs: list[dict], peer_runs: list[dict], requests) -> dict:
    bad = sorted({r["status"] for r in qdiag_runs} - {"ok"})
    row = {"broker": broker, "size": size, "peer": peer, "runs": len(qdiag_runs),
           "qdiag_beyond_window_s": median(r["beyond_window_s"] for r in qdiag_runs),
           "qdiag_wall_s": median(r["wall_s"] for r in qdiag_runs),
           "qdiag_cpu_s": median(r["cpu_s"] for r in qdiag_runs),
           "qdiag_rss_mb": median(r["rss_mb"] for r in qdiag_runs),
           "qdiag_requests": requests, "qdiag_statuses": bad,
           "peer_wall_s": median(p["wall_s"] for p in peer_runs),
           "peer_cpu_s": median(p["cpu_s"] for p in peer_runs),
           "peer_rss_mb": median(p["rss_mb"] for p in peer_runs),
           "peer_failures": sum(1 for p in peer_runs if p["exit"] != 0)}
    row["ratio"] = row["peer_wall_s"] / row["qdiag_beyond_window_s"] if row["qdiag_beyond_window_s"] else None
    print(f"  {broker} {size}: qdiag {row['qdiag_beyond_window_s']:.2f} s beyond the window, "
          f"peer {row['peer_wall_s']:.2f} s", file=sys.stderr)
    return row


# --- RabbitMQ -----------------------------------------------------------------------------------

def rabbitmq(sizes: list[int], runs: int, window: float, workdir: Path) -> list[dict]:
    import requests

    import bench_rabbitmq as br

    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    rows = []
    for count in sizes:
        vhost = f"qdiag-bench-{uuid.uuid4().hex[:8]}"
        try:
            print(f"rabbitmq: {count} queues in vhost {vhost}", file=sys.stderr)
            br.create(vhost, count)
            br.wait_listed(vhost, count, limit_s=600)
            time.sleep(6)  # one more statistics interval: every queue has figures
            ours, theirs = [], []
            for run in range(runs):
                ours.append(qdiag_cli("rabbitmq", RABBIT_URL, window, workdir, run))
                theirs.append(measured([ctl, "list_queues", "-q", "-p", vhost, "name", "messages_ready",
                                        "messages_unacknowledged", "consumers"], cwd=workdir))
            api = ours[-1]["obs"].get("api_requests")
            listing = ((ours[-1]["obs"].get("broker") or {}).get("listing") or {}).get("source")
            rows.append(_row("RabbitMQ", f"{count:,} queues", "rabbitmqctl list_queues", ours, theirs,
                             f"{api} HTTP ({listing} listing)" if listing else api))
        finally:
            requests.delete(f"{RABBIT_API}/vhosts/{vhost}", auth=("guest", "guest"), timeout=600)
    return rows


# --- Redis --------------------------------------------------------------------------------------

def redis_streams(sizes: list[int], runs: int, window: float, workdir: Path) -> list[dict]:
    import redis

    import bench_redis as bd

    r = redis.Redis(host="127.0.0.1", port=6379, db=14, protocol=2)
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    rows = []
    for count in sizes:
        prefix = f"qdbench-{uuid.uuid4().hex[:8]}:"
        keys: list[str] = []
        try:
            print(f"redis: {count} streams under {prefix}", file=sys.stderr)
            bd.build(r, prefix, count, 0, 0, keys)
            # The streams by their key pattern (redis-cli 7.0 has no --scan --type); pipefail: a
            # failing scan must not pass for a fast one.
            peer = ["bash", "-c", f"set -o pipefail; {cli} -n 14 --scan --pattern '{prefix}s*' "
                                  f"| sed 's/^/XINFO GROUPS /' | {cli} -n 14 | grep -c '^lag$'"]
            ours, theirs = [], []
            for run in range(runs):
                ours.append(qdiag_cli("redis", REDIS_URL, window, workdir, run))
                with open(workdir / "peer.out", "wb") as out:
                    theirs.append(measured(peer, cwd=workdir, stdout=out))
                seen = (workdir / "peer.out").read_text().strip()
                if theirs[-1]["exit"] != 0 or not seen.isdigit() or int(seen) < count:
                    raise SystemExit(f"the redis-cli peer did not read every stream's groups (exit "
                                     f"{theirs[-1]['exit']}, {seen or 'nothing'} groups): {theirs[-1]['stderr'][-300:]}")
            req = ours[-1]["obs"].get("requests") or {}
            rows.append(_row("Redis", f"{count:,} streams", "redis-cli --scan + XINFO GROUPS each", ours, theirs,
                             f"{req.get('round_trips')} round trips, {req.get('commands')} commands"))
        finally:
            bd.cleanup(r, prefix, keys, 0)
    return rows


# --- Kafka --------------------------------------------------------------------------------------

def kafka(sizes: list[int], runs: int, window: float, workdir: Path) -> list[dict]:
    rows = []
    for partitions in sizes:
        topics = max(1, partitions // PARTITIONS_PER_TOPIC)
        out = workdir / f"kafka-{partitions}.json"
        print(f"kafka: {topics} topics x {PARTITIONS_PER_TOPIC} partitions, 100 groups", file=sys.stderr)
        run = subprocess.run([sys.executable, str(REPO / "tests" / "bench" / "bench_kafka.py"), "--bootstrap", KAFKA,
                              "--topics", str(topics), "--partitions", str(PARTITIONS_PER_TOPIC), "--groups", "100",
                              "--runs", str(runs), "--window", f"{window:g}", "--json", str(out)],
                             stdout=sys.stderr, timeout=3600)
        if run.returncode != 0 or not out.is_file():
            raise SystemExit(f"bench_kafka.py failed (exit {run.returncode}) at {partitions} partitions")
        doc = json.loads(out.read_text())
        s = doc["summary"]
        wire = s.get("wire_requests") or {}
        row = {"broker": "Kafka", "size": f"{topics * PARTITIONS_PER_TOPIC:,} partitions x 100 groups",
               "peer": "kafka-consumer-groups --describe --all-groups", "runs": runs,
               "qdiag_beyond_window_s": s["qdiag_process_outside_window_s"], "qdiag_wall_s": s["qdiag_wall_s"],
               "qdiag_cpu_s": s["qdiag_cpu_s"], "qdiag_rss_mb": s["qdiag_peak_rss_mb"],
               "qdiag_requests": f"{sum(wire.values())} on the wire" if wire else None,
               "qdiag_statuses": sorted(set(s["statuses"]) - {"ok"}),
               "peer_wall_s": s["peer_wall_s"], "peer_cpu_s": s["peer_cpu_s"], "peer_rss_mb": s["peer_peak_rss_mb"],
               "peer_failures": runs - s["peer_runs_counted"], "parity_mismatches": s["parity_mismatches"]}
        row["ratio"] = row["peer_wall_s"] / row["qdiag_beyond_window_s"] if row["qdiag_beyond_window_s"] else None
        rows.append(row)
    return rows


# --- the table ----------------------------------------------------------------------------------

def versions() -> str:
    found = []
    try:
        import redis

        found.append("Redis " + redis.Redis(host="127.0.0.1", port=6379).info("server")["redis_version"])
    except Exception:  # noqa: BLE001 - a version is a nicety
        pass
    try:
        import requests

        found.append("RabbitMQ " + requests.get(f"{RABBIT_API}/overview", auth=("guest", "guest"), timeout=10,
                                                params={"columns": "rabbitmq_version"}).json()["rabbitmq_version"])
    except Exception:  # noqa: BLE001
        pass
    jars = sorted((REPO / "tests" / "rig").glob("**/kafka_*.jar")) or sorted(Path("/var/tmp/qdiag-rig").glob("**/kafka_*.jar"))
    if jars:
        found.append("Kafka " + jars[0].stem.split("-", 1)[-1])
    return ", ".join(found)


def markdown(rows: list[dict], runs: int, window: float, argv: list[str]) -> str:
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [f"Measured {day} on {machine()}; {versions()}. Medians of {runs} interleaved runs, "
             f"qdiag with a {window:g} s window. Regenerate: `python tests/bench/table.py"
             + (" " + " ".join(argv) if argv else "") + "`.",
             "",
             "| broker | size | qdiag beyond its window | peer (same data) | peer wall | peer ÷ qdiag "
             "| qdiag CPU | peer CPU | qdiag peak RSS | peer peak RSS | qdiag requests |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        notes = []
        if r["qdiag_statuses"]:
            notes.append("qdiag probe " + "/".join(r["qdiag_statuses"]))
        if r.get("peer_failures"):
            notes.append(f"peer failed {r['peer_failures']}x")
        if r.get("parity_mismatches"):
            notes.append(f"{r['parity_mismatches']} rows differ")
        ratio = "—" if not r["ratio"] else f"{r['ratio']:.1f}×" if r["ratio"] >= 1 else f"{r['ratio']:.2f}×"
        lines.append(f"| {r['broker']} | {r['size']} | {r['qdiag_beyond_window_s']:.2f} s | {r['peer']} "
                     f"| {r['peer_wall_s']:.2f} s | {ratio} | {r['qdiag_cpu_s']:.2f} s | {r['peer_cpu_s']:.2f} s "
                     f"| {r['qdiag_rss_mb']:.0f} MB | {r['peer_rss_mb']:.0f} MB | {r['qdiag_requests'] or '—'}"
                     + (f" ({'; '.join(notes)})" if notes else "") + " |")
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--only", default="kafka,rabbitmq,redis")
    ap.add_argument("--kafka-partitions", default="100,1000,5000")
    ap.add_argument("--rabbitmq-queues", default="1000,5000,20000")
    ap.add_argument("--redis-streams", default="500,2000")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - {"kafka", "rabbitmq", "redis"}
    if unknown:
        raise SystemExit(f"--only: unknown broker(s) {', '.join(sorted(unknown))}")
    workdir = Path(tempfile.mkdtemp(prefix="qdiag-bench-table-"))
    rows: list[dict] = []
    try:
        if "kafka" in chosen:
            rows += kafka(_sizes(args.kafka_partitions), args.runs, args.window, workdir)
        if "rabbitmq" in chosen:
            rows += rabbitmq(_sizes(args.rabbitmq_queues), args.runs, args.window, workdir)
        if "redis" in chosen:
            rows += redis_streams(_sizes(args.redis_streams), args.runs, args.window, workdir)
    finally:
        kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(markdown(rows, args.runs, args.window, sys.argv[1:]))


if __name__ == "__main__":
    main()
