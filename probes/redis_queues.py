"""Redis: streams and their consumer groups, list-based job queues (Celery,
RQ, Sidekiq, Dramatiq, and any list named with --queue), memory and
eviction, blocked clients.

Read-only.  Every command qdiag sends reads: SCAN, TYPE, EXISTS, SSCAN,
SISMEMBER, XINFO, XPENDING, XRANGE (one entry), LLEN, LINDEX, HLEN, HGET,
HMGET, ZCARD, ZCOUNT, ZRANGE, GET, DBSIZE, INFO, TIME, CLIENT ID, CLIENT
LIST, MEMORY DOCTOR.  The handshake is AUTH and SELECT only: qdiag sets no
connection name (CLIENT SETNAME would only label its own connection, but
"sends nothing that changes server state" is simpler to check) and turns off
redis-py's CLIENT SETINFO where the client allows it.  Reads still refresh
a key's LRU/LFU access time, as any reader does.

One connection, raw replies (no client-side reply parsing: the shapes are
checked in probes/_redis_parse.py against recorded replies), commands
pipelined in batches so 2,000 streams cost a few round trips per sample.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
from typing import Any, Callable

from qdiag.context import DeadlineReached
from qdiag.probe import NotApplicable, ProbeError, Option, register

from . import _redis_facts
from . import _redis_parse as rp

DEFAULTS: dict[str, float | int] = {
    "samples": 3,                # samples over the window (>= 2 for rates)
    "scan_count": 1000,          # SCAN ... COUNT per call
    "max_scan_keys": 100_000,    # keys walked per SCAN pass before discovery stops
    "max_streams": 5000,         # streams looked at
    "max_queues": 2000,          # list-based job queues looked at
    "max_detailed_groups": 5000,  # groups (most work first) that get XINFO CONSUMERS, XPENDING, XRANGE
    "max_pending_sampled_groups": 200,  # of those, groups whose pending entries are sampled
    "pending_sample": 100,       # entries read by XPENDING key group - + N (delivery counts)
    "poison_deliveries": 3,      # delivery count that makes a pending entry a poison candidate
    "active_idle_s": 60,         # a consumer idle longer than this is not "recently active"
    "pipeline_batch": 500,       # commands per round trip
    "call_timeout_s": 5.0,       # per round trip, never past the probe deadline
    "connect_timeout_s": 3.0,
    "doctor_chars": 2000,        # MEMORY DOCTOR text kept
    "max_listed": 50,            # consumers per group, blocked clients, poison entries listed
    "max_set_members": 1000,     # members read from registry sets (rq:queues, queues, bindings)
}

# Commands whose call rates say something about queue traffic server-wide.
_QUEUE_COMMANDS = (
    "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "blpop", "brpop", "lmove", "blmove",
    "rpoplpush", "brpoplpush", "lmpop", "blmpop", "xadd", "xreadgroup", "xack", "xclaim",
    "xautoclaim", "xdel", "xtrim", "evalsha", "eval", "fcall",
)
_KEEP_INFO = (
    "redis_version", "redis_mode", "role", "uptime_in_seconds", "connected_clients", "maxclients",
    "blocked_clients", "used_memory", "used_memory_peak", "used_memory_rss", "maxmemory",
    "maxmemory_policy", "mem_fragmentation_ratio", "evicted_keys", "rejected_connections",
    "total_commands_processed", "expired_keys", "total_error_replies", "loading",
)


# ---------------------------------------------------------------------------
# Options


_HELP = {
    "samples": "samples over the window", "scan_count": "SCAN ... COUNT per call",
    "max_scan_keys": "keys walked per SCAN pass", "max_streams": "streams looked at",
    "max_queues": "list-based job queues looked at",
    "max_detailed_groups": "groups (most work first) that get XINFO CONSUMERS, XPENDING, XRANGE",
    "max_pending_sampled_groups": "groups whose pending entries are sampled",
    "pending_sample": "entries read by XPENDING per group",
    "poison_deliveries": "delivery count that makes a pending entry a poison candidate",
    "active_idle_s": "a consumer idle longer than this is not recently active",
    "pipeline_batch": "commands per round trip", "call_timeout_s": "seconds per round trip",
    "connect_timeout_s": "seconds to connect", "doctor_chars": "MEMORY DOCTOR text kept",
    "max_listed": "consumers per group, blocked clients, poison entries listed",
    "max_set_members": "members read from registry sets",
}
OPTIONS = tuple(
    Option(key, "float" if isinstance(default, float) else "int", default, _HELP[key],
           low=2 if key == "samples" else (0.05 if isinstance(default, float) else 1),
           high=20 if key == "samples" else None)
    for key, default in DEFAULTS.items())


def _options(ctx) -> tuple[dict[str, Any], list[str]]:
    return {key: ctx.options[key] for key in DEFAULTS}, []


# ---------------------------------------------------------------------------
# The connection


class _Link:
    """One Redis connection: raw replies, pipelined batches, round trips and
    commands counted, every read bounded by what is left of the deadline."""

    def __init__(self, ctx, target, *, connect_timeout_s: float, call_timeout_s: float, batch: int = 500):
        self.ctx = ctx
        self.target = target
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.batch_size = max(1, int(batch))
        self.round_trips = 0
        self.commands = 0
        self.used: set[str] = set()  # distinct command names sent, e.g. "XINFO|GROUPS"
        self.conn = None
        self._read_takes_timeout = False

    def open(self) -> None:
        try:
            # Lazy: redis-py is imported only when a Redis target is probed.
            from redis.backoff import NoBackoff
            from redis.connection import Connection, SSLConnection
            from redis.retry import Retry
        except ImportError:
            raise ProbeError("the 'redis' Python package is not installed (pip install redis)") from None
        cls = SSLConnection if self.target.tls else Connection
        timeout = self.ctx.io_timeout(self.connect_timeout_s)
        kwargs: dict[str, Any] = {
            "host": self.target.host, "port": self.target.port, "db": self.target.db,
            "username": self.target.username, "password": self.target.password,
            "socket_timeout": self.ctx.io_timeout(self.call_timeout_s), "socket_connect_timeout": timeout,
            # A retry would multiply the wait on a port that never answers.
            "retry": Retry(NoBackoff(), 0), "retry_on_timeout": False, "health_check_interval": 0,
        }
        accepted = _init_params(cls)
        if "protocol" in accepted:
            kwargs["protocol"] = 2
        if "driver_info" in accepted:
            kwargs["driver_info"] = None  # no CLIENT SETINFO in the handshake
        elif "lib_name" in accepted:
            kwargs["lib_name"] = None
            kwargs["lib_version"] = None
        self.conn = cls(**{k: v for k, v in kwargs.items() if k in accepted or k in ("host", "port")})
        self._read_takes_timeout = "timeout" in inspect.signature(self.conn.read_response).parameters
        try:
            self.conn.connect()
        except Exception as exc:  # redis-py raises several families; all become one line
            self.close()
            raise ProbeError(explain(exc, self.target, timeout, stage="connect")) from None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.disconnect()
            except Exception:
                pass

    def batch(self, commands: list[tuple]) -> list[Any]:
        """Send commands pipelined (batch_size per round trip); a server error
        for one command comes back in its place as a ResponseError."""
        from redis.exceptions import ResponseError

        out: list[Any] = []
        for start in range(0, len(commands), self.batch_size):
            part = commands[start:start + self.batch_size]
            self.ctx.check_deadline()
            try:
                self.conn.send_packed_command(self.conn.pack_commands(part), check_health=False)
                self.round_trips += 1
                self.commands += len(part)
                self.used.update(_command_name(c) for c in part)
                for _ in part:
                    try:
                        out.append(self._read())
                    except ResponseError as exc:
                        out.append(exc)
            except DeadlineReached:
                raise
            except Exception as exc:
                self.close()
                raise ProbeError(explain(exc, self.target, self.ctx.io_timeout(self.call_timeout_s),
                                         stage="read")) from None
        return out

    def call(self, *args) -> Any:
        reply = self.batch([args])[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _read(self) -> Any:
        timeout = self.ctx.io_timeout(self.call_timeout_s)
        if self._read_takes_timeout:
            return self.conn.read_response(disable_decoding=True, timeout=timeout)
        return self.conn.read_response(disable_decoding=True)


_CONTAINERS = {"XINFO", "CLIENT", "MEMORY", "CONFIG", "OBJECT"}


def _command_name(cmd: tuple) -> str:
    name = str(cmd[0]).upper()
    if name in _CONTAINERS and len(cmd) > 1:
        return f"{name}|{str(cmd[1]).upper()}"
    return name


def _init_params(cls) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            names.update(p for p in inspect.signature(init).parameters if p not in ("self", "args", "kwargs"))
        except (TypeError, ValueError):
            continue
    return names


def explain(exc: BaseException, target, timeout: float, *, stage: str) -> str:
    """One line for the user: what failed, where, the likely fix.  Never the password."""
    where = target.label().replace("redis://", "rediss://") if target.tls else target.label()
    raw = " ".join(str(exc).split())
    low = raw.lower()
    kind = type(exc).__name__
    if "wrongpass" in low or "invalid username-password" in low or "invalid password" in low:
        msg = f"{where}: authentication failed (wrong username or password); check the credentials in the --redis URL"
    elif "without any password configured" in low:
        msg = (f"{where}: the URL gives a password but the server has none set for that user; "
               "remove it from --redis, or add the username that owns it")
    elif "noauth" in low or "authentication required" in low:
        msg = f"{where}: the server requires a password; give it in the URL (redis://:PASSWORD@host:port/db)"
    elif "noperm" in low or "no permissions" in low:
        msg = f"{where}: the user may not run a command qdiag needs ({_first_words(raw)}); grant read commands (+@read +info +client|list)"
    elif "db index is out of range" in low or "invalid database" in low:
        msg = f"{where}: database {target.db} does not exist on this server; check the /N at the end of the URL"
    elif "refused" in low:
        msg = f"{where}: connection refused; is Redis running there, and is the port right?"
    elif "name or service not known" in low or "nodename nor servname" in low or "temporary failure in name resolution" in low:
        msg = f"{where}: cannot resolve host '{target.host}'; check the host name"
    elif kind == "TimeoutError" and target.tls and (stage == "connect" or "connecting" in low):
        msg = (f"{where}: no TLS handshake within {timeout:.3g}s; the port may speak plain Redis "
               "(use redis:// instead of rediss://) or be firewalled")
    elif kind == "TimeoutError" and "connecting" in low:
        msg = f"{where}: no TCP connection within {timeout:.3g}s; host unreachable or port filtered"
    elif kind == "TimeoutError":
        msg = (f"{where}: connected, but no reply within {timeout:.3g}s; the port accepts connections but does "
               "not answer like Redis (wrong port, a proxy, or a stuck server)")
    elif "ssl" in low or "tls" in low or "certificate" in low or "wrong version number" in low:
        msg = (f"{where}: TLS failed ({_first_words(raw)}); if the port speaks plain Redis use redis://, "
               "otherwise check the certificate")
    elif "closed by server" in low or "connection reset" in low:
        hint = "if the server expects TLS use rediss://; otherwise check protected-mode and maxclients"
        msg = f"{where}: the server closed the connection; {hint}"
    elif "protocol error" in low or "invalidresponse" in kind.lower():
        msg = f"{where}: the reply is not Redis protocol ({_first_words(raw)}); is this the Redis port?"
    else:
        msg = f"{where}: cannot talk to Redis ({kind}: {_first_words(raw)})"
    if target.password:
        msg = msg.replace(target.password, "***")
    return msg


def _first_words(raw: str, limit: int = 120) -> str:
    return rp.clip(raw, limit) or ""


# ---------------------------------------------------------------------------
# Discovery of keys


def _is_error(reply: Any) -> bool:
    return isinstance(reply, Exception)


class _Run:
    def __init__(self, ctx, target, opts: dict[str, Any], link: _Link, notes: list[str]):
        self.ctx = ctx
        self.target = target
        self.opts = opts
        self.link = link
        self.notes = notes
        self.errors: dict[tuple, str] = {}
        self.own_id: str | None = None
        self.dbsize: int | None = None

    # -- keys ---------------------------------------------------------------

    def scan(self, passes: dict[str, tuple[str, str | None]]) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
        """Run several SCAN ... TYPE passes side by side (one pipeline per
        step), each stopping at max_scan_keys.  passes: {label: (type, match)}."""
        count = int(self.opts["scan_count"])
        max_calls = self.scan_call_budget()
        cursors = {label: b"0" for label in passes}
        found: dict[str, dict[bytes, None]] = {label: {} for label in passes}
        calls = {label: 0 for label in passes}
        active = list(passes)
        while active:
            commands = []
            for label in active:
                type_name, match = passes[label]
                args: list[Any] = ["SCAN", cursors[label]]
                if match:
                    args += ["MATCH", match]
                args += ["COUNT", count, "TYPE", type_name]
                commands.append(tuple(args))
            replies = self.link.batch(commands)
            still = []
            for label, reply in zip(active, replies):
                if _is_error(reply):
                    raise _ScanTypeUnsupported(str(reply))
                calls[label] += 1
                cursor, keys = reply[0], reply[1]
                for key in keys:
                    found[label][bytes(key)] = None
                cursors[label] = cursor
                if cursor in (b"0", "0", 0):
                    continue
                if calls[label] >= max_calls:
                    continue
                still.append(label)
            active = still
        info = {}
        for label in passes:
            complete = cursors[label] in (b"0", "0", 0)
            info[label] = {"scan_calls": calls[label], "found": len(found[label]), "complete": complete}
            if not complete:
                self.notes.append(
                    f"discovery of {label} stopped after {calls[label]} SCAN calls in a database of {self.dbsize} keys "
                    f"(max_scan_keys={int(self.opts['max_scan_keys'])}); some may be missing: raise it, "
                    "or name the queues with --queue")
        return {label: list(keys) for label, keys in found.items()}, info

    def scan_call_budget(self) -> int:
        """SCAN calls per pass.  COUNT counts hash-table buckets, not keys, and
        the table can be twice the key count (more while it rehashes): a
        database within max_scan_keys gets room to finish; a bigger one is
        walked for about max_scan_keys and the cut is noted."""
        count = int(self.opts["scan_count"])
        limit = self.opts["max_scan_keys"]
        if self.dbsize is not None and self.dbsize <= limit:
            return max(1, math.ceil(4 * max(self.dbsize, count) / count)) + 2
        return max(1, math.ceil(limit / count))

    def scan_untyped(self, passes: dict[str, tuple[str, str | None]]) -> tuple[dict[str, list[bytes]], dict[str, Any]]:
        """Redis before 6.0 has no SCAN ... TYPE: one untyped pass, TYPE pipelined."""
        import fnmatch

        count = int(self.opts["scan_count"])
        max_calls = self.scan_call_budget()
        cursor, calls, seen = b"0", 0, {}
        while True:
            cursor, keys = self.link.call("SCAN", cursor, "COUNT", count)
            calls += 1
            types = self.link.batch([("TYPE", k) for k in keys])
            for key, t in zip(keys, types):
                if not _is_error(t):
                    seen[bytes(key)] = rp.text(t)
            if cursor in (b"0", "0", 0) or calls >= max_calls:
                break
        complete = cursor in (b"0", "0", 0)
        found, info = {}, {}
        for label, (type_name, match) in passes.items():
            found[label] = [k for k, t in seen.items() if t == type_name
                            and (match is None or fnmatch.fnmatchcase(rp.text(k), match))]
            info[label] = {"scan_calls": calls, "found": len(found[label]), "complete": complete}
        if not complete:
            self.notes.append(f"discovery stopped after {calls} SCAN calls; raise [probes.redis] max_scan_keys")
        return found, info

    def read_sets(self, keys: list[str]) -> dict[str, list[str]]:
        """Members of registry sets, one SSCAN call each (bounded)."""
        if not keys:
            return {}
        limit = int(self.opts["max_set_members"])
        replies = self.link.batch([("SSCAN", k, 0, "COUNT", limit) for k in keys])
        out = {}
        for key, reply in zip(keys, replies):
            if _is_error(reply):
                continue  # not a set (WRONGTYPE): not the registry we hoped for
            cursor, members = reply
            if cursor not in (b"0", "0", 0):
                self.notes.append(f"set '{key}' has more than about {limit} members; read only the first ones")
            out[key] = sorted(rp.text(m) for m in members)
        return out

    def names_are_ours(self) -> bool:
        """--queue names can only mean this Redis when it is the one broker the user named."""
        t = self.ctx.targets
        return t.kafka is None and t.rabbitmq is None and not t.redis.auto_detected

    def discover(self) -> dict[str, Any]:
        """Keys to look at.  No --queue: SCAN for everything.  Plain names:
        direct lookups, no SCAN.  Glob patterns (orders-*): SCAN, then keep
        what matches, by queue name or key."""
        import fnmatch

        names = [q for q in self.ctx.targets.queues if not _is_glob(q)]
        patterns = [q for q in self.ctx.targets.queues if _is_glob(q)]
        if not names and not patterns:
            return self.discover_scan()
        found = self.discover_named(names) if names else {
            "mode": "named", "scan": None, "stream_keys": [], "queues": [], "unrecognised_lists": [],
            "missing": [], "celery_prefixes": [], "sidekiq_namespaces": []}
        if not patterns:
            return found
        scanned = self.discover_scan()

        def hit(*values) -> set[str]:
            return {p for p in patterns for v in values if v is not None and fnmatch.fnmatchcase(v, p)}

        matched: set[str] = set()
        streams = set(found["stream_keys"])
        for key in scanned["stream_keys"]:
            if (m := hit(rp.text(key))):
                streams.add(key)
                matched |= m
        queues = {_qid(q): q for q in found["queues"]}
        for q in scanned["queues"]:
            if (m := hit(q["name"], q["key"])):
                queues.setdefault(_qid(q), q)
                matched |= m
        named_lists = [k for k in scanned["unrecognised_lists"] if hit(k)]
        for key in named_lists:
            matched |= hit(key)
        extra, _ = rp.recognise(named_lists, named=named_lists)
        for q in extra:
            queues.setdefault(_qid(q), q)
        found.update(mode="named+patterns", scan=scanned["scan"], stream_keys=sorted(streams),
                     queues=sorted(queues.values(), key=lambda q: (q["layout"], q["name"])),
                     missing=found["missing"] + [p for p in patterns if p not in matched])
        return found

    def discover_scan(self) -> dict[str, Any]:
        size = self.link.call("DBSIZE")
        self.dbsize = rp.as_int(size)
        passes = {"streams": ("stream", None), "lists": ("list", None),
                  "kombu bindings": ("set", "*" + rp.KOMBU_BINDING + "*")}
        try:
            found, scan_info = self.scan(passes)
        except _ScanTypeUnsupported:
            found, scan_info = self.scan_untyped(passes)
        list_keys = [rp.text(k) for k in found["lists"]]
        binding_keys = sorted(rp.text(k) for k in found["kombu bindings"])
        namespaces = rp.sidekiq_namespaces(list_keys)
        sets = self.read_sets(["rq:queues"] + [f"{ns}queues" for ns in namespaces] + binding_keys)
        exists = self.link.batch([("EXISTS", f"{ns}processes") for ns in namespaces])
        live = [ns for ns, e in zip(namespaces, exists) if e == 1]
        inputs = rp.registry_inputs(list_keys, sets, live)
        queues, unrecognised = rp.recognise(list_keys, **inputs)
        celery, sidekiq_registered = inputs["celery_queues"], inputs["sidekiq_registered"]
        scan_info = {"dbsize": self.dbsize, **scan_info}
        return {"mode": "scan", "scan": scan_info, "stream_keys": sorted(found["streams"]),
                "queues": queues, "unrecognised_lists": unrecognised, "missing": [],
                "celery_prefixes": sorted(celery), "sidekiq_namespaces": sorted(sidekiq_registered)}

    def discover_named(self, names: list[str]) -> dict[str, Any]:
        """--queue NAME: look the candidate keys up directly, no SCAN."""
        commands: list[tuple] = []
        for name in names:
            for key in rp.candidate_keys(name):
                commands.append(("TYPE", key))
            for p in range(1, 10):  # kombu priority siblings (default steps 3, 6, 9)
                commands.append(("TYPE", f"{name}{rp.CELERY_SEP}{p}"))
            commands += [("EXISTS", f"{rp.KOMBU_BINDING}{name}"), ("SISMEMBER", "rq:queues", f"rq:queue:{name}"),
                         ("SISMEMBER", "queues", name), ("EXISTS", "processes")]
        commands = list(dict.fromkeys(commands))
        replies = dict(zip(commands, self.link.batch(commands)))
        stream_keys, list_keys, named_lists, missing = [], [], [], []
        celery: dict[str, set[str]] = {}
        rq_registered, sidekiq_registered = [], {}
        for name in names:
            hit = False
            for key in rp.candidate_keys(name) + [f"{name}{rp.CELERY_SEP}{p}" for p in range(1, 10)]:
                t = rp.text(replies.get(("TYPE", key)))
                if t == "stream" and key == name:
                    stream_keys.append(name.encode())
                    hit = True
                elif t == "list":
                    list_keys.append(key)
                    hit = True
                    if key == name:
                        named_lists.append(name)
                elif t not in (None, "none") and key == name:
                    self.notes.append(f"key '{name}' is a {t}, not a list or a stream: not a queue qdiag can read")
                    hit = True
            if replies.get(("EXISTS", f"{rp.KOMBU_BINDING}{name}")) == 1:
                celery.setdefault("", set()).add(name)
                hit = True
            if replies.get(("SISMEMBER", "rq:queues", f"rq:queue:{name}")) == 1:
                rq_registered.append(name)
                hit = True
            if replies.get(("SISMEMBER", "queues", name)) == 1 and replies.get(("EXISTS", "processes")) == 1:
                sidekiq_registered.setdefault("", set()).add(name)
                hit = True
            if not hit and (_is_glob(name) or not self.names_are_ours()):
                missing.append(name)
            elif not hit:
                # Redis deletes a list when its last element is popped, so a
                # drained queue and a mistyped name look the same: report the
                # name as an empty list (depth 0) and say so, rather than fail
                # the probe the moment a queue drains.
                list_keys.append(name)
                named_lists.append(name)
                self.notes.append(f"no key '{name}' exists: reported as an empty list (Redis deletes empty lists); "
                                  "check the name and the database number if jobs were expected")
        queues, _ = rp.recognise(list_keys, celery_queues=celery, rq_registered=rq_registered,
                                 sidekiq_registered=sidekiq_registered, named=named_lists)
        # A named list that also matches a layout pattern belongs to that layout;
        # layout keys found only as a candidate of another name are kept too.
        return {"mode": "named", "scan": None, "stream_keys": sorted(set(stream_keys)), "queues": queues,
                "unrecognised_lists": [], "missing": missing, "celery_prefixes": sorted(celery),
                "sidekiq_namespaces": sorted(sidekiq_registered)}

    # -- sampling -------------------------------------------------------------

    def sample_plan(self, stream_keys: list[bytes], queues: list[dict]) -> list[tuple]:
        plan: list[tuple] = [("TIME",), ("INFO",), ("INFO", "commandstats")]
        for key in stream_keys:
            plan += [("XINFO", "STREAM", key), ("XINFO", "GROUPS", key)]
        for q in queues:
            plan += _queue_sample_commands(q)
        for prefix in sorted({q.get("prefix", "") for q in queues if q["layout"] == "celery"}):
            plan += [("HLEN", f"{prefix}unacked"), ("ZCARD", f"{prefix}unacked_index")]
        for ns in sorted({q.get("namespace", "") for q in queues if q["layout"] == "sidekiq"}):
            plan += [("ZCARD", f"{ns}retry"), ("ZCARD", f"{ns}dead"), ("ZCARD", f"{ns}schedule"),
                     ("GET", f"{ns}stat:processed"), ("GET", f"{ns}stat:failed")]
        for ns in sorted({q.get("namespace", "") for q in queues if q["layout"] == "dramatiq"}):
            plan.append(("ZCARD", f"{ns}__heartbeats__"))
        seen, unique = set(), []
        for cmd in plan:
            if cmd not in seen:
                seen.add(cmd)
                unique.append(cmd)
        return unique

    def take(self, plan: list[tuple]) -> dict[tuple, Any]:
        replies = self.link.batch(plan)
        out = {}
        for cmd, reply in zip(plan, replies):
            if _is_error(reply):
                self.errors.setdefault(cmd, " ".join(str(reply).split()))
                out[cmd] = None
                continue
            out[cmd] = _parse_reply(cmd, reply)
        return out


class _ScanTypeUnsupported(Exception):
    pass


def _is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _queue_sample_commands(q: dict) -> list[tuple]:
    cmds: list[tuple] = []
    keys = q["keys"] or [q["key"]]
    for key in keys:
        cmds.append(("LLEN", key))
        if q["consume_index"] is None:
            cmds += [("LINDEX", key, 0), ("LINDEX", key, -1)]
        else:
            cmds.append(("LINDEX", key, q["consume_index"]))
    name = q["name"]
    if q["layout"] == "rq":
        cmds += [("ZCARD", f"rq:{reg}:{name}") for reg in rp.RQ_REGISTRIES]
        cmds.append(("LLEN", f"rq:queue:{name}:intermediate"))
    elif q["layout"] == "dramatiq":
        ns = q.get("namespace", "dramatiq:")
        cmds.append(("HLEN", f"{ns}{name}.msgs"))
        if not q.get("delay_queue"):
            cmds.append(("ZCARD", f"{ns}{name}.XQ"))
    return cmds


def _parse_reply(cmd: tuple, reply: Any) -> Any:
    op = cmd[0]
    if op == "XINFO":
        return rp.parse_xinfo_stream(reply) if cmd[1] == "STREAM" else rp.parse_xinfo_groups(reply)
    if op == "INFO":
        info = rp.parse_info(reply)
        if len(cmd) > 1:  # commandstats: calls only
            return {k[len("cmdstat_"):]: v.get("calls") for k, v in info.items()
                    if k.startswith("cmdstat_") and isinstance(v, dict)}
        kept = {k: info.get(k) for k in _KEEP_INFO}
        kept["errorstat"] = {k[len("errorstat_"):]: v.get("count") for k, v in info.items()
                             if k.startswith("errorstat_") and isinstance(v, dict)}
        kept["keyspace"] = {k: v for k, v in info.items() if k.startswith("db") and isinstance(v, dict)}
        return kept
    if op == "TIME":
        return int(rp.as_int(reply[0]) * 1000 + rp.as_int(reply[1]) // 1000)
    if op == "LINDEX":
        # Kept per sample: a digest (has the consuming end moved?) and, when
        # small, the element itself (a job id, or a job to read a time from).
        if reply is None:
            return None
        raw = bytes(reply)
        return {"digest": _digest(raw), "size": len(raw), "value": raw if len(raw) <= _KEEP_ELEMENT_BYTES else None}
    if op == "GET":
        return rp.as_int(reply) if reply is not None else None
    return rp.as_int(reply)


# ---------------------------------------------------------------------------
# Series helpers over samples [(t, {cmd: value})]


def _series(samples: list[tuple[float, dict]], cmd: tuple, pick: Callable[[Any], Any] | None = None) -> list[tuple[float, Any]]:
    out = []
    for t, values in samples:
        v = values.get(cmd)
        out.append((t, pick(v) if (pick and v is not None) else v))
    return out


def _last(series: list[tuple[float, Any]]) -> Any:
    for _, v in reversed(series):
        if v is not None:
            return v
    return None


_KEEP_ELEMENT_BYTES = 16_384


def _digest(payload: bytes | None) -> str | None:
    return None if payload is None else hashlib.blake2b(payload, digest_size=12).hexdigest()


# ---------------------------------------------------------------------------
# Streams: records


def _group_of(groups: list[dict] | None, name: str) -> dict | None:
    for g in groups or []:
        if g["name"] == name:
            return g
    return None


def _stream_records(run: _Run, samples, stream_keys: list[bytes], details: dict, now_ms: int | None) -> tuple[list, list]:
    wanted_groups = set(run.ctx.targets.groups)
    records, streams = [], []
    for key in stream_keys:
        name = rp.text(key)
        s_series = _series(samples, ("XINFO", "STREAM", key))
        g_series = _series(samples, ("XINFO", "GROUPS", key))
        stream = _last(s_series)
        groups = _last(g_series)
        if stream is None or groups is None:
            err = run.errors.get(("XINFO", "STREAM", key)) or run.errors.get(("XINFO", "GROUPS", key))
            run.notes.append(f"stream '{name}' could not be read ({err or 'gone during the window'})")
            continue
        added = _series(samples, ("XINFO", "STREAM", key), lambda s: s["entries_added"])
        length = _series(samples, ("XINFO", "STREAM", key), lambda s: s["length"])
        rate_in = rp.rate(added, counter=True)
        rate_basis = "entries-added"
        if rate_in is None and all(v is None for _, v in added):
            rate_in, rate_basis = None, "unknown (no entries-added before Redis 7.0)"
        summary = {
            "key": name, "length": stream["length"], "entries_added": stream["entries_added"],
            "first_id": stream["first_id"], "last_id": stream["last_id"],
            "last_generated_id": stream["last_generated_id"], "max_deleted_id": stream["max_deleted_id"],
            "last_entry_age_s": rp.id_age_s(stream["last_id"], now_ms),
            "first_entry_age_s": rp.id_age_s(stream["first_id"], now_ms),
            "groups": len(groups), "rate_in": rate_in, "rate_in_basis": rate_basis,
            "length_trend": rp.trend(length),
        }
        streams.append(summary)
        shown = [g for g in groups if not wanted_groups or g["name"] in wanted_groups]
        if not groups:
            records.append(_ungrouped_record(name, stream, summary, length, samples))
            continue
        for group in shown:
            records.append(_group_record(run, key, name, stream, group, summary, samples, details, now_ms))
    return records, streams


def _ungrouped_record(name: str, stream: dict, summary: dict, length_series, samples) -> dict:
    return {
        "system": "redis", "name": name, "group": None, "layout": "stream",
        "depth": stream["length"], "depth_basis": "stream length (no consumer group)",
        "rate_in": summary["rate_in"], "rate_out": None, "consumers": 0, "fill_ratio": None,
        "status": rp.NO_GROUP if stream["length"] else rp.OK,
        "status_reason": ("no consumer group: XREAD readers keep their position client-side, so the "
                          "length is what the stream retains, not a backlog") if stream["length"] else "empty",
        "key": name, "length": stream["length"], "entries_added": stream["entries_added"],
        "last_entry_age_s": summary["last_entry_age_s"], "depth_trend": rp.trend(length_series),
        "depth_samples": [v for _, v in length_series], "rate_source": summary["rate_in_basis"],
        "samples": len(samples),
    }


def _group_record(run: _Run, key: bytes, name: str, stream: dict, group: dict, summary: dict,
                  samples, details: dict, now_ms: int | None) -> dict:
    opts = run.opts
    gname = group["name"]
    per_sample = []  # (t, stream, group) where both known
    for t, values in samples:
        s = values.get(("XINFO", "STREAM", key))
        g = _group_of(values.get(("XINFO", "GROUPS", key)), gname)
        if s is not None and g is not None:
            per_sample.append((t, s, g))

    def read_counter(s, g):
        if g["entries_read"] is not None:
            return g["entries_read"]
        if g["lag"] is not None and s["entries_added"] is not None:
            return s["entries_added"] - g["lag"]  # Redis' own definition of lag
        return None

    reads = [(t, read_counter(s, g)) for t, s, g in per_sample]
    depths = [(t, rp.group_depth(s, g)[0]) for t, s, g in per_sample]
    pendings = [(t, g["pending"]) for t, s, g in per_sample]
    rate_out = rp.rate(reads, counter=True)
    pending_rate = rp.rate(pendings)
    ack_rate = None if rate_out is None or pending_rate is None else round(max(0.0, rate_out - pending_rate), 3)
    depth, depth_basis = rp.group_depth(stream, group)
    first_ld = per_sample[0][2]["last_delivered_id"] if per_sample else None
    moved = first_ld is not None and first_ld != group["last_delivered_id"]
    pending_dropped = len(pendings) >= 2 and pendings[-1][1] is not None and pendings[0][1] is not None \
        and pendings[-1][1] < pendings[0][1]
    consumed = None if len(per_sample) < 2 else bool(moved or pending_dropped)

    d = details.get((key, gname), {})
    consumers = d.get("consumers")
    active = None
    listed = None
    if consumers is not None:
        limit_ms = opts["active_idle_s"] * 1000
        active = sum(1 for c in consumers
                     if (c["inactive_ms"] if c["inactive_ms"] is not None else c["idle_ms"] or 0) <= limit_ms)
        listed = [{"name": c["name"], "pending": c["pending"], "idle_s": _ms_to_s(c["idle_ms"]),
                   "inactive_s": _ms_to_s(c["inactive_ms"])} for c in consumers[: int(opts["max_listed"])]]
    summary_p = d.get("pending_summary")
    sample = d.get("pending_sample")
    poison = rp.poison_candidates(sample or [], int(opts["poison_deliveries"]), int(opts["max_listed"]))
    pending = group["pending"] or 0
    waiting = None if depth is None else depth + pending
    status, reason = rp.judge(waiting=waiting, consumers=group["consumers"], consumed=consumed,
                              depth_trend=rp.trend(depths), rate_in=summary["rate_in"], rate_out=rate_out,
                              poison=len(poison), samples=len(per_sample))
    if depth is None:
        # Nil lag with the group's position before the last entry: at least
        # that entry is waiting, only the count is unknown.
        unknown = f"undelivered count unknown: {rp.lag_null_reason(stream, group)}"
        if group["consumers"] == 0:
            status, reason = rp.STOP, f"entries waiting and no consumer in the group; {unknown}"
        elif consumed is False:
            status, reason = rp.STALL, f"entries waiting and nothing was taken during the window; {unknown}"
        else:
            status, reason = rp.UNKNOWN, unknown
    elif status in (rp.STALL, rp.STOP) and waiting:
        reason += f" ({depth} undelivered, {pending} pending)"
        if status == rp.STALL and active == 0 and consumers:
            reason += f"; none of the {len(consumers)} consumers read in the last {opts['active_idle_s']:g}s"
    record = {
        "system": "redis", "name": name, "group": gname, "layout": "stream",
        "depth": depth, "rate_in": summary["rate_in"], "rate_out": rate_out,
        "consumers": group["consumers"], "fill_ratio": None, "status": status, "status_reason": reason,
        "key": name, "depth_basis": depth_basis,
        "lag": group["lag"], "lag_null_reason": rp.lag_null_reason(stream, group),
        "pending": group["pending"], "unfinished": waiting,
        "last_delivered_id": group["last_delivered_id"], "entries_read": group["entries_read"],
        "entries_added": stream["entries_added"], "length": stream["length"],
        "trimmed_unread": rp.trimmed_unread(stream, group),
        "ack_rate": ack_rate,
        "rate_source": f"in: {summary['rate_in_basis']}; out: entries-read (entries delivered to the group)",
        "depth_trend": rp.trend(depths), "depth_samples": [v for _, v in depths], "consumed_in_window": consumed,
        "oldest_age_s": _oldest(rp.id_age_s(d.get("next_undelivered_id"), now_ms),
                                rp.id_age_s(summary_p["min_id"], now_ms) if summary_p else None),
        "last_entry_age_s": summary["last_entry_age_s"],
        "oldest_undelivered_age_s": rp.id_age_s(d.get("next_undelivered_id"), now_ms),
        "oldest_pending_age_s": rp.id_age_s(summary_p["min_id"], now_ms) if summary_p else None,
        "oldest_pending_idle_s": _ms_to_s(max((e["idle_ms"] or 0 for e in sample), default=None)) if sample else None,
        "consumers_recently_active": active, "consumer_list": listed,
        "pending_by_consumer": summary_p["consumers"] if summary_p else None,
        "pending_sampled": len(sample) if sample is not None else None,
        "poison_candidates": poison, "poison_threshold": int(opts["poison_deliveries"]),
        "details_skipped": d.get("skipped"), "samples": len(per_sample),
    }
    return record


def _oldest(*ages: float | None) -> float | None:
    known = [a for a in ages if a is not None]
    return max(known) if known else None


def _ms_to_s(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def _group_details(run: _Run, samples, stream_keys: list[bytes]) -> tuple[dict, int | None]:
    """XINFO CONSUMERS, XPENDING (summary and a bounded sample) and the first
    undelivered entry, for the groups with the most unfinished work."""
    if not samples:
        return {}, None
    last = samples[-1][1]
    wanted = set(run.ctx.targets.groups)
    candidates = []
    for key in stream_keys:
        stream = last.get(("XINFO", "STREAM", key))
        for g in last.get(("XINFO", "GROUPS", key)) or []:
            if wanted and g["name"] not in wanted:
                continue
            depth, _ = rp.group_depth(stream or {}, g)
            weight = (depth if depth is not None else (stream or {}).get("length") or 0) + (g["pending"] or 0)
            candidates.append((weight, key, g, depth))
    # Groups with nothing waiting and no consumers have nothing to detail.
    candidates = [c for c in candidates if c[0] or c[2]["consumers"]]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]["name"]))
    limit = int(run.opts["max_detailed_groups"])
    sampled = int(run.opts["max_pending_sampled_groups"])
    details: dict[tuple, dict] = {}
    for _, key, g, _ in candidates[limit:]:
        details[(key, g["name"])] = {"skipped": f"beyond max_detailed_groups={limit}"}
    if len(candidates) > limit:
        run.notes.append(f"{len(candidates) - limit} groups got no consumer/pending details (max_detailed_groups={limit})")
    with_pending = sum(1 for c in candidates[:limit] if c[2]["pending"])
    if with_pending > sampled:
        run.notes.append(f"{with_pending - sampled} groups with pending entries got no XPENDING sample, so no "
                         f"poison check (max_pending_sampled_groups={sampled}); their pending summary is complete")
    commands: list[tuple] = [("TIME",)]
    for rank, (_, key, g, depth) in enumerate(candidates[:limit]):
        if g["consumers"]:
            commands.append(("XINFO", "CONSUMERS", key, g["name"]))
        if g["pending"]:
            commands.append(("XPENDING", key, g["name"]))
            if rank < sampled:
                commands.append(("XPENDING", key, g["name"], "-", "+", int(run.opts["pending_sample"])))
        if depth != 0 and rp.next_id(g["last_delivered_id"]):
            commands.append(("XRANGE", key, rp.next_id(g["last_delivered_id"]), "+", "COUNT", 1))
    replies = dict(zip(commands, run.link.batch(commands)))
    now_ms = _parse_reply(("TIME",), replies[("TIME",)]) if not _is_error(replies[("TIME",)]) else None
    for _, key, g, depth in candidates[:limit]:
        d: dict[str, Any] = {}
        r = replies.get(("XINFO", "CONSUMERS", key, g["name"]))
        if r is not None and not _is_error(r):
            d["consumers"] = rp.parse_xinfo_consumers(r)
        r = replies.get(("XPENDING", key, g["name"]))
        if r is not None and not _is_error(r):
            d["pending_summary"] = rp.parse_xpending_summary(r)
        r = replies.get(("XPENDING", key, g["name"], "-", "+", int(run.opts["pending_sample"])))
        if r is not None and not _is_error(r):
            d["pending_sample"] = rp.parse_xpending_range(r)
        r = replies.get(("XRANGE", key, rp.next_id(g["last_delivered_id"]), "+", "COUNT", 1))
        if r and not _is_error(r):
            d["next_undelivered_id"] = rp.text(r[0][0])
        details[(key, g["name"])] = d
    return details, now_ms


# ---------------------------------------------------------------------------
# List-based job queues: records


def _list_details(run: _Run, samples, queues: list[dict]) -> dict[str, Any]:
    """The oldest job's enqueue time where the layout stores one, worker
    registries, abandoned RQ jobs, Celery's oldest unacked delivery."""
    if not samples:
        return {}
    last = samples[-1][1]
    now_ms = last.get(("TIME",))
    now_s = now_ms / 1000.0 if now_ms else None
    commands: list[tuple] = []
    oldest_ref: dict[str, tuple] = {}
    for q in queues:
        ident = _qid(q)
        if q["layout"] in ("rq", "dramatiq") and q["keys"]:
            head = last.get(("LINDEX", q["keys"][0], 0))
            if head and head["value"] is not None:
                job_id = rp.text(head["value"])
                cmd = (("HGET", f"rq:job:{job_id}", "enqueued_at") if q["layout"] == "rq"
                       else ("HGET", f"{q.get('namespace', 'dramatiq:')}{q['name']}.msgs", job_id))
                oldest_ref[ident] = cmd
                commands.append(cmd)
        if q["layout"] in ("sidekiq", "celery"):
            for k in q["keys"]:
                tail = last.get(("LINDEX", k, -1))
                if tail and tail["value"] is None:  # too big to keep per sample: read it once
                    commands.append(("LINDEX", k, -1))
        if q["layout"] == "rq" and now_s is not None:
            commands.append(("ZCOUNT", f"rq:wip:{q['name']}", "-inf", f"({now_s:.6f}"))
    rq_workers_cmd = ("SSCAN", "rq:workers", 0, "COUNT", int(run.opts["max_set_members"]))
    if any(q["layout"] == "rq" for q in queues):
        commands.append(rq_workers_cmd)
    prefixes = sorted({q.get("prefix", "") for q in queues if q["layout"] == "celery"})
    for p in prefixes:
        commands.append(("ZRANGE", f"{p}unacked_index", 0, 0, "WITHSCORES"))
    namespaces = sorted({q.get("namespace", "") for q in queues if q["layout"] == "sidekiq"})
    for ns in namespaces:
        commands.append(("SSCAN", f"{ns}processes", 0, "COUNT", int(run.opts["max_set_members"])))
    d_namespaces = sorted({q.get("namespace", "dramatiq:") for q in queues if q["layout"] == "dramatiq"})
    for ns in d_namespaces:
        if now_ms:
            commands.append(("ZCOUNT", f"{ns}__heartbeats__", now_ms - 60_000, "+inf"))
    replies = dict(zip(commands, run.link.batch(commands))) if commands else {}

    def ok(cmd):
        r = replies.get(cmd)
        return None if r is None or _is_error(r) else r

    # Second round: are the registered workers/processes alive?
    follow: list[tuple] = []
    # RQ: every worker is in `rq:workers`; its hash (gone once the worker
    # stops heartbeating) lists the queues it listens on.
    r = ok(rq_workers_cmd)
    rq_worker_keys = sorted(rp.text(m) for m in (r[1] if r else []))
    follow += [("HMGET", w, "queues", "state") for w in rq_worker_keys]
    sk_processes: dict[str, list[str]] = {}
    for ns in namespaces:
        r = ok(("SSCAN", f"{ns}processes", 0, "COUNT", int(run.opts["max_set_members"])))
        idents = sorted(rp.text(m) for m in (r[1] if r else []))
        sk_processes[ns] = idents
        follow += [("HMGET", f"{ns}{i}", "info", "beat", "quiet") for i in idents]
    more = dict(zip(follow, run.link.batch(follow))) if follow else {}

    out: dict[str, Any] = {"now_s": now_s, "queues": {}, "celery": {}, "sidekiq": {}, "dramatiq": {},
                           "rq_workers": {}}
    for w in rq_worker_keys:
        fields = more.get(("HMGET", w, "queues", "state"))
        if fields and not _is_error(fields) and fields[0] is not None:
            out["rq_workers"][w[len("rq:worker:"):]] = [q for q in (rp.text(fields[0]) or "").split(",") if q]
    for q in queues:
        ident = _qid(q)
        d: dict[str, Any] = {}
        if ident in oldest_ref:
            value = ok(oldest_ref[ident])
            if q["layout"] == "rq":
                d["oldest_enqueued_at"] = rp.rq_time(value)
                d["oldest_basis"] = "enqueued_at of the job at the head of the list"
            else:
                m = rp.dramatiq_message(value)
                d["oldest_enqueued_at"] = m["enqueued_at"]
                d["oldest_actor"] = m["actor"]
                d["oldest_basis"] = "message_timestamp of the message at the head of the list"
        if q["layout"] in ("sidekiq", "celery") and q["keys"]:
            payloads = []
            for k in q["keys"]:  # the main key first: workers pop it before the priority siblings
                tail = last.get(("LINDEX", k, -1))
                if tail:
                    payloads.append((k, tail["value"] if tail["value"] is not None else ok(("LINDEX", k, -1))))
            payloads = [(k, p) for k, p in payloads if p]
            if q["layout"] == "sidekiq" and payloads:
                job = rp.sidekiq_job(payloads[0][1])
                d["oldest_enqueued_at"] = job["enqueued_at"]
                d["oldest_job_class"] = job["job_class"]
                d["oldest_basis"] = "enqueued_at of the job at the tail (Sidekiq's latency)"
            elif q["layout"] == "celery" and payloads:
                msg = rp.celery_message(payloads[0][1])
                d["next_task"] = msg["task"]
                d["next_eta"] = msg["eta"]
                d["oldest_basis"] = "Celery messages carry no enqueue time: age unknown"
        if q["layout"] == "rq":
            if now_s is not None:
                d["abandoned"] = rp.as_int(ok(("ZCOUNT", f"rq:wip:{q['name']}", "-inf", f"({now_s:.6f}")))
            listening = busy = 0
            for w in rq_worker_keys:
                fields = more.get(("HMGET", w, "queues", "state"))
                if not fields or _is_error(fields) or fields[0] is None:
                    continue  # hash expired: the worker stopped heartbeating
                if q["name"] in (rp.text(fields[0]) or "").split(","):
                    listening += 1
                    busy += rp.text(fields[1]) == "busy"
            d["workers_alive"] = listening
            d["workers_busy"] = busy
            d["workers_registered_total"] = len(rq_worker_keys)
        out["queues"][ident] = d
    for p in prefixes:
        r = ok(("ZRANGE", f"{p}unacked_index", 0, 0, "WITHSCORES"))
        oldest = float(rp.text(r[1])) if r and len(r) >= 2 else None
        out["celery"][p] = {"oldest_unacked_age_s": rp.age_s(oldest, now_s)}
    for ns in namespaces:
        procs = []
        for ident in sk_processes.get(ns, []):
            r = more.get(("HMGET", f"{ns}{ident}", "info", "beat", "quiet"))
            if not r or _is_error(r):
                continue
            info = rp.load_json(r[0]) if r[0] else None
            beat = float(rp.text(r[1])) if r[1] else None
            procs.append({"identity": ident, "queues": (info or {}).get("queues") or [],
                          "beat_age_s": rp.age_s(beat, now_s), "quiet": rp.text(r[2]) == "true"})
        out["sidekiq"][ns] = {"processes": procs}
    for ns in d_namespaces:
        out["dramatiq"][ns] = {"workers_alive": rp.as_int(ok(("ZCOUNT", f"{ns}__heartbeats__", now_ms - 60_000, "+inf")))
                               if now_ms else None}
    return out


def _qid(q: dict) -> str:
    return f"{q['layout']}|{q.get('prefix', q.get('namespace', ''))}|{q['name']}"


def _list_records(run: _Run, samples, queues: list[dict], details: dict) -> list[dict]:
    records = []
    now_s = details.get("now_s")
    for q in queues:
        keys = q["keys"] or [q["key"]]
        per_key = {k: _series(samples, ("LLEN", k)) for k in keys}
        depth_series = []
        for i, (t, _) in enumerate(samples):
            vals = [per_key[k][i][1] for k in keys]
            depth_series.append((t, None if any(v is None for v in vals) else sum(vals)))
        depth = _last(depth_series)
        net = rp.rate(depth_series)
        consumed = _list_consumed(samples, q, keys, depth_series)
        d = details.get("queues", {}).get(_qid(q), {})
        rate_in = rate_out = None
        basis = "net only (depth change): Redis lists keep no per-queue in/out counters"
        extra: dict[str, Any] = {}
        consumers = None
        if q["layout"] == "rq":
            regs = {reg: _last(_series(samples, ("ZCARD", f"rq:{reg}:{q['name']}"))) for reg in rp.RQ_REGISTRIES}
            deltas = {reg: rp.delta(_series(samples, ("ZCARD", f"rq:{reg}:{q['name']}"))) for reg in rp.RQ_REGISTRIES}
            extra["registries"] = regs
            extra["failed_delta"] = deltas["failed"]
            extra["intermediate"] = _last(_series(samples, ("LLEN", f"rq:queue:{q['name']}:intermediate")))
            extra["abandoned"] = d.get("abandoned")
            taken = _rq_taken(samples, q["name"])
            if taken is not None and net is not None:
                rate_out = taken
                rate_in = round(net + taken, 3)
                basis = ("out from the wip+finished+failed+canceled registry deltas, in = out + depth change; "
                         "a lower bound if RQ cleaned a registry or jobs ran with result_ttl=0")
            consumers = d.get("workers_alive")
            extra["workers_busy"] = d.get("workers_busy")
        elif q["layout"] == "dramatiq":
            msgs = _last(_series(samples, ("HLEN", f"{q.get('namespace', 'dramatiq:')}{q['name']}.msgs")))
            extra["in_flight"] = None if msgs is None or depth is None else max(0, msgs - depth)
            xq = _series(samples, ("ZCARD", f"{q.get('namespace', 'dramatiq:')}{q['name']}.XQ"))
            extra["dead_letters"] = _last(xq)
            extra["dead_letters_delta"] = rp.delta(xq)
            extra["delay_queue"] = bool(q.get("delay_queue"))
            if d.get("oldest_actor"):
                extra["oldest_actor"] = d["oldest_actor"]
        elif q["layout"] == "celery":
            extra["key_lengths"] = {rp.text(k): _last(per_key[k]) for k in keys}
            # The message a worker takes next: the tail of the highest-priority non-empty list.
            if d.get("next_task"):
                extra["next_task"] = d["next_task"]
            if d.get("next_eta"):
                extra["next_eta"] = d["next_eta"]
        elif q["layout"] == "sidekiq":
            procs = details.get("sidekiq", {}).get(q.get("namespace", ""), {}).get("processes")
            if procs is not None:
                consumers = sum(1 for p in procs if q["name"] in p["queues"] and not p["quiet"]
                                and (p["beat_age_s"] is None or p["beat_age_s"] <= 60))
            if d.get("oldest_job_class"):
                extra["oldest_job_class"] = d["oldest_job_class"]
        oldest_age = rp.age_s(d.get("oldest_enqueued_at"), now_s) if depth else None
        status, reason = rp.judge(waiting=depth, consumers=consumers, consumed=consumed,
                                  depth_trend=rp.trend(depth_series), rate_in=rate_in, rate_out=rate_out,
                                  samples=len(samples))
        record = {
            "system": "redis", "name": q["name"], "group": None, "layout": q["layout"],
            "depth": depth, "rate_in": rate_in, "rate_out": rate_out, "consumers": consumers,
            "fill_ratio": None, "status": status, "status_reason": reason,
            "key": rp.text(q["key"]), "key_exists": bool(q["keys"]), "net_rate": net, "rate_source": basis,
            "depth_trend": rp.trend(depth_series), "depth_samples": [v for _, v in depth_series],
            "consumed_in_window": consumed,
            "oldest_age_s": oldest_age, "oldest_basis": d.get("oldest_basis") if depth else None,
            "samples": len(samples),
        }
        if q.get("prefix"):
            record["key_prefix"] = q["prefix"]
        if q.get("namespace") and q["layout"] == "sidekiq":
            record["namespace"] = q["namespace"]
        record.update(extra)
        records.append(record)
    return records


def _rq_taken(samples, name: str) -> float | None:
    """Jobs taken from an RQ queue per second: each taken job enters wip and
    then finished/failed/canceled, so the sum of those deltas counts it once."""
    parts = [rp.delta(_series(samples, ("ZCARD", f"rq:{reg}:{name}"))) for reg in ("wip", "finished", "failed", "canceled")]
    if any(p is None for p in parts) or len(samples) < 2:
        return None
    span = samples[-1][0] - samples[0][0]
    total = sum(parts)
    if span <= 0 or total < 0:
        return None
    return round(total / span, 3)


def _list_consumed(samples, q: dict, keys: list, depth_series) -> bool | None:
    """Whether anything left the queue during the window.  Producers add at
    one end and consumers take from the other, so while jobs wait the element
    at the consuming end changes exactly when something was taken.  For a
    list of unknown layout both ends are compared: unchanged ends and a
    depth that never fell mean nothing was taken; a change there says only
    that something happened."""
    if len(samples) < 2:
        return None
    depths = [v for _, v in depth_series]
    if any(v is None for v in depths):
        return None
    if any(b < a for a, b in zip(depths, depths[1:])):
        return True
    if depths[0] == 0:
        return None  # nothing was waiting when the window opened
    ends = [q["consume_index"]] if q["consume_index"] is not None else [0, -1]
    for key in keys:
        for end in ends:
            first = samples[0][1].get(("LINDEX", key, end)) or {}
            last = samples[-1][1].get(("LINDEX", key, end)) or {}
            if first.get("digest") != last.get("digest"):
                return True if q["consume_index"] is not None else None
    return False


# ---------------------------------------------------------------------------
# Server and clients


def _server(run: _Run, samples, doctor: str | None) -> dict[str, Any]:
    infos = [(t, v.get(("INFO",))) for t, v in samples]
    info = _last(infos) or {}
    stats = [(t, v.get(("INFO", "commandstats"))) for t, v in samples]
    policy = info.get("maxmemory_policy")

    def d(field):
        return rp.delta([(t, (i or {}).get(field)) for t, i in infos])

    def errs(kind):
        return rp.delta([(t, ((i or {}).get("errorstat") or {}).get(kind, 0) if i else None) for t, i in infos])

    command_rates = {}
    if len([s for _, s in stats if s]) >= 2:
        for cmd in _QUEUE_COMMANDS:
            r = rp.rate([(t, (s or {}).get(cmd, 0) if s else None) for t, s in stats], counter=True)
            if r:
                command_rates[cmd] = r
    db_key = f"db{run.target.db}"
    return {
        "address": run.target.label().replace("redis://", "rediss://") if run.target.tls else run.target.label(),
        "version": info.get("redis_version"), "mode": info.get("redis_mode"), "role": info.get("role"),
        "loading": bool(info.get("loading")) if info.get("loading") is not None else None,
        "used_memory": info.get("used_memory"), "used_memory_peak": info.get("used_memory_peak"),
        "maxmemory": info.get("maxmemory") or None,
        "memory_ratio": rp.memory_ratio(info.get("used_memory"), info.get("maxmemory")),
        "maxmemory_policy": policy, "eviction_meaning": rp.eviction_meaning(policy),
        "no_memory_limit": info.get("maxmemory") == 0,
        "memory_note": ("maxmemory is 0: Redis grows until the host or container runs out of memory "
                        "(then the OOM killer, not the eviction policy, decides)") if info.get("maxmemory") == 0 else None,
        "mem_fragmentation_ratio": info.get("mem_fragmentation_ratio"),
        "evicted_keys_delta": d("evicted_keys"), "expired_keys_delta": d("expired_keys"),
        "rejected_connections_delta": d("rejected_connections"),
        "oom_errors_delta": errs("OOM"),
        "error_replies_delta": d("total_error_replies"),
        "ops_per_s": rp.rate([(t, (i or {}).get("total_commands_processed")) for t, i in infos], counter=True),
        "connected_clients": info.get("connected_clients"), "maxclients": info.get("maxclients"),
        "blocked_clients": info.get("blocked_clients"),
        "db_keys": ((info.get("keyspace") or {}).get(db_key) or {}).get("keys", 0) if info else None,
        "queue_command_rates": command_rates,
        "memory_doctor": doctor,
    }


def _clients(run: _Run, raw_list: Any, streams_details: dict, list_details: dict) -> dict[str, Any]:
    clients = rp.parse_client_list(raw_list)
    blocked = rp.blocked_clients(clients, run.own_id)
    # Which queue a blocked connection serves, where its name tells: a
    # connection named like a stream consumer, or an RQ worker (RQ names its
    # connection after the worker).  Values are queue subjects, "redis:<name>[/<group>]".
    by_name: dict[str, list[str]] = {}
    for (key, group), d in streams_details.items():
        for c in d.get("consumers") or []:
            by_name.setdefault(c["name"], []).append(f"redis:{rp.text(key)}/{group}")
    for worker, queues in (list_details.get("rq_workers") or {}).items():
        by_name.setdefault(worker, []).extend(f"redis:{q}" for q in queues)
    limit = int(run.opts["max_listed"])
    for c in blocked:
        if c["name"] and c["name"] in by_name:
            c["consumer_of"] = by_name[c["name"]][:5]
    return {
        "total": len([c for c in clients if c.get("id") != run.own_id]),
        "blocked_count": len(blocked),
        "blocked_by_command": rp.count_by(blocked, "cmd"),
        "blocked_by_db": rp.count_by(blocked, "db"),
        "blocked": blocked[:limit],
        "note": "CLIENT LIST shows each client's last command, not the keys a blocked client waits on",
    }


def _hints(server: dict, clients: dict, records: list[dict], target) -> list[str]:
    hints = []
    backlog = [r for r in records if r["layout"] != "stream" and (r["depth"] or 0) > 0]
    list_waiters = sum(n for cmd, n in clients.get("blocked_by_command", {}).items()
                       if cmd.split("|")[0] in ("blpop", "brpop", "brpoplpush", "blmove", "blmpop"))
    if backlog and list_waiters:
        other_db = {db for db in clients.get("blocked_by_db", {}) if db != str(target.db)}
        where = f" (blocked clients are on db {', '.join(sorted(other_db))})" if other_db else ""
        hints.append(f"{list_waiters} clients wait in a blocking list pop while {len(backlog)} list queues hold jobs: "
                     f"they wait on other keys or another database{where}; check that consumers listen on "
                     "the queues that hold the jobs")
    if backlog and server.get("blocked_clients") == 0:
        hints.append("no client is blocked waiting for jobs while list queues hold jobs: every consumer is busy, or none is connected")
    if server.get("memory_ratio") is not None and server["memory_ratio"] >= 0.9:
        hints.append(f"memory at {server['memory_ratio']:.0%} of maxmemory; {server.get('eviction_meaning')}")
    if server.get("evicted_keys_delta"):
        hints.append(f"{server['evicted_keys_delta']} keys evicted during the window (policy {server.get('maxmemory_policy')})")
    if server.get("oom_errors_delta"):
        hints.append(f"{server['oom_errors_delta']} commands refused with OOM during the window: writes fail at maxmemory")
    if server.get("rejected_connections_delta"):
        hints.append(f"{server['rejected_connections_delta']} connections rejected during the window (maxclients {server.get('maxclients')})")
    return hints


# ---------------------------------------------------------------------------
# The probe


def _discover_consumers(ctx) -> list[dict]:
    """Local processes connected to this Redis, from CLIENT LIST addresses.
    CLIENT LIST never says which key a client waits on; RQ, though, names each
    worker connection after the worker, and the worker's hash lists its
    queues: that is the one case where the queue is known."""
    from qdiag.localsockets import pids_by_local_address

    target = ctx.targets.redis
    if target is None:
        return []
    link = _Link(ctx, target, connect_timeout_s=2.0, call_timeout_s=2.0)
    link.open()
    try:
        own, raw = link.batch([("CLIENT", "ID"), ("CLIENT", "LIST")])
        if _is_error(raw):
            return []
        own_id = None if _is_error(own) else str(rp.as_int(own))
        clients = [c for c in rp.parse_client_list(raw)
                   if c.get("id") != own_id and not set(c.get("flags", "")) & set("MSO")]
        named = [c for c in clients if c.get("name") and c.get("db") == str(target.db)][:200]
        queues = link.batch([("HGET", f"rq:worker:{c['name']}", "queues") for c in named]) if named else []
    finally:
        link.close()
    rq_queues = {c["name"]: rp.text(q) for c, q in zip(named, queues) if q is not None and not _is_error(q)}
    by_addr = {}
    for c in clients:
        addr = rp.split_addr(c.get("addr"))
        if addr:
            by_addr[addr] = c
    pids = pids_by_local_address(by_addr)
    me = os.getpid()
    found = []
    for addr, pid in sorted(pids.items()):
        if pid == me:
            continue
        c = by_addr[addr]
        blocked = "b" in c.get("flags", "")
        # The subject names the queue record it consumes ("redis:<record name>",
        # as the report's queue subjects): RQ records are named by queue.
        subject = "redis"
        names = [n for n in (rq_queues.get(c.get("name")) or "").split(",") if n]
        if len(names) == 1:
            subject = f"redis:{names[0]}"
        via = (f"redis client {c.get('addr')} on db {c.get('db')}, "
               f"{'blocked in' if blocked else 'last command'} {c.get('cmd')}")
        found.append({"pid": pid, "via": via, "subject": subject})
    return found


def discover(ctx) -> list[dict]:
    try:
        return _discover_consumers(ctx)
    except (ProbeError, DeadlineReached):
        return []


@register("redis", description="Redis streams and consumer groups, Celery/RQ/Sidekiq/Dramatiq list queues, "
                               "memory and eviction, blocked clients (read-only)",
          needs=("redis",), timeout_s=15, discover=discover, options=OPTIONS,
          diagnosis=_redis_facts.CONTRIBUTION)
def collect(ctx) -> dict:
    target = ctx.targets.redis
    if target is None:
        raise NotApplicable("no Redis target: give --redis redis://host:port/db")
    opts, notes = _options(ctx)
    link = _Link(ctx, target, connect_timeout_s=opts["connect_timeout_s"], call_timeout_s=opts["call_timeout_s"],
                 batch=int(opts["pipeline_batch"]))
    link.open()
    try:
        return _collect(ctx, target, opts, link, notes)
    finally:
        link.close()


def _collect(ctx, target, opts, link: _Link, notes: list[str]) -> dict:
    from redis.exceptions import ResponseError

    run = _Run(ctx, target, opts, link, notes)
    try:
        run.own_id = str(rp.as_int(link.call("CLIENT", "ID")))
    except ResponseError:  # CLIENT may be renamed or denied; only the self-exclusion suffers
        notes.append("CLIENT ID refused: qdiag's own connection cannot be told apart in CLIENT LIST")
    requests = ctx.partial.setdefault("requests", {})

    def count():
        requests.update({"round_trips": link.round_trips, "commands": link.commands,
                         "command_names": sorted(link.used)})

    try:
        found = run.discover()
    except ResponseError as exc:
        raise ProbeError(f"{target.label()}: key discovery refused ({rp.clip(' '.join(str(exc).split()), 120)}); "
                         "grant the user +scan +type, or name the queues with --queue") from None
    stream_keys = found["stream_keys"]
    queues = found["queues"]
    if len(stream_keys) > opts["max_streams"]:
        notes.append(f"{len(stream_keys)} streams found; looked at the first {int(opts['max_streams'])} (max_streams)")
        stream_keys = stream_keys[: int(opts["max_streams"])]
    if len(queues) > opts["max_queues"]:
        notes.append(f"{len(queues)} list queues found; looked at the first {int(opts['max_queues'])} (max_queues)")
        queues = queues[: int(opts["max_queues"])]
    if ctx.targets.groups:
        stream_keys = _streams_with_groups(run, stream_keys)
    for name in found["missing"]:
        if _is_glob(name):
            notes.append(f"no stream or list queue on {target.label()} matches '{name}'")
        else:
            notes.append(f"queue '{name}' not found on {target.label()}: no stream or list named {name}, "
                         f"rq:queue:{name}, queue:{name} or dramatiq:{name}")
    discovery = {
        "mode": found["mode"], "scan": found["scan"], "streams": len(stream_keys),
        "list_queues": rp.count_by(queues, "layout"), "missing": found["missing"],
        "unrecognised_lists": len(found["unrecognised_lists"]),
    }
    ctx.partial["discovery"] = discovery
    count()
    _refuse_when_nothing_named_exists(ctx, target, found, stream_keys, queues)

    plan = run.sample_plan(stream_keys, queues)
    samples = ctx.sample(lambda: run.take(plan), int(opts["samples"]))
    count()
    if not samples:
        raise DeadlineReached(ctx.name)
    if len(samples) < 2:
        notes.append("only one sample before the deadline: no rates")
    # Kept if what follows fails or runs out of time: records without details.
    ctx.partial["queues"] = _ranked(_stream_records(run, samples, stream_keys, {}, samples[-1][1].get(("TIME",)))[0]
                                    + _list_records(run, samples, queues, {}))
    ctx.partial["notes"] = notes

    details_cut = None
    stream_details: dict = {}
    list_details: dict = {}
    raw_clients = None
    doctor = None
    now_ms = samples[-1][1].get(("TIME",))
    try:
        stream_details, detail_now = _group_details(run, samples, stream_keys)
        now_ms = detail_now or now_ms
        list_details = _list_details(run, samples, queues)
        raw_clients, raw_doctor = link.batch([("CLIENT", "LIST"), ("MEMORY", "DOCTOR")])
        if _is_error(raw_clients):
            notes.append(f"CLIENT LIST refused ({raw_clients}); blocked clients unknown")
            raw_clients = None
        if _is_error(raw_doctor):
            notes.append(f"MEMORY DOCTOR refused ({raw_doctor})")
        else:
            doctor = rp.clip(rp.text(raw_doctor), int(opts["doctor_chars"]))
    except DeadlineReached:
        details_cut = "deadline reached: consumer, pending and oldest-job details are partly missing"
        notes.append(details_cut)

    records, streams = _stream_records(run, samples, stream_keys, stream_details, now_ms)
    records = _ranked(records + _list_records(run, samples, queues, list_details))
    server = _server(run, samples, doctor)
    if server["mode"] == "cluster":
        notes.append("Redis Cluster: SCAN and CLIENT LIST cover this node only; keys in other nodes' slots are not seen")
    if server["role"] == "slave":
        notes.append("this is a replica: key state is replicated, but CLIENT LIST shows this node's clients only")
    if server["loading"]:
        notes.append("the server is still loading its dataset: numbers may be incomplete")
    clients = _clients(run, raw_clients, stream_details, list_details) if raw_clients is not None else None
    unrecognised = _unrecognised(run, found["unrecognised_lists"]) if not details_cut else None
    for cmd, err in sorted(run.errors.items(), key=lambda kv: str(kv[0]))[:10]:
        notes.append(f"{' '.join(rp.text(a) for a in cmd)}: {err}")
    count()
    out = {
        "queues": records,
        "streams": streams,
        "layouts": _layouts(samples, queues, list_details),
        "server": server,
        "clients": clients,
        "hints": _hints(server, clients or {}, records, target),
        "discovery": discovery,
        "unrecognised_lists": unrecognised,
        "window": {"samples": len(samples), "span_s": round(samples[-1][0] - samples[0][0], 3)},
        "requests": {"round_trips": link.round_trips, "commands": link.commands,
                     "command_names": sorted(link.used)},
        "notes": list(dict.fromkeys(notes)),
    }
    return out


def _streams_with_groups(run: _Run, stream_keys: list[bytes]) -> list[bytes]:
    """--group narrows streams to those that have one of the named groups."""
    wanted = set(run.ctx.targets.groups)
    replies = run.link.batch([("XINFO", "GROUPS", k) for k in stream_keys]) if stream_keys else []
    kept, seen = [], set()
    for key, reply in zip(stream_keys, replies):
        if _is_error(reply):
            continue
        names = {g["name"] for g in rp.parse_xinfo_groups(reply)}
        if names & wanted:
            kept.append(key)
            seen |= names & wanted
    for g in sorted(wanted - seen):
        run.notes.append(f"consumer group '{g}' not found on any stream looked at")
    return kept


def _refuse_when_nothing_named_exists(ctx, target, found, stream_keys, queues) -> None:
    """Every name given with --queue/--group missing is an error when Redis is
    the only broker, and one the user named (the names cannot be meant for
    another broker, nor was this Redis only found listening on its port)."""
    t = ctx.targets
    others = t.kafka is not None or t.rabbitmq is not None
    if others or target.auto_detected:
        return
    if t.queues and found["missing"] and len(found["missing"]) == len(t.queues):
        names = ", ".join(found["missing"])
        what = "matches" if any(_is_glob(n) for n in found["missing"]) else "named"
        raise ProbeError(f"{target.label()}: no queue {what} {names} (looked for a stream or list of that name, "
                         f"rq:queue:NAME, queue:NAME, dramatiq:NAME); check the name and the database number in the URL")
    if t.groups and not stream_keys and not queues:
        raise ProbeError(f"{target.label()}: no stream has a consumer group named {', '.join(t.groups)}; "
                         "check the group name and the database number in the URL")


def _unrecognised(run: _Run, keys: list[str]) -> dict[str, Any] | None:
    """Lists of no known layout: a count and the longest few (LLEN on up to 1,000)."""
    if not keys:
        return {"count": 0, "longest": []}
    looked = keys[:1000]
    lengths = run.link.batch([("LLEN", k) for k in looked])
    pairs_ = sorted(((rp.as_int(n) or 0, k) for k, n in zip(looked, lengths) if not _is_error(n)), reverse=True)
    return {"count": len(keys), "longest": [{"key": k, "length": n} for n, k in pairs_[:10]],
            "note": "not reported as queues: name one with --queue to sample it"}


def _layouts(samples, queues: list[dict], details: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix in sorted({q.get("prefix", "") for q in queues if q["layout"] == "celery"}):
        unacked = _series(samples, ("HLEN", f"{prefix}unacked"))
        out.setdefault("celery", {})[prefix or "(no prefix)"] = {
            "unacked": _last(unacked), "unacked_delta": rp.delta(unacked),
            "unacked_index": _last(_series(samples, ("ZCARD", f"{prefix}unacked_index"))),
            "oldest_unacked_age_s": details.get("celery", {}).get(prefix, {}).get("oldest_unacked_age_s"),
            "note": "unacked: messages workers reserved and have not acknowledged; restored to their queue "
                    "after the visibility timeout (1 hour by default)",
        }
    for ns in sorted({q.get("namespace", "") for q in queues if q["layout"] == "sidekiq"}):
        processed = _series(samples, ("GET", f"{ns}stat:processed"))
        failed = _series(samples, ("GET", f"{ns}stat:failed"))
        out.setdefault("sidekiq", {})[ns or "(no namespace)"] = {
            "retry": _last(_series(samples, ("ZCARD", f"{ns}retry"))),
            "retry_delta": rp.delta(_series(samples, ("ZCARD", f"{ns}retry"))),
            "dead": _last(_series(samples, ("ZCARD", f"{ns}dead"))),
            "scheduled": _last(_series(samples, ("ZCARD", f"{ns}schedule"))),
            "processed_rate": rp.rate(processed, counter=True), "failed_rate": rp.rate(failed, counter=True),
            "processes": details.get("sidekiq", {}).get(ns, {}).get("processes"),
            "note": "processed/failed counters are flushed by each Sidekiq process's heartbeat: coarse over a short window",
        }
    for ns in sorted({q.get("namespace", "dramatiq:") for q in queues if q["layout"] == "dramatiq"}):
        out.setdefault("dramatiq", {})[ns] = {
            "workers_seen": _last(_series(samples, ("ZCARD", f"{ns}__heartbeats__"))),
            "workers_alive": details.get("dramatiq", {}).get(ns, {}).get("workers_alive"),
            "note": "workers_alive: heartbeat within the last 60 s (Dramatiq's default heartbeat timeout)",
        }
    return out


_STATUS_ORDER = {rp.STOP: 0, rp.STALL: 1, rp.WARN: 2, rp.UNKNOWN: 3, rp.NO_GROUP: 4, rp.OK: 5}


def _ranked(records: list[dict]) -> list[dict]:
    """Severity added, biggest problem first."""
    for rec in records:
        rec["severity"] = rp.SEVERITY.get(rec["status"], "unknown")
    return sorted(records, key=_severity)


def _severity(record: dict) -> tuple:
    return (_STATUS_ORDER.get(record["status"], 5), -(record["depth"] or 0), record["name"], record["group"] or "")
