"""The RabbitMQ management API, read with GET only: one client whose every
request has a timeout within the probe's deadline and whose every failure is
one line without the password."""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote, urlsplit

from qdiag.probe import ProbeError


class ManagementApi:
    """GET-only client of the management API.  Every call has a timeout within
    the probe's deadline; every failure becomes one ProbeError line without
    the password."""

    def __init__(self, ctx, target, request_timeout_s: float):
        import requests

        self._requests = requests
        self.ctx = ctx
        self.target = target
        self.request_timeout_s = request_timeout_s
        parts = urlsplit(target.url)
        host = f"[{target.host}]" if ":" in target.host else target.host
        path = parts.path.rstrip("/")
        if path.endswith("/api"):
            path = path[: -len("/api")]
        self.base = f"{target.scheme}://{host}:{target.port}{path}/api"
        self.where = f"{target.host}:{target.port}"
        self.session = requests.Session()
        self.session.auth = (target.username, target.password)
        self.session.headers["Accept"] = "application/json"
        self.count = 0

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, missing_ok: bool = False) -> Any:
        """GET base+path; None on 404 when missing_ok."""
        self.ctx.check_deadline()
        timeout = self.ctx.io_timeout(self.request_timeout_s)
        self.count += 1
        req = self._requests
        try:
            resp = self.session.get(self.base + path, params=params, timeout=(timeout, timeout), allow_redirects=False)
        except req.exceptions.SSLError as exc:
            reason = _ssl_reason(exc)
            if reason == "certificate not trusted":
                raise ProbeError(f"the TLS certificate of {self.where} is not trusted (add its CA to the system "
                                 f"trust store, or set REQUESTS_CA_BUNDLE)") from None
            raise ProbeError(f"TLS handshake with {self.where} failed ({reason}): if that port is plaintext "
                             f"use http:// instead of https://") from None
        except req.exceptions.ConnectTimeout:
            raise ProbeError(f"no TCP connection to the RabbitMQ management API at {self.where} within {timeout:.1f}s "
                             f"(host down or port filtered?)") from None
        except req.exceptions.ReadTimeout:
            raise ProbeError(f"{self.where} accepted the connection but sent no answer within {timeout:.1f}s "
                             f"(not the management port, or the broker is overloaded)") from None
        except req.exceptions.ConnectionError as exc:
            raise ProbeError(_connection_failure(exc, self.where)) from None
        except req.exceptions.RequestException as exc:
            raise ProbeError(f"GET {path} on {self.where} failed: {type(exc).__name__}") from None
        if resp.status_code == 401:
            raise ProbeError(f"wrong user or password for {self.where} (user '{self.target.username}'; "
                             f"check the credentials in --rabbitmq)")
        if resp.status_code == 403:
            raise ProbeError(f"user '{self.target.username}' may not read {path} on {self.where} "
                             f"(give it the 'monitoring' tag: rabbitmqctl set_user_tags)")
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code == 404:
            raise ProbeError(f"no RabbitMQ management API at {self.base.split('@')[-1]} ({path} not found: "
                             f"wrong port or path prefix?)")
        if resp.status_code >= 400 or resp.status_code in (301, 302, 303, 307, 308):
            raise ProbeError(f"{self.where} answered HTTP {resp.status_code} to GET {path} "
                             f"(is this the RabbitMQ management API?)")
        try:
            return resp.json()
        except ValueError:
            raise ProbeError(f"{self.where} answered GET {path} with something that is not JSON "
                             f"(is this the RabbitMQ management API?)") from None


def _ssl_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("WRONG_VERSION_NUMBER", "CERTIFICATE_VERIFY_FAILED", "UNEXPECTED_EOF", "HANDSHAKE_FAILURE"):
        if marker in text:
            return {"WRONG_VERSION_NUMBER": "the server did not speak TLS",
                    "CERTIFICATE_VERIFY_FAILED": "certificate not trusted",
                    "UNEXPECTED_EOF": "connection closed during the handshake",
                    "HANDSHAKE_FAILURE": "handshake refused"}[marker]
    return "TLS error"


def _causes(exc: BaseException):
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([e.__cause__, e.__context__, *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]])
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)


def _connection_failure(exc: BaseException, where: str) -> str:
    text = " ".join(str(e) for e in _causes(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in _causes(exc)) or "Connection refused" in text:
        return (f"connection refused by {where} (RabbitMQ not running there, or the management plugin is off: "
                f"rabbitmq-plugins enable rabbitmq_management)")
    if any(isinstance(e, ConnectionResetError) for e in _causes(exc)) or "Connection aborted" in text:
        return (f"{where} closed the connection on an HTTP request (an AMQP port? the management API "
                f"listens on 15672 by default; for AMQP use amqp://)")
    if "Name or service not known" in text or "getaddrinfo" in text or "Temporary failure in name resolution" in text:
        return f"cannot resolve the host of {where} (check the name in --rabbitmq)"
    return f"cannot reach the RabbitMQ management API at {where} (network error)"


def queue_path(vhost: str, name: str) -> str:
    return f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}"
