#!/bin/sh
# Logout (disks must disappear), second login (disks come back), and the data written by the
# direct-io scenario is still there.
. /guest/lib.sh
need_session

t=$(now)
iscsi_logout || fail "logout failed"
note "logout: $(since "$t") s"
has_session && fail "session still listed after logout"
t=$(now)
iscsi_login || fail "second login failed or LUNs did not appear"
note "login and LUN scan: $(since "$t") s"
a=$(lun_dev "$(first_lun)") || fail "no disk for LUN $(first_lun) after relogin"
if [ -f "$STATE/sum-a" ]; then
    t=$(now)
    got=$(dd if=/dev/"$a" bs=1M count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    note "read 64 MiB bs=1M: $(since "$t") s"
    [ "$got" = "$(cat "$STATE/sum-a")" ] || fail "data on /dev/$a changed across sessions ($got)"
    note "64 MiB pattern intact after relogin"
fi
pass
