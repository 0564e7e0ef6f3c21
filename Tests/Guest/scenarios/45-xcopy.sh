#!/bin/sh
# EXTENDED COPY with sg_xcopy (XCOPY LID1): 64 MiB from the first disk to the second with the
# command sent to the destination and to the source, and 64 MiB within the first disk; every
# copy is read back with O_DIRECT and its checksum compared with the source's. The 64 MiB at
# LBA 0 of the first disk (written by 30-direct-io) are only read (50-relogin checks them). sg_copy_results decodes the
# operating parameters, the status of a held copy and the failure details of a failed one;
# sg_vpd decodes the Third-party Copy page.
. /guest/lib.sh
need_session

two_disks
count=$((64 * 1024 * 1024 / bs))

# sum DEV OFFSET_MIB : md5 of 64 MiB at OFFSET_MIB, read with O_DIRECT (each read takes
# 10-20 s under TCG: the scenario reads as little as it can).
sum() { dd if=/dev/"$1" bs=4M skip=$(($2 / 4)) count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }

# The source is what 30-direct-io wrote (its checksum is kept), else whatever is there.
src=$(cat "$STATE/sum-a" 2>/dev/null) || src=""
[ -n "$src" ] || src=$(sum "$a" 0)
note "source: 64 MiB at LBA 0 of /dev/$a ($src)"

t=$(now)
run sg_xcopy if="$sga" of="$sgb" bs="$bs" count="$count" || fail "sg_xcopy $sga -> $sgb (on destination) failed (exit $rc)"
note "xcopy 64 MiB to /dev/$b, command on the destination: $(since "$t") s"
got=$(sum "$b" 0)
[ "$got" = "$src" ] || fail "copy on /dev/$b (command on destination): $got != $src"

t=$(now)
run sg_xcopy if="$sga" of="$sgb" bs="$bs" count="$count" seek="$count" --on_src ||
    fail "sg_xcopy $sga -> $sgb (on source) failed (exit $rc)"
note "xcopy 64 MiB to /dev/$b at 64 MiB, command on the source: $(since "$t") s"
got=$(sum "$b" 64)
[ "$got" = "$src" ] || fail "copy on /dev/$b at 64 MiB (command on source): $got != $src"

t=$(now)
run sg_xcopy if="$sga" of="$sga" bs="$bs" count="$count" seek=$((2 * count)) ||
    fail "sg_xcopy within $sga failed (exit $rc)"
note "xcopy 64 MiB within /dev/$a: $(since "$t") s"
got=$(sum "$a" 128)
[ "$got" = "$src" ] || fail "copy within /dev/$a at 128 MiB: $got != $src"

# RECEIVE COPY RESULTS: operating parameters.
run sg_copy_results --params "$sga" || fail "sg_copy_results --params failed (exit $rc)"
grep -qi "maximum target descriptor count" /tmp/run.out || fail "sg_copy_results --params: no decode"
grep -qi "implemented descriptor list" /tmp/run.out || fail "sg_copy_results --params: no implemented descriptor list"

# A held copy (LIST ID USAGE 00b) and its status.
run sg_xcopy if="$sga" of="$sgb" bs="$bs" count=8 seek=$((4 * count)) id_usage=hold list_id=6 ||
    fail "sg_xcopy id_usage=hold failed (exit $rc)"
run sg_copy_results --status --list_id=6 "$sgb" || fail "sg_copy_results --status failed (exit $rc)"
grep -qi "completed without errors" /tmp/run.out || fail "sg_copy_results --status: held copy not reported as completed without errors"
# A failed held copy (past the end of the disk) and its failure details.
last=$((ISCSI_LUN_BYTES / bs - 4))
if run sg_xcopy if="$sga" of="$sgb" bs="$bs" count=8 seek="$last" id_usage=hold list_id=7; then
    fail "sg_xcopy past the end of $sgb succeeded"
fi
run sg_copy_results --status --list_id=7 "$sgb" || fail "sg_copy_results --status (failed copy) failed (exit $rc)"
grep -qi "completed with errors" /tmp/run.out || fail "sg_copy_results --status: failed copy not reported as an error"
run sg_copy_results --failed --list_id=7 "$sgb" || fail "sg_copy_results --failed failed (exit $rc)"
grep -qi "copy aborted" /tmp/run.out || fail "sg_copy_results --failed: no COPY ABORTED sense"

# Third-party Copy VPD page.
run sg_vpd -p 0x8f "$sga" || fail "sg_vpd -p 0x8f failed (exit $rc)"
grep -qi "supported commands" /tmp/run.out || fail "sg_vpd -p 0x8f: no Supported Commands descriptor"
pass
