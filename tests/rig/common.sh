# shellcheck shell=bash disable=SC2034
# Settings shared by tests/rig.sh and the Kafka tool wrappers beside this file.
# Sourced, not run. Every value can be overridden from the environment; the
# same variables are read by tests/conftest.py, so tests follow the rig.

RIG_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Where downloaded jars, Kafka's data, logs and pid files live. Outside the
# work tree so that a fresh clone (CI) reuses the jar cache of earlier runs.
QDIAG_RIG_DIR="${QDIAG_RIG_DIR:-/var/tmp/qdiag-rig}"

QDIAG_RIG_KAFKA_PORT="${QDIAG_RIG_KAFKA_PORT:-9092}"
QDIAG_RIG_KAFKA_CONTROLLER_PORT="${QDIAG_RIG_KAFKA_CONTROLLER_PORT:-9093}"
QDIAG_RIG_REDIS_PORT="${QDIAG_RIG_REDIS_PORT:-6379}"
# RabbitMQ runs as the Debian package's single node, so its ports are fixed.
QDIAG_RIG_RABBITMQ_AMQP_PORT=5672
QDIAG_RIG_RABBITMQ_HTTP_PORT=15672

# The Kafka version is the one in pom.xml; the jar directory is keyed on a
# hash of pom.xml so that editing the pom fetches a fresh set.
KAFKA_VERSION=4.1.1
KAFKA_LIBS="$QDIAG_RIG_DIR/kafka-libs-$(sha256sum "$RIG_SRC/pom.xml" | cut -c1-12)"

# Java with the cached Kafka jars. Tools log WARN and above to stderr only.
kafka_java() {
    if [[ ! -f "$KAFKA_LIBS/.complete" ]]; then
        echo "qdiag rig: Kafka jars are not in $KAFKA_LIBS; run 'bash tests/rig.sh' first" >&2
        return 2
    fi
    java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$RIG_SRC/log4j2-tools.xml" \
        -cp "$KAFKA_LIBS/*" "$@"
}
