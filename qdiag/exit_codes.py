"""Exit statuses, in one place.

investigate, snapshot and report exit OK whenever they produced their output,
whatever the verdict.  check uses the monitoring-plugin meaning of 0..3.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    # Could not measure, or could not even start: usage or configuration error,
    # unreadable snapshot, nothing at all could be probed.
    UNKNOWN = 3
