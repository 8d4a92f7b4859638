"""Issue 13 #2, #7, #10, #11, #12, #19: secret masking that runs in linear time,
command lines, error messages, masking by position, and --debug logs."""

import logging
import os
import signal
import time
from contextlib import contextmanager

import pytest

from qdiag.redact import MASK, Redactor, command_line, redact_url, scrub_text
from tests.cli_helper import run_cli

MIB = 1 << 20


@contextmanager
def hang_guard(seconds: float):
    """Interrupt the main thread after `seconds`: the regex engine checks for
    signals while it backtracks, so a quadratic pattern is stopped too."""
    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds:g}s (hang guard)")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def repeat(unit: str, size: int = MIB) -> str:
    return (unit * (size // len(unit) + 1))[:size]


# Shapes that made one pattern or another re-scan from every position: long
# words, runs of separators, keywords without values, unterminated quotes.
ADVERSARIAL = {
    "long word": "a" * MIB,
    "long word then keyword": "a" * MIB + " password",
    "keyword run": repeat("password"),
    "keyword and colon run": repeat("password:"),
    "unterminated quotes": 'password:"' + repeat("password: "),
    "dashes then keyword": "-" * MIB + "password=x",
    "flag run": repeat("--x"),
    "secret flag without values": repeat("--password "),
    "spaces then keyword": " " * MIB + "password:",
    "keyword then spaces": "password" + " " * MIB,
    "dash words then key": repeat("x-") + "key=1",
    "scheme separators": repeat("://"),
    "userinfo starts": repeat("http://a:"),
    "at signs": repeat("@"),
    "scheme characters": repeat("a+.-") + "://u:p@h",
    "authorization then spaces": "Authorization:" + " " * MIB,
    "known secret inside a word": repeat("hunter"),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_masking_one_mebibyte_is_linear(name):
    """The old patterns took 11 s on 16 KB; 1 MiB of any of these must finish
    (in well under a second on a quiet machine: see the benchmark below)."""
    text = ADVERSARIAL[name]
    redactor = Redactor({"hunter", "hunter2"})
    with hang_guard(30):
        out = redactor.text(text)
    assert len(out) <= len(text) + 8


def test_masking_still_masks_inside_long_text():
    text = "x" * MIB + " password=hunter2 " + "y" * MIB + " http://u:pw@h "
    with hang_guard(30):
        out = Redactor().text(text)
    assert "hunter2" not in out and ":pw@" not in out and "password=***" in out


@pytest.mark.bench
@pytest.mark.skipif(not os.environ.get("QDIAG_BENCH"), reason="benchmark: set QDIAG_BENCH=1")
def test_bench_masking():
    """Time per shape at 256 KiB, 1 MiB and 4 MiB: linear growth is a factor of 4 per step."""
    redactor = Redactor({"hunter", "hunter2"})
    for name, text in ADVERSARIAL.items():
        unit = text[:64]
        times = []
        for size in (MIB // 4, MIB, 4 * MIB):
            sample = repeat(unit, size) if len(set(text[:4096])) > 1 else text[0] * size
            start = time.perf_counter()
            redactor.text(sample)
            times.append(time.perf_counter() - start)
        print(f"\n{name:32s} " + "  ".join(f"{t * 1000:8.1f} ms" for t in times), end="")


# ---------------------------------------------------------------- forms that leaked

@pytest.mark.parametrize("text, secret", [
    ("http://admin:pa/ss@host:15672/api", "pa/ss"),      # unencoded / (urlsplit takes "pa" for a port)
    ("http://admin:pa#ss@host:15672", "pa#ss"),          # unencoded # (a fragment to urlsplit)
    ("amqp://admin:pa?ss@host:5672/%2F", "pa?ss"),        # unencoded ? (a query to urlsplit)
    ("redis://:p@ss@host:6379/0", "p@ss"),                # unencoded @
    ("connect to 'http://u:s3cr3t@h:1' failed", "s3cr3t"),
    ("db password hunter2 rejected", "hunter2"),         # "password VALUE", no separator
    ("PASSWORD 'two words'", "two words"),
    ("GET /o?X-Amz-Signature=abc123&X-Amz-Credential=AKIA1", "abc123"),
    ("GET /o?X-Amz-Signature=abc123&X-Amz-Credential=AKIA1", "AKIA1"),
    ("blob?sv=2020&sig=zzz999&se=1", "zzz999"),
    ("curl https://api/x?key=k3y", "k3y"),
    ("worker --db-pass swordfish --queue q", "swordfish"),
    ("worker --auth=t0ken", "t0ken"),
    ("worker --pass=p4ss", "p4ss"),
    ("aws_secret_access_key = AKS3CR3T", "AKS3CR3T"),
])
def test_leaked_forms_are_masked(text, secret):
    assert secret not in Redactor().text(text)


@pytest.mark.parametrize("text", [
    "password for user bob rejected",
    "password authentication failed for user \"app\"",
    "routing_key=orders.created",
    "monkey=banana",
    "--queue orders --group g1",
    "https://example.com/users/bob",
])
def test_ordinary_text_is_left_alone(text):
    assert Redactor().text(text) == text


def test_redact_url_keeps_what_is_not_the_password():
    assert redact_url("http://admin:pa/ss@h:15672/api") == f"http://admin:{MASK}@h:15672/api"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


# ---------------------------------------------------------------- #12 by position

def test_user_named_like_the_password_is_not_masked():
    """guest:guest: the password is masked in the URL, the user name stays a name."""
    r = Redactor({"guest"})
    doc = r({"url": "amqp://guest:guest@h:5672/", "user": "guest", "vhost": "/"})
    assert doc == {"url": f"amqp://guest:{MASK}@h:5672/", "user": "guest", "vhost": "/"}


def test_queue_named_like_the_password_keeps_its_name():
    r = Redactor({"orders"})
    doc = r({"queues": [{"name": "orders", "depth": 5}, {"name": "orders-dlq", "depth": 0}]})
    assert [q["name"] for q in doc["queues"]] == ["orders", "orders-dlq"]


def test_known_secret_in_free_text_is_masked_as_a_whole_word():
    r = Redactor({"hunter2"})
    assert r({"error": "AUTH hunter2 failed"})["error"] == f"AUTH {MASK} failed"
    assert r({"error": "hunter22 is not hunter2"})["error"] == f"hunter22 is not {MASK}"
    assert r.text("hunter2") == MASK  # free text (messages, log lines): standing alone too


def test_defaulted_rabbitmq_password_is_not_a_secret(tmp_path):
    from qdiag.config import resolve

    assert resolve({"rabbitmq": "http://localhost:15672"}, env={}, cwd=tmp_path).secrets() == set()
    assert resolve({"rabbitmq": "http://guest:guest@localhost:15672"}, env={}, cwd=tmp_path).secrets() == {"guest"}


# ---------------------------------------------------------------- #7 command lines

@pytest.mark.parametrize("argv, secret", [
    (["redis-cli", "-h", "r1", "-a", "PASS1"], "PASS1"),
    (["mysql", "-uroot", "-pPASS2", "shop"], "PASS2"),
    (["app", "--pass=PASS3"], "PASS3"),
    (["app", "--db-pass", "PASS4"], "PASS4"),
    (["app", "--auth", "PASS5"], "PASS5"),
    (["curl", "-u", "bob:PASS6", "https://x/"], "PASS6"),
    (["fetch", "https://b/o?sig=PASS7&sv=1"], "PASS7"),
    (["fetch", "https://b/o?key=PASS8"], "PASS8"),
    (["fetch", "https://b/o?X-Amz-Signature=PASS9"], "PASS9"),
    (["celery", "--broker", "redis://:PASS10@r:6379/0"], "PASS10"),
])
def test_target_command_lines_mask_secret_values(argv, secret):
    out = command_line(argv, full=True)
    assert secret not in " ".join(out) and out[0] == argv[0] and len(out) == len(argv)


def test_target_command_line_keeps_the_rest():
    out = command_line(["python3", "worker.py", "--queue", "orders", "--db-pass", "x"], full=True)
    assert out == ["python3", "worker.py", "--queue", "orders", "--db-pass", MASK]


@pytest.mark.parametrize("argv, expected", [
    (["redis-cli", "-h", "r1", "-a", "PASS"], ["redis-cli", "-h", "…", "-a", "…"]),
    (["mysql", "-uroot", "-pPASS", "shop"], ["mysql", "-u", "-p", "…"]),
    (["java", "-Xmx4g", "-cp", "a.jar:b.jar", "com.Main", "--token", "T"], ["java", "-X", "-c", "…", "--token", "…"]),
    (["python3", "/srv/app/worker.py", "--queue", "orders"], ["python3", "/srv/app/worker.py", "--queue", "…"]),
    (["python3", "-m", "celery", "-A", "proj", "worker"], ["python3", "-m", "celery", "-A", "…"]),
    (["app", "--password=PASS", "positional-secret"], ["app", "--password", "…"]),
    (["postgres: app shop 10.0.0.1(5432) idle"], ["postgres:", "…"]),
])
def test_other_processes_keep_only_executable_and_flag_names(argv, expected):
    assert command_line(argv, full=False) == expected


def test_top_processes_in_a_snapshot_keep_no_values():
    """A busy process that is not a target (nor qdiag's child: those are left
    out of the top list) lands in the host-wide top list without its values."""
    import subprocess
    import sys

    from qdiag.config import Settings
    from qdiag.context import ProbeContext
    from qdiag.probes import process

    # The shell exits at once: the burner is reparented, no longer our descendant.
    spawn = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' --db-pass TOPSECRET42 "
                                        ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    pid = int(spawn.stdout.strip())
    try:
        time.sleep(0.2)
        now = time.monotonic()
        ctx = ProbeContext(settings=Settings(window_s=1.0), name="process", deadline=now + 20, window_start=now)
        doc = process.collect(ctx)
    finally:
        os.kill(pid, signal.SIGKILL)
    rows = [r for r in doc["top_cpu"] + doc["top_memory"] if r["pid"] == pid]
    assert rows, "a process spinning on a CPU should be among the top by CPU"
    assert "TOPSECRET42" not in str(doc)
    assert rows[0]["cmdline"].endswith(" -c … --db-pass …")


# ---------------------------------------------------------------- #11 error messages

@pytest.mark.parametrize("args, secret", [
    (["--rabbitmq", "http://admin:pa/ss@host:15672"], "pa/ss"),
    (["--rabbitmq", "http://admin:pa#ss@host:15672"], "pa#ss"),
    (["--rabbitmq", "http://admin:pa?ss@host:15672"], "pa?ss"),
    (["--redis", "redis://:hunter/2@host:6379/0"], "hunter/2"),
    (["--kafka", "user:kafkapw@host:9092"], "kafkapw"),
    (["--kafka", "kafka://user:kafkapw@host:notaport"], "kafkapw"),
])
def test_bad_target_values_never_echo_the_password(capsys, tmp_path, monkeypatch, args, secret):
    monkeypatch.chdir(tmp_path)
    result = run_cli("snapshot", "--no-auto-detect", *args)
    assert result.code != 0 and result.err.startswith("qdiag: error:")
    # urlsplit's own message quoted the part before the "/" as a bad port
    assert secret not in result.err and f"'{secret.split('/')[0]}'" not in result.err


def test_config_type_error_never_echoes_the_password(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qdiag.toml").write_text('[targets]\nrabbitmq = ["http://admin:cfgsecret@h:15672"]\n')
    result = run_cli("snapshot", "--no-auto-detect")
    assert result.code != 0 and "is not a string" in result.err
    assert "cfgsecret" not in result.err


def test_any_error_message_masks_the_runs_known_secrets(tmp_path):
    from qdiag.config import resolve
    from qdiag.errors import exit_status

    resolve({"redis": "redis://:s3kr1t-pw@h:6379/0"}, env={}, cwd=tmp_path)
    _, message = exit_status(RuntimeError("AUTH s3kr1t-pw: WRONGPASS"))
    assert "s3kr1t-pw" not in message and "internal error: RuntimeError" in message


# ---------------------------------------------------------------- #19 --debug

def test_debug_log_masks_known_secrets_and_tracebacks(capsys, tmp_path):
    from qdiag.cli import _RedactingFilter
    from qdiag.config import resolve

    resolve({"rabbitmq": "http://u:plainpw99@h:15672"}, env={}, cwd=tmp_path)
    handler = logging.StreamHandler()
    handler.addFilter(_RedactingFilter())
    log = logging.getLogger("qdiag.test_security")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ConnectionError("login with plainpw99 refused")  # no key, no URL: only the known value says so
        except ConnectionError:
            log.error("probe said %s", "plainpw99 is wrong", exc_info=True)
    finally:
        log.removeHandler(handler)
    err = capsys.readouterr().err
    assert "ConnectionError" in err and "Traceback" in err
    assert "plainpw99" not in err


def test_debug_traceback_on_error_exit_is_masked(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("snapshot", "--debug", "--no-auto-detect",
                     "--rabbitmq", "http://admin:pa/ss@host:15672")
    assert result.code != 0
    assert "pa/ss" not in result.err


def test_scrub_text_is_idempotent():
    once = scrub_text('password="x" http://u:p@h --auth t key=v')
    assert scrub_text(once) == once
