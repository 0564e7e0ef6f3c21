#!/usr/bin/env bash
# End-to-end suite with the real Linux iSCSI initiator: boots Debian kernels (6.1 and 6.12)
# under QEMU (software emulation), logs in to the target running on the host loopback and runs
# Tests/Guest/scenarios/NN-*.sh inside the guest, all in one boot per kernel.
#
#   Tests/Guest/run.sh                      # the project's target (built with swift build)
#   GUEST_TARGET=tgt Tests/Guest/run.sh     # tgt, the reference userspace target
#   GUEST_KERNELS=6.12 GUEST_ONLY=discovery-login,disks Tests/Guest/run.sh
#
# Installs what it needs with apt-get (run as root on Debian 12); kernels, initramfs and logs
# live in Tests/Guest/work/ (git-ignored; logs in work/logs/TARGET/). Prints every RESULT line, then
# per kernel and in total a line "N passed, N failed". Exit status: 0 all passed, 1 a scenario
# failed, 2 the harness could not run the suite (no scenario ran).
#
# Settings (environment):
#   GUEST_KERNELS          kernel series to boot, default "6.1 6.12"
#   GUEST_TARGET           "swift" (default) or "tgt": presets for the settings below
#   GUEST_TARGET_CMD       command starting the target in the foreground (bash -c; sees GUEST_PORT,
#                          GUEST_ADVERTISE, GUEST_STATE_DIR, GUEST_CONFIG, GUEST_TARGET_BIN)
#   GUEST_CONFIG           target config, default Targets/default.toml
#   GUEST_DCHAP_CONFIG     config of a second target process whose discovery requires CHAP (default
#                          Tests/Guest/discovery-chap.toml, project's target only: scenario chap;
#                          empty: none)
#   GUEST_EXTRA_CONFIG     targets appended to GUEST_CONFIG for the project's target (default
#                          Tests/Guest/security-targets.toml: scenario chap; empty: none)
#   GUEST_TARGET_IQN       target name (default: first `name = "iqn..."` of GUEST_CONFIG)
#   GUEST_LUNS             comma-separated disk LUNs (default: from GUEST_CONFIG)
#   GUEST_LUN_BYTES        expected disk size, default 1 GiB; GUEST_BLOCK_SIZE default 512
#   GUEST_DISCOVERY        "advertised" (log in to the portal SendTargets returns) or "static"
#   GUEST_LUN_FILES        "LUN=PATH ..." backing files for the host-side marker check
#   GUEST_SKIP             comma-separated checks the guest skips (e.g. sg_opcodes)
#   GUEST_ONLY             comma-separated scenario names to run (default all)
#   GUEST_SKIP_BUILD=1     do not run swift build
#   GUEST_HOSTREQ          1 (default for the project's target): carry out the guest's requests to
#                          change the running target (scenario runtime-luns, via iscsi-target
#                          lun add/remove, tokens, save on GUEST_STATE_DIR/control.sock); 0: refuse
#   GUEST_READY_TIMEOUT    seconds until the guest's "harness ready" marker (default 300; retried once)
#   GUEST_SUITE_TIMEOUT    seconds for a whole boot (default 900); GUEST_SCENARIO_TIMEOUT per scenario (180)
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$GUEST_DIR/../.." && pwd)
GUEST_WORK=${GUEST_WORK:-$GUEST_DIR/work}
# shellcheck source=lib/setup.sh
source "$GUEST_DIR/lib/setup.sh"
# shellcheck source=lib/initramfs.sh
source "$GUEST_DIR/lib/initramfs.sh"
# shellcheck source=lib/target.sh
source "$GUEST_DIR/lib/target.sh"

# boot_guest VMLINUZ INITRD CONSOLE RESULTS HOSTREQ : run one guest; sets boot_status (done |
# timeout | not-ready | exited) and ready_after (seconds until the ready marker). HOSTREQ is the
# base name of the guest's third serial port (ttyS2, `-serial pipe:`): HOSTREQ.in is a FIFO
# the host writes the answers to host requests to, HOSTREQ.out a file (the guest sends nothing
# on it; requests arrive on ttyS1 with the RESULT lines).
boot_guest() {
    local vmlinuz=$1 initrd=$2 console=$3 results=$4 hostreq=$5 qpid t0 seen=0 now append
    : > "$console"; : > "$results"; : > "$hostreq.out"; : > "$hostreq.log"
    rm -f "$hostreq.in" && mkfifo "$hostreq.in"
    exec {hostreq_fd}<> "$hostreq.in"     # read-write: opening never blocks, writes never block
    append="console=ttyS0 quiet panic=-1 guest.host=10.0.2.2 guest.port=$GUEST_PORT"
    append+=" guest.iqn=$GUEST_TARGET_IQN guest.luns=$GUEST_LUNS guest.lunbytes=$GUEST_LUN_BYTES"
    append+=" guest.bs=$GUEST_BLOCK_SIZE guest.discovery=$GUEST_DISCOVERY"
    append+=" guest.timeout=$GUEST_SCENARIO_TIMEOUT"
    [[ -n ${GUEST_DCHAP_PORT:-} ]] && append+=" guest.dchap=$GUEST_DCHAP_PORT"
    [[ -n ${GUEST_SKIP:-} ]] && append+=" guest.skip=$GUEST_SKIP"
    [[ -n ${GUEST_ONLY:-} ]] && append+=" guest.only=$GUEST_ONLY"
    [[ $GUEST_HOSTREQ == 1 ]] && append+=" guest.hostreq=1"
    t0=$SECONDS
    qemu-system-x86_64 -machine pc,accel=tcg -m 1024 -smp 2 -display none -monitor none \
        -no-reboot -kernel "$vmlinuz" -initrd "$initrd" -append "$append" \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
        -serial "file:$console" -serial "file:$results" -serial "pipe:$hostreq" \
        < /dev/null > "$console.qemu" 2>&1 &
    qpid=$! qemu_pid=$!
    ready_after=""
    boot_status=exited
    while kill -0 "$qpid" 2>/dev/null; do
        sleep 0.5
        now=$((SECONDS - t0))
        if [[ -z $ready_after ]] && grep -q 'harness ready' "$results"; then
            ready_after=$now
            log "guest ready after ${now}s ($(grep -o 'harness ready.*' "$results" | head -n 1))"
        fi
        # Show RESULT lines as they arrive.
        while IFS= read -r line; do
            seen=$((seen + 1))
            [[ $line == RESULT* ]] && printf '  %s\n' "$line" | tr -d '\r'
            if [[ $line == HOSTREQ* ]]; then
                # A harness error while answering must not end the run (the guest times out instead).
                host_request "${line%$'\r'}" "$hostreq.log" >&"$hostreq_fd" || log "host request failed: $line"
            fi
        done < <(tail -n "+$((seen + 1))" "$results")
        if [[ -z $ready_after && $now -ge $GUEST_READY_TIMEOUT ]]; then
            boot_status=not-ready; break
        fi
        if [[ $now -ge $GUEST_SUITE_TIMEOUT ]]; then
            boot_status=timeout; break
        fi
    done
    if kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        sleep 1
        kill -KILL "$qpid" 2>/dev/null || true
    else
        grep -q 'GUEST-HARNESS: done' "$results" && boot_status=done
        [[ -z $ready_after ]] && boot_status=not-ready
    fi
    wait "$qpid" 2>/dev/null || true
    qemu_pid=""
    exec {hostreq_fd}>&-
    rm -f "$hostreq.in"
    guest_seconds=$((SECONDS - t0))
}

# host_request "HOSTREQ ID ACTION ARGS..." LOG : carry out a guest's request to change the
# running target (scenario runtime-luns) and print the answer line
# "HOSTREP ID STATUS MESSAGE HOSTREP-END" (STATUS 0 = done). Only these actions run, with
# checked arguments, through the target's control socket in GUEST_STATE_DIR:
#   lun-add N SIZE [KEY=VALUE...]  iscsi-target lun add (file runtime-lunN.img in the state dir)
#   lun-remove N                   iscsi-target lun remove
#   tokens KEY=VALUE...            iscsi-target tokens --set ...
#   save NAME.toml                 iscsi-target save --output STATE/NAME.toml, then check-config
#                                  of it; answers its verdict, the LUNs of the first target, its
#                                  [target.tokens] max_inactivity_timeout line and whether the
#                                  file is byte for byte the definition the target was started with
#   status                         iscsi-target status --json, parsed (python3); answers
#                                  "json=ok sessions=N tokens=N left=S,S... groupwrites=N": the
#                                  sessions, the ROD tokens with their seconds left, and the write
#                                  commands in the streams' group statistics of every LUN
host_request() {
    local id action out rc=0 kv number size file
    local -a words cmd sets=()
    read -r -a words <<< "$1"
    id=${words[1]:-} action=${words[2]:-}
    words=("${words[@]:3}")
    [[ $id =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || { echo "HOSTREQ without a valid id: $1" >> "$2"; return 0; }
    refuse() { out=$*; rc=2; }
    cmd=("$GUEST_TARGET_BIN")
    for kv in "${words[@]}"; do
        [[ $kv =~ ^[a-z_]+=[A-Za-z0-9_.-]+$ ]] && sets+=(--set "$kv")
    done
    if [[ $GUEST_HOSTREQ != 1 ]]; then
        refuse "this target takes no runtime changes (GUEST_TARGET=$GUEST_TARGET)"
    else
        case $action in
            lun-add)
                number=${words[0]:-} size=${words[1]:-}
                if [[ ! $number =~ ^[0-9]{1,5}$ || ! $size =~ ^[0-9]+(KiB|MiB|GiB)?$ || ${#sets[@]} -ne $((2 * (${#words[@]} - 2))) ]]; then
                    refuse "usage: lun-add N SIZE [KEY=VALUE...]"
                else
                    cmd+=(lun add --number "$number" --file "runtime-lun$number.img" --size "$size" "${sets[@]}")
                fi ;;
            lun-remove)
                number=${words[0]:-}
                if [[ ! $number =~ ^[0-9]{1,5}$ || ${#words[@]} -ne 1 ]]; then refuse "usage: lun-remove N"
                else cmd+=(lun remove --number "$number"); fi ;;
            tokens)
                if [[ ${#words[@]} -eq 0 || ${#sets[@]} -ne $((2 * ${#words[@]})) ]]; then refuse "usage: tokens KEY=VALUE..."
                else cmd+=(tokens "${sets[@]}"); fi ;;
            status)
                if [[ ${#words[@]} -ne 0 ]]; then refuse "usage: status"
                else cmd+=(status --json); fi ;;
            save)
                file=${words[0]:-}
                if [[ ! $file =~ ^[a-z0-9-]{1,40}\.toml$ || ${#words[@]} -ne 1 ]]; then refuse "usage: save NAME.toml"
                else cmd+=(save --output "$GUEST_STATE_DIR/$file"); fi ;;
            *) refuse "unknown action '$action' (lun-add, lun-remove, tokens, save, status)" ;;
        esac
    fi
    if [[ $rc == 0 ]]; then
        [[ $action == save || $action == status ]] || cmd+=(--target "$GUEST_TARGET_IQN")
        cmd+=(--state-dir "$GUEST_STATE_DIR")
        out=$("${cmd[@]}" 2>&1) || rc=$?
        if [[ $rc == 0 && $action == status ]]; then
            out=$(printf '%s' "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
left = ",".join("%.1f" % t["secondsLeft"] for t in d["tokens"] if t.get("secondsLeft") is not None)
groups = sum(c["writeCommands"] for t in d["targets"] for l in t["luns"] if l.get("streams")
             for c in l["streams"]["groups"].values())
print("json=ok sessions=%d tokens=%d left=%s groupwrites=%d" % (len(d["sessions"]), len(d["tokens"]), left or "-", groups))
' 2>&1) || rc=$?
        fi
        if [[ $rc == 0 && $action == save ]]; then
            out=$("$GUEST_TARGET_BIN" check-config "$GUEST_STATE_DIR/$file" 2>&1) || rc=$?
            out="$out; luns $(config_luns "$GUEST_STATE_DIR/$file" || true); $(grep -m 1 -E '^[[:space:]]*max_inactivity_timeout[[:space:]]*=' "$GUEST_STATE_DIR/$file" | sed 's/#.*//' | tr -s ' ')"
            if cmp -s "$GUEST_STATE_DIR/$file" "$GUEST_CONFIG"; then out="$out; identical to the served definition"
            else out="$out; differs from the served definition in $( (diff "$GUEST_STATE_DIR/$file" "$GUEST_CONFIG" || true) | grep -c '^[<>]') lines"; fi
        fi
    fi
    out=$(printf '%s' "$out" | tr -s '\r\n\t' '   ' | sed 's/^ *//; s/ *$//')
    printf '%s\n  -> %s %s\n' "$1" "$rc" "$out" >> "$2"
    log "host request ${action:-?} ${words[*]}: status $rc, $out"
    # The end mark lets the guest tell a whole answer from one still arriving on the serial port.
    printf 'HOSTREP %s %s %s HOSTREP-END\n' "$id" "$rc" "$out"
}

# If the harness itself dies (set -e), leave no guest or target running.
qemu_pid=""
on_exit() {
    [[ -n $qemu_pid ]] && kill -KILL "$qemu_pid" 2>/dev/null
    stop_target; stop_dchap_target
}

main() {
    trap on_exit EXIT
    GUEST_KERNELS=${GUEST_KERNELS:-6.1 6.12}
    GUEST_TARGET=${GUEST_TARGET:-swift}
    GUEST_CONFIG=${GUEST_CONFIG:-$REPO/Targets/default.toml}
    GUEST_READY_TIMEOUT=${GUEST_READY_TIMEOUT:-300}
    GUEST_SUITE_TIMEOUT=${GUEST_SUITE_TIMEOUT:-900}
    GUEST_SCENARIO_TIMEOUT=${GUEST_SCENARIO_TIMEOUT:-180}
    GUEST_LUN_BYTES=${GUEST_LUN_BYTES:-1073741824}
    GUEST_BLOCK_SIZE=${GUEST_BLOCK_SIZE:-512}

    # Logs of this run: one folder per target (and fault), overwritten by the next such run.
    LOGS=$GUEST_WORK/logs/$GUEST_TARGET${ISCSI_TARGET_FAULT:+-$ISCSI_TARGET_FAULT}
    mkdir -p "$GUEST_WORK" "$LOGS"
    suite_start=$SECONDS

    # ---- 1. host tools, target presets ----------------------------------------------------------
    ensure_host_tools
    GUEST_PORT=$(free_port "${GUEST_PORT_BASE:-3262}")
    GUEST_ADVERTISE=10.0.2.2:$GUEST_PORT

    case $GUEST_TARGET in
        swift)
            GUEST_TARGET_BIN=${GUEST_TARGET_BIN:-$REPO/.build-guest/release/iscsi-target}
            if [[ -z ${GUEST_TARGET_CMD:-} && ${GUEST_SKIP_BUILD:-0} != 1 ]]; then
                log "building the target: swift build -c release --scratch-path .build-guest"
                (cd "$REPO" && swift build -c release --scratch-path .build-guest --product iscsi-target) \
                    > "$LOGS/swift-build.log" 2>&1 || {
                    tail -n 40 "$LOGS/swift-build.log" >&2
                    die "swift build failed (log: $LOGS/swift-build.log)"
                }
            fi
            GUEST_TARGET_CMD=${GUEST_TARGET_CMD:-'exec "$GUEST_TARGET_BIN" serve --config "$GUEST_CONFIG" --listen "127.0.0.1:$GUEST_PORT" --advertise "$GUEST_ADVERTISE" --state-dir "$GUEST_STATE_DIR"'}
            GUEST_TARGET_IQN=${GUEST_TARGET_IQN:-$(config_iqn "$GUEST_CONFIG")}
            GUEST_LUNS=${GUEST_LUNS:-$(config_luns "$GUEST_CONFIG")}
            GUEST_DISCOVERY=${GUEST_DISCOVERY:-advertised}
            GUEST_HOSTREQ=${GUEST_HOSTREQ:-1}               # runtime changes over the control socket
            lun_files_default='$(config_lun_files "$GUEST_CONFIG" "$GUEST_STATE_DIR")'
            GUEST_EXTRA_CONFIG=${GUEST_EXTRA_CONFIG-$GUEST_DIR/security-targets.toml}
            # A second process whose discovery sessions require CHAP (scenario chap).
            GUEST_DCHAP_CONFIG=${GUEST_DCHAP_CONFIG-$GUEST_DIR/discovery-chap.toml}
            [[ -n $GUEST_DCHAP_CONFIG ]] && GUEST_DCHAP_PORT=$(free_port $((GUEST_PORT + 1)))
            if [[ -n $GUEST_EXTRA_CONFIG ]]; then
                # The first [[target]] stays the main one (IQN and LUNs above are taken from it).
                cat "$GUEST_CONFIG" "$GUEST_EXTRA_CONFIG" > "$GUEST_WORK/served.toml"
                GUEST_CONFIG=$GUEST_WORK/served.toml
            fi
            ;;
        tgt)
            ensure_packages tgt
            export GUEST_TGT_IQN=${GUEST_TARGET_IQN:-iqn.2024-01.org.guest-suite:tgt}
            GUEST_TARGET_IQN=$GUEST_TGT_IQN
            GUEST_TARGET_BIN=$(command -v tgtd)
            GUEST_TARGET_CMD=${GUEST_TARGET_CMD:-"exec '$GUEST_DIR/lib/tgt-target.sh'"}
            GUEST_LUNS=${GUEST_LUNS:-1,2}
            GUEST_DISCOVERY=${GUEST_DISCOVERY:-static}      # tgt advertises its own 127.0.0.1
            GUEST_SKIP=${GUEST_SKIP-chap}                    # no CHAP/ACL targets in this preset
            GUEST_HOSTREQ=0                                  # no control socket: no runtime changes
            lun_files_default='1=$GUEST_STATE_DIR/tgt-lun1.img 2=$GUEST_STATE_DIR/tgt-lun2.img'
            ;;
        *) die "GUEST_TARGET must be swift or tgt" ;;
    esac
    [[ -n $GUEST_TARGET_IQN ]] || die "no target IQN (set GUEST_TARGET_IQN)"
    [[ -n $GUEST_LUNS ]] || die "no LUNs (set GUEST_LUNS)"

    # Scenario names, in order (optionally filtered by GUEST_ONLY).
    scenarios=()
    for f in "$GUEST_DIR"/scenarios/[0-9]*.sh; do
        n=$(basename "$f" .sh); n=${n#*-}
        if [[ -n ${GUEST_ONLY:-} && ",$GUEST_ONLY," != *",$n,"* ]]; then continue; fi
        scenarios+=("$n")
    done
    [[ ${#scenarios[@]} -gt 0 ]] || die "no scenario selected"

    # ---- 2..4. per kernel: kernel, initramfs, target, boot ----------------------------------------
    total_pass=0 total_fail=0 total_ran=0 summary=()
    for series in $GUEST_KERNELS; do
        k_start=$SECONDS
        kdir=$(fetch_kernel "$series")
        kver=$(kernel_version "$kdir")
        vmlinuz=$(ls "$kdir"/root/boot/vmlinuz-*)
        initrd=$(build_initramfs "$kdir")
        console=$LOGS/console-$kver.log
        results=$LOGS/results-$kver.log
        GUEST_STATE_DIR=$GUEST_WORK/state/$kver
        log "kernel $kver: booting guest (initrd $(du -h "$initrd" | cut -f1)), target port $GUEST_PORT"

        boot_status=not-started target_ok=1 target_alive_after=0
        for attempt in 1 2; do
            start_target "$LOGS/target-$kver.log" || { target_ok=0; break; }
            start_dchap_target "$LOGS/target-dchap-$kver.log" || { stop_target; target_ok=0; break; }
            boot_guest "$vmlinuz" "$initrd" "$console" "$results" "$LOGS/hostreq-$kver"
            target_alive_after=0
            target_alive && target_alive_after=1
            stop_target
            stop_dchap_target
            [[ $boot_status != not-ready ]] && break
            log "guest never reached 'harness ready' (attempt $attempt); console tail:"
            tail -n 30 "$console" >&2
            cp "$console" "$console.attempt$attempt"
        done

        # ---- 5. results --------------------------------------------------------------------------
        declare -A res=()
        while IFS= read -r line; do
            line=${line%$'\r'}
            [[ $line =~ ^RESULT\ ([^ ]+)\ (PASS|FAIL)(\ (.*))?$ ]] || continue
            res[${BASH_REMATCH[1]}]="${BASH_REMATCH[2]}${BASH_REMATCH[4]:+ ${BASH_REMATCH[4]}}"
        done < <(cat "$results" 2>/dev/null)
        ran=${#res[@]}
        why="guest stopped ($boot_status) before it reported"
        [[ $target_ok == 0 ]] && why="target did not start"
        lines=()
        for n in "${scenarios[@]}"; do lines+=("$n ${res[$n]:-FAIL no result: $why}"); done
        if [[ $ran -gt 0 ]]; then
            # Host side: the target survived the whole boot, and the guest's marker is in the LUN file.
            if [[ $target_alive_after == 1 ]]; then lines+=("target-alive PASS")
            else lines+=("target-alive FAIL target process exited during the run (log: $LOGS/target-$kver.log)"); fi
            hc=$(grep -a '^HOSTCHECK ' "$results" | tr -d '\r' | tail -n 1 || true)
            files=${GUEST_LUN_FILES:-$(eval "echo \"$lun_files_default\"")}
            if [[ -n $hc && -n $files ]]; then
                lun=$(sed -n 's/.* lun=\([0-9]*\).*/\1/p' <<< "$hc")
                off=$(sed -n 's/.* offset=\([0-9]*\).*/\1/p' <<< "$hc")
                marker=$(sed -n 's/.* marker=\([^ ]*\).*/\1/p' <<< "$hc")
                file=""
                for kv in $files; do [[ ${kv%%=*} == "$lun" ]] && file=${kv#*=}; done
                if [[ -z $file || ! -f $file ]]; then
                    lines+=("host-marker FAIL no backing file for LUN $lun (looked for '${file:-?}')")
                elif [[ $(dd if="$file" bs=512 skip=$((off / 512)) count=1 2>/dev/null | head -c ${#marker}) == "$marker" ]]; then
                    lines+=("host-marker PASS")
                else
                    lines+=("host-marker FAIL marker $marker not at offset $off of $file")
                fi
            fi
        fi
        k_pass=0 k_fail=0
        echo "== kernel $kver ($GUEST_TARGET target)"
        for l in "${lines[@]}"; do
            echo "RESULT $l"
            if [[ $l =~ ^[^\ ]+\ PASS(\ |$) ]]; then k_pass=$((k_pass + 1)); else k_fail=$((k_fail + 1)); fi
        done
        k_time=$((SECONDS - k_start))
        times="boot to ready ${ready_after:-?}s, guest ${guest_seconds:-?}s, kernel total ${k_time}s"
        echo "kernel $kver: $times; console log $console"
        if [[ $k_fail -gt 0 ]]; then
            echo "---- tail of $console"
            tail -n 60 "$console" | tr -d '\r' | sed 's/^/| /'
            echo "---- tail of target log $LOGS/target-$kver.log"
            tail -n 20 "$LOGS/target-$kver.log" 2>/dev/null | sed 's/^/| /' || true
            echo "----"
        fi
        echo "$k_pass passed, $k_fail failed"
        summary+=("$kver: $k_pass passed, $k_fail failed; $times")
        total_pass=$((total_pass + k_pass)); total_fail=$((total_fail + k_fail)); total_ran=$((total_ran + ran))
        unset res
    done

    echo "== summary ($GUEST_TARGET target, $((SECONDS - suite_start))s in all)"
    for s in "${summary[@]}"; do echo "  $s"; done
    echo "$total_pass passed, $total_fail failed"
    [[ $total_ran -gt 0 ]] || { log "no scenario ran"; exit 2; }
    [[ $total_fail == 0 ]] || exit 1
    exit 0
}

main "$@"
