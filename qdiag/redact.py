"""Secrets never leave the process: one scrubber, applied to every document
before it is written (snapshot) or printed (report, logs)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# Keys whose values are secrets whatever they hold.
_SECRET_KEY = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|credential|sasl_plain_password|authorization)$", re.I)
# user:password@ inside any URL-looking string.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@", re.I)
# Command-line style secrets: --password=x, --token x, password=x.
_ARG_SECRET = re.compile(r"(?P<key>(--)?[\w-]*(password|passwd|secret|token|api-?key)[\w-]*)(?P<sep>[=: ])(?P<val>\S+)", re.I)


def redact_url(url: str) -> str:
    """http://user:pw@host -> http://user:***@host; anything else unchanged."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:{MASK}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:  # a malformed URL can still carry a password
        return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Redactor:
    """Scrubs known secret values (collected from the targets) and anything that
    looks like a secret, everywhere in a JSON-like document."""

    def __init__(self, secrets: set[str] | None = None):
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in (secrets or set()) if s and len(s) >= 3}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
        return _ARG_SECRET.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", value)

    def __call__(self, doc: Any) -> Any:
        if isinstance(doc, str):
            return self.text(doc)
        if isinstance(doc, dict):
            out = {}
            for key, value in doc.items():
                if isinstance(key, str) and _SECRET_KEY.search(key) and value not in (None, "", False):
                    out[key] = MASK
                else:
                    out[key] = self(value)
            return out
        if isinstance(doc, (list, tuple)):
            return [self(v) for v in doc]
        return doc
