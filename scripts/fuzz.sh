#!/usr/bin/env bash
# Bounded libFuzzer run of the parsers (Sources/iscsi-fuzz): the PDU framer/decoder with the
# session machine, login/text keys with CHAP, CDB decoding, and parameter lists (MODE SELECT,
# PERSISTENT RESERVE OUT, EXTENDED COPY, POPULATE TOKEN, WRITE USING TOKEN, UNMAP), each
# seeded from Tests/Fuzz/corpus (made from captured Linux traffic by Tests/Fuzz/make-seeds.py).
#
#   scripts/fuzz.sh                 # every target for FUZZ_SECONDS (default 30) each
#   FUZZ_TARGETS="pdu text" FUZZ_SECONDS=300 scripts/fuzz.sh
#
# A crash leaves its input in FUZZ_OUT/<target>/crash-* (replay: iscsi-fuzz TARGET FILE).
# Last line "N passed, N failed" (one per target); exit status non-zero on a crash or a
# build failure.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-pdu text cdb params}
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
OUT=${FUZZ_OUT:-$(mktemp -d /tmp/iscsi-fuzz.XXXXXX)}
mkdir -p "$OUT"

# lld: gold fails on libFuzzer's objects here ("internal error in format_file_lineno").
FLAGS=(-Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld)
echo "building iscsi-fuzz with -sanitize=fuzzer (scratch $SCRATCH)"
if ! swift build --scratch-path "$SCRATCH" "${FLAGS[@]}" --product iscsi-fuzz > "$OUT/build.log" 2>&1; then
    tail -n 30 "$OUT/build.log"
    echo "ERROR: fuzz build failed (log: $OUT/build.log)"
    echo "0 passed, 1 failed"
    exit 1
fi
bin="$(swift build --scratch-path "$SCRATCH" "${FLAGS[@]}" --show-bin-path)/iscsi-fuzz"

passed=0 failed=0
for t in $TARGETS; do
    work="$OUT/$t"; mkdir -p "$work/corpus"
    cp Tests/Fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null
    # SWIFT_BACKTRACE off: libFuzzer's own handler must see the crash to save its input.
    SWIFT_BACKTRACE=enable=no ISCSI_FUZZ_TARGET=$t "$bin" "$work/corpus" -max_total_time="$SECONDS_EACH" -max_len=16384 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$work/" -print_final_stats=1 > "$work/log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
    cov=$(grep -oE 'cov: [0-9]+' "$work/log" | tail -n 1)
    if [[ $rc == 0 ]]; then
        echo "fuzz $t: ${runs:-?} inputs in ${SECONDS_EACH}s, $cov, no crash"
        passed=$((passed + 1))
    else
        echo "fuzz $t: FAILED (exit status $rc); log $work/log; inputs: $(ls "$work"/crash-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | tr '\n' ' ')"
        grep -m 5 -E 'ERROR|Fatal error|SUMMARY' "$work/log"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
(( failed == 0 ))
