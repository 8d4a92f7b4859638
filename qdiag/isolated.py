"""Probing in a child process, for commands that probe again and again
(`check --wait`).

A probe thread stuck in a client call cannot be killed, and a client abandoned
at the deadline keeps its sockets and threads: attempt after attempt against a
hung broker would pile them up in one process (18 threads and 50 descriptors
after 24 s).  A forked child takes all of it with it when it exits.
"""

from __future__ import annotations

import multiprocessing
import os

from qdiag import errors
from qdiag.collect import collect
from qdiag.config import Settings
from qdiag.errors import QdiagError

# A child gets the run's --timeout plus this before it is killed.
ATTEMPT_GRACE_S = 5.0


def collect_in_child(settings: Settings, argv: list[str]) -> dict:
    """collect() in a forked child that exits when it has answered (or is killed
    ATTEMPT_GRACE_S after the run's --timeout): nothing a probe leaves behind
    outlives the attempt."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_attempt, args=(settings, argv, sender), name="qdiag-check-attempt", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(settings.timeout_s + ATTEMPT_GRACE_S):
            raise QdiagError(f"a check attempt did not finish within --timeout {settings.timeout_s:g}s "
                             f"+ {ATTEMPT_GRACE_S:g}s and was stopped", "run again with --debug to see where it hung")
        answer = receiver.recv()
    except EOFError:  # the child died before it answered
        child.join(ATTEMPT_GRACE_S)
        raise QdiagError(f"a check attempt ended without an answer (exit status {child.exitcode})",
                         "run again with --debug") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(ATTEMPT_GRACE_S)
        child.close()
    if answer[0] == "ok":
        return answer[1]
    _, kind, message, hint = answer
    error = getattr(errors, kind, None)
    if not (isinstance(error, type) and issubclass(error, QdiagError)):
        error = QdiagError
    raise error(message, hint)


def _attempt(settings: Settings, argv: list[str], sender) -> None:
    try:
        try:
            answer = ("ok", collect(settings, argv))
        except QdiagError as exc:
            answer = ("error", type(exc).__name__, exc.message, exc.hint)
        except BaseException as exc:  # noqa: BLE001 - the parent turns it into one line
            first = str(exc).splitlines()[0] if str(exc) else ""
            answer = ("error", "QdiagError", f"check attempt failed: {type(exc).__name__}: {first}",
                      "run again with --debug")
        sender.send(answer)
        sender.close()
    finally:
        # Not sys.exit(): interpreter shutdown would wait on stuck threads and
        # run the parent's exit handlers inherited through fork.
        os._exit(0)
