#!/bin/sh
# 64 MiB of pseudo-random data written to the first disk with O_DIRECT and read back with
# O_DIRECT (two transfer sizes); a 16 MiB pattern on the second disk checks the LUNs are
# independent. Checksums are kept for the relogin scenario.
. /guest/lib.sh
need_session

a=$(lun_dev "$(first_lun)") || fail "no disk for LUN $(first_lun)"
b=$(lun_dev "$(second_lun)") || fail "no disk for LUN $(second_lun)"

dd if=/dev/urandom of=/tmp/pattern-a bs=1M count=64 2>/dev/null || fail "cannot make pattern"
dd if=/dev/urandom of=/tmp/pattern-b bs=1M count=16 2>/dev/null || fail "cannot make pattern"
sum_a=$(md5sum < /tmp/pattern-a | cut -d' ' -f1)
sum_b=$(md5sum < /tmp/pattern-b | cut -d' ' -f1)

t=$(now)
run dd if=/tmp/pattern-a of=/dev/"$a" bs=1M oflag=direct conv=fsync || fail "O_DIRECT write to /dev/$a failed"
note "write 64 MiB bs=1M: $(since "$t") s"
if [ "$a" != "$b" ]; then
    run dd if=/tmp/pattern-b of=/dev/"$b" bs=1M oflag=direct conv=fsync || fail "O_DIRECT write to /dev/$b failed"
fi
rm -f /tmp/pattern-a /tmp/pattern-b

for spec in 4M:16 128k:512; do
    bs=${spec%:*} count=${spec#*:}
    echo "+ dd if=/dev/$a bs=$bs count=$count iflag=direct | md5sum"
    t=$(now)
    got=$(dd if=/dev/"$a" bs=$bs count=$count iflag=direct 2>/tmp/dd.err | md5sum | cut -d' ' -f1)
    cat /tmp/dd.err
    note "read 64 MiB bs=$bs: $(since "$t") s"
    grep -q "^$count+0 records in" /tmp/dd.err || fail "O_DIRECT read of /dev/$a (bs=$bs) short or failed"
    [ "$got" = "$sum_a" ] || fail "read-back checksum of /dev/$a (bs=$bs) $got != written $sum_a"
done
if [ "$a" != "$b" ]; then
    got=$(dd if=/dev/"$b" bs=1M count=16 iflag=direct 2>/tmp/dd.err | md5sum | cut -d' ' -f1)
    [ "$got" = "$sum_b" ] || fail "read-back checksum of /dev/$b $got != written $sum_b"
fi
echo "$sum_a" > "$STATE/sum-a"
note "64 MiB on /dev/$a and 16 MiB on /dev/$b read back intact ($sum_a)"
pass
