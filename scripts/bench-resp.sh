#!/usr/bin/env bash
# envault's Redis-protocol socket against redis-server, both driven by the same redis-benchmark
# over a Unix socket, in alternating rounds of the same run:
#
#   redis-benchmark -s SOCKET -a TOKEN -t set|get -d 1024 -c 16|64 [-P 32] -n N --csv
#
#   scripts/bench-resp.sh [ROUNDS]        # default 2 rounds
#
# envault: target/release/envault serve with [resp] socket, one database under a customer
# key, an app token. redis-server: appendonly yes, appendfsync always, no RDB saves, a
# password (so both servers see AUTH), Unix socket only. Each cell is the mean over the rounds;
# server CPU per operation is (utime + stime) from /proc/PID/stat over the run, divided by the
# requests. Not part of CI.
#
#   SET_N=60000 GET_N=300000   requests per unpipelined run (pipelined runs take 4× as many)
#   KEYS=0                     redis-benchmark -r (0 = the literal key of the command, as given)
#   ENVAULT_BIN=path           another envault binary (before/after runs)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
set_n=${SET_N:-60000}
get_n=${GET_N:-300000}
keys=${KEYS:-0}
for tool in redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "bench-resp: $tool not found (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
envault_bin=${ENVAULT_BIN:-target/release/envault}
[ -n "${ENVAULT_BIN:-}" ] || cargo build --quiet --release --bin envault

work=$(mktemp -d "${TMPDIR:-/tmp}/envault-resp.XXXXXX")
chmod 700 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

export ENVAULT_SOCKET="$work/envault.sock" ENVAULT_DATA_DIR="$work/data"
ENVAULT_RESP_SOCKET="$work/resp.sock" "$envault_bin" serve >"$work/envault.log" 2>&1 &
envault_pid=$!
pids+=("$envault_pid")
for _ in $(seq 100); do [ -S "$work/resp.sock" ] && [ -s "$work/data/operator.token" ] && break; sleep 0.1; done
[ -S "$work/resp.sock" ] || { echo "bench-resp: envault did not start" >&2; cat "$work/envault.log" >&2; exit 1; }
ev() { ENVAULT_TOKEN=$(cat "$work/data/operator.token") "$envault_bin" --socket "$ENVAULT_SOCKET" "$@"; }
ev key create bench >/dev/null
ev authz grant --source databases --target bench --role Reader >/dev/null 2>&1 || true
ev db create bench --key bench >/dev/null
token=$(ev token create --role app --db bench)

mkdir -p "$work/redis"
redis-server --port 0 --unixsocket "$work/redis/redis.sock" --unixsocketperm 700 \
    --dir "$work/redis" --appendonly yes --appendfsync always --save '' \
    --requirepass "$token" >"$work/redis/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do [ -S "$work/redis/redis.sock" ] && break; sleep 0.1; done

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run SOCKET PID TEST CLIENTS PIPELINE N -> "rps cpu_us_per_op"
run() {
    local sock=$1 pid=$2 test=$3 clients=$4 pipeline=$5 n=$6 before after rps
    before=$(cpu_ticks "$pid")
    rps=$(redis-benchmark -s "$sock" -a "$token" -t "$test" -d 1024 -c "$clients" -P "$pipeline" \
        -r "$keys" -n "$n" --csv 2>/dev/null | awk -F'"' 'NR == 2 { print $4 }')
    after=$(cpu_ticks "$pid")
    awk -v r="$rps" -v b="$before" -v a="$after" -v t="$ticks" -v n="$n" \
        'BEGIN { printf "%s %.2f\n", r, (a - b) / t * 1e6 / n }'
}

echo "== machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'); $(redis-server --version | cut -d' ' -f1-3)"
echo "== commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $rounds rounds, -r $keys"
declare -A sum_rps sum_cpu
cases=("set 16 1" "set 64 1" "get 16 1" "get 64 1" "set 16 32" "set 64 32" "get 16 32" "get 64 32")
for round in $(seq "$rounds"); do
    for case in "${cases[@]}"; do
        read -r test clients pipeline <<<"$case"
        n=$([ "$test" = set ] && echo "$set_n" || echo "$get_n")
        [ "$pipeline" = 1 ] || n=$((n * 4))
        # Alternate which server goes first, so neither always runs on a warmer machine.
        order=("envault" "redis")
        [ $((round % 2)) = 0 ] && order=("redis" "envault")
        for server in "${order[@]}"; do
            if [ "$server" = envault ]; then
                read -r rps cpu < <(run "$work/resp.sock" "$envault_pid" "$test" "$clients" "$pipeline" "$n")
            else
                read -r rps cpu < <(run "$work/redis/redis.sock" "$redis_pid" "$test" "$clients" "$pipeline" "$n")
            fi
            key="$server $case"
            sum_rps[$key]=$(awk -v a="${sum_rps[$key]:-0}" -v b="$rps" 'BEGIN { print a + b }')
            sum_cpu[$key]=$(awk -v a="${sum_cpu[$key]:-0}" -v b="$cpu" 'BEGIN { print a + b }')
            echo "round $round: $server $test -c $clients -P $pipeline: $rps/s, $cpu µs CPU/op" >&2
        done
    done
done

echo
echo "| op | clients | pipeline | envault | redis-server | ratio | envault CPU/op | redis CPU/op | CPU ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
for case in "${cases[@]}"; do
    read -r test clients pipeline <<<"$case"
    awk -v op="${test^^}" -v c="$clients" -v p="$pipeline" -v n="$rounds" \
        -v er="${sum_rps[envault $case]}" -v rr="${sum_rps[redis $case]}" \
        -v ec="${sum_cpu[envault $case]}" -v rc="${sum_cpu[redis $case]}" 'BEGIN {
            printf "| %s | %d | %s | %.1fk/s | %.1fk/s | %.2f× | %.1f µs | %.1f µs | %.1f× |\n",
                op, c, (p == 1 ? "-" : p), er / n / 1000, rr / n / 1000, er / rr,
                ec / n, rc / n, (rc > 0 ? ec / rc : 0) }'
done
