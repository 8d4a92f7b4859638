"""Regular expressions the user wrote (`--process`, `[probes.logs] patterns`)
run in a child process that is killed at the deadline.

Why a process: Python's `re` holds the GIL for a whole search and cannot be
interrupted.  A pattern such as `(a+)+$` backtracks exponentially on a line of
a's; run in a probe thread, it froze every thread of qdiag, the runner's
deadline included.  Refusing "dangerous" patterns when parsing cannot be made
complete (`.*.*.*x` is polynomial with no nesting at all), so the deadline is
kept by the kernel instead: the child gets the patterns once and lists of
texts, answers pattern by pattern, and is killed when time is up.  Its
RLIMIT_CPU is a backstop should qdiag itself die first.  The child runs the
same interpreter in isolated mode (-I -S: no environment variables, no site
packages, no current directory on sys.path) and imports only the standard
library.

The cost is one interpreter start (tens of milliseconds) per Worker, paid
only when the user gave patterns.  Callers cap the length of each text.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import selectors
import subprocess
import sys
import threading
import time
import weakref
from typing import Callable, Sequence

# Margin given to the child beyond its wall-clock budget before RLIMIT_CPU kills it.
_CPU_SLACK_S = 2
# The longest budget a child gets, whatever the deadline (which can be infinite).
_MAX_BUDGET_S = 3600

# Children still running when qdiag exits (a probe thread abandoned at the
# run's deadline) are killed on the way out.
_LIVE: "weakref.WeakSet[Worker]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _kill_all() -> None:
    with _LIVE_LOCK:
        workers = list(_LIVE)
    for worker in workers:
        worker.close()

_CHILD = r"""
import json, re, resource, sys
cpu = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
inp, out = sys.stdin.buffer, sys.stdout.buffer
head = json.loads(inp.readline())
try:
    compiled = [re.compile(p, head["flags"]) for p in head["patterns"]]
except (re.error, OverflowError, RecursionError) as exc:
    out.write(json.dumps({"error": str(exc)}).encode() + b"\n")
    out.flush()
    sys.exit(0)
out.write(b'"ready"\n')
out.flush()
for line in inp:
    texts = json.loads(line)
    for rx in compiled:
        search = rx.search
        out.write(json.dumps([i for i, t in enumerate(texts) if search(t)]).encode() + b"\n")
        out.flush()
"""


class RegexTimeout(Exception):
    """A pattern did not finish before the deadline; `index` is its position."""

    def __init__(self, index: int, pattern: str, texts: int, partial: list[list[int]] | None = None):
        super().__init__(f"pattern {pattern!r} did not finish on {texts} texts before the deadline")
        self.index = index
        self.pattern = pattern
        self.texts = texts
        self.partial = partial or []  # the answers of the patterns before it


class Worker:
    """One child process for a fixed list of patterns; `search()` may be called
    several times until the deadline.  Use as a context manager."""

    def __init__(self, patterns: Sequence[str], *, deadline: float, flags: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.patterns = list(patterns)
        self.deadline = deadline
        self.clock = clock
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._flags = flags

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass

    def _start(self) -> None:
        budget = max(1, math.ceil(min(self.deadline - self.clock(), _MAX_BUDGET_S)))
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CHILD, str(budget + _CPU_SLACK_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        head = json.dumps({"patterns": self.patterns, "flags": int(self._flags)}).encode() + b"\n"
        [answer] = self._exchange(head, 1, lambda got: 0)
        if isinstance(answer, dict) and "error" in answer:
            raise ValueError(answer["error"])

    def search(self, texts: Sequence[str]) -> list[list[int]]:
        """For each pattern, the indices of `texts` in which it finds a match.
        Raises RegexTimeout naming the first pattern without an answer by the deadline."""
        if not self.patterns or not texts:
            return [[] for _ in self.patterns]
        if self._proc is None:
            self._start()
        request = json.dumps(list(texts)).encode() + b"\n"
        return self._exchange(request, len(self.patterns), lambda got: got, texts=len(texts))

    def _exchange(self, request: bytes, answers: int, which: Callable[[int], int], texts: int = 0) -> list:
        """Write `request`, read `answers` lines, all before the deadline."""
        proc = self._proc
        assert proc is not None
        got: list = []
        pending = memoryview(request)
        with selectors.DefaultSelector() as sel:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
            sel.register(proc.stdout, selectors.EVENT_READ)
            while len(got) < answers:
                left = self.deadline - self.clock()
                events = sel.select(max(0.0, left)) if left > 0 else []
                if not events:
                    index = which(len(got))
                    self.close()
                    raise RegexTimeout(index, self.patterns[index] if self.patterns else "", texts,
                                       got if texts else [])
                for key, _ in events:
                    if key.fileobj is proc.stdin:
                        try:
                            sent = os.write(proc.stdin.fileno(), pending[:1 << 16])
                        except BlockingIOError:
                            continue
                        pending = pending[sent:]
                        if not pending:
                            sel.unregister(proc.stdin)
                    else:
                        chunk = os.read(proc.stdout.fileno(), 1 << 16)
                        if not chunk:
                            self.close()
                            raise RuntimeError("the regex worker exited (it ran out of CPU time or memory)")
                        self._buffer += chunk
                        while b"\n" in self._buffer and len(got) < answers:
                            line, self._buffer = self._buffer.split(b"\n", 1)
                            got.append(json.loads(line))
        return got


def search_all(patterns: Sequence[str], texts: Sequence[str], *, deadline: float, flags: int = 0) -> list[list[int]]:
    """One-shot Worker.search: for each pattern, the indices of the texts it matches."""
    with Worker(patterns, deadline=deadline, flags=flags) as worker:
        return worker.search(texts)
