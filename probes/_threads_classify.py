"""Thread dumps in, classified threads and per-process summaries out.

Pure: text and plain data in, dicts out.  The probe (probes/threads.py) runs
py-spy / jcmd and hands the raw output here; the unit tests feed recorded dumps
from tests/fixtures/threads/.

Classes: on-cpu, lock-wait, socket-io, queue-wait (waiting for work: an idle
consumer, an empty queue, a selector with nothing ready), sleep, gil-wait,
unknown.
"""

from __future__ import annotations

import json
import keyword
import re
from collections import Counter
from typing import Callable, Iterable

ON_CPU = "on-cpu"
LOCK_WAIT = "lock-wait"
SOCKET_IO = "socket-io"
QUEUE_WAIT = "queue-wait"
SLEEP = "sleep"
GIL_WAIT = "gil-wait"
UNKNOWN = "unknown"
CLASSES = (ON_CPU, LOCK_WAIT, SOCKET_IO, QUEUE_WAIT, SLEEP, GIL_WAIT, UNKNOWN)

# When a thread's dumps disagree and there is no majority, the more telling class wins.
_PRIORITY = {c: i for i, c in enumerate((LOCK_WAIT, ON_CPU, SOCKET_IO, GIL_WAIT, QUEUE_WAIT, SLEEP, UNKNOWN))}
# Classes that mean "waiting for work or time": an unchanged stack there is idleness, not a hang.
_IDLE_CLASSES = (QUEUE_WAIT, SLEEP)

TOP_STACKS = 3
STACK_DEPTH = 5  # innermost frames shown per stack
MAX_THREADS_LISTED = 100
# A thread that used at least half a core over the window was running, whatever one dump caught it doing.
BUSY_CPU_PERCENT = 50.0
# Stacks compared over less time than this say nothing about progress (a 0 s window takes
# its dumps back to back).
MIN_COMPARE_SPAN_S = 0.5

LineReader = Callable[[str, int], "str | None"]


def _no_source(filename: str, line: int) -> None:
    return None


# --------------------------------------------------------------------------- py-spy


def parse_pyspy(text: str) -> list[dict]:
    """`py-spy dump --json` output -> normalised threads.

    py-spy prints a list of threads, each {pid, thread_id, thread_name,
    os_thread_id, active, owns_gil, frames: [{name, filename, short_filename,
    line, ...}]}, innermost frame first.  From Python 3.11 on `name` is the
    qualified name ("Queue.get"); before, the bare name ("get").
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"py-spy output is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, list):
        raise ValueError("py-spy output is not a list of threads")
    threads = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        frames = []
        for f in item.get("frames") or []:
            if not isinstance(f, dict):
                continue
            filename = f.get("filename") or ""
            frames.append({
                "function": str(f.get("name") or "?"),
                "file": filename,
                "short_file": f.get("short_filename") or filename.rsplit("/", 1)[-1],
                "line": f.get("line") if isinstance(f.get("line"), int) and f.get("line") > 0 else None,
            })
        os_tid = item.get("os_thread_id")
        threads.append({
            "id": os_tid if isinstance(os_tid, int) else item.get("thread_id"),
            "name": item.get("thread_name") or (f"thread {item.get('thread_id')}"),
            "active": item.get("active") if isinstance(item.get("active"), bool) else None,
            "owns_gil": item.get("owns_gil") if isinstance(item.get("owns_gil"), bool) else None,
            "frames": frames,
        })
    return threads


def pyspy_error(stderr: str) -> tuple[str, str]:
    """py-spy's stderr -> (kind, one line).  kind: permission, no-process, not-python, other.

    py-spy prints "Error: <what>" then a "Caused by:" chain whose last entry is
    the OS error; without rights it may instead print "Permission Denied: ...".
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    text = " ".join(lines)
    head = next((ln[len("Error:"):].strip() for ln in lines if ln.startswith("Error:")), None)
    causes = [re.sub(r"^\d+:\s*", "", ln) for ln in lines if re.match(r"^\d+:\s", ln)]
    cause = causes[-1] if causes else None
    if "Permission Denied" in text or "Permission denied" in text or "Operation not permitted" in text \
            or "(os error 1)" in text or "(os error 13)" in text:
        kind = "permission"
    elif "No such file or directory (os error 2)" in text or "No such process" in text \
            or "(os error 3)" in text:
        kind = "no-process"
    elif "Failed to find python version" in text or "Failed to find a python interpreter" in text \
            or "Failed to find python" in text:
        kind = "not-python"
    else:
        kind = "other"
    message = head or (lines[0] if lines else "py-spy failed without a message")
    if cause and cause not in message:
        message = f"{message.rstrip('.')}: {cause}"
    return kind, message


# --------------------------------------------------------------------------- Java


_J_HEADER = re.compile(r'^"(?P<name>.*)"(?P<rest>(?: .*)?)$')
_J_STATE = re.compile(r"^\s+java\.lang\.Thread\.State: (?P<state>[A-Z_]+)(?: \((?P<why>[^)]*)\))?")
_J_FRAME = re.compile(r"^\s+at (?P<function>[^(]+)\((?P<source>[^)]*)\)")
_J_LOCK = re.compile(r"^\s+- (?P<what>waiting to lock|locked|parking to wait for|waiting on|waiting to re-lock in wait\(\))"
                     r"\s+<(?P<addr>0x[0-9a-f]+)>(?: \(a (?P<type>[^)]+)\))?")
_J_DEADLOCK_START = re.compile(r"^Found one Java-level deadlock:")
_J_DEADLOCK_COUNT = re.compile(r"^Found (\d+) deadlocks?\.")
_J_DL_WAITING = re.compile(
    r"^\s+waiting (?:to lock monitor (?P<mon>0x[0-9a-f]+) \(object (?P<obj>0x[0-9a-f]+), a (?P<otype>[^)]+)\)"
    r"|for ownable synchronizer (?P<sync>0x[0-9a-f]+), \(a (?P<stype>[^)]+)\))")
_J_DL_HELD = re.compile(r'^\s+which is held by (?:"(?P<owner>.*)"|(?P<unknown>\S+))')


def _java_frame(m: re.Match) -> dict:
    source = m["source"]
    file = line = None
    module_file = source.rsplit("/", 1)[-1]  # "java.base@17/Thread.java:840" -> "Thread.java:840"
    if ":" in module_file:
        file, _, num = module_file.rpartition(":")
        line = int(num) if num.isdigit() else None
    elif module_file not in ("Native Method", "Unknown Source"):
        file = module_file
    return {"function": m["function"].strip(), "file": file or source, "short_file": file or module_file, "line": line,
            "native": source.endswith("Native Method")}


def parse_thread_print(text: str) -> dict:
    """`jcmd <pid> Thread.print` or `jstack <pid>` -> {"threads": [...], "deadlocks": [...]}.

    Threads without Java frames are the JVM's own (GC, compiler, VM thread);
    they are kept with "internal": True.  "deadlocks" is the JVM's own
    deadlock report, one entry per cycle.
    """
    if "Full thread dump" not in text and not _J_HEADER.search(text.split("\n", 1)[0]):
        raise ValueError("not a Java thread dump (no 'Full thread dump' header)")
    threads: list[dict] = []
    deadlocks: list[dict] = []
    current: dict | None = None
    cycle: list[dict] | None = None
    in_deadlock_stacks = False
    pending: dict | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if _J_DEADLOCK_START.match(line):
            current = None
            cycle = []
            deadlocks.append({"cycle": cycle})
            in_deadlock_stacks = False
            continue
        if cycle is not None:
            if line.startswith("Java stack information for the threads listed above"):
                in_deadlock_stacks = True
                continue
            if _J_DEADLOCK_COUNT.match(line):
                cycle, in_deadlock_stacks = None, False
                continue
            if in_deadlock_stacks:
                continue
            header = re.match(r'^"(?P<name>.*)":$', line)
            if header:
                pending = {"thread": header["name"], "waiting_for": None, "lock_type": None, "held_by": None}
                cycle.append(pending)
                continue
            if pending is not None:
                w = _J_DL_WAITING.match(line)
                if w:
                    pending["waiting_for"] = w["obj"] or w["sync"]
                    pending["lock_type"] = w["otype"] or w["stype"]
                    continue
                h = _J_DL_HELD.match(line)
                if h:
                    pending["held_by"] = h["owner"] if h["owner"] is not None else None
            continue
        if line.startswith("JNI global refs"):
            current = None
            continue
        header = _J_HEADER.match(line)
        if header and not line.startswith(" ") and not line.startswith("\t"):
            rest = header["rest"]
            nid = re.search(r"\bnid=(0x[0-9a-f]+|\d+)", rest)
            os_tid = None
            if nid:
                os_tid = int(nid.group(1), 16) if nid.group(1).startswith("0x") else int(nid.group(1))
            cpu = re.search(r"\bcpu=([\d.]+)ms", rest)
            elapsed = re.search(r"\belapsed=([\d.]+)s", rest)
            # What the JVM says the OS thread is doing: "runnable", "waiting on condition",
            # "in Object.wait()", "waiting for monitor entry", "sleeping".
            status = re.search(r"\bnid=\S+\s+(?P<status>[^\[]*?)\s*(?:\[0x[0-9a-f]+\])?\s*$", rest)
            current = {
                "id": os_tid if os_tid is not None else header["name"],
                "name": header["name"],
                "state": None, "state_detail": None,
                "daemon": " daemon " in f"{rest} ",
                "cpu_ms": float(cpu.group(1)) if cpu else None,
                "elapsed_s": float(elapsed.group(1)) if elapsed else None,
                "os_status": status["status"] if status and status["status"] else None,
                "frames": [], "waiting_to_lock": None, "parking_for": None, "waiting_on": None, "locked": [],
                "lock_type": None,
            }
            threads.append(current)
            continue
        if current is None:
            continue
        state = _J_STATE.match(line)
        if state:
            current["state"], current["state_detail"] = state["state"], state["why"]
            continue
        if line.strip() == "Locked ownable synchronizers:":  # only with Thread.print -l / jstack -l
            current["_in_synchronizers"] = True
            continue
        if current.get("_in_synchronizers"):
            sync = re.match(r"^\s+- <(0x[0-9a-f]+)>", line)
            if sync:
                current["locked"].append(sync.group(1))
            continue
        frame = _J_FRAME.match(line)
        if frame:
            current["frames"].append(_java_frame(frame))
            continue
        lock = _J_LOCK.match(line)
        if lock:
            what, addr = lock["what"], lock["addr"]
            if what == "waiting to lock" or what.startswith("waiting to re-lock"):
                current["waiting_to_lock"], current["lock_type"] = addr, lock["type"]
            elif what == "locked":
                current["locked"].append(addr)
            elif what == "parking to wait for":
                current["parking_for"], current["lock_type"] = addr, lock["type"]
            elif what == "waiting on":
                current["waiting_on"] = addr
    for t in threads:
        t.pop("_in_synchronizers", None)
        t["internal"] = not t["frames"]
    return {"threads": threads, "deadlocks": [d for d in deadlocks if d["cycle"]]}


def jcmd_error(output: str) -> tuple[str, str]:
    """jcmd/jstack's output on failure -> (kind, one line): permission, no-process, not-java, other."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    lines = [ln for ln in lines if not re.fullmatch(r"\d+:", ln)]
    first = lines[0] if lines else "no output"
    message = re.sub(r"^(java\.io\.|com\.sun\.tools\.attach\.)", "", first)
    if "Operation not permitted" in first or "Permission denied" in first or "well-known file is not secure" in first:
        return "permission", message
    if "No such process" in first:
        return "no-process", message
    if "AttachNotSupportedException" in first or "HotSpot VM not loaded" in first:
        return "not-java", message
    return "other", message


# --------------------------------------------------------------------------- helpers


def _base(function: str) -> str:
    return function.rsplit(".", 1)[-1]


def _tail(path: str, *tails: str) -> bool:
    path = path.replace("\\", "/")
    return any(path == t or path.endswith("/" + t) for t in tails)


_STDLIB = re.compile(r"/lib(?:64)?/python\d(?:\.\d+)?t?/(?!site-packages/|dist-packages/)")


def is_python_library(path: str) -> bool:
    """Standard library or an installed package: not the application's own code."""
    path = path.replace("\\", "/")
    return ("/site-packages/" in path or "/dist-packages/" in path or bool(_STDLIB.search(path))
            or path.startswith("<frozen"))


def where(frame: dict) -> str:
    loc = frame.get("short_file") or frame.get("file") or "?"
    if frame.get("line"):
        loc = f"{loc}:{frame['line']}"
    return f"{frame.get('function', '?')} ({loc})"


def stack_key(frames: list[dict]) -> tuple:
    return tuple((f.get("function"), f.get("file"), f.get("line")) for f in frames)


# --------------------------------------------------------------------------- Python classification

# The innermost frame tells what the thread is blocked in.  C calls are not
# frames: a thread in time.sleep() or Lock.acquire() shows its caller's line.
_PY_PRIMITIVE_FUNCS = [
    # (file tail, base names, primitive, detail)
    (("threading.py",), {"wait"}, "condition", "threading.Condition.wait"),
    (("threading.py",), {"_wait_for_tstate_lock"}, "join", "threading.Thread.join"),
    # The main thread at interpreter exit, joining the non-daemon threads (`lock.acquire()` there).
    (("threading.py",), {"_shutdown"}, "join", "interpreter exit: waiting for non-daemon threads to finish"),
    (("selectors.py",), {"select"}, "select", "selector"),
    (("socket.py",), {"accept"}, "accept", "socket.accept"),
    (("socket.py",), {"create_connection", "connect"}, "socket", "connecting"),
    (("socket.py",), {"getaddrinfo"}, "socket", "resolving a host name (getaddrinfo)"),
    (("socket.py",), {"readinto", "recv", "recv_into", "recvfrom", "recvmsg", "read"}, "socket", "reading"),
    (("socket.py",), {"send", "sendall", "sendto", "sendmsg", "sendfile", "_sendfile_use_send", "write"}, "socket",
     "writing"),
    (("ssl.py",), {"do_handshake"}, "socket", "TLS handshake"),
    (("ssl.py",), {"read", "recv", "recv_into", "recvfrom", "recvfrom_into"}, "socket", "reading (TLS)"),
    (("ssl.py",), {"write", "send", "sendall"}, "socket", "writing (TLS)"),
    (("ssl.py",), {"connect", "_real_connect"}, "socket", "connecting (TLS)"),
    (("multiprocessing/connection.py",), {"_recv", "_recv_bytes", "recv", "recv_bytes", "poll", "_poll", "wait"},
     "get", "reading from a multiprocessing pipe"),
    (("concurrent/futures/thread.py",), {"_worker"}, "get", "idle ThreadPoolExecutor worker"),
]

# Source of the innermost line when the thread is blocked in a C call.
_PY_LINE_PATTERNS = [
    (re.compile(r"\bsleep\s*\("), "sleep", "time.sleep"),
    (re.compile(r"\.acquire\s*\("), "lock", "Lock.acquire"),
    # A `with` statement whose context manager has no Python-level __enter__ frame and
    # no call in it: entering a C-level lock (Lock, RLock, multiprocessing locks).
    (re.compile(r"^\s*with\s+[^(#]*:\s*(#.*)?$"), "lock", "entering a `with` block on a lock"),
    (re.compile(r"\b(getaddrinfo|gethostbyname(_ex)?|gethostbyaddr)\s*\("), "socket", "resolving a host name"),
    (re.compile(r"\.(recv|recv_into|recvfrom|recvfrom_into|recvmsg)\s*\("), "socket", "reading"),
    (re.compile(r"\.(send|sendall|sendto|sendmsg)\s*\("), "socket", "writing"),
    (re.compile(r"\.(connect|connect_ex)\s*\(|\bcreate_connection\s*\("), "socket", "connecting"),
    (re.compile(r"\.do_handshake\s*\("), "socket", "TLS handshake"),
    (re.compile(r"\.accept\s*\("), "accept", "socket.accept"),
    (re.compile(r"\b(select|poll|epoll_wait|kevent|control)\s*\("), "select", "select/poll"),
    (re.compile(r"\.(get|get_nowait|consume|take|dequeue\w*)\s*\("), "get", "getting an item"),
    (re.compile(r"\.(join|wait|result)\s*\("), "join", "waiting for another thread or task"),
]
_CALL = re.compile(r"([A-Za-z_][\w.]*)\s*\(")


def _has_call(text: str) -> bool:
    """Whether a source line calls something (`if (x):` does not; `f(x)` and `a.b(x)` do)."""
    return any(not keyword.iskeyword(m.group(1).rsplit(".", 1)[-1]) for m in _CALL.finditer(text))

# Callers that say what a condition/selector/socket wait is for.  Only the
# library frames nearest the innermost one count: once the stack reaches the
# application's own code, outer frames (a consumer loop that called the app's
# handler, which called an HTTP API) no longer describe the wait.
_PY_POOL_WAITS = [
    (("urllib3/connectionpool.py",), {"_get_conn"}),
    (("sqlalchemy/pool/impl.py", "sqlalchemy/pool/base.py"), {"_do_get"}),
    (("psycopg_pool/pool.py",), {"getconn"}),
    (("psycopg2/pool.py",), {"getconn", "_getconn"}),
    (("redis/connection.py",), {"get_connection"}),
]
_PY_CONSUMER_WAITS = [
    # (path token, base names, label)
    ("redis/", {"brpop", "blpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop", "xread",
                "xreadgroup", "listen", "get_message"}, "redis {fn}"),
    ("kafka/", {"poll", "__next__", "_message_generator", "_message_generator_v2", "_poll_once", "run_forever"},
     "kafka-python {fn}"),
    ("pika/", {"start_consuming", "process_data_events", "consume", "_process_data_events"}, "pika {fn}"),
    ("kombu/", {"drain_events", "_drain_events"}, "kombu {fn}"),
    ("celery/worker/", {"asynloop", "synloop"}, "celery {fn}"),
    ("rq/", {"dequeue_any", "dequeue_job_and_maintain_ttl", "work"}, "rq {fn}"),
    ("dramatiq/", {"__next__"}, "dramatiq {fn}"),
    ("asyncio/", {"_run_once", "run_forever"}, "asyncio event loop"),
    ("socketserver.py", {"serve_forever"}, "socketserver.serve_forever"),
]
_PY_STDLIB_CONTEXT = [
    (("queue.py",), {"get"}, QUEUE_WAIT, "waiting for an item (queue.Queue.get)"),
    (("queue.py",), {"put"}, QUEUE_WAIT, "waiting for room in a full queue (queue.Queue.put)"),
    (("multiprocessing/queues.py",), {"get"}, QUEUE_WAIT, "waiting for an item (multiprocessing.Queue.get)"),
    (("concurrent/futures/_base.py",), {"result", "wait", "as_completed", "_result_or_cancel"}, QUEUE_WAIT,
     "waiting for a future's result"),
    (("threading.py",), {"join", "_wait_for_tstate_lock"}, QUEUE_WAIT, "waiting for a thread to finish (Thread.join)"),
    (("threading.py",), {"_shutdown"}, QUEUE_WAIT, "interpreter exit: waiting for non-daemon threads to finish"),
    (("threading.py",), {"acquire"}, LOCK_WAIT, "waiting on a threading.Semaphore"),
]
_CLIENT_HINTS = [
    ("redis/", "redis"), ("kafka/", "kafka"), ("confluent_kafka/", "kafka"), ("pika/", "amqp"), ("kombu/", "amqp"),
    ("aio_pika/", "amqp"), ("psycopg", "postgres"), ("asyncpg/", "postgres"), ("pymysql/", "mysql"),
    ("MySQLdb/", "mysql"), ("mysql/connector/", "mysql"), ("pymongo/", "mongodb"), ("grpc/", "grpc"),
    ("http/client.py", "http"), ("urllib3/", "http"), ("requests/", "http"), ("httpx/", "http"),
    ("httpcore/", "http"), ("aiohttp/", "http"), ("botocore/", "http"),
]


def _match_funcs(frame: dict, table) -> tuple | None:
    for row in table:
        tails, names = row[0], row[1]
        if _tail(frame["file"], *tails) and _base(frame["function"]) in names:
            return row
    return None


def _library_segment(frames: list[dict]) -> list[dict]:
    """The frames from the innermost outwards up to (not including) the first application frame."""
    if not frames:
        return []
    out = [frames[0]]
    if not is_python_library(frames[0]["file"]):
        return out
    for f in frames[1:]:
        if not is_python_library(f["file"]):
            break
        out.append(f)
    return out


def client_hint(frames: Iterable[dict]) -> str | None:
    for f in frames:
        path = (f.get("file") or "").replace("\\", "/")
        for token, hint in _CLIENT_HINTS:
            if token in path:
                return hint
    return None


def _line_text(frame: dict, read_line: LineReader) -> str | None:
    if not frame.get("line") or not frame.get("file"):
        return None
    try:
        text = read_line(frame["file"], frame["line"])
    except Exception:  # an unreadable file is "unknown", never a failure
        return None
    return text.strip() if isinstance(text, str) and text.strip() else None


def classify_python(thread: dict, *, read_line: LineReader = _no_source, gil_held_elsewhere: bool = False) -> dict:
    """One thread of one py-spy dump -> {"class", "detail", "kind", "client"}.

    kind is "lock" for a plain lock wait (the only kind a deadlock is built
    from), "semaphore"/"pool" for waits on a bounded resource, else None.
    """
    frames = thread["frames"]
    result = {"class": UNKNOWN, "detail": None, "kind": None, "client": None}
    if not frames:
        result["detail"] = "no Python frames"
        return result
    top = frames[0]
    if thread.get("owns_gil"):
        result.update({"class": ON_CPU, "detail": f"running {where(top)}"})
        return result
    text = _line_text(top, read_line)

    if thread.get("active"):
        # Runnable without the GIL: inside a C call that released it, or waiting for the GIL.
        if text is not None and not _has_call(text):
            result.update({"class": GIL_WAIT, "detail": f"runnable at `{_short(text)}` but not holding the GIL"})
        else:
            result.update({"class": ON_CPU, "detail": f"running native code called from {where(top)}"})
        return result

    primitive, detail = None, None
    row = _match_funcs(top, _PY_PRIMITIVE_FUNCS)
    if row:
        primitive, detail = row[2], row[3]
    elif text is not None:
        for pattern, prim, what in _PY_LINE_PATTERNS:
            if pattern.search(text):
                primitive, detail = prim, f"{what}: `{_short(text)}`"
                break

    segment = _library_segment(frames)
    result["client"] = client_hint(segment)
    if primitive == "lock":
        result.update({"class": LOCK_WAIT, "detail": detail, "kind": "lock"})
        return result

    for f in segment:
        if _match_funcs(f, _PY_POOL_WAITS):
            result.update({"class": LOCK_WAIT, "kind": "pool",
                           "detail": f"waiting for a free pooled connection ({where(f)})"})
            return result
    if primitive in (None, "socket", "select", "sleep", "condition", "get", "accept", "join"):
        for f in segment:
            for token, names, label in _PY_CONSUMER_WAITS:
                if token in f["file"].replace("\\", "/") and _base(f["function"]) in names:
                    result.update({"class": QUEUE_WAIT, "detail": "waiting for messages: " + label.format(fn=_base(f["function"]))})
                    return result
    if primitive in ("condition", "join", "get", None):
        for f in segment[1:] if row else segment:
            ctx = _match_funcs(f, _PY_STDLIB_CONTEXT)
            if ctx:
                result.update({"class": ctx[2], "detail": ctx[3], "kind": "semaphore" if ctx[2] == LOCK_WAIT else None})
                return result

    if primitive == "socket":
        via = f" ({result['client']} client)" if result["client"] else ""
        result.update({"class": SOCKET_IO, "detail": f"{detail}{via} at {where(top)}"})
    elif primitive == "sleep":
        result.update({"class": SLEEP, "detail": detail})
    elif primitive == "select":
        result.update({"class": QUEUE_WAIT, "detail": f"waiting for socket events ({detail})"})
    elif primitive == "accept":
        result.update({"class": QUEUE_WAIT, "detail": "waiting for connections (accept)"})
    elif primitive == "condition":
        outer = frames[1]["function"] if len(frames) > 1 and _tail(frames[1]["file"], "threading.py") else None
        if outer and "." in outer:  # Python 3.11+: qualified names say which primitive
            what = outer
        elif outer:
            what = "a threading.Event or similar"
        else:
            what = "a threading.Condition"
        result.update({"class": QUEUE_WAIT, "detail": f"waiting on {what}"})
    elif primitive in ("get", "join"):
        result.update({"class": QUEUE_WAIT, "detail": detail})
    elif text is not None and not _has_call(text):
        if gil_held_elsewhere:
            result.update({"class": GIL_WAIT, "detail": f"paused at `{_short(text)}` while another thread holds the GIL"})
        else:
            result["detail"] = f"paused at `{_short(text)}`"
    elif text is not None:
        result["detail"] = f"blocked in a native call: `{_short(text)}` ({where(top)})"
    else:
        result["detail"] = f"blocked at {where(top)} (source not readable)"
    return result


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- Java classification

_J_LIBRARY_PREFIXES = ("java.", "javax.", "jdk.", "sun.", "com.sun.", "kotlin.", "kotlinx.", "scala.",
                       "org.apache.kafka.", "io.netty.", "com.rabbitmq.", "redis.clients.", "io.lettuce.",
                       "org.springframework.", "org.apache.http.", "okhttp3.", "okio.", "org.eclipse.jetty.",
                       "org.postgresql.", "com.mysql.", "com.zaxxer.hikari.", "io.grpc.", "reactor.")
_J_SOCKET = re.compile(r"^(sun\.nio\.ch\.(SocketDispatcher\.(read|write)0?|NioSocketImpl\.(park|read|write|timedRead|implRead|connect|timedFinishConnect)"
                       r"|Net\.(poll|connect0?|pollConnect)|SocketChannelImpl\.(read|write|finishConnect))"
                       r"|java\.net\.(SocketInputStream\.socketRead0?|SocketOutputStream\.socketWrite0?|PlainSocketImpl\.socketConnect"
                       r"|Inet\dAddressImpl\.lookupAllHostAddr|InetAddress\.getAllByName)"
                       r"|sun\.security\.ssl\.SSLSocketImpl\.(startHandshake|readHandshakeRecord|decode))")
_J_SELECT = re.compile(r"^sun\.nio\.ch\.(EPoll\.wait|EPollSelectorImpl\.doSelect|KQueue\.poll|PollSelectorImpl\.doSelect"
                       r"|SelectorImpl\.(lockAndDoSelect|select))")
_J_ACCEPT = re.compile(r"^(java\.net\.PlainSocketImpl\.socketAccept|sun\.nio\.ch\.(Net\.accept|NioSocketImpl\.accept"
                       r"|ServerSocketChannelImpl\.accept))")
_J_CONSUMER = re.compile(r"^(org\.apache\.kafka\.clients\.consumer\.(KafkaConsumer|internals\.\w+)\.poll"
                         r"|io\.netty\.channel\.nio\.NioEventLoop\.(run|select)"
                         r"|io\.netty\.channel\.epoll\.EpollEventLoop\.(run|epollWait)"
                         r"|com\.rabbitmq\.client\.impl\.(AMQConnection\$MainLoop|WorkPool)"
                         r"|redis\.clients\.jedis\.Jedis\.(brpop|blpop|xreadGroup|xread))")
_J_LOCKS = re.compile(r"^java\.util\.concurrent\.locks\.(ReentrantLock|ReentrantReadWriteLock\$\w+|StampedLock)\.\w*lock"
                      r"|^java\.util\.concurrent\.locks\.AbstractQueuedSynchronizer\.acquire(Interruptibly|Nanos)?$")
_J_SEMAPHORE = re.compile(r"^java\.util\.concurrent\.Semaphore\.(acquire|tryAcquire)")
_J_QUEUE = re.compile(r"^java\.util\.concurrent\.(\w*BlockingQueue|\w*BlockingDeque|SynchronousQueue|DelayQueue"
                      r"|LinkedTransferQueue|ScheduledThreadPoolExecutor\$DelayedWorkQueue)\.(take|poll|put|offer|transfer)"
                      r"|^java\.util\.concurrent\.ThreadPoolExecutor\.getTask"
                      r"|^java\.util\.concurrent\.ForkJoinPool\.(awaitWork|runWorker)")
_J_FUTURE = re.compile(r"^java\.util\.concurrent\.(FutureTask\.(get|awaitDone)|CompletableFuture\.(get|join|waitingGet|timedGet)"
                       r"|CountDownLatch\.await|CyclicBarrier\.\w*await|Phaser\.\w*await)")


def _java_library(frame: dict) -> bool:
    return frame["function"].startswith(_J_LIBRARY_PREFIXES)


def classify_java(thread: dict, owners: dict[str, str] | None = None) -> dict:
    """One thread of one Thread.print dump -> {"class", "detail", "kind", "client"}.

    First what the thread is blocked in (from its state and innermost frames),
    then what for (from the library frames around it); a RUNNABLE thread that
    is not in a blocking native call is on CPU whatever its callers are.
    """
    frames = thread["frames"]
    owners = owners or {}
    result = {"class": UNKNOWN, "detail": None, "kind": None, "client": None}
    if not frames:
        result["detail"] = "JVM internal thread"
        return result
    state = thread.get("state") or ""
    top = frames[0]["function"]
    segment = [frames[0]]
    for f in frames[1:]:
        if not _java_library(f):
            break
        segment.append(f)
    functions = [f["function"] for f in segment]

    def held(addr):
        return f' held by "{owners[addr]}"' if addr in owners else ""

    if state == "BLOCKED":
        addr = thread.get("waiting_to_lock")
        result.update({"class": LOCK_WAIT, "kind": "lock",
                       "detail": f"waiting to lock <{addr}> ({thread.get('lock_type') or 'monitor'}){held(addr)}"})
        return result
    if any(fn.startswith("java.lang.Thread.sleep") for fn in functions[:2]):
        result.update({"class": SLEEP, "detail": "Thread.sleep"})
        return result

    if state in ("WAITING", "TIMED_WAITING"):
        blocking = "wait" if (thread.get("waiting_on") or top == "java.lang.Object.wait") else "park"
    elif any(_J_SOCKET.search(fn) for fn in functions[:4]):
        blocking = "socket"
    elif _J_SELECT.search(top):
        blocking = "select"
    elif _J_ACCEPT.search(top):
        blocking = "accept"
    else:
        blocking = None
    if blocking is None and (thread.get("os_status") or "").startswith("waiting"):
        # RUNNABLE to Java, but the JVM knows the OS thread waits (a VM-internal wait in a native method).
        result.update({"class": QUEUE_WAIT, "detail": f"{thread['os_status']} in {where(frames[0])}"})
        return result
    if blocking is None:
        if state == "RUNNABLE" or not state:
            native = " (native method: may be blocked in native code)" if frames[0].get("native") else ""
            result.update({"class": ON_CPU, "detail": f"running {where(frames[0])}{native}"})
        else:
            result["detail"] = f"state {state} at {where(frames[0])}"
        return result

    for fn in functions:
        if blocking == "park" and _J_LOCKS.search(fn):
            addr = thread.get("parking_for")
            result.update({"class": LOCK_WAIT, "kind": "lock",
                           "detail": f"waiting for {thread.get('lock_type') or fn} <{addr}>{held(addr)}"})
            return result
        if blocking == "park" and _J_SEMAPHORE.search(fn):
            result.update({"class": LOCK_WAIT, "kind": "semaphore", "detail": f"waiting on a Semaphore ({fn})"})
            return result
        if _J_CONSUMER.search(fn):
            result.update({"class": QUEUE_WAIT, "detail": f"waiting for messages: {fn}"})
            return result
        if _J_QUEUE.search(fn):
            result.update({"class": QUEUE_WAIT, "detail": f"waiting for work: {fn}"})
            return result
        if _J_FUTURE.search(fn):
            result.update({"class": QUEUE_WAIT, "detail": f"waiting for a result: {fn}"})
            return result
    if blocking == "socket":
        result.update({"class": SOCKET_IO, "detail": f"in {top}"})
    elif blocking == "select":
        result.update({"class": QUEUE_WAIT, "detail": "waiting for socket events (selector)"})
    elif blocking == "accept":
        result.update({"class": QUEUE_WAIT, "detail": "waiting for connections (accept)"})
    elif blocking == "wait":
        result.update({"class": QUEUE_WAIT, "detail": f"Object.wait on <{thread.get('waiting_on')}>"})
    else:
        result.update({"class": QUEUE_WAIT, "detail": f"parked ({thread.get('lock_type') or top})"})
    return result


def java_lock_owners(threads: list[dict]) -> dict[str, str]:
    """Monitor address -> name of the thread holding it (from "- locked <0x...>" lines)."""
    owners = {}
    for t in threads:
        for addr in t.get("locked", []):
            # "- locked" also appears under Object.wait() frames for a monitor already released.
            if addr != t.get("waiting_on"):
                owners.setdefault(addr, t["name"])
    return owners


# --------------------------------------------------------------------------- peers


def pick_peer(connections: list[dict], *, client: str | None, broker_ports: dict[str, set[int]]) -> str | None:
    """The one remote address a thread in socket I/O is most likely talking to, or None.

    connections: the process's TCP connections as {"raddr": "ip:port", "rport": int,
    "status": ..., "listening_port": bool}.  A broker client hint narrows to that
    broker's ports; any other client excludes every broker port.  Only an
    unambiguous answer is given.
    """
    ports_of_client = broker_ports.get(client or "", set())
    all_broker_ports = set().union(*broker_ports.values()) if broker_ports else set()
    candidates = set()
    for c in connections:
        if c.get("status") not in ("ESTABLISHED", "SYN_SENT") or not c.get("raddr") or c.get("inbound"):
            continue
        port = c.get("rport")
        if ports_of_client:
            if port in ports_of_client:
                candidates.add(c["raddr"])
        elif port not in all_broker_ports:
            candidates.add(c["raddr"])
    return next(iter(candidates)) if len(candidates) == 1 else None


# --------------------------------------------------------------------------- summaries


def _vote(classes: list[str]) -> str:
    counts = Counter(classes)
    best = max(counts.values())
    return min((c for c, n in counts.items() if n == best), key=lambda c: _PRIORITY.get(c, 99))


def summarise(dumps: list[dict], *, runtime: str, cpu_percent: dict | None = None,
              peers: Callable[[dict], "str | None"] | None = None, jvm_deadlocks: list[dict] | None = None) -> dict:
    """Dumps of one process -> per-thread classes and the process summary.

    dumps: [{"offset_s": float, "threads": [thread with "verdict" (from classify_*)]}],
    in time order.  cpu_percent: os thread id -> % of one core over the window.
    """
    cpu_percent = cpu_percent or {}
    order: list = []
    seen: dict = {}
    for dump in dumps:
        for t in dump["threads"]:
            if t.get("internal"):
                continue
            if t["id"] not in seen:
                seen[t["id"]] = []
                order.append(t["id"])
            seen[t["id"]].append(t)
    n_dumps = len(dumps)
    span = dumps[-1]["offset_s"] - dumps[0]["offset_s"] if dumps else 0.0
    comparable = n_dumps >= 2 and span >= MIN_COMPARE_SPAN_S
    if runtime == "java":
        cpu_percent = {**_java_cpu_percent(seen), **cpu_percent}
    threads_out = []
    lock_waiters_throughout = []
    for tid in order:
        samples = seen[tid]
        last = samples[-1]
        classes = [s["verdict"]["class"] for s in samples]
        cls = _vote(classes)
        cpu = cpu_percent.get(tid)
        if cpu is not None and cpu >= BUSY_CPU_PERCENT and cls in (GIL_WAIT, UNKNOWN, ON_CPU):
            cls = ON_CPU
        # The detail of the most recent dump that agrees with the verdict.
        agreeing = [s for s in samples if s["verdict"]["class"] == cls] or samples
        chosen = agreeing[-1]
        unchanged = None
        if comparable:
            unchanged = len(samples) == n_dumps and len({stack_key(s["frames"]) for s in samples}) == 1
        entry = {
            "name": last["name"],
            "id": tid,
            "class": cls,
            "detail": chosen["verdict"]["detail"],
            "where": where(chosen["frames"][0]) if chosen["frames"] else None,
            "frames": [where(f) for f in chosen["frames"][:STACK_DEPTH]],
            "classes_seen": dict(Counter(classes)),
            "unchanged": unchanged,
            "cpu_percent": cpu,
            "peer": None,
        }
        if runtime == "java":
            entry["state"] = last.get("state")
        if cls == SOCKET_IO and peers is not None:
            entry["peer"] = peers(chosen)
        threads_out.append(entry)
        if (unchanged and all(s["verdict"]["class"] == LOCK_WAIT and s["verdict"].get("kind") == "lock"
                              for s in samples)):
            lock_waiters_throughout.append(entry)

    counts = {c: 0 for c in CLASSES}
    for t in threads_out:
        counts[t["class"]] += 1

    # Most common stacks: innermost frames, counted over every thread of every dump.
    stacks: Counter = Counter()
    stack_threads: dict = {}
    stack_class: dict = {}
    for tid in order:
        for s in seen[tid]:
            key = tuple(where(f) for f in s["frames"][:STACK_DEPTH])
            if not key:
                continue
            stacks[key] += 1
            stack_threads.setdefault(key, set()).add(tid)
            stack_class.setdefault(key, Counter())[s["verdict"]["class"]] += 1
    top_stacks = [{"threads": len(stack_threads[key]), "samples": n, "class": stack_class[key].most_common(1)[0][0],
                   "frames": list(key)}
                  for key, n in sorted(stacks.items(), key=lambda kv: (-len(stack_threads[kv[0]]), -kv[1], kv[0]))[:TOP_STACKS]]

    hot: Counter = Counter()
    hot_threads: dict = {}
    for tid in order:
        for s in seen[tid]:
            if s["verdict"]["class"] == ON_CPU and s["frames"]:
                key = where(s["frames"][0])
                hot[key] += 1
                hot_threads.setdefault(key, set()).add(s["name"])
    hot_functions = [{"where": key, "function": key.split(" (", 1)[0], "samples": n, "threads": sorted(hot_threads[key])}
                     for key, n in hot.most_common(5)]

    stuck = [{"thread": t["name"], "class": t["class"], "where": t["where"]}
             for t in threads_out if t["unchanged"] and t["class"] not in _IDLE_CLASSES]

    deadlock = None
    if jvm_deadlocks:
        names = []
        for d in jvm_deadlocks:
            for link in d["cycle"]:
                if link["thread"] not in names:
                    names.append(link["thread"])
        at = {t["name"]: t["where"] for t in threads_out}
        deadlock = {"source": "jvm", "confirmed": True, "threads": names,
                    "cycles": [d["cycle"] for d in jvm_deadlocks],
                    "evidence": f"the JVM reported {len(jvm_deadlocks)} Java-level deadlock(s)",
                    "where": [at[n] for n in names if at.get(n)]}
    elif runtime != "java" and len(lock_waiters_throughout) >= 2:
        deadlock = {"source": "stack-analysis", "confirmed": False,
                    "threads": [t["name"] for t in lock_waiters_throughout],
                    "cycles": None,
                    "evidence": (f"{len(lock_waiters_throughout)} threads waited for a lock in every one of {n_dumps} "
                                 f"dumps over {span:.1f}s without their stacks moving"),
                    "where": [t["where"] for t in lock_waiters_throughout]}

    order_key = {c: i for i, c in enumerate(CLASSES)}
    threads_out.sort(key=lambda t: (order_key.get(t["class"], 99), str(t["name"])))
    return {
        "compared_over_s": round(span, 3) if comparable else None,
        "threads_total": len(threads_out),
        "counts": counts,
        "top_stacks": top_stacks,
        "hot_functions": hot_functions,
        "stuck": stuck,
        "deadlock": deadlock,
        "threads": threads_out[:MAX_THREADS_LISTED],
        "threads_omitted": max(0, len(threads_out) - MAX_THREADS_LISTED),
    }


def _java_cpu_percent(seen: dict) -> dict:
    """Thread id -> % of one core between its first and last dump, from the JVM's own
    per-thread cpu= and elapsed= counters (cumulative, so only their deltas mean anything)."""
    out = {}
    for tid, samples in seen.items():
        first, last = samples[0], samples[-1]
        if len(samples) < 2 or None in (first.get("cpu_ms"), last.get("cpu_ms"), first.get("elapsed_s"), last.get("elapsed_s")):
            continue
        span = last["elapsed_s"] - first["elapsed_s"]
        if span > 0:
            out[tid] = round(max(0.0, last["cpu_ms"] - first["cpu_ms"]) / 10.0 / span, 1)
    return out


def classify_python_dump(threads: list[dict], read_line: LineReader = _no_source) -> list[dict]:
    """Adds "verdict" to every thread of one py-spy dump (the GIL holder matters to the others)."""
    holder = {t["id"] for t in threads if t.get("owns_gil")}
    for t in threads:
        t["verdict"] = classify_python(t, read_line=read_line, gil_held_elsewhere=bool(holder - {t["id"]}))
    return threads


def classify_java_dump(parsed: dict) -> list[dict]:
    owners = java_lock_owners(parsed["threads"])
    for t in parsed["threads"]:
        t["verdict"] = classify_java(t, owners)
    return parsed["threads"]


# --------------------------------------------------------------------------- permissions

ATTACH_FIX = ("run as root, or add --cap-add SYS_PTRACE to the container, "
              "or use kubectl debug --profile=general --target=<container>")


def attach_denied_reason(*, euid: int, cap_eff_hex: str | None, ptrace_scope: int | None) -> str:
    """Why attaching is likely refused here, for the message (facts only, never a guess presented as fact)."""
    parts = []
    if euid != 0:
        parts.append("not running as root")
    if cap_eff_hex is not None:
        try:
            has_ptrace = bool(int(cap_eff_hex, 16) >> 19 & 1)  # CAP_SYS_PTRACE is capability 19
        except ValueError:
            has_ptrace = None
        if has_ptrace is False:
            parts.append("no CAP_SYS_PTRACE")
    if ptrace_scope:
        parts.append(f"kernel.yama.ptrace_scope={ptrace_scope}")
    return ", ".join(parts)
