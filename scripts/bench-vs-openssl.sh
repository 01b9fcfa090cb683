#!/usr/bin/env bash
# Compares envault's AES-256-GCM primitive with OpenSSL on this machine, in one run.
#
#   scripts/bench-vs-openssl.sh                                    # default backend (ring)
#   CARGO_BENCH_ARGS="--features aead-rustcrypto" scripts/bench-vs-openssl.sh
#   RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=/tmp/native scripts/bench-vs-openssl.sh
#
# Ours: the criterion group `cipher_seal_in_place` of benches/crypto.rs (Cipher::seal_in_place,
# no AAD, fixed nonce); the median time per seal is read back from
# <target>/criterion/cipher_seal_in_place/<size>/new/estimates.json.
# OpenSSL: `openssl speed -elapsed -evp aes-256-gcm -bytes N -seconds S -mr`, in two modes:
#   -aead   a TLS-like message each time (set IV, 13-byte AAD, update, final, get tag), which is
#           what one seal_in_place does: the like-for-like figure, and the ratio that counts;
#   stream  plain EVP_EncryptUpdate calls on one context: bulk rate, no per-message IV or tag.
# `-elapsed` makes OpenSSL divide by wall time, as criterion does; without it OpenSSL divides by
# its user CPU time, which stays put when another process shares the CPU while ours does not.
# Each size runs ROUNDS rounds of (openssl -aead, openssl stream, ours) back to back, and each
# column keeps its best round: on a shared machine noise only ever slows a run down, and
# interleaving gives both sides the same background load. MB = 10^6 bytes.
# Needs cargo, openssl and jq; pins the measured processes to CPU $BENCH_CPU (default 1) if
# taskset exists. ROUNDS (default 3) and SECONDS_PER_RUN (default 2) trade time for stability.
set -euo pipefail

read -r -a SIZES <<<"${OPENSSL_SIZES:-64 1024 4096 65536}"  # bytes per message
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-2}
GROUP=cipher_seal_in_place

cd "$(dirname "$0")/.."
for tool in cargo openssl jq; do
    command -v "$tool" >/dev/null || { echo "bench-vs-openssl: $tool not found" >&2; exit 1; }
done
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
    pin=(taskset -c "${BENCH_CPU:-1}")
fi

echo "== machine"
lscpu | sed -n 's/^Model name: *//p'
echo "flags: $(grep -o -w -E 'aes|pclmulqdq|avx|avx2|vaes|vpclmulqdq|avx512f|avx512vl|sha_ni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
openssl version
rustc --version
echo "RUSTFLAGS=${RUSTFLAGS:-} CARGO_BENCH_ARGS=${CARGO_BENCH_ARGS:-} ROUNDS=$ROUNDS SECONDS_PER_RUN=$SECONDS_PER_RUN"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Build first so that compiling never overlaps a measurement.
# shellcheck disable=SC2086  # CARGO_BENCH_ARGS is a list of words on purpose
cargo bench --quiet --bench crypto --no-run ${CARGO_BENCH_ARGS:-}

openssl_rate() { # size, [mode flag] -> MB/s
    "${pin[@]}" openssl speed -elapsed -evp aes-256-gcm ${2:+"$2"} -bytes "$1" -seconds "$SECONDS_PER_RUN" \
        -mr 2>/dev/null | awk -F: '/^\+F:/ { rate = $NF } END { printf "%.0f\n", rate / 1e6 }'
}

log="$target_dir/bench-vs-openssl.log"
: >"$log"
ours_rate() { # size -> MB/s
    # shellcheck disable=SC2086
    if ! "${pin[@]}" cargo bench --quiet --bench crypto ${CARGO_BENCH_ARGS:-} -- \
        --warm-up-time 1 --measurement-time "$SECONDS_PER_RUN" "^$GROUP/$1\$" >>"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
    jq --argjson size "$1" '$size / .median.point_estimate * 1000 | round' \
        "$target_dir/criterion/$GROUP/$1/new/estimates.json"
}

max() { if [ "$1" -gt "$2" ]; then echo "$1"; else echo "$2"; fi; }

echo
printf '%8s  %10s  %14s  %7s  %14s  %7s\n' size "ours MB/s" "openssl -aead" ratio "openssl stream" ratio
for size in "${SIZES[@]}"; do
    best_ours=0 best_aead=0 best_stream=0
    for _ in $(seq "$ROUNDS"); do
        best_aead=$(max "$best_aead" "$(openssl_rate "$size" -aead)")
        best_stream=$(max "$best_stream" "$(openssl_rate "$size")")
        best_ours=$(max "$best_ours" "$(ours_rate "$size")")
    done
    awk -v size="$size" -v o="$best_ours" -v a="$best_aead" -v s="$best_stream" \
        'BEGIN { printf "%8d  %10d  %14d  %7.2f  %14d  %7.2f\n", size, o, a, o / a, s, o / s }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
