#!/bin/sh
# Token-based copy (ODX, Docs/copy-offload.md) from the Linux initiator, on a target whose
# Third-party Copy page has the Block Device ROD Limits descriptor (others skip):
# - sg_vpd and ddptctl --info decode the ROD descriptors of VPD 0x8F;
# - POPULATE TOKEN (sg_raw, persistent point-in-time ROD) of 4 MiB of the first disk, then the
#   source is overwritten, then WRITE USING TOKEN with DEL_TKN to the second disk: the copy
#   holds the data as of POPULATE TOKEN; RECEIVE ROD TOKEN INFORMATION reports completion
#   in logical blocks; the deleted token is refused with INVALID TOKEN OPERATION, TOKEN DELETED;
# - ddpt iflag=odx oflag=odx copies 4 MiB between the disks (POPULATE TOKEN, RRTI, WRITE
#   USING TOKEN, as ddpt sends them), and the block device zero ROD token zeroes 1 MiB;
# - while the token lives, the host's `iscsi-target status --json` parses and shows the
#   session, the token with its time left going down and the group statistics (asked for over
#   the host-request channel, twice, 2 s apart).
# Regions used: 768-776 MiB of both disks (nothing else in the suite touches them).
. /guest/lib.sh
need_session

two_disks

sg_vpd -p 0x00 -r "$sga" > /tmp/vpd0 2>/dev/null || fail "sg_vpd -p 0x00 failed"
if ! od -An -tx1 -v /tmp/vpd0 | tr -s ' \n' ' ' | cut -d' ' -f6- | grep -qw 8f; then
    note "the target has no Third-party Copy page: no tokens to test"
    pass
fi
run sg_vpd -p 0x8f "$sga" || fail "sg_vpd -p 0x8f failed (exit $rc)"
if ! grep -qi "block device rod" /tmp/run.out; then
    note "the target's Third-party Copy page has no Block Device ROD Limits descriptor: no tokens to test"
    pass
fi
grep -qi "rod token features" /tmp/run.out || fail "sg_vpd -p 0x8f: no ROD Token Features descriptor"
grep -qi "supported rod token and rod types" /tmp/run.out || fail "sg_vpd -p 0x8f: no Supported ROD Types descriptor"
run ddptctl --info "$sga" || fail "ddptctl --info failed (exit $rc)"

# hexbytes VALUE WIDTH : big-endian bytes in hex; bin HEX... : those bytes, binary.
hexbytes() {
    v=$1 out=""
    i=0
    while [ $i -lt "$2" ]; do out="$(printf '%02x' $((v & 255))) $out"; v=$((v >> 8)); i=$((i + 1)); done
    echo $out
}
bin() { for h in "$@"; do printf "\\$(printf '%03o' $((0x$h)))"; done; }
byte() { od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' '; }
# sum DEV OFFSET_MIB MIB : md5 of MIB MiB at OFFSET_MIB, read with O_DIRECT.
sum() { dd if=/dev/"$1" bs=1M skip="$2" count="$3" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }

blocks=$((4 * 1024 * 1024 / bs))
src_lba=$((768 * 1024 * 1024 / bs))
dst_lba=$src_lba

# The source: 4 MiB of data that is not zeros.
dd if=/dev/urandom of=/tmp/src.bin bs=1M count=4 2>/dev/null
dd if=/tmp/src.bin of=/dev/"$a" bs=1M seek=768 oflag=direct conv=notrunc 2>/dev/null || fail "writing the source failed"
original=$(sum "$a" 768 4)

# POPULATE TOKEN, list identifier 0x301, RTV with ROD type 00800002h (persistent).
{ bin $(hexbytes 30 2) 02 00 $(hexbytes 0 4) 00 80 00 02 00 00 00 10
  bin $(hexbytes "$src_lba" 8) $(hexbytes "$blocks" 4) 00 00 00 00; } > /tmp/pt.bin
run sg_raw -s 32 -i /tmp/pt.bin "$sga" 83 10 00 00 00 00 00 00 03 01 00 00 00 20 00 00 ||
    fail "POPULATE TOKEN failed (exit $rc)"
rm -f /tmp/rrti.bin
run sg_raw -r 1024 -o /tmp/rrti.bin "$sga" 84 07 00 00 03 01 00 00 00 00 00 00 04 00 00 00 ||
    fail "RECEIVE ROD TOKEN INFORMATION failed (exit $rc)"
[ "$(byte /tmp/rrti.bin 4)" = 16 ] || fail "RRTI: response not for POPULATE TOKEN (byte 4 = $(byte /tmp/rrti.bin 4))"
[ "$(byte /tmp/rrti.bin 5)" = 1 ] || fail "RRTI: copy operation status $(byte /tmp/rrti.bin 5), expected 1"
[ "$(byte /tmp/rrti.bin 15)" = 241 ] || fail "RRTI: transfer count units $(byte /tmp/rrti.bin 15), expected F1h"
[ "$(stat -c %s /tmp/rrti.bin)" = 550 ] || fail "RRTI: $(stat -c %s /tmp/rrti.bin) bytes, expected 550"
dd if=/tmp/rrti.bin of=/tmp/token.bin bs=1 skip=38 count=512 2>/dev/null

# While the token lives, the host's `iscsi-target status --json` (issue 9) parses and shows this
# session, the token with its time left going down, and the streams' group statistics.
if [ "$ISCSI_HOSTREQ" = 1 ]; then
    field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
    host_request status || fail "host status request: $(cat /tmp/hostreply)"
    first=$(cat /tmp/hostreply)
    sleep 2
    host_request status || fail "host status request: $(cat /tmp/hostreply)"
    second=$(cat /tmp/hostreply)
    [ "$(field "$second" json)" = ok ] || fail "status --json did not parse: $second"
    [ "$(field "$second" sessions)" -ge 1 ] || fail "status shows no session: $second"
    [ "$(field "$second" tokens)" -ge 1 ] || fail "status shows no ROD token: $second"
    [ "$(field "$second" groupwrites)" -ge 1 ] || fail "status shows no group statistics: $second"
    l1=$(field "$first" left | cut -d, -f1); l2=$(field "$second" left | cut -d, -f1)
    awk -v a="$l1" -v b="$l2" 'BEGIN { exit !(a != "-" && b != "-" && b + 0 < a + 0) }' ||
        fail "the token's time left did not go down: $l1 then $l2"
    note "host status: $first, then $second"
else
    note "no host requests for this target: iscsi-target status not checked"
fi

# Overwrite the source: a persistent token keeps the data as of POPULATE TOKEN.
dd if=/dev/zero of=/dev/"$a" bs=1M seek=769 count=2 oflag=direct conv=notrunc 2>/dev/null || fail "overwriting the source failed"
[ "$(sum "$a" 768 4)" != "$original" ] || fail "the source did not change"

# WRITE USING TOKEN with DEL_TKN, list identifier 0x302, to the second disk.
wut() {  # TOKENFILE LBA FLAGS > parameter list
    bin $(hexbytes 550 2) "$3" 00 00 00 00 00 $(hexbytes 0 8)
    cat "$1"
    bin 00 00 00 00 00 00 00 10 $(hexbytes "$2" 8) $(hexbytes "$blocks" 4) 00 00 00 00
}
wut /tmp/token.bin "$dst_lba" 02 > /tmp/wut.bin
run sg_raw -s 552 -i /tmp/wut.bin "$sgb" 83 11 00 00 00 00 00 00 03 02 00 00 02 28 00 00 ||
    fail "WRITE USING TOKEN failed (exit $rc)"
got=$(sum "$b" 768 4)
[ "$got" = "$original" ] || fail "token copy: $got != $original (the data as of POPULATE TOKEN)"
rm -f /tmp/rrti.bin
run sg_raw -r 1024 -o /tmp/rrti.bin "$sgb" 84 07 00 00 03 02 00 00 00 00 00 00 04 00 00 00 ||
    fail "RRTI after WRITE USING TOKEN failed (exit $rc)"
[ "$(byte /tmp/rrti.bin 4)" = 17 ] && [ "$(byte /tmp/rrti.bin 5)" = 1 ] ||
    fail "RRTI after WRITE USING TOKEN: response $(byte /tmp/rrti.bin 4), status $(byte /tmp/rrti.bin 5)"
# The token was deleted.
wut /tmp/token.bin "$dst_lba" 00 > /tmp/wut.bin
if run sg_raw -s 552 -i /tmp/wut.bin "$sgb" 83 11 00 00 00 00 00 00 03 03 00 00 02 28 00 00; then
    fail "WRITE USING TOKEN with a deleted token succeeded"
fi
grep -qi "token deleted" /tmp/run.out || fail "deleted token: no INVALID TOKEN OPERATION, TOKEN DELETED"

# ddpt: ODX copy of 4 MiB from the first disk (now partly zeros) to the second at 772 MiB.
expected=$(sum "$a" 768 4)
t=$(now)
# (ddpt 0.97 takes plain skip=/seek= numbers as one-element lists without a length and then
# refuses count=: give the ranges as LBA,NUM lists.)
run ddpt if="$sga" of="$sgb" bs="$bs" skip="$src_lba,$blocks" seek="$((dst_lba + blocks)),$blocks" count="$blocks" \
    iflag=odx oflag=odx ||
    fail "ddpt iflag=odx oflag=odx failed (exit $rc)"
note "ddpt ODX 4 MiB: $(since "$t") s"
got=$(sum "$b" 772 4)
[ "$got" = "$expected" ] || fail "ddpt ODX copy: $got != $expected"

# The block device zero ROD token (sg_raw): WRITE USING TOKEN zeroes 1 MiB at 772 MiB of the
# second disk.
{ bin ff ff 00 01 00 00 01 f8; dd if=/dev/zero bs=504 count=1 2>/dev/null; } > /tmp/zero.bin
zblocks=$((1024 * 1024 / bs))
{ bin $(hexbytes 550 2) 00 00 00 00 00 00 $(hexbytes 0 8)
  cat /tmp/zero.bin
  bin 00 00 00 00 00 00 00 10 $(hexbytes $((dst_lba + blocks)) 8) $(hexbytes "$zblocks" 4) 00 00 00 00; } > /tmp/wut.bin
run sg_raw -s 552 -i /tmp/wut.bin "$sgb" 83 11 00 00 00 00 00 00 03 04 00 00 02 28 00 00 ||
    fail "WRITE USING TOKEN with the zero ROD token failed (exit $rc)"
zeros=$(dd if=/dev/zero bs=1M count=1 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$(sum "$b" 772 1)" = "$zeros" ] || fail "zero ROD token: the range is not zeros"
pass
