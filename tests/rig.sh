#!/usr/bin/env bash
# Set up the real brokers that qdiag's broker tests run against, on loopback:
#
#   Kafka 4.1 single-node KRaft  127.0.0.1:9092 (controller 9093)
#   RabbitMQ + management        amqp 127.0.0.1:5672, http 127.0.0.1:15672 (guest:guest)
#   Redis                        127.0.0.1:6379
#
# Usage: bash tests/rig.sh && python -m pytest
#
# Idempotent: installs only what is missing, starts only what does not answer,
# never stops or restarts a broker that runs already (whoever started it),
# then waits until each one serves. Safe to run before every test run.
#
# Installs, when missing: the qdiag package with its test extra (pip -e), the
# Debian packages redis-server and rabbitmq-server (and maven / a JRE if
# absent), the rabbitmq_management and rabbitmq_prometheus plugins, and the Kafka jars from Maven
# Central (tests/rig/pom.xml), cached under $QDIAG_RIG_DIR.
#
# Environment (all optional):
#   QDIAG_RIG_DIR                   state: jar cache, Kafka data, logs   [/var/tmp/qdiag-rig]
#   QDIAG_RIG_KAFKA_PORT            Kafka listener                       [9092]
#   QDIAG_RIG_KAFKA_CONTROLLER_PORT KRaft controller listener            [9093]
#   QDIAG_RIG_REDIS_PORT            Redis                                [6379]
#   QDIAG_RIG_SERVICES              what to set up, any of: pip redis rabbitmq kafka  [all]
#   QDIAG_RIG_WAIT_S                how long to wait for each broker     [120]
#   QDIAG_PYTHON                    the Python that runs the tests       [python]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/rig/common.sh
source "$REPO/tests/rig/common.sh"

SERVICES="${QDIAG_RIG_SERVICES:-pip redis rabbitmq kafka}"
WAIT_S="${QDIAG_RIG_WAIT_S:-120}"
PY="${QDIAG_PYTHON:-python}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

say() { echo "qdiag rig: $*"; }
die() { echo "qdiag rig: $*" >&2; exit 1; }
wants() { [[ " $SERVICES " == *" $1 "* ]]; }

# True when something accepts TCP connections on HOST PORT.
answers() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1; }

installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]; }

# Print the end of each existing log file, for a CI log that outlives the machine.
show_tails() {
    local file
    for file in "$@"; do
        [[ -s "$file" ]] || continue
        echo "--- last 20 lines of $file ---" >&2
        tail -n 20 "$file" >&2
    done
}

mkdir -p "$QDIAG_RIG_DIR"
# One rig.sh at a time, so two runs never start two copies of a broker.
# Started daemons must not inherit this descriptor (9>&- below), or they
# would hold the lock for as long as they live.
exec 9>"$QDIAG_RIG_DIR/rig.lock"
flock -w 600 9 || die "another tests/rig.sh has held $QDIAG_RIG_DIR/rig.lock for 10 minutes"

# --- Debian packages ---------------------------------------------------------

ensure_debian_packages() {
    local missing=()
    if wants redis && ! installed redis-server; then missing+=(redis-server); fi
    if wants rabbitmq && ! installed rabbitmq-server; then missing+=(rabbitmq-server); fi
    # The JDK, not only the JRE: jcmd dumps Java consumers, javac builds the Java scenario consumer.
    if wants kafka && ! command -v javac >/dev/null; then missing+=(openjdk-17-jdk-headless); fi
    if wants kafka && ! command -v mvn >/dev/null; then missing+=(maven); fi
    # The report's first-screen test runs qdiag on a real 80x24 terminal, paged.
    if ! command -v tmux >/dev/null; then missing+=(tmux); fi
    if ! command -v less >/dev/null; then missing+=(less); fi
    # The fleet tests (tests/fleet) run an sshd per network namespace and reach it with ssh.
    if [[ ! -x /usr/sbin/sshd ]]; then missing+=(openssh-server); fi
    if ! command -v ssh >/dev/null; then missing+=(openssh-client); fi
    # The benchmarks (tests/bench) read each child's peak memory from GNU time.
    if [[ ! -x /usr/bin/time ]]; then missing+=(time); fi
    ((${#missing[@]})) || return 0
    local log="$QDIAG_RIG_DIR/apt.log"
    say "installing Debian packages: ${missing[*]} (log: $log)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$log" 2>&1 || { show_tails "$log"; die "apt-get update failed; see $log"; }
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
        || { show_tails "$log"; die "apt-get install ${missing[*]} failed; see $log"; }
}

# --- Python: qdiag itself, editable, with its test extra ---------------------

ensure_python_package() {
    local stamp="$QDIAG_RIG_DIR/pip-installed"
    local want
    want="$(sha256sum "$REPO/pyproject.toml" | cut -c1-64) $REPO $(command -v "$PY")"
    # Skip pip when this pyproject.toml was installed from this checkout by this
    # Python and everything still imports from here. (Run from / so the
    # checkout in the current directory cannot mask a missing install.)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && (cd / && "$PY" - "$REPO" <<'EOF'
import importlib, importlib.util, os, sys
repo = os.path.realpath(sys.argv[1])
for name in ("pytest", "kafka", "pika", "redis", "requests", "typer", "rich", "psutil"):
    importlib.import_module(name)
for name, where in (("qdiag", "qdiag"), ("qdiag.probes", "probes")):
    origin = os.path.realpath(importlib.util.find_spec(name).origin)
    if not origin.startswith(os.path.join(repo, where) + os.sep):
        sys.exit(1)
EOF
    ) >/dev/null 2>&1; then
        say "python: qdiag[test] already installed from $REPO"
        return 0
    fi
    say "python: pip install -e '.[test]' in $REPO"
    (cd "$REPO" && PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check -e '.[test]') \
        || die "pip install -e '.[test]' failed in $REPO (see the pip output above)"
    echo "$want" >"$stamp"
}

# --- Redis -------------------------------------------------------------------

REDIS_HOME="$QDIAG_RIG_DIR/redis-$QDIAG_RIG_REDIS_PORT"
REDIS_LOG="$REDIS_HOME/redis.log"
REDIS_STARTED=0

launch_redis() {
    if answers 127.0.0.1 "$QDIAG_RIG_REDIS_PORT"; then
        say "redis: already answering on 127.0.0.1:$QDIAG_RIG_REDIS_PORT"
        return 0
    fi
    say "redis: starting on 127.0.0.1:$QDIAG_RIG_REDIS_PORT (log: $REDIS_LOG)"
    mkdir -p "$REDIS_HOME"
    rm -f "$REDIS_HOME/redis.pid"
    # Scratch data only: no snapshots, no append-only file.
    redis-server --bind 127.0.0.1 --port "$QDIAG_RIG_REDIS_PORT" --daemonize yes \
        --save '' --appendonly no --dir "$REDIS_HOME" \
        --pidfile "$REDIS_HOME/redis.pid" --logfile "$REDIS_LOG" 9>&- \
        || { show_tails "$REDIS_LOG"; die "redis-server did not start; see $REDIS_LOG"; }
    REDIS_STARTED=1
}

# --- RabbitMQ ----------------------------------------------------------------

RABBITMQ_OUT="$QDIAG_RIG_DIR/rabbitmq-server.out"
RABBITMQ_LOG="/var/log/rabbitmq/rabbit@$(hostname -s).log"
RABBITMQ_PID=""
RABBITMQ_STARTED=0

launch_rabbitmq() {
    local running=0
    if answers 127.0.0.1 "$QDIAG_RIG_RABBITMQ_AMQP_PORT" || answers 127.0.0.1 "$QDIAG_RIG_RABBITMQ_HTTP_PORT"; then
        running=1
    fi
    # rabbitmq_prometheus: the probe lists every queue from it on large brokers (tests/brokers/test_rabbitmq_listing.py).
    for plugin in rabbitmq_management rabbitmq_prometheus; do
        if ! grep -qw "$plugin" /etc/rabbitmq/enabled_plugins 2>/dev/null; then
            say "rabbitmq: enabling the $plugin plugin"
            if ((running)); then
                rabbitmq-plugins -q enable "$plugin" >/dev/null
            else
                rabbitmq-plugins -q enable --offline "$plugin" >/dev/null
            fi
        fi
    done
    if ((running)); then
        say "rabbitmq: already answering on 127.0.0.1:$QDIAG_RIG_RABBITMQ_AMQP_PORT"
        return 0
    fi
    say "rabbitmq: starting (log: $RABBITMQ_LOG, stdout: $RABBITMQ_OUT)"
    # No init system here: run the server script detached, in its own session.
    setsid nohup /usr/sbin/rabbitmq-server >"$RABBITMQ_OUT" 2>&1 </dev/null 9>&- &
    RABBITMQ_PID=$!
    RABBITMQ_STARTED=1
}

# --- Kafka -------------------------------------------------------------------

KAFKA_HOME="$QDIAG_RIG_DIR/kafka-$QDIAG_RIG_KAFKA_PORT"
KAFKA_LOG="$KAFKA_HOME/logs/server.log"
KAFKA_OUT="$KAFKA_HOME/logs/kafka.out"
KAFKA_PID=""
KAFKA_STARTED=0

fetch_kafka_jars() {
    if [[ -f "$KAFKA_LIBS/.complete" ]]; then
        say "kafka: jars cached in $KAFKA_LIBS"
        return 0
    fi
    local tmp="$KAFKA_LIBS.partial" log="$QDIAG_RIG_DIR/mvn.log"
    say "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS (log: $log)"
    rm -rf "$tmp"
    mvn -q -B -f "$RIG_SRC/pom.xml" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$log" 2>&1 \
        || { show_tails "$log"; die "mvn could not fetch the Kafka jars; see $log"; }
    touch "$tmp/.complete"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
}

launch_kafka() {
    if answers 127.0.0.1 "$QDIAG_RIG_KAFKA_PORT"; then
        say "kafka: already answering on 127.0.0.1:$QDIAG_RIG_KAFKA_PORT"
        return 0
    fi
    if answers 127.0.0.1 "$QDIAG_RIG_KAFKA_CONTROLLER_PORT"; then
        die "kafka: port $QDIAG_RIG_KAFKA_CONTROLLER_PORT (KRaft controller) is taken by another process; free it or set QDIAG_RIG_KAFKA_CONTROLLER_PORT"
    fi
    mkdir -p "$KAFKA_HOME/data" "$KAFKA_HOME/logs"
    sed -e "s|@PORT@|$QDIAG_RIG_KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$QDIAG_RIG_KAFKA_CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$KAFKA_HOME/data|g" \
        "$RIG_SRC/server.properties.in" >"$KAFKA_HOME/server.properties"
    local java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
        -Dkafka.logs.dir="$KAFKA_HOME/logs"
        -Dlog4j2.configurationFile="$RIG_SRC/log4j2-server.xml"
        -cp "$KAFKA_LIBS/*")
    if [[ ! -f "$KAFKA_HOME/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$("$PY" -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
        say "kafka: formatting storage in $KAFKA_HOME/data (cluster id $cluster_id)"
        # Static voters (controller.quorum.voters): no --standalone here.
        java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$KAFKA_HOME/server.properties" >"$KAFKA_HOME/logs/format.out" 2>&1 9>&- \
            || { show_tails "$KAFKA_HOME/logs/format.out"; die "kafka: formatting storage failed; see $KAFKA_HOME/logs/format.out"; }
    fi
    say "kafka: starting on 127.0.0.1:$QDIAG_RIG_KAFKA_PORT (log: $KAFKA_LOG)"
    setsid nohup java "${java_opts[@]}" kafka.Kafka "$KAFKA_HOME/server.properties" \
        >"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
    KAFKA_PID=$!
    KAFKA_STARTED=1
    echo "$KAFKA_PID" >"$KAFKA_HOME/kafka.pid"
}

# --- Waiting -----------------------------------------------------------------

# wait_serving BROKER HOST:PORT STARTED PID LOG... : block until it serves, or
# fail with one line (naming the first log when this run started the broker),
# followed by the tails of the logs.
wait_serving() {
    local broker="$1" address="$2" started="$3" pid="$4"
    shift 4
    local args=(--timeout "$WAIT_S")
    if ((started)); then args+=(--log "$1"); fi
    if [[ -n "$pid" ]]; then args+=(--pid "$pid"); fi
    if ! "$PY" "$RIG_SRC/ready.py" "$broker" "$address" "${args[@]}"; then
        if ((started)); then show_tails "$@"; fi
        exit 1
    fi
}

# --- Main --------------------------------------------------------------------

ensure_debian_packages
if wants pip; then ensure_python_package; fi
if wants kafka; then
    fetch_kafka_jars
    chmod +x "$RIG_SRC/kafka-consumer-groups" "$RIG_SRC/kafka-topics"
fi

# Launch everything first, then wait: the brokers boot in parallel.
if wants redis; then launch_redis; fi
if wants rabbitmq; then launch_rabbitmq; fi
if wants kafka; then launch_kafka; fi

summary=()
if wants kafka; then
    wait_serving kafka "127.0.0.1:$QDIAG_RIG_KAFKA_PORT" "$KAFKA_STARTED" "$KAFKA_PID" "$KAFKA_LOG" "$KAFKA_OUT"
    summary+=("kafka 127.0.0.1:$QDIAG_RIG_KAFKA_PORT")
fi
if wants rabbitmq; then
    wait_serving rabbitmq "127.0.0.1:$QDIAG_RIG_RABBITMQ_HTTP_PORT" "$RABBITMQ_STARTED" "$RABBITMQ_PID" \
        "$RABBITMQ_LOG" "$RABBITMQ_OUT"
    summary+=("rabbitmq amqp 127.0.0.1:$QDIAG_RIG_RABBITMQ_AMQP_PORT http 127.0.0.1:$QDIAG_RIG_RABBITMQ_HTTP_PORT")
fi
if wants redis; then
    redis_pid=""
    if ((REDIS_STARTED)); then redis_pid="$(cat "$REDIS_HOME/redis.pid" 2>/dev/null || true)"; fi
    wait_serving redis "127.0.0.1:$QDIAG_RIG_REDIS_PORT" "$REDIS_STARTED" "$redis_pid" "$REDIS_LOG"
    summary+=("redis 127.0.0.1:$QDIAG_RIG_REDIS_PORT")
fi

if ((${#summary[@]})); then
    joined="$(printf ' / %s' "${summary[@]}")"
    say "ready in ${SECONDS}s: ${joined:3}"
fi
if wants kafka; then say "kafka tools: $RIG_SRC/kafka-consumer-groups, $RIG_SRC/kafka-topics"; fi
