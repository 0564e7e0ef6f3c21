#!/bin/sh
# Every LUN in ISCSI_LUNS is attached as a disk with the expected size and logical block size.
. /guest/lib.sh
need_session

for l in $ISCSI_LUNS; do
    d=$(lun_dev "$l") || fail "LUN $l has no block device"
    sg=$(lun_sg "$l") || fail "LUN $l has no sg device"
    sectors=$(cat /sys/block/"$d"/size)            # always in 512-byte units
    lbs=$(cat /sys/block/"$d"/queue/logical_block_size)
    type=$(cat /sys/block/"$d"/device/type)
    note "LUN $l: /dev/$d /dev/$sg type=$type size=${sectors}x512 logical_block_size=$lbs" \
         "vendor=$(cat /sys/block/"$d"/device/vendor) model=$(cat /sys/block/"$d"/device/model)"
    [ "$type" = 0 ] || fail "LUN $l: peripheral device type $type, expected 0"
    [ $((sectors * 512)) = "$ISCSI_LUN_BYTES" ] ||
        fail "LUN $l: size $((sectors * 512)) bytes, expected $ISCSI_LUN_BYTES"
    [ "$lbs" = "$ISCSI_BLOCK_SIZE" ] || fail "LUN $l: logical block size $lbs, expected $ISCSI_BLOCK_SIZE"
    [ -b /dev/"$d" ] && [ -c /dev/"$sg" ] || fail "LUN $l: device nodes /dev/$d or /dev/$sg missing"
done
pass
