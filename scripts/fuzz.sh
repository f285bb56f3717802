#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for SECONDS each (default 60), one after the other, and
# prints the executions and any crash. Needs a nightly toolchain and cargo-fuzz
# (`rustup toolchain install nightly && cargo install cargo-fuzz`). The corpora grow in
# fuzz/corpus/<target>/ (not committed); crashes are kept in fuzz/artifacts/<target>/.
# The same targets run on stable in the test suite for a few seconds each (tests/suite/fuzz_smoke.rs).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
targets=(tar_stream tar_layer tar_split records manifest reference storage_conf gvariant tar_build splitstream gzip_members)
cargo +nightly fuzz build --release >/dev/null
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    if cargo +nightly fuzz run --release "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')
    echo "fuzz $t: ${seconds} s, $execs executions, $result"
    if [[ $result == CRASH ]]; then
        grep -E 'panicked|ERROR|Test unit written' "$log" | head -5
    fi
    rm -f "$log"
done
exit "$status"
