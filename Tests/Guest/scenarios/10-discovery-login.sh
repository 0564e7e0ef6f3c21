#!/bin/sh
# SendTargets discovery against ISCSI_HOST:ISCSI_PORT, then login to the discovered node.
# With ISCSI_DISCOVERY=advertised the portal SendTargets returns must be ISCSI_HOST:ISCSI_PORT
# (the target's --advertise); with "static" the node is created by hand for that portal.
. /guest/lib.sh

run iscsiadm -m discovery -t st -p "$ISCSI_HOST:$ISCSI_PORT" || fail "SendTargets discovery failed"
line=$(grep " $ISCSI_IQN\$" /tmp/run.out | head -n 1)
[ -n "$line" ] || fail "discovery did not list $ISCSI_IQN"
discovered=${line%%,*}          # "10.0.2.2:3262,1 iqn..." -> "10.0.2.2:3262"
note "discovered portal $discovered for $ISCSI_IQN"

if [ "$ISCSI_DISCOVERY" = static ]; then
    run iscsiadm -m node -o new -T "$ISCSI_IQN" -p "$ISCSI_HOST:$ISCSI_PORT" || fail "cannot create node"
    echo "$ISCSI_HOST:$ISCSI_PORT" > "$STATE/portal"
else
    [ "$discovered" = "$ISCSI_HOST:$ISCSI_PORT" ] ||
        fail "SendTargets advertised $discovered, expected $ISCSI_HOST:$ISCSI_PORT"
    echo "$discovered" > "$STATE/portal"
fi

iscsi_login || fail "login to $(portal) failed or LUNs did not appear"
run iscsiadm -m session -P 1
has_session || fail "no session listed after login"
pass
