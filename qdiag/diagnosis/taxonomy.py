"""The six steps and the root-cause ids.  The ids are part of the JSON contract
(qdiag.report/1): never rename one without bumping the report schema."""

STEPS = {
    1: "Isolate the full queue",
    2: "Consumer resources",
    3: "Consumer logic",
    4: "Downstream dependencies",
    5: "Configuration",
    6: "Traffic",
}

# id -> step
CAUSES = {
    "consumers-absent": 1,
    "cpu-saturation": 2,
    "memory-pressure": 2,
    "io-saturation": 2,
    "network-saturation": 2,
    "consumer-stuck": 3,
    "slow-consumer-logic": 3,
    "poison-message": 3,
    "slow-dependency": 4,
    "dependency-failure": 4,
    "undersized-consumer-pool": 5,
    "queue-limit-reached": 5,
    "broker-resource-alarm": 5,
    "os-limit-reached": 5,
    "traffic-spike": 6,
    "partition-skew": 6,
}

# What each cause means, for `qdiag explain`: the mechanism, in a few sentences.
MEANINGS = {
    "consumers-absent": "Messages wait and nothing takes them: no consumer is attached, the consumers the broker "
                        "still lists have no live process or connection behind them, or the consumer process exited. "
                        "Nothing else matters until something consumes again.",
    "cpu-saturation": "The consumers cannot get the CPU they need: the host is busy, its run queue waits (CPU "
                      "pressure), the hypervisor steals time, or the consumer's cgroup quota throttles it.",
    "memory-pressure": "Memory is short: the host swaps or stalls reclaiming pages, or the kernel's OOM killer "
                       "ends processes, or a consumer runs at its cgroup's memory limit.",
    "io-saturation": "The disk is the bottleneck: devices are busy, tasks stall on I/O (I/O pressure), or the "
                     "consumer's threads sit in uninterruptible disk waits.",
    "network-saturation": "Packets are lost on the way: interface drops and errors, or TCP retransmits, slow "
                          "every exchange with the broker and the dependencies.",
    "consumer-stuck": "The consumer is alive but makes no progress: its threads wait for locks that are never "
                      "released (a deadlock, or a lock or condition nobody signals), or the broker sees messages "
                      "handed out and never acknowledged or offsets that never move.",
    "slow-consumer-logic": "The consumer is busy in its own code: its working threads are on CPU in the same "
                           "functions, and even all the CPU it may use would not keep up with the inflow.",
    "poison-message": "The same messages fail again and again: they are redelivered, rejected or dead-lettered "
                      "instead of processed, and the retries take the consumers' time.",
    "slow-dependency": "The consumers wait on something downstream: their threads spend the window waiting for "
                       "a service's answers (the kernel sees the socket, the consumer's own connections time the "
                       "answers), or the service answers slowly when timed, or the logs show timeouts and "
                       "exhausted client pools.",
    "dependency-failure": "A downstream service refuses, errors or rate-limits: every message fails against it "
                          "and is retried, so work piles up though the consumers are busy.",
    "undersized-consumer-pool": "Too few consumers for the load while the ones there are healthy and idle: each "
                                "waits (a round trip per message with a small prefetch, one consumer per several "
                                "partitions) rather than computes, so more of them would drain the queue.",
    "queue-limit-reached": "The queue is at its limit (length, bytes, retention, MAXLEN, or an in-process bound "
                           "logging 'queue full'): new messages are refused or old ones dropped.",
    "broker-resource-alarm": "The broker throttles or refuses work to protect itself: a memory or disk alarm "
                             "blocks publishers, flow control slows them, or it is at its memory limit "
                             "(evicting keys or refusing writes) or refuses new connections.",
    "os-limit-reached": "An operating-system limit is hit: file descriptors, accept queue, connection tracking "
                        "or the system file table; new connections or files fail.",
    "traffic-spike": "Producers send far more than the consumers can take: the inflow is well above its usual "
                     "rate (with a baseline) or far above the outflow.",
    "partition-skew": "One partition carries the backlog: a hot key sends most messages there, and only the one "
                      "consumer that owns it can work on them.",
}
