"""Kafka: consumer groups, per-partition lag, produce/consume rates and a
Burrow-style verdict per partition and group, from offsets sampled over the window.

Read-only.  Everything goes through the admin client (ListGroups,
DescribeGroups, OffsetFetch, Metadata with topic auto-creation off,
ListOffsets), which never joins a group or commits.  The one exception is the
timestamp of the oldest unconsumed record of the worst partitions: it is read
with a KafkaConsumer that has no group id (so no group, no commits), topic
auto-creation off, assign() + seek() and a one-record fetch.

kafka-python blocks without a bound in a few places (a TLS handshake with a
listener that never answers, for one), so every client call runs in a daemon
thread that the probe stops waiting for at its own timeout.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from typing import Any, Callable

from qdiag.context import ProbeContext
from qdiag.probe import ProbeError, Option, register

from . import _kafka_facts
from . import _kafka_lag as lag

DEFAULTS: dict[str, Any] = {
    "allowed_lag": 0,            # Burrow's floor: lag at or below it is never a problem
    "read_committed": False,     # end offset = last stable offset (transactional topics)
    "samples": 3,                # offset samples over the window (at least 3)
    "timestamp_reads": 10,       # partitions (worst lag first) whose oldest unconsumed record is read; 0 = none
    "request_timeout": 5.0,      # seconds for one broker request
    "retention_margin": lag.DEFAULT_RETENTION_MARGIN,
    "underparallel_ratio": lag.DEFAULT_UNDERPARALLEL_RATIO,
    "client_id": "qdiag",
    "security_protocol": "PLAINTEXT",
    "ssl_cafile": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_check_hostname": True,
    "sasl_mechanism": None,
    "sasl_username": None,
    "sasl_password": None,
    "keep_raw": False,           # include the raw sampled offsets (for recording fixtures)
}
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Group states in which assignments are being handed out: no owner is not "unowned" then.
_REBALANCING = {"preparingrebalance", "completingrebalance", "assigning", "reconciling"}
# Seconds kept back from the deadline for assembling the observations.
_RESERVE_S = 0.5
_TIMESTAMP_BUDGET_S = 3.0


# --- options ---------------------------------------------------------------------------

OPTIONS = (
    Option("allowed_lag", "int", DEFAULTS["allowed_lag"], "Burrow's floor: lag at or below it is never a problem",
           low=0),
    Option("read_committed", "bool", DEFAULTS["read_committed"], "end offset = last stable offset (transactions)"),
    Option("samples", "int", DEFAULTS["samples"], "offset samples over the window", low=3, high=20),
    Option("timestamp_reads", "int", DEFAULTS["timestamp_reads"],
           "partitions whose oldest unconsumed record is read for seconds behind; 0 = none", low=0, high=1000),
    Option("request_timeout", "float", DEFAULTS["request_timeout"], "seconds for one broker request",
           low=0.05, high=300),
    Option("retention_margin", "float", DEFAULTS["retention_margin"],
           "share of retention left that counts as at risk", low=0.0001, high=1),
    Option("underparallel_ratio", "float", DEFAULTS["underparallel_ratio"],
           "partitions per member above which a group is under-parallel", low=0.0001, high=1e6),
    Option("client_id", "str", DEFAULTS["client_id"], "client id qdiag's requests carry"),
    Option("security_protocol", "str", DEFAULTS["security_protocol"], "how to talk to the brokers",
           choices=_PROTOCOLS),
    Option("ssl_cafile", "path", None, "CA bundle for SSL"),
    Option("ssl_certfile", "path", None, "client certificate for SSL"),
    Option("ssl_keyfile", "path", None, "client key for SSL"),
    Option("ssl_check_hostname", "bool", True, "check the broker certificate's host name"),
    Option("sasl_mechanism", "str", None, "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ..."),
    Option("sasl_username", "str", None, "SASL user"),
    Option("sasl_password", "str", None, "SASL password", secret=True),
    Option("keep_raw", "bool", False, "include the raw sampled offsets (for recording fixtures)"),
)


def _options(ctx: ProbeContext) -> dict[str, Any]:
    return dict(ctx.options)


def _client_config(defaults: dict, opts: dict, bootstrap: list[str], timeout_s: float, lifetime_s: float) -> dict:
    """Settings for a kafka-python client, keeping only the keys this version knows
    (2.x and 3.x name their timeouts differently)."""
    timeout_ms = max(100, int(timeout_s * 1000))
    wanted = {
        "bootstrap_servers": bootstrap,
        "client_id": opts["client_id"],
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
        "api_version_auto_timeout_ms": timeout_ms,
        # Idle connections are kept for the probe's lifetime at most, so none
        # outlives it and none is re-opened between samples.
        "connections_max_idle_ms": max(timeout_ms, int(lifetime_s * 1000)),
        "reconnect_backoff_max_ms": 1000,
        "security_protocol": opts["security_protocol"],
        "ssl_cafile": opts["ssl_cafile"],
        "ssl_certfile": opts["ssl_certfile"],
        "ssl_keyfile": opts["ssl_keyfile"],
        "ssl_check_hostname": opts["ssl_check_hostname"],
        "sasl_mechanism": opts["sasl_mechanism"],
        "sasl_plain_username": opts["sasl_username"],
        "sasl_plain_password": opts["sasl_password"],
    }
    return {k: v for k, v in wanted.items() if k in defaults and v is not None}


# --- bounded calls ----------------------------------------------------------------------

class _Hung(Exception):
    pass


def _bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """Run fn in a daemon thread; give up waiting after `timeout` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller as is
            box["error"] = exc

    worker = threading.Thread(target=run, name="qdiag-kafka-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _Hung()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return text if name in text else (f"{name}: {text}" if text else name)


# Failures of the connection rather than of one group or topic: asking again
# piece by piece would only multiply the wait.
_TRANSPORT_ERRORS = {"KafkaConnectionError", "NodeNotReadyError", "KafkaTimeoutError", "RequestTimedOutError",
                     "NoBrokersAvailable"}


def _transport(exc: BaseException) -> bool:
    return type(exc).__name__ in _TRANSPORT_ERRORS


def _hint(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Authorization" in name or "SaslAuthentication" in name or "Authentication" in name:
        return ("qdiag's principal needs DESCRIBE on the cluster, topics and groups; "
                "check the SASL/SSL settings in [probes.kafka]")
    if "Coordinator" in name or "LoadInProgress" in name:
        return "the group coordinator is moving or loading; run again in a few seconds"
    if name in ("NodeNotReadyError", "KafkaConnectionError", "RequestTimedOutError", "KafkaTimeoutError"):
        return "a broker did not answer: check that every broker's advertised.listeners address is reachable from here"
    if "UnsupportedVersion" in name:
        return "the broker is too old for this request"
    return "run with --debug for details"


def _count_requests(client: Any, counts: Counter) -> None:
    """Count every request a kafka-python 3.x client sends after its bootstrap
    (by wrapping its connection manager's send); a no-op where that is absent."""
    manager = getattr(client, "_manager", None)
    send = getattr(manager, "send", None)
    if send is None:
        return

    def counting_send(request, *args, **kwargs):
        counts[type(request).__name__.replace("Request", "").split("_v")[0]] += 1
        return send(request, *args, **kwargs)

    try:
        manager.send = counting_send
    except AttributeError:
        pass


def _no_auto_create(client: Any) -> bool:
    """Make sure a client's metadata requests never ask the broker to create topics.

    kafka-python 3.0 does not hand allow_auto_create_topics to the cluster
    metadata its connection manager builds, so a KafkaConsumer made with
    allow_auto_create_topics=False still sends Metadata for its assigned topics
    with auto-creation on (a topic deleted meanwhile would be re-created on a
    broker with auto.create.topics.enable).  The setting is set where it is
    read; True when it is known to be off."""
    manager = getattr(client, "_manager", None) or getattr(client, "_client", None)
    cluster = getattr(manager, "cluster", None)
    config = getattr(cluster, "config", None)
    if isinstance(config, dict) and "allow_auto_create_topics" in config:
        config["allow_auto_create_topics"] = False
        return True
    return False


# --- the admin client, wrapped ------------------------------------------------------------

class _Admin:
    """KafkaAdminClient behind bounded calls, with both API spellings (2.x / 3.x)
    normalised to plain dicts and every request counted."""

    def __init__(self, ctx: ProbeContext, opts: dict):
        import kafka  # lazy: only when the probe runs

        self.kafka = kafka
        self.ctx = ctx
        self.opts = opts
        self.target = ctx.targets.kafka
        self.label = self.target.label()
        self.bootstrap = list(self.target.bootstrap)
        self.timeout = float(opts["request_timeout"])
        self.requests: Counter = Counter()
        self.bad_groups: dict[str, str] = {}
        self._failed_offset_topics: dict[bool, dict[str, str]] = {}  # earliest? -> {topic: error}
        self.admin = None
        check = ctx.io_timeout(min(self.timeout, 3.0))
        try:  # bounded: the C resolver has no timeout of its own
            why = _bounded(lambda: _preflight(self.bootstrap, check), ctx.io_timeout(check + 0.5))
        except _Hung:
            why = f"no answer within {check:.1f}s (name resolution or TCP connect hangs; check --kafka and DNS)"
        if why:
            raise ProbeError(f"kafka {self.label}: cannot connect: {why}")
        connect_timeout = ctx.io_timeout(self.timeout)
        config = _client_config(kafka.KafkaAdminClient.DEFAULT_CONFIG, opts, self.bootstrap,
                                connect_timeout, ctx.remaining())
        try:
            self.admin = _bounded(lambda: kafka.KafkaAdminClient(**config), ctx.io_timeout(connect_timeout + 1.0))
        except _Hung:
            raise ProbeError(self._unreachable(f"no Kafka answer within {connect_timeout:.1f}s")) from None
        except Exception as exc:
            raise ProbeError(self._unreachable(_first_line(exc))) from None
        _count_requests(self.admin, self.requests)
        _no_auto_create(self.admin)  # its own requests set it off; background refreshes too

    # Diagnosis of a failed connection: only on the failure path, so it costs nothing normally.
    def _unreachable(self, what: str) -> str:
        budget = max(0.2, min(2.0, self.ctx.remaining() - _RESERVE_S))
        reason = _diagnose(self.bootstrap, budget, self.opts["security_protocol"])
        return f"kafka {self.label}: cannot connect: {reason or what}"

    @property
    def version(self) -> str | None:
        version = getattr(getattr(self.admin, "_manager", None), "broker_version", None) \
            or getattr(self.admin, "config", {}).get("api_version")
        return ".".join(str(v) for v in version) if version else None

    def call(self, what: str, fn: Callable, *args, **kwargs) -> Any:
        self.ctx.check_deadline()
        timeout = self.ctx.io_timeout(self.timeout + 1.0)
        try:
            return _bounded(lambda: fn(*args, **kwargs), timeout)
        except _Hung:
            raise ProbeError(f"kafka {self.label}: no answer to {what} within {timeout:.1f}s "
                             "(broker overloaded or unreachable; raise [probes.kafka] request_timeout)") from None

    def fail(self, what: str, exc: BaseException) -> ProbeError:
        return ProbeError(f"kafka {self.label}: {what} failed: {_first_line(exc)} ({_hint(exc)})")

    def close(self) -> None:
        if self.admin is not None:
            admin, self.admin = self.admin, None
            try:
                _bounded(admin.close, 2.0)
            except Exception:  # closing is best effort; the IO thread is a daemon
                pass

    # --- groups ---
    def list_groups(self) -> dict[str, dict]:
        admin = self.admin
        try:
            if hasattr(admin, "list_groups"):
                rows = self.call("ListGroups", admin.list_groups)
                items = [(r.get("group_id"), r.get("protocol_type"), r.get("group_state"), r.get("group_type"))
                         for r in rows]
            elif hasattr(admin, "list_consumer_groups"):
                rows = self.call("ListGroups", admin.list_consumer_groups)
                items = [(r[0], r[1] if len(r) > 1 else None, None, None) for r in rows]
            else:
                raise ProbeError(f"kafka: kafka-python {self.kafka.__version__} has no way to list groups "
                                 "(neither list_groups nor list_consumer_groups); upgrade kafka-python")
        except ProbeError:
            raise
        except Exception as exc:
            raise self.fail("listing consumer groups", exc) from None
        groups: dict[str, dict] = {}
        for gid, protocol_type, state, group_type in items:
            if gid is None:
                continue
            groups[gid] = {"state": state, "protocol_type": protocol_type or None,
                           "group_type": (group_type or "").lower() or None}
        return groups

    def describe_groups(self, group_ids: list[str]) -> dict[str, dict]:
        """gid -> normalised description, or {"error": ...} for a group whose
        description failed (kafka-python parses the reply on the client side; an
        unexpected field value raises there, and must not take the others along)."""
        if not group_ids:
            return {}
        admin = self.admin
        if hasattr(admin, "describe_groups"):
            def describe(ids):
                return admin.describe_groups(ids)
        elif hasattr(admin, "describe_consumer_groups"):
            def describe(ids):
                return {info.group: info._asdict() for info in admin.describe_consumer_groups(ids)}
        else:
            raise ProbeError(f"kafka: kafka-python {self.kafka.__version__} cannot describe groups; "
                             "upgrade kafka-python")
        def ask(ids):
            return {g: _normalise_description(d) for g, d in self.call("DescribeGroups", describe, ids).items()}

        try:
            return ask(group_ids)
        except ProbeError:
            raise
        except Exception as exc:
            if isinstance(exc, self.kafka.errors.KafkaError):  # the broker's answer, not a parsing problem
                raise self.fail("describing consumer groups", exc) from None
        answers: dict[str, dict] = {}
        for gid in group_ids:  # find which group's reply the client cannot read
            try:
                answers.update(ask([gid]))
            except ProbeError:
                raise
            except Exception as exc:
                if isinstance(exc, self.kafka.errors.KafkaError):
                    raise self.fail(f"describing group '{gid}'", exc) from None
                answers[gid] = {"error": f"describing group '{gid}' failed inside kafka-python: {_first_line(exc)}"}
        return answers

    def group_offsets(self, group_ids: list[str]) -> tuple[dict, dict]:
        """({gid: {topic: {"p": offset}}}, {gid: error}): one batched OffsetFetch
        per coordinator; a group whose fetch fails is asked alone from then on."""
        admin = self.admin
        out: dict[str, dict] = {}
        errors = {g: self.bad_groups[g] for g in group_ids if g in self.bad_groups}
        wanted = [g for g in group_ids if g not in self.bad_groups]
        if not wanted:
            return out, errors
        if hasattr(admin, "list_group_offsets"):
            def fetch(ids):
                return admin.list_group_offsets({g: None for g in ids})
        elif hasattr(admin, "list_consumer_group_offsets"):
            def fetch(ids):
                return {g: admin.list_consumer_group_offsets(g) for g in ids}
        else:
            raise ProbeError(f"kafka: kafka-python {self.kafka.__version__} cannot fetch group offsets; "
                             "upgrade kafka-python")
        try:
            answers = self.call("OffsetFetch", fetch, wanted)
        except ProbeError:
            raise
        except Exception as exc:
            if _transport(exc):
                raise self.fail("fetching committed offsets", exc) from None
            answers = {}
            for gid in wanted:  # one group's error fails the whole batch: find it
                try:
                    answers.update(self.call("OffsetFetch", fetch, [gid]))
                except ProbeError:
                    raise
                except Exception as exc:
                    if _transport(exc):
                        raise self.fail(f"fetching committed offsets of group '{gid}'", exc) from None
                    self.bad_groups[gid] = errors[gid] = f"fetching committed offsets failed: {_first_line(exc)}"
        for gid, offsets in answers.items():
            per_topic: dict[str, dict] = {}
            for tp, meta in (offsets or {}).items():
                per_topic.setdefault(tp.topic, {})[str(tp.partition)] = getattr(meta, "offset", meta)
            out[gid] = per_topic
        return out, errors

    # --- topics and offsets ---
    def metadata(self, topics: list[str]) -> dict[str, dict]:
        """topic -> {"error": None | "unknown_topic" | name, "partitions": {"p": {"leader": id}}}."""
        if not topics:
            return {}
        errors = self.kafka.errors
        try:
            described = self.call("Metadata", self.admin.describe_topics, list(topics))
        except ProbeError:
            raise
        except Exception as exc:
            raise self.fail("reading topic metadata", exc) from None
        out: dict[str, dict] = {}
        for t in described or []:
            name = t.get("name") or t.get("topic")
            code = t.get("error_code", 0)
            if code == errors.UnknownTopicOrPartitionError.errno:
                out[name] = {"error": lag.UNKNOWN_TOPIC, "partitions": {}}
                continue
            parts = {}
            for p in t.get("partitions") or []:
                index = p.get("partition_index", p.get("partition"))
                leader = p.get("leader_id", p.get("leader"))
                parts[str(index)] = {"leader": -1 if leader is None else int(leader)}
            error = None
            if code:
                error = errors.for_code(code).__name__
                if parts:  # e.g. LEADER_NOT_AVAILABLE at topic level: the partitions still say which
                    error = None
            out[name] = {"error": error, "partitions": parts}
        return out

    def partition_offsets(self, partitions: list[tuple[str, int]], *, earliest: bool) -> tuple[dict, dict]:
        """({topic: {"p": offset}}, {topic: error}) from one ListOffsets per leader.

        Log end is the high watermark, or with read_committed the last stable
        offset.  kafka-python raises for the whole call when any partition
        carries an error, so a failed call is retried per topic to keep the rest.
        """
        out: dict[str, dict] = {}
        # A topic that failed once (deleted, no leader) fails the whole batch
        # again: leave it out of later samples instead of retrying topic by
        # topic every time, which multiplies requests by the number of topics.
        failed = self._failed_offset_topics.setdefault(earliest, {})
        wanted = {t for t, _ in partitions}
        errors: dict[str, str] = {t: e for t, e in failed.items() if t in wanted}
        partitions = [(t, p) for t, p in partitions if t not in failed]
        if not partitions:
            return out, errors
        TopicPartition = self.kafka.TopicPartition
        spec = -2 if earliest else -1  # the wire sentinels for EARLIEST / LATEST
        isolation = "read_committed" if (self.opts["read_committed"] and not earliest) else "read_uncommitted"
        what = "ListOffsets (" + ("log start" if earliest else "log end") + ")"
        if not hasattr(self.admin, "list_partition_offsets"):
            return self._consumer_offsets(partitions, earliest)

        def fetch(tps):
            return self.admin.list_partition_offsets({TopicPartition(t, p): spec for t, p in tps},
                                                     isolation_level=isolation)

        def store(answer):
            for tp, value in answer.items():
                out.setdefault(tp.topic, {})[str(tp.partition)] = getattr(value, "offset", value)

        try:
            store(self.call(what, fetch, partitions))
        except ProbeError:
            raise
        except Exception as exc:
            if _transport(exc):
                raise self.fail(f"reading offsets ({what})", exc) from None
            by_topic: dict[str, list] = {}
            for t, p in partitions:
                by_topic.setdefault(t, []).append((t, p))
            for topic, tps in by_topic.items():
                try:
                    store(self.call(what, fetch, tps))
                except ProbeError:
                    raise
                except Exception as exc:
                    if _transport(exc):
                        raise self.fail(f"reading offsets ({what})", exc) from None
                    errors[topic] = failed[topic] = _first_line(exc)
        return out, errors

    def _consumer_offsets(self, partitions, earliest: bool) -> tuple[dict, dict]:
        """kafka-python 2.x: no admin ListOffsets; a group-less consumer with topic
        auto-creation off asks instead, or nothing does."""
        kafka = self.kafka
        if "allow_auto_create_topics" not in kafka.KafkaConsumer.DEFAULT_CONFIG:
            raise ProbeError(f"kafka: kafka-python {kafka.__version__} can read log-end offsets only through a "
                             "consumer that may auto-create topics; upgrade kafka-python (>= 2.1)")
        config = _client_config(kafka.KafkaConsumer.DEFAULT_CONFIG, self.opts, self.bootstrap,
                                self.ctx.io_timeout(self.timeout), self.ctx.remaining())
        config.update(group_id=None, enable_auto_commit=False, allow_auto_create_topics=False,
                      isolation_level="read_committed" if self.opts["read_committed"] else "read_uncommitted")
        tps = [kafka.TopicPartition(t, p) for t, p in partitions]

        def fetch():
            consumer = kafka.KafkaConsumer(**config)
            try:
                if not _no_auto_create(consumer):
                    raise ProbeError(f"kafka: cannot make sure kafka-python {kafka.__version__}'s consumer never "
                                     "auto-creates topics; upgrade kafka-python")
                return consumer.beginning_offsets(tps) if earliest else consumer.end_offsets(tps)
            finally:
                consumer.close()  # no group id: there is nothing to commit

        out: dict[str, dict] = {}
        try:
            answer = self.call("ListOffsets", fetch)
        except ProbeError:
            raise
        except Exception as exc:
            raise self.fail("reading partition offsets", exc) from None
        for tp, value in answer.items():
            out.setdefault(tp.topic, {})[str(tp.partition)] = value
        return out, {}

    def broker_endpoints(self) -> list[tuple[str, int]]:
        try:
            cluster = self.call("DescribeCluster", self.admin.describe_cluster)
            found = [(b.get("host"), int(b.get("port"))) for b in cluster.get("brokers") or []]
        except ProbeError:
            raise
        except Exception:
            found = []
        for address in self.bootstrap:
            host, port = address.rsplit(":", 1)
            found.append((host.strip("[]"), int(port)))
        return sorted(set(found))


def _normalise_description(d: dict) -> dict:
    members = []
    for m in d.get("members") or []:
        if not isinstance(m, dict):
            m = m._asdict() if hasattr(m, "_asdict") else vars(m)
        members.append({
            "member_id": m.get("member_id"),
            "client_id": m.get("client_id"),
            "host": m.get("client_host"),
            "group_instance_id": m.get("group_instance_id"),
            "assignment": _assignment(m.get("member_assignment")),
            "subscription": _subscription(m.get("member_metadata")),
        })
    return {
        "state": d.get("group_state", d.get("state")),
        "protocol_type": d.get("protocol_type") or None,
        "protocol": d.get("protocol_data", d.get("protocol")) or None,
        "members": members,
        "error": d.get("error") if isinstance(d.get("error"), str) else None,
    }


def _assignment(value: Any) -> dict[str, list[int]] | None:
    """A member's assignment as {topic: [partitions]}; None when it could not be decoded."""
    if value in (None, b"", ""):
        return {}
    if isinstance(value, dict) and "assigned_partitions" in value:
        return {a["topic"]: sorted(int(p) for p in a["partitions"]) for a in value["assigned_partitions"]}
    pairs = getattr(value, "assignment", None) or getattr(value, "assigned_partitions", None)
    if pairs is not None:
        out: dict[str, list[int]] = {}
        for item in pairs:
            topic, parts = (item["topic"], item["partitions"]) if isinstance(item, dict) else (item[0], item[1])
            out[topic] = sorted(int(p) for p in parts)
        return out
    return None


def _subscription(value: Any) -> list[str] | None:
    if isinstance(value, dict):
        topics = value.get("topics")
    else:
        topics = getattr(value, "subscription", None) or getattr(value, "topics", None)
    return sorted(topics) if isinstance(topics, (list, tuple, set)) else None


# --- connection diagnosis ------------------------------------------------------------------

def _api_versions_request() -> bytes:
    client = b"qdiag"
    body = struct.pack(">hhih", 18, 0, 0x51D1A6, len(client)) + client  # ApiVersions v0
    return struct.pack(">i", len(body)) + body


def _diagnose(bootstrap: list[str], budget: float, security_protocol: str) -> str | None:
    """Why none of the bootstrap servers works, in words, from plain sockets."""
    reasons = []
    per_server = max(0.2, budget / max(1, len(bootstrap)))
    for address in bootstrap:
        host, port = address.rsplit(":", 1)
        host, port = host.strip("[]"), int(port)
        reasons.append(f"{address}: {_diagnose_one(host, port, per_server, security_protocol)}")
    return "; ".join(reasons) if reasons else None


def _tcp_connect(host: str, port: int, timeout: float) -> tuple[socket.socket | None, str | None]:
    """A connected socket, or why there is none, in words."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return None, f"the name does not resolve ({exc.strerror}; check --kafka)"
    family, _, _, _, sockaddr = addresses[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(max(0.1, timeout))
    try:
        sock.connect(sockaddr)
        return sock, None
    except ConnectionRefusedError:
        reason = "connection refused (nothing listens on that port; is Kafka running? check --kafka)"
    except socket.timeout:
        reason = f"no answer to a TCP connect within {timeout:.1f}s (host down, or a firewall drops the packets)"
    except OSError as exc:
        reason = f"TCP connect failed ({exc.strerror or exc}; check --kafka and the network)"
    sock.close()
    return None, reason


def _preflight(bootstrap: list[str], timeout: float) -> str | None:
    """None when a TCP connection to some bootstrap server opens, else why not.
    Costs one TCP handshake (no Kafka request) and turns "refused" or "no such
    host" into an immediate answer instead of kafka-python's retries until its
    bootstrap timeout."""
    reasons = []
    for address in bootstrap:
        host, port = address.rsplit(":", 1)
        sock, reason = _tcp_connect(host.strip("[]"), int(port), timeout)
        if sock is not None:
            sock.close()
            return None
        reasons.append(f"{address}: {reason}")
    return "; ".join(reasons)


def _diagnose_one(host: str, port: int, timeout: float, security_protocol: str) -> str:
    deadline = time.monotonic() + timeout
    sock, reason = _tcp_connect(host, port, timeout)
    if sock is None:
        return reason
    try:
        if security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                with context.wrap_socket(sock, server_hostname=host):
                    pass
            except socket.timeout:
                return "TCP connect works but the TLS handshake got no answer (is this a Kafka TLS listener?)"
            except (ssl.SSLError, OSError) as exc:
                return (f"TLS handshake failed ({_first_line(exc)}): the listener is probably PLAINTEXT; "
                        "set [probes.kafka] security_protocol = \"PLAINTEXT\"")
            return ("TLS works but Kafka did not answer over it (check ssl_cafile / certificates, "
                    "or SASL settings in [probes.kafka])")
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(_api_versions_request())
            reply = sock.recv(8)
        except socket.timeout:
            return ("TCP connect works but nothing answers a Kafka request (not a Kafka listener, or a TLS "
                    "listener: set [probes.kafka] security_protocol = \"SSL\")")
        except OSError as exc:
            return f"the connection was reset on a Kafka request ({exc.strerror or exc}): not a Kafka listener?"
        if not reply:
            return ("the server closed the connection on a Kafka request (a TLS or SASL listener? set "
                    "[probes.kafka] security_protocol)")
        return ("the bootstrap server answers, but the cluster is unusable from here (check the brokers' "
                "advertised.listeners and the security settings)")
    finally:
        sock.close()


# --- narrowing to what the user named -------------------------------------------------------

def _missing(kind: str, named: tuple[str, ...], found: set[str], label: str, others: bool) -> list[str]:
    """Named items that do not exist.  An error when Kafka is the only system they
    can belong to (or none of them is here); otherwise they may name a RabbitMQ
    queue or a Redis key, and are just listed."""
    missing = [n for n in named if n not in found]
    if missing and (not others or len(missing) == len(named)):
        what = {"group": "consumer group", "topic": "topic"}[kind]
        hint = ("list them with kafka-consumer-groups --list; check --group" if kind == "group"
                else "topic names are case-sensitive; check --queue")
        names = ", ".join(f"'{m}'" for m in missing)
        raise ProbeError(f"kafka {label}: {what}{'s' if len(missing) > 1 else ''} {names} "
                         f"{'do' if len(missing) > 1 else 'does'} not exist ({hint})")
    return missing


# --- record timestamps ------------------------------------------------------------------------

def _read_timestamps(ctx: ProbeContext, opts: dict, admin: _Admin,
                     wanted: list[tuple[str, int, int, int]]) -> tuple[dict, dict]:
    """The first consumable record at or after each wanted offset, read without a
    group: {topic: {"p": [{"read_at", "offset", "timestamp_ms", "timestamp_type"}]}}.

    `wanted` holds (topic, partition, offset to read at, log end).  Offsets of
    one partition are read one after the other (a partition is assigned once).
    When the fetch position reaches the log end without a record, everything
    from the offset on is transaction markers (or aborted records under
    read_committed): recorded as {"read_at", "offset": None, "skipped_to": position}.
    """
    kafka = admin.kafka
    info: dict[str, Any] = {"requested": len(wanted), "read": 0}
    if not wanted:
        return {}, info
    if "allow_auto_create_topics" not in kafka.KafkaConsumer.DEFAULT_CONFIG:
        info["skipped"] = "this kafka-python cannot turn off topic auto-creation for a consumer"
        return {}, info
    budget = min(_TIMESTAMP_BUDGET_S, ctx.remaining() - _RESERVE_S)
    if budget < 0.3:
        info["skipped"] = "no time left before the deadline"
        return {}, info
    io = max(0.2, min(admin.timeout, budget))
    config = _client_config(kafka.KafkaConsumer.DEFAULT_CONFIG, opts, admin.bootstrap, io, budget + 1.0)
    config.update({
        "group_id": None, "enable_auto_commit": False, "allow_auto_create_topics": False,
        "auto_offset_reset": "none", "max_poll_records": 1, "fetch_max_bytes": 1,
        "max_partition_fetch_bytes": 1, "fetch_max_wait_ms": 100, "fetch_min_bytes": 1,
        "enable_incremental_fetch_sessions": False, "metrics_enabled": False,
        "isolation_level": "read_committed" if opts["read_committed"] else "read_uncommitted",
    })
    config = {k: v for k, v in config.items() if k in kafka.KafkaConsumer.DEFAULT_CONFIG}
    found: dict[str, dict] = {}
    stop_at = time.monotonic() + budget

    def read() -> None:
        consumer = kafka.KafkaConsumer(**config)
        if not _no_auto_create(consumer):
            consumer.close()
            info["skipped"] = "cannot make sure this kafka-python's consumer never auto-creates topics"
            return
        _count_requests(consumer, admin.requests)
        queues: dict = {}
        for topic, p, offset, end in sorted(wanted):
            queues.setdefault(kafka.TopicPartition(topic, p), []).append((offset, end))
        current = {tp: todo.pop(0) for tp, todo in queues.items()}

        def done(tp, entry) -> None:
            found.setdefault(tp.topic, {}).setdefault(str(tp.partition), []).append(entry)
            if queues[tp]:
                current[tp] = queues[tp].pop(0)
                consumer.seek(tp, current[tp][0])
            else:
                del current[tp]
                consumer.pause(tp)

        try:
            consumer.assign(list(current))
            for tp, (offset, _) in current.items():
                consumer.seek(tp, offset)
            while current and time.monotonic() < stop_at:
                wait_ms = int(max(50, min(300, (stop_at - time.monotonic()) * 1000)))
                for tp, records in consumer.poll(timeout_ms=wait_ms, max_records=1).items():
                    if tp in current and records and records[0].offset >= current[tp][0]:
                        rec = records[0]
                        done(tp, {"read_at": current[tp][0], "offset": rec.offset, "timestamp_ms": rec.timestamp,
                                  "timestamp_type": "log_append" if rec.timestamp_type == 1 else "create"})
                for tp in list(current):
                    position = consumer.position(tp)
                    if position is not None and position >= current[tp][1]:
                        # Fetched up to the log end and found nothing to consume.
                        done(tp, {"read_at": current[tp][0], "offset": None, "skipped_to": position})
        finally:
            consumer.close()  # no group id: there is nothing to commit

    try:
        _bounded(read, budget + 1.0)
    except _Hung:
        info["error"] = f"record reads did not finish within {budget:.1f}s"
    except Exception as exc:
        info["error"] = _first_line(exc)
    info["read"] = sum(len(v) for parts in found.values() for v in parts.values())
    return found, info


# --- discovery ------------------------------------------------------------------------------

def discover(ctx: ProbeContext) -> list[dict]:
    """Local processes behind the groups' members: the member's host (as the
    broker saw it) and a local socket from that address to a broker."""
    if ctx.targets.kafka is None:
        return []
    from qdiag.localsockets import pids_connected_to

    opts = _options(ctx)
    admin = _Admin(ctx, opts)
    try:
        listed = admin.list_groups()
        chosen = [g for g in (ctx.targets.groups or sorted(listed)) if g in listed
                  and listed[g].get("group_type") != "consumer"]
        described = admin.describe_groups(chosen)
        brokers = admin.broker_endpoints()
    finally:
        admin.close()
    by_port: dict[int, set[str]] = {}
    for host, port in brokers:
        try:
            infos = _bounded(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                             ctx.io_timeout(1.0))
        except (_Hung, OSError):
            continue
        by_port.setdefault(port, set()).update(info[4][0] for info in infos)
    members_by_host: dict[str, list[tuple[str, dict]]] = {}
    for gid, d in described.items():
        for member in d.get("members") or []:
            if member.get("host"):
                members_by_host.setdefault(member["host"].lstrip("/"), []).append((gid, member))
    own = os.getpid()
    found: dict[int | str, dict] = {}
    for host, members in members_by_host.items():
        pids: set[int] = set()
        for port, ips in by_port.items():
            pids |= pids_connected_to(ips, port, client_ip=host)
        pids.discard(own)
        clients = sorted({m.get("client_id") or "?" for _, m in members})
        subjects = sorted({f"kafka:{t}/{gid}" for gid, m in members for t in (m.get("assignment") or {})}
                          or {f"kafka:*/{gid}" for gid, _ in members})
        via = "kafka member " + ", ".join(clients)
        if not pids:
            # On another host: Kafka names only its address, which a fleet's snapshots are matched with.
            found.setdefault(f"peer:{host}", {"pid": None, "peer": host, "via": via, "subject": ",".join(subjects)})
            continue
        if len(pids) > 1:
            via += f" (one of {len(pids)} local processes connected to the broker from {host})"
        for pid in sorted(pids):
            found.setdefault(pid, {"pid": pid, "via": via, "subject": ",".join(subjects)})
    return list(found.values())


# --- collect ----------------------------------------------------------------------------------

@register("kafka", description="Kafka consumer groups: lag per partition, produce and consume rates, "
                              "Burrow-style status, seconds behind, retention risk",
          needs=("kafka",), timeout_s=15, discover=discover, options=OPTIONS, diagnosis=_kafka_facts.CONTRIBUTION)
def collect(ctx: ProbeContext) -> dict:
    opts = _options(ctx)
    admin = _Admin(ctx, opts)
    try:
        return _collect(ctx, opts, admin)
    finally:
        admin.close()


def _collect(ctx: ProbeContext, opts: dict, admin: _Admin) -> dict:
    label = admin.label
    targets = ctx.targets
    obs: dict[str, Any] = ctx.partial
    obs.update({"bootstrap": label, "broker_version": admin.version,
                "client": f"kafka-python {admin.kafka.__version__}",
                "end_offset": "last_stable" if opts["read_committed"] else "high_watermark",
                "allowed_lag": opts["allowed_lag"]})

    # Which groups.  ListGroups first: a named group that is not there is reported
    # without ever asking for its coordinator (FindCoordinator can create
    # __consumer_offsets on a fresh cluster).
    listed = admin.list_groups()
    not_found: dict[str, list] = {}
    named_groups = tuple(targets.groups)
    if named_groups:
        missing = _missing("group", named_groups, set(listed), label, others=targets.redis is not None)
        if missing:
            not_found["groups"] = missing
        chosen = [g for g in named_groups if g in listed]
    else:
        chosen = sorted(listed)
    named_topics = tuple(targets.queues)
    topics_meta: dict[str, dict] = {}
    if named_topics:
        topics_meta.update(admin.metadata(list(named_topics)))
        existing = {t for t, m in topics_meta.items() if m.get("error") != lag.UNKNOWN_TOPIC}
        missing = _missing("topic", named_topics, existing, label,
                           others=targets.rabbitmq is not None or targets.redis is not None)
        if missing:
            not_found["topics"] = missing
        wanted_topics = {t for t in named_topics if t in existing}
    else:
        wanted_topics = None
    if not_found:
        obs["not_found"] = not_found

    if not chosen and not wanted_topics:
        # Nothing to sample: no need to sit through the window.
        obs.update(groups=[], queues=[], note="no consumer groups on this cluster")
        obs["requests"] = _requests(admin)
        return obs
    groups = _describe(admin, {g: listed[g] for g in chosen})
    obs["groups"] = [{"group": g, "state": d.get("state")} for g, d in groups.items()]

    def keep(topic: str) -> bool:
        return wanted_topics is None or topic in wanted_topics

    # Sampling: committed offsets first, then log ends, as kafka-consumer-groups
    # does (a commit landing in between cannot make lag negative).
    group_ids = list(groups)

    def take() -> dict:
        committed, errors = admin.group_offsets(group_ids) if group_ids else ({}, {})
        committed = {g: {t: parts for t, parts in per.items() if keep(t)} for g, per in committed.items()}
        topics = {t for per in committed.values() for t in per}
        for g in group_ids:
            for member in groups[g].get("members") or []:
                topics.update(t for t in (member.get("assignment") or {}) if keep(t))
        topics.update(wanted_topics or ())
        unknown = sorted(t for t in topics if t not in topics_meta)
        if unknown:
            topics_meta.update(admin.metadata(unknown))
        leaders = [(t, int(p)) for t in sorted(topics)
                   for p, info in (topics_meta.get(t) or {}).get("partitions", {}).items()
                   if not topics_meta[t].get("error") and info["leader"] >= 0]
        log_end, end_errors = admin.partition_offsets(leaders, earliest=False)
        return {"wall": ctx.wall_clock(), "committed": committed, "committed_errors": errors,
                "log_end": log_end, "log_end_errors": end_errors}

    raw_samples = []
    for t, sample in ctx.sample(take, count=opts["samples"]):
        sample["t"] = round(t, 3)
        raw_samples.append(sample)
        obs["samples_taken"] = len(raw_samples)
    if not raw_samples:
        raise ProbeError(f"kafka {label}: the deadline passed before the first offset sample "
                         "(raise [probes.kafka] timeout or shorten --window)")

    # Groups that were only narrowed in by topic: drop the ones with nothing there.
    if wanted_topics is not None and not named_groups:
        involved = {g for s in raw_samples for g, per in s["committed"].items() if per}
        involved.update(g for g in group_ids for m in groups[g].get("members") or []
                        if any(keep(t) for t in (m.get("assignment") or {})))
        groups = {g: d for g, d in groups.items() if g in involved}
        for gdesc in groups.values():
            for member in gdesc.get("members") or []:
                if member.get("assignment") is not None:
                    member["assignment"] = {t: p for t, p in member["assignment"].items() if keep(t)}

    last = raw_samples[-1]
    partitions = sorted({(t, int(p)) for t, parts in last["log_end"].items() for p in parts})
    log_start, start_errors = ({}, {})
    if ctx.remaining() > _RESERVE_S + 0.5:
        try:
            log_start, start_errors = admin.partition_offsets(partitions, earliest=True)
        except ProbeError as exc:
            start_errors = {"*": str(exc)}

    wanted = _worst_partitions(raw_samples, log_start, opts["timestamp_reads"], opts["read_committed"])
    stamps, stamp_info = _read_timestamps(ctx, opts, admin, wanted)

    raw = {
        "groups": {g: _raw_group(d) for g, d in groups.items()},
        "topics": topics_meta,
        "samples": raw_samples,
        "log_start": log_start,
        "record_timestamps": stamps,
        "read_wall": ctx.wall_clock(),
        "named_topics": sorted(wanted_topics or ()),
    }
    result = lag.analyse(raw, allowed_lag=opts["allowed_lag"], now_wall=last["wall"],
                         retention_margin=float(opts["retention_margin"]),
                         underparallel_ratio=float(opts["underparallel_ratio"]))
    obs.update(result)
    obs.pop("samples_taken", None)  # progress for a timed-out run; "window" says it now
    obs["window"] = {"samples": len(raw_samples),
                     "span_s": round(raw_samples[-1]["t"] - raw_samples[0]["t"], 3)}
    obs["timestamp_reads"] = stamp_info
    if start_errors:
        obs["log_start_errors"] = start_errors
    obs["requests"] = _requests(admin)
    if opts["keep_raw"]:
        obs["raw"] = raw
    return obs


def _requests(admin: _Admin) -> dict:
    return {"total": sum(admin.requests.values()), "by_api": dict(sorted(admin.requests.items())),
            "not_counted": "connection set-up: ApiVersions per connection and one bootstrap Metadata per client"}


def _describe(admin: _Admin, listed: dict[str, dict]) -> dict[str, dict]:
    """Describe the classic groups; consumer-protocol (KIP-848) groups are kept
    with the state ListGroups gave, since DescribeGroups cannot describe them."""
    classic = [g for g, info in listed.items() if info.get("group_type") != "consumer"]
    described = admin.describe_groups(classic)
    out: dict[str, dict] = {}
    failed = []
    for gid, info in listed.items():
        base = {"state": info.get("state"), "group_type": info.get("group_type"),
                "protocol_type": info.get("protocol_type"), "protocol": None,
                "describable": True, "note": None, "error": None, "members": None}
        d = described.get(gid)
        kip848 = info.get("group_type") == "consumer" or (
            d is not None and "not a classic group" in (d.get("error") or ""))
        if kip848:
            base.update(describable=False, note=(
                "consumer-protocol group (KIP-848): kafka-python speaks only the classic DescribeGroups, "
                "so its members and assignments cannot be described by this client; state is from ListGroups"))
        elif d is None or (d.get("error") and d.get("members") is None):
            base.update(describable=False, error=(d or {}).get("error") or "no description returned")
            failed.append(gid)
        else:
            base.update(state=d.get("state") or info.get("state"), protocol=d.get("protocol"),
                        protocol_type=d.get("protocol_type") or info.get("protocol_type"),
                        members=d.get("members"), error=d.get("error"))
            if d.get("error"):
                base["describable"] = False
                base["members"] = None
                failed.append(gid)
        out[gid] = base
    if out and len(failed) == len(out):
        # Nothing describable at all: one clear error rather than a report of unknowns.
        error = out[failed[0]]["error"]
        if not error.startswith("describing group"):
            error = f"describing group '{failed[0]}' failed: {error}"
        raise ProbeError(f"kafka {admin.label}: {error} (if this is a parsing problem with this broker's reply, "
                         "run with --debug and report it)")
    return out


def _raw_group(d: dict) -> dict:
    group = dict(d)
    if (group.get("state") or "").lower() in _REBALANCING and group.get("members") is not None:
        # Mid-rebalance assignments are empty or stale: owners are unknown, not absent.
        group["describable"] = False
        group["note"] = group.get("note") or f"rebalancing ({group['state']}): partition owners are unknown"
    return group


def _worst_partitions(samples: list[dict], log_start: dict, limit: int,
                      small_first: bool) -> list[tuple[str, int, int, int]]:
    """The (topic, partition, committed offset, log end) whose oldest unconsumed
    record gets read: the `limit` biggest lags of the last sample.  Groups at the
    same offset share one read.

    With read_committed (the user says the topics are transactional) small lags
    whose committed offset did not move come first, for up to half the reads:
    such a lag is often nothing but a transaction marker.
    """
    if limit <= 0 or not samples:
        return []
    last = samples[-1]
    candidates: dict[tuple[str, int, int], tuple[int, int, bool]] = {}
    for gid, per_topic in last["committed"].items():
        for topic, parts in per_topic.items():
            for p, committed in parts.items():
                end = (last["log_end"].get(topic) or {}).get(p)
                start = (log_start.get(topic) or {}).get(p)
                if committed is None or committed < 0 or end is None or committed >= end:
                    continue
                if start is not None and committed < start:
                    continue  # deleted already: nothing to read there
                stuck = all(((s["committed"].get(gid) or {}).get(topic) or {}).get(p) == committed for s in samples)
                key = (topic, int(p), committed)
                previous = candidates.get(key)
                candidates[key] = (end - committed, end, stuck or bool(previous and previous[2]))
    ranked = sorted(candidates.items(), key=lambda kv: (-kv[1][0], kv[0]))
    chosen: list = []
    if small_first:
        chosen = [kv for kv in reversed(ranked) if kv[1][2] and kv[1][0] <= 2][: max(1, limit // 2)]
    for kv in ranked:
        if len(chosen) >= limit:
            break
        if kv not in chosen:
            chosen.append(kv)
    return [(topic, p, committed, end) for (topic, p, committed), (_, end, _) in chosen]
