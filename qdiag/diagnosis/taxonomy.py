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
