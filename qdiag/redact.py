"""Secrets never leave the process: one scrubber, applied to every document
before it is written (snapshot) or printed (report, logs, error messages).

What is masked, and where (the rule, by position):
- URL userinfo: in `scheme://…@…`, everything from the first `:` after `://`
  to the URL's last `@` is a password (an unencoded `/`, `#`, `?` or `@` in a
  password stays inside the mask; a URL with an `@` in its path loses a little
  more than its password, never less).
- Values of secret keys: `password=x`, `"DB_PASSWORD": "x"`, `api_key: x`,
  `Authorization: Bearer x`, and, as whole words only, `key=`, `sig=`, `auth=`,
  `X-Amz-Signature=` (query strings); `password x` unless x is an ordinary word
  ("password for user bob" stays).
- Flags whose name has a secret word as one of its parts: `--db-pass x`,
  `--auth=x`, `--api-key x`; in a command line also `-a x`, `-pX`, `-u user:x`.
- Known secrets (passwords given to qdiag) wherever they stand as a whole word
  in free text: an error message, a log line, a command line, any string of a
  document with more than one word.  A one-word string inside a document is a
  name (the user `guest`, a queue `orders` or `orders-dlq` when the password is
  `orders`) and is masked by position only; so is the user part of a URL.  A
  secret stored as a value has a secret key, which masks it whole.
- A document's values under secret-looking keys, whatever they hold.

Every pattern here runs in time linear in the text: no quantifier can re-scan
what another one already consumed (see tests/unit/test_security_redact.py for
the adversarial inputs).  The regex engine holds the GIL for a whole search, so
a quadratic pattern would freeze every other thread, the runner's deadline
included.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any, Iterable

MASK = "***"

# Keys whose values are secrets whatever they hold (document keys, TOML keys).
_SECRET_KEY = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|credential|sasl_plain_password|authorization)$", re.I)

# The patterns below run on an ASCII-lowered copy of the text (same length,
# so positions carry over to the original): keyword-first patterns without
# IGNORECASE let the engine skip ahead, and no pattern has a prefix that could
# be re-scanned from every position of a long word.

# Words that end a key whose value is a secret ("DB_PASSWORD=", "db.password:").
_STRONG = (r"password|passwd|passphrase|pwd|secret|token|credentials?|"
           r"api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key")
# Words that are secret keys only as a whole word or after a dash ("?sig=",
# "X-Amz-Signature=", "key="), not at the end of another word ("routing_key=").
_WEAK = r"(?<![\w.])(?:auth|sig|signature|key)"
_QUOTED_OR_WORD = r"""(?P<val>"[^"\n]*"?|'[^'\n]*'?|%s)"""

# key=value and key: value.
_KV = re.compile(rf"(?:{_STRONG}|{_WEAK})[\"']?[ \t]*[:=][ \t]*" + _QUOTED_OR_WORD % r"[^\s,;&}\]]+")
# "password hunter2" (no separator): the next word, unless an ordinary one.
_SPACED = re.compile(r"(?:password|passwd|passphrase)[ \t]+" + _QUOTED_OR_WORD % r"(?![:=])[^\s,;]+")
_ORDINARY_AFTER_PASSWORD = frozenset(
    "is was are were be been for of to the a an and or not no in on at by from with as if "
    "authentication auth login failed failure incorrect invalid wrong mismatch expired required missing "
    "reset changed change must should does did has have had will can cannot policy prompt file field "
    "hash length too".split())
# Authorization: Bearer x
_AUTH_HEADER = re.compile(r"(?<!\w)authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
                          r"(?:(?:basic|bearer|token|digest|negotiate)[ \t]+)?(?P<val>[^\s,;\"']+)")
# --flag=value, --flag value: the flag decides (by its parts) whether the value is secret.
_FLAG = re.compile(r"(?<![\w.-])(?P<flag>--[a-z][\w.-]*)(?:=|[ \t]+)(?P<val>(?!-)[^\s]+)")
_SECRET_PARTS = frozenset(
    "pass password passwd pwd pw passphrase secret token auth authorization key apikey credential credentials "
    "cred creds sig signature".split())
_PARTS = re.compile(r"[-_.]+")
# Free text has words; a name (queue, user, topic, host) is one.
_MORE_THAN_ONE_WORD = re.compile(r"\S\s+\S")
# The end of a URL inside free text.
_URL_END = re.compile(r"[^\s\"'<>`]*")

# Substrings (of the lowered text) without which a pattern cannot match: most
# strings (names, states, numbers) skip every pattern.
_KV_WORDS = ("pass", "pwd", "secret", "token", "cred", "key", "auth", "sig")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _lower(text: str) -> str:
    """Lower-case ASCII letters only, keeping every position."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def _secret_flag(flag: str) -> bool:
    return any(part.lower() in _SECRET_PARTS for part in _PARTS.split(flag.lstrip("-")) if part)


def _masked_value(val: str) -> str:
    """The mask, keeping the quotes of a quoted value."""
    if val[:1] in ("\"", "'"):
        return val[0] + MASK + (val[0] if len(val) >= 2 and val[-1] == val[0] else "")
    return MASK


def _already(val: str) -> bool:
    return val.strip("\"'").startswith(MASK)


def _mask_values(text: str, low: str, pattern: re.Pattern, keep=lambda m, val: False) -> str:
    """Replace group `val` of every match of `pattern` in `low` (the lowered
    `text`), in `text`, unless it is already masked or `keep` says so."""
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(low):
        a, b = m.span("val")
        val = text[a:b]
        if _already(val) or keep(m, val):
            continue
        out.append(text[pos:a])
        out.append(_masked_value(val))
        pos = b
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _ordinary_word(m: re.Match, val: str) -> bool:
    return val.lower().rstrip(".,:;!") in _ORDINARY_AFTER_PASSWORD


def _not_secret_flag(m: re.Match, val: str) -> bool:
    return not _secret_flag(m["flag"])


def scrub_pairs(text: str) -> str:
    """Mask secret values: key/value pairs (keeping their quotes), Authorization
    headers, "password WORD", and --flag values of secret-looking flags."""
    low = _lower(text)
    if "--" in low:
        text = _mask_values(text, low, _FLAG, _not_secret_flag)
        low = _lower(text)
    if "authorization" in low:
        text = _mask_values(text, low, _AUTH_HEADER)
        low = _lower(text)
    if any(word in low for word in _KV_WORDS):
        text = _mask_values(text, low, _KV)
        low = _lower(text)
    if "pass" in low:
        text = _mask_values(text, low, _SPACED, _ordinary_word)
    return text


def mask_userinfo(text: str) -> str:
    """Mask the password of every URL in `text` (see the module's rule)."""
    found = text.find("://")
    if found < 0 or "@" not in text:
        return text
    out: list[str] = []
    pos = 0
    while found >= 0:
        start = found + 3
        end = _URL_END.match(text, start).end()
        at = text.rfind("@", start, end)
        if at > start:
            colon = text.find(":", start, at)
            if colon >= 0 and text[colon + 1:at] != MASK:
                out.append(text[pos:colon + 1])
                out.append(MASK)
                pos = at
        # Whatever follows inside this URL was covered by its last "@".
        found = text.find("://", max(end, start))
    out.append(text[pos:])
    return "".join(out)


def redact_url(url: str) -> str:
    """http://user:pw@host -> http://user:***@host; anything else unchanged."""
    return mask_userinfo(url)


def _known_pattern(secrets: Iterable[str]) -> re.Pattern | None:
    """One regex for the known secrets, longest first, each as a whole word:
    a secret whose first (last) character is a word character must not have
    one before (after) it.  Not in the user position of a URL (`guest` in
    `amqp://guest:***@`, its password masked by then): that is a name."""
    parts = []
    for secret in secrets:
        before = r"(?<!\w)" if re.match(r"\w", secret[0]) else ""
        after = r"(?!\w)" if re.match(r"\w", secret[-1]) else ""
        parts.append(before + re.escape(secret) + after + re.escape(f":{MASK}@").join(("(?!", ")")))
    return re.compile("|".join(parts)) if parts else None


def scrub_text(text: str) -> str:
    """Free text (a message, a log line, a command line): every rule of the
    module but the known secrets (Redactor.text adds those)."""
    return scrub_pairs(mask_userinfo(text))


# ---------------------------------------------------------------- command lines

_SCRIPT_SUFFIXES = (".py", ".jar", ".war", ".js", ".mjs", ".rb", ".pl", ".sh", ".php", ".lua")


def command_line(argv: list[str] | None, *, full: bool) -> list[str] | None:
    """A process's command line, fit for a snapshot.

    full=True (a target of the run): every argument, secret values masked
    (`-a PASS`, `-pPASS`, `-u user:PASS`, `--db-pass PASS`, `--auth=PASS`, URL
    passwords, `key=`/`sig=` query values).
    full=False (any other process on the host): the executable, the flag names
    and script paths only; every other value becomes one "…" per run of them."""
    if argv is None:
        return None
    args = [str(a) for a in argv]
    if len(args) == 1 and " " in args[0].strip():
        args = args[0].split()  # a rewritten process title: one string, words inside
    if not args:
        return []
    return _full(args) if full else _names_only(args)


def _full(args: list[str]) -> list[str]:
    out = [scrub_text(args[0])]
    mask_next = False
    user_next = False
    for arg in args[1:]:
        if mask_next and not arg.startswith("-"):
            out.append(MASK)
        elif user_next and ":" in arg and not arg.startswith("-"):
            out.append(arg.split(":", 1)[0] + ":" + MASK)
        elif arg == "-a" or (arg.startswith("--") and "=" not in arg and _secret_flag(arg)):
            out.append(arg)
            mask_next, user_next = True, False
            continue
        elif arg in ("-u", "--user"):
            out.append(arg)
            mask_next, user_next = False, True
            continue
        elif arg.startswith("-u") and ":" in arg:
            out.append(arg.split(":", 1)[0] + ":" + MASK)  # curl's -uUSER:PASSWORD
        elif arg.startswith("-p") and len(arg) > 2 and not arg.startswith("-p="):
            out.append("-p" + MASK)  # mysql's -pPASSWORD
        elif arg.startswith("--") and "=" in arg:
            flag, _, value = arg.partition("=")
            out.append(flag + "=" + (MASK if _secret_flag(flag) and value else scrub_text(value)))
        else:
            out.append(scrub_text(arg))
        mask_next = user_next = False
    return out


_MODULE = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*")


def _names_only(args: list[str]) -> list[str]:
    out = [args[0]]
    for arg in args[1:]:
        if out[-1] == "-m" and _MODULE.fullmatch(arg):
            kept = arg  # python -m celery: the program, not a value
        elif arg.startswith("--") and len(arg) > 2:
            kept = arg.split("=", 1)[0]
        elif arg.startswith("-") and len(arg) > 1 and not arg[1].isdigit():
            kept = arg[:2]  # "-pPASS" and "-Xmx4g" alike: a value may be glued to the letter
        elif "=" not in arg and ":" not in arg and "@" not in arg and arg.endswith(_SCRIPT_SUFFIXES):
            kept = arg
        else:
            kept = "…"
        if kept == "…" and out[-1] == "…":
            continue
        out.append(kept)
    return out


# ---------------------------------------------------------------- documents

# Keys and names repeat thousands of times in a document (every partition row
# has the same keys, every row of a group its group and topic): each distinct
# short string is masked once per Redactor.  Bounded, so that a document of
# distinct strings costs no more memory than a cache-less pass plus this.
_MEMO_MAX_CHARS = 200
_MEMO_MAX_ENTRIES = 50_000


class Redactor:
    """Scrubs known secret values (collected from the targets) and anything that
    looks like a secret, everywhere in a JSON-like document."""

    def __init__(self, secrets: Iterable[str] | None = None):
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in (secrets or ()) if isinstance(s, str) and len(s) >= 3},
                               key=len, reverse=True)
        self._known = _known_pattern(self._secrets)
        self._memo: dict[str, str] = {}
        self._secret_keys: dict[str, bool] = {}

    @staticmethod
    def is_secret_key(key: str) -> bool:
        return bool(_SECRET_KEY.search(key))

    def text(self, value: str) -> str:
        """Free text: everything, a known secret standing alone included."""
        value = scrub_text(value)
        if self._known is not None and any(secret in value for secret in self._secrets):
            value = self._known.sub(MASK, value)
        return value

    def _value(self, value: str) -> str:
        if len(value) > _MEMO_MAX_CHARS:
            return self._masked(value)
        done = self._memo.get(value)
        if done is None:
            done = self._masked(value)
            if len(self._memo) < _MEMO_MAX_ENTRIES:
                self._memo[value] = done
        return done

    def _masked(self, value: str) -> str:
        if not _MORE_THAN_ONE_WORD.search(value):
            return scrub_text(value)  # a name: masked by position only (see the module's rule)
        return self.text(value)

    def _is_secret_key(self, key: str) -> bool:
        found = self._secret_keys.get(key)
        if found is None:
            found = bool(_SECRET_KEY.search(key))
            if len(self._secret_keys) < _MEMO_MAX_ENTRIES:
                self._secret_keys[key] = found
        return found

    def __call__(self, doc: Any) -> Any:
        if isinstance(doc, str):
            return self._value(doc)
        if isinstance(doc, dict):
            out = {}
            for key, value in doc.items():
                if isinstance(key, str) and self._is_secret_key(key) and value not in (None, "", False):
                    out[key] = MASK
                else:
                    out[self._value(key) if isinstance(key, str) else key] = self(value)
            return out
        if isinstance(doc, (list, tuple)):
            return [self(v) for v in doc]
        return doc


# ---------------------------------------------------------------- the run's known secrets

# Passwords of the current run, for the places that print without a document
# at hand: error messages (qdiag.errors) and --debug logging.  Set by
# qdiag.config.resolve(); replaced, never merged, on every resolve.
_RUN_SECRETS: tuple[str, ...] = ()
_RUN_LOCK = threading.Lock()


def set_run_secrets(secrets: Iterable[str]) -> None:
    global _RUN_SECRETS
    with _RUN_LOCK:
        _RUN_SECRETS = tuple(s for s in secrets if isinstance(s, str) and s)


def run_secrets() -> tuple[str, ...]:
    return _RUN_SECRETS


def scrub_message(text: str) -> str:
    """An error or log message: every rule, and this run's known secrets."""
    return Redactor(_RUN_SECRETS).text(text)


def format_exception(exc: BaseException) -> str:
    """A traceback for --debug, masked like any message."""
    return scrub_message("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def mask_log_record(record: logging.LogRecord) -> None:
    """Fold the message, its arguments and its traceback into one masked text."""
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    elif record.exc_text:
        text += "\n" + record.exc_text
    if record.stack_info:
        text += "\n" + record.stack_info
    record.msg = scrub_message(text)
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None
