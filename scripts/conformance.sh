#!/usr/bin/env bash
# libiscsi conformance run: builds the release binary, serves Targets/default.toml on a free
# loopback port with a throw-away state directory, and runs libiscsi's iscsi-test-cu against it:
#   1. each required suite in its own process (any failure there fails this script);
#   2. the whole ALL family once in one process, with the same LU given twice so that the
#      MultipathIO suite runs (its result is compared with Docs/conformance-baseline.txt:
#      a test that passed in the baseline and fails now is a regression and fails this script);
#   3. the conformance LUNs (Targets/conformance.toml: thin, 4096-byte, read-only, removable),
#      served by a second target process: `iscsi-test-cu -d -S --test=ALL URL URL` against each
#      (SANITIZE allowed). Any failure fails this script, and so does any skip that is not on
#      the documented list ALLOWED_SKIPS below. Sanitize.Reset is run again on its own with
#      one URL: with two URLs the suite leaves the second session's RESERVE(6) from
#      Sanitize.Reservations in place, and Sanitize.Reset's first TEST UNIT READY then
#      rightly gets RESERVATION CONFLICT (a defect of the suite, not of the target).
# Writes Docs/conformance.md (tables with date and libiscsi version) every run; writes
# Docs/conformance-baseline.txt ("SUITE.TEST PASS|FAIL|SKIP", from the ALL run) with
# --update-baseline, or when it does not exist yet.
# A test that prints "[SKIPPED]" counts as skipped here, although CUnit counts it as passed.
#
#   scripts/conformance.sh [--update-baseline] [--skip-build] [--no-all] [--no-luns] [--suites A,B,...]
#
# Environment:
#   SCRATCH_PATH         swift build scratch path (default: SwiftPM's .build)
#   TARGET_BIN           use this iscsi-target binary instead of building one
#   CONFORMANCE_CONFIG   target definition (default Targets/default.toml)
#   CONFORMANCE_LUN_CONFIG   definition of the conformance LUNs (default Targets/conformance.toml)
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

update_baseline=0; skip_build=0; run_all=1; write_docs=1; run_luns=1
while (($#)); do
    case $1 in
        --update-baseline) update_baseline=1 ;;
        --skip-build) skip_build=1 ;;
        --no-all) run_all=0 ;;
        --no-luns) run_luns=0 ;;
        --suites) shift; IFS=, read -r -a REQUIRED_SUITES <<< "$1" ;;
        --write-docs) write_docs=2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "conformance.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

CONFIG=${CONFORMANCE_CONFIG:-Targets/default.toml}
LUN_CONFIG=${CONFORMANCE_LUN_CONFIG:-Targets/conformance.toml}
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
# 3. The conformance LUNs (-S), each with its own ALL run; skips must be on this list.
# "TEST-GLOB|MESSAGE-GLOB|reason": a test may be skipped only when it printed a matching
# [SKIPPED] message, and the reason says why that cannot apply to the LUN's configuration.
ALLOWED_SKIPS=(
    "*|*LBPPB < 2*|the LUNs have no physical block larger than the logical block (LBPPB = 1)"
    "*|*Logical unit is fully provisioned*|thin-provisioning tests need a thin LUN"
    "Unmap.VPD|*UNMAP is not implemented*|UNMAP is offered on thin-provisioned LUNs only"
    "WriteSame1[06].ZeroBlocks|*does not support 0-blocks*|WSNZ = 1: WRITE SAME of 0 blocks is INVALID FIELD IN CDB, not \"to the end\""
    "PreventAllow.*|*not removable*|only the removable LUN has a removable medium"
    "StartStopUnit.Simple|*not removable*|only the removable LUN has a removable medium"
    "ReadOnly.ReadOnlySBC|*not write-protected*|only the read-only LUN is write-protected"
    "Sanitize.*|*BLOCK_ERASE is not implemented according to REPORT_SUPPORTED_OPCODES*|SANITIZE BLOCK ERASE is offered on thin LUNs only (and is only part of these tests)"
    "Sanitize.*|*CRYPTO_ERASE is not implemented according to REPORT_SUPPORTED_OPCODES*|SANITIZE CRYPTOGRAPHIC ERASE is offered on thin LUNs only"
)
# Suites not run on a read-only LUN: they write to the LU to set up or to check their result,
# which a write-protected LU refuses (DATA PROTECT); ReadOnly checks every write command instead.
WRITES_MEDIUM_SUITES=" CompareAndWrite ExtendedCopy OrWrite ProutReserve ReceiveCopyResults Sanitize Write10 Write12
    Write16 WriteAtomic16 WriteSame10 WriteSame16 WriteVerify10 WriteVerify12 WriteVerify16 iSCSIResiduals iSCSITMF
    MultipathIO iSCSIdatasn "
allowed_skip() {  # TEST MESSAGE -> prints the reason, status 0 when allowed
    local entry test_glob rest message_glob
    for entry in "${ALLOWED_SKIPS[@]}"; do
        test_glob=${entry%%|*}; rest=${entry#*|}; message_glob=${rest%%|*}
        # shellcheck disable=SC2053
        if [[ $1 == $test_glob && $2 == $message_glob ]]; then printf '%s' "${rest#*|}"; return 0; fi
    done
    return 1
}
LUN_ROWS=(); LUN_FAILURES=(); LUN_BAD_SKIPS=(); LUN_SKIP_NOTES=(); LUN_NOTES=()
lun_pass=0; lun_fail=0; lun_skip=0; luns_ran=0
if [[ $run_luns == 1 && -z ${CONFORMANCE_URL:-} ]]; then
    if [[ ! -f $LUN_CONFIG ]]; then
        die "no conformance LUN definition $LUN_CONFIG"
    fi
    say "conformance LUNs: stopping the default target, serving $LUN_CONFIG"
    cleanup; SERVER_PID=""
    MAIN_CONFIG=$CONFIG; CONFIG=$LUN_CONFIG
    IQN=$(awk '/^[[:space:]]*\[\[target\]\]/ { t = 1; next }
               t && /^[[:space:]]*name[[:space:]]*=/ { split($0, q, "\""); print q[2]; exit }' "$CONFIG")
    STATE_DIR=$(mktemp -d /tmp/iscsi-conformance-luns.XXXXXX)
    # LUN table rows "number<TAB>file<TAB>size<TAB>read_only<TAB>block_size<TAB>thin<TAB>removable".
    awk -F'=' 'function val(s) { sub(/#.*/, "", s); gsub(/[ \t"]/, "", s); return s }
        function emit() { if (inlun) printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, f, sz, ro, bs, th, rm }
        /^[[:space:]]*\[/ { emit(); inlun = ($0 ~ /\[\[target\.lun\]\]/); n = f = sz = ""; ro = th = rm = "false"; bs = 512; next }
        inlun && $1 ~ /^[[:space:]]*number[[:space:]]*$/ { n = val($2) }
        inlun && $1 ~ /^[[:space:]]*file[[:space:]]*$/ { f = val($2) }
        inlun && $1 ~ /^[[:space:]]*size[[:space:]]*$/ { sz = val($2) }
        inlun && $1 ~ /^[[:space:]]*read_only[[:space:]]*$/ { ro = val($2) }
        inlun && $1 ~ /^[[:space:]]*block_size[[:space:]]*$/ { bs = val($2) }
        inlun && $1 ~ /^[[:space:]]*thin[[:space:]]*$/ { th = val($2) }
        inlun && $1 ~ /^[[:space:]]*removable[[:space:]]*$/ { rm = val($2) }
        END { emit() }' "$CONFIG" > "$LOGS/luns.tsv"
    # A read-only LUN's backing file must exist: create it (sparse) in the throw-away state directory.
    while IFS=$'\t' read -r n f sz ro _; do
        [[ $ro == true && $f != /* ]] && truncate -s "$sz" "$STATE_DIR/$f"
    done < "$LOGS/luns.tsv"
    start_target || die "the conformance-LUN target did not start; last lines of its log:$(printf '\n'; tail -n 20 "$LOGS/target.log")"
    say "target (pid $SERVER_PID) serving $CONFIG on 127.0.0.1:$PORT"
    while IFS=$'\t' read -r n f sz ro bs th rm; do
        lun_url="iscsi://127.0.0.1:$PORT/$IQN/$n"
        traits="$bs-byte blocks"; [[ $th == true ]] && traits+=", thin"; [[ $ro == true ]] && traits+=", read-only"
        [[ $rm == true ]] && traits+=", removable"
        selection=ALL
        if [[ $ro == true ]]; then
            selection=$(iscsi-test-cu -l 2>/dev/null | awk -F. -v skip="$WRITES_MEDIUM_SUITES" '
                BEGIN { gsub(/[[:space:]]+/, " ", skip) }
                NF == 2 && $1 == "ALL" && index(skip, " " $2 " ") == 0 { printf "%s%s", sep, "ALL." $2; sep = "," }')
            LUN_NOTES+=("LUN $n is read-only: the suites that write to the LU are not run there ($(echo $WRITES_MEDIUM_SUITES))")
        fi
        say "LUN $n ($traits): -S --test=$([[ $selection == ALL ]] && echo ALL || echo "ALL minus the suites that write") with two URLs"
        run_cu "lun$n" "$ALL_TIMEOUT" -S --test="$selection" "$lun_url" "$lun_url"
        if [[ $ro == true ]]; then
            grep -v '^#' "$LOGS/lun$n.results" > "$LOGS/lun$n.final"
        else
            run_cu "lun$n-sanitize-reset" "$SUITE_TIMEOUT" -S --test=ALL.Sanitize.Reset "$lun_url"
            # The one-URL Sanitize.Reset result replaces the two-URL one.
            reset_line=$(grep -v '^#' "$LOGS/lun$n-sanitize-reset.results" | awk -F'\t' '$1 == "Sanitize.Reset"')
            { grep -v '^#' "$LOGS/lun$n.results" | awk -F'\t' '$1 != "Sanitize.Reset"'
              [[ -n $reset_line ]] && printf '%s\n' "$reset_line"; } > "$LOGS/lun$n.final"
            [[ -z $reset_line ]] && printf 'Sanitize.Reset\tFAIL\tthe one-URL run produced no result\n' >> "$LOGS/lun$n.final"
        fi
        read -r p fl sk < <(counts "$LOGS/lun$n.final")
        if (( p + fl + sk == 0 )); then fl=1; LUN_FAILURES+=("LUN $n: no results (see $LOGS/lun$n.log)"); fi
        while IFS=$'\t' read -r t st msg; do
            if [[ $st == FAIL ]]; then LUN_FAILURES+=("LUN $n $t: $msg")
            elif [[ $st == SKIP ]]; then
                if reason=$(allowed_skip "$t" "$msg"); then LUN_SKIP_NOTES+=("LUN $n|$t|$reason")
                else LUN_BAD_SKIPS+=("LUN $n $t: $msg"); fi
            fi
        done < "$LOGS/lun$n.final"
        lun_pass=$((lun_pass + p)); lun_fail=$((lun_fail + fl)); lun_skip=$((lun_skip + sk)); luns_ran=$((luns_ran + 1))
        LUN_ROWS+=("$n|$traits|$p|$fl|$sk")
        printf '[conformance] LUN %-3s %3d passed %3d failed %3d skipped (%s)\n' "$n" "$p" "$fl" "$sk" "$traits"
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null; TARGET_DEATHS+=("conformance LUN $n (exit status $?)")
            say "TARGET DIED during LUN $n; restarting it"
            start_target || die "the conformance-LUN target could not be restarted"
        fi
    done < "$LOGS/luns.tsv"
fi

# ---------------------------------------------------------------------------------------------
# Docs/conformance.md
if [[ $write_docs != 0 ]]; then
    if [[ -n ${CONFORMANCE_URL:-} ]]; then target_text="target \`$CONFORMANCE_URL\`"
    else target_text="target definition \`${MAIN_CONFIG:-$CONFIG}\`, LUN 0"; fi
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
        if (( luns_ran )); then
            echo
            echo "## Conformance LUNs (\`$LUN_CONFIG\`, \`-S --test=ALL URL URL\` per LUN)"
            echo
            echo "SANITIZE allowed (\`-S\`). Sanitize.Reset is counted from a second, one-URL run: with two URLs the"
            echo "suite leaves the second session's RESERVE(6) from Sanitize.Reservations in place, so its first"
            echo "TEST UNIT READY rightly gets RESERVATION CONFLICT."
            for x in "${LUN_NOTES[@]}"; do echo; echo "$x."; done
            echo
            echo "| LUN | configuration | passed | failed | skipped |"
            echo "|---|---|---:|---:|---:|"
            for row in "${LUN_ROWS[@]}"; do
                IFS='|' read -r n traits p fl sk <<< "$row"
                echo "| $n | $traits | $p | $fl | $sk |"
            done
            echo "| **total** | | **$lun_pass** | **$lun_fail** | **$lun_skip** |"
            if (( ${#LUN_FAILURES[@]} )); then
                echo
                echo "Failures:"
                for x in "${LUN_FAILURES[@]}"; do echo "- $x"; done
            fi
            if (( ${#LUN_BAD_SKIPS[@]} )); then
                echo
                echo "Skips not on the documented list (each fails the run):"
                for x in "${LUN_BAD_SKIPS[@]}"; do echo "- $x"; done
            fi
            if (( ${#LUN_SKIP_NOTES[@]} )); then
                echo
                echo "Skipped, with the documented reason (list: \`ALLOWED_SKIPS\` in \`scripts/conformance.sh\`):"
                echo
                printf '%s\n' "${LUN_SKIP_NOTES[@]}" | awk -F'|' '
                    { key = $2 "|" $3; if (!(key in luns)) order[++k] = key
                      luns[key] = luns[key] (luns[key] == "" ? "" : ", ") $1 }
                    END { for (i = 1; i <= k; i++) { split(order[i], a, "|"); printf "- `%s` (%s): %s\n", a[1], luns[order[i]], a[2] } }'
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
if (( luns_ran )); then
    say "conformance LUNs: $lun_pass passed, $lun_fail failed, $lun_skip skipped ($luns_ran LUNs)"
    if (( ${#LUN_FAILURES[@]} )); then
        status=1; say "FAILURES on the conformance LUNs:"; for x in "${LUN_FAILURES[@]}"; do say "  $x"; done
    fi
    if (( ${#LUN_BAD_SKIPS[@]} )); then
        status=1; say "SKIPS not on the documented list:"; for x in "${LUN_BAD_SKIPS[@]}"; do say "  $x"; done
    fi
fi
if (( ${#TARGET_DEATHS[@]} )); then
    status=1; say "the target process died during: ${TARGET_DEATHS[*]}"
fi
# Counts for scripts/test.sh: passed = tests passed (required + ALL); failed = required-suite
# failures + regressions (+1 if the target died). Known baseline failures are listed, not counted.
# The conformance LUNs add their passes, failures and skips; a skip off the documented list
# counts as a failure.
write_result $((req_pass + all_pass + lun_pass)) \
    $((req_fail + ${#REGRESSIONS[@]} + ${#TARGET_DEATHS[@]} + (run_all == 1 && all_ran == 0 ? 1 : 0) + ${#LUN_FAILURES[@]} + ${#LUN_BAD_SKIPS[@]})) \
    $((req_skip + all_skip + lun_skip))
say "$([[ $status == 0 ]] && echo PASSED || echo FAILED) (logs: $LOGS)"
exit $status
