"""How the RabbitMQ probe lists every queue: the choice by queue count, and
the rabbitmq_prometheus plugin's output as RabbitMQ 3.10.8 writes it
(tests/fixtures/rabbitmq/prometheus_detailed.txt, recorded from the rig; 3.10
does not escape quotes or backslashes in label values)."""

from __future__ import annotations

from pathlib import Path

from qdiag.probes import _rabbitmq_listing as rl

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rabbitmq" / "prometheus_detailed.txt"
LISTENERS = [{"protocol": "amqp", "port": 5672}, {"protocol": "http", "port": 15672},
             {"protocol": "http/prometheus", "port": 15692}]


def test_parse_recorded_output():
    rows = {r["name"]: r for r in rl.parse_prometheus(FIXTURE.read_text().splitlines())}
    assert set(rows) == {"bench.00020", "bench.00010", "bench.00001", 'tenant "a"\\b/c'}
    assert rows["bench.00020"] == {"vhost": "qdiag-bench-rabbit20k", "name": "bench.00020", "messages_ready": 20,
                                   "messages_unacknowledged": 0, "messages": 20, "consumers": 0}
    # A name with a quote, a backslash and a slash comes back as the broker has it.
    assert rows['tenant "a"\\b/c']["messages"] == 7


def test_parse_ignores_other_families_and_damaged_lines():
    lines = ['rabbitmq_detailed_queue_process_reductions_total{vhost="/",queue="q"} 5',
             'rabbitmq_detailed_queue_messages{vhost="/",queue="q"} notanumber',
             'rabbitmq_detailed_queue_messages{queue="q"} 3',
             'rabbitmq_detailed_queue_messages{vhost="/",queue="q"} 4']
    assert rl.parse_prometheus(lines) == [{"vhost": "/", "name": "q", "messages": 4}]


def test_listener():
    assert rl.prometheus_listener(LISTENERS) == ("http", 15692)
    assert rl.prometheus_listener(LISTENERS[:2]) is None
    assert rl.prometheus_listener([{"protocol": "https/prometheus", "port": 15691}]) == ("https", 15691)


def test_choice_by_queue_count():
    assert rl.choose("auto", 4999, 5000, ("http", 15692))[0] == "management"
    assert rl.choose("auto", 5000, 5000, ("http", 15692))[0] == "prometheus"
    assert rl.choose("auto", 20000, 5000, None)[0] == "totals"
    assert rl.choose("auto", None, 5000, None)[0] == "management"
    assert rl.choose("totals", 3, 5000, ("http", 15692)) == ("totals", "[probes.rabbitmq] listing = totals")
