"""Benchmark: the Kafka probe at 1,000 partitions and 100 consumer groups.  Not collected by pytest.

    python tests/bench/bench_kafka.py [--bootstrap 127.0.0.1:9092] [--topics 50] [--partitions 20]
                                      [--groups 100] [--live-groups 5] [--members 2]
                                      [--window 5] [--runs 3] [--plain] [--json FILE] [--profile FILE]
                                      [--every-row]

Builds, under a unique name prefix, `--topics` x `--partitions` partitions
with a few records each, and `--groups` consumer groups with committed
offsets (written by this script through the admin API: the benchmark may
write, qdiag may not).  Every group commits on one topic, every fourth on a
second one too; lags of 0 to 2 per partition, every tenth group caught up.
`--live-groups` of them also get `--members` live members each (in a child
process: KafkaConsumers that join, pause every partition and never commit),
subscribed to their committed topic and to one more without commits (rows
with no committed offset); the others stay Empty.

Then, `--runs` times, interleaved so that load from other work on the machine
falls on both sides alike:
  * qdiag: `python -m qdiag investigate --probe kafka --kafka B --no-auto-detect
    --format json --window W --snapshot S` in a child process, which also counts
    every request on the wire (all kafka-python clients, discovery and
    connection set-up included; `--plain` runs exactly that command instead,
    without the count); from the snapshot: the probe's own request
    counts by API, its duration and window span; from wait4: CPU seconds and
    peak RSS;
  * the peer: `tests/rig/kafka-consumer-groups --bootstrap-server B --describe
    --all-groups` (Kafka's own tool), timed the same way.  Its rows for this
    run's groups are compared with qdiag's (the benchmark's state does not move
    while it is measured, so they must agree exactly): the rows qdiag's snapshot
    keeps in full one by one, the ones it only counts ([probes.kafka]
    partition_rows) by their number per group and topic; `--every-row` keeps
    them all and compares each.
Reports medians and the ratio qdiag / peer, and the broker's health (heap,
RSS, open files, new lines in its log) before and after.  Deletes every topic
and group it made, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import REPO, children, kill as _kill, kill_all, measured, median  # noqa: E402

PEER_TOOL = REPO / "tests" / "rig" / "kafka-consumer-groups"

# Runs qdiag's CLI with a counter on kafka-python's one request path
# (KafkaConnection._send_request), written to argv[1] at exit.
WIRE_COUNTER = r"""
import atexit, collections, json, sys
from kafka.net import connection
counts = collections.Counter()
send = connection.KafkaConnection._send_request
def counting(self, request, *args, **kwargs):
    counts[type(request).__name__.replace("Request", "").split("_v")[0]] += 1
    return send(self, request, *args, **kwargs)
connection.KafkaConnection._send_request = counting
out = sys.argv[1]
sys.argv = ["qdiag"] + sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps(dict(counts))))
from qdiag.cli import main
main()
"""

# --- the broker's health ------------------------------------------------------------------------

def broker_pid(port: int) -> int | None:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "kafka.Kafka" not in " ".join(proc.info["cmdline"] or []):
                continue
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in proc.net_connections("tcp")):
                return proc.pid
        except (psutil.Error, OSError):
            continue
    return None


def broker_log(pid: int | None) -> Path | None:
    """The file the broker writes its stdout to (the rig starts it with its log there)."""
    if pid is None:
        return None
    try:
        target = Path(os.readlink(f"/proc/{pid}/fd/1"))
    except OSError:
        return None
    return target if target.is_file() else None


def broker_health(pid: int | None, admin) -> dict:
    out: dict = {}
    began = time.perf_counter()
    try:
        admin.describe_cluster()
        out["describe_cluster_ms"] = round((time.perf_counter() - began) * 1000, 1)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        out["describe_cluster_error"] = f"{type(exc).__name__}: {exc}"
    if pid is None:
        return out
    import psutil

    try:
        proc = psutil.Process(pid)
        out.update(alive=proc.is_running(), rss_mb=round(proc.memory_info().rss / 2**20),
                   open_files=proc.num_fds(), threads=proc.num_threads())
    except psutil.Error as exc:
        out["process_error"] = str(exc)
        return out
    try:  # jcmd attaches read-only; it only prints the heap's figures
        text = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True,
                              timeout=30).stdout
        m = re.search(r"heap\s+total (\d+)K, used (\d+)K", text)
        if m:
            out.update(heap_total_mb=round(int(m.group(1)) / 1024), heap_used_mb=round(int(m.group(2)) / 1024))
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def new_log_lines(path: Path | None, since: int) -> dict:
    if path is None:
        return {"log": None}
    with open(path, "rb") as fh:
        fh.seek(since)
        text = fh.read().decode(errors="replace")
    lines = text.splitlines()
    bad = [line for line in lines if re.search(r"\b(ERROR|WARN|FATAL)\b|OutOfMemory|Exception", line)]
    return {"log": str(path), "new_lines": len(lines), "error_or_warn_lines": len(bad), "examples": bad[:5]}


# --- building the state -------------------------------------------------------------------------

class Bench:
    def __init__(self, bootstrap: str, prefix: str):
        from kafka import KafkaAdminClient

        self.bootstrap = bootstrap
        self.prefix = prefix
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="qdiag-bench",
                                      request_timeout_ms=60000)
        self.topics: list[str] = []
        self.groups: list[str] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.members: subprocess.Popen | None = None

    def create_topics(self, count: int, partitions: int, batch: int = 10) -> None:
        names = [f"{self.prefix}-t{i:03d}" for i in range(count)]
        for start in range(0, count, batch):
            chunk = names[start:start + batch]
            self.topics.extend(chunk)  # recorded first: a half-done request is still cleaned up
            self.admin.create_topics({n: {"num_partitions": partitions, "replication_factor": 1} for n in chunk})
        deadline = time.monotonic() + 180
        while True:
            metas = self.admin.describe_topics(names)
            ready = sum(1 for m in metas if m.get("error_code") == 0 and len(m.get("partitions") or []) == partitions
                        and all(p["leader_id"] >= 0 for p in m["partitions"]))
            if ready == count:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"only {ready} of {count} topics have a leader for every partition after 180 s")
            time.sleep(0.5)

    def produce(self, partitions: int) -> int:
        """1 to 5 records per partition; returns how many."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, acks=1, client_id="qdiag-bench")
        sent = 0
        try:
            for ti, topic in enumerate(self.topics):
                for p in range(partitions):
                    n = 1 + (ti * partitions + p) % 5
                    for i in range(n):
                        producer.send(topic, b"bench-%d" % i, partition=p)
                    self.ends[(topic, p)] = n
                    sent += n
            producer.flush(timeout=120)
        finally:
            producer.close(timeout=30)
        return sent

    def plan(self, groups: int) -> dict[str, list[str]]:
        """group -> the topics it commits on."""
        t = len(self.topics)
        out = {}
        for gi in range(groups):
            chosen = [self.topics[gi % t]]
            if gi % 4 == 0 and t > 1:
                chosen.append(self.topics[(gi + 7) % t])
            out[f"{self.prefix}-g{gi:03d}"] = chosen
        return out

    def live_plan(self, plan: dict[str, list[str]], count: int) -> dict[str, list[str]]:
        """`count` groups spread over the plan -> the topics their members subscribe to:
        the one they committed on, and one without commits."""
        if count <= 0:
            return {}
        t = len(self.topics)
        step = max(1, len(plan) // count)
        out = {}
        for gi, (group, topics) in enumerate(plan.items()):
            if gi % step == min(1, step - 1) and len(out) < count:
                out[group] = list(dict.fromkeys([topics[0], self.topics[(gi + t // 2) % t]]))
        return out

    def commit(self, plan: dict[str, list[str]], partitions: int) -> int:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        rows = 0
        for gi, (group, topics) in enumerate(plan.items()):
            self.groups.append(group)
            offsets = {}
            for topic in topics:
                for p in range(partitions):
                    end = self.ends[(topic, p)]
                    lag = 0 if gi % 10 == 0 else min(end, (gi + p) % 3)
                    offsets[TopicPartition(topic, p)] = OffsetAndMetadata(end - lag, "", -1)
            errors = self.admin.alter_group_offsets(group, offsets)
            failed = {tp: e for tp, e in errors.items() if getattr(e, "errno", 0)}
            if failed:
                raise SystemExit(f"committing offsets for {group} failed: {failed}")
            rows += len(offsets)
        return rows

    def start_members(self, live: dict[str, list[str]], members: int) -> None:
        """Members in a child process; they leave their groups when its stdin closes."""
        spec = json.dumps({"bootstrap": self.bootstrap, "groups": live, "members": members,
                           "prefix": self.prefix})
        self.members = subprocess.Popen([sys.executable, __file__, "--_members", spec], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        children.append(self.members)
        line = _readline(self.members.stdout, 120)
        if line.strip() != "ready":
            states = {g: (d.get("group_state"), len(d.get("members") or []))
                      for g, d in self.admin.describe_groups(list(live)).items()}
            raise SystemExit(f"the member process did not get its assignments within 120 s "
                             f"(exit {self.members.poll()}; groups: {states})")
        deadline = time.monotonic() + 60
        while True:  # Stable, every member with partitions
            described = self.admin.describe_groups(list(live))
            ok = all(d.get("group_state") == "Stable" and len(d.get("members") or []) == members
                     and all((m.get("member_assignment") or {}).get("assigned_partitions") for m in d["members"])
                     for d in described.values())
            if ok:
                return
            if time.monotonic() > deadline:
                raise SystemExit("the live groups did not settle (Stable, all members assigned) within 60 s")
            time.sleep(0.5)

    def stop_members(self) -> None:
        proc, self.members = self.members, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(45)
        except (subprocess.TimeoutExpired, OSError):
            _kill(proc)
            proc.wait(10)
        if proc in children:
            children.remove(proc)

    def cleanup(self) -> list[str]:
        """Deletes this run's groups and topics; returns what could not be deleted."""
        problems = []
        self.stop_members()
        deadline = time.monotonic() + 90  # a killed member lasts until its session times out
        pending = list(self.groups)
        why: object = None
        while pending:
            try:
                existing = {g["group_id"] for g in self.admin.list_groups()}
                pending = [g for g in pending if g in existing]
                if pending:
                    result = self.admin.delete_groups(pending)  # group -> "OK" or an error's name
                    pending = [g for g, err in result.items() if err not in ("OK", "GroupIdNotFoundError")]
                    why = sorted({result[g] for g in pending})
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                why = f"{type(exc).__name__}: {exc}"
            if pending:
                if time.monotonic() > deadline:
                    problems.append(f"{len(pending)} groups not deleted after 90 s ({why})")
                    break
                time.sleep(1)
        if self.topics:
            for start in range(0, len(self.topics), 25):
                try:
                    self.admin.delete_topics(self.topics[start:start + 25], raise_errors=False)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"topics: {type(exc).__name__}: {exc}")
            deadline = time.monotonic() + 120
            while True:
                left = [t for t in self.admin.list_topics() if t.startswith(self.prefix)]
                if not left:
                    break
                if time.monotonic() > deadline:
                    problems.append(f"{len(left)} topics still listed after 120 s")
                    break
                time.sleep(1)
        left_groups = [g["group_id"] for g in self.admin.list_groups() if g["group_id"].startswith(self.prefix)]
        if left_groups:
            problems.append(f"{len(left_groups)} groups still listed")
        return problems


def _readline(stream, timeout: float) -> str:
    box = [""]
    reader = threading.Thread(target=lambda: box.__setitem__(0, stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0]


def members_main(spec_json: str) -> None:
    """The child process: `members` KafkaConsumers per group, partitions paused, no commits.
    Stops (members leave their groups) when stdin closes, at any point."""
    import logging

    from kafka import KafkaConsumer

    logging.basicConfig(level=logging.ERROR)
    spec = json.loads(spec_json)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    assigned = threading.Semaphore(0)
    threads = []

    def member(group: str, topics: list[str], index: int) -> None:
        # Short session and rebalance timeouts: should this process be killed,
        # the broker drops its members (and the groups can be deleted) soon.
        consumer = KafkaConsumer(*topics, bootstrap_servers=spec["bootstrap"], group_id=group,
                                 client_id=f"{spec['prefix']}-member-{index}", enable_auto_commit=False,
                                 allow_auto_create_topics=False, auto_offset_reset="earliest",
                                 session_timeout_ms=10000, heartbeat_interval_ms=2000, max_poll_interval_ms=60000)
        counted = False
        try:
            while not stop.is_set():
                consumer.poll(timeout_ms=500, max_records=1, update_offsets=False)
                assignment = consumer.assignment()
                for tp in assignment - consumer.paused():  # a rebalance hands partitions back unpaused
                    consumer.pause(tp)
                if assignment:
                    if not counted:
                        counted = True
                        assigned.release()
                    stop.wait(0.5)  # poll returns at once with everything paused
        finally:
            consumer.close(autocommit=False)  # leaves the group

    n = 0
    for group, topics in spec["groups"].items():
        for _ in range(spec["members"]):
            t = threading.Thread(target=member, args=(group, topics, n), daemon=True)
            t.start()
            threads.append(t)
            n += 1
    for _ in range(n):
        while not assigned.acquire(timeout=0.5):
            if stop.is_set():
                break
    if not stop.is_set():
        print("ready", flush=True)
    stop.wait()
    for t in threads:
        t.join(20)


# --- measuring ------------------------------------------------------------------------------------

def run_qdiag(bootstrap: str, window: float, workdir: Path, run: int, plain: bool) -> dict:
    snap = workdir / f"snapshot-{run}.json.gz"
    wire = workdir / f"wire-{run}.json"
    report = workdir / f"report-{run}.json"
    qdiag = [sys.executable, "-m", "qdiag"] if plain else [sys.executable, "-c", WIRE_COUNTER, str(wire)]
    cmd = qdiag + qdiag_args(bootstrap, window, workdir, snap)
    with open(report, "wb") as out:
        m = measured(cmd, cwd=workdir, stdout=out)  # cwd: no stray ./qdiag.toml
    if not snap.is_file():
        raise SystemExit(f"qdiag wrote no snapshot (exit {m['exit']}): {m['stderr'].strip()[-500:]}")
    from qdiag import snapshot

    doc = snapshot.load(snap)
    [result] = [p for p in doc["probes"] if p["name"] == "kafka"]
    obs = result["observations"]
    m.update(status=result["status"], error=result["error"], duration_s=result["duration_s"],
             span_s=(obs.get("window") or {}).get("span_s"), samples=(obs.get("window") or {}).get("samples"),
             requests=obs.get("requests"), wire=json.loads(wire.read_text()) if wire.is_file() else None,
             snapshot_bytes=snap.stat().st_size, snapshot_json_bytes=len(json.dumps(doc)),
             report_bytes=report.stat().st_size, groups_seen=len(obs.get("groups") or []),
             queues=len(obs.get("queues") or []), timestamp_reads=obs.get("timestamp_reads"), obs=obs)
    for path in (snap, wire, report):
        path.unlink(missing_ok=True)
    return m


EVERY_ROW = False  # --every-row


def qdiag_args(bootstrap: str, window: float, workdir: Path, snap: Path) -> list[str]:
    args = ["investigate", "--probe", "kafka", "--kafka", bootstrap, "--no-auto-detect", "--format", "json",
            "--window", f"{window:g}", "--snapshot", str(snap)]
    if EVERY_ROW:
        # Every partition row in the snapshot, not only the ones showing a problem: the
        # parity check then compares each one with the peer's.
        config = workdir / "every-row.toml"
        config.write_text("[probes.kafka]\npartition_rows = 1000000\n")
        args += ["--config", str(config)]
    return args


def profile_qdiag(bootstrap: str, window: float, workdir: Path, out: Path) -> None:
    """One more qdiag run under cProfile; prints where its time outside the window goes."""
    import pstats

    snap = workdir / "snapshot-profile.json.gz"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "qdiag"] + qdiag_args(bootstrap, window, workdir, snap)
    m = measured(cmd, cwd=workdir)
    print(f"profiled run: wall {m['wall_s']:.2f} s, cpu {m['cpu_s']:.2f} s (profile in {out})")
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(30)
    snap.unlink(missing_ok=True)


def run_peer(bootstrap: str, workdir: Path, run: int) -> dict:
    out = workdir / f"peer-{run}.txt"
    with open(out, "wb") as fh:
        m = measured([str(PEER_TOOL), "--bootstrap-server", bootstrap, "--describe", "--all-groups"],
                     cwd=workdir, stdout=fh)
    m["text"] = out.read_text(errors="replace")
    out.unlink(missing_ok=True)
    return m


def peer_rows(text: str, prefix: str) -> dict[tuple[str, str, int], tuple]:
    """(group, topic, partition) -> (committed, log end, lag, owned) from --describe output ('-' is None)."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) < 6 or not cells[0].startswith(prefix) or not cells[2].isdigit():
            continue
        group, topic, partition, current, end, lag = cells[:6]
        consumer = cells[6] if len(cells) > 6 else "-"

        def num(cell):
            return None if cell == "-" else int(cell)

        rows[(group, topic, int(partition))] = (num(current), num(end), num(lag), consumer != "-")
    return rows


def qdiag_rows(obs: dict, prefix: str) -> tuple[dict[tuple[str, str, int], tuple], dict[tuple[str, str], int]]:
    """The rows the snapshot keeps in full, and the rows it only counts (per group and topic)."""
    rows, counted = {}, {}
    for g in obs.get("groups") or []:
        if not g["group"].startswith(prefix):
            continue
        for r in g.get("partitions") or []:
            rows[(g["group"], r["topic"], r["partition"])] = (r["committed"], r["log_end"], r["lag"],
                                                              r.get("owner") is not None)
        for topic, summary in (g.get("partitions_summarised") or {}).items():
            counted[(g["group"], topic)] = summary["rows"]
    return rows, counted


def compare(qdiag: tuple[dict, dict], peer: dict, peer_run: dict) -> dict:
    """Rows kept in full must equal the peer's; rows only counted must add up to the peer's
    rows of that group and topic."""
    ours, counted = qdiag
    if peer_run["exit"] != 0 or ((ours or counted) and not peer):
        # --all-groups describes every group on the cluster; one that another
        # user deletes meanwhile can make the tool print nothing and still exit 0.
        said = [line.strip() for line in (peer_run["stderr"] + peer_run["text"]).splitlines()
                if re.search(r"error|exception", line, re.I)]
        return {"rows_qdiag": len(ours), "rows_peer": 0, "mismatches": None,
                "skipped": f"the peer (exit {peer_run['exit']}) printed no rows for this run's groups "
                           f"({said[0] if said else 'no error shown'}); not compared, its time left out"}
    peer_count: dict[tuple[str, str], int] = {}
    for g, t, _ in peer:
        peer_count[(g, t)] = peer_count.get((g, t), 0) + 1
    differ = sorted(k for k in set(ours) | set(peer)
                    if ours.get(k) != peer.get(k) and not (k not in ours and (k[0], k[1]) in counted))
    kept_count: dict[tuple[str, str], int] = {}
    for g, t, _ in ours:
        kept_count[(g, t)] = kept_count.get((g, t), 0) + 1
    miscounted = sorted(k for k in counted if kept_count.get(k, 0) + counted[k] != peer_count.get(k, 0))
    return {"rows_qdiag": len(ours), "rows_counted": sum(counted.values()), "rows_peer": len(peer),
            "mismatches": len(differ) + len(miscounted),
            "examples": [{"row": list(k), "qdiag": ours.get(k), "peer": peer.get(k)} for k in differ[:5]]
            + [{"group_topic": list(k), "qdiag_rows": kept_count.get(k, 0) + counted[k],
                "peer_rows": peer_count.get(k, 0)} for k in miscounted[:5]]}


# --- main ---------------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--_members":
        members_main(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=20, help="per topic")
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--live-groups", type=int, default=5, help="groups that also get live members")
    ap.add_argument("--members", type=int, default=2, help="members per live group")
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plain", action="store_true",
                    help="run `python -m qdiag` as is, without counting the requests on the wire")
    ap.add_argument("--json", help="also write the full results to this file")
    ap.add_argument("--profile", help="after the runs, run qdiag once more under cProfile, writing this file")
    ap.add_argument("--every-row", action="store_true",
                    help="keep every partition row in qdiag's snapshot ([probes.kafka] partition_rows) and compare "
                         "each with the peer's; by default qdiag runs as users get it")
    args = ap.parse_args()
    global EVERY_ROW
    EVERY_ROW = args.every_row

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    port = int(args.bootstrap.rsplit(":", 1)[1])
    prefix = f"qdbench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="qdiag-bench-kafka-"))
    bench = Bench(args.bootstrap, prefix)
    pid = broker_pid(port)
    log_path = broker_log(pid)
    log_start = log_path.stat().st_size if log_path else 0
    results: dict = {"prefix": prefix, "topics": args.topics, "partitions": args.topics * args.partitions,
                     "groups": args.groups, "window_s": args.window, "broker_pid": pid, "health": {}}
    results["health"]["before"] = broker_health(pid, bench.admin)
    print(f"broker pid {pid}, log {log_path}; before: {results['health']['before']}")
    try:
        began = time.perf_counter()
        bench.create_topics(args.topics, args.partitions)
        created = time.perf_counter() - began
        records = bench.produce(args.partitions)
        plan = bench.plan(args.groups)
        committed_rows = bench.commit(plan, args.partitions)
        live = bench.live_plan(plan, args.live_groups)
        if live:
            bench.start_members(live, args.members)
        built = time.perf_counter() - began
        results.update(build_s=round(built, 1), create_topics_s=round(created, 1), records=records,
                       committed_rows=committed_rows, live_groups=len(live), live_members=len(live) * args.members)
        results["health"]["built"] = broker_health(pid, bench.admin)
        print(f"built {args.topics} topics / {args.topics * args.partitions} partitions (created in {created:.1f} s), "
              f"{records} records, {len(plan)} groups with {committed_rows} committed partitions, "
              f"{len(live)} of them with {args.members} live members each, in {built:.1f} s; "
              f"broker: {results['health']['built']}")

        runs, peers, parity = [], [], []
        for run in range(args.runs):
            q = run_qdiag(args.bootstrap, args.window, workdir, run, args.plain)
            p = run_peer(args.bootstrap, workdir, run)
            parity.append(compare(qdiag_rows(q.pop("obs"), prefix), peer_rows(p["text"], prefix), p))
            p.pop("text")
            # A probe that timed out has no window span: the nominal window stands in.
            span = q["span_s"] if q["span_s"] is not None else args.window
            q.update(outside_window_s=q["duration_s"] - span, process_outside_window_s=q["wall_s"] - span)
            runs.append(q)
            peers.append(p)
            req = q["requests"] or {}
            print(f"run {run + 1}: qdiag wall {q['wall_s']:.2f} s (probe {q['duration_s']:.2f} s, window span "
                  f"{q['span_s']} s, probe outside it {q['outside_window_s']:.2f} s), cpu {q['cpu_s']:.2f} s, "
                  f"rss {q['rss_mb']:.0f} MB, status {q['status']}{' (' + q['error'] + ')' if q['error'] else ''}, "
                  f"exit {q['exit']}, {q['samples']} samples, {q['groups_seen']} groups, {q['queues']} queue records")
            wire = f"{sum(q['wire'].values())} {q['wire']}" if q["wire"] is not None else "not counted (--plain)"
            print(f"       probe requests {req.get('total')} {req.get('by_api')}; on the wire (all clients, "
                  f"discovery and set-up too) {wire}")
            print(f"       snapshot {q['snapshot_bytes'] / 1024:.0f} KB gz ({q['snapshot_json_bytes'] / 1e6:.1f} MB "
                  f"JSON), report {q['report_bytes'] / 1024:.0f} KB; timestamp reads {q['timestamp_reads']}")
            print(f"       peer kafka-consumer-groups --describe --all-groups: wall {p['wall_s']:.2f} s, "
                  f"cpu {p['cpu_s']:.2f} s, rss {p['rss_mb']:.0f} MB; parity on this run's groups: "
                  f"{parity[-1]['rows_qdiag']} rows in full + {parity[-1].get('rows_counted', 0)} counted "
                  f"vs {parity[-1]['rows_peer']}, "
                  + (parity[-1]["skipped"] if "skipped" in parity[-1] else
                     f"{parity[-1]['mismatches']} mismatches {parity[-1]['examples'] or ''}"))
        if args.profile:
            profile_qdiag(args.bootstrap, args.window, workdir, Path(args.profile).resolve())
        complete = [p for p, c in zip(peers, parity) if "skipped" not in c]
        if not complete:
            raise SystemExit("kafka-consumer-groups never described this run's groups: " + parity[-1]["skipped"])
        summary = {
            "statuses": sorted(r["status"] for r in runs),
            "qdiag_wall_s": median(r["wall_s"] for r in runs),
            "qdiag_probe_duration_s": median(r["duration_s"] for r in runs),
            "qdiag_outside_window_s": median(r["outside_window_s"] for r in runs),
            "qdiag_process_outside_window_s": median(r["process_outside_window_s"] for r in runs),
            "qdiag_cpu_s": median(r["cpu_s"] for r in runs),
            "qdiag_peak_rss_mb": median(r["rss_mb"] for r in runs),
            "snapshot_kb": median(r["snapshot_bytes"] / 1024 for r in runs),
            "probe_requests": runs[-1]["requests"],
            "wire_requests": runs[-1]["wire"],
            "peer_wall_s": median(p["wall_s"] for p in complete),
            "peer_cpu_s": median(p["cpu_s"] for p in complete),
            "peer_peak_rss_mb": median(p["rss_mb"] for p in complete),
            "peer_runs_counted": len(complete),
            "parity_mismatches": sum(c["mismatches"] for c in parity if "skipped" not in c),
            "parity_compared_runs": sum(1 for c in parity if "skipped" not in c),
        }
        summary.update(
            ratio_wall_qdiag_over_peer=summary["qdiag_wall_s"] / summary["peer_wall_s"],
            ratio_outside_window_over_peer_wall=summary["qdiag_process_outside_window_s"] / summary["peer_wall_s"],
            ratio_cpu_qdiag_over_peer=summary["qdiag_cpu_s"] / summary["peer_cpu_s"])
        results.update(runs=runs, peer=[{**{k: v for k, v in p.items() if k != "stderr"},
                                         "stderr_tail": p["stderr"].strip().splitlines()[-3:]} for p in peers],
                       parity=parity, summary=summary)
        results["health"]["after_runs"] = broker_health(pid, bench.admin)
        print(f"median over {args.runs} runs (statuses {summary['statuses']}): qdiag wall "
              f"{summary['qdiag_wall_s']:.2f} s with a {args.window:g} s window (probe "
              f"{summary['qdiag_probe_duration_s']:.2f} s, {summary['qdiag_outside_window_s']:.2f} s of it outside "
              f"the window; the whole process {summary['qdiag_process_outside_window_s']:.2f} s outside it), "
              f"cpu {summary['qdiag_cpu_s']:.2f} s, peak rss {summary['qdiag_peak_rss_mb']:.0f} MB, "
              f"snapshot {summary['snapshot_kb']:.0f} KB; peer ({len(complete)} complete runs) wall "
              f"{summary['peer_wall_s']:.2f} s, cpu {summary['peer_cpu_s']:.2f} s, "
              f"rss {summary['peer_peak_rss_mb']:.0f} MB")
        print(f"qdiag / peer: wall {summary['ratio_wall_qdiag_over_peer']:.2f}x, "
              f"outside-window {summary['ratio_outside_window_over_peer_wall']:.2f}x of the peer's wall, "
              f"cpu {summary['ratio_cpu_qdiag_over_peer']:.2f}x; parity mismatches {summary['parity_mismatches']} "
              f"over {summary['parity_compared_runs']} compared runs")
        print(f"broker after the runs: {results['health']['after_runs']}")
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        results["interrupted"] = True
    finally:
        kill_all(keep=(bench.members,))
        problems = bench.cleanup()
        results["cleanup_problems"] = problems
        results["health"]["after_cleanup"] = broker_health(pid, bench.admin)
        results["broker_log"] = new_log_lines(log_path, log_start)
        bench.admin.close()
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()
        print(f"cleaned up ({'; '.join(problems) or 'nothing left'}); broker: {results['health']['after_cleanup']}; "
              f"its log: {results['broker_log']}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if results.get("interrupted"):
        sys.exit(130)


if __name__ == "__main__":
    main()
