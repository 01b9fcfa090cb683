#!/usr/bin/env bash
# Record PUT/GET throughput and p99 on sled vs PostgreSQL (one node) vs two nodes
# sharing PostgreSQL, and the cross-node time-to-effect of a shred.
#
#   scripts/bench-multi-node.sh [SECONDS [TRIALS]]     # defaults: 10 s per run, 100 trials
#
# Starts everything in a temp dir: a PostgreSQL server (initdb + pg_ctl, Unix socket only,
# fsync and synchronous_commit on, as the postgres user when run as root), an OpenBao dev
# server for the root keys (a key backend every node shares; the DEK cache keeps it off the
# record path), and envault nodes. Every configuration uses the transit backend so that only
# the store differs. Load: `envault bench put|get --clients N --value-size 1024 --keys 1000`;
# with two nodes, N/2 clients on each node at the same time, ops/s summed, p99 the larger of
# the two. Time-to-effect: examples/cross_node_shred.rs. Needs cargo, bao, jq, PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
trials=${2:-100}
for tool in bao jq; do
    command -v "$tool" >/dev/null || { echo "bench-multi-node: $tool not found" >&2; exit 1; }
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "bench-multi-node: PostgreSQL server not found" >&2; exit 1; }
cargo build --quiet --release --bin envault --example cross_node_shred
envault=$PWD/target/release/envault

workdir=$(mktemp -d "${TMPDIR:-/tmp}/envault-multi.XXXXXX")
chmod 711 "$workdir"
pids=()
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$workdir/pg/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

mkdir -p "$workdir/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$workdir/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$workdir/pg/data" -A trust -U postgres >"$workdir/pg/initdb.log"
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$workdir/pg/data" -l "$workdir/pg/server.log" -w \
    -o "-k $workdir/pg -c listen_addresses='' -c fsync=on -c synchronous_commit=on -c max_connections=200" start >/dev/null
"${as_pg[@]}" "$pgbin/createdb" -h "$workdir/pg" -U postgres envault
store_url="host=$workdir/pg user=postgres dbname=envault"

bao_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOME="$workdir" bao server -dev -dev-root-token-id=root "-dev-listen-address=127.0.0.1:$bao_port" \
    >"$workdir/bao.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    BAO_ADDR="http://127.0.0.1:$bao_port" BAO_TOKEN=root HOME="$workdir" \
        bao secrets enable transit >/dev/null 2>&1 && break
    sleep 0.2
done

# start_node NAME STORE -> socket path in $workdir/NAME; the node's pid is kept for cleanup.
start_node() {
    local dir="$workdir/$1"
    mkdir -p "$dir"
    (
        export ENVAULT_SOCKET="$dir/envault.sock" ENVAULT_DATA_DIR="$dir/data"
        export ENVAULT_KEYSTORE_BACKEND=transit ENVAULT_TRANSIT_ADDRESS="http://127.0.0.1:$bao_port"
        export ENVAULT_TRANSIT_TOKEN=root
        if [ "$2" = postgres ]; then
            export ENVAULT_STORE_BACKEND=postgres ENVAULT_STORE_URL="$store_url"
        fi
        exec "$envault" serve >"$dir/daemon.log" 2>&1
    ) &
    pids+=($!)
    for _ in $(seq 200); do [ -s "$dir/data/operator.token" ] && [ -S "$dir/envault.sock" ] && break; sleep 0.05; done
}
token_of() { cat "$workdir/$1/data/operator.token"; }
bench() { # NODE OP CLIENTS DATABASE
    "$envault" --socket "$workdir/$1/envault.sock" --token "$(token_of "$1")" bench "$2" \
        --clients "$3" --duration "${seconds}s" --warmup 1s --value-size 1024 --keys 1000 \
        --database "$4" --json
}
row() { # LABEL OP CLIENTS JSON...
    local label=$1 op=$2 clients=$3; shift 3
    printf '%s\n' "$@" | jq -s --arg l "$label" --arg o "$op" --arg c "$clients" -r \
        '"| \($l) | \($o) | \($c) | \(map(.ops_per_s) | add | floor) | \(map(.latency.p99_us) | max) | \(map(.errors) | add) |"'
}

echo "== machine: $(nproc) cpus, $(lscpu | sed -n 's/^Model name: *//p'); $("$pgbin/postgres" --version); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| store | op | clients | ops/s | p99 µs | errors |"
echo "|---|---|---|---|---|---|"
start_node sled sled
for op in put get; do for c in 16 64; do row "sled, 1 node" "$op" "$c" "$(bench sled "$op" "$c" "sled-$op-$c")"; done; done
start_node a postgres
for op in put get; do for c in 16 64; do row "postgres, 1 node" "$op" "$c" "$(bench a "$op" "$c" "one-$op-$c")"; done; done
start_node b postgres
for op in put get; do
    for c in 16 64; do
        db="two-$op-$c"
        "$envault" --socket "$workdir/a/envault.sock" --token "$(token_of a)" db create "$db" >/dev/null
        if [ "$op" = get ]; then bench a put 4 "$db" >/dev/null; fi # every key written once
        ja=$(mktemp -p "$workdir"); jb=$(mktemp -p "$workdir")
        bench a "$op" $((c / 2)) "$db" >"$ja" & p1=$!
        bench b "$op" $((c / 2)) "$db" >"$jb" & p2=$!
        wait "$p1" "$p2"
        row "postgres, 2 nodes" "$op" "$c" "$(cat "$ja")" "$(cat "$jb")"
    done
done
echo "== cross-node time-to-effect of a shred ($trials trials; shred on A, next read on B)"
target/release/examples/cross_node_shred "$workdir/a/envault.sock" "$(token_of a)" \
    "$workdir/b/envault.sock" "$(token_of b)" "$trials"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
