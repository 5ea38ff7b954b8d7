#!/usr/bin/env bash
# Local real services for guardstream: a single-node Kafka 4.1.1 (KRaft, combined
# broker+controller) and a Redis, both bound to 127.0.0.1 only, no Docker needed.
# Run with --help for usage.
set -euo pipefail

usage() {
  cat <<EOF
Usage: deploy/local/services.sh COMMAND [kafka|redis|all]

Commands:
  start     start the service(s) and wait until they answer (idempotent)
  stop      stop the service(s): SIGTERM, then SIGKILL after a grace period
  status    print running (pid) / stopped for each service;
            exit 0 if every requested service is running, 3 otherwise
  restart   stop, then start

The service defaults to "all" (kafka and redis).

Environment:
  GUARDSTREAM_LOCAL_DIR  state directory (default: <repo>/.local)
  KAFKA_PORT             Kafka client listener on 127.0.0.1   (default 9092)
  KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 9093)
  REDIS_PORT             Redis on 127.0.0.1                    (default 6379)
  KAFKA_HEAP_OPTS        JVM heap flags for the broker (default "-Xms256m -Xmx1g")
  KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 60)

Needs: java (17+) and mvn (first Kafka start only, to fetch the broker jars from
Maven Central via deploy/local/kafka/pom.xml); redis-server and redis-cli
(Debian: apt-get install -y redis-server).

Layout under the state directory:
  kafka/lib/              broker jars (copied once by mvn)
  kafka/server.properties generated on every start
  kafka/cluster.id        KRaft cluster id (created once)
  kafka/data/             log.dirs (formatted once)
  kafka/logs/             broker logs (server.log, controller.log, state-change.log)
  kafka/kafka.out         JVM stdout/stderr
  kafka/kafka.pid
  redis/redis.pid, redis/redis.log, redis/redis.out
EOF
}

# ----------------------------------------------------------------------------- settings

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
KAFKA_POM_DIR="$SCRIPT_DIR/kafka"

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
KAFKA_STOP_TIMEOUT=30
REDIS_START_TIMEOUT=10
REDIS_STOP_TIMEOUT=10

BIND_HOST=127.0.0.1
# Correlation id of our ApiVersions probe ("GS\x00\x01").
PROBE_CORRELATION_HEX=47530001

log() { printf '%s\n' "$*"; }
err() { printf 'services.sh: %s\n' "$*" >&2; }
die() { err "$*"; exit 1; }

now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }
elapsed() { # elapsed START_MS -> "1.23s"
  local d=$(( $(now_ms) - $1 ))
  printf '%d.%02ds' $((d / 1000)) $(((d % 1000) / 10))
}

check_port_var() {
  local name=$1 value=$2
  if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    die "$name must be a TCP port number, got '$value'"
  fi
}

set_paths() {
  local dir=${GUARDSTREAM_LOCAL_DIR:-$REPO_ROOT/.local}
  mkdir -p "$dir"
  LOCAL_DIR=$(cd "$dir" && pwd)
  KAFKA_DIR="$LOCAL_DIR/kafka"
  KAFKA_LIB="$KAFKA_DIR/lib"
  KAFKA_DATA="$KAFKA_DIR/data"
  KAFKA_LOGS="$KAFKA_DIR/logs"
  KAFKA_PROPS="$KAFKA_DIR/server.properties"
  KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
  KAFKA_OUT="$KAFKA_DIR/kafka.out"
  KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
  REDIS_DIR="$LOCAL_DIR/redis"
  REDIS_PID_FILE="$REDIS_DIR/redis.pid"
  REDIS_LOG="$REDIS_DIR/redis.log"
  REDIS_PORT_FILE="$REDIS_DIR/redis.port"
}

require_cmd() { # require_cmd CMD HINT
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH. $2"
}

# ----------------------------------------------------------------------------- processes

# True if PID is a live process (a zombie whose parent has not reaped it counts as dead:
# our daemons are re-parented, and not every init reaps promptly).
pid_alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]] || return 1
  fi
  return 0
}

cmdline_of() {
  if [[ -r /proc/$1/cmdline ]]; then
    tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true
  else
    ps -o args= -p "$1" 2>/dev/null || true
  fi
}

read_pid_file() { # read_pid_file FILE -> prints the pid if the file holds one
  local pid
  [[ -f $1 ]] || return 1
  pid=$(tr -dc '0-9' 2>/dev/null <"$1" || true)
  [[ -n $pid ]] || return 1
  echo "$pid"
}

# Prints the broker's pid if the pid file names a live java running kafka.Kafka with
# this state directory's server.properties.
kafka_pid() {
  local pid cmd
  pid=$(read_pid_file "$KAFKA_PID_FILE") || return 1
  pid_alive "$pid" || return 1
  cmd=$(cmdline_of "$pid")
  [[ $cmd == *java* && $cmd == *" kafka.Kafka "* && $cmd == *"$KAFKA_PROPS"* ]] || return 1
  echo "$pid"
}

redis_recorded_port() {
  local p
  p=$(tr -dc '0-9' 2>/dev/null <"$REDIS_PORT_FILE" || true)
  echo "${p:-$REDIS_PORT}"
}

# Prints redis' pid if the pid file names a live redis-server serving our port (redis
# rewrites its title to "redis-server 127.0.0.1:PORT").
redis_pid() {
  local pid cmd comm port
  pid=$(read_pid_file "$REDIS_PID_FILE") || return 1
  pid_alive "$pid" || return 1
  port=$(redis_recorded_port)
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  cmd=$(cmdline_of "$pid")
  [[ ($comm == redis-server* || $cmd == *redis-server*) && $cmd == *":$port"* ]] || return 1
  echo "$pid"
}

# Sends SIGTERM, waits up to TIMEOUT seconds, then SIGKILL. Returns once the pid is gone.
terminate() { # terminate PID TIMEOUT NAME
  local pid=$1 timeout=$2 name=$3 deadline
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(now_ms) + timeout * 1000 ))
  while pid_alive "$pid"; do
    if (( $(now_ms) >= deadline )); then
      err "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$(( $(now_ms) + 5000 ))
      while pid_alive "$pid"; do
        (( $(now_ms) < deadline )) || die "$name (pid $pid) survived SIGKILL"
        sleep 0.05
      done
      return 0
    fi
    sleep 0.05
  done
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$BIND_HOST" "$1" 2>/dev/null
}

require_port_free() { # require_port_free PORT WHAT VAR
  if port_in_use "$1"; then
    die "$2: port $BIND_HOST:$1 is already in use by another process (not ours); stop it or set $3"
  fi
}

show_tail() { # show_tail FILE...
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    err "---- last lines of $f ----"
    tail -n 30 "$f" >&2 || true
  done
}

# ----------------------------------------------------------------------------- kafka

# Speaks the Kafka protocol: sends ApiVersions v0 (api_key 18) with our correlation id
# and checks the reply's correlation id and error_code == 0 (NONE).
kafka_answers() {
  local port=$1 hex
  # shellcheck disable=SC2016  # expanded by the inner bash
  hex=$(timeout 3 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      # size=12 | api_key=18 | api_version=0 | correlation_id | client_id="gs"
      printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x47\x53\x00\x01\x00\x02gs" >&3
      head -c 10 <&3 | od -An -v -tx1
    ' "$BIND_HOST" "$port" 2>/dev/null) || return 1
  hex=${hex//[[:space:]]/}
  # bytes 0-3: response size, 4-7: correlation id, 8-9: error code
  [[ ${#hex} -eq 20 && ${hex:8:8} == "$PROBE_CORRELATION_HEX" && ${hex:16:4} == 0000 ]]
}

java_major_version() {
  local v
  v=$(java -version 2>&1 | sed -nE 's/.*version "([^"]+)".*/\1/p' | head -n1)
  v=${v#1.}
  echo "${v%%[.+-]*}"
}

ensure_kafka_lib() {
  local want have tmp
  want=$(sha256sum "$KAFKA_POM_DIR/pom.xml" | cut -d' ' -f1)
  have=$(cat "$KAFKA_LIB/.pom.sha256" 2>/dev/null || true)
  [[ $want == "$have" ]] && return 0

  require_cmd mvn "Install Maven (Debian: apt-get install -y maven); it fetches the Kafka jars once."
  log "kafka: copying broker jars into $KAFKA_LIB (mvn, once)"
  tmp="$KAFKA_DIR/lib.tmp.$$"
  rm -rf "$tmp"
  if ! mvn -B -q -f "$KAFKA_POM_DIR/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_DIR/mvn.log" 2>&1; then
    rm -rf "$tmp"
    show_tail "$KAFKA_DIR/mvn.log"
    die "kafka: mvn could not resolve the broker jars (see $KAFKA_DIR/mvn.log)"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "kafka: mvn copied no kafka_2.13 jar"; }
  echo "$want" >"$tmp/.pom.sha256"
  rm -rf "$KAFKA_LIB"
  mv "$tmp" "$KAFKA_LIB"
}

write_kafka_properties() {
  cat >"$KAFKA_PROPS.tmp" <<EOF
# Generated by deploy/local/services.sh on every start; edits are overwritten.
# Single node, KRaft, combined broker + controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$BIND_HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$BIND_HOST:$KAFKA_PORT,CONTROLLER://$BIND_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$BIND_HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT

log.dirs=$KAFKA_DATA
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

# Internal topics: one replica, and fewer partitions than the default 50 so the first
# consumer group / transactional producer does not wait on 50 partition creations.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

group.initial.rebalance.delay.ms=0

# Sized for a 2-core dev machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4

# Keep the disk footprint of load tests bounded.
log.retention.hours=24
log.retention.bytes=1073741824
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
EOF
  mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
}

ensure_kafka_storage() {
  local cid
  if [[ ! -s $KAFKA_CLUSTER_ID_FILE ]]; then
    cid=$(java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool random-uuid 2>>"$KAFKA_DIR/format.log" | tail -n1)
    [[ $cid =~ ^[A-Za-z0-9_-]{22}$ ]] || { show_tail "$KAFKA_DIR/format.log"; die "kafka: random-uuid gave '$cid'"; }
    echo "$cid" >"$KAFKA_CLUSTER_ID_FILE"
  fi
  cid=$(tr -d '[:space:]' <"$KAFKA_CLUSTER_ID_FILE")
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0

  log "kafka: formatting storage in $KAFKA_DATA (cluster id $cid, once)"
  if ! java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
      -t "$cid" -c "$KAFKA_PROPS" --ignore-formatted >>"$KAFKA_DIR/format.log" 2>&1; then
    show_tail "$KAFKA_DIR/format.log"
    die "kafka: storage format failed (see $KAFKA_DIR/format.log)"
  fi
}

# Tail of kafka.out and of what server.log gained since this start (it is appended to).
show_kafka_failure() {
  local size new
  show_tail "$KAFKA_OUT"
  [[ -s $KAFKA_LOGS/server.log ]] || return 0
  size=$(wc -c <"$KAFKA_LOGS/server.log")
  if ((size > ${KAFKA_LOG_OFFSET:-0})); then
    new=$(tail -c +"$(( ${KAFKA_LOG_OFFSET:-0} + 1 ))" "$KAFKA_LOGS/server.log" | tail -n 30)
    err "---- last lines of $KAFKA_LOGS/server.log ----"
    printf '%s\n' "$new" >&2
  fi
}

# Waits for a live broker to answer the Kafka protocol.
wait_kafka_ready() { # wait_kafka_ready PID
  local pid=$1 deadline=$(( $(now_ms) + KAFKA_START_TIMEOUT * 1000 ))
  until kafka_answers "$KAFKA_PORT"; do
    if ! pid_alive "$pid"; then
      show_kafka_failure
      rm -f "$KAFKA_PID_FILE"
      die "kafka: broker (pid $pid) exited during startup"
    fi
    if (( $(now_ms) >= deadline )); then
      show_kafka_failure
      die "kafka: broker (pid $pid) did not answer ApiVersions on $BIND_HOST:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s (still running; 'services.sh stop kafka' to stop it)"
    fi
    sleep 0.2
  done
}

start_kafka() {
  local t0 pid major
  t0=$(now_ms)
  if pid=$(kafka_pid); then
    wait_kafka_ready "$pid"
    log "kafka: already running (pid $pid) on $BIND_HOST:$KAFKA_PORT"
    return 0
  fi
  if [[ -f $KAFKA_PID_FILE ]]; then
    log "kafka: removing stale pid file $KAFKA_PID_FILE"
    rm -f "$KAFKA_PID_FILE"
  fi

  require_cmd java "Install a Java 17+ runtime (Debian: apt-get install -y openjdk-17-jre-headless)."
  major=$(java_major_version)
  if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "kafka: Kafka 4.x needs Java 17+, 'java -version' reports '${major:-unknown}'"
  fi
  require_port_free "$KAFKA_PORT" kafka KAFKA_PORT
  require_port_free "$KAFKA_CONTROLLER_PORT" "kafka controller" KAFKA_CONTROLLER_PORT

  mkdir -p "$KAFKA_DIR" "$KAFKA_DATA" "$KAFKA_LOGS"
  ensure_kafka_lib
  write_kafka_properties
  ensure_kafka_storage

  # Where this start's lines of server.log begin (it is appended to; absent on a first start).
  KAFKA_LOG_OFFSET=0
  [[ -f $KAFKA_LOGS/server.log ]] && KAFKA_LOG_OFFSET=$(wc -c <"$KAFKA_LOGS/server.log")
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of flags
  setsid java $KAFKA_HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
    -Dlog4j2.configurationFile="$KAFKA_POM_DIR/log4j2.xml" \
    -Dkafka.logs.dir="$KAFKA_LOGS" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_PROPS" \
    >"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PID_FILE"

  wait_kafka_ready "$pid"
  log "kafka: started (pid $pid) on $BIND_HOST:$KAFKA_PORT in $(elapsed "$t0")"
}

stop_kafka() {
  local t0 pid
  t0=$(now_ms)
  if ! pid=$(kafka_pid); then
    if [[ -f $KAFKA_PID_FILE ]]; then
      rm -f "$KAFKA_PID_FILE"
      log "kafka: not running (removed stale pid file)"
    else
      log "kafka: not running"
    fi
    return 0
  fi
  terminate "$pid" "$KAFKA_STOP_TIMEOUT" kafka
  rm -f "$KAFKA_PID_FILE"
  log "kafka: stopped (pid $pid) in $(elapsed "$t0")"
}

status_kafka() {
  local pid
  if pid=$(kafka_pid); then
    if kafka_answers "$KAFKA_PORT"; then
      log "kafka: running (pid $pid) on $BIND_HOST:$KAFKA_PORT"
    else
      log "kafka: running (pid $pid) but not answering on $BIND_HOST:$KAFKA_PORT yet"
    fi
    return 0
  fi
  if [[ -f $KAFKA_PID_FILE ]]; then
    log "kafka: stopped (stale pid file $KAFKA_PID_FILE)"
  else
    log "kafka: stopped"
  fi
  return 3
}

# ----------------------------------------------------------------------------- redis

redis_answers() {
  local out
  out=$(timeout 2 redis-cli -h "$BIND_HOST" -p "$1" ping 2>/dev/null) || return 1
  [[ $out == PONG ]]
}

start_redis() {
  local t0 pid deadline
  t0=$(now_ms)
  require_cmd redis-server "Install Redis (Debian: apt-get install -y redis-server)."
  require_cmd redis-cli "Install Redis (Debian: apt-get install -y redis-server)."
  if pid=$(redis_pid); then
    log "redis: already running (pid $pid) on $BIND_HOST:$(redis_recorded_port)"
    return 0
  fi
  if [[ -f $REDIS_PID_FILE ]]; then
    log "redis: removing stale pid file $REDIS_PID_FILE"
    rm -f "$REDIS_PID_FILE"
  fi
  require_port_free "$REDIS_PORT" redis REDIS_PORT

  mkdir -p "$REDIS_DIR"
  echo "$REDIS_PORT" >"$REDIS_PORT_FILE"
  # No config file: everything on the command line. No persistence at all.
  if ! redis-server \
      --bind "$BIND_HOST" --port "$REDIS_PORT" --protected-mode yes \
      --save "" --appendonly no \
      --daemonize yes --pidfile "$REDIS_PID_FILE" \
      --logfile "$REDIS_LOG" --loglevel notice \
      --dir "$REDIS_DIR" >"$REDIS_DIR/redis.out" 2>&1 </dev/null 9>&-; then
    show_tail "$REDIS_DIR/redis.out" "$REDIS_LOG"
    die "redis: redis-server failed to start"
  fi

  deadline=$(( $(now_ms) + REDIS_START_TIMEOUT * 1000 ))
  until pid=$(redis_pid) && redis_answers "$REDIS_PORT"; do
    if (( $(now_ms) >= deadline )); then
      show_tail "$REDIS_LOG"
      die "redis: no PONG from $BIND_HOST:$REDIS_PORT within ${REDIS_START_TIMEOUT}s"
    fi
    sleep 0.05
  done
  log "redis: started (pid $pid) on $BIND_HOST:$REDIS_PORT in $(elapsed "$t0")"
}

stop_redis() {
  local t0 pid
  t0=$(now_ms)
  if ! pid=$(redis_pid); then
    if [[ -f $REDIS_PID_FILE ]]; then
      rm -f "$REDIS_PID_FILE"
      log "redis: not running (removed stale pid file)"
    else
      log "redis: not running"
    fi
    return 0
  fi
  terminate "$pid" "$REDIS_STOP_TIMEOUT" redis
  rm -f "$REDIS_PID_FILE"
  log "redis: stopped (pid $pid) in $(elapsed "$t0")"
}

status_redis() {
  local pid port
  port=$(redis_recorded_port)
  if pid=$(redis_pid); then
    if command -v redis-cli >/dev/null 2>&1 && redis_answers "$port"; then
      log "redis: running (pid $pid) on $BIND_HOST:$port"
    else
      log "redis: running (pid $pid) but not answering PING on $BIND_HOST:$port"
    fi
    return 0
  fi
  if [[ -f $REDIS_PID_FILE ]]; then
    log "redis: stopped (stale pid file $REDIS_PID_FILE)"
  else
    log "redis: stopped"
  fi
  return 3
}

# ----------------------------------------------------------------------------- main

take_lock() {
  # Serialise start/stop/restart so two callers cannot launch two brokers. Daemons are
  # started with "9>&-" so they do not inherit (and hold) this lock.
  exec 9>"$LOCAL_DIR/.services.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 120 9 || die "another services.sh is still running (lock $LOCAL_DIR/.services.lock)"
  fi
}

main() {
  local cmd=${1:-} target=${2:-all} services rc=0 s i
  case $cmd in
    -h|--help|help) usage; return 0 ;;
    start|stop|status|restart) ;;
    "") usage >&2; return 2 ;;
    *) err "unknown command '$cmd'"; usage >&2; return 2 ;;
  esac
  (($# <= 2)) || { err "too many arguments"; usage >&2; return 2; }
  case $target in
    all) services=(redis kafka) ;;
    kafka|redis) services=("$target") ;;
    *) err "unknown service '$target' (kafka, redis or all)"; return 2 ;;
  esac

  check_port_var KAFKA_PORT "$KAFKA_PORT"
  check_port_var KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  check_port_var REDIS_PORT "$REDIS_PORT"
  [[ $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
  [[ $KAFKA_START_TIMEOUT =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be a number of seconds"
  set_paths

  case $cmd in
    status)
      for s in "${services[@]}"; do
        "status_$s" || rc=3
      done
      return "$rc"
      ;;
    start)
      take_lock
      for s in "${services[@]}"; do "start_$s"; done
      ;;
    stop)
      take_lock
      # Stop in reverse start order.
      for ((i = ${#services[@]} - 1; i >= 0; i--)); do "stop_${services[i]}"; done
      ;;
    restart)
      take_lock
      for ((i = ${#services[@]} - 1; i >= 0; i--)); do "stop_${services[i]}"; done
      for s in "${services[@]}"; do "start_$s"; done
      ;;
  esac
}

main "$@"
