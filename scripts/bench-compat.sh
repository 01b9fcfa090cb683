#!/usr/bin/env bash
# Front ends: transit encrypt/decrypt through envault vs through a real OpenBao dev
# server with the same load generator (examples/transit_load.rs), each server over a Unix
# socket and over loopback TCP, and KMS v2 Encrypt/Decrypt through the Python grpcio client
# (tests/compat_scripts/kms_v2_client.py).
#
#   scripts/bench-compat.sh [SECONDS [CONCURRENCY]]     # defaults: 10 s, 16 connections
#
# envault: target/release/envault serve, transit on its socket and on [compat] transit_listen
# (127.0.0.1, random port), [kms_v2] socket, all in a temp dir. OpenBao: `bao server -dev`
# (in-memory storage, no audit device, TCP on 127.0.0.1) with a config file adding a
# `listener "unix"` in the same temp dir. Like-for-like pairs: unix vs unix, tcp vs tcp; the
# summary prints every pairing. Not part of CI.
#
#   AUDIT_DATA_PLANE_SYNC=interval   envault's [audit] data_plane_sync (default always), with
#   AUDIT_SYNC_INTERVAL=100ms        its sync_interval
#   BAO_AUDIT=1                      give OpenBao a file audit device (no fsync per entry)
#   ROUNDS=2                         run the four transit measurements this many times
#   KMS=0                            skip the KMS v2 measurement
#   TRANSIT_LOAD_THREADS=1           the generator's tokio worker threads (default 1)
#   ENVAULT_BIN=path                 another envault binary to serve (before/after runs)
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
    "${ENVAULT_BIN:-target/release/envault}" serve >"$workdir/envault.log" 2>&1 &
pids+=($!)
# The dev server keeps its TCP listener; a config file adds the Unix one (and the audit device).
bao_sock="$workdir/bao.sock"
printf 'listener "unix" {\n  address = "%s"\n  tls_disable = true\n}\n' "$bao_sock" \
    >"$workdir/bao.hcl"
bao_kind="dev server"
if [ -n "${BAO_AUDIT:-}" ]; then
    # OpenBao 2.x creates audit devices only from its configuration file.
    printf 'audit "file" "bench" {\n  options {\n    file_path = "%s"\n  }\n}\n' \
        "$workdir/bao-audit.log" >>"$workdir/bao.hcl"
    bao_kind="dev server with a file audit device"
fi
HOME="$workdir" bao server -dev -dev-root-token-id=root \
    "-dev-listen-address=127.0.0.1:$bao_port" -config="$workdir/bao.hcl" >"$workdir/bao.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$workdir/data/operator.token" ] && break; sleep 0.1; done
for _ in $(seq 100); do
    BAO_ADDR="http://127.0.0.1:$bao_port" BAO_TOKEN=root HOME="$workdir" \
        bao secrets enable transit >/dev/null 2>&1 && break
    sleep 0.2
done
for _ in $(seq 50); do [ -S "$bao_sock" ] && break; sleep 0.1; done
[ -S "$bao_sock" ] || { echo "bench-compat: OpenBao did not open $bao_sock" >&2; cat "$workdir/bao.log" >&2; exit 1; }
token=$(cat "$workdir/data/operator.token")

echo "== machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'); $(bao version)"
echo "== commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
    "envault ${ENVAULT_BIN:-target/release/envault} [audit] data_plane_sync = $audit_sync," \
    "OpenBao $bao_kind;" \
    "${seconds}s per phase, $concurrency connections, generator threads ${TRANSIT_LOAD_THREADS:-1}"
results="$workdir/results"
measure() { # NAME ADDR TOKEN
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    # Other jobs on the machine (compilers) skew a run: say how many were running.
    echo "-- $1 ($2; load $load; rustc processes: $(pgrep -c -x rustc || true))"
    local out
    out=$(target/release/examples/transit_load "$2" "$3" bench "$seconds" "$concurrency")
    echo "$out"
    sed "s/^/$1 /" <<<"$out" >>"$results"
}
for round in $(seq "${ROUNDS:-1}"); do
    echo "== round $round"
    measure envault-unix "unix://$ENVAULT_SOCKET" "$token"
    measure envault-tcp "127.0.0.1:$ev_port" "$token"
    measure bao-tcp "127.0.0.1:$bao_port" root
    measure bao-unix "unix://$bao_sock" root
done
# Mean ops/s per server, transport and phase over the rounds, and the ratios.
echo "== summary (mean ops/s over ${ROUNDS:-1} round(s); ratio = envault / OpenBao)"
awk '{ key = $1 " " $2; sum[key] += $3; n[key]++ }
     END {
         split("encrypt: decrypt:", phases, " ");
         for (p = 1; p <= 2; p++) for (e = 1; e <= 2; e++) for (b = 1; b <= 2; b++) {
             t[1] = "unix"; t[2] = "tcp";
             ek = "envault-" t[e] " " phases[p]; bk = "bao-" t[b] " " phases[p];
             ev = sum[ek] / n[ek]; bv = sum[bk] / n[bk];
             printf "%s envault %-4s %7.0f vs OpenBao %-4s %6.0f: %5.2fx%s\n", phases[p], t[e], ev,
                 t[b], bv, ev / bv, (e == b ? "  (like for like)" : "");
         }
     }' "$results"

if [ "${KMS:-1}" = 0 ]; then exit 0; fi
echo "== KMS v2 through envault (one grpcio client, sequential), ${seconds}s per phase"
target/release/envault --socket "$ENVAULT_SOCKET" --token "$token" key create kek >/dev/null
python3 tests/compat_scripts/kms_v2_client.py "$workdir/gen" "$workdir/kms.sock" bench "$seconds"
