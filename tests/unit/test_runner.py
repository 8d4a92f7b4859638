"""The runner owns isolation: hangs become timeouts, exceptions become errors,
and the run always finishes within its global deadline."""

import threading
import time

from qdiag import probe as P
from qdiag.config import resolve
from qdiag.runner import Runner, effective_timeout


def settings(tmp_path, **flags):
    flags.setdefault("window", 0.2)
    flags.setdefault("auto_detect", False)
    return resolve(flags, env={}, cwd=tmp_path)


def make(name, collect, **kw):
    return P.Probe(name=name, collect=collect, description=name, **kw)


def test_hanging_probe_times_out_and_run_meets_global_deadline(tmp_path):
    release = threading.Event()

    def hang(ctx):
        ctx.partial["started"] = True
        release.wait(60)  # ignores its deadline, as a stuck C call would
        return {}

    def fine(ctx):
        return {"value": 1}

    s = settings(tmp_path, timeout=2.0)
    began = time.monotonic()
    results, _ = Runner(s, [make("stuck", hang, timeout_s=30), make("fine", fine)]).run()
    elapsed = time.monotonic() - began
    release.set()
    by_name = {r.name: r for r in results}
    assert by_name["stuck"].status == P.TIMEOUT
    assert "timeout" in by_name["stuck"].error
    assert by_name["stuck"].observations == {"started": True}  # partial data kept
    assert by_name["fine"].status == P.OK and by_name["fine"].observations == {"value": 1}
    assert elapsed < 2.0 + 5.0  # within the global deadline, with a wide margin for a busy machine


def test_per_probe_deadline_is_shorter_than_global(tmp_path):
    def slow(ctx):
        time.sleep(30)

    s = settings(tmp_path, timeout=60.0)
    began = time.monotonic()
    results, _ = Runner(s, [make("slow", slow, timeout_s=0.5)]).run()
    assert results[0].status == P.TIMEOUT
    assert "no answer within" in results[0].error
    assert time.monotonic() - began < 15


def test_raising_probe_is_an_error_with_one_line(tmp_path):
    def boom(ctx):
        raise RuntimeError("first line\nsecond line")

    def refuses(ctx):
        raise P.ProbeError("cannot reach broker at 127.0.0.1:1 (connection refused): is it running?")

    def not_here(ctx):
        raise P.NotApplicable("nothing to look at")

    results, _ = Runner(settings(tmp_path), [make("boom", boom), make("refuses", refuses), make("nh", not_here)]).run()
    by = {r.name: r for r in results}
    assert by["boom"].status == P.ERROR and by["boom"].error == "RuntimeError: first line"
    assert by["boom"].traceback is None  # only with --debug
    assert by["refuses"].status == P.ERROR and by["refuses"].error.startswith("cannot reach broker")
    assert by["nh"].status == P.NOT_APPLICABLE and by["nh"].error == "nothing to look at"


def test_debug_keeps_traceback(tmp_path):
    def boom(ctx):
        raise KeyError("x")

    results, _ = Runner(settings(tmp_path, debug=True), [make("boom", boom)]).run()
    assert "Traceback" in results[0].traceback


def test_non_dict_result_is_an_error(tmp_path):
    results, _ = Runner(settings(tmp_path), [make("bad", lambda ctx: [1, 2])]).run()
    assert results[0].status == P.ERROR and "not a dict" in results[0].error


def test_needs_missing_target_is_not_applicable_and_selection_is_skipped(tmp_path):
    ran = []
    probes = [make("k", lambda ctx: ran.append("k"), needs=("kafka",)),
              make("a", lambda ctx: ran.append("a") or {}), make("b", lambda ctx: ran.append("b") or {})]
    results, _ = Runner(settings(tmp_path, skip_probes=["b"]), probes).run()
    by = {r.name: r for r in results}
    assert by["k"].status == P.NOT_APPLICABLE and "--kafka" in by["k"].error
    assert by["b"].status == P.SKIPPED and "--no-probe" in by["b"].error
    assert by["a"].status == P.OK
    assert ran == ["a"]
    results, _ = Runner(settings(tmp_path, only_probes=["b"]), probes).run()
    assert {r.name: r.status for r in results} == {"k": P.SKIPPED, "a": P.SKIPPED, "b": P.OK}


def test_probes_run_concurrently(tmp_path):
    barrier = threading.Barrier(3, timeout=10)

    def meet(ctx):
        barrier.wait()  # deadlocks unless all three run at once
        return {}

    results, _ = Runner(settings(tmp_path, timeout=20), [make(f"p{i}", meet) for i in range(3)]).run()
    assert [r.status for r in results] == [P.OK] * 3


def test_sampling_spreads_over_window(tmp_path):
    def sampler(ctx):
        return {"at": [round(t, 2) for t, _ in ctx.sample(lambda: None, count=3)]}

    results, _ = Runner(settings(tmp_path, window=0.6), [make("s", sampler)]).run()
    at = results[0].observations["at"]
    assert len(at) == 3 and at[0] < 0.2 and at[-1] >= 0.55


def test_discovery_feeds_every_probe(tmp_path):
    def discover(ctx):
        return [{"pid": 4242, "via": "test", "subject": "kafka:t/g"}]

    seen = {}

    def collect(ctx):
        seen["discovered"] = ctx.discovered
        return {}

    results, discovered = Runner(settings(tmp_path), [make("d", lambda ctx: {}, discover=discover),
                                                      make("c", collect, uses_discovery=True)]).run()
    assert discovered == [{"pid": 4242, "via": "test", "subject": "kafka:t/g"}]
    assert seen["discovered"] == discovered


def test_probes_that_do_not_use_discovery_start_alongside_it(tmp_path):
    """A broker probe's window opens while discovery is still asking the brokers; a
    consumer-side probe starts only once discovery has answered."""
    discovery_done = threading.Event()
    seen = {}

    def discover(ctx):
        time.sleep(0.5)
        discovery_done.set()
        return [{"pid": 4242, "via": "test"}]

    def broker(ctx):
        seen["broker_saw_discovery_done"] = discovery_done.is_set()
        return {}

    def consumer(ctx):
        seen["consumer_saw_discovery_done"] = discovery_done.is_set()
        seen["consumer_discovered"] = ctx.discovered
        return {}

    results, discovered = Runner(settings(tmp_path, window=0.1), [
        make("broker", broker, discover=discover), make("consumer", consumer, uses_discovery=True)]).run()
    assert [r.status for r in results] == [P.OK, P.OK]
    assert seen == {"broker_saw_discovery_done": False, "consumer_saw_discovery_done": True,
                    "consumer_discovered": [{"pid": 4242, "via": "test"}]}


def test_a_hung_discovery_delays_consumer_probes_by_its_budget_only(tmp_path):
    release = threading.Event()

    def discover(ctx):
        release.wait(60)
        return [{"pid": 1}]

    began = time.monotonic()
    results, discovered = Runner(settings(tmp_path, window=0.1, timeout=5.0), [
        make("broker", lambda ctx: {}, discover=discover),
        make("consumer", lambda ctx: {"saw": list(ctx.discovered)}, uses_discovery=True)]).run()
    release.set()
    assert discovered == [] and results[1].observations == {"saw": []}
    assert time.monotonic() - began < 15  # the discovery budget (a share of 5 s), with a wide margin


def test_registered_consumer_side_probes_wait_for_discovery():
    probes = P.all_probes()
    assert {name for name, p in probes.items() if p.uses_discovery} == {"process", "threads", "dependencies"}


class TestTimeoutPrecedence:
    """probe default < global --probe-timeout < [probes.NAME] timeout; always plus the window."""

    def test_probe_default(self, tmp_path):
        p = make("x", lambda ctx: {}, timeout_s=7)
        assert effective_timeout(p, settings(tmp_path, window=2)) == 9

    def test_global_flag_beats_default(self, tmp_path):
        p = make("x", lambda ctx: {}, timeout_s=7)
        assert effective_timeout(p, settings(tmp_path, window=2, probe_timeout=3)) == 5

    def test_probe_option_beats_global(self, tmp_path):
        (tmp_path / "qdiag.toml").write_text("[probes.host]\ntimeout = 11\n")
        p = make("host", lambda ctx: {}, timeout_s=7)
        assert effective_timeout(p, settings(tmp_path, window=2, probe_timeout=3)) == 13


def test_probe_disabled_in_config_is_skipped(tmp_path):
    (tmp_path / "qdiag.toml").write_text("[probes.host]\nenabled = false\n")
    results, _ = Runner(settings(tmp_path), [make("host", lambda ctx: {})]).run()
    assert results[0].status == P.SKIPPED and "config" in results[0].error


def test_work_while_waiting_runs_after_set_up_and_before_the_last_sample(tmp_path):
    """The caller's own work (the report's rules) uses the window's idle time: it starts
    once every probe waits for its next sample, not while one is still setting up."""
    events = []
    lock = threading.Lock()

    def note(what):
        with lock:
            events.append(what)

    def probe(delay):
        def collect(ctx):
            time.sleep(delay)  # set-up: connecting, listing
            note(f"set-up {delay}")
            ctx.sample(lambda: None, count=3)
            note(f"sampled {delay}")
            return {}
        return collect

    Runner(settings(tmp_path, window=1.5, timeout=20), [make("quick", probe(0.0)), make("slow", probe(0.4))]).run(
        while_waiting=lambda: note("work"))
    assert events.index("work") > events.index("set-up 0.4")
    assert events.index("work") < events.index("sampled 0.0")


def test_work_while_waiting_starts_within_its_cap_when_a_probe_never_waits(tmp_path):
    release = threading.Event()
    started = {}

    def busy(ctx):
        release.wait(20)  # never sleeps for a sample
        return {}

    began = time.monotonic()
    results, _ = Runner(settings(tmp_path, window=1.0, timeout=20), [make("busy", busy)]).run(
        while_waiting=lambda: (started.setdefault("after", time.monotonic() - began), release.set()))
    assert results[0].status == P.OK
    assert 0.9 <= started["after"] < 10  # the cap (the window, at most 2 s), with a wide margin


def test_work_while_waiting_that_fails_is_raised_once_the_probes_are_done(tmp_path):
    finished = threading.Event()

    def sampler(ctx):
        ctx.sample(lambda: None, count=2)
        finished.set()
        return {}

    def broken():
        raise ValueError("rules could not be read")

    try:
        Runner(settings(tmp_path, window=0.5, timeout=20), [make("s", sampler)]).run(while_waiting=broken)
    except ValueError as exc:
        assert "rules" in str(exc) and finished.is_set()
    else:
        raise AssertionError("the failure of the work was lost")
