#!/usr/bin/env bash
# Benchmarks authd on SQLite and PostgreSQL next to the bare-tonic floor, as
# BENCHMARKS.md describes, and writes every raw result to target/bench/.
#
#   bench/run.sh                       # 15 s per measurement
#   DURATION=3s WARMUP=1s bench/run.sh # a quick check that everything works
#   BACKENDS=sqlite bench/run.sh       # skip PostgreSQL
#
# Needs h2load (Debian: apt-get install nghttp2-client), python3, and for
# PostgreSQL psql.
#
# Settings, from the environment: DURATION (15s), WARMUP (3s),
# BACKENDS ("sqlite postgres"), BCRYPT_COST (12, authd's default),
# CONNECTIONS (4), GETME_CONCURRENCY (32), HASH_CONCURRENCY (2 x cores),
# FLOOD_FACTOR (4), FLOOD_GETME_CONCURRENCY (4), FLOOD_CONCURRENCY (64),
# H2LOAD_CLIENTS (32), REVOCATION_TRIALS (200), SEED_USERS (10000),
# SEED_LIVE (100000), SEED_REVOKED (100000), AUTHD_ADDR (127.0.0.1:50071),
# AUTHD_B_ADDR (127.0.0.1:50072), FLOOR_ADDR (127.0.0.1:50061),
# GREETER_ADDR (127.0.0.1:50081), PG_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432), which gets a fresh database
# authd_bench, dropped again at the end.
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
H2LOAD_CLIENTS=${H2LOAD_CLIENTS:-32}
REVOCATION_TRIALS=${REVOCATION_TRIALS:-200}
SEED_USERS=${SEED_USERS:-10000}
SEED_LIVE=${SEED_LIVE:-100000}
SEED_REVOKED=${SEED_REVOKED:-100000}
AUTHD_ADDR=${AUTHD_ADDR:-127.0.0.1:50071}
AUTHD_B_ADDR=${AUTHD_B_ADDR:-127.0.0.1:50072}
FLOOR_ADDR=${FLOOR_ADDR:-127.0.0.1:50061}
GREETER_ADDR=${GREETER_ADDR:-127.0.0.1:50081}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
PG_DATABASE=authd_bench
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=$TARGET_DIR/bench
AUTHD=$TARGET_DIR/release/authd
LOADGEN=$TARGET_DIR/release/examples/loadgen
FLOOR=$TARGET_DIR/release/examples/floor
GREETER=$TARGET_DIR/release/backend
GETME_PATH=/auth.v1.AuthService/GetMe
GREET_PATH=/greeter.v1.GreeterService/Greet
# Login's bcrypt is not what the revocation runs measure, and 200 trials at
# cost 12 would spend most of their time hashing.
REVOCATION_BCRYPT_COST=4

# authd and the example backend read AUTHD_* and GREETER_* from the
# environment; only the flags and variables below may configure the measured
# services. AUTHD_ADDR and AUTHD_B_ADDR are this script's own settings: kept,
# but no longer exported.
for variable in $(compgen -e); do
  case $variable in
    AUTHD_ADDR | AUTHD_B_ADDR | GREETER_ADDR) export -n "$variable" ;;
    AUTHD_* | GREETER_* | LOADGEN_*) unset "$variable" ;;
  esac
done

if ! command -v h2load >/dev/null; then
  echo "h2load not found: install it (Debian and Ubuntu: apt-get install nghttp2-client)" >&2
  exit 2
fi

for backend in $BACKENDS; do
  case $backend in
    sqlite | postgres) ;;
    *) echo "unknown backend in BACKENDS: $backend (sqlite, postgres)" >&2; exit 2 ;;
  esac
done

AUTHD_PID=
AUTHD_B_PID=
GREETER_PID=
FLOOR_PID=
LOADGEN_PID=
H2LOAD_PID=
PG_CREATED=
WORK=$(mktemp -d)
# The body h2load posts: a gRPC frame (uncompressed, length 0) holding an
# empty message, which is how both GetMeRequest and GreetRequest encode.
printf '\0\0\0\0\0' >"$WORK/empty.grpc"

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
  for pid in "$LOADGEN_PID" "$H2LOAD_PID" "$GREETER_PID" "$AUTHD_B_PID" "$AUTHD_PID" \
    "$FLOOR_PID"; do
    [ -n "$pid" ] && stop "$pid"
  done
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

# Runs h2load for DURATION after WARMUP against ADDRESS, calling what SERVICE
# (authd: GetMe, greeter: Greet) answers, with TOKEN if one is given; its text
# report goes to $OUT/NAME.h2load.txt. h2load counts HTTP statuses only, and
# a gRPC error is an HTTP 200: probe proves, just before and just after, that
# the same call is answered OK, so no run is counted whose calls were refused.
h2load_measure() {
  local name=$1 address=$2 service=$3 token=${4:-} path
  case $service in
    authd) path=$GETME_PATH ;;
    greeter) path=$GREET_PATH ;;
  esac
  local headers=(-H "content-type: application/grpc" -H "te: trailers")
  [ -n "$token" ] && headers+=(-H "authorization: Bearer $token")
  probe "$address" "$service" "$token"
  echo "== $name (h2load)" >&2
  h2load --clients "$H2LOAD_CLIENTS" --max-concurrent-streams 1 --threads 1 \
    --duration "$DURATION" --warm-up-time "$WARMUP" --data "$WORK/empty.grpc" \
    "${headers[@]}" "http://$address$path" >"$OUT/$name.h2load.txt" &
  H2LOAD_PID=$!
  wait "$H2LOAD_PID"
  H2LOAD_PID=
  probe "$address" "$service" "$token"
}

# One call (GetMe, or Greet for SERVICE greeter) to ADDRESS with TOKEN if one
# is given; exits the script unless it is answered OK.
probe() {
  local address=$1 service=$2 token=${3:-}
  if [ -n "$token" ]; then
    LOADGEN_TOKEN=$token "$LOADGEN" --probe --target "http://$address" --service "$service"
  else
    "$LOADGEN" --probe --target "http://$address" --service "$service"
  fi
}

new_token() {
  "$LOADGEN" --print-token --target "http://$1"
}

# Starts authd as NAME on ADDRESS; its pid is left in STARTED_PID.
start_authd() {
  local name=$1 database_url=$2 address=$3 bcrypt_cost=$4 log=$OUT/authd-$1.log
  require_free "$address" "address for authd $name"
  # Limits raised: every call comes from one address and one account, which
  # authd's abuse defences would otherwise refuse. Everything else is at
  # authd's defaults, access log included.
  RUST_LOG=info "$AUTHD" \
    --listen "$address" \
    --database-url "$database_url" \
    --bcrypt-cost "$bcrypt_cost" \
    --login-rate 1000000/min \
    --signup-rate 1000000/min \
    --lockout-threshold 1000 \
    --shutdown-grace 1s \
    >"$log" 2>&1 &
  STARTED_PID=$!
  wait_listening "$STARTED_PID" "$address" "authd $name" "$log"
}

# Starts the example backend as NAME with the environment given after NAME.
start_greeter() {
  local name=$1 log=$OUT/greeter-$1.log
  shift
  require_free "$GREETER_ADDR" GREETER_ADDR
  env RUST_LOG=info GREETER_LISTEN="$GREETER_ADDR" "$@" "$GREETER" >"$log" 2>&1 &
  GREETER_PID=$!
  wait_listening "$GREETER_PID" "$GREETER_ADDR" "the example backend ($name)" "$log"
}

# The peak resident memory of PID so far, as $OUT/NAME.json.
record_rss() {
  local name=$1 pid=$2 peak_kib
  if ! alive "$pid"; then
    echo "authd exited during the $name runs; see its log in $OUT" >&2
    exit 1
  fi
  peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  echo "{\"vm_hwm_kib\": $peak_kib${3:+, $3}}" >"$OUT/$name.json"
}

# Records why NAME was not measured, in $OUT/NAME.json and on stderr.
not_measured() {
  local name=$1 reason=$2
  echo "NOT MEASURED: $name: $reason" >&2
  python3 -c 'import json, sys; print(json.dumps({"not_measured": sys.argv[1]}))' "$reason" \
    >"$OUT/$name.json"
}

# A fresh, empty database for BACKEND; its URL is left in DATABASE_URL.
fresh_database() {
  case $1 in
    sqlite)
      rm -f "$WORK"/authd.db*
      DATABASE_URL="sqlite://$WORK/authd.db"
      ;;
    postgres)
      psql "$PG_ADMIN_URL/postgres" -v ON_ERROR_STOP=1 -q \
        -c "DROP DATABASE IF EXISTS $PG_DATABASE WITH (FORCE)" \
        -c "CREATE DATABASE $PG_DATABASE"
      PG_CREATED=1
      DATABASE_URL="$PG_ADMIN_URL/$PG_DATABASE"
      ;;
  esac
}

sqlite_run() {
  python3 -c 'import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.executescript("BEGIN;" + sys.stdin.read() + "COMMIT;")' "$1"
}

sqlite_has_table() {
  python3 -c 'import sqlite3, sys
found = sqlite3.connect(sys.argv[1]).execute(
    "SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?", ("table", sys.argv[2])).fetchone()
sys.exit(0 if found else 1)' "$1" "$2"
}

# Writes SEED_USERS users with SEED_LIVE live and SEED_REVOKED revoked
# sessions (bench/seed/) into the migrated database of BACKEND, and the
# revoked ones into the revocation feed's table where it exists: SEEDED_FEED
# tells whether it did.
seed() {
  local backend=$1 counts files
  counts="CREATE TEMP TABLE seed_counts AS
    SELECT $SEED_USERS AS users, $SEED_LIVE AS live, $SEED_REVOKED AS revoked;"
  SEEDED_FEED=false
  case $backend in
    sqlite)
      local path=${DATABASE_URL#sqlite://}
      files=(bench/seed/sqlite-sessions.sql)
      if sqlite_has_table "$path" revocations; then
        SEEDED_FEED=true
        files+=(bench/seed/sqlite-revocations.sql)
      fi
      { echo "$counts"; cat "${files[@]}"; } | sqlite_run "$path"
      ;;
    postgres)
      files=(bench/seed/postgres-sessions.sql)
      if [ "$(psql "$DATABASE_URL" -tAc "SELECT to_regclass('revocations') IS NOT NULL")" = t ]; then
        SEEDED_FEED=true
        files+=(bench/seed/postgres-revocations.sql)
      fi
      { echo "$counts"; cat "${files[@]}"; } \
        | psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -1 >/dev/null
      ;;
  esac
}

# Revocation to rejection at another replica (PostgreSQL; SQLite is one
# process, so the same one) and at a backend subscribed to it, then the
# backend's throughput with and without its token check. All of it needs
# authd's revocation feed: without one, each is recorded as not measured.
measure_revocations() {
  local backend=$1 observer=$AUTHD_ADDR api_key reason
  start_authd "$backend-a" "$DATABASE_URL" "$AUTHD_ADDR" "$REVOCATION_BCRYPT_COST"
  AUTHD_PID=$STARTED_PID
  if [ "$backend" = postgres ]; then
    start_authd "$backend-b" "$DATABASE_URL" "$AUTHD_B_ADDR" "$REVOCATION_BCRYPT_COST"
    AUTHD_B_PID=$STARTED_PID
    observer=$AUTHD_B_ADDR
  fi
  api_key=$("$AUTHD" service-accounts create "bench-$backend" --database-url "$DATABASE_URL" \
    | sed -n 's/^API key.*: //p')

  echo "== $backend-revocation-authd" >&2
  if ! LOADGEN_API_KEY=$api_key "$LOADGEN" --json --measure-revocation \
    --target "http://$AUTHD_ADDR" --observer "http://$observer" --service authd \
    --trials "$REVOCATION_TRIALS" >"$OUT/$backend-revocation-authd.json" \
    2>"$WORK/revocation.err"; then
    # anyhow's first line names the failure; a backtrace may follow.
    reason=$(sed -n '1s/^Error: //p' "$WORK/revocation.err")
    for name in revocation-authd revocation-greeter greeter-checked greeter-unchecked; do
      not_measured "$backend-$name" "$reason"
    done
  else
    cat "$WORK/revocation.err" >&2
    # The backend verifies offline with authd's keys and follows the
    # revocations of the replica that did not revoke.
    start_greeter "$backend-checked" AUTHD_JWKS_URL="http://$observer/.well-known/jwks.json" \
      AUTHD_GRPC_URL="http://$observer" AUTHD_API_KEY="$api_key"
    echo "== $backend-revocation-greeter" >&2
    LOADGEN_API_KEY=$api_key "$LOADGEN" --json --measure-revocation \
      --target "http://$AUTHD_ADDR" --observer "http://$GREETER_ADDR" --service greeter \
      --trials "$REVOCATION_TRIALS" >"$OUT/$backend-revocation-greeter.json"
    local token
    token=$(new_token "$AUTHD_ADDR")
    h2load_measure "$backend-greeter-checked" "$GREETER_ADDR" greeter "$token"
    stop "$GREETER_PID"
    GREETER_PID=

    start_greeter "$backend-unchecked" GREETER_NO_AUTH=1 \
      AUTHD_JWKS_URL="http://$observer/.well-known/jwks.json"
    # Without a token: its probes prove the backend really skips its check,
    # rather than ignoring GREETER_NO_AUTH and refusing every call h2load
    # sends.
    h2load_measure "$backend-greeter-unchecked" "$GREETER_ADDR" greeter
    stop "$GREETER_PID"
    GREETER_PID=
  fi

  for pid in "$AUTHD_B_PID" "$AUTHD_PID"; do
    [ -n "$pid" ] && stop "$pid"
  done
  AUTHD_PID=
  AUTHD_B_PID=
}

# Peak RSS of an authd that starts on SEED_LIVE live and SEED_REVOKED
# revoked sessions, then serves GetMe load.
measure_seeded_rss() {
  local backend=$1 token
  fresh_database "$backend"
  "$AUTHD" migrate --database-url "$DATABASE_URL" >"$OUT/authd-$backend-migrate.log" 2>&1
  echo "== $backend-seeded: $SEED_LIVE live and $SEED_REVOKED revoked sessions" >&2
  seed "$backend"
  if [ "$SEEDED_FEED" = false ]; then
    echo "no revocations table: the revoked sessions are seeded in sessions only" >&2
  fi
  start_authd "$backend-seeded" "$DATABASE_URL" "$AUTHD_ADDR" "$BCRYPT_COST"
  AUTHD_PID=$STARTED_PID
  token=$(new_token "$AUTHD_ADDR")
  h2load_measure "$backend-seeded-getme" "$AUTHD_ADDR" authd "$token"
  record_rss "$backend-seeded-rss" "$AUTHD_PID" \
    "\"live\": $SEED_LIVE, \"revoked\": $SEED_REVOKED, \"revocations_table\": $SEEDED_FEED"
  stop "$AUTHD_PID"
  AUTHD_PID=
}

echo "building release binaries" >&2
cargo build --release --locked -p authd --bin authd --example loadgen --example floor
cargo build --release --locked -p backend

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.txt "$OUT"/summary.md
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cores: $CORES"
  echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "h2load: $(h2load --version | head -n 1)"
  echo "settings: DURATION=$DURATION WARMUP=$WARMUP BCRYPT_COST=$BCRYPT_COST CONNECTIONS=$CONNECTIONS GETME_CONCURRENCY=$GETME_CONCURRENCY HASH_CONCURRENCY=$HASH_CONCURRENCY FLOOD_FACTOR=$FLOOD_FACTOR FLOOD_GETME_CONCURRENCY=$FLOOD_GETME_CONCURRENCY FLOOD_CONCURRENCY=$FLOOD_CONCURRENCY H2LOAD_CLIENTS=$H2LOAD_CLIENTS REVOCATION_TRIALS=$REVOCATION_TRIALS SEED_USERS=$SEED_USERS SEED_LIVE=$SEED_LIVE SEED_REVOKED=$SEED_REVOKED"
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
  fresh_database "$backend"

  # The floor is measured next to each backend, so each ratio compares
  # measurements taken minutes apart at most.
  h2load_measure "$backend-floor" "$FLOOR_ADDR" authd
  measure "$backend-floor" --target "http://$FLOOR_ADDR" --scenario getme --no-setup \
    --concurrency "$GETME_CONCURRENCY"

  start_authd "$backend" "$DATABASE_URL" "$AUTHD_ADDR" "$BCRYPT_COST"
  AUTHD_PID=$STARTED_PID
  target=http://$AUTHD_ADDR
  token=$(new_token "$AUTHD_ADDR")
  h2load_measure "$backend-getme" "$AUTHD_ADDR" authd "$token"
  measure "$backend-getme" --target "$target" --scenario getme \
    --concurrency "$GETME_CONCURRENCY"
  measure "$backend-login" --target "$target" --scenario login \
    --concurrency "$HASH_CONCURRENCY"
  measure "$backend-signup" --target "$target" --scenario signup \
    --concurrency "$HASH_CONCURRENCY"
  measure "$backend-mixed-flood" --target "$target" --scenario mixed-flood \
    --concurrency "$FLOOD_GETME_CONCURRENCY" \
    --flood-concurrency "$FLOOD_CONCURRENCY" --flood-rate "$FLOOD_RATE"
  # VmHWM: the most resident memory authd had at any moment of the runs.
  record_rss "$backend-rss" "$AUTHD_PID"
  stop "$AUTHD_PID"
  AUTHD_PID=

  fresh_database "$backend"
  measure_revocations "$backend"
  measure_seeded_rss "$backend"
done

python3 bench/summarize.py "$OUT" | tee "$OUT/summary.md"
