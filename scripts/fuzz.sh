#!/usr/bin/env bash
# Runs envault's cargo-fuzz targets (fuzz/) for a bounded time each; see fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   fuzz (default: 60 s, every target)
#   scripts/fuzz.sh --replay TARGET FILE...            run saved inputs once (a crash, a seed)
#   scripts/fuzz.sh --build                            only build the targets
#
# Environment:
#   FUZZ_SANITIZER=address|none   default address
#   FUZZ_JOBS=N                   libFuzzer fork mode with N workers per target (default 1)
#   FUZZ_KEEP_GOING=1             fork mode that keeps fuzzing after a crash, timeout or OOM
#                                 (every artifact is still reported and fails the run)
#
# Installs cargo-fuzz if missing. Works on stable Rust: cargo-fuzz passes nightly `-Z` flags
# (sanitizer, coverage instrumentation), which RUSTC_BOOTSTRAP=1 lets a stable rustc accept.
# Seeds (fuzz/seeds/) and past crashes (fuzz/regressions/, except the open bugs listed in
# fuzz/regressions/KNOWN_OPEN) are copied into the working corpus fuzz/corpus/<target>/, which,
# like fuzz/target/ and fuzz/artifacts/, is not committed.
#
# Exit status: 0 if no target crashed; 1 and the artifact paths printed otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz="$root/fuzz"

export RUSTC_BOOTSTRAP=1
# Our own target dir: never share (or lock) the main build's, and ignore a global override.
export CARGO_TARGET_DIR="$fuzz/target"
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
keep_going=${FUZZ_KEEP_GOING:-0}
all_targets=(open_record backup_file keystore_file router)
build_flags=(-O -a --sanitizer "$sanitizer")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Temp dirs of the keystore and router harnesses go to RAM when possible (their fsyncs are
# then free) and are removed at exit.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
work=$(mktemp -d "$shm/envault-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TMPDIR="$work"

build() {
    echo "== building fuzz targets (sanitizer: $sanitizer)"
    local start=$SECONDS
    (cd "$fuzz" && cargo fuzz build "${build_flags[@]}")
    echo "== built in $((SECONDS - start)) s"
}

case "${1:-}" in
--build)
    build
    exit 0
    ;;
--replay)
    [ $# -ge 3 ] || { echo "usage: $0 --replay TARGET FILE..." >&2; exit 2; }
    target=$2
    shift 2
    files=()
    for f in "$@"; do files+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done
    cd "$fuzz"
    exec cargo fuzz run "${build_flags[@]}" "$target" "${files[@]}" -- -runs=1
    ;;
esac

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "SECONDS_PER_TARGET must be a number" >&2; exit 2; }
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

build

crashed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$fuzz/corpus/$target"
    artifacts="$fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    for dir in "$fuzz/seeds/$target" "$fuzz/regressions/$target"; do
        [ -d "$dir" ] || continue
        for file in "$dir"/*; do
            [ -f "$file" ] || continue
            grep -qxF "$target/$(basename "$file")" "$fuzz/regressions/KNOWN_OPEN" 2>/dev/null ||
                cp -n "$file" "$corpus"/
        done
    done
    args=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1)
    [ -f "$fuzz/dicts/$target.dict" ] && args+=(-dict="$fuzz/dicts/$target.dict")
    if [ "$keep_going" = 1 ]; then
        args+=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    elif [ "$jobs" -gt 1 ]; then
        args+=(-fork="$jobs")
    fi
    # The router's vault grows with every successful request by design; libFuzzer would take
    # that for a leak and run a full LeakSanitizer scan after most inputs (3x slower).
    [ "$target" = router ] && args+=(-detect_leaks=0)
    log="$work/$target.log"
    stamp="$work/$target.start"
    touch "$stamp"
    echo "== fuzzing $target for $seconds s (corpus: $(ls "$corpus" | wc -l) inputs)"
    status=0
    (cd "$fuzz" && cargo fuzz run "${build_flags[@]}" "$target" "$corpus" -- \
        -artifact_prefix="$artifacts/" "${args[@]}") >"$log" 2>&1 || status=$?
    new_artifacts=$(find "$artifacts" -maxdepth 1 -type f -newer "$stamp" \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)
    if [ -n "$new_artifacts" ] && [ "$status" -eq 0 ]; then status=1; fi
    # Fork mode (FUZZ_JOBS, FUZZ_KEEP_GOING) prints no final stats: fall back to its status lines.
    runs=$({ grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" || grep -oE '^#[0-9]+' "$log" || true; } |
        grep -oE '[0-9]+$' | tail -1 || true)
    rate=$({ grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" || grep -oE 'exec/s:? [0-9]+' "$log" || true; } |
        grep -oE '[0-9]+$' | tail -1 || true)
    cov=$({ grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" || true; } | tail -1)
    line="$target: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov ?}, corpus $(ls "$corpus" | wc -l)"
    cp "$log" "$artifacts/last-run.log"
    if [ "$status" -ne 0 ]; then
        cp "$log" "$artifacts/last-failure.log"
        artifact=${new_artifacts:-$(grep -oE 'Test unit written to [^ ]+' "$log" | sed 's/Test unit written to //' || true)}
        echo "!! $target failed (exit $status); log: $artifacts/last-failure.log"
        grep -E -A1 'panicked at' "$log" | sort | uniq -c | sort -rn | head -10 || true
        grep -E 'ERROR: |SUMMARY' "$log" | sort | uniq -c | head -5 || true
        for a in ${artifact:-}; do crashed+=("$target: $a"); done
        [ -n "${artifact:-}" ] || crashed+=("$target: no artifact, see $artifacts/last-failure.log")
        line="$line, FAILED"
    fi
    echo "   $line"
    summary+=("$line")
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [ ${#crashed[@]} -gt 0 ]; then
    echo "== crashes (reproduce: $0 --replay TARGET ARTIFACT)"
    printf '   %s\n' "${crashed[@]}"
    exit 1
fi
