#!/usr/bin/env python3
"""TCP relay between the guest and an iSCSI target that can inject the harness self-test fault.

    fault-proxy.py LISTEN_PORT UPSTREAM_PORT [drop-last-data-in]

Relays 127.0.0.1:LISTEN_PORT <-> 127.0.0.1:UPSTREAM_PORT. With "drop-last-data-in" it mimics the
project's ISCSI_TARGET_FAULT of that name for targets that lack it (tgt): the Data-In PDU that
ends a READ whose expected data transfer length exceeds 64 KiB is not forwarded. PDUs are framed
from the 48-byte header (AHS and data segment lengths, padding); digests must be off (the
initiator's default). Used by lib/tgt-target.sh when ISCSI_TARGET_FAULT is set.
"""
import socket
import sys
import threading

BHS = 48


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_pdu(sock):
    bhs = read_exact(sock, BHS)
    ahs_len = bhs[4] * 4
    data_len = int.from_bytes(bhs[5:8], "big")
    rest = read_exact(sock, ahs_len + ((data_len + 3) & ~3))
    return bhs, rest


class Connection:
    def __init__(self, client, upstream, fault):
        self.client, self.upstream, self.fault = client, upstream, fault
        self.read_lengths = {}  # ITT -> expected data transfer length of READ commands

    def initiator_to_target(self):
        while True:
            bhs, rest = read_pdu(self.client)
            if bhs[0] & 0x3F == 0x01 and bhs[1] & 0x40:  # SCSI Command with R bit
                self.read_lengths[bhs[16:20]] = int.from_bytes(bhs[20:24], "big")
            self.upstream.sendall(bhs + rest)

    def target_to_initiator(self):
        while True:
            bhs, rest = read_pdu(self.upstream)
            if self.fault and bhs[0] & 0x3F == 0x25:  # SCSI Data-In
                edtl = self.read_lengths.get(bhs[16:20], 0)
                end = int.from_bytes(bhs[40:44], "big") + int.from_bytes(bhs[5:8], "big")
                if edtl > 65536 and end >= edtl:
                    print(f"fault-proxy: dropped last Data-In itt={bhs[16:20].hex()} edtl={edtl}",
                          flush=True)
                    continue
            self.client.sendall(bhs + rest)

    def pump(self, direction):
        try:
            direction()
        except (EOFError, OSError):
            pass
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    fault = len(sys.argv) > 3 and sys.argv[3] == "drop-last-data-in"
    server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
    print(f"fault-proxy: 127.0.0.1:{listen_port} -> 127.0.0.1:{upstream_port} fault={fault}", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(client, upstream, fault)
        threading.Thread(target=conn.pump, args=(conn.initiator_to_target,), daemon=True).start()
        threading.Thread(target=conn.pump, args=(conn.target_to_initiator,), daemon=True).start()


if __name__ == "__main__":
    main()
