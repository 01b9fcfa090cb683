#!/usr/bin/env bash
# Mixed load: 16 concurrent clients for 60 s against a fresh daemon (examples/load.rs).
#
#   scripts/load.sh                               # 60 s, 16 clients
#   scripts/load.sh --seconds 300 --clients 32    # arguments go to the example
#   KEEP=1 scripts/load.sh                        # keep the temp dir (daemon log)
#
# Starts `target/release/envault serve` in a temp dir under ${TMPDIR:-/tmp} (ENVAULT_SOCKET,
# ENVAULT_DATA_DIR) and runs the load example with the daemon's pid, so that it samples the
# daemon's VmRSS every second. Fails if any operation failed. Not part of CI.
set -euo pipefail

cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "load: jq not found" >&2; exit 1; }
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

echo "== machine"
lscpu | sed -n 's/^Model name: *//p'
echo "cpus: $(nproc), memory: $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
rustc --version
cargo build --quiet --release --bin envault --example load

workdir=$(mktemp -d "${TMPDIR:-/tmp}/envault-load.XXXXXX")
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    if [ -z "${KEEP:-}" ]; then
        rm -rf "$workdir"
    else
        echo "kept $workdir"
    fi
}
trap cleanup EXIT

export ENVAULT_SOCKET="$workdir/envault.sock" ENVAULT_DATA_DIR="$workdir/data"
target/release/envault serve >"$workdir/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    [ -S "$ENVAULT_SOCKET" ] && [ -s "$ENVAULT_DATA_DIR/operator.token" ] && break
    sleep 0.1
done
echo "daemon pid $daemon_pid in $workdir"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
"$target_dir/release/examples/load" --pid "$daemon_pid" "$@" || status=$?
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if grep -q -E ' (ERROR|WARN) ' "$workdir/daemon.log"; then
    echo "daemon warnings/errors:"
    grep -E ' (ERROR|WARN) ' "$workdir/daemon.log" | head -20
fi
exit "$status"
