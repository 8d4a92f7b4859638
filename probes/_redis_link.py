"""One Redis connection for the probe: raw replies (no client-side parsing),
commands pipelined in batches, round trips and command names counted, every
read bounded by what is left of the deadline; and the one-line explanation of
a failure (what failed, where, the likely fix, never the password).

`Run` is one probe run's shared state: the link, the options, the notes and
the per-command errors that the key, stream and job-queue modules add to.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from qdiag.context import DeadlineReached
from qdiag.probe import ProbeError

from . import _redis_parse as rp


class Link:
    """One Redis connection: raw replies, pipelined batches, round trips and
    commands counted, every read bounded by what is left of the deadline."""

    def __init__(self, ctx, target, *, connect_timeout_s: float, call_timeout_s: float, batch: int = 500,
                 tls: dict[str, Any] | None = None):
        self.ctx = ctx
        self.target = target
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.batch_size = max(1, int(batch))
        self.tls = tls or {}
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
        kwargs = connection_kwargs(self.target, self.tls, init_params(cls), connect_timeout_s=timeout,
                                   call_timeout_s=self.ctx.io_timeout(self.call_timeout_s))
        # A retry would multiply the wait on a port that never answers.
        kwargs.update(retry=Retry(NoBackoff(), 0))
        self.conn = cls(**kwargs)
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
                self.used.update(command_name(c) for c in part)
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


def tls_options(opts) -> dict[str, Any]:
    """The probe's rediss:// options: ca_file (a PEM bundle to trust) and insecure_tls (no verification)."""
    return {"ca_file": opts.get("ca_file"), "insecure": bool(opts.get("insecure_tls"))}


def connection_kwargs(target, tls: dict[str, Any], accepted: set[str], *, connect_timeout_s: float,
                      call_timeout_s: float) -> dict[str, Any]:
    """redis-py Connection/SSLConnection arguments for the target: timeouts, no
    retries, no CLIENT SETINFO, RESP2, and for rediss:// the CA and verification
    options.  A ca_file that cannot be read is an error here, before any
    connection, rather than an SSL failure later that names no file."""
    kwargs: dict[str, Any] = {
        "host": target.host, "port": target.port, "db": target.db,
        "username": target.username, "password": target.password,
        "socket_timeout": call_timeout_s, "socket_connect_timeout": connect_timeout_s,
        "retry_on_timeout": False, "health_check_interval": 0,
    }
    if "protocol" in accepted:
        kwargs["protocol"] = 2
    if "driver_info" in accepted:
        kwargs["driver_info"] = None  # no CLIENT SETINFO in the handshake
    elif "lib_name" in accepted:
        kwargs["lib_name"] = None
        kwargs["lib_version"] = None
    ca_file, insecure = tls.get("ca_file"), tls.get("insecure")
    if target.tls:
        if ca_file:
            path = os.path.expanduser(ca_file)
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ProbeError(f"[probes.redis] ca_file '{ca_file}' is not a readable file; give the path of "
                                 "the PEM bundle of the CA that signed the server's certificate")
            kwargs["ssl_ca_certs"] = path
        if insecure:
            # The server's certificate is not checked at all: the connection is
            # encrypted but anyone on the path can pose as the server.
            kwargs["ssl_cert_reqs"] = "none"
            kwargs["ssl_check_hostname"] = False
        else:
            kwargs["ssl_cert_reqs"] = "required"
    return {k: v for k, v in kwargs.items() if k in accepted or k in ("host", "port")}


_CONTAINERS = {"XINFO", "CLIENT", "MEMORY", "CONFIG", "OBJECT"}


def command_name(cmd: tuple) -> str:
    name = str(cmd[0]).upper()
    if name in _CONTAINERS and len(cmd) > 1:
        return f"{name}|{str(cmd[1]).upper()}"
    return name


def init_params(cls) -> set[str]:
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
        msg = f"{where}: the user may not run a command qdiag needs ({first_words(raw)}); grant read commands (+@read +info +client|list)"
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
        msg = (f"{where}: TLS failed ({first_words(raw)}); if the port speaks plain Redis use redis://, "
               "otherwise check the certificate")
    elif "closed by server" in low or "connection reset" in low:
        hint = "if the server expects TLS use rediss://; otherwise check protected-mode and maxclients"
        msg = f"{where}: the server closed the connection; {hint}"
    elif "protocol error" in low or "invalidresponse" in kind.lower():
        msg = f"{where}: the reply is not Redis protocol ({first_words(raw)}); is this the Redis port?"
    else:
        msg = f"{where}: cannot talk to Redis ({kind}: {first_words(raw)})"
    if target.password:
        msg = msg.replace(target.password, "***")
    return msg


def first_words(raw: str, limit: int = 120) -> str:
    return rp.clip(raw, limit) or ""


def is_error(reply: Any) -> bool:
    """A command's reply in a pipelined batch is its ResponseError when the server refused it."""
    return isinstance(reply, Exception)


class Run:
    """One probe run: the connection, the options, and what the run learns on the way."""

    def __init__(self, ctx, target, opts: dict[str, Any], link: Link, notes: list[str]):
        self.ctx = ctx
        self.target = target
        self.opts = opts
        self.link = link
        self.notes = notes
        self.errors: dict[tuple, str] = {}
        self.own_id: str | None = None
        self.dbsize: int | None = None

