"""Issue 13 #15: with a short --timeout every broker probe reported only "the
run's --timeout was reached", and discovery took 3 s of the budget whatever
the budget was.  A probe's own deadline now falls a little before the runner
stops waiting, so a client call bounded by ctx.io_timeout() fails in time for
the probe to say what went wrong; discovery gets a share of the spare time."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from qdiag import probe as P
from qdiag.runner import DISCOVERY_BUDGET_S, MESSAGE_ROOM_S, Runner, discovery_budget, message_room
from tests.servers import silent_listener
from tests.unit.test_runner import make, settings

HANG_GUARD_S = 30


def asks_a_silent_server(port: int):
    """A probe written to the contract: every call bounded by ctx.io_timeout(), its failure in its own words."""

    def collect(ctx):
        with socket.create_connection(("127.0.0.1", port), timeout=ctx.io_timeout(5)) as conn:
            wait = ctx.io_timeout(60)
            conn.settimeout(wait)
            conn.sendall(b"PING\r\n")
            try:
                conn.recv(1)
            except socket.timeout:
                raise P.ProbeError(f"127.0.0.1:{port} accepted the connection but sent no answer within {wait:.1f}s")
        return {}

    return collect


@pytest.mark.parametrize("timeout", [2.0, 4.0])
def test_a_probe_cut_by_the_runs_timeout_still_says_what_went_wrong(tmp_path, timeout):
    with silent_listener() as port:
        began = time.monotonic()
        results, _ = Runner(settings(tmp_path, timeout=timeout),
                            [make("broker", asks_a_silent_server(port), timeout_s=30)]).run()
        elapsed = time.monotonic() - began
    assert results[0].status == P.ERROR, (results[0].status, results[0].error)
    assert "accepted the connection but sent no answer" in results[0].error
    assert elapsed < timeout + HANG_GUARD_S


def test_a_probe_cut_by_its_own_allowance_still_says_what_went_wrong(tmp_path):
    with silent_listener() as port:
        results, _ = Runner(settings(tmp_path, timeout=60.0),
                            [make("broker", asks_a_silent_server(port), timeout_s=1.0)]).run()
    assert results[0].status == P.ERROR and "sent no answer" in results[0].error


def test_a_probe_that_ignores_its_deadline_is_still_cut_at_the_runs_timeout(tmp_path):
    release = threading.Event()

    def stuck(ctx):
        release.wait(60)
        return {}

    began = time.monotonic()
    results, _ = Runner(settings(tmp_path, timeout=2.0), [make("stuck", stuck, timeout_s=30)]).run()
    release.set()
    assert results[0].status == P.TIMEOUT and results[0].error == "the run's --timeout was reached"
    assert time.monotonic() - began < 2.0 + HANG_GUARD_S


def test_discovery_gets_a_share_of_a_short_budget(tmp_path):
    seen = {}
    release = threading.Event()

    def discover(ctx):
        seen["budget"] = ctx.deadline - ctx.window_start
        release.wait(60)  # a discovery that never returns
        return []

    def collect(ctx):
        seen["probe_span"] = ctx.deadline - ctx.window_start
        return {}

    s = settings(tmp_path, timeout=3.0)
    Runner(s, [make("finder", collect, discover=discover, timeout_s=30)]).run()
    release.set()
    assert seen["budget"] <= discovery_budget(s) + 0.05
    assert discovery_budget(s) == pytest.approx(0.2 * (3.0 - 0.2 - 0.5))
    # What discovery did not take is the probe's.
    assert seen["probe_span"] >= 3.0 - 0.5 - discovery_budget(s) - MESSAGE_ROOM_S - 0.5


def test_budget_and_room_scale_and_are_capped(tmp_path):
    assert discovery_budget(settings(tmp_path, timeout=30.0, window=5.0)) == DISCOVERY_BUDGET_S
    assert discovery_budget(settings(tmp_path, timeout=1.0, window=0.2)) == pytest.approx(0.06)
    assert message_room(30.0) == MESSAGE_ROOM_S
    assert message_room(1.0) == pytest.approx(0.1)
    assert message_room(0.0) == 0.0
