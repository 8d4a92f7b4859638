"""Thin producer/consumer adapters over the real client libraries, shared by
the scenario workloads (kafka-python, pika, redis-py)."""

from __future__ import annotations

import os
import time
from typing import Callable

KINDS = ("rabbitmq", "kafka", "redis-stream", "redis-list")

KAFKA = os.environ.get("SCENARIO_KAFKA", "127.0.0.1:9092")
AMQP = os.environ.get("SCENARIO_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("SCENARIO_REDIS", "redis://127.0.0.1:6379/0")

# handler(body) -> "ack" (done), "retry" (put it back, it failed), "hold" (RabbitMQ: neither)
Handler = Callable[[bytes], str]


class _Rabbit:
    def __init__(self, queue: str):
        import pika

        self.queue = queue
        self.conn = pika.BlockingConnection(pika.URLParameters(AMQP))
        self.ch = self.conn.channel()
        if os.environ.get("SCENARIO_CONFIRM"):
            self.ch.confirm_delivery()
        self.rejected = 0

    def send(self, body: bytes, key: str | None = None) -> None:
        import pika.exceptions

        try:
            self.ch.basic_publish("", self.queue, body)
        except pika.exceptions.NackError:
            self.rejected += 1  # reject-publish: the queue is full

    def tick(self) -> None:
        self.conn.process_data_events(0)


class _Kafka:
    def __init__(self, topic: str):
        from kafka import KafkaProducer

        self.topic = topic
        self.p = KafkaProducer(bootstrap_servers=KAFKA, linger_ms=5, acks=1)

    def send(self, body: bytes, key: str | None = None) -> None:
        self.p.send(self.topic, value=body, key=key.encode() if key else None)

    def tick(self) -> None:
        pass


class _RedisStream:
    def __init__(self, key: str):
        import redis

        self.key = key
        self.r = redis.Redis.from_url(REDIS)
        self.r.ping()
        self.errors = 0

    def send(self, body: bytes, key: str | None = None) -> None:
        import redis

        try:
            self.r.xadd(self.key, {"body": body})
        except redis.ResponseError:
            self.errors += 1  # e.g. OOM at maxmemory with noeviction: keep trying, as producers do

    def tick(self) -> None:
        pass


class _RedisList(_RedisStream):
    def send(self, body: bytes, key: str | None = None) -> None:
        import redis

        try:
            self.r.lpush(self.key, body)
        except redis.ResponseError:
            self.errors += 1


def producer(kind: str, name: str):
    return {"rabbitmq": _Rabbit, "kafka": _Kafka, "redis-stream": _RedisStream, "redis-list": _RedisList}[kind](name)


# ---------------------------------------------------------------- consumers

def consume_rabbitmq(queue: str, handle: Handler, prefetch: int) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)

    def on_message(channel, method, _props, body):
        outcome = handle(body)
        if outcome == "ack":
            channel.basic_ack(method.delivery_tag)
        elif outcome == "retry":
            channel.basic_nack(method.delivery_tag, requeue=True)
        # "hold": neither, the message stays unacknowledged

    ch.basic_consume(queue, on_message)
    print("ready", flush=True)
    ch.start_consuming()


def consume_kafka(topic: str, group: str, handle: Handler, max_records: int) -> None:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False,
                      auto_offset_reset="earliest", max_poll_records=max_records,
                      allow_auto_create_topics=False, session_timeout_ms=10000, heartbeat_interval_ms=1000)
    ready = False
    try:
        _kafka_loop(c, handle, ready)
    finally:
        c.close()


def _kafka_loop(c, handle: Handler, ready: bool) -> None:
    from kafka import TopicPartition

    while True:
        batch = c.poll(timeout_ms=500)
        if not ready and c.assignment():
            print("ready", flush=True)
            ready = True
        done = {}
        for tp, records in batch.items():
            for rec in records:
                if handle(rec.value) != "ack":
                    # A failed record is retried from its offset: seek back and stop this partition's batch.
                    c.seek(TopicPartition(tp.topic, tp.partition), rec.offset)
                    break
                done[tp] = _offset(rec.offset + 1)
        if done:
            c.commit(done)


def _offset(n: int):
    from kafka.structs import OffsetAndMetadata

    try:
        return OffsetAndMetadata(n, "", -1)
    except TypeError:  # kafka-python 2.x has no leader epoch field
        return OffsetAndMetadata(n, "")


def consume_redis_stream(key: str, group: str, handle: Handler, count: int, *, claim: bool = True) -> None:
    """claim: retry what failed by claiming the consumer's own idle pending entries."""
    import redis

    r = redis.Redis.from_url(REDIS)
    me = f"consumer-{os.getpid()}"
    print("ready", flush=True)
    next_claim = time.monotonic()
    while True:
        if claim and time.monotonic() >= next_claim:
            # Retry what failed before: claim our own entries that have waited a little.
            next_claim = time.monotonic() + 0.2
            _, claimed, *_ = r.xautoclaim(key, group, me, min_idle_time=100, start_id="0-0", count=count)
            for entry_id, fields in claimed:
                if fields is not None and handle(fields.get(b"body", b"")) == "ack":
                    r.xack(key, group, entry_id)
        reply = r.xreadgroup(group, me, {key: ">"}, count=count, block=200)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                if handle(fields.get(b"body", b"")) == "ack":
                    r.xack(key, group, entry_id)


def consume_redis_list(key: str, handle: Handler) -> None:
    import redis

    r = redis.Redis.from_url(REDIS)
    print("ready", flush=True)
    while True:
        item = r.brpop([key], timeout=1)
        if item is None:
            continue
        if handle(item[1]) != "ack":
            r.lpush(key, item[1])
