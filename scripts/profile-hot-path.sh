#!/usr/bin/env bash
# Instructions and syscalls per request on the hot paths, for before/after comparisons on a
# loaded machine (where throughput is noise and instruction counts are not).
#
#   scripts/profile-hot-path.sh                 # callgrind, then strace
#   PHASE_SECONDS=20 CLIENTS=16 scripts/profile-hot-path.sh
#   ENVAULT_BIN=/tmp/old/envault scripts/profile-hot-path.sh   # another build
#
# The daemon (release build, `[resp] socket` on) runs under `valgrind --tool=callgrind`. For
# each path the counters are zeroed (`callgrind_control -z`), a fixed load runs, and the
# counters are dumped (`callgrind_control -d`); the dump's total Ir (every thread of the
# daemon) minus the idle rate over the same time, divided by the operations the load
# generator counted, is the instructions per operation:
#
#   HTTP PUT / GET / wrap: envault-bench put|get|wrap --clients C --duration S --warmup 0s
#                          --value-size 1024 (get: --keys 16, so its prefill is negligible)
#   RESP SET / GET:        redis-benchmark -s SOCKET -a TOKEN -t set|get -d 1024 -c C -n N
#                          (and -P 32 with 4×N)
#
# Then the same loads run against a native daemon under `strace -c -f -p PID` (attached only
# for the load) for the syscalls per operation, fdatasync and write included. The top
# inclusive functions of each callgrind dump are left in $KEEP (default: not kept).
#
# Needs target/release/envault and target/release/envault-bench (cargo build --release -p
# envault -p envault-bench), valgrind, strace, redis-benchmark, jq.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ENVAULT_BIN:-target/release/envault}
BENCH_BIN=${ENVAULT_BENCH_BIN:-target/release/envault-bench}
SECS=${PHASE_SECONDS:-15}
CLIENTS=${CLIENTS:-16}
RESP_N=${RESP_N:-4000}
KEEP=${KEEP:-}
SKIP_STRACE=${SKIP_STRACE:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/envault-profile.XXXXXX")
chmod 700 "$work"
daemon_pid=
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start_daemon DIR [WRAPPER...]: starts `envault serve` in DIR and waits for both sockets.
start_daemon() {
    local dir=$1
    shift
    mkdir -p "$dir"
    ENVAULT_SOCKET="$dir/envault.sock" ENVAULT_DATA_DIR="$dir/data" \
        ENVAULT_RESP_SOCKET="$dir/resp.sock" "$@" "$BIN" serve >"$dir/envault.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 600); do
        [ -S "$dir/resp.sock" ] && [ -s "$dir/data/operator.token" ] && break
        sleep 0.1
    done
    [ -S "$dir/resp.sock" ] || { echo "profile: envault did not start" >&2; cat "$dir/envault.log" >&2; exit 1; }
    export ENVAULT_SOCKET="$dir/envault.sock" ENVAULT_TOKEN
    ENVAULT_TOKEN=$(cat "$dir/data/operator.token")
    # Setup outside the measured windows: the database and key the loads use, an app token.
    "$BENCH_BIN" put --clients 2 --duration 1s --warmup 0s --value-size 1024 --keys 16 --json >/dev/null
    "$BENCH_BIN" wrap --clients 2 --duration 1s --warmup 0s --value-size 1024 --json >/dev/null
    "$BIN" --socket "$ENVAULT_SOCKET" authz grant --source databases --target bench --role Reader >/dev/null 2>&1 || true
    app_token=$("$BIN" --socket "$ENVAULT_SOCKET" token create --role app --db bench)
}

# load NAME: runs one path's load, prints the operations it completed.
load() {
    case $1 in
        http-put|http-get|http-wrap)
            "$BENCH_BIN" "${1#http-}" --clients "$CLIENTS" --duration "${SECS}s" --warmup 0s \
                --value-size 1024 --keys 16 --json | jq -r '.ops' ;;
        resp-set|resp-get)
            redis-benchmark -s "$dir/resp.sock" -a "$app_token" -t "${1#resp-}" -d 1024 \
                -c "$CLIENTS" -r 16 -n "$RESP_N" -q >/dev/null 2>&1
            echo "$RESP_N" ;;
        resp-set-p32|resp-get-p32)
            local t=${1#resp-}
            redis-benchmark -s "$dir/resp.sock" -a "$app_token" -t "${t%-p32}" -d 1024 \
                -c "$CLIENTS" -r 16 -P 32 -n $((RESP_N * 4)) -q >/dev/null 2>&1
            echo $((RESP_N * 4)) ;;
    esac
}
paths=(http-put http-get http-wrap resp-set resp-get resp-set-p32 resp-get-p32)

# --- callgrind -------------------------------------------------------------------------
dir=$work/cg
start_daemon "$dir" valgrind --tool=callgrind --callgrind-out-file="$work/cg/callgrind.out.%p" \
    --dump-line=no --collect-systime=no
cg_pid=$daemon_pid
last_dump() { ls -t "$work"/cg/callgrind.out.*.* 2>/dev/null | head -1; }
dump_total() { sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$1" | head -1; }

callgrind_control -z "$cg_pid" >/dev/null
t0=$(date +%s.%N); sleep "$SECS"; t1=$(date +%s.%N)
callgrind_control -d idle "$cg_pid" >/dev/null
idle_rate=$(awk -v ir="$(dump_total "$(last_dump)")" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", ir / (b - a) }')

declare -A ir_per_op ops_of
for path in "${paths[@]}"; do
    callgrind_control -z "$cg_pid" >/dev/null
    t0=$(date +%s.%N)
    ops=$(load "$path")
    t1=$(date +%s.%N)
    callgrind_control -d "$path" "$cg_pid" >/dev/null
    dump=$(last_dump)
    total=$(dump_total "$dump")
    ops_of[$path]=$ops
    ir_per_op[$path]=$(awk -v ir="$total" -v rate="$idle_rate" -v a="$t0" -v b="$t1" -v n="$ops" \
        'BEGIN { printf "%.0f", (ir - rate * (b - a)) / n }')
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP"
        cp "$dump" "$KEEP/callgrind.$path.out"
        callgrind_annotate --inclusive=yes "$dump" >"$KEEP/$path.inclusive.txt" 2>/dev/null || true
    fi
    echo "callgrind $path: $ops ops, $total Ir" >&2
done
kill "$cg_pid"; wait "$cg_pid" 2>/dev/null || true; daemon_pid=

# --- strace ----------------------------------------------------------------------------
declare -A sys_per_op fsync_per_op write_per_op
if [ -z "$SKIP_STRACE" ] && command -v strace >/dev/null; then
    dir=$work/st
    start_daemon "$dir"
    for path in "${paths[@]}"; do
        strace -c -f -p "$daemon_pid" -o "$work/strace.$path" 2>/dev/null &
        strace_pid=$!
        sleep 1
        ops=$(load "$path")
        kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
        # `strace -c` rows: "% time, seconds, usecs/call, calls, [errors,] syscall".
        read -r calls fsyncs writes < <(awk '
            $NF == "total" { total = $4 }
            $NF ~ /^(fdatasync|fsync)$/ { f += $4 }
            $NF ~ /^(write|writev|sendmsg|sendto|pwrite64)$/ { w += $4 }
            END { print total + 0, f + 0, w + 0 }' "$work/strace.$path")
        sys_per_op[$path]=$(awk -v c="$calls" -v n="$ops" 'BEGIN { printf "%.2f", c / n }')
        fsync_per_op[$path]=$(awk -v c="$fsyncs" -v n="$ops" 'BEGIN { printf "%.3f", c / n }')
        write_per_op[$path]=$(awk -v c="$writes" -v n="$ops" 'BEGIN { printf "%.2f", c / n }')
        [ -n "$KEEP" ] && cp "$work/strace.$path" "$KEEP/strace.$path.txt"
        echo "strace $path: $ops ops" >&2
    done
fi

echo "== $("$BIN" --version 2>/dev/null || echo envault), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $CLIENTS clients, idle $idle_rate Ir/s"
echo "| path | ops (callgrind) | instructions/op | syscalls/op | fsync+fdatasync/op | writes/op |"
echo "|---|---|---|---|---|---|"
for path in "${paths[@]}"; do
    echo "| $path | ${ops_of[$path]} | ${ir_per_op[$path]} | ${sys_per_op[$path]:--} | ${fsync_per_op[$path]:--} | ${write_per_op[$path]:--} |"
done
