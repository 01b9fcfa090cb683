#!/usr/bin/env bash
# Backup and restore throughput and daemon memory, for several database sizes, and the STREAM
# encryption alone against OpenSSL at 64 KiB.
#
#   scripts/bench-backup.sh                   # 256 MiB and 1024 MiB, then STREAM vs openssl
#   scripts/bench-backup.sh 128 512 2048      # other sizes (MiB of record values)
#   STREAM_ONLY=1 scripts/bench-backup.sh     # only the STREAM vs openssl comparison
#   KEEP=1 scripts/bench-backup.sh 64         # keep the temp dirs (daemon logs, backups)
#   BENCH_BACKUP_ARGS="--min-value 16384 --max-value 65536" scripts/bench-backup.sh 1024
#                                             # other value sizes (see examples/bench_backup.rs)
#   ROUNDS=5 OPENSSL_SECONDS=3                # STREAM vs openssl rounds (median ratio), seconds
#
# Per size, in a temp dir under ${TMPDIR:-/tmp} (ENVAULT_SOCKET, ENVAULT_DATA_DIR), two passes
# of examples/bench_backup.rs against `target/release/envault serve`:
#   1. "loaded": a fresh daemon; load random 64 KiB-1 MiB records from 4 writers, idle VmRSS,
#      timed backup and restore with VmRSS sampled every 20 ms (plus the exact VmHWM after a
#      reset through /proc/<pid>/clear_refs when allowed);
#   2. "reused": the daemon restarted on the same data dir; backup and restore of the same
#      database again, so that idle is that of a daemon that has not just written the data.
# Peak above idle should not grow with size.
#
# STREAM vs OpenSSL (the approach of scripts/bench-vs-openssl.sh): the criterion groups
# `stream_seal/65536` and `stream_open/65536` of benches/stream.rs (median time per chunk, from
# <target>/criterion/<group>/65536/new/estimates.json) against
# `openssl speed -elapsed -evp aes-256-gcm -bytes 65536 -mr`, plain (bulk EVP_EncryptUpdate) and
# -aead (set IV, AAD, update, final, tag per message: like one STREAM chunk). Both wall-clock,
# both pinned to one CPU (BENCH_CPU, default the last one),
# measured one after the other in each of $ROUNDS rounds; the median ratio is reported, since
# other work on the machine moves single figures by +-20 %.
# MB = 10^6 bytes, MiB = 2^20 bytes. Needs cargo, openssl, jq.
set -euo pipefail

cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(256 1024)
OPENSSL_SECONDS=${OPENSSL_SECONDS:-3}
ROUNDS=${ROUNDS:-3}
for tool in cargo openssl jq; do
    command -v "$tool" >/dev/null || { echo "bench-backup: $tool not found" >&2; exit 1; }
done
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

echo "== machine"
lscpu | sed -n 's/^Model name: *//p'
echo "cpus: $(nproc), memory: $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
openssl version
rustc --version
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# Build first so that compiling never overlaps a measurement.
cargo build --quiet --release --bin envault --example bench_backup
# The bench binary is run directly in each round, so that it stays the same one even if the
# sources change meanwhile (cargo bench would rebuild).
stream_bench=$(cargo bench --quiet --bench stream --no-run --message-format=json |
    jq -r 'select(.executable != null and .target.name == "stream") | .executable')

daemon_pid=
workdir=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
        daemon_pid=
    fi
    if [ -n "$workdir" ] && [ -z "${KEEP:-}" ]; then
        rm -rf "$workdir"
    fi
    workdir=
}
trap cleanup EXIT

start_daemon() { # workdir -> sets daemon_pid
    ENVAULT_SOCKET="$1/envault.sock" ENVAULT_DATA_DIR="$1/data" \
        target/release/envault serve >>"$1/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 300); do
        [ -S "$1/envault.sock" ] && [ -s "$1/data/operator.token" ] && return 0
        sleep 0.1
    done
    echo "bench-backup: the daemon did not start, see $1/daemon.log" >&2
    exit 1
}
stop_daemon() {
    kill "$daemon_pid"
    wait "$daemon_pid" || true
    daemon_pid=
}
measure() { # workdir size -> appends to results
    local log="$1/bench.log"
    echo "daemon pid $daemon_pid, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086  # BENCH_BACKUP_ARGS is a list of words on purpose
    ENVAULT_SOCKET="$1/envault.sock" ENVAULT_DATA_DIR="$1/data" \
        "$target_dir/release/examples/bench_backup" "$2" --pid "$daemon_pid" \
        --state "$1/state" ${BENCH_BACKUP_ARGS:-} | tee "$log"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    results+=("$(sed -n 's/^RESULT //p' "$log") load=$(cut -d' ' -f1 /proc/loadavg)")
}

results=()
if [ -z "${STREAM_ONLY:-}" ]; then
    for size in "${SIZES[@]}"; do
        workdir=$(mktemp -d "${TMPDIR:-/tmp}/envault-bench-backup.XXXXXX")
        # sled holds the records about twice; two backup files; two restored copies.
        need_kib=$((size * 1024 * 12))
        avail_kib=$(df -Pk "$workdir" | awk 'NR == 2 { print $4 }')
        echo
        echo "== $size MiB (workdir $workdir, $((avail_kib / 1024 / 1024)) GiB free)"
        if [ "$avail_kib" -lt "$need_kib" ]; then
            echo "bench-backup: need about $((need_kib / 1024 / 1024)) GiB free for $size MiB" >&2
            exit 1
        fi
        echo "-- pass 1: load, then back up and restore on the same daemon"
        start_daemon "$workdir"
        measure "$workdir" "$size"
        stop_daemon
        echo "-- pass 2: restarted daemon, back up and restore the same database again"
        start_daemon "$workdir"
        measure "$workdir" "$size"
        du -sh "$workdir/data/store" "$workdir/data/backups" 2>/dev/null || true
        cleanup
    done
fi

pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
    pin=(taskset -c "${BENCH_CPU:-$(($(nproc) - 1))}")
fi
openssl_rate() { # extra flag -> bytes per second at 64 KiB
    # -elapsed: wall-clock time, as criterion measures. Without it openssl speed divides by its
    # user CPU time, which does not grow when another process shares the CPU, while criterion's
    # wall time does: the ratio would then swing by 2x with the machine's load.
    # shellcheck disable=SC2086  # $1 is an optional flag
    "${pin[@]}" openssl speed -elapsed -evp aes-256-gcm $1 -bytes 65536 \
        -seconds "$OPENSSL_SECONDS" -mr \
        2>/dev/null | awk -F: '/^\+F:/ { print $NF }' | tail -1
}
echo
echo "== STREAM vs openssl speed -evp aes-256-gcm at 64 KiB, $ROUNDS rounds (MB/s)"
slog="$target_dir/bench-stream.log"
ratios=()
printf '%5s  %6s  %6s  %13s  %14s  %10s  %10s  %11s  %s\n' round seal open "openssl -aead" \
    "openssl stream" "seal/-aead" "open/-aead" "seal/stream" "load"
for round in $(seq "$ROUNDS"); do
    ossl_aead=$(openssl_rate -aead)
    ossl_stream=$(openssl_rate "")
    rm -rf "$target_dir/criterion/stream_seal" "$target_dir/criterion/stream_open"
    if ! CRITERION_HOME="$target_dir/criterion" "${pin[@]}" "$stream_bench" --bench \
        '^stream_(seal|open)/' >"$slog" 2>&1; then
        cat "$slog" >&2
        exit 1
    fi
    seal_ns=$(jq '.median.point_estimate' "$target_dir/criterion/stream_seal/65536/new/estimates.json")
    open_ns=$(jq '.median.point_estimate' "$target_dir/criterion/stream_open/65536/new/estimates.json")
    line=$(awk -v r="$round" -v sn="$seal_ns" -v on="$open_ns" -v aead="$ossl_aead" \
        -v stream="$ossl_stream" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
        seal = 65536 / sn * 1000; open = 65536 / on * 1000; a = aead / 1e6; s = stream / 1e6
        printf "%5d  %6.0f  %6.0f  %13.0f  %14.0f  %10.2f  %10.2f  %11.2f  %s\n",
            r, seal, open, a, s, seal / a, open / a, seal / s, load
    }')
    echo "$line"
    ratios+=("$line")
done
median_column() { # column -> median of that column of the rounds
    printf '%s\n' "${ratios[@]}" | awk -v c="$1" '{ print $c }' | sort -n |
        awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
echo "median ratio vs openssl -aead: seal $(median_column 6), open $(median_column 7)" \
    "(target >= 0.9); seal vs openssl stream: $(median_column 8)"

if [ ${#results[@]} -gt 0 ]; then
    echo
    echo "== backup and restore (MB/s of record values; memory: daemon VmRSS in MiB, peaks above"
    echo "   the idle VmRSS before the backup; rst +start: restore peak above its own start)"
    fmt='%8s %7s %7s %9s %8s %8s %9s %9s %9s %8s %9s %9s %9s %5s\n'
    # shellcheck disable=SC2059  # the format is shared by the header and the rows
    printf "$fmt" "size MiB" data records "load MB/s" "idle" "bkp s" "bkp MB/s" "bkp +peak" \
        "bkp +HWM" "rst s" "rst MB/s" "rst +peak" "rst +start" load
    for r in "${results[@]}"; do
        # shellcheck disable=SC2086  # the RESULT line is a list of key=value words
        (
            declare -A v
            for kv in $r; do v[${kv%%=*}]=${kv#*=}; done
            [ "${v[data]}" = reused ] && v[load_mbps]=-
            # shellcheck disable=SC2059
            printf "$fmt" "${v[size_mib]}" "${v[data]}" "${v[records]}" "${v[load_mbps]}" \
                "${v[rss_idle_mib]}" "${v[backup_s]}" "${v[backup_mbps]}" \
                "${v[backup_above_idle_mib]}" "${v[backup_hwm_above_idle_mib]}" \
                "${v[restore_s]}" "${v[restore_mbps]}" "${v[restore_above_idle_mib]}" \
                "${v[restore_above_before_mib]}" "${v[load]}"
        )
    done
fi
