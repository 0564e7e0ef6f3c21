#!/bin/sh
# Write lifetime hints end to end (Docs/streams.md): /guest/rwhint sets fcntl(F_SET_RW_HINT) h
# on the block device and writes h + 1 blocks of 4 KiB with O_DIRECT, one WRITE each, for
# h = 1 (NONE) .. 5 (EXTREME). Kernels 6.9 and later put GROUP NUMBER = min(h, permanent
# stream count) = h in the CDB (hint 5 lands on descriptor 5, the sixth permanent stream),
# so the Group Statistics and Performance (h) log page counts exactly h + 1 writes of
# 4096 / ISCSI_BLOCK_SIZE blocks each; older kernels (6.1) send group 0, so pages 1-5 stay
# at 0. Targets without streams (no VPD 0xB7) skip.
. /guest/lib.sh
need_session

failures=""
bad() { failures="$failures; $*"; }

l=$(first_lun)
sg=/dev/$(lun_sg "$l") || fail "LUN $l has no sg device"
dev=/dev/$(lun_dev "$l")
sg_vpd -p 0x00 -r "$sg" > /tmp/vpd0 2>/dev/null || fail "sg_vpd -p 0x00 failed"
if ! od -An -tx1 -v /tmp/vpd0 | tr -s ' \n' ' ' | cut -d' ' -f6- | grep -qw b7; then
    note "VPD 0x00 does not list 0xB7: the target has no streams"
    pass
fi

kernel=$(uname -r)
case "$kernel" in
    6.[0-8].*|5.*|4.*) hinted=0;;
    *) hinted=1;;
esac
# 4 KiB writes at 576 MiB: clear of the other scenarios' regions (streams: 512 MiB + 14 blocks).
base=$((576 * 256))
blocks_per_write=$((4096 / ISCSI_BLOCK_SIZE))

for h in 1 2 3 4 5; do
    sg_logs --reset -p 0x19,$h "$sg" > /dev/null 2>&1 || bad "sg_logs --reset -p 0x19,$h failed"
done
for h in 1 2 3 4 5; do
    /guest/rwhint "$dev" $h $((h + 1)) $((base + 16 * h)) 4096 2> /tmp/rwhint.err ||
        bad "rwhint hint $h: $(cat /tmp/rwhint.err)"
done
/guest/rwhint "$dev" 0 0 0 4096 2> /dev/null  # back to NOT_SET for later scenarios

seen=""
for h in 1 2 3 4 5; do
    sg_logs -p 0x19,$h "$sg" > /tmp/gs 2>&1 || { bad "sg_logs -p 0x19,$h failed"; continue; }
    writes=$(sed -n 's/.*group n number of write commands = //p' /tmp/gs)
    received=$(sed -n 's/.*group n number of logical blocks received = //p' /tmp/gs)
    seen="$seen g$h=$writes/$received"
    if [ "$hinted" = 1 ]; then
        want=$((h + 1))
    else
        want=0
    fi
    [ "$writes" = "$want" ] && [ "$received" = $((want * blocks_per_write)) ] ||
        bad "group $h: $writes writes, $received blocks (want $want, $((want * blocks_per_write)))"
done
note "kernel $kernel: group statistics (writes/blocks):$seen"

[ -z "$failures" ] || fail "${failures#; }"
pass
