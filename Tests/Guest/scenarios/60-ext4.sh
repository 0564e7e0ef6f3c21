#!/bin/sh
# ext4 on the second disk: mkfs, mount, write files, sync, unmount, e2fsck -fn clean, remount
# and verify every file's checksum.
. /guest/lib.sh
need_session

d=$(lun_dev "$(second_lun)") || fail "no disk for LUN $(second_lun)"
run mkfs.ext4 -F -q -L guestsuite /dev/"$d" || fail "mkfs.ext4 /dev/$d failed"
mkdir -p /mnt/t
run mount -t ext4 /dev/"$d" /mnt/t || fail "mount /dev/$d failed"
i=0
while [ $i -lt 50 ]; do echo "file $i $(date) $$" > /mnt/t/small-$i; i=$((i + 1)); done
mkdir -p /mnt/t/dir/sub
dd if=/dev/urandom of=/mnt/t/dir/sub/big bs=1M count=24 2>/dev/null || fail "writing big file failed"
(cd /mnt/t && find . -type f | sort | xargs md5sum) > /tmp/ext4.sums
sync
run umount /mnt/t || fail "umount failed"
run e2fsck -fn /dev/"$d" || fail "e2fsck -fn /dev/$d reports problems (exit $rc)"
run mount -t ext4 /dev/"$d" /mnt/t || fail "remount of /dev/$d failed"
echo 3 > /proc/sys/vm/drop_caches
(cd /mnt/t && md5sum -c /tmp/ext4.sums > /tmp/ext4.check 2>&1) ||
    { cat /tmp/ext4.check; umount /mnt/t; fail "file contents differ after remount: $(grep -v ': OK' /tmp/ext4.check | head -n 1)"; }
note "$(wc -l < /tmp/ext4.sums) files verified after remount"
run umount /mnt/t || fail "final umount failed"
pass
