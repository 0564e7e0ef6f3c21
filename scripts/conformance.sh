#!/usr/bin/env bash
# libiscsi conformance run: builds the release binary, serves Targets/default.toml on a free
# loopback port with a throw-away state directory, and runs libiscsi's iscsi-test-cu against it:
#   1. each required suite in its own process (any failure there fails this script);
#   2. the whole ALL family once in one process, with the same LU given twice so that the
#      MultipathIO suite runs (its result is compared with Docs/conformance-baseline.txt:
#      a test that passed in the baseline and fails now is a regression and fails this script).
# Writes Docs/conformance.md (tables with date and libiscsi version) every run; writes
# Docs/conformance-baseline.txt ("SUITE.TEST PASS|FAIL|SKIP", from the ALL run) with
# --update-baseline, or when it does not exist yet.
# A test that prints "[SKIPPED]" counts as skipped here, although CUnit counts it as passed.
#
#   scripts/conformance.sh [--update-baseline] [--skip-build] [--no-all] [--suites A,B,...]
#
# Environment:
#   SCRATCH_PATH         swift build scratch path (default: SwiftPM's .build)
#   TARGET_BIN           use this iscsi-target binary instead of building one
#   CONFORMANCE_CONFIG   target definition (default Targets/default.toml)
#   CONFORMANCE_LOGS     directory for logs (default: a new directory under /tmp, kept)
#   CONFORMANCE_RESULT   if set, a file that receives "passed=N failed=N skipped=N" for scripts/test.sh
#   CONFORMANCE_URL      test this already-running target instead (iscsi://HOST:PORT/IQN/LUN);
#                        nothing is built or started, Docs/ is not written unless --write-docs
#   CONFORMANCE_DOC / CONFORMANCE_BASELINE   other paths for Docs/conformance.md / the baseline
#   CONFORMANCE_REVISION the commit the binary was built from, for Docs/conformance.md (with
#                        TARGET_BIN; default: this checkout's HEAD, flagged if Sources is modified)
#   SUITE_TIMEOUT / ALL_TIMEOUT   seconds per iscsi-test-cu run (default 600 / 2400)
# Exit status: 0 = no failure in the required suites and no regression; 1 otherwise;
# 2 = could not run at all (build failed, target did not come up, tools missing).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PARSER="$ROOT/scripts/lib/parse-cunit.awk"

REQUIRED_SUITES=(Inquiry TestUnitReady ReadCapacity10 ReadCapacity16 Read6 Read10 Read12 Read16
                 Write10 Write12 Write16 ModeSense6 Verify10 Verify16 iSCSIResiduals iSCSIcmdsn)

update_baseline=0; skip_build=0; run_all=1; write_docs=1
while (($#)); do
    case $1 in
        --update-baseline) update_baseline=1 ;;
        --skip-build) skip_build=1 ;;
        --no-all) run_all=0 ;;
        --suites) shift; IFS=, read -r -a REQUIRED_SUITES <<< "$1" ;;
        --write-docs) write_docs=2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "conformance.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

CONFIG=${CONFORMANCE_CONFIG:-Targets/default.toml}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-600}
ALL_TIMEOUT=${ALL_TIMEOUT:-2400}
BASELINE=${CONFORMANCE_BASELINE:-$ROOT/Docs/conformance-baseline.txt}
DOC=${CONFORMANCE_DOC:-$ROOT/Docs/conformance.md}
LOGS=${CONFORMANCE_LOGS:-$(mktemp -d /tmp/iscsi-conformance.XXXXXX)}
mkdir -p "$LOGS"

say() { printf '[conformance] %s\n' "$*"; }
die() { printf '[conformance] ERROR: %s\n' "$*" >&2; write_result 0 1 0; exit 2; }
write_result() {
    [[ -n ${CONFORMANCE_RESULT:-} ]] && printf 'passed=%s failed=%s skipped=%s\n' "$1" "$2" "$3" > "$CONFORMANCE_RESULT"
    return 0
}

command -v iscsi-test-cu >/dev/null || die "iscsi-test-cu not found (Debian package libiscsi-bin)"
LIBISCSI_VERSION=$(dpkg-query -W -f '${Version}' libiscsi-bin 2>/dev/null || pkg-config --modversion libiscsi 2>/dev/null || echo unknown)

# ---------------------------------------------------------------------------------------------
# The target
SERVER_PID=""
STATE_DIR=""
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    [[ -n $STATE_DIR ]] && rm -rf "$STATE_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_target: starts the binary on a free port; sets PORT and SERVER_PID. Returns 1 on failure.
start_target() {
    local attempt
    for attempt in 1 2 3 4 5; do
        PORT=$((20000 + RANDOM % 40000))
        port_is_free "$PORT" || continue
        "$TARGET_BIN" serve --config "$CONFIG" --listen "127.0.0.1:$PORT" --state-dir "$STATE_DIR" \
            >> "$LOGS/target.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 1 150); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
            if ! port_is_free "$PORT"; then
                # Listening; make sure it really answers iSCSI (a login and an INQUIRY).
                if iscsi-inq "iscsi://127.0.0.1:$PORT/$IQN/0" >> "$LOGS/target-ready.log" 2>&1; then
                    return 0
                fi
            fi
            sleep 0.2
        done
        say "target did not come up on port $PORT (attempt $attempt); see $LOGS/target.log"
        kill -KILL "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
    done
    return 1
}

if [[ -n ${CONFORMANCE_URL:-} ]]; then
    URL=$CONFORMANCE_URL
    [[ $write_docs == 2 ]] || write_docs=0
    say "testing the running target at $URL (nothing built or started)"
else
    [[ -f $CONFIG ]] || die "no target definition $CONFIG"
    # IQN: the first target's name in the definition.
    IQN=$(awk '/^[[:space:]]*\[\[target\]\]/ { t = 1; next }
               t && /^[[:space:]]*name[[:space:]]*=/ { split($0, q, "\""); print q[2]; exit }' "$CONFIG")
    [[ -n $IQN ]] || die "no [[target]] name in $CONFIG"
    if [[ -z ${TARGET_BIN:-} ]]; then
        build_args=(-c release)
        [[ -n ${SCRATCH_PATH:-} ]] && build_args+=(--scratch-path "$SCRATCH_PATH")
        if [[ $skip_build == 0 ]]; then
            say "building: swift build ${build_args[*]}"
            swift build "${build_args[@]}" > "$LOGS/build.log" 2>&1 || { tail -n 40 "$LOGS/build.log"; die "release build failed (log: $LOGS/build.log)"; }
        fi
        TARGET_BIN="$(swift build "${build_args[@]}" --show-bin-path)/iscsi-target"
    fi
    [[ -x $TARGET_BIN ]] || die "no target binary at $TARGET_BIN"
    STATE_DIR=$(mktemp -d /tmp/iscsi-conformance-state.XXXXXX)
    start_target || die "the target did not start; last lines of its log:$(printf '\n'; tail -n 20 "$LOGS/target.log")"
    URL="iscsi://127.0.0.1:$PORT/$IQN/0"
    say "target $TARGET_BIN (pid $SERVER_PID) serving $CONFIG on 127.0.0.1:$PORT, state in $STATE_DIR"
fi
say "libiscsi $LIBISCSI_VERSION; logs in $LOGS"

# ensure_target NAME: after a run, restart the target if it died (recorded as a failure note).
TARGET_DEATHS=()
ensure_target() {
    [[ -z $SERVER_PID ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null && return 0
    wait "$SERVER_PID" 2>/dev/null; local rc=$?
    TARGET_DEATHS+=("$1 (exit status $rc)")
    say "TARGET DIED during $1 (exit status $rc); restarting it for the remaining runs"
    start_target || die "the target could not be restarted"
    URL="iscsi://127.0.0.1:$PORT/$IQN/0"
}

# run_cu NAME TIMEOUT ARGS... : runs iscsi-test-cu, parses into $LOGS/NAME.results
run_cu() {
    local name=$1 limit=$2 rc; shift 2
    timeout --kill-after=10 "$limit" iscsi-test-cu -d "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    awk -f "$PARSER" "$LOGS/$name.log" > "$LOGS/$name.results"
    echo "$rc" > "$LOGS/$name.rc"
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "#timeout $limit" >> "$LOGS/$name.results"
    fi
    return 0
}

# counts FILE -> "pass fail skip"
counts() { awk -F'\t' '!/^#/ { c[$2]++ } END { printf "%d %d %d\n", c["PASS"], c["FAIL"], c["SKIP"] }' "$1"; }

# ---------------------------------------------------------------------------------------------
# 1. Required suites, each in its own process
req_pass=0; req_fail=0; req_skip=0
declare -A SUITE_ROW
REQUIRED_FAILURES=()
for suite in "${REQUIRED_SUITES[@]}"; do
    run_cu "req-$suite" "$SUITE_TIMEOUT" --test="ALL.$suite" "$URL"
    res="$LOGS/req-$suite.results"
    rc=$(cat "$LOGS/req-$suite.rc")
    read -r p f s < <(counts "$res")
    note=""
    if (( p + f + s == 0 )); then
        f=1; note="did not run (iscsi-test-cu exit status $rc; see $LOGS/req-$suite.log)"
        REQUIRED_FAILURES+=("$suite: $note")
    fi
    grep -q '^#timeout' "$res" && note="timed out after ${SUITE_TIMEOUT}s"
    while IFS=$'\t' read -r t st msg; do
        [[ $st == FAIL ]] && REQUIRED_FAILURES+=("$t: $msg")
    done < <(grep -v '^#' "$res")
    req_pass=$((req_pass + p)); req_fail=$((req_fail + f)); req_skip=$((req_skip + s))
    SUITE_ROW[$suite]="$p $f $s"
    printf '[conformance] %-16s %3d passed %3d failed %3d skipped %s\n' "$suite" "$p" "$f" "$s" "$note"
    ensure_target "$suite"
done

# ---------------------------------------------------------------------------------------------
# 2. The whole ALL family in one process (two paths to the same LU enable MultipathIO)
all_pass=0; all_fail=0; all_skip=0; all_ran=0
REGRESSIONS=(); KNOWN=(); NEWFAIL=(); FIXED=()
if [[ $run_all == 1 ]]; then
    say "running --test=ALL (one process, MultipathIO with the same LU twice)"
    run_cu all "$ALL_TIMEOUT" --test=ALL "$URL" "$URL"
    read -r all_pass all_fail all_skip < <(counts "$LOGS/all.results")
    all_ran=$((all_pass + all_fail + all_skip))
    ensure_target "ALL"
    summary=$(grep '^#summary' "$LOGS/all.results" | head -n 1)
    if [[ -n $summary ]]; then
        read -r _ total ran cpass cfail <<< "$summary"
        if (( ran != all_ran || cpass != all_pass + all_skip || cfail != all_fail )); then
            say "WARNING: parsed counts ($all_pass+$all_skip passed, $all_fail failed of $all_ran) differ from CUnit's summary ($cpass passed, $cfail failed of $ran)"
        fi
    fi
    say "ALL: $all_pass passed, $all_fail failed, $all_skip skipped ($all_ran tests; iscsi-test-cu exit status $(cat "$LOGS/all.rc"))"
    grep -v '^#' "$LOGS/all.results" | awk -F'\t' '{ print $1 " " $2 }' | LC_ALL=C sort > "$LOGS/all.baseline"

    if [[ -f $BASELINE ]]; then
        # Regression: PASS in the baseline, FAIL or absent now.
        while read -r t st; do
            now=$(awk -v t="$t" '$1 == t { print $2 }' "$LOGS/all.baseline")
            if [[ $st == PASS && ( $now == FAIL || -z $now ) ]]; then
                msg=$(awk -F'\t' -v t="$t" '$1 == t { print $3 }' "$LOGS/all.results")
                REGRESSIONS+=("$t: ${now:-not run} ${msg}")
            elif [[ $st == FAIL && $now == FAIL ]]; then KNOWN+=("$t")
            elif [[ $st == FAIL && ( $now == PASS || $now == SKIP ) ]]; then FIXED+=("$t ($now)")
            fi
        done < <(grep -v '^#' "$BASELINE")
        while read -r t st; do
            [[ $st == FAIL ]] || continue
            grep -qxF "$t PASS" "$BASELINE" && continue
            grep -qxF "$t FAIL" "$BASELINE" && continue
            NEWFAIL+=("$t (was $(awk -v t="$t" '$1 == t { print $2 }' "$BASELINE"; true))")
        done < "$LOGS/all.baseline"
    else
        say "no baseline yet ($BASELINE): this run becomes the baseline"
        update_baseline=1
        while read -r t st; do [[ $st == FAIL ]] && KNOWN+=("$t"); done < "$LOGS/all.baseline"
    fi
    if [[ $update_baseline == 1 ]]; then
        if (( all_ran == 0 )); then
            say "not writing the baseline: the ALL run produced no results"
        elif [[ -n ${CONFORMANCE_URL:-} && $write_docs == 0 ]]; then
            say "not writing the baseline for an external target (CONFORMANCE_URL) without --write-docs"
        else
            { echo "# libiscsi iscsi-test-cu $LIBISCSI_VERSION, --test=ALL, $(date -u +%Y-%m-%d); SUITE.TEST PASS|FAIL|SKIP"
              cat "$LOGS/all.baseline"; } > "$BASELINE"
            say "baseline written: $BASELINE"
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------
# Docs/conformance.md
if [[ $write_docs != 0 ]]; then
    if [[ -n ${CONFORMANCE_URL:-} ]]; then target_text="target \`$CONFORMANCE_URL\`"
    else target_text="target definition \`$CONFIG\`, LUN 0"; fi
    if [[ -n ${CONFORMANCE_REVISION:-} ]]; then
        commit=$CONFORMANCE_REVISION; dirty=""
    else
        commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
        dirty=$(git -C "$ROOT" status --porcelain -- Sources Package.swift 2>/dev/null | head -n 1)
    fi
    {
        echo "# libiscsi conformance"
        echo
        echo "Generated by \`scripts/conformance.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') against commit \`$commit\`${dirty:+ (with uncommitted changes in Sources)},"
        echo "libiscsi \`iscsi-test-cu\` $LIBISCSI_VERSION (\`-d\`, no \`-S\`), $target_text."
        echo "A test that prints \`[SKIPPED]\` is counted as skipped here (CUnit counts it as passed)."
        echo "Baseline for regressions: \`Docs/conformance-baseline.txt\` (\`scripts/conformance.sh --update-baseline\`)."
        echo
        echo "## Required suites (each in its own \`iscsi-test-cu --test=ALL.SUITE\` process)"
        echo
        echo "| suite | passed | failed | skipped |"
        echo "|---|---:|---:|---:|"
        for suite in "${REQUIRED_SUITES[@]}"; do
            read -r p f s <<< "${SUITE_ROW[$suite]}"
            echo "| $suite | $p | $f | $s |"
        done
        echo "| **total** | **$req_pass** | **$req_fail** | **$req_skip** |"
        if (( ${#REQUIRED_FAILURES[@]} )); then
            echo
            echo "Failures:"
            for x in "${REQUIRED_FAILURES[@]}"; do echo "- \`${x%%:*}\`:${x#*:}"; done
        fi
        if [[ $run_all == 1 ]]; then
            echo
            echo "## Whole suite (\`--test=ALL URL URL\`, one process; the second URL is the same LU, for MultipathIO)"
            echo
            echo "$all_pass passed, $all_fail failed, $all_skip skipped of $all_ran tests."
            echo "For comparison, measured the same way on this kind of machine: tgt 1.0.85 162 / 9 / 59, LIO (Linux 6.12, QEMU guest) 142 / 17 / 71."
            echo
            echo "| suite | passed | failed | skipped |"
            echo "|---|---:|---:|---:|"
            grep -v '^#' "$LOGS/all.results" | awk -F'\t' '
                { split($1, n, "."); s = n[1]; if (!(s in seen)) { seen[s] = 1; order[++k] = s }
                  c[s, $2]++ }
                END { for (i = 1; i <= k; i++) { s = order[i]; printf "| %s | %d | %d | %d |\n", s, c[s, "PASS"], c[s, "FAIL"], c[s, "SKIP"] } }'
            if (( all_fail )); then
                echo
                echo "Failures:"
                grep -v '^#' "$LOGS/all.results" | awk -F'\t' '$2 == "FAIL" { printf "- `%s`: %s\n", $1, $3 }'
            fi
            if (( all_skip )); then
                echo
                echo "Skipped, by the reason the suite printed:"
                echo
                grep -v '^#' "$LOGS/all.results" | awk -F'\t' '$2 == "SKIP" {
                        r = $3; sub(/^\[SKIPPED\] */, "", r); if (r == "") r = "(no reason printed)"
                        if (!(r in list)) order[++k] = r
                        list[r] = list[r] (list[r] == "" ? "" : ", ") "`" $1 "`" }
                    END { for (i = 1; i <= k; i++) printf "- %s: %s\n", order[i], list[order[i]] }'

            fi
        fi
        if (( ${#TARGET_DEATHS[@]} )); then
            echo
            echo "**The target process died during:** ${TARGET_DEATHS[*]}"
        fi
    } > "$DOC"
    say "wrote $DOC"
fi

# ---------------------------------------------------------------------------------------------
# Verdict
status=0
echo
say "required suites: $req_pass passed, $req_fail failed, $req_skip skipped"
if (( req_fail )); then
    status=1
    say "FAILURES in required suites:"
    for x in "${REQUIRED_FAILURES[@]}"; do say "  $x"; done
fi
if [[ $run_all == 1 ]]; then
    say "ALL: $all_pass passed, $all_fail failed, $all_skip skipped; known failures (also in the baseline): ${#KNOWN[@]}"
    if (( all_ran == 0 )); then
        status=1; say "the ALL run produced no results (see $LOGS/all.log)"
    fi
    if (( ${#REGRESSIONS[@]} )); then
        status=1
        say "REGRESSIONS (passed in the baseline, fail now): ${#REGRESSIONS[@]}"
        for x in "${REGRESSIONS[@]}"; do say "  $x"; done
    fi
    (( ${#NEWFAIL[@]} )) && { say "failing, not in the baseline as PASS (not a regression):"; for x in "${NEWFAIL[@]}"; do say "  $x"; done; }
    (( ${#FIXED[@]} )) && { say "failed in the baseline, no longer fail (consider --update-baseline):"; for x in "${FIXED[@]}"; do say "  $x"; done; }
fi
if (( ${#TARGET_DEATHS[@]} )); then
    status=1; say "the target process died during: ${TARGET_DEATHS[*]}"
fi
# Counts for scripts/test.sh: passed = tests passed (required + ALL); failed = required-suite
# failures + regressions (+1 if the target died). Known baseline failures are listed, not counted.
write_result $((req_pass + all_pass)) $((req_fail + ${#REGRESSIONS[@]} + ${#TARGET_DEATHS[@]} + (run_all == 1 && all_ran == 0 ? 1 : 0))) $((req_skip + all_skip))
say "$([[ $status == 0 ]] && echo PASSED || echo FAILED) (logs: $LOGS)"
exit $status
