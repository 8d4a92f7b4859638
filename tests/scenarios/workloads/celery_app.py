"""The scenario's Celery application: one task that takes a fixed time, on a
Redis broker (SCENARIO_REDIS, database 0 by default).  Imported by
celery_worker.py and celery_producer.py; the queue name comes from
SCENARIO_CELERY_QUEUE so each scenario has its own."""

from __future__ import annotations

import os
import time

from celery import Celery

REDIS = os.environ.get("SCENARIO_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("SCENARIO_CELERY_QUEUE", "celery")

app = Celery("scenario", broker=REDIS)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,  # no pidbox keys or bindings left in the shared Redis
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,  # "ready" goes to the harness, not into Celery's log
)


@app.task(name="scenario.render_invoice")
def render_invoice(n: int, work_ms: float) -> int:
    time.sleep(work_ms / 1000.0)
    return n
