#!/usr/bin/env bash
# Run every cargo-fuzz target (or the ones named) for SECONDS each, one after the other,
# on the stable toolchain (--sanitizer none). Each target starts from its checked-in seed
# corpus (fuzz/corpus/<target>); new inputs go to a scratch directory, so the repository's
# corpora stay as committed. A crash leaves its input in fuzz/artifacts/<target>/ and fails.
#
#   scripts/fuzz.sh 30                       # every target, 30 s each (what CI runs)
#   nice scripts/fuzz.sh 600 config_file     # one target, 10 minutes
#
# Prints one summary line per target: seconds actually run, executions, corpus size.
# FUZZ_BUILD_FLAGS adds cargo-fuzz build options: CI uses "--dev" (unoptimised, with debug
# assertions and overflow checks; builds in a third of the time of the default release build,
# which forces one codegen unit).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
cd "$ROOT/fuzz"
command -v cargo-fuzz >/dev/null || export PATH=$HOME/.cargo/bin:$PATH

read -r -a build_flags <<<"${FUZZ_BUILD_FLAGS:-}"
cargo fuzz build --sanitizer none "${build_flags[@]}" >&2
if (($#)); then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

failed=0
for t in "${targets[@]}"; do
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-fuzz-$t.XXXXXX")
    seeds=()
    [[ -d corpus/$t ]] && seeds=("corpus/$t")
    t0=$(date +%s)
    status=0
    cargo fuzz run "$t" "$scratch" "${seeds[@]}" --sanitizer none "${build_flags[@]}" -- \
        -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        > "$scratch.log" 2>&1 || status=$?
    ran=$(($(date +%s) - t0))
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$scratch.log")
    corpus=$(find "$scratch" -type f | wc -l)
    if ((status)); then
        tail -40 "$scratch.log" >&2
        echo "fuzz: $t FAILED after ${ran} s (exit $status); log $scratch.log, input in fuzz/artifacts/$t/" >&2
        failed=1
        continue
    fi
    echo "fuzz: $t ok: ${ran} s, ${execs:-?} executions, $corpus new corpus entries"
    rm -rf "$scratch" "$scratch.log"
done
exit "$failed"
