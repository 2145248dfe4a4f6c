#!/usr/bin/env bash
# Benchmarks authd on SQLite and PostgreSQL next to the bare-tonic floor, as
# BENCHMARKS.md describes, and writes every raw result to target/bench/.
#
#   bench/run.sh                       # 15 s per measurement
#   DURATION=3s WARMUP=1s bench/run.sh # a quick check that everything works
#   BACKENDS=sqlite bench/run.sh       # skip PostgreSQL
#
# Settings, from the environment: DURATION (15s), WARMUP (3s),
# BACKENDS ("sqlite postgres"), BCRYPT_COST (12, authd's default),
# CONNECTIONS (4), GETME_CONCURRENCY (32), HASH_CONCURRENCY (2 x cores),
# FLOOD_FACTOR (4), FLOOD_GETME_CONCURRENCY (4), FLOOD_CONCURRENCY (64),
# AUTHD_ADDR (127.0.0.1:50071), FLOOR_ADDR (127.0.0.1:50061),
# PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432), which gets a fresh
# database authd_bench, dropped again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# psql's "does not exist, skipping" notices are not news.
export PGOPTIONS="-c client_min_messages=warning"

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
BACKENDS=${BACKENDS:-sqlite postgres}
BCRYPT_COST=${BCRYPT_COST:-12}
CORES=$(nproc)
CONNECTIONS=${CONNECTIONS:-4}
GETME_CONCURRENCY=${GETME_CONCURRENCY:-32}
# Enough to keep every core hashing with one call queued behind each, and
# fewer than authd's hashing places (cores + the 2 x cores queue), so a
# capacity run measures throughput, not refusals.
HASH_CONCURRENCY=${HASH_CONCURRENCY:-$((2 * CORES))}
FLOOD_FACTOR=${FLOOD_FACTOR:-4}
FLOOD_GETME_CONCURRENCY=${FLOOD_GETME_CONCURRENCY:-4}
FLOOD_CONCURRENCY=${FLOOD_CONCURRENCY:-64}
AUTHD_ADDR=${AUTHD_ADDR:-127.0.0.1:50071}
FLOOR_ADDR=${FLOOR_ADDR:-127.0.0.1:50061}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
PG_DATABASE=authd_bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=$TARGET_DIR/bench
AUTHD=$TARGET_DIR/release/authd
LOADGEN=$TARGET_DIR/release/examples/loadgen
FLOOR=$TARGET_DIR/release/examples/floor

# authd reads AUTHD_* from the environment; only the flags below may
# configure the measured service. AUTHD_ADDR is this script's own setting:
# kept, but no longer exported.
for variable in $(compgen -e); do
  case $variable in
    AUTHD_ADDR) export -n AUTHD_ADDR ;;
    AUTHD_*) unset "$variable" ;;
  esac
done

for backend in $BACKENDS; do
  case $backend in
    sqlite | postgres) ;;
    *) echo "unknown backend in BACKENDS: $backend (sqlite, postgres)" >&2; exit 2 ;;
  esac
done

AUTHD_PID=
FLOOR_PID=
LOADGEN_PID=
PG_CREATED=
WORK=$(mktemp -d)

alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# SIGTERM lets authd finish in-flight calls; SIGKILL only if it hangs.
stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  [ -n "$LOADGEN_PID" ] && stop "$LOADGEN_PID"
  [ -n "$AUTHD_PID" ] && stop "$AUTHD_PID"
  [ -n "$FLOOR_PID" ] && stop "$FLOOR_PID"
  if [ -n "$PG_CREATED" ]; then
    psql "$PG_ADMIN_URL/postgres" -q -c "DROP DATABASE IF EXISTS $PG_DATABASE WITH (FORCE)" \
      >/dev/null 2>&1 || echo "could not drop the database $PG_DATABASE" >&2
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

listening() {
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# A server already on the address would be measured instead of ours.
require_free() {
  if listening "$1"; then
    echo "something already listens on $1; stop it or choose another $2" >&2
    exit 1
  fi
}

wait_listening() {
  local pid=$1 address=$2 name=$3 log=$4
  for _ in $(seq 600); do
    listening "$address" && return 0
    if ! alive "$pid"; then
      echo "$name exited before it listened on $address; its log, $log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name did not listen on $address within 60 s; see $log" >&2
  exit 1
}

# Runs loadgen with the common settings; its JSON goes to $OUT/NAME.json and
# its text report to the terminal.
measure() {
  local name=$1
  shift
  echo "== $name" >&2
  # In the background, so that a signal to this script is handled at once
  # and not after the measurement.
  "$LOADGEN" --json --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" "$@" >"$OUT/$name.json" &
  LOADGEN_PID=$!
  wait "$LOADGEN_PID"
  LOADGEN_PID=
}

start_authd() {
  local backend=$1 database_url=$2 log=$OUT/authd-$1.log
  require_free "$AUTHD_ADDR" AUTHD_ADDR
  # Limits raised: every call comes from one address and one account, which
  # authd's abuse defences would otherwise refuse. Everything else is at
  # authd's defaults, access log included.
  RUST_LOG=info "$AUTHD" \
    --listen "$AUTHD_ADDR" \
    --database-url "$database_url" \
    --bcrypt-cost "$BCRYPT_COST" \
    --login-rate 1000000/min \
    --signup-rate 1000000/min \
    --lockout-threshold 1000 \
    --shutdown-grace 1s \
    >"$log" 2>&1 &
  AUTHD_PID=$!
  wait_listening "$AUTHD_PID" "$AUTHD_ADDR" "authd on $backend" "$log"
}

echo "building release binaries" >&2
cargo build --release --locked --bin authd --example loadgen --example floor

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/summary.md
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cores: $CORES"
  echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "settings: DURATION=$DURATION WARMUP=$WARMUP BCRYPT_COST=$BCRYPT_COST CONNECTIONS=$CONNECTIONS GETME_CONCURRENCY=$GETME_CONCURRENCY HASH_CONCURRENCY=$HASH_CONCURRENCY FLOOD_FACTOR=$FLOOD_FACTOR FLOOD_GETME_CONCURRENCY=$FLOOD_GETME_CONCURRENCY FLOOD_CONCURRENCY=$FLOOD_CONCURRENCY"
} >"$OUT/machine.txt"

echo "== bcrypt" >&2
"$LOADGEN" --measure-bcrypt --bcrypt-cost "$BCRYPT_COST" --bcrypt-rounds 10 --json \
  >"$OUT/bcrypt.json"
FLOOD_RATE=$(python3 -c 'import json, sys
print(round(float(sys.argv[2]) * json.load(open(sys.argv[1]))["login_limit_rps"], 1))' \
  "$OUT/bcrypt.json" "$FLOOD_FACTOR")

require_free "$FLOOR_ADDR" FLOOR_ADDR
"$FLOOR" --listen "$FLOOR_ADDR" >"$OUT/floor.log" 2>&1 &
FLOOR_PID=$!
wait_listening "$FLOOR_PID" "$FLOOR_ADDR" floor "$OUT/floor.log"

for backend in $BACKENDS; do
  case $backend in
    sqlite)
      database_url="sqlite://$WORK/authd.db"
      ;;
    postgres)
      psql "$PG_ADMIN_URL/postgres" -v ON_ERROR_STOP=1 -q \
        -c "DROP DATABASE IF EXISTS $PG_DATABASE WITH (FORCE)" \
        -c "CREATE DATABASE $PG_DATABASE"
      PG_CREATED=1
      database_url="$PG_ADMIN_URL/$PG_DATABASE"
      ;;
  esac

  # The floor is measured next to each backend, so each ratio compares
  # measurements taken minutes apart at most.
  measure "$backend-floor" --target "http://$FLOOR_ADDR" --scenario getme --no-setup \
    --concurrency "$GETME_CONCURRENCY"

  start_authd "$backend" "$database_url"
  target=http://$AUTHD_ADDR
  measure "$backend-getme" --target "$target" --scenario getme \
    --concurrency "$GETME_CONCURRENCY"
  measure "$backend-login" --target "$target" --scenario login \
    --concurrency "$HASH_CONCURRENCY"
  measure "$backend-signup" --target "$target" --scenario signup \
    --concurrency "$HASH_CONCURRENCY"
  measure "$backend-mixed-flood" --target "$target" --scenario mixed-flood \
    --concurrency "$FLOOD_GETME_CONCURRENCY" \
    --flood-concurrency "$FLOOD_CONCURRENCY" --flood-rate "$FLOOD_RATE"

  if ! alive "$AUTHD_PID"; then
    echo "authd on $backend exited during the runs; see $OUT/authd-$backend.log" >&2
    exit 1
  fi
  # VmHWM: the most resident memory authd had at any moment of the runs.
  peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$AUTHD_PID/status")
  echo "{\"backend\": \"$backend\", \"vm_hwm_kib\": $peak_kib}" >"$OUT/$backend-rss.json"
  stop "$AUTHD_PID"
  AUTHD_PID=
done

python3 bench/summarize.py "$OUT" | tee "$OUT/summary.md"
