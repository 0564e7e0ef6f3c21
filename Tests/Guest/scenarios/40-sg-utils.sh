#!/bin/sh
# sg3_utils against every disk: sg_inq, sg_vpd for each page listed in VPD 0x00, sg_readcap -l,
# sg_luns, sg_modes -a, sg_opcodes. Each must exit 0 and print no decoder warning.
. /guest/lib.sh
need_session

WARN='truncated|fewer than|\bbad\b|invalid|too short|warning|unexpected|malformed|unable to|does not match|mismatch'
# Decodes that contain a warning word but are normal field values.
BENIGN='Unmap granularity alignment: [0-9]+ \[invalid\]'
failures=""

# check NAME CMD... : run CMD, record a failure if it exits non-zero or prints a warning.
check() {
    name=$1; shift
    skipped "$name" && return 0
    if ! run "$@"; then
        failures="$failures; $name: '$*' exit status $rc"
    elif grep -vE "$BENIGN" /tmp/run.out | grep -iqE "$WARN"; then
        failures="$failures; $name: '$*' printed: $(grep -vE "$BENIGN" /tmp/run.out | grep -iE "$WARN" | head -n 1 | tr -s ' ')"
    fi
}

for l in $ISCSI_LUNS; do
    sg=/dev/$(lun_sg "$l") || fail "LUN $l has no sg device"
    d=$(lun_dev "$l")
    check sg_inq sg_inq "$sg"
    # VPD page list from the raw page 0x00: bytes 4 .. 3+length.
    if ! skipped sg_vpd; then
        sg_vpd -p 0x00 -r "$sg" > /tmp/vpd0 2>/tmp/vpd0.err || failures="$failures; sg_vpd: LUN $l page 0x00 failed: $(cat /tmp/vpd0.err)"
        set -- $(od -An -tu1 -v /tmp/vpd0)
        if [ $# -lt 4 ] || [ "$2" != 0 ]; then
            failures="$failures; sg_vpd: LUN $l: page 0x00 malformed ($*)"
        else
            len=$(($3 * 256 + $4)); shift 4
            pages=""
            while [ $len -gt 0 ] && [ $# -gt 0 ]; do pages="$pages $(printf '0x%02x' "$1")"; shift; len=$((len - 1)); done
            note "LUN $l VPD pages:$pages"
            case "$pages" in *0x00*) ;; *) failures="$failures; sg_vpd: LUN $l page 0x00 does not list itself" ;; esac
            for p in $pages; do check "sg_vpd" sg_vpd -p "$p" "$sg"; done
        fi
    fi
    check sg_readcap sg_readcap -l "$sg"
    if ! skipped sg_readcap; then
        blocks=$(sed -n 's/.*Number of logical blocks=\([0-9]*\).*/\1/p' /tmp/run.out)
        bl=$(sed -n 's/.*Logical block length=\([0-9]*\).*/\1/p' /tmp/run.out)
        [ -n "$blocks" ] && [ $((blocks * bl)) = "$ISCSI_LUN_BYTES" ] ||
            failures="$failures; sg_readcap: LUN $l reports ${blocks:-?} blocks of ${bl:-?} bytes"
    fi
    check sg_luns sg_luns "$sg"
    if ! skipped sg_luns; then
        for m in $ISCSI_LUNS; do
            grep -qi "$(printf '%04x000000000000' "$m")" /tmp/run.out ||
                failures="$failures; sg_luns: REPORT LUNS via LUN $l does not list LUN $m"
        done
    fi
    check sg_modes sg_modes -a "$sg"
    check sg_opcodes sg_opcodes "$sg"
done

[ -z "$failures" ] || fail "${failures#; }"
pass
