"""The run's last guard: a probing command ends within its --timeout, whatever a
probe, a client library or a starved CPU does.

The runner already stops waiting for probes at the deadline, but only while its
own thread gets to run: the interpreter's start, the discovery, building the
snapshot and masking it all need CPU, and on the hosts qdiag is run on (every
core busy) a process can get a few percent of one.  A run that overran by
minutes once looked like a hang to the engineer and to CI alike.  So:

- the deadline counts from the process's start (`process_started`), not from
  the moment the probes begin, so a slow start is paid out of the same budget;
- `guard` arms a thread that, GRACE after the deadline, says in one line that
  the run was stopped and exits with status 3 (UNKNOWN) without a report
  (with --debug, every thread's stack first: where it was);
- in the real CLI process, `signal.alarm` backs the thread up: a C call that
  holds the interpreter's lock (a regex, a compressor) keeps the thread from
  running, never the kernel from delivering SIGALRM, whose default action ends
  the process.

What follows the probing (diagnosing the document, writing the outputs) is not
guarded: it is bounded work on data already in memory, and a report that is
about to be written must not be thrown away.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from qdiag.exit_codes import ExitCode

# Seconds past the deadline before the run is stopped: a fixed part for the
# work that follows the probes, and a part that grows with the timeout the
# user chose.  Generous on purpose: this is for hangs, not for slowness.
GRACE_S = 5.0
GRACE_SHARE = 0.1
# After the thread's turn, the kernel's: seconds more before SIGALRM.
ALARM_AFTER_S = 10.0
# Only the entry point of the real process may let SIGALRM end it (allow_alarm).
_alarm_allowed = False


def allow_alarm() -> None:
    """Called by the CLI's entry point when it is the process: guards may then use SIGALRM."""
    global _alarm_allowed
    _alarm_allowed = True


def process_started(clock: Callable[[], float] = time.monotonic) -> float:
    """The moment this process started, on the monotonic clock.

    From /proc/self/stat (its start in clock ticks since boot) against
    CLOCK_BOOTTIME; where that cannot be read, now."""
    now = clock()
    try:
        with open("/proc/self/stat", "rb") as handle:
            # The command name (field 2) can hold spaces and parentheses: fields are counted after the last ")".
            fields = handle.read().rsplit(b")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of the whole line
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return now
    return now - age if 0 <= age < 86400 * 365 else now


def grace(timeout_s: float) -> float:
    return GRACE_S + GRACE_SHARE * timeout_s


def _stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


@contextmanager
def guard(stderr: TextIO, *, deadline: float, timeout_s: float, debug: bool = False, use_alarm: bool | None = None,
          clock: Callable[[], float] = time.monotonic,
          stop: Callable[[int], None] = os._exit) -> Iterator[None]:
    """Within the block, the process ends `grace(timeout_s)` after the monotonic
    `deadline` unless the block is done by then.  `stop` ends the process
    (os._exit; tests pass their own); `use_alarm` adds the kernel's backstop
    (by default, when the entry point allowed it: an in-process caller would be
    killed with it)."""
    if use_alarm is None:
        use_alarm = _alarm_allowed
    stop_at = deadline + grace(timeout_s)
    done = threading.Event()

    def watch() -> None:
        if done.wait(max(0.0, stop_at - clock())):
            return
        late = clock() - deadline
        try:
            if debug:
                stderr.write("qdiag: the threads when the run was stopped:\n" + _stacks() + "\n")
            stderr.write(f"qdiag: error: still probing {late:.0f}s after the --timeout of {timeout_s:g}s, "
                         "stopped without a report (a probe or client call hung, or this host gives qdiag "
                         "too little CPU; run again with --debug to see where it was)\n")
            stderr.flush()
        finally:
            stop(int(ExitCode.UNKNOWN))

    thread = threading.Thread(target=watch, name="qdiag-watchdog", daemon=True)
    thread.start()
    alarmed = False
    if use_alarm and hasattr(signal, "alarm"):
        signal.alarm(max(1, int(stop_at - clock() + ALARM_AFTER_S + 0.999)))
        alarmed = True
    try:
        yield
    finally:
        done.set()
        thread.join(1.0)  # it returns at once; a caller counting threads sees it gone
        if alarmed:
            signal.alarm(0)
