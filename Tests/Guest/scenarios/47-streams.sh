#!/bin/sh
# SBC write streams (Docs/streams.md), on a target that reports them in VPD 0xB7 (others
# skip): the Block Limits Extension page and the IO Advice Hints Grouping mode page decode;
# GET STREAM STATUS lists the permanent streams 0-5; STREAM CONTROL opens streams up to the
# maximum and then answers DATA PROTECT, 55/10; WRITE STREAM(16) to an open stream
# succeeds and to a closed one fails with ILLEGAL REQUEST, 2C/0F STREAM NOT OPEN (WRITE
# STREAM(32) is only noted: the default target does not offer it); the Group Statistics and
# Performance log page 0x19,0x1 counts WRITE(16)s with GROUP NUMBER 1. On kernels
# 6.9 and later sd reads the permanent stream count: the log shows "permanent stream
# count = 6" for every disk; on older kernels (6.1) it must not appear.
. /guest/lib.sh
need_session

failures=""
bad() { failures="$failures; $*"; }

# gss_ids : stream identifiers GET STREAM STATUS returns (from the raw parameter data; the
# sg_stream_ctl of sg3_utils 1.46 drops the last descriptor when it lists them).
gss_ids() {
    rm -f /tmp/gss.bin; sg_raw -r 248 -o /tmp/gss.bin "$sg" 9e 16 00 00 00 00 00 00 00 00 00 00 00 f8 00 00 > /dev/null 2>&1 || return 1
    set -- $(od -An -tu1 -v /tmp/gss.bin)
    n=$(( ($1 * 16777216 + $2 * 65536 + $3 * 256 + $4) / 8 ))
    shift 8
    while [ "$n" -gt 0 ] && [ $# -ge 8 ]; do printf '%s ' $(($3 * 256 + $4)); shift 8; n=$((n - 1)); done
}

l=$(first_lun)
sg=/dev/$(lun_sg "$l") || fail "LUN $l has no sg device"

# Skip on targets without streams (e.g. tgt): VPD 0x00 does not list 0xB7.
sg_vpd -p 0x00 -r "$sg" > /tmp/vpd0 2>/dev/null || fail "sg_vpd -p 0x00 failed"
if ! od -An -tx1 -v /tmp/vpd0 | tr -s ' \n' ' ' | cut -d' ' -f6- | grep -qw b7; then
    note "VPD 0x00 does not list 0xB7: the target has no streams"
    pass
fi

# Block Limits Extension: RSCS, 8 streams.
run sg_vpd -p 0xb7 -r "$sg" > /dev/null || bad "sg_vpd -p 0xb7 failed"
sg_vpd -p 0xb7 -r "$sg" > /tmp/b7 2>/dev/null
set -- $(od -An -tu1 -v /tmp/b7)
[ "$2" = 183 ] && [ "$6" = 1 ] && [ "$7" = 0 ] && [ "$8" = 8 ] ||
    bad "VPD 0xB7 bytes: $(od -An -tx1 -v /tmp/b7 | tr -s ' \n' ' ' | cut -c1-48)"
run sg_vpd -p 0xb7 "$sg" || bad "sg_vpd -p 0xb7 decode failed"
grep -qi "maximum number of streams: 8" /tmp/run.out || bad "sg_vpd -p 0xb7 does not show 8 streams"

# IO Advice Hints Grouping page, MODE SENSE(10) with DBD and MODE SENSE(6): 8 descriptors,
# ST_ENBLE on the first six.
for six in "" "-6"; do
    sg_modes -d $six -p 0x0a,0x05 -r "$sg" > /tmp/ioad 2>/tmp/ioad.err || { bad "sg_modes -d $six -p 0xa,0x5 failed: $(cat /tmp/ioad.err)"; continue; }
    set -- $(od -An -tu1 -v /tmp/ioad)
    if [ -z "$six" ]; then shift 8; else shift 4; fi
    hdr="$1 $2 $3 $4"; shift 16
    enables=""
    while [ $# -ge 16 ]; do enables="$enables $1"; shift 16; done
    [ "$hdr" = "74 5 0 140" ] && [ "$enables" = " 4 4 4 4 4 4 0 0" ] ||
        bad "sg_modes $six 0xa,0x5: page header '$hdr' ST_ENBLE bytes '$enables'"
done
run sg_modes -p 0x0a,0x05 "$sg" || bad "sg_modes -p 0xa,0x5 decode failed"
run sg_modes -c 1 -p 0x0a,0x05 "$sg" || bad "sg_modes changeable 0xa,0x5 failed"

# GET STREAM STATUS: the permanent streams are open.
ids=$(gss_ids)
[ "$ids" = "0 1 2 3 4 5 " ] || bad "GET STREAM STATUS lists '$ids'"
run sg_stream_ctl --get "$sg" || bad "sg_stream_ctl --get failed"
grep -qi "number of open streams: 6" /tmp/run.out || bad "sg_stream_ctl --get: not 6 open streams"

# STREAM CONTROL: open 6 and 7, then the maximum is reached.
a=$(sg_stream_ctl --open --brief "$sg" 2>/dev/null)
b=$(sg_stream_ctl --open --brief "$sg" 2>/dev/null)
[ "$a $b" = "6 7" ] || bad "STREAM CONTROL open assigned '$a' '$b' (want 6 7)"
run sg_stream_ctl --open -v "$sg" && bad "a ninth stream opened"
grep -qiE "data protect" /tmp/run.out || bad "open beyond the maximum: $(grep -i sense /tmp/run.out | head -n 1)"
grep -qiE "maximum number of streams open|55h/10h|asc=55, ascq=10" /tmp/run.out ||
    note "sense text: $(grep -iE 'sense|asc' /tmp/run.out | head -n 2 | tr '\n' ' ')"
ids=$(gss_ids)
[ "$ids" = "0 1 2 3 4 5 6 7 " ] || bad "after two opens GET STREAM STATUS lists '$ids'"

# WRITE STREAM to open streams (permanent 2, opened 6), with the 16- and 32-byte CDBs.
# At 512 MiB: clear of the regions other scenarios check (direct-io/relogin: first 64 MiB,
# xcopy: up to 192 MiB, marker: 128 MiB).
base=$((512 * 1024 * 1024 / ISCSI_BLOCK_SIZE))
dd if=/dev/urandom of=/tmp/blk bs="$ISCSI_BLOCK_SIZE" count=2 2>/dev/null
run sg_write_x --stream=2 --in=/tmp/blk --lba=$base --num=2 "$sg" || bad "WRITE STREAM(16) to stream 2 failed"
run sg_write_x --stream=6 --in=/tmp/blk --lba=$((base + 2)) --num=2 "$sg" || bad "WRITE STREAM(16) to stream 6 failed"
if run sg_write_x --32 --stream=7 --in=/tmp/blk --lba=$((base + 4)) --num=2 "$sg"; then
    note "WRITE STREAM(32) went through"
else
    note "WRITE STREAM(32) refused (not offered unless write_stream_32 = true): $(tail -n 2 /tmp/run.out | tr '\n' ' ')"
fi
sync; echo 3 > /proc/sys/vm/drop_caches
dd if="/dev/$(lun_dev "$l")" bs="$ISCSI_BLOCK_SIZE" skip=$((base + 2)) count=2 2>/dev/null | cmp -s - /tmp/blk ||
    bad "data written by WRITE STREAM does not read back"

# Close 6 and 7; closing again is refused; writing to a closed stream is STREAM NOT OPEN.
sg_stream_ctl --close --id=6 "$sg" > /dev/null 2>&1 || bad "close of stream 6 failed"
sg_stream_ctl --close --id=7 "$sg" > /dev/null 2>&1 || bad "close of stream 7 failed"
run sg_stream_ctl --close --id=7 "$sg" && bad "closing stream 7 twice succeeded"
run sg_write_x -v --stream=7 --in=/tmp/blk --lba=$base --num=1 "$sg" && bad "WRITE STREAM to closed stream 7 succeeded"
grep -qi "illegal request" /tmp/run.out || bad "WRITE STREAM to a closed stream: $(grep -i sense /tmp/run.out | head -n 1)"
grep -qiE "stream not open|2ch/fh|2ch/0fh|asc=2c, ascq=f" /tmp/run.out ||
    note "sense text: $(grep -iE 'sense|asc' /tmp/run.out | head -n 2 | tr '\n' ' ')"
ids=$(gss_ids)
[ "$ids" = "0 1 2 3 4 5 " ] || bad "after closing GET STREAM STATUS lists '$ids'"

# Group statistics log pages: LOG SELECT resets 0x19,0x1; three WRITE(16) with GROUP NUMBER 1
# (2 blocks each) show in sg_logs -p 0x19,0x1; every log page listed decodes without warning.
sg_logs --reset -p 0x19,0x1 "$sg" > /dev/null 2>&1 || bad "sg_logs --reset -p 0x19,0x1 failed"
for i in 0 1 2; do
    lba=$(printf '%016x' $((base + 8 + 2 * i)) | sed 's/../& /g')
    sg_raw -s $((2 * ISCSI_BLOCK_SIZE)) -i /tmp/blk "$sg" 8a 00 $lba 00 00 00 02 01 00 > /dev/null 2>&1 ||
        bad "WRITE(16) with group number 1 failed"
done
run sg_logs -p 0x19,0x1 "$sg" || bad "sg_logs -p 0x19,0x1 failed"
grep -q "Group Statistics and Performance (1)" /tmp/run.out || bad "sg_logs -p 0x19,0x1: no page title"
grep -q "group n number of write commands = 3$" /tmp/run.out &&
    grep -q "group n number of logical blocks received = 6$" /tmp/run.out ||
    bad "sg_logs -p 0x19,0x1: $(grep -E 'write commands|blocks received' /tmp/run.out | tr -s ' \n' ' ')"
run sg_logs -p 0x0,0xff "$sg" || bad "sg_logs -p 0x0,0xff failed"
grep -q "0x19,0x1f" /tmp/run.out || bad "sg_logs -p 0x0,0xff does not list 0x19,0x1f"
run sg_logs -a "$sg" || bad "sg_logs -a failed"
grep -iqE "truncated|too short|unknown parameter|malformed" /tmp/run.out && bad "sg_logs -a: $(grep -iE 'truncated|too short|unknown parameter|malformed' /tmp/run.out | head -n 1)"

# The kernel's view: sd (6.9+) reads the permanent stream count once per disk.
dmesg > /tmp/dmesg.txt
disks=$(echo $ISCSI_LUNS | wc -w)
counted=$(grep -c "permanent stream count = 6" /tmp/dmesg.txt)
kernel=$(uname -r)
case "$kernel" in
    6.[0-8].*|5.*|4.*)
        [ "$counted" = 0 ] || bad "kernel $kernel logs a permanent stream count";;
    *)
        [ "$counted" -ge "$disks" ] || bad "kernel $kernel: 'permanent stream count = 6' logged $counted times for $disks disks"
        grep -q "Unexpected: RSCS" /tmp/dmesg.txt && bad "kernel: $(grep 'Unexpected: RSCS' /tmp/dmesg.txt | head -n 1)";;
esac
note "kernel $kernel: $counted 'permanent stream count = 6' lines"

[ -z "$failures" ] || fail "${failures#; }"
pass
