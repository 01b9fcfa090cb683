#!/usr/bin/env bash
# Durable 1 KiB PUT: envault (embedded store) against redis-server with appendonly yes and
# appendfsync always, both on a Unix socket, at 16 and 64 clients, alternating rounds. Server
# CPU per operation is user+system time from /proc/PID/stat over the run, divided by the
# operations the load generator counted.
#
#   scripts/bench-store-put.sh                  # 5 s per row, 2 rounds
#   SECONDS_PER_ROW=10 ROUNDS=3 scripts/bench-store-put.sh
#
# Needs target/release/envault and target/release/envault-bench (cargo build --release -p envault
# -p envault-bench; ENVAULT_BIN and ENVAULT_BENCH_BIN name others), redis-server,
# redis-benchmark, jq.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECONDS_PER_ROW:-5}
ROUNDS=${ROUNDS:-2}
BIN=${ENVAULT_BIN:-target/release/envault}
BENCH_BIN=${ENVAULT_BENCH_BIN:-target/release/envault-bench}
TICK=$(getconf CLK_TCK)
work=$(mktemp -d)
redis_pid=; envault_pid=
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    [ -n "$envault_pid" ] && kill "$envault_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

redis-server --port 0 --unixsocket "$work/redis.sock" --dir "$work" --appendonly yes \
    --appendfsync always --save '' --daemonize no > "$work/redis.log" 2>&1 &
redis_pid=$!
export ENVAULT_SOCKET=$work/envault.sock ENVAULT_DATA_DIR=$work/data
"$BIN" serve > "$work/envault.log" 2>&1 &
envault_pid=$!
for _ in $(seq 100); do [ -S "$work/envault.sock" ] && [ -S "$work/redis.sock" ] && break; sleep 0.1; done

echo "| round | server | clients | ops/s | server CPU µs/op | load avg |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
    for clients in 16 64; do
        n=$((SECS * ${REDIS_OPS_PER_SEC:-4000}))
        before=$(cpu_ticks "$redis_pid")
        out=$(redis-benchmark -s "$work/redis.sock" -t set -d 1024 -c "$clients" -r 1000 \
            -n "$n" -q 2>/dev/null | tr '\r' '\n' | grep -E "^SET:" | tail -1)
        after=$(cpu_ticks "$redis_pid")
        ops=$(echo "$out" | sed -E 's/^SET: ([0-9.]+) requests per second.*/\1/')
        echo "| $round | redis always | $clients | $ops | $(echo "$before $after $TICK $n" | awk '{ printf "%.1f", ($2-$1)/$3*1e6/$4 }') | $(cut -d' ' -f1 /proc/loadavg) |"
        before=$(cpu_ticks "$envault_pid")
        json=$("$BENCH_BIN" put --clients "$clients" --duration "${SECS}s" --warmup 0s \
            --value-size 1024 --json)
        after=$(cpu_ticks "$envault_pid")
        eops=$(echo "$json" | jq -r '.ops_per_s')
        ecount=$(echo "$json" | jq -r '.ops')
        echo "| $round | envault | $clients | $eops | $(echo "$before $after $TICK $ecount" | awk '{ printf "%.1f", ($2-$1)/$3*1e6/$4 }') | $(cut -d' ' -f1 /proc/loadavg) |"
    done
done
