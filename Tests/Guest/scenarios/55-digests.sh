#!/bin/sh
# CRC32C header and data digests with the Linux initiator: log out, switch the node record to
# CRC32C for both digests, log in again, check what the session negotiated, move 16 MiB at
# 256 MiB through O_DIRECT and compare checksums, then return to no digests (and a session) for
# the scenarios that follow, whatever happened.
. /guest/lib.sh
need_session

set_digests() {
    for key in HeaderDigest DataDigest; do
        run iscsiadm -m node -T "$ISCSI_IQN" -p "$(portal)" -o update -n "node.conn[0].iscsi.$key" -v "$1" || return 1
    done
}

problem=""
iscsi_logout || fail "logout failed"
if ! set_digests CRC32C; then
    problem="cannot set CRC32C in the node record"
elif ! iscsi_login; then
    problem="login with CRC32C digests failed"
else
    iscsiadm -m session -P 2 > /tmp/session.txt 2>&1
    grep -q "HeaderDigest: CRC32C" /tmp/session.txt || problem="header digest not negotiated: $(grep -i digest /tmp/session.txt | tr '\n' ' ')"
    grep -q "DataDigest: CRC32C" /tmp/session.txt || problem="data digest not negotiated: $(grep -i digest /tmp/session.txt | tr '\n' ' ')"
    a=$(lun_dev "$(first_lun)")
    if [ -z "$problem" ] && [ -n "$a" ]; then
        dd if=/dev/urandom of=/tmp/digest-data bs=1M count=16 2>/dev/null
        t=$(now)
        dd if=/tmp/digest-data of=/dev/"$a" bs=1M seek=256 oflag=direct conv=fsync 2>/dev/null ||
            problem="write with digests failed"
        got=$(dd if=/dev/"$a" bs=1M skip=256 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        want=$(md5sum < /tmp/digest-data | cut -d' ' -f1)
        note "16 MiB written and read with CRC32C digests: $(since "$t") s"
        [ -z "$problem" ] && [ "$got" != "$want" ] && problem="read-back checksum with digests $got != $want"
    fi
    iscsi_logout || problem="${problem:-logout with digests failed}"
fi
set_digests None || problem="${problem:-cannot restore digests None}"
iscsi_login || problem="${problem:-login without digests failed afterwards}"
[ -z "$problem" ] || fail "$problem"
pass
