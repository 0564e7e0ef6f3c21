#!/usr/bin/env bash
# Runs tgt (the Linux SCSI target framework, Debian package "tgt") as a stand-in target for the
# guest suite, in the foreground until killed:
#   GUEST_PORT=3262 GUEST_STATE_DIR=/tmp/x GUEST_TGT_IQN=iqn... lib/tgt-target.sh
# Two 1 GiB sparse file LUNs 1 and 2 (tgt's LUN 0 is its controller). tgt advertises its own
# listening address in SendTargets, so the suite creates the node statically for tgt.
# run.sh uses it when GUEST_TARGET=tgt. With ISCSI_TARGET_FAULT set (the self-test), tgt listens
# on an internal port behind lib/fault-proxy.py, which injects that fault.
set -euo pipefail
: "${GUEST_PORT:?}" "${GUEST_STATE_DIR:?}" "${GUEST_TGT_IQN:=iqn.2024-01.org.guest-suite:tgt}"
control_port=$((GUEST_PORT + 1000))      # tgtd's management socket; one per instance
tgt_port=$GUEST_PORT
proxy_pid=""
mkdir -p "$GUEST_STATE_DIR"
if [[ -n ${ISCSI_TARGET_FAULT:-} ]]; then
    tgt_port=$((GUEST_PORT + 2000))
    python3 "$(dirname "$0")/fault-proxy.py" "$GUEST_PORT" "$tgt_port" "$ISCSI_TARGET_FAULT" &
    proxy_pid=$!
fi
tgtd -f -C "$control_port" --iscsi "portal=127.0.0.1:$tgt_port" &
tgtd_pid=$!
trap 'kill $tgtd_pid $proxy_pid 2>/dev/null; sleep 1; kill -9 $tgtd_pid $proxy_pid 2>/dev/null; exit 0' TERM INT EXIT
adm() { tgtadm -C "$control_port" --lld iscsi "$@"; }
for _ in $(seq 50); do adm --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
adm --op new --mode target --tid 1 -T "$GUEST_TGT_IQN"
for lun in 1 2; do
    truncate -s 1G "$GUEST_STATE_DIR/tgt-lun$lun.img"
    adm --op new --mode logicalunit --tid 1 --lun "$lun" -b "$GUEST_STATE_DIR/tgt-lun$lun.img"
done
adm --op bind --mode target --tid 1 -I ALL
echo "tgt-target: serving $GUEST_TGT_IQN on 127.0.0.1:$GUEST_PORT"
wait "$tgtd_pid"
