#!/usr/bin/env bash
# CI's bounded fuzzing: installs cargo-fuzz if it is missing, seeds the corpora (fuzz/seed.sh),
# then runs each target for FUZZ_SECONDS (default 30) seconds. Exits non-zero on the first crash;
# its input is in fuzz/artifacts/<target>/ and the log says how to replay it (fuzz/README.md).
# Uses the nightly toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1.
# Run from anywhere: bash fuzz/ci.sh
set -euo pipefail

fuzz="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${FUZZ_SECONDS:-30}"
targets=(updater rpc http manifest)

if ! cargo fuzz --version > /dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup toolchain list 2> /dev/null | grep '^nightly' > /dev/null; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

bash "$fuzz/seed.sh"
cd "$fuzz"
# `-s none`: the project's crates forbid unsafe code, so what fuzzing finds in them are panics,
# which need no sanitizer; AddressSanitizer made the updater target five times slower.
cargo "${toolchain[@]}" fuzz build -s none
# -max_len: libFuzzer would take the largest seed's size (a 4 KiB cap for the manifests, which
# may be 5 KiB); 20000 holds the largest real bundle with its header.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
    echo "fuzzing $target for $seconds s"
    if ! cargo "${toolchain[@]}" fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=20000 -print_final_stats=1 > "$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed: see fuzz/README.md to replay fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
echo "fuzzed ${#targets[@]} targets for $seconds s each: no crash"
