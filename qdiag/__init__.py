"""qdiag: find out why a queue is backing up."""

__version__ = "0.1.0"
