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

# wait_listening PID PORT LOGFILE WHAT : wait until PORT accepts connections while PID runs;
# on failure the process is stopped (its log tail shown) and the status is 1.
wait_listening() {
    local pid=$1 port=$2 logfile=$3 what=$4 i
    for ((i = 0; i < 600; i++)); do
        port_open "$port" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$what exited before accepting connections; its log:"
            tail -n 30 "$logfile" >&2
            return 1
        fi
        sleep 0.1
    done
    log "$what did not accept connections on port $port within 60 s"
    stop_pid "$pid"
    return 1
}

# stop_pid PID : TERM to its process group, KILL after 5 s.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_target LOGFILE : start GUEST_TARGET_CMD and wait until GUEST_PORT accepts connections.
start_target() {
    local logfile=$1
    rm -rf "$GUEST_STATE_DIR" && mkdir -p "$GUEST_STATE_DIR"
    export GUEST_PORT GUEST_ADVERTISE GUEST_STATE_DIR GUEST_CONFIG GUEST_TARGET_BIN
    log "starting target on 127.0.0.1:$GUEST_PORT: $GUEST_TARGET_CMD"
    setsid bash -c "$GUEST_TARGET_CMD" > "$logfile" 2>&1 < /dev/null &
    target_pid=$!
    wait_listening "$target_pid" "$GUEST_PORT" "$logfile" target || { target_pid=""; return 1; }
    sleep 0.5
}

target_alive() { [[ -n $target_pid ]] && kill -0 "$target_pid" 2>/dev/null; }

stop_target() { stop_pid "$target_pid"; target_pid=""; }

# The second process (GUEST_DCHAP_CONFIG on GUEST_DCHAP_PORT): the same binary, its own state.
start_dchap_target() {
    local logfile=$1 state=$GUEST_STATE_DIR-dchap
    [[ -n ${GUEST_DCHAP_PORT:-} ]] || return 0
    rm -rf "$state" && mkdir -p "$state"
    log "starting the discovery-CHAP target on 127.0.0.1:$GUEST_DCHAP_PORT ($GUEST_DCHAP_CONFIG)"
    setsid "$GUEST_TARGET_BIN" serve --config "$GUEST_DCHAP_CONFIG" --listen "127.0.0.1:$GUEST_DCHAP_PORT" \
        --advertise "10.0.2.2:$GUEST_DCHAP_PORT" --state-dir "$state" > "$logfile" 2>&1 < /dev/null &
    dchap_pid=$!
    wait_listening "$dchap_pid" "$GUEST_DCHAP_PORT" "$logfile" "the discovery-CHAP target" || { dchap_pid=""; return 1; }
}

stop_dchap_target() { stop_pid "${dchap_pid:-}"; dchap_pid=""; }

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
