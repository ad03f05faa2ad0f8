#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a set time each, one after
# the other, and prints what each did: executions, seconds, executions per
# second, and whether it found a crash (kept in fuzz/artifacts/<target>/).
#
#     fuzz/run.sh              # every target, 60 s each
#     fuzz/run.sh 300          # every target, 300 s each
#     fuzz/run.sh 60 key path  # two targets
#
# The targets are those `cargo fuzz list` names (the [[bin]] entries of
# fuzz/Cargo.toml). Each starts from its committed seeds
# (fuzz/corpus/<target>/) and from what earlier runs found
# (fuzz/target/corpus/<target>/, not committed). Needs the nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
# SANITIZER=address runs under AddressSanitizer (slower; the crate has no
# unsafe code, its dependencies do); the default is none. Extra libFuzzer
# flags go in FUZZ_FLAGS.
set -uo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
sanitizer="${SANITIZER:-none}"
build=(--sanitizer "$sanitizer" --debug-assertions)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${#targets[@]} targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build "${build[@]}" || exit 1

mkdir -p target/logs
results=()
failed=0
for target in "${targets[@]}"; do
    work="target/corpus/$target"
    seeds="corpus/$target"
    mkdir -p "$work" "$seeds"
    log="target/logs/$target.log"
    echo "== $target: ${seconds}s"
    start=$(date +%s)
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    cargo +nightly fuzz run "${build[@]}" "$target" "$work" "$seeds" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        ${FUZZ_FLAGS:-} >"$log" 2>&1
    status=$?
    wall=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    if [ "$status" -eq 0 ]; then
        outcome="ok"
    else
        outcome="CRASH (exit $status; see $log and artifacts/$target/)"
        failed=1
    fi
    results+=("$(printf '%-14s %12s execs %6ss %8s/s  %s' \
        "$target" "${runs:-?}" "${took:-$wall}" "${rate:-?}" "$outcome")")
    echo "   ${results[-1]}"
done

echo "== summary (${seconds}s a target)"
printf '%s\n' "${results[@]}"
exit "$failed"
