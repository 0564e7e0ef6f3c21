#!/usr/bin/env python3
"""Seed corpora for Sources/iscsi-fuzz from the decoded captures of real traffic
(../shared/reference/captures/*.log, Linux open-iscsi against a reference target).

    python3 Tests/Fuzz/make-seeds.py CAPTURE_DIR OUT_DIR

pdu:    the initiator's PDUs of each capture connection re-encoded into one byte stream
        (Login, Text, SCSI Command with CDB and immediate data, Data-Out, NOP-Out, Logout),
        in chunks of 40 PDUs; data segments are filled with a pattern (the capture keeps
        lengths, not payloads).
text:   the key=value text of each Login/Text Request.
cdb:    every distinct CDB sent.
params: hand-made minimal parameter lists (MODE SELECT header, PROUT REGISTER, EXTENDED COPY
        and token headers, UNMAP) — the captures carry none.
"""
import ast, os, re, struct, sys

def fields(line):
    return dict(re.findall(r'(\w+)=(\S+)', line))

def header(opcode, immediate, flags, dlen, itt, lun=0, w20=0, w24=0, w28=0, rest=b''):
    h = bytearray(48)
    h[0] = opcode | (0x40 if immediate else 0)
    h[1] = flags
    h[5:8] = dlen.to_bytes(3, 'big')
    h[8:16] = lun.to_bytes(8, 'big')
    h[16:20] = itt.to_bytes(4, 'big')
    h[20:24] = w20.to_bytes(4, 'big')
    h[24:28] = w24.to_bytes(4, 'big')
    h[28:32] = w28.to_bytes(4, 'big')
    h[32:32 + len(rest)] = rest
    return bytes(h)

def pad(data):
    return data + b'\0' * (-len(data) % 4)

def keys_of(line):
    m = re.search(r'keys=(\[.*\])', line)
    return b''.join(k + b'\0' for k in ast.literal_eval(m.group(1))) if m else b''

def encode(line):
    f = fields(line)
    kind = line.split()[2]
    immediate = ' I ' in line
    flags = int(f.get('flags', '0'), 16)
    itt = int(f.get('itt', '0'), 16)
    dlen = min(int(f.get('dlen', '0')), 256)  # payloads are not in the capture; keep seeds small
    if kind == 'Login-Req':
        text = keys_of(line)
        isid = bytes.fromhex(f['isid'])
        h = bytearray(header(0x03, True, flags, len(text), itt))
        h[8:14] = isid
        h[24:28] = int(f['cmdsn']).to_bytes(4, 'big')
        return bytes(h) + pad(text), text
    if kind == 'Text-Req':
        text = keys_of(line)
        return header(0x04, immediate, flags, len(text), itt, w20=0xFFFFFFFF) + pad(text), text
    if kind == 'SCSI-Cmd':
        cdb = bytes.fromhex(f['cdb'])
        data = bytes((i * 7) & 0xFF for i in range(dlen))
        h = header(0x01, immediate, flags, dlen, itt, lun=int(f['lun'], 16), w20=int(f['edtl']),
                   w24=int(f['cmdsn']), w28=int(f['expstatsn']), rest=cdb.ljust(16, b'\0'))
        return h + pad(data), cdb
    if kind == 'Data-Out':
        data = bytes((i * 13) & 0xFF for i in range(dlen))
        h = bytearray(header(0x05, False, flags, dlen, itt, w20=int(f['ttt'], 16)))
        h[36:40] = int(f['datasn']).to_bytes(4, 'big')
        h[40:44] = int(f['off']).to_bytes(4, 'big')
        return bytes(h) + pad(data), None
    if kind == 'NOP-Out':
        return header(0x00, immediate, flags, 0, itt, w20=int(f['ttt'], 16), w24=int(f['sn']), w28=int(f['exp'])), None
    if kind == 'Logout-Req':
        return header(0x06, immediate, flags, 0, itt), None
    return None, None

def main(captures, out):
    for target in ('pdu', 'text', 'cdb', 'params'):
        os.makedirs(os.path.join(out, target), exist_ok=True)
    cdbs = set()
    for name in sorted(os.listdir(captures)):
        if not name.endswith('.log'):
            continue
        streams = {}
        for line in open(os.path.join(captures, name)):
            m = re.match(r'\[(\d+)\] I->T ', line)
            if not m:
                continue
            pdu, extra = encode(line)
            if pdu is None:
                continue
            streams.setdefault(m.group(1), []).append(pdu)
            kind = line.split()[2]
            if kind in ('Login-Req', 'Text-Req') and extra:
                # byte 0: CSG 1 -> NSG 3, T=1 for the login target's flags byte
                with open(os.path.join(out, 'text', f'{name[:-4]}-{len(os.listdir(os.path.join(out, "text")))}'), 'wb') as fh:
                    fh.write(bytes([0x1D]) + extra)
            if kind == 'SCSI-Cmd':
                cdbs.add(extra)
        for conn, pdus in streams.items():
            chunks = [pdus[i:i + 16] for i in range(0, len(pdus), 16)]
            step = max(1, len(chunks) // 8)  # at most ~8 streams per connection, spread over it
            for i in range(0, len(chunks), step):
                with open(os.path.join(out, 'pdu', f'{name[:-4]}-c{conn}-{i:03d}'), 'wb') as fh:
                    fh.write(bytes([0x00]) + b''.join(chunks[i]))
    # One CDB per (opcode, byte 1, byte 2): the captures repeat READ/WRITE with other LBAs.
    distinct = {}
    for cdb in sorted(cdbs):
        distinct.setdefault(cdb[:3], cdb)
    for i, cdb in enumerate(distinct.values()):
        cdb = cdb.rstrip(b'\0') or cdb[:1]
        length = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(cdb[0] >> 5, 16)
        with open(os.path.join(out, 'cdb', f'cdb-{i:03d}'), 'wb') as fh:
            fh.write(bytes([length - 6]) + cdb.ljust(length, b'\0')[:length])
    params = {
        'mode-select-caching': bytes([0]) + bytes([0x00, 0, 0, 0]) + bytes([0x08, 0x12, 0x04]) + bytes(17),
        'prout-register': bytes([0]) + bytes(8) + bytes.fromhex('000000000000abcd') + bytes(8),
        'xcopy-lid1-empty': bytes([3]) + bytes(16),
        'xcopy-lid4-empty': bytes([4]) + bytes(32),
        'populate-token': bytes([5]) + struct.pack('>H', 30) + bytes(14) + struct.pack('>H', 16) + struct.pack('>QI', 0, 8) + bytes(4),
        'unmap-one': bytes([7]) + struct.pack('>HH', 22, 16) + bytes(4) + struct.pack('>QI', 0, 8) + bytes(4),
    }
    for name, data in params.items():
        with open(os.path.join(out, 'params', name), 'wb') as fh:
            fh.write(data)

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
