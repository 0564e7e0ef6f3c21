#!/bin/sh
# CHAP and ACL with open-iscsi (node.session.auth.*), against the targets of
# Tests/Guest/security-targets.toml served next to the main one: a wrong secret is refused,
# the right one logs in with mutual CHAP (the initiator checks the target's answer too), a
# wrong expected target secret makes the initiator refuse, and a target whose ACL excludes
# this initiator is neither listed by SendTargets nor open to a login. Then discovery CHAP
# (discovery.sendtargets.auth.*) against the second target process of discovery-chap.toml:
# no credentials and a wrong secret are refused, the right secrets (mutual) list its target.
# Leaves no session, node or discovery record of these targets behind.
. /guest/lib.sh
if skipped chap; then pass; fi
CHAP_IQN=iqn.2026-11.org.iscsi-target:guest-chap
ACL_IQN=iqn.2026-11.org.iscsi-target:guest-acl
P=$(portal)

run iscsiadm -m discovery -t st -p "$ISCSI_HOST:$ISCSI_PORT" -o nonpersistent || fail "SendTargets failed"
grep -q " $CHAP_IQN\$" /tmp/run.out || fail "SendTargets does not list $CHAP_IQN (security-targets.toml not served?)"
grep -q " $ACL_IQN\$" /tmp/run.out && fail "SendTargets lists $ACL_IQN to an initiator its ACL excludes"

set_auth() {
    for kv in "$@"; do
        run iscsiadm -m node -T "$CHAP_IQN" -p "$P" -o update -n "${kv%%=*}" -v "${kv#*=}" || return 1
    done
}
# login_fails IQN WHAT [STATUS] : the login must fail with iscsiadm exit status STATUS (default
# 24, the target answered 02/01 or 02/02; 19 when the initiator itself rejects the target).
# The initiator may log "detected conn error" for a login that fails on purpose; such lines
# are recorded in $STATE/expected-kernel-lines so that scenario kernel-log excuses them alone.
login_fails() {
    want=${3:-24}
    seen=$(dmesg | grep -c 'detected conn error')
    run iscsiadm -m node -T "$1" -p "$P" --login && fail "$2: login succeeded"
    [ "$rc" = "$want" ] || fail "$2: iscsiadm exit status $rc, expected $want"
    note "$2: refused (exit status $rc)"
    if [ "$want" = 24 ]; then
        # The target refused: the kernel logs the connection's end once the target closes it
        # (within 2 s on an idle host, later on a loaded one); wait for that line, up to 10 s.
        i=0
        while [ "$(dmesg | grep -c 'detected conn error')" = "$seen" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
        sleep 0.5
    else
        sleep 2.5   # the target closes a failed login's connection within 2 s
    fi
    dmesg | grep 'detected conn error' | tail -n "+$((seen + 1))" >> "$STATE/expected-kernel-lines"
}
cleanup() {
    iscsiadm -m node -T "$CHAP_IQN" -p "$P" --logout > /dev/null 2>&1
    iscsiadm -m node -T "$CHAP_IQN" -p "$P" -o delete > /dev/null 2>&1
    iscsiadm -m node -T "$ACL_IQN" -p "$P" -o delete > /dev/null 2>&1
}

disks_before=$(ls /sys/class/scsi_disk | wc -l)
iscsiadm -m node -T "$CHAP_IQN" -p "$P" -o new > /dev/null 2>&1
iscsiadm -m node -T "$ACL_IQN" -p "$P" -o new > /dev/null 2>&1

set_auth node.session.auth.authmethod=CHAP node.session.auth.username=guest \
    node.session.auth.password=wrong-secret-0000 || { cleanup; fail "cannot set CHAP in the node record"; }
login_fails "$CHAP_IQN" "wrong CHAP secret"

set_auth node.session.auth.password=guest-initiator-secret \
    node.session.auth.username_in=$CHAP_IQN node.session.auth.password_in=not-the-target-secret || { cleanup; fail "cannot set CHAP"; }
login_fails "$CHAP_IQN" "wrong expected target secret (mutual CHAP, the initiator refuses)" 19

set_auth node.session.auth.password_in=guest-target-secret || { cleanup; fail "cannot set CHAP"; }
t=$(now)
run iscsiadm -m node -T "$CHAP_IQN" -p "$P" --login || { cleanup; fail "login with the right CHAP secrets (mutual) failed"; }
note "mutual CHAP login: $(since "$t") s"
iscsiadm -m session | grep -q " $CHAP_IQN" || { cleanup; fail "no session to $CHAP_IQN after login"; }
run iscsiadm -m node -T "$CHAP_IQN" -p "$P" --logout || { cleanup; fail "logout of $CHAP_IQN failed"; }

login_fails "$ACL_IQN" "initiator outside the ACL"
cleanup

# Discovery CHAP.
[ -n "$ISCSI_DCHAP_PORT" ] || fail "no discovery-CHAP target (guest.dchap missing: run.sh did not start it)"
DCHAP_IQN=iqn.2026-11.org.iscsi-target:guest-dchap
DP=$ISCSI_HOST:$ISCSI_DCHAP_PORT
dcleanup() {
    iscsiadm -m node -T "$DCHAP_IQN" -o delete > /dev/null 2>&1
    iscsiadm -m discoverydb -t st -p "$DP" -o delete > /dev/null 2>&1
}
# discover KEY=VALUE... : a SendTargets discovery of DP with these discovery.sendtargets.* settings.
discover() {
    dcleanup
    run iscsiadm -m discoverydb -t st -p "$DP" -o new || fail "cannot create the discovery record"
    for kv in "$@"; do
        run iscsiadm -m discoverydb -t st -p "$DP" -o update -n "${kv%%=*}" -v "${kv#*=}" ||
            { dcleanup; fail "cannot set ${kv%%=*} in the discovery record"; }
    done
    run iscsiadm -m discoverydb -t st -p "$DP" --discover
}
discover
[ "$rc" != 0 ] || { dcleanup; fail "discovery without CHAP succeeded against a target that requires it"; }
grep -q "$DCHAP_IQN" /tmp/run.out && { dcleanup; fail "discovery without CHAP listed $DCHAP_IQN"; }
note "discovery without credentials: refused (exit status $rc)"
discover discovery.sendtargets.auth.authmethod=CHAP discovery.sendtargets.auth.username=finder \
    discovery.sendtargets.auth.password=wrong-secret-0000
[ "$rc" != 0 ] || { dcleanup; fail "discovery with a wrong CHAP secret succeeded"; }
grep -q "$DCHAP_IQN" /tmp/run.out && { dcleanup; fail "discovery with a wrong CHAP secret listed $DCHAP_IQN"; }
note "discovery with a wrong CHAP secret: refused (exit status $rc)"
t=$(now)
discover discovery.sendtargets.auth.authmethod=CHAP discovery.sendtargets.auth.username=finder \
    discovery.sendtargets.auth.password=guest-discovery-secret \
    discovery.sendtargets.auth.username_in=$DCHAP_IQN discovery.sendtargets.auth.password_in=guest-discovery-target
[ "$rc" = 0 ] || { dcleanup; fail "discovery with the right CHAP secrets (mutual) failed, exit status $rc"; }
grep -q " $DCHAP_IQN\$" /tmp/run.out || { dcleanup; fail "discovery with CHAP did not list $DCHAP_IQN"; }
note "mutual discovery CHAP: $(since "$t") s"
dcleanup
i=0
while [ "$(ls /sys/class/scsi_disk | wc -l)" != "$disks_before" ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
[ "$(ls /sys/class/scsi_disk | wc -l)" = "$disks_before" ] || fail "the CHAP target's disk is still present"
pass
