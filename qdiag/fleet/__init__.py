"""One diagnosis over several hosts' snapshots.

The broker host (or a bastion) sees the queues and the addresses of the
consumers connected to the brokers; each consumer host sees its own processes,
threads and dependencies.  This package joins the two:

- merge.py:    several snapshots -> one merged document (the primary, with the
               brokers' view, plus every host's snapshot under "fleet"), the
               consumers the brokers listed matched to the process on the host
               that owns that connection (address and port), time checks;
- diagnose.py: the merged document -> one report, the rules run on every
               host's subjects, each named with its host (process:web-3/4127);
- remote.py:   snapshots taken on other hosts through the engines people run
               already (the system ssh, kubectl), in parallel, with a deadline;
- zipapp.py:   the single-file build to copy onto a host or into a pod.
"""
