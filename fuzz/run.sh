#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each one for a while (used by CI).
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
#
# Each target runs on a temporary copy of its seed corpus, so the corpus in
# the repository is never modified.  Exits non-zero if a target crashes,
# leaks, times out or runs out of memory; the offending input is kept under
# the printed work directory.  Skipped (exit 0) when clang is not installed.
#
# Environment:
#   CC              compiler (default: clang)
#   FUZZ_BUILD_DIR  build directory (default: <repo>/build-fuzz)
#   FUZZ_FLAGS      extra libFuzzer flags for every target (e.g. -jobs=2)
#   FUZZ_KEEP=1     keep the work directory even when every target passed
set -euo pipefail

secs=${1:-60}
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac

cc=${CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: clang not found, skipped"
    exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=(json record delta apply token session cluster config pack)

# -fsanitize=fuzzer-no-link instruments the library itself, so libFuzzer
# gets coverage from crdtdb code and not only from the harnesses.
CC=$cc cmake -S "$root" -B "$build" \
    -DCRDTDB_FUZZ=ON -DCRDTDB_SANITIZE=ON \
    -DCRDTDB_TESTS=OFF -DCRDTDB_BENCHMARKS=OFF \
    >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" \
    --target "${targets[@]/#/fuzz_}" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/crdtdb-fuzz.XXXXXX")
# Leak checks stay on; stop at the first error with a full report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for t in "${targets[@]}"; do
    corpus=$work/$t/corpus
    mkdir -p "$corpus" "$work/$t/artifacts"
    cp -R "$root/fuzz/corpus/$t/." "$corpus/"
    echo "fuzz: $t for ${secs}s"
    # a pack fills two 4 KiB pages (its harness takes up to 64 KiB)
    maxlen=4096
    [[ $t == pack ]] && maxlen=16384
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    if "$build/fuzz_$t" -max_total_time="$secs" -max_len="$maxlen" -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" \
        ${FUZZ_FLAGS:-} "$corpus" >"$work/$t/log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|new_units_added)|DONE' \
            "$work/$t/log" | sed "s/^/fuzz: $t: /" || true
    else
        echo "fuzz: $t FAILED; last lines of $work/$t/log:" >&2
        tail -n 40 "$work/$t/log" >&2
        ls -l "$work/$t/artifacts" >&2 || true
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: failures in: ${failed[*]} (inputs kept in $work)" >&2
    exit 1
fi
if [[ ${FUZZ_KEEP:-0} == 1 ]]; then
    echo "fuzz: work directory kept: $work"
else
    rm -rf "$work"
fi
echo "fuzz: all targets passed"
