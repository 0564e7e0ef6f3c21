#!/bin/sh
# Logout (disks must disappear), second login (disks come back), and the data written by the
# direct-io scenario is still there.
. /guest/lib.sh
need_session

iscsi_logout || fail "logout failed"
has_session && fail "session still listed after logout"
iscsi_login || fail "second login failed or LUNs did not appear"
a=$(lun_dev "$(first_lun)") || fail "no disk for LUN $(first_lun) after relogin"
if [ -f "$STATE/sum-a" ]; then
    got=$(dd if=/dev/"$a" bs=1M count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$(cat "$STATE/sum-a")" ] || fail "data on /dev/$a changed across sessions ($got)"
    note "64 MiB pattern intact after relogin"
fi
pass
