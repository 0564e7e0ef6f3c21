#!/usr/bin/env bash
# The benchmark: this target against tgt (tgtd) on loopback, side by side (Docs/benchmarks.md).
#
#   bash Benchmarks/run.sh            # full run, about 4.5 minutes after the release build
#   bash Benchmarks/run.sh --short    # smoke run for CI (small LUNs, one short round)
#
# It builds the release binary (unless TARGET_BIN names one), compiles its libiscsi write
# client (Benchmarks/iscsi-load.c) with gcc, starts both targets on 127.0.0.1 with file-backed
# LUNs of the same size in a temporary directory, writes the same data over the whole of both
# LUNs through iSCSI, then measures both targets alternately, several rounds each:
#   - iscsi-perf (libiscsi-bin): 4 KiB random reads at QD 1 and QD 32, 128 KiB sequential
#     reads at QD 16;
#   - iscsi-load: 4 KiB random writes at QD 32, 128 KiB sequential writes at QD 16;
#   - scaling: 4 KiB random reads from 1, 8 and 64 sessions (QD 4 each), median IOPS of the
#     rounds and peak RSS;
#   - copy offload (this target only; tgt has none): the whole LUN copied to a second LUN by
#     EXTENDED COPY, by ODX tokens (when the target and iscsi-load support them), and by the
#     initiator reading and writing it.
# Prints each figure's median for both targets and the ratio this target / tgt, this target's
# peak RSS (VmHWM) and CPU time per GiB moved (utime+stime of the process from /proc).
#
# Options and environment:
#   --short           64 MiB LUNs, 1 round of 1 s per figure (CI: checks the script still runs)
#   --rounds N        rounds per figure (default 5)      --seconds S   seconds per run (default 3)
#   --size SIZE       LUN size for truncate(1) (default 1G)
#   TARGET_BIN        use this iscsi-target binary instead of building one
#   SCRATCH_PATH      swift build scratch path for the release build
#   BENCH_REPORT      also write the report to this file
# Exit status: 0 when every run completed (the ratios do not decide it), 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SHORT=0 ROUNDS=5 SECS=3 SIZE=1G
while (( $# )); do
    case $1 in
        --short) SHORT=1; ROUNDS=1; SECS=1; SIZE=64M ;;
        --rounds) ROUNDS=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --size) SIZE=$2; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '%s\n' "$*" >&2; }
fail() { say "run.sh: ERROR: $*"; exit 1; }

# --------------------------------------------------------------------------------------------
# Tools: tgtd/tgtadm (tgt), iscsi-perf (libiscsi-bin), libiscsi headers (libiscsi-dev), gcc.
need=()
command -v tgtd > /dev/null && command -v tgtadm > /dev/null || need+=(tgt)
command -v iscsi-perf > /dev/null || need+=(libiscsi-bin)
pkg-config --exists libiscsi 2> /dev/null || need+=(libiscsi-dev pkg-config)
command -v gcc > /dev/null || need+=(gcc)
if (( ${#need[@]} )); then
    [[ $(id -u) == 0 ]] || fail "missing packages ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
    say "installing: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q > /dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" > /dev/null ||
        fail "apt-get could not install ${need[*]}"
fi
[[ -w /proc/self/clear_refs ]] || fail "/proc/PID/clear_refs is not writable (needed to reset peak RSS per scaling step)"

WORK=$(mktemp -d /tmp/iscsi-bench.XXXXXX)
OURS_PID="" TGT_PID=""
cleanup() {
    # (errexit off: `wait` reports the signal that ended a process, which is no error here.)
    set +e
    [[ -n $OURS_PID ]] && kill "$OURS_PID" 2> /dev/null && wait "$OURS_PID" 2> /dev/null
    # tgtd ignores SIGTERM while it has targets; it is stopped by its pid.
    [[ -n $TGT_PID ]] && kill -9 "$TGT_PID" 2> /dev/null && wait "$TGT_PID" 2> /dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# --------------------------------------------------------------------------------------------
# Build.
if [[ -z ${TARGET_BIN:-} ]]; then
    scratch=(); [[ -n ${SCRATCH_PATH:-} ]] && scratch=(--scratch-path "$SCRATCH_PATH")
    say "building the release binary (swift build -c release)"
    swift build -c release "${scratch[@]}" --product iscsi-target > "$WORK/build.log" 2>&1 ||
        { tail -n 30 "$WORK/build.log" >&2; fail "release build failed"; }
    TARGET_BIN="$(swift build -c release "${scratch[@]}" --show-bin-path)/iscsi-target"
fi
[[ -x $TARGET_BIN ]] || fail "no target binary at $TARGET_BIN"
LOAD="$WORK/iscsi-load"
# shellcheck disable=SC2046
gcc -O2 -Wall -o "$LOAD" Benchmarks/iscsi-load.c $(pkg-config --cflags --libs libiscsi) ||
    fail "could not compile Benchmarks/iscsi-load.c"

# --------------------------------------------------------------------------------------------
# Start both targets.
port_free() { ! (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
pick_port() { local p; for _ in $(seq 50); do p=$((20000 + RANDOM % 20000)); port_free "$p" && { echo "$p"; return; }; done; fail "no free port"; }
wait_port() { for _ in $(seq 100); do port_free "$1" || return 0; sleep 0.1; done; return 1; }

OURS_PORT=$(pick_port)
OURS_IQN=iqn.2026-11.org.iscsi-target:bench
mkdir -p "$WORK/ours" "$WORK/tgt"
cat > "$WORK/ours.toml" << EOF
[server]
listen = "127.0.0.1:$OURS_PORT"
state_dir = "$WORK/ours"
nop_interval = 0

[[target]]
name = "$OURS_IQN"

  [[target.lun]]
  number = 0
  file = "lun0.img"
  size = "$(numfmt --from=iec "$SIZE")"
  block_size = 512
  cache = "write-back"

  [[target.lun]]
  number = 1
  file = "lun1.img"
  size = "$(numfmt --from=iec "$SIZE")"
  block_size = 512
  cache = "write-back"
EOF
"$TARGET_BIN" serve --config "$WORK/ours.toml" --log-level warning > "$WORK/ours.log" 2>&1 &
OURS_PID=$!
wait_port "$OURS_PORT" || { cat "$WORK/ours.log" >&2; fail "this target did not start"; }
OURS_URL="iscsi://127.0.0.1:$OURS_PORT/$OURS_IQN/0"

TGT_PORT=$(pick_port)
TGT_CTL=$((100 + RANDOM % 800))
TGT_IQN=iqn.2026-11.org.iscsi-target:bench-tgt
truncate -s "$SIZE" "$WORK/tgt/lun1.img"
tgtd -f -C "$TGT_CTL" --iscsi "portal=127.0.0.1:$TGT_PORT" > "$WORK/tgtd.log" 2>&1 &
TGT_PID=$!
wait_port "$TGT_PORT" || { cat "$WORK/tgtd.log" >&2; fail "tgtd did not start"; }
tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode target --tid 1 -T "$TGT_IQN" &&
    tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/tgt/lun1.img" &&
    tgtadm -C "$TGT_CTL" --lld iscsi --op bind --mode target --tid 1 -I ALL ||
    fail "tgtadm could not configure tgtd"
TGT_URL="iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1"

# --------------------------------------------------------------------------------------------
# Measuring helpers.
HZ=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
url_of() { [[ $1 == ours ]] && echo "$OURS_URL" || echo "$TGT_URL"; }
pid_of() { [[ $1 == ours ]] && echo "$OURS_PID" || echo "$TGT_PID"; }

# One run of a figure against one target: prints "IOPS BYTES CPU_TICKS".
run_figure() {
    local fig=$1 who=$2 url pid out iops bytes t0 t1
    url=$(url_of "$who"); pid=$(pid_of "$who")
    t0=$(cpu_ticks "$pid")
    case $fig in
        rr1|rr32|sr16)
            local m b r=()
            case $fig in rr1) m=1 b=8 r=(-r) ;; rr32) m=32 b=8 r=(-r) ;; sr16) m=16 b=256 ;; esac
            out=$(iscsi-perf -t "$SECS" -m "$m" -b "$b" "${r[@]}" "$url" 2>&1 | tr '\r' '\n') ||
                { say "$out"; fail "iscsi-perf $fig against $who failed"; }
            iops=$(grep -oE '^iops average [0-9]+' <<< "$out" | tail -n 1 | awk '{print $3}')
            [[ -n $iops ]] || { say "$out"; fail "no result from iscsi-perf $fig against $who"; }
            bytes=$((iops * b * 512 * SECS)) ;;
        rw32|sw16)
            local args
            [[ $fig == rw32 ]] && args=(randwrite -b 8 -m 32) || args=(seqwrite -b 256 -m 16)
            out=$("$LOAD" "${args[0]}" "$url" "${args[@]:1}" -t "$SECS") || fail "iscsi-load $fig against $who failed"
            iops=$(grep -oE 'iops=[0-9]+' <<< "$out" | cut -d= -f2)
            bytes=$(grep -oE 'bytes=[0-9]+' <<< "$out" | cut -d= -f2) ;;
    esac
    t1=$(cpu_ticks "$pid")
    echo "$iops $bytes $((t1 - t0))"
}

REPORT="$WORK/report.txt"
out() { printf '%s\n' "$*" | tee -a "$REPORT"; }
START=$(date +%s)

out "iSCSI benchmark: this target vs tgt $(dpkg-query -W -f '${Version}' tgt 2> /dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
out "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
out "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine moves single figures; compare ratios within one run)"
out "LUNs: $SIZE each, 512-byte blocks, file-backed in $WORK (page cache); $ROUNDS round(s) of ${SECS}s per figure$( ((SHORT)) && echo ' [--short]')"
out ""

# --------------------------------------------------------------------------------------------
# Same data on both LUNs (a sparse LUN reads at a very different speed from a written one).
for who in ours tgt; do
    r=$("$LOAD" fill "$(url_of "$who")" -b 512 -m 8) || fail "filling the $who LUN failed"
    say "filled $who: $r"
done

# --------------------------------------------------------------------------------------------
FIGS=(rr1 rr32 sr16 rw32 sw16)
declare -A LABEL=([rr1]="4 KiB random read, QD 1" [rr32]="4 KiB random read, QD 32" [sr16]="128 KiB seq read, QD 16"
                  [rw32]="4 KiB random write, QD 32" [sw16]="128 KiB seq write, QD 16")
declare -A IOPS BYTES TICKS
# The write figures (and the fill) leave gigabytes of dirty pages; their writeback would land on
# whichever target runs next. And the kernel may evict LUN pages between figures (this VM runs
# DAMON proactive reclaim, which pages out page cache that has not been touched for seconds):
# reads of evicted blocks go to the disk. So each round, and the scaling section, start after a
# sync and with both LUN files read once into the page cache.
settle() {
    sync
    cat "$WORK/ours/lun0.img" "$WORK/tgt/lun1.img" > /dev/null
}
for round in $(seq "$ROUNDS"); do
    settle
    # Alternate which target goes first, so neither always runs on a warmer machine.
    if (( round % 2 )); then order=(ours tgt); else order=(tgt ours); fi
    for fig in "${FIGS[@]}"; do
        for who in "${order[@]}"; do
            res=$(run_figure "$fig" "$who"); read -r i b t <<< "$res"
            IOPS[$fig.$who]+=" $i"; BYTES[$fig.$who]=$(( ${BYTES[$fig.$who]:-0} + b )); TICKS[$fig.$who]=$(( ${TICKS[$fig.$who]:-0} + t ))
            say "round $round $fig $who: $i IOPS"
        done
    done
done

cpu_per_gib() { awk -v t="$1" -v b="$2" -v hz="$HZ" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", (t / hz) / (b / 1073741824) }'; }
out "$(printf '%-28s %12s %12s %7s   %14s %14s' figure 'this (IOPS)' 'tgt (IOPS)' ratio 'this CPU s/GiB' 'tgt CPU s/GiB')"
for fig in "${FIGS[@]}"; do
    o=$(median <<< "${IOPS[$fig.ours]}"); g=$(median <<< "${IOPS[$fig.tgt]}")
    ratio=$(awk -v a="$o" -v b="$g" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }')
    out "$(printf '%-28s %12.0f %12.0f %7s   %14s %14s' "${LABEL[$fig]}" "$o" "$g" "$ratio" \
        "$(cpu_per_gib "${TICKS[$fig.ours]}" "${BYTES[$fig.ours]}")" "$(cpu_per_gib "${TICKS[$fig.tgt]}" "${BYTES[$fig.tgt]}")")"
done
out ""
PEAK=$(( $(status_kib "$OURS_PID" VmHWM) / 1024 ))
out "peak RSS (VmHWM) after the figures: this target $PEAK MiB, tgtd $(( $(status_kib "$TGT_PID" VmHWM) / 1024 )) MiB"
out ""

# --------------------------------------------------------------------------------------------
# Scaling: N sessions of 4 KiB random reads at QD 4 each, alternating rounds as above (median
# IOPS); peak RSS reset before each run, the step's largest peak printed.
out "scaling: 4 KiB random reads, QD 4 per session (median of $ROUNDS round(s))"
out "$(printf '%-10s %12s %12s %7s   %16s %16s' sessions 'this (IOPS)' 'tgt (IOPS)' ratio 'this peak RSS' 'tgt peak RSS')"
settle
for n in 1 8 64; do
    declare -A S=([ours.iops]="" [tgt.iops]="" [ours.rss]=0 [tgt.rss]=0)
    for round in $(seq "$ROUNDS"); do
        if (( round % 2 )); then order=(ours tgt); else order=(tgt ours); fi
        for who in "${order[@]}"; do
            pid=$(pid_of "$who")
            echo 5 > "/proc/$pid/clear_refs"
            r=$("$LOAD" randread "$(url_of "$who")" -b 8 -m 4 -s "$n" -t "$SECS") || fail "scaling with $n sessions against $who failed"
            S[$who.iops]+=" $(grep -oE 'iops=[0-9]+' <<< "$r" | cut -d= -f2)"
            rss=$(( $(status_kib "$pid" VmHWM) / 1024 ))
            (( rss > S[$who.rss] )) && S[$who.rss]=$rss
            say "scaling $n round $round $who: $r, VmHWM $rss MiB"
        done
    done
    (( S[ours.rss] > PEAK )) && PEAK=${S[ours.rss]}
    o=$(median <<< "${S[ours.iops]}"); g=$(median <<< "${S[tgt.iops]}")
    ratio=$(awk -v a="$o" -v b="$g" 'BEGIN { printf "%.2f", a / b }')
    out "$(printf '%-10s %12.0f %12.0f %7s   %12s MiB %12s MiB' "$n" "$o" "$g" "$ratio" "${S[ours.rss]}" "${S[tgt.rss]}")"
done
out ""

# --------------------------------------------------------------------------------------------
# Copy offload (this target only): LUN 0 → LUN 1 of the same target.
copy_run() {  # mode → "SECONDS MIB/S" or "n/a"
    local r rc=0
    r=$("$LOAD" "$1" "$OURS_URL" 1 -b 512 -m 8 2> "$WORK/copy-$1.err") || rc=$?
    if (( rc == 3 )); then echo "n/a"; return; fi
    (( rc == 0 )) || { cat "$WORK/copy-$1.err" >&2; fail "$1 failed"; }
    echo "$(grep -oE 'seconds=[0-9.]+' <<< "$r" | cut -d= -f2) $(grep -oE 'mibs=[0-9.]+' <<< "$r" | cut -d= -f2)"
}
out "copy offload: $SIZE from LUN 0 to LUN 1 of this target (tgt offers neither EXTENDED COPY nor tokens)"
host=$(copy_run hostcopy)
for mode in xcopy tokencopy; do
    name=$([[ $mode == xcopy ]] && echo "EXTENDED COPY (LID1)" || echo "tokens (POPULATE TOKEN + WRITE USING TOKEN)")
    r=$(copy_run "$mode")
    if [[ $r == n/a ]]; then
        out "$(printf '  %-46s n/a (not supported yet)' "$name")"
    else
        read -r s m <<< "$r"
        out "$(printf '  %-46s %7.3f s %8.0f MiB/s   %.1fx faster than the initiator' "$name" "$s" "$m" \
            "$(awk -v h="${host%% *}" -v s="$s" 'BEGIN { print h / s }')")"
    fi
done
read -r s m <<< "$host"
out "$(printf '  %-46s %7.3f s %8.0f MiB/s' "initiator READ(16)+WRITE(16), 256 KiB, QD 8" "$s" "$m")"
out ""
(( $(status_kib "$OURS_PID" VmHWM) / 1024 > PEAK )) && PEAK=$(( $(status_kib "$OURS_PID" VmHWM) / 1024 ))
out "this target's peak RSS over the whole run: $PEAK MiB; measuring took $(( $(date +%s) - START )) s"

kill -0 "$OURS_PID" 2> /dev/null || fail "this target exited during the benchmark (log: $WORK/ours.log)"
[[ -n ${BENCH_REPORT:-} ]] && cp "$REPORT" "$BENCH_REPORT"
exit 0
