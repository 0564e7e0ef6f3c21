# Helpers for the guest scenarios (busybox sh), sourced by /init and by each scenario.
# Environment (set by /init from the kernel command line):
#   ISCSI_HOST ISCSI_PORT  portal the guest reaches the target at (10.0.2.2 = host loopback)
#   ISCSI_IQN              target name
#   ISCSI_LUNS             space-separated LUN numbers of the disks (e.g. "0 1")
#   ISCSI_LUN_BYTES        expected size of each disk; ISCSI_BLOCK_SIZE logical block size
#   ISCSI_DISCOVERY        "advertised": log in to the portal SendTargets returns;
#                          "static": create the node for ISCSI_HOST:ISCSI_PORT by hand
#   ISCSI_SKIP             names of checks not to run (features the target lacks)
#   ISCSI_HOSTREQ          1 when the host carries out host_request (the project's target)
#   SCENARIO_NAME RESULT_FILE  set by /init for each scenario

: "${SCENARIO_NAME:=$(basename "$0" .sh | sed 's/^[0-9]*-//')}"
STATE=/tmp/suite-state        # shared between scenarios of one boot
mkdir -p "$STATE"

# result LINE : the scenario's one result line (to RESULT_FILE when run by /init).
result() {
    if [ -n "$RESULT_FILE" ]; then echo "$1" > "$RESULT_FILE"; else echo "$1"; fi
}
pass() { echo "--> PASS"; result "RESULT $SCENARIO_NAME PASS"; exit 0; }
fail() { echo "--> FAIL: $*"; result "RESULT $SCENARIO_NAME FAIL $*"; exit 1; }
note() { echo "# $*"; }

# skipped CHECK : true (and logs it) if CHECK is listed in ISCSI_SKIP.
skipped() {
    case " $ISCSI_SKIP " in *" $1 "*) note "skipped $1 (ISCSI_SKIP)"; return 0 ;; esac
    return 1
}

# run CMD... : echo, run, keep output in /tmp/run.out (also printed); returns CMD's status.
run() {
    echo "+ $*"
    "$@" > /tmp/run.out 2>&1
    rc=$?
    sed 's/^/  | /' /tmp/run.out
    [ $rc = 0 ] || echo "  (exit status $rc)"
    return $rc
}

portal() { cat "$STATE/portal" 2>/dev/null || echo "$ISCSI_HOST:$ISCSI_PORT"; }

# iscsi_login / iscsi_logout : of the node recorded by the discovery scenario.
iscsi_login() {
    run iscsiadm -m node -T "$ISCSI_IQN" -p "$(portal)" --login || return 1
    wait_luns 30
}
iscsi_logout() {
    run iscsiadm -m node -T "$ISCSI_IQN" -p "$(portal)" --logout || return 1
    i=0
    while [ -n "$(ls /sys/class/scsi_disk 2>/dev/null)" ] && [ $i -lt 50 ]; do
        sleep 0.2; i=$((i + 1))
    done
    [ -z "$(ls /sys/class/scsi_disk 2>/dev/null)" ] || { echo "disks still present after logout"; return 1; }
}
has_session() { iscsiadm -m session 2>/dev/null | grep -q " $ISCSI_IQN"; }

# lun_dev LUN / lun_sg LUN : block (sdX) and generic (sgN) device name of a LUN, or nothing.
lun_dev() {
    for d in /sys/class/scsi_disk/*:*:*:"$1"; do
        [ -d "$d/device/block" ] && ls "$d/device/block" | head -n 1 && return 0
    done
    return 1
}
lun_sg() {
    for d in /sys/class/scsi_device/*:*:*:"$1"; do
        [ -d "$d/device/scsi_generic" ] && ls "$d/device/scsi_generic" | head -n 1 && return 0
    done
    return 1
}

# wait_luns SECONDS : until every LUN in ISCSI_LUNS has a disk with a non-zero size.
wait_luns() {
    i=0
    while [ $i -lt $(($1 * 5)) ]; do
        ok=1
        for l in $ISCSI_LUNS; do
            d=$(lun_dev "$l") || { ok=0; break; }
            [ "$(cat /sys/block/"$d"/size 2>/dev/null || echo 0)" != 0 ] || { ok=0; break; }
        done
        [ $ok = 1 ] && return 0
        sleep 0.2; i=$((i + 1))
    done
    echo "LUNs [$ISCSI_LUNS] not all attached after $1 s; SCSI devices:"
    ls /sys/class/scsi_device/ 2>/dev/null
    return 1
}

first_lun() { set -- $ISCSI_LUNS; echo "$1"; }
second_lun() { set -- $ISCSI_LUNS; echo "${2:-$1}"; }

# two_disks : sets a, b (sdX of the first and second LUN), sga, sgb (their /dev/sgN) and bs;
# fails the scenario unless there are two distinct disks.
two_disks() {
    a=$(lun_dev "$(first_lun)") || fail "no disk for LUN $(first_lun)"
    b=$(lun_dev "$(second_lun)") || fail "no disk for LUN $(second_lun)"
    [ "$a" != "$b" ] || fail "needs two disks"
    sga=/dev/$(lun_sg "$(first_lun)") || fail "no sg device for LUN $(first_lun)"
    sgb=/dev/$(lun_sg "$(second_lun)") || fail "no sg device for LUN $(second_lun)"
    bs=${ISCSI_BLOCK_SIZE:-512}
}

# need_session : fail the scenario when no session is up (an earlier scenario failed).
need_session() { has_session || fail "no iSCSI session (login failed earlier)"; }

# now / since T : guest uptime in seconds, and seconds elapsed since T (one decimal).
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# host_request ACTION ARGS... : ask the host harness to change the running target (run.sh,
# host_request there: lun-add N SIZE [KEY=VALUE...], lun-remove N, tokens KEY=VALUE...,
# save NAME.toml), or to read `iscsi-target status --json` (status). The request goes out on ttyS1 with the RESULT lines, the answer
# "HOSTREP ID STATUS MESSAGE HOSTREP-END" comes back on ttyS2 (collected by /init in /tmp/hostreplies).
# Prints the message (also left in /tmp/hostreply) and returns STATUS; 124 when no answer
# came within 60 s (then at once for later requests: the channel is taken to be down).
host_request() {
    [ -z "$hostreq_down" ] || { echo "< host: not asked ($*): no answer to an earlier request"; return 124; }
    hostreq_n=$((${hostreq_n:-0} + 1))
    id="$SCENARIO_NAME-$$-$hostreq_n"
    echo "> host: $*"
    echo "HOSTREQ $id $*" > /dev/ttyS1
    i=0
    while [ $i -lt 300 ]; do
        # Only a whole line counts: the answer arrives byte by byte, its end mark comes last.
        reply=$(tr -d '\r' < /tmp/hostreplies 2>/dev/null | grep -a "^HOSTREP $id .* HOSTREP-END\$" | head -n 1)
        if [ -n "$reply" ]; then
            set -- $reply
            status=$3
            echo "${reply% HOSTREP-END}" | cut -d' ' -f4- > /tmp/hostreply
            echo "< host: status $status: $(cat /tmp/hostreply)"
            return "$status"
        fi
        sleep 0.2; i=$((i + 1))
    done
    echo "no answer from the host within 60 s" > /tmp/hostreply
    echo "< host: no answer within 60 s"
    hostreq_down=1
    return 124
}
