#!/usr/bin/env bash
# Backup and restore throughput and daemon memory to a SeaweedFS S3 bucket vs to the
# local backup directory, for the same database.
#
#   scripts/bench-backup-s3.sh            # 1024 MiB of record values
#   scripts/bench-backup-s3.sh 256        # another size (MiB)
#   KEEP=1 scripts/bench-backup-s3.sh 64  # keep the temp dir (daemon and weed logs)
#
# In a temp dir under ${TMPDIR:-/tmp}: `weed server -s3` on free 127.0.0.1 ports with one
# admin identity and a bucket, then three runs of examples/bench_backup.rs (see
# scripts/bench-backup.sh for what one run measures) against `target/release/envault serve`:
#   1. local, loaded: a fresh daemon loads SIZE MiB, backs up to <data_dir>/backups, restores;
#   2. local, reused: the daemon restarted on the same data dir, same database again;
#   3. s3, reused:    the daemon restarted on the same data dir with
#                     ENVAULT_BACKUP_TARGET=s3://bench/envault, same database again.
# Runs 2 and 3 compare the targets on equal terms (same database, a daemon that has not just
# written it). MB = 10^6 bytes of record values, MiB = 2^20. Needs cargo, jq, weed, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
SIZE=${1:-1024}
for tool in cargo jq weed python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench-backup-s3: $tool not found" >&2; exit 1; }
done
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

echo "== machine"
lscpu | sed -n 's/^Model name: *//p'
echo "cpus: $(nproc), memory: $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
weed version | head -1
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --quiet --release --bin envault --example bench_backup

workdir=$(mktemp -d "${TMPDIR:-/tmp}/envault-bench-s3.XXXXXX")
daemon_pid=
weed_pid=
cleanup() {
    for pid in "$daemon_pid" "$weed_pid"; do
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    daemon_pid=
    weed_pid=
    if [ -z "${KEEP:-}" ]; then rm -rf "$workdir"; else echo "kept $workdir"; fi
}
trap cleanup EXIT

need_kib=$((SIZE * 1024 * 14))
avail_kib=$(df -Pk "$workdir" | awk 'NR == 2 { print $4 }')
if [ "$avail_kib" -lt "$need_kib" ]; then
    echo "bench-backup-s3: need about $((need_kib / 1024 / 1024)) GiB free for $SIZE MiB" >&2
    exit 1
fi

# Eight free ports: master, volume, filer, s3 (http and grpc each).
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
access_key=bench-admin
secret_key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
mkdir -p "$workdir/weed"
cat >"$workdir/s3.json" <<EOF
{"identities":[{"name":"admin","credentials":[{"accessKey":"$access_key","secretKey":"$secret_key"}],
 "actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
weed server -s3 -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$workdir/weed" \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
    -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" \
    -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
    -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.config="$workdir/s3.json" -master.telemetry=false \
    -master.volumeSizeLimitMB=1024 -volume.max=64 >"$workdir/weed.log" 2>&1 &
weed_pid=$!
for _ in $(seq 300); do
    curl -s -o /dev/null "http://127.0.0.1:${ports[6]}/" && curl -s -o /dev/null \
        "http://127.0.0.1:${ports[4]}/" && break
    sleep 0.1
done
curl -sf -X POST "http://127.0.0.1:${ports[4]}/buckets/bench/" >/dev/null
sleep 1

start_daemon() { # extra env assignments... -> sets daemon_pid
    env ENVAULT_SOCKET="$workdir/envault.sock" ENVAULT_DATA_DIR="$workdir/data" "$@" \
        target/release/envault serve >>"$workdir/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 300); do
        [ -S "$workdir/envault.sock" ] && [ -s "$workdir/data/operator.token" ] && return 0
        sleep 0.1
    done
    echo "bench-backup-s3: the daemon did not start, see $workdir/daemon.log" >&2
    exit 1
}
stop_daemon() {
    kill "$daemon_pid"
    wait "$daemon_pid" || true
    daemon_pid=
}
results=()
measure() { # label
    echo "-- $1 (daemon pid $daemon_pid, load average $(cut -d' ' -f1-3 /proc/loadavg))"
    ENVAULT_SOCKET="$workdir/envault.sock" ENVAULT_DATA_DIR="$workdir/data" \
        "$target_dir/release/examples/bench_backup" "$SIZE" --pid "$daemon_pid" \
        --state "$workdir/state" | tee "$workdir/bench.log"
    results+=("label=$1 $(sed -n 's/^RESULT //p' "$workdir/bench.log") load=$(cut -d' ' -f1 /proc/loadavg)")
}

start_daemon
measure local-loaded
stop_daemon
start_daemon
measure local-reused
stop_daemon
start_daemon ENVAULT_BACKUP_TARGET=s3://bench/envault \
    ENVAULT_BACKUP_ENDPOINT="http://127.0.0.1:${ports[6]}" \
    ENVAULT_S3_ACCESS_KEY_ID="$access_key" ENVAULT_S3_SECRET_ACCESS_KEY="$secret_key"
measure s3-reused
stop_daemon
echo "weed VmHWM: $(awk '/VmHWM/ { print $2 / 1024 " MiB" }' "/proc/$weed_pid/status")"
du -sh "$workdir/data/backups" "$workdir/weed" 2>/dev/null || true

echo
echo "== backup and restore of $SIZE MiB (MB/s of record values; daemon VmRSS MiB above idle)"
fmt='%14s %8s %7s %9s %9s %7s %9s %9s %9s %5s\n'
# shellcheck disable=SC2059
printf "$fmt" run records idle "bkp s" "bkp MB/s" "bkp +pk" "rst s" "rst MB/s" "rst +pk" load
for r in "${results[@]}"; do
    (
        declare -A v
        # shellcheck disable=SC2086
        for kv in $r; do v[${kv%%=*}]=${kv#*=}; done
        # shellcheck disable=SC2059
        printf "$fmt" "${v[label]}" "${v[records]}" "${v[rss_idle_mib]}" "${v[backup_s]}" \
            "${v[backup_mbps]}" "${v[backup_above_idle_mib]}" "${v[restore_s]}" \
            "${v[restore_mbps]}" "${v[restore_above_idle_mib]}" "${v[load]}"
    )
done
