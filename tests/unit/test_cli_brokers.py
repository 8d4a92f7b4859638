"""The CLI's broker flags come from the broker registry (qdiag/brokers.py), and
--auto-detect / --no-auto-detect decide whether local brokers are looked for."""

from __future__ import annotations

from dataclasses import replace

import pytest
import typer
from typer.testing import CliRunner

from qdiag import autodetect, cli
from qdiag.brokers import BROKERS
from tests.cli_helper import run_cli

HOST_ONLY = ("--probe", "host", "--window", "0.2", "-f", "json")


def targets_of(report) -> dict:
    return {t["kind"]: (t["target"], t["found"]) for t in report["targets"]}


def test_every_registered_broker_has_its_flag_its_variable_and_its_example_in_help():
    for command in ("investigate", "snapshot", "check"):
        out = run_cli(command, "--help", columns=200).out
        for broker in BROKERS.values():
            assert broker.flag in out and f"QDIAG_{broker.name.upper()}" in out, (command, broker.name)
            assert broker.example in out


def test_the_broker_flags_reach_the_run_as_documented():
    r = run_cli("investigate", "--kafka", "127.0.0.1:19092", "--rabbitmq", "http://ops:s3cret@127.0.0.1:15673",
                "--redis", "redis://:hunter2@127.0.0.1:16379/2", "--no-auto-detect", *HOST_ONLY)
    assert r.code == 0, r.err
    assert targets_of(r.json()) == {"kafka": ("127.0.0.1:19092", "given"),
                                    "rabbitmq": ("http://ops:***@127.0.0.1:15673", "given"),
                                    "redis": ("redis://:***@127.0.0.1:16379/2", "given")}
    assert "s3cret" not in r.out and "hunter2" not in r.out


def test_a_broker_variable_is_read_like_its_flag():
    r = run_cli("investigate", "--no-auto-detect", *HOST_ONLY, vars={"QDIAG_REDIS": "redis://127.0.0.1:16379/1"})
    assert targets_of(r.json()) == {"redis": ("redis://127.0.0.1:16379/1", "given")}


def test_a_broker_added_to_the_registry_gets_its_option_without_touching_the_cli(monkeypatch):
    extra = replace(BROKERS["redis"], name="valkey", flag="--valkey", help="Valkey URL.",
                    example="redis://localhost:6380/0")
    monkeypatch.setattr(cli, "BROKERS", {**BROKERS, "valkey": extra})
    seen = {}
    app = typer.Typer()

    @app.command()
    @cli._with_broker_options
    def probe(ctx: typer.Context, brokers: dict, window: float = 1.0) -> None:
        seen.update(brokers=brokers, window=window)

    result = CliRunner().invoke(app, ["--valkey", "redis://v:6380/0", "--kafka", "k:9092", "--window", "2"])
    assert result.exit_code == 0, result.output
    assert seen == {"brokers": {"kafka": "k:9092", "rabbitmq": None, "redis": None, "valkey": "redis://v:6380/0"},
                    "window": 2.0}
    assert "--valkey" in CliRunner().invoke(app, ["--help"]).output


@pytest.fixture
def only_redis_listens(monkeypatch):
    """The host's port scan, as if a Redis listened on its default port and nothing else."""
    ports = {port for port, _ in BROKERS["redis"].detect}
    monkeypatch.setattr(autodetect, "listening", lambda wanted: {p: p in ports for p in wanted})


def test_a_named_broker_scopes_the_run_unless_auto_detect_asks_for_the_others(only_redis_listens):
    named = run_cli("investigate", "--kafka", "127.0.0.1:19092", *HOST_ONLY).json()
    assert set(targets_of(named)) == {"kafka"}
    both = run_cli("investigate", "--kafka", "127.0.0.1:19092", "--auto-detect", *HOST_ONLY).json()
    assert targets_of(both)["redis"][1] == "auto-detected" and targets_of(both)["kafka"][1] == "given"


def test_no_auto_detect_never_looks_and_the_default_looks_when_no_broker_is_named(only_redis_listens):
    assert run_cli("investigate", "--no-auto-detect", *HOST_ONLY).json()["targets"] == []
    assert set(targets_of(run_cli("investigate", *HOST_ONLY).json())) == {"redis"}


def test_auto_detect_from_the_environment_and_the_flag_wins(only_redis_listens):
    off = {"QDIAG_AUTO_DETECT": "false"}
    assert run_cli("investigate", *HOST_ONLY, vars=off).json()["targets"] == []
    assert set(targets_of(run_cli("investigate", "--auto-detect", *HOST_ONLY, vars=off).json())) == {"redis"}
