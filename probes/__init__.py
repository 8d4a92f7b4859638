"""The probes: one module each, registered by importing it.

Adding a probe is one module here plus one line in MODULES.  Modules are
imported on demand, and each imports its broker client only inside collect(),
so `qdiag --help` never pays for kafka-python, pika or redis.
"""

from importlib import import_module

MODULES = (
    "kafka",
    "redis_queues",
    "rabbitmq",
    "host",
    "process",
    "threads",
    "dependencies",
    "logs",
)


def load_all() -> None:
    for name in MODULES:
        import_module(f"{__name__}.{name}")
