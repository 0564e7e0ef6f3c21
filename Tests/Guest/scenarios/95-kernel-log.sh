#!/bin/sh
# The kernel log of the whole boot holds no sign of trouble on the iSCSI path: connection
# errors, command timeouts and aborts, I/O errors, failed commands, ext4 errors, warnings
# or oopses. Recoveries the other scenarios did not notice fail here.
. /guest/lib.sh

TROUBLE='detected conn error|ping timeout|timing out command|session recovery timed out|abort|I/O error'
TROUBLE="$TROUBLE|FAILED Result|Sense Key|Medium access|offlin|rejected|EXT4-fs error|Buffer I/O"
TROUBLE="$TROUBLE|BUG:|WARNING:|Call Trace|Oops:"
# Not the iSCSI path: the emulated PC's timer check at boot, which a loaded host can fail
# ("..MP-BIOS bug: 8254 timer not connected to IO-APIC"; the kernel then falls back).
dmesg | grep -v 'MP-BIOS bug: 8254 timer not connected to IO-APIC' > /tmp/dmesg.txt
# Lines earlier scenarios caused on purpose (logins that must fail, scenario chap; the cache
# flush of a disk whose LU was removed, scenario runtime-luns).
if [ -s "$STATE/expected-kernel-lines" ]; then
    note "excused (caused on purpose by earlier scenarios: refused logins, a removed disk): $(wc -l < "$STATE/expected-kernel-lines") line(s)"
    grep -v -x -F -f "$STATE/expected-kernel-lines" /tmp/dmesg.txt > /tmp/dmesg.kept
    mv /tmp/dmesg.kept /tmp/dmesg.txt
fi
if grep -iE "$TROUBLE" /tmp/dmesg.txt > /tmp/trouble.txt; then
    echo "kernel log lines that indicate trouble:"
    sed 's/^/  | /' /tmp/trouble.txt | head -n 40
    fail "$(wc -l < /tmp/trouble.txt) kernel log lines indicate trouble, first: $(head -n 1 /tmp/trouble.txt | tr -s ' ')"
fi
note "$(grep -c . /tmp/dmesg.txt) kernel log lines, none indicating trouble"
pass
