#!/bin/sh
# The command blocks of the guides (Docs/*.md code blocks whose first line is
# "# guest-run: NAME", extracted into /guest/docs when the initramfs is built) run as written,
# with SRC and DST set to the sg devices of the first and second disk. Each block runs with
# `sh -e`: every command in it must succeed. Targets without copy offload skip the blocks that
# need it.
. /guest/lib.sh
need_session

SRC=/dev/$(lun_sg "$(first_lun)") || fail "no sg device for LUN $(first_lun)"
DST=/dev/$(lun_sg "$(second_lun)") || fail "no sg device for LUN $(second_lun)"
export SRC DST
ls /guest/docs/*.sh > /dev/null 2>&1 || fail "no command blocks were extracted from Docs/"
sg_vpd -p 0x00 -r "$SRC" > /tmp/vpd0 2>/dev/null || fail "sg_vpd -p 0x00 failed"
has_3pc=1
od -An -tx1 -v /tmp/vpd0 | tr -s ' \n' ' ' | cut -d' ' -f6- | grep -qw 8f || has_3pc=0
failed=""
for block in /guest/docs/*.sh; do
    name=$(basename "$block" .sh)
    if [ $has_3pc = 0 ]; then note "skipping $name: no Third-party Copy page"; continue; fi
    run sh -e "$block" || failed="$failed $name"
done
[ -z "$failed" ] || fail "guide blocks failed:$failed"
pass
