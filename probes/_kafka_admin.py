"""kafka-python's admin client for the Kafka probe: bounded calls, both API
spellings (2.x / 3.x) normalised to plain dicts, every request counted, topic
auto-creation kept off.  Read-only: ListGroups, DescribeGroups, OffsetFetch,
Metadata, ListOffsets, DescribeCluster (and, on kafka-python 2.x only,
ListOffsets through a group-less consumer)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from qdiag.context import ProbeContext
from qdiag.endpoints import norm_ip
from qdiag.probe import ProbeError

from . import _kafka_lag as lag
from ._kafka_calls import Hung, bounded, first_line, hint, is_transport
from ._kafka_preflight import diagnose, preflight

# Seconds kept back from the deadline for assembling the observations.
RESERVE_S = 0.5


def client_config(defaults: dict, opts: dict, bootstrap: list[str], timeout_s: float, lifetime_s: float) -> dict:
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


def count_requests(client: Any, counts: Counter) -> None:
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


def no_auto_create(client: Any) -> bool:
    """Make sure a client's metadata requests never ask the broker to create topics.

    kafka-python 3.0 does not hand allow_auto_create_topics to the cluster
    metadata its connection manager builds, so a KafkaConsumer made with
    allow_auto_create_topics=False still sends Metadata for its assigned topics
    with auto-creation on (a topic deleted meanwhile would be re-created on a
    broker with auto.create.topics.enable).  The setting is set where it is
    read; True when it is known to be off."""
    config = cluster_config(client)
    if config is not None and "allow_auto_create_topics" in config:
        config["allow_auto_create_topics"] = False
        return True
    return False


def cluster_config(client: Any) -> dict | None:
    """The settings of a client's cluster metadata (kafka-python 3.0 builds it with
    its own defaults, not the client's), or None where that is not reachable."""
    manager = getattr(client, "_manager", None) or getattr(client, "_client", None)
    config = getattr(getattr(manager, "cluster", None), "config", None)
    return config if isinstance(config, dict) else None


class Admin:
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
            why = bounded(lambda: preflight(self.bootstrap, check), ctx.io_timeout(check + 0.5))
        except Hung:
            why = f"no answer within {check:.1f}s (name resolution or TCP connect hangs; check --kafka and DNS)"
        if why:
            raise ProbeError(f"kafka {self.label}: cannot connect: {why}")
        connect_timeout = ctx.io_timeout(self.timeout)
        config = client_config(kafka.KafkaAdminClient.DEFAULT_CONFIG, opts, self.bootstrap,
                                connect_timeout, ctx.remaining())
        try:
            self.admin = bounded(lambda: kafka.KafkaAdminClient(**config), ctx.io_timeout(connect_timeout + 1.0))
        except Hung:
            raise ProbeError(self._unreachable(f"no Kafka answer within {connect_timeout:.1f}s")) from None
        except Exception as exc:
            raise ProbeError(self._unreachable(first_line(exc))) from None
        count_requests(self.admin, self.requests)
        no_auto_create(self.admin)  # its own requests set it off; background refreshes too

    # Diagnosis of a failed connection: only on the failure path, so it costs nothing normally.
    def _unreachable(self, what: str) -> str:
        budget = max(0.2, min(2.0, self.ctx.remaining() - RESERVE_S))
        reason = diagnose(self.bootstrap, budget, self.opts["security_protocol"])
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
            return bounded(lambda: fn(*args, **kwargs), timeout)
        except Hung:
            raise ProbeError(f"kafka {self.label}: no answer to {what} within {timeout:.1f}s "
                             "(broker overloaded or unreachable; raise [probes.kafka] request_timeout)") from None

    def fail(self, what: str, exc: BaseException) -> ProbeError:
        return ProbeError(f"kafka {self.label}: {what} failed: {first_line(exc)} ({hint(exc)})")

    def close(self) -> None:
        if self.admin is not None:
            admin, self.admin = self.admin, None
            try:
                bounded(admin.close, 2.0)
            except Exception:  # closing is best effort; the IO thread is a daemon
                pass

    def local_endpoints(self) -> set[tuple[str, int]] | None:
        """(ip, port) this client's open connections leave from, so that its own
        sockets are not taken for a member's; None where kafka-python's internals
        differ (best effort: connections are read from its connection manager)."""
        conns = getattr(getattr(self.admin, "_manager", None), "_conns", None)
        if not isinstance(conns, dict):
            return None
        out = set()
        try:
            for conn in list(conns.values()):
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    ip, port = transport.getHost()[:2]
                    out.add((norm_ip(ip), int(port)))
        except (AttributeError, OSError, TypeError, ValueError):
            return None
        return out

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
            return {g: normalise_description(d) for g, d in self.call("DescribeGroups", describe, ids).items()}

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
                answers[gid] = {"error": f"describing group '{gid}' failed inside kafka-python: {first_line(exc)}"}
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
            if is_transport(exc):
                raise self.fail("fetching committed offsets", exc) from None
            answers = {}
            for gid in wanted:  # one group's error fails the whole batch: find it
                try:
                    answers.update(self.call("OffsetFetch", fetch, [gid]))
                except ProbeError:
                    raise
                except Exception as exc:
                    if is_transport(exc):
                        raise self.fail(f"fetching committed offsets of group '{gid}'", exc) from None
                    self.bad_groups[gid] = errors[gid] = f"fetching committed offsets failed: {first_line(exc)}"
        for gid, offsets in answers.items():
            per_topic: dict[str, dict] = {}
            for tp, meta in (offsets or {}).items():
                per_topic.setdefault(tp.topic, {})[str(tp.partition)] = getattr(meta, "offset", meta)
            out[gid] = per_topic
        return out, errors

    # --- topics and offsets ---
    def topic_names(self) -> list[str]:
        """Every topic's name (one Metadata request for all topics: it creates nothing)."""
        try:
            return sorted(self.call("Metadata", self.admin.list_topics) or [])
        except ProbeError:
            raise
        except Exception as exc:
            raise self.fail("listing topics", exc) from None

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

        def attempt(tps) -> BaseException | None:
            """None when answered; the error when the broker refused these partitions."""
            try:
                store(self.call(what, fetch, tps))
                return None
            except ProbeError:
                raise
            except Exception as exc:
                if is_transport(exc):
                    raise self.fail(f"reading offsets ({what})", exc) from None
                return exc

        if attempt(partitions) is not None:
            by_topic: dict[str, list] = {}
            for t, p in partitions:
                by_topic.setdefault(t, []).append((t, p))
            for topic, tps in by_topic.items():
                refused = attempt(tps)
                if refused is not None:
                    errors[topic] = failed[topic] = first_line(refused)
        return out, errors

    def _consumer_offsets(self, partitions, earliest: bool) -> tuple[dict, dict]:
        """kafka-python 2.x: no admin ListOffsets; a group-less consumer with topic
        auto-creation off asks instead, or nothing does."""
        kafka = self.kafka
        if "allow_auto_create_topics" not in kafka.KafkaConsumer.DEFAULT_CONFIG:
            raise ProbeError(f"kafka: kafka-python {kafka.__version__} can read log-end offsets only through a "
                             "consumer that may auto-create topics; upgrade kafka-python (>= 2.1)")
        config = client_config(kafka.KafkaConsumer.DEFAULT_CONFIG, self.opts, self.bootstrap,
                                self.ctx.io_timeout(self.timeout), self.ctx.remaining())
        config.update(group_id=None, enable_auto_commit=False, allow_auto_create_topics=False,
                      isolation_level="read_committed" if self.opts["read_committed"] else "read_uncommitted")
        tps = [kafka.TopicPartition(t, p) for t, p in partitions]

        def fetch():
            consumer = kafka.KafkaConsumer(**config)
            try:
                if not no_auto_create(consumer):
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


def normalise_description(d: dict) -> dict:
    members = []
    for m in d.get("members") or []:
        if not isinstance(m, dict):
            m = m._asdict() if hasattr(m, "_asdict") else vars(m)
        members.append({
            "member_id": m.get("member_id"),
            "client_id": m.get("client_id"),
            "host": m.get("client_host"),
            "group_instance_id": m.get("group_instance_id"),
            "assignment": decode_assignment(m.get("member_assignment")),
            "subscription": decode_subscription(m.get("member_metadata")),
            "generation": member_generation(m.get("member_metadata")),
        })
    return {
        "state": d.get("group_state", d.get("state")),
        "protocol_type": d.get("protocol_type") or None,
        "protocol": d.get("protocol_data", d.get("protocol")) or None,
        "members": members,
        "error": d.get("error") if isinstance(d.get("error"), str) else None,
    }


def decode_assignment(value: Any) -> dict[str, list[int]] | None:
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


def decode_subscription(value: Any) -> list[str] | None:
    if isinstance(value, dict):
        topics = value.get("topics")
    else:
        topics = getattr(value, "subscription", None) or getattr(value, "topics", None)
    return sorted(topics) if isinstance(topics, (list, tuple, set)) else None


def member_generation(value: Any) -> int | None:
    """The generation a member says it last held (ConsumerProtocolSubscription v2+,
    sent by the Java client; -1 or absent otherwise)."""
    generation = value.get("generation_id") if isinstance(value, dict) else getattr(value, "generation_id", None)
    return generation if isinstance(generation, int) and not isinstance(generation, bool) and generation >= 0 else None
