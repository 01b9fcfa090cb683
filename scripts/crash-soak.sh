#!/usr/bin/env bash
# Soak run of the crash-consistency tests (tests/suite/crash_consistency.rs): the whole test file once
# per seed, with more kills per load run than the default CI run, stopping at the first failure
# (or not, with KEEP_GOING=1). Each seed's output goes to target/crash-soak/seed-<N>.log; a
# failure prints its tail, including the rerun command with the failing seed.
#
#   scripts/crash-soak.sh                  # seeds 1..50
#   scripts/crash-soak.sh 100 199          # seeds 100..199
#   KILLS=100 scripts/crash-soak.sh 1 10   # 100 kills per load run (ENVAULT_CRASH_KILLS)
#   FILTER=shred scripts/crash-soak.sh     # only tests whose name contains "shred"
#   DISK_FULL=1 scripts/crash-soak.sh      # also run tests/suite/disk_full.rs per seed (needs root
#                                          # to mount a tmpfs; see that file)
#   KEEP_GOING=1 scripts/crash-soak.sh     # run every seed, report all failures at the end
#
# Reproduce one seed:
#   ENVAULT_CRASH_SEED=<N> ENVAULT_CRASH_KILLS=<K> cargo test --release \
#       --test suite crash_consistency::<test name> -- --nocapture
#
# The seed fixes the operation schedule, the values and the kill delays; thread interleavings
# (and so the exact kill points) still vary from run to run, which is what a soak is for.
# Runtime: about 15-30 s per seed on 2 cores with the default KILLS.
set -euo pipefail

first=${1:-1}
last=${2:-50}
kills=${KILLS:-60}
filter=${FILTER:-}
keep_going=${KEEP_GOING:-0}
disk_full=${DISK_FULL:-0}

cd "$(dirname "$0")/.."
logs=target/crash-soak
mkdir -p "$logs"

echo "building the test binaries..."
cargo test --release --test suite --no-run

failed=()
start=$(date +%s)
for seed in $(seq "$first" "$last"); do
    log="$logs/seed-$seed.log"
    t0=$(date +%s)
    status=ok
    if ! ENVAULT_CRASH_SEED="$seed" ENVAULT_CRASH_KILLS="$kills" \
        cargo test --release --test suite -- --nocapture "${filter:-crash_consistency::}" >"$log" 2>&1; then
        status=FAILED
    fi
    if [[ "$disk_full" == 1 && "$status" == ok ]]; then
        if ! ENVAULT_CRASH_SEED="$seed" \
            cargo test --release --test suite -- --nocapture disk_full:: >>"$log" 2>&1; then
            status=FAILED
        fi
    fi
    printf 'seed %-6s %-7s %3ss  %s\n' "$seed" "$status" "$(( $(date +%s) - t0 ))" "$log"
    if [[ "$status" != ok ]]; then
        failed+=("$seed")
        echo "---- tail of $log"
        grep -E "FAILED with seed|violation|panicked|ENVAULT_CRASH_SEED=" "$log" | head -20 || true
        tail -n 30 "$log"
        echo "----"
        if [[ "$keep_going" != 1 ]]; then
            break
        fi
    fi
done

echo
echo "seeds $first..$last, $kills kills per load run, $(( $(date +%s) - start )) s in all"
if (( ${#failed[@]} > 0 )); then
    echo "FAILED seeds: ${failed[*]} (logs in $logs/)"
    exit 1
fi
echo "all seeds passed"
