/*
 * rwhint DEVICE HINT COUNT OFFSET_BLOCKS BLOCK_BYTES
 *
 * Sets the write lifetime hint of DEVICE with fcntl(F_SET_RW_HINT) (1 = NONE, 2 = SHORT,
 * 3 = MEDIUM, 4 = LONG, 5 = EXTREME; 0 = NOT_SET), then writes COUNT blocks of BLOCK_BYTES
 * with O_DIRECT, one synchronous pwrite each (so one SCSI WRITE per block), starting at block
 * OFFSET_BLOCKS. Built static on the host and put in the guest initramfs (Tests/Guest, the
 * streams scenario). Exit status 0 on success, 1 on any failure (with a message).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef F_SET_RW_HINT
#define F_SET_RW_HINT (1024 + 12)
#endif

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: rwhint DEVICE HINT COUNT OFFSET_BLOCKS BLOCK_BYTES\n");
        return 1;
    }
    uint64_t hint = strtoull(argv[2], NULL, 0);
    long count = strtol(argv[3], NULL, 0);
    long long offset = strtoll(argv[4], NULL, 0);
    long bytes = strtol(argv[5], NULL, 0);
    int fd = open(argv[1], O_WRONLY | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "rwhint: open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (fcntl(fd, F_SET_RW_HINT, &hint) != 0) {
        fprintf(stderr, "rwhint: F_SET_RW_HINT %llu: %s\n", (unsigned long long)hint, strerror(errno));
        return 1;
    }
    void *buffer;
    if (posix_memalign(&buffer, 4096, (size_t)bytes) != 0) {
        fprintf(stderr, "rwhint: no memory\n");
        return 1;
    }
    memset(buffer, (int)('A' + hint), (size_t)bytes);
    for (long i = 0; i < count; i++) {
        ssize_t done = pwrite(fd, buffer, (size_t)bytes, (off_t)((offset + i) * bytes));
        if (done != bytes) {
            fprintf(stderr, "rwhint: pwrite %ld: %s\n", i, done < 0 ? strerror(errno) : "short write");
            return 1;
        }
    }
    if (close(fd) != 0) {
        fprintf(stderr, "rwhint: close: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
