#!/usr/bin/env bash
# Self-test of the guest harness: runs the suite (one kernel) against the project's target
# started with the deliberate fault ISCSI_TARGET_FAULT=drop-last-data-in (the last Data-In PDU
# of READs larger than 64 KiB is never sent). The harness works only if the suite then fails.
#
#   Tests/Guest/selftest.sh                  # kernel 6.1 (GUEST_KERNELS overrides)
#
# Exit status 0: the suite reported failures, as it must. 1: the suite passed (the harness
# missed the fault) or could not run at all. Other run.sh settings pass through.
set -uo pipefail

main() {
    GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    mkdir -p "$GUEST_DIR/work/logs"
    log=$GUEST_DIR/work/logs/selftest.log
    fault=${SELFTEST_FAULT-drop-last-data-in}

    echo "harness self-test: running the suite against a target with ISCSI_TARGET_FAULT=$fault (log: $log)"
    # A faulty READ hangs until the SCSI layer gives up: shorter scenario timeouts keep this quick.
    ISCSI_TARGET_FAULT=$fault GUEST_KERNELS=${GUEST_KERNELS:-6.1} \
        GUEST_SCENARIO_TIMEOUT=${GUEST_SCENARIO_TIMEOUT:-90} GUEST_SUITE_TIMEOUT=${GUEST_SUITE_TIMEOUT:-600} \
        "$GUEST_DIR/run.sh" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}

    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    failed=$(sed -n 's/^[0-9]* passed, \([0-9]*\) failed$/\1/p' <<< "$summary")
    if [[ $rc == 1 && ${failed:-0} -gt 0 ]]; then
        echo "harness self-test: suite failed as expected ($failed failed)"
        exit 0
    elif [[ $rc == 0 ]]; then
        echo "harness self-test: FAILED: the suite passed against a faulty target ($summary)"
    else
        echo "harness self-test: FAILED: the suite did not run properly (run.sh exit status $rc, '${summary:-no summary}')"
    fi
    exit 1
}

main "$@"
