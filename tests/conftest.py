"""Shared pytest fixtures for qdiag's tests.

Test files add their own fixtures next to their tests; only what several files
need belongs here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import uuid
from pathlib import Path
from typing import Callable

import pytest

# --- Broker fixtures -----------------------------------------------------------
#
# Tests marked @pytest.mark.broker run against the real brokers that
# `bash tests/rig.sh` installs and starts on loopback (CI runs it before
# pytest). The endpoint fixtures check once per session that their broker
# really serves and FAIL, never skip, when it does not: a missing broker is a
# broken rig, and a skipped broker test proves nothing.
#
# Ports follow the QDIAG_RIG_* variables of tests/rig.sh (defaults: Kafka 9092,
# Redis 6379); RabbitMQ is the Debian package's node on its fixed ports.

RIG_DIR = Path(__file__).resolve().parent / "rig"
RIG_HINT = "start the brokers with: bash tests/rig.sh"
REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    """Hundreds of tests start qdiag as a child process.  Where the environment
    says PYTHONDONTWRITEBYTECODE (as this machine's does), each child would
    compile every module of qdiag from source again (about 0.3 CPU-s); an
    installed qdiag has its bytecode.  Compiled once here, as an install would;
    a source edited later is compiled in memory again, never run stale."""
    import compileall

    for tree in ("qdiag", "probes"):
        compileall.compile_dir(str(REPO / tree), quiet=1)


# --- Isolation from the developer's machine -----------------------------------------
#
# Every test runs with XDG_CONFIG_HOME (where qdiag looks for the user's config
# first) in a fresh temporary directory, in another fresh temporary directory as
# its working directory, and without the variables that change what qdiag does
# or how it prints.  So a developer's ~/.config/qdiag/qdiag.toml, a ./qdiag.toml,
# QDIAG_KAFKA or NO_COLOR in their shell cannot change a result, in-process or in
# a subprocess.  HOME moves too, except for broker tests: the brokers' own tools
# they run read their credentials there (rabbitmqctl's Erlang cookie).
# PYTHONPATH points at this checkout so that `python -m qdiag` in a subprocess
# runs the code under test, whatever the working directory.

# QDIAG_* variables that steer the tests themselves, not qdiag.
TEST_CONTROL_PREFIXES = ("QDIAG_RIG_", "QDIAG_BENCH", "QDIAG_UPDATE_GOLDEN", "QDIAG_PYTHON")
PRESENTATION_VARIABLES = ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "PAGER", "LESS")


@pytest.fixture(autouse=True)
def isolated_from_the_user(request, tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    if request.node.get_closest_marker("broker") is None:
        monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in list(os.environ):
        if (name.startswith("QDIAG_") and not name.startswith(TEST_CONTROL_PREFIXES)) or name in PRESENTATION_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    return home



def _rig_port(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@functools.lru_cache(maxsize=None)
def _load_readiness_checks():
    # The same "does it serve" checks that tests/rig.sh waits on.
    spec = importlib.util.spec_from_file_location("qdiag_rig_ready", RIG_DIR / "ready.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require(broker: str, host: str, port: int, where: str) -> None:
    """Fail the requesting test unless BROKER serves on HOST:PORT."""
    try:
        _load_readiness_checks().CHECKS[broker](host, port)
    except Exception as exc:  # whatever went wrong, the rig is not usable
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.fail(f"{broker} does not serve at {where} ({detail}); {RIG_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the rig's single-node KRaft Kafka, e.g. "127.0.0.1:9092"."""
    port = _rig_port("QDIAG_RIG_KAFKA_PORT", 9092)
    address = f"127.0.0.1:{port}"
    _require("kafka", "127.0.0.1", port, address)
    return address


@pytest.fixture(scope="session")
def rabbitmq_api() -> str:
    """Base URL of the RabbitMQ management API, credentials included."""
    _require("rabbitmq", "127.0.0.1", 15672, "http://127.0.0.1:15672")
    return "http://guest:guest@127.0.0.1:15672"


@pytest.fixture(scope="session")
def rabbitmq_amqp(rabbitmq_api: str) -> str:
    """AMQP URL of the rig's RabbitMQ, default vhost "/"."""
    # The management check above also connects to the AMQP listener.
    return "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of database 0 of the rig's Redis."""
    port = _rig_port("QDIAG_RIG_REDIS_PORT", 6379)
    _require("redis", "127.0.0.1", port, f"127.0.0.1:{port}")
    return f"redis://127.0.0.1:{port}/0"


def _kafka_libs() -> Path:
    # Same jar directory as tests/rig/common.sh: keyed on a hash of pom.xml.
    state = Path(os.environ.get("QDIAG_RIG_DIR") or "/var/tmp/qdiag-rig")
    pom_hash = hashlib.sha256((RIG_DIR / "pom.xml").read_bytes()).hexdigest()[:12]
    libs = state / f"kafka-libs-{pom_hash}"
    if not (libs / ".complete").is_file():
        pytest.fail(f"the Kafka tool jars are not in {libs}; {RIG_HINT}", pytrace=False)
    return libs


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    """The directory of the Kafka jars the rig fetched (kafka-clients and its dependencies)."""
    return _kafka_libs()


@pytest.fixture(scope="session")
def kafka_tools() -> str:
    """Path of tests/rig/kafka-consumer-groups: Kafka's own tool, for parity checks.

    Run it as ``[kafka_tools, "--bootstrap-server", kafka_bootstrap, ...]``.
    tests/rig/kafka-topics sits beside it.
    """
    wrapper = RIG_DIR / "kafka-consumer-groups"
    _kafka_libs()
    if not os.access(wrapper, os.X_OK):
        pytest.fail(f"{wrapper} is not executable; {RIG_HINT}", pytrace=False)
    return str(wrapper)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """A function making names no other test run uses: unique_name("lag") -> "lag-1f2e3d4c5b6a".

    Use it for every topic, group, queue and key a test creates, and delete
    what you create.
    """

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make
