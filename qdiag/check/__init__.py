"""qdiag check: thresholds over the same observations, monitoring-plugin exit codes."""
