"""Build the report (qdiag.report/1) from a snapshot, and render it."""
