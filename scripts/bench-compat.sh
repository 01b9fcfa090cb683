#!/usr/bin/env bash
# Issue 11 front ends: transit encrypt/decrypt through envault vs through a real OpenBao dev
# server with the same load generator (examples/transit_load.rs, over TCP to both), and KMS v2
# Encrypt/Decrypt through the Python grpcio client (tests/compat_scripts/kms_v2_client.py).
#
#   scripts/bench-compat.sh [SECONDS [CONCURRENCY]]     # defaults: 10 s, 16 connections
#
# envault: target/release/envault serve with [compat] transit_listen and [kms_v2] socket on a
# temp dir; OpenBao: `bao server -dev` (in-memory storage, no audit device). Both on 127.0.0.1,
# random ports. Not part of CI.
#
#   AUDIT_DATA_PLANE_SYNC=interval   envault's [audit] data_plane_sync (default always), with
#   AUDIT_SYNC_INTERVAL=100ms        its sync_interval
#   BAO_AUDIT=1                      give OpenBao a file audit device (no fsync per entry)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
concurrency=${2:-16}
for tool in bao python3; do
    command -v "$tool" >/dev/null || { echo "bench-compat: $tool not found" >&2; exit 1; }
done
cargo build --quiet --release --bin envault --example transit_load

workdir=$(mktemp -d "${TMPDIR:-/tmp}/envault-compat.XXXXXX")
chmod 700 "$workdir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$workdir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ev_port=$(free_port)
bao_port=$(free_port)
while [ "$bao_port" = "$ev_port" ] || [ "$((bao_port + 1))" = "$ev_port" ]; do bao_port=$(free_port); done

export ENVAULT_SOCKET="$workdir/envault.sock" ENVAULT_DATA_DIR="$workdir/data"
audit_sync=${AUDIT_DATA_PLANE_SYNC:-always}
ENVAULT_TRANSIT_LISTEN="127.0.0.1:$ev_port" ENVAULT_KMS_V2_SOCKET="$workdir/kms.sock" \
    ENVAULT_KMS_V2_KEY=kek ENVAULT_AUDIT_DATA_PLANE_SYNC="$audit_sync" \
    ENVAULT_AUDIT_SYNC_INTERVAL="${AUDIT_SYNC_INTERVAL:-100ms}" \
    target/release/envault serve >"$workdir/envault.log" 2>&1 &
pids+=($!)
bao_config=()
bao_kind="dev server"
if [ -n "${BAO_AUDIT:-}" ]; then
    # OpenBao 2.x creates audit devices only from its configuration file.
    printf 'audit "file" "bench" {\n  options {\n    file_path = "%s"\n  }\n}\n' \
        "$workdir/bao-audit.log" >"$workdir/bao-audit.hcl"
    bao_config=(-config="$workdir/bao-audit.hcl")
    bao_kind="dev server with a file audit device"
fi
HOME="$workdir" bao server -dev -dev-root-token-id=root \
    "-dev-listen-address=127.0.0.1:$bao_port" "${bao_config[@]}" >"$workdir/bao.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$workdir/data/operator.token" ] && break; sleep 0.1; done
for _ in $(seq 100); do
    BAO_ADDR="http://127.0.0.1:$bao_port" BAO_TOKEN=root HOME="$workdir" \
        bao secrets enable transit >/dev/null 2>&1 && break
    sleep 0.2
done
token=$(cat "$workdir/data/operator.token")

echo "== machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'); $(bao version)"
echo "== transit through envault (TCP listener, [audit] data_plane_sync = $audit_sync)," \
    "${seconds}s per phase, $concurrency connections (load $(cut -d' ' -f1-3 /proc/loadavg))"
target/release/examples/transit_load "127.0.0.1:$ev_port" "$token" bench "$seconds" "$concurrency"
echo "== transit through OpenBao $bao_kind, same load (load $(cut -d' ' -f1-3 /proc/loadavg))"
target/release/examples/transit_load "127.0.0.1:$bao_port" root bench "$seconds" "$concurrency"

echo "== KMS v2 through envault (one grpcio client, sequential), ${seconds}s per phase"
target/release/envault --socket "$ENVAULT_SOCKET" --token "$token" key create kek >/dev/null
python3 tests/compat_scripts/kms_v2_client.py "$workdir/gen" "$workdir/kms.sock" bench "$seconds"
