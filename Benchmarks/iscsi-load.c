/*
 * iscsi-load: the benchmark's own libiscsi client (Benchmarks/run.sh compiles it with gcc).
 *
 * iscsi-perf (libiscsi-bin) only reads, from one session. This tool adds what the benchmark
 * needs beyond that, with the same library and the same asynchronous event loop, so both
 * clients cost the initiator side about the same:
 *
 *   fill URL [-b BLOCKS] [-m QD]  write the whole LUN once (requests of BLOCKS, at most 1 MiB)
 *   randread|seqread|randwrite|seqwrite URL [-b BLOCKS] [-m QD] [-t SECONDS] [-s SESSIONS]
 *                                 a timed load; SESSIONS sessions of QD commands each
 *   xcopy URL DSTLUN              EXTENDED COPY (LID1) of the whole LUN to LUN DSTLUN of the
 *                                 same target, in one command
 *   hostcopy URL DSTLUN [-b BLOCKS] [-m QD]
 *                                 the same copy done by the initiator: READ(16) then WRITE(16)
 *   tokencopy URL DSTLUN          the same copy by POPULATE TOKEN, RECEIVE ROD TOKEN INFORMATION
 *                                 and WRITE USING TOKEN
 *
 * Output is one line of key=value pairs on stdout, e.g.
 *   ops=123456 bytes=505675776 seconds=5.000 iops=24691 mibs=96.4
 * Errors go to stderr and end the program with status 1; status 3 means "not supported by
 * this target" (the copy modes), which the script reports as n/a.
 *
 * Written data is deterministic: every 512-byte block of the 1 MiB pattern carries an
 * 8-byte tag followed by bytes of a fixed pseudo-random sequence, so two targets filled by
 * this tool hold identical contents.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define MIB (1024 * 1024)

static void die(const char *what, struct iscsi_context *iscsi) {
    fprintf(stderr, "iscsi-load: %s%s%s\n", what, iscsi ? ": " : "", iscsi ? iscsi_get_error(iscsi) : "");
    exit(1);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

/* ---------------------------------------------------------------------------------------- */
/* Sessions */

struct session {
    struct iscsi_context *iscsi;
    int lun;
    uint64_t next_lba;       /* sequential modes */
    uint64_t rng;            /* random modes */
    int in_flight;
};

static const char *portal_url;
static uint64_t lun_blocks;      /* capacity in blocks */
static int block_size = 512;

static struct iscsi_context *login(const char *url, int index, int *lun) {
    char name[128];
    snprintf(name, sizeof name, "iqn.2026-11.org.iscsi-target:bench-load-%d-%d", (int)getpid(), index);
    struct iscsi_context *iscsi = iscsi_create_context(name);
    if (!iscsi) die("iscsi_create_context", NULL);
    struct iscsi_url *u = iscsi_parse_full_url(iscsi, url);
    if (!u) die("bad URL", iscsi);
    iscsi_set_targetname(iscsi, u->target);
    iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    if (iscsi_full_connect_sync(iscsi, u->portal, u->lun) != 0) die("login", iscsi);
    *lun = u->lun;
    iscsi_destroy_url(u);
    return iscsi;
}

static void read_capacity(struct iscsi_context *iscsi, int lun) {
    struct scsi_task *task = iscsi_readcapacity16_sync(iscsi, lun);
    if (!task || task->status != SCSI_STATUS_GOOD) die("READ CAPACITY(16)", iscsi);
    struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(task);
    if (!rc) die("READ CAPACITY(16) data", iscsi);
    lun_blocks = rc->returned_lba + 1;
    block_size = (int)rc->block_length;
    scsi_free_scsi_task(task);
}

/* The pattern: 1 MiB, block tags make each block distinct. */
static unsigned char *pattern;
static void make_pattern(void) {
    pattern = aligned_alloc(4096, MIB);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < MIB; i += 8) { uint64_t v = xorshift(&s); memcpy(pattern + i, &v, 8); }
    for (size_t b = 0; b < MIB / 512; b++) { uint64_t tag = 0x49534353ull << 32 | b; memcpy(pattern + b * 512, &tag, 8); }
}

/* Drive every session until `done` says stop and nothing is in flight. */
static void run_loop(struct session *s, int n, int (*more)(void), void (*issue)(struct session *)) {
    struct pollfd *fds = calloc((size_t)n, sizeof *fds);
    for (;;) {
        int active = 0, keep = more();
        for (int i = 0; i < n; i++) {
            if (keep) issue(&s[i]);
            if (s[i].in_flight > 0) active++;
            fds[i].fd = iscsi_get_fd(s[i].iscsi);
            fds[i].events = (short)iscsi_which_events(s[i].iscsi);
            fds[i].revents = 0;
        }
        if (!keep && active == 0) break;
        if (poll(fds, (nfds_t)n, 1000) < 0 && errno != EINTR) die("poll", NULL);
        for (int i = 0; i < n; i++) {
            if (iscsi_service(s[i].iscsi, fds[i].revents) < 0) die("iscsi_service", s[i].iscsi);
        }
    }
    free(fds);
}

/* ---------------------------------------------------------------------------------------- */
/* Timed loads */

static int qd = 1, blocks = 8, write_mode, random_mode;
static double deadline;
static uint64_t ops, bytes_moved;

static int timed_more(void) { return now_seconds() < deadline; }

static void load_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data) {
    struct session *s = private_data;
    struct scsi_task *task = command_data;
    if (status != SCSI_STATUS_GOOD) {
        fprintf(stderr, "iscsi-load: command failed: status %d, %s\n", status, iscsi_get_error(iscsi));
        exit(1);
    }
    s->in_flight--;
    ops++;
    bytes_moved += (uint64_t)blocks * (uint64_t)block_size;
    scsi_free_scsi_task(task);
}

static void load_issue(struct session *s) {
    uint64_t span = lun_blocks / (uint64_t)blocks;
    while (s->in_flight < qd) {
        uint64_t lba;
        if (random_mode) {
            lba = (xorshift(&s->rng) % span) * (uint64_t)blocks;
        } else {
            if (s->next_lba + (uint64_t)blocks > lun_blocks) s->next_lba = 0;
            lba = s->next_lba;
            s->next_lba += (uint64_t)blocks;
        }
        uint32_t length = (uint32_t)(blocks * block_size);
        struct scsi_task *t;
        if (write_mode) {
            t = iscsi_write16_task(s->iscsi, s->lun, lba, pattern, length, block_size, 0, 0, 0, 0, 0, load_done, s);
        } else {
            t = iscsi_read16_task(s->iscsi, s->lun, lba, length, block_size, 0, 0, 0, 0, 0, load_done, s);
        }
        if (!t) die("queueing a command", s->iscsi);
        s->in_flight++;
    }
}

static int timed_load(const char *url, int sessions, double seconds) {
    if ((size_t)blocks * 512 > MIB) { fprintf(stderr, "iscsi-load: -b too large\n"); return 1; }
    struct session *s = calloc((size_t)sessions, sizeof *s);
    for (int i = 0; i < sessions; i++) {
        s[i].iscsi = login(url, i, &s[i].lun);
        s[i].rng = 0x2545F4914F6CDD1Dull ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
    }
    read_capacity(s[0].iscsi, s[0].lun);
    for (int i = 0; i < sessions; i++) s[i].next_lba = (lun_blocks / (uint64_t)sessions) * (uint64_t)i / (uint64_t)blocks * (uint64_t)blocks;
    double start = now_seconds();
    deadline = start + seconds;
    run_loop(s, sessions, timed_more, load_issue);
    double elapsed = now_seconds() - start;
    printf("ops=%" PRIu64 " bytes=%" PRIu64 " seconds=%.3f iops=%.0f mibs=%.1f\n", ops, bytes_moved, elapsed,
           (double)ops / elapsed, (double)bytes_moved / MIB / elapsed);
    for (int i = 0; i < sessions; i++) { iscsi_logout_sync(s[i].iscsi); iscsi_destroy_context(s[i].iscsi); }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* fill and hostcopy: the whole LUN in requests of -b blocks (at most 1 MiB), -m in flight */

static uint64_t cursor;          /* next LBA to start */
static int copy_mode, dst_lun;
static int chunk_bytes = MIB;
static int whole_more(void) { return cursor < lun_blocks; }

static void fill_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data) {
    load_done(iscsi, status, command_data, private_data);
}

static void copy_write_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data) {
    struct scsi_task *read_task = ((struct scsi_task *)command_data)->ptr;
    load_done(iscsi, status, command_data, private_data);
    scsi_free_scsi_task(read_task);
}

static void copy_read_done(struct iscsi_context *iscsi, int status, void *command_data, void *private_data) {
    struct session *s = private_data;
    struct scsi_task *task = command_data;
    if (status != SCSI_STATUS_GOOD) die("READ(16) during hostcopy", iscsi);
    uint64_t lba = scsi_get_uint64(&task->cdb[2]);
    uint32_t count = scsi_get_uint32(&task->cdb[10]);
    struct scsi_task *w = iscsi_write16_task(iscsi, dst_lun, lba, task->datain.data, count * (uint32_t)block_size,
                                             block_size, 0, 0, 0, 0, 0, copy_write_done, s);
    if (!w) die("queueing WRITE(16)", iscsi);
    w->ptr = task;  /* the read buffer lives until the write is done */
}

static void whole_issue(struct session *s) {
    while (s->in_flight < qd && cursor < lun_blocks) {
        uint64_t n = (uint64_t)chunk_bytes / (uint64_t)block_size;
        if (cursor + n > lun_blocks) n = lun_blocks - cursor;
        struct scsi_task *t;
        if (copy_mode) {
            t = iscsi_read16_task(s->iscsi, s->lun, cursor, (uint32_t)(n * (uint64_t)block_size), block_size,
                                  0, 0, 0, 0, 0, copy_read_done, s);
        } else {
            t = iscsi_write16_task(s->iscsi, s->lun, cursor, pattern, (uint32_t)(n * (uint64_t)block_size), block_size,
                                   0, 0, 0, 0, 0, fill_done, s);
        }
        if (!t) die("queueing a command", s->iscsi);
        cursor += n;
        s->in_flight++;
    }
}

static int whole_lun(const char *url) {
    struct session s = {0};
    s.iscsi = login(url, 0, &s.lun);
    read_capacity(s.iscsi, s.lun);
    chunk_bytes = blocks * 512 > MIB ? MIB : blocks * 512;
    blocks = 0;  /* bytes are counted per request below */
    double start = now_seconds();
    run_loop(&s, 1, whole_more, whole_issue);
    double elapsed = now_seconds() - start;
    uint64_t total = lun_blocks * (uint64_t)block_size;
    printf("ops=%" PRIu64 " bytes=%" PRIu64 " seconds=%.3f mibs=%.1f\n", ops, total, elapsed, (double)total / MIB / elapsed);
    iscsi_logout_sync(s.iscsi);
    iscsi_destroy_context(s.iscsi);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* EXTENDED COPY (LID1) */

static int is_unsupported(struct scsi_task *task) {
    return task && task->status == SCSI_STATUS_CHECK_CONDITION && task->sense.key == SCSI_SENSE_ILLEGAL_REQUEST &&
           (task->sense.ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE ||
            task->sense.ascq == SCSI_SENSE_ASCQ_INVALID_FIELD_IN_CDB);
}

/* The NAA designator (VPD 0x83) of `lun`: 4-byte header + designator bytes. */
static int naa_designator(struct iscsi_context *iscsi, int lun, unsigned char *out) {
    struct scsi_task *t = iscsi_inquiry_sync(iscsi, lun, 1, 0x83, 255);
    if (!t || t->status != SCSI_STATUS_GOOD) die("INQUIRY VPD 0x83", iscsi);
    unsigned char *p = t->datain.data;
    int n = t->datain.size, off = 4, found = 0;
    while (off + 4 <= n) {
        int len = p[off + 3];
        if ((p[off + 1] & 0x3F) == 0x03 && off + 4 + len <= n) { memcpy(out, p + off, (size_t)(4 + len)); found = 4 + len; break; }
        off += 4 + len;
    }
    scsi_free_scsi_task(t);
    return found;
}

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }
static void put32(unsigned char *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static void put64(unsigned char *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }

static struct scsi_task *command_out(struct iscsi_context *iscsi, int lun, unsigned char *cdb, int cdb_len,
                                     unsigned char *data, int len) {
    struct scsi_task *task = scsi_create_task(cdb_len, cdb, SCSI_XFER_WRITE, len);
    struct iscsi_data d = { .size = (size_t)len, .data = data };
    return iscsi_scsi_command_sync(iscsi, lun, task, &d);
}

static int extended_copy(const char *url) {
    struct session s = {0};
    s.iscsi = login(url, 0, &s.lun);
    read_capacity(s.iscsi, s.lun);
    unsigned char naa[64];
    int naa_len = naa_designator(s.iscsi, dst_lun, naa);
    if (!naa_len) die("no NAA designator on the destination LUN", NULL);
    /* One identification CSCD (0xE4) for the destination; the source is 0xFFFF (this LUN).
       Block-to-block segments (0x02) of at most 65535 blocks. */
    uint64_t segs = (lun_blocks + 65534) / 65535;
    size_t list_len = 16 + 32 + segs * 28;
    unsigned char *list = calloc(1, list_len);
    list[0] = 0;                 /* list identifier: none (LIST ID USAGE 11b) */
    list[1] = 3 << 3;            /* LIST ID USAGE 11b: no list identifier held */
    put16(list + 2, 32);         /* CSCD descriptor list length */
    put32(list + 8, (uint32_t)(segs * 28));
    unsigned char *c = list + 16;
    c[0] = 0xE4; c[4] = naa[0] & 0x0F; c[5] = naa[1] & 0x3F; c[7] = naa[3];
    memcpy(c + 8, naa + 4, (size_t)(naa_len - 4) > 20 ? 20 : (size_t)(naa_len - 4));
    put16(c + 30, (uint32_t)block_size);
    unsigned char *sg = c + 32;
    for (uint64_t lba = 0; lba < lun_blocks; lba += 65535, sg += 28) {
        uint64_t n = lun_blocks - lba < 65535 ? lun_blocks - lba : 65535;
        sg[0] = 0x02; put16(sg + 2, 0x18); put16(sg + 4, 0xFFFF); put16(sg + 6, 0);
        put16(sg + 10, (uint32_t)n); put64(sg + 12, lba); put64(sg + 20, lba);
    }
    unsigned char cdb[16] = { 0x83, 0x00 };
    put32(cdb + 10, (uint32_t)list_len);
    double start = now_seconds();
    struct scsi_task *t = command_out(s.iscsi, s.lun, cdb, 16, list, (int)list_len);
    double elapsed = now_seconds() - start;
    if (is_unsupported(t)) { fprintf(stderr, "iscsi-load: EXTENDED COPY not supported\n"); return 3; }
    if (!t || t->status != SCSI_STATUS_GOOD) die("EXTENDED COPY", s.iscsi);
    uint64_t total = lun_blocks * (uint64_t)block_size;
    printf("ops=1 bytes=%" PRIu64 " seconds=%.3f mibs=%.1f\n", total, elapsed, (double)total / MIB / elapsed);
    scsi_free_scsi_task(t);
    iscsi_logout_sync(s.iscsi);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Token copy (ODX): POPULATE TOKEN over the whole source LUN, RECEIVE ROD TOKEN INFORMATION
 * for the 512-byte ROD token, WRITE USING TOKEN (DEL_TKN) to LUN dst_lun at the same LBAs; the
 * three commands are timed together. One block device range descriptor covers the LUN (its
 * 4-byte NUMBER OF LOGICAL BLOCKS holds any LUN this benchmark makes). Returns 3 when the
 * target does not know POPULATE TOKEN. */
static int token_copy(const char *url) {
    struct session s = {0};
    s.iscsi = login(url, 0, &s.lun);
    read_capacity(s.iscsi, s.lun);
    const uint32_t list_id = 0x7001;
    unsigned char range[16] = {0};
    put64(range, 0);
    put32(range + 8, (uint32_t)lun_blocks);

    unsigned char pt[16 + 16] = {0};
    put16(pt, 14 + 16);             /* POPULATE TOKEN DATA LENGTH */
    put16(pt + 14, 16);             /* BLOCK DEVICE RANGE DESCRIPTOR LENGTH */
    memcpy(pt + 16, range, 16);
    unsigned char pt_cdb[16] = { 0x83, 0x10 };
    put32(pt_cdb + 6, list_id);
    put32(pt_cdb + 10, sizeof pt);

    double start = now_seconds();
    struct scsi_task *t = command_out(s.iscsi, s.lun, pt_cdb, 16, pt, sizeof pt);
    if (is_unsupported(t)) { fprintf(stderr, "iscsi-load: POPULATE TOKEN not supported\n"); return 3; }
    if (!t || t->status != SCSI_STATUS_GOOD) die("POPULATE TOKEN", s.iscsi);
    scsi_free_scsi_task(t);

    unsigned char rrti_cdb[16] = { 0x84, 0x07 };
    put32(rrti_cdb + 2, list_id);
    put32(rrti_cdb + 10, 1024);
    struct scsi_task *task = scsi_create_task(16, rrti_cdb, SCSI_XFER_READ, 1024);
    t = iscsi_scsi_command_sync(s.iscsi, s.lun, task, NULL);
    if (!t || t->status != SCSI_STATUS_GOOD) die("RECEIVE ROD TOKEN INFORMATION", s.iscsi);
    if (t->datain.size < 38 + 512) { fprintf(stderr, "iscsi-load: RRTI returned %d bytes, no token\n", t->datain.size); exit(1); }
    unsigned char wut[536 + 16] = {0};
    put16(wut, 534 + 16);           /* WRITE USING TOKEN DATA LENGTH */
    wut[2] = 0x02;                  /* DEL_TKN */
    memcpy(wut + 16, t->datain.data + 38, 512);
    put16(wut + 534, 16);
    memcpy(wut + 536, range, 16);
    scsi_free_scsi_task(t);

    unsigned char wut_cdb[16] = { 0x83, 0x11 };
    put32(wut_cdb + 6, list_id + 1);
    put32(wut_cdb + 10, sizeof wut);
    t = command_out(s.iscsi, dst_lun, wut_cdb, 16, wut, sizeof wut);
    if (!t || t->status != SCSI_STATUS_GOOD) die("WRITE USING TOKEN", s.iscsi);
    double elapsed = now_seconds() - start;
    scsi_free_scsi_task(t);
    uint64_t total = lun_blocks * (uint64_t)block_size;
    printf("ops=3 bytes=%" PRIu64 " seconds=%.3f mibs=%.1f\n", total, elapsed, (double)total / MIB / elapsed);
    iscsi_logout_sync(s.iscsi);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr, "usage: iscsi-load fill|randread|seqread|randwrite|seqwrite|xcopy|hostcopy|tokencopy URL "
                    "[DSTLUN] [-b BLOCKS] [-m QD] [-t SECONDS] [-s SESSIONS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    const char *mode = argv[1];
    portal_url = argv[2];
    int sessions = 1;
    double seconds = 5;
    int argi = 3;
    if (!strcmp(mode, "xcopy") || !strcmp(mode, "hostcopy") || !strcmp(mode, "tokencopy")) {
        if (argc < 4) usage();
        dst_lun = atoi(argv[3]);
        argi = 4;
    }
    for (; argi < argc; argi++) {
        if (argi + 1 >= argc) usage();
        if (!strcmp(argv[argi], "-b")) blocks = atoi(argv[++argi]);
        else if (!strcmp(argv[argi], "-m")) qd = atoi(argv[++argi]);
        else if (!strcmp(argv[argi], "-t")) seconds = atof(argv[++argi]);
        else if (!strcmp(argv[argi], "-s")) sessions = atoi(argv[++argi]);
        else usage();
    }
    if (blocks < 1 || qd < 1 || sessions < 1 || seconds <= 0) usage();
    make_pattern();
    if (!strcmp(mode, "fill")) return whole_lun(portal_url);
    if (!strcmp(mode, "hostcopy")) { copy_mode = 1; return whole_lun(portal_url); }
    if (!strcmp(mode, "xcopy")) return extended_copy(portal_url);
    if (!strcmp(mode, "tokencopy")) return token_copy(portal_url);
    if (!strcmp(mode, "randread")) random_mode = 1;
    else if (!strcmp(mode, "seqread")) random_mode = 0;
    else if (!strcmp(mode, "randwrite")) { random_mode = 1; write_mode = 1; }
    else if (!strcmp(mode, "seqwrite")) write_mode = 1;
    else usage();
    return timed_load(portal_url, sessions, seconds);
}
