"""A small blocking AMQP 0-9-1 client that does one thing: passive
queue.declare, which returns a queue's ready-message count and consumer count
as the queue process knows them now (the management API's figures trail by up
to one statistics interval).

Why not pika's BlockingConnection: it bounds only the connection set-up
(`socket_timeout`, `stack_timeout`); `blocked_connection_timeout` applies only
after the broker sent connection.blocked.  A passive declare the broker never
answers waits for pika's heartbeat check, which runs every heartbeat + 5 s
and gives up after two silent checks (measured with pika 1.x against a proxy
that stops relaying once the declare is sent: 14 s with heartbeat=2, 130 s with
the broker's default 60 s, never with heartbeat=0); a broker whose heartbeats
still flow while a busy queue process does not answer keeps it waiting forever.
This client uses pika's frame codec over a socket of its own, so
every call (connect, handshake, each declare) has its own deadline.

Read-only: passive declares never create a queue; nothing is published,
consumed or acknowledged.  Heartbeats are switched off for the connection's
short life (every read has its own timeout instead).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

# Reply codes the broker closes a channel or connection with.
NOT_FOUND = 404
RESOURCE_LOCKED = 405
ACCESS_REFUSED = 403
NOT_ALLOWED = 530

CONNECTION_NAME = "qdiag (read-only probe)"
# A frame bigger than this before tuning means the peer is not an AMQP broker.
MAX_FRAME_BEFORE_TUNE = 1 << 20


class AmqpFailure(Exception):
    """One line, without the password: what failed, where, and the likely fix.
    `vhost_only`: the failure concerns this vhost, another may still work."""

    def __init__(self, message: str, vhost_only: bool = False):
        super().__init__(message)
        self.vhost_only = vhost_only


class AmqpTimeout(AmqpFailure):
    """A call got no answer in time; the connection is no longer usable."""


@dataclass(frozen=True)
class Declared:
    queue: str
    ready: int | None  # None when the queue could not be read (see `code`)
    consumers: int | None
    code: int | None = None  # the broker's reply code when it refused (404: no such queue)
    text: str | None = None


class PassiveClient:
    """One connection to one vhost.

    `timeout()` is called before every call and returns the seconds that call
    may take (the probe passes its own per-call timeout, capped by what is left
    of its deadline)."""

    def __init__(self, host: str, port: int, *, username: str, password: str, vhost: str, tls: bool,
                 timeout: Callable[[], float], server_hostname: str | None = None):
        self.host, self.port, self.vhost, self.tls = host, port, vhost, tls
        self.username = username
        self._password = password
        self._timeout = timeout
        self._server_hostname = server_hostname or host
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._sock: socket.socket | None = None
        self._buf = b""
        self._channel = 0  # the open channel, 0 when none
        self._last_channel = 0
        self._channel_max = 2047
        self._frame_max = MAX_FRAME_BEFORE_TUNE
        self.calls = 0

    # ------------------------------------------------------------ public

    def open(self) -> None:
        import pika.credentials
        import pika.frame
        import pika.spec as spec

        deadline = self._deadline()
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self._left(deadline))
        except socket.timeout:
            raise AmqpTimeout(f"no TCP connection to {self.where} within {self._timeout():.1f}s "
                              f"(host down or port filtered?)") from None
        except ConnectionRefusedError:
            raise AmqpFailure(f"connection refused by {self.where} (RabbitMQ not running there, or a different "
                              f"AMQP port?)") from None
        except socket.gaierror:
            raise AmqpFailure(f"cannot resolve the host of {self.where} (check the name in --rabbitmq)") from None
        except OSError as exc:
            raise AmqpFailure(f"cannot open a TCP connection to {self.where} ({exc.strerror or type(exc).__name__})") \
                from None
        self._sock = raw
        try:
            if self.tls:
                self._sock = self._wrap_tls(raw, deadline)
            self._send(pika.frame.ProtocolHeader().marshal(), deadline)
            start = self._expect(0, spec.Connection.Start, deadline, "connection.start")
            mechanism, response = pika.credentials.PlainCredentials(self.username, self._password).response_for(start)
            if mechanism is None:
                raise AmqpFailure(f"{self.where} does not accept PLAIN authentication "
                                  f"(offers {start.mechanisms!r})")
            props = {"product": "qdiag", "connection_name": CONNECTION_NAME,
                     "capabilities": {"authentication_failure_close": True}}
            self._method(0, spec.Connection.StartOk(client_properties=props, mechanism=mechanism,
                                                    response=response, locale="en_US"), deadline)
            tune = self._expect(0, spec.Connection.Tune, deadline, "connection.tune")
            self._channel_max = tune.channel_max or 2047
            self._frame_max = tune.frame_max or 131072
            self._method(0, spec.Connection.TuneOk(channel_max=self._channel_max, frame_max=self._frame_max,
                                                   heartbeat=0), deadline)
            self._method(0, spec.Connection.Open(virtual_host=self.vhost), deadline)
            self._expect(0, spec.Connection.OpenOk, deadline, "connection.open")
            self._open_channel()
        except BaseException:
            self._abort()
            raise

    def declare(self, queue: str) -> Declared:
        """Passive queue.declare: the queue's ready and consumer counts, or the
        broker's refusal (404: no such queue; 405: another connection's
        exclusive queue).  A refusal closes the channel; the next call opens
        another."""
        import pika.spec as spec

        if self._sock is None:
            raise AmqpFailure(f"the AMQP connection to {self.where} is closed")
        if self._channel == 0:
            self._open_channel()
        deadline = self._deadline()
        self.calls += 1
        self._method(self._channel, spec.Queue.Declare(queue=queue, passive=True), deadline)
        frame = self._next_method(deadline, f"queue.declare of '{queue}'")
        method = frame.method
        if isinstance(method, spec.Queue.DeclareOk):
            return Declared(queue, method.message_count, method.consumer_count)
        if isinstance(method, spec.Channel.Close) and frame.channel_number == self._channel:
            self._method(self._channel, spec.Channel.CloseOk(), deadline)
            self._channel = 0
            return Declared(queue, None, None, method.reply_code, _text(method.reply_text))
        raise AmqpFailure(f"{self.where} answered queue.declare of '{queue}' with {method.NAME}")

    def close(self) -> None:
        """Connection.close, waiting for close-ok no longer than one call; the
        socket is closed whatever happens."""
        import pika.spec as spec

        if self._sock is None:
            return
        try:
            deadline = self._deadline()
            self._method(0, spec.Connection.Close(reply_code=200, reply_text="qdiag done", class_id=0, method_id=0),
                         deadline)
            while True:
                frame = self._next_method(deadline, "connection.close")
                if isinstance(frame.method, spec.Connection.CloseOk):
                    break
        except (AmqpFailure, OSError):
            pass  # closing: the socket goes anyway
        finally:
            self._abort()

    # ------------------------------------------------------------ frames

    def _deadline(self) -> float:
        return time.monotonic() + max(0.01, self._timeout())

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.01, deadline - time.monotonic())

    def _wrap_tls(self, raw: socket.socket, deadline: float) -> socket.socket:
        context = ssl.create_default_context()
        raw.settimeout(self._left(deadline))
        try:
            return context.wrap_socket(raw, server_hostname=self._server_hostname)
        except ssl.SSLCertVerificationError:
            raise AmqpFailure(f"the TLS certificate of {self.where} is not trusted (add its CA to the system "
                              f"trust store)") from None
        except (ssl.SSLError, ConnectionResetError) as exc:
            if "WRONG_VERSION_NUMBER" in str(exc) or isinstance(exc, ConnectionResetError):
                raise AmqpFailure(f"TLS handshake with {self.where} failed: if that port is plaintext use "
                                  f"amqp:// instead of amqps://") from None
            raise AmqpFailure(f"TLS handshake with {self.where} failed ({exc.__class__.__name__})") from None
        except socket.timeout:
            raise AmqpTimeout(f"{self.where} accepted the connection but did not complete the TLS handshake within "
                              f"{self._timeout():.1f}s") from None

    def _send(self, data: bytes, deadline: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(self._left(deadline))
        try:
            self._sock.sendall(data)
        except socket.timeout:
            self._abort()
            raise AmqpTimeout(f"{self.where} did not take our request within {self._timeout():.1f}s") from None
        except OSError as exc:
            self._abort()
            raise AmqpFailure(f"the AMQP connection to {self.where} broke ({type(exc).__name__})") from None

    def _method(self, channel: int, method, deadline: float) -> None:
        import pika.frame

        self._send(pika.frame.Method(channel, method).marshal(), deadline)

    def _read_frame(self, deadline: float, what: str):
        import pika.exceptions
        import pika.frame

        while True:
            try:
                consumed, frame = pika.frame.decode_frame(self._buf)
            except (pika.exceptions.InvalidFrameError, KeyError, ValueError, TypeError, UnicodeDecodeError):
                self._abort()
                raise AmqpFailure(f"{self.where} does not speak AMQP 0-9-1 (not an AMQP port? the management "
                                  f"API is http://, usually port 15672)") from None
            if consumed:
                self._buf = self._buf[consumed:]
                return frame
            if len(self._buf) >= 7 and int.from_bytes(self._buf[3:7], "big") > self._frame_max:
                self._abort()
                raise AmqpFailure(f"{self.where} does not speak AMQP 0-9-1 (frame larger than agreed)")
            assert self._sock is not None
            self._sock.settimeout(self._left(deadline))
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                self._abort()
                if what.startswith("connection."):
                    raise AmqpTimeout(f"{self.where} accepted the connection but did not complete the AMQP handshake "
                                      f"within {self._timeout():.1f}s (not an AMQP port, or the broker is "
                                      f"overloaded)") from None
                raise AmqpTimeout(f"no answer from {self.where} to {what} within {self._timeout():.1f}s (the queue "
                                  f"process is busy or the broker is overloaded)") from None
            except OSError as exc:
                self._abort()
                raise AmqpFailure(f"the AMQP connection to {self.where} broke during {what} "
                                  f"({type(exc).__name__})") from None
            if not data:
                self._abort()
                raise AmqpFailure(self._closed_early(what))
            self._buf += data

    def _closed_early(self, what: str) -> str:
        if what in ("connection.start",):
            return (f"{self.where} closed the connection at the AMQP greeting (not an AMQP port, or TLS expected: "
                    f"amqps://)")
        if what == "connection.tune":
            return (f"{self.where} closed the connection after authentication: wrong user or password (user "
                    f"'{self.username}')")
        return f"{self.where} closed the AMQP connection during {what}"

    def _next_method(self, deadline: float, what: str):
        """The next method frame (heartbeats and content frames skipped); a
        connection.close from the broker becomes an AmqpFailure."""
        import pika.frame
        import pika.spec as spec

        while True:
            frame = self._read_frame(deadline, what)
            if isinstance(frame, pika.frame.ProtocolHeader):
                self._abort()
                raise AmqpFailure(f"{self.where} refused AMQP 0-9-1 (it offers {frame.major}-{frame.minor}-"
                                  f"{frame.revision})")
            if not isinstance(frame, pika.frame.Method):
                continue
            if isinstance(frame.method, spec.Connection.Close):
                self._refused(frame.method, what, deadline)
            return frame

    def _refused(self, close, what: str, deadline: float):
        import pika.spec as spec

        try:
            self._method(0, spec.Connection.CloseOk(), deadline)
        except AmqpFailure:
            pass
        self._abort()
        code, text = close.reply_code, _text(close.reply_text)
        if code == ACCESS_REFUSED and what == "connection.tune":
            raise AmqpFailure(f"wrong user or password for {self.where} (user '{self.username}'; check the "
                              f"credentials in --rabbitmq)")
        if what == "connection.open":
            raise AmqpFailure(f"vhost '{self.vhost}' does not exist on {self.where} or user '{self.username}' "
                              f"may not use it", vhost_only=True)
        raise AmqpFailure(f"{self.where} closed the AMQP connection during {what}: {code} {text}")

    def _expect(self, channel: int, kind, deadline: float, what: str):
        frame = self._next_method(deadline, what)
        if frame.channel_number != channel or not isinstance(frame.method, kind):
            self._abort()
            raise AmqpFailure(f"{self.where} answered {what} with {frame.method.NAME} (not a RabbitMQ broker?)")
        return frame.method

    def _open_channel(self) -> None:
        import pika.spec as spec

        number = self._last_channel = self._last_channel + 1
        if number > self._channel_max:
            raise AmqpFailure(f"used up the {self._channel_max} channels {self.where} allows on one connection")
        deadline = self._deadline()
        self._method(number, spec.Channel.Open(), deadline)
        self._expect(number, spec.Channel.OpenOk, deadline, "channel.open")
        self._channel = number

    def _abort(self) -> None:
        sock, self._sock = self._sock, None
        self._channel = 0
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def read_counts(queues: dict[str, list[str]], *, connect: Callable[[str], PassiveClient],
                time_left: Callable[[], float], refused: Callable[[int | None, str | None], str],
                min_left_s: float = 0.05) -> dict[tuple[str, str], dict]:
    """Passive declares of `queues` ({vhost: [names]}), one connection per vhost.

    Returns {(vhost, name): {"ready", "consumers"} or {"why"}}.  After a call
    that got no answer, or a failure that is not about one vhost, nothing
    more is tried: every remaining queue gets the same reason (so a hung
    broker costs one call's timeout, not one per queue)."""
    out: dict[tuple[str, str], dict] = {}
    stopped: str | None = None
    for vhost, names in queues.items():
        if stopped is None and time_left() <= min_left_s:
            stopped = "the probe's deadline came before the AMQP reading"
        if stopped is not None:
            out.update({(vhost, n): {"why": stopped} for n in names})
            continue
        client = connect(vhost)
        try:
            client.open()
        except AmqpFailure as exc:
            out.update({(vhost, n): {"why": str(exc)} for n in names})
            if not exc.vhost_only:
                stopped = str(exc)
            continue
        try:
            for i, name in enumerate(names):
                if stopped is None and time_left() <= min_left_s:
                    stopped = "the probe's deadline came before the AMQP reading"
                if stopped is not None:
                    out.update({(vhost, n): {"why": stopped} for n in names[i:]})
                    break
                try:
                    got = client.declare(name)
                except AmqpFailure as exc:
                    stopped = str(exc)
                    out.update({(vhost, n): {"why": stopped} for n in names[i:]})
                    break
                out[(vhost, name)] = ({"ready": got.ready, "consumers": got.consumers} if got.ready is not None
                                      else {"why": refused(got.code, got.text), "code": got.code})
        finally:
            client.close()
    return out
