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
# Command-line style secrets: --password=x, --token x.
_ARG_SECRET = re.compile(r"(?P<key>--[\w-]*(password|passwd|secret|token|api-?key)[\w-]*)(?P<sep>[= ])(?P<val>\S+)", re.I)
# Key/value forms in log lines and configs: "password": "x", password: x, api_key=x.
_KV_SECRET = re.compile(
    r"""(?P<key>["']?[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|credentials?)["']?\s*[:=]\s*)"""
    r"""(?P<val>"[^"]*"|'[^']*'|[^\s,;&}\]]+)""", re.IGNORECASE)
# Authorization: Bearer x
_AUTH_HEADER = re.compile(r"(?P<key>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:basic|bearer|token|digest|negotiate)?\s*)"
                          r"(?P<val>[^\s,;\"']+)", re.IGNORECASE)


# Every pattern below needs one of these; a string without them cannot match.
_MAY_HOLD_SECRET = re.compile(r"@|pass|pwd|secret|token|api.?key|credential|authorization", re.I)


def scrub_pairs(text: str) -> str:
    """Mask the value of secret-looking key/value pairs, keeping their quotes."""
    def keep_quotes(m: re.Match) -> str:
        val = m["val"]
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
            return f"{m['key']}{val[0]}{MASK}{val[0]}"
        return f"{m['key']}{MASK}"

    text = _AUTH_HEADER.sub(lambda m: f"{m['key']}{MASK}" if m["val"] != MASK else m[0], text)
    return _KV_SECRET.sub(lambda m: m[0] if m["val"].strip("\"'") == MASK else keep_quotes(m), text)


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

    @staticmethod
    def is_secret_key(key: str) -> bool:
        return bool(_SECRET_KEY.search(key))

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if not _MAY_HOLD_SECRET.search(value):  # most strings: names, states; skip the four patterns
            return value
        value = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
        value = _ARG_SECRET.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", value)
        return scrub_pairs(value)

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
