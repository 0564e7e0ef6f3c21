#!/bin/sh
# Leaves a marker for the host (checked as "host-marker" by run.sh): a 512-byte block with a random text written with O_DIRECT at
# byte offset 128 MiB of the first disk, then a clean logout (the kernel flushes the cache).
# The HOSTCHECK line tells the harness where to look in the target's backing file.
. /guest/lib.sh
need_session

a=$(lun_dev "$(first_lun)") || fail "no disk for LUN $(first_lun)"
marker="GUEST-SUITE-MARKER-$(head -c 12 /dev/urandom | md5sum | cut -c1-20)"
offset=$((128 * 1024 * 1024))
{ printf '%s' "$marker"; head -c $((512 - ${#marker})) /dev/zero; } > /tmp/marker
run dd if=/tmp/marker of=/dev/"$a" bs=512 seek=$((offset / 512)) count=1 oflag=direct conv=fsync ||
    fail "marker write failed"
iscsi_logout || fail "final logout failed"
echo "HOSTCHECK lun=$(first_lun) offset=$offset marker=$marker" > /tmp/hostcheck
pass
