# shellcheck shell=bash
# Starting and stopping the target under test on the host loopback. Sourced by run.sh.
#
# The target command (GUEST_TARGET_CMD, run with bash -c in its own process group, in the
# foreground until killed) sees GUEST_PORT, GUEST_ADVERTISE, GUEST_STATE_DIR, GUEST_CONFIG and
# GUEST_TARGET_BIN in its environment.

target_pid=""

# free_port FROM : first port >= FROM on 127.0.0.1 that nothing accepts connections on.
free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_target LOGFILE : start GUEST_TARGET_CMD and wait until GUEST_PORT accepts connections.
start_target() {
    local logfile=$1 i
    rm -rf "$GUEST_STATE_DIR" && mkdir -p "$GUEST_STATE_DIR"
    export GUEST_PORT GUEST_ADVERTISE GUEST_STATE_DIR GUEST_CONFIG GUEST_TARGET_BIN
    log "starting target on 127.0.0.1:$GUEST_PORT: $GUEST_TARGET_CMD"
    setsid bash -c "$GUEST_TARGET_CMD" > "$logfile" 2>&1 < /dev/null &
    target_pid=$!
    for ((i = 0; i < 600; i++)); do
        port_open "$GUEST_PORT" && { sleep 0.5; return 0; }
        if ! kill -0 "$target_pid" 2>/dev/null; then
            log "target exited before accepting connections; its log:"
            tail -n 30 "$logfile" >&2
            target_pid=""
            return 1
        fi
        sleep 0.1
    done
    log "target did not accept connections on port $GUEST_PORT within 60 s"
    stop_target
    return 1
}

# The second process (GUEST_DCHAP_CONFIG on GUEST_DCHAP_PORT): the same binary, its own state.
start_dchap_target() {
    local logfile=$1 i
    [[ -n ${GUEST_DCHAP_PORT:-} ]] || return 0
    local state=$GUEST_STATE_DIR-dchap
    rm -rf "$state" && mkdir -p "$state"
    log "starting the discovery-CHAP target on 127.0.0.1:$GUEST_DCHAP_PORT ($GUEST_DCHAP_CONFIG)"
    setsid "$GUEST_TARGET_BIN" serve --config "$GUEST_DCHAP_CONFIG" --listen "127.0.0.1:$GUEST_DCHAP_PORT" \
        --advertise "10.0.2.2:$GUEST_DCHAP_PORT" --state-dir "$state" > "$logfile" 2>&1 < /dev/null &
    dchap_pid=$!
    for ((i = 0; i < 600; i++)); do
        port_open "$GUEST_DCHAP_PORT" && return 0
        if ! kill -0 "$dchap_pid" 2>/dev/null; then
            log "the discovery-CHAP target exited before accepting connections; its log:"
            tail -n 30 "$logfile" >&2
            dchap_pid=""
            return 1
        fi
        sleep 0.1
    done
    log "the discovery-CHAP target did not accept connections on port $GUEST_DCHAP_PORT within 60 s"
    stop_dchap_target
    return 1
}

stop_dchap_target() {
    [[ -n ${dchap_pid:-} ]] || return 0
    kill -TERM -- "-$dchap_pid" 2>/dev/null || kill -TERM "$dchap_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dchap_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$dchap_pid" 2>/dev/null || true
    wait "$dchap_pid" 2>/dev/null || true
    dchap_pid=""
}

target_alive() { [[ -n $target_pid ]] && kill -0 "$target_pid" 2>/dev/null; }

stop_target() {
    [[ -n $target_pid ]] || return 0
    kill -TERM -- "-$target_pid" 2>/dev/null || kill -TERM "$target_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$target_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$target_pid" 2>/dev/null || true
    wait "$target_pid" 2>/dev/null || true
    target_pid=""
}

# Defaults for the project's own target (Targets/default.toml): IQN, LUNs and backing files.
config_iqn() { grep -m 1 -o 'name = "iqn[^"]*"' "$1" | cut -d'"' -f2; }
# config_lun_files CONFIG STATEDIR : "LUN=PATH ..." from the [[target.lun]] tables of the first target.
config_lun_files() {
    awk -v dir="$2" '
        /^[[:space:]]*\[\[target\]\]/ { t++ }
        t > 1 { next }
        /^[[:space:]]*number[[:space:]]*=/ { split($0, a, "="); gsub(/[[:space:]]/, "", a[2]); n = a[2] }
        /^[[:space:]]*file[[:space:]]*=/   { split($0, a, "\""); printf "%s=%s/%s ", n, dir, a[2] }
    ' "$1"
}
config_luns() { config_lun_files "$1" /x | tr ' ' '\n' | cut -d= -f1 | grep . | paste -sd, -; }
