// Several hostile connections for a bounded time (HOSTILE_SECONDS, default 15) next to a
// well-behaved libiscsi session: half of them log in properly and then send random and
// mutated PDUs (real opcodes, lying lengths, colliding task tags, random CDBs), the others
// send garbage from the first byte. The well-behaved session keeps writing and reading back
// its own data throughout; afterwards the target still serves a new session, and the
// process's resident memory has not grown without bound.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Resident set size of this process (the target runs in-process), in bytes.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

/// A PDU: 48-byte header (+ data segment, padded to 4 bytes).
func rawPDU(_ header: [UInt8], data: [UInt8] = []) -> [UInt8] {
    var h = header
    h[5] = UInt8((data.count >> 16) & 0xFF); h[6] = UInt8((data.count >> 8) & 0xFF); h[7] = UInt8(data.count & 0xFF)
    return h + data + [UInt8](repeating: 0, count: (4 - data.count % 4) % 4)
}

/// One login request (T=1, CSG=1 → NSG=3) with the keys a minimal initiator sends.
func rawLogin(initiator: String, target: String, isid: UInt8) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 48)
    h[0] = 0x43; h[1] = 0x87
    h[8] = 0x40; h[13] = isid  // ISID: random-qualifier format
    let keys = ["InitiatorName=\(initiator)", "TargetName=\(target)", "SessionType=Normal", "HeaderDigest=None",
                "DataDigest=None", "MaxRecvDataSegmentLength=8192", "InitialR2T=No", "ImmediateData=Yes"]
    return rawPDU(h, data: keys.flatMap { Array($0.utf8) + [0] })
}

func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { return false }
        sent += n
    }
    return true
}

/// Reads whatever is waiting without blocking; false once the target closed the connection.
func drain(_ fd: Int32) -> Bool {
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if n > 0 { continue }
        if n == 0 { return false }
        return errno == EAGAIN || errno == EWOULDBLOCK
    }
}

/// xorshift64* for the hostile traffic (seeded, so a failure can be replayed).
struct HostileRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}

/// A random full-feature PDU: a real initiator opcode, random fields, CmdSN near the window,
/// a data segment whose length field may lie.
func hostilePDU(_ r: inout HostileRandom, cmdSN: UInt32) -> [UInt8] {
    var h = (0..<48).map { _ in r.byte() }
    let opcodes: [UInt8] = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x10, 0x1D]
    h[0] = (r.below(2) == 0 ? 0x40 : 0) | opcodes[r.below(opcodes.count)]
    h[4] = r.below(10) == 0 ? UInt8(r.below(4)) : 0
    h[16] = 0; h[17] = 0; h[18] = 0; h[19] = UInt8(r.below(8))
    let sn = cmdSN &+ UInt32(r.below(40)) &- 8
    h[24] = UInt8(sn >> 24); h[25] = UInt8((sn >> 16) & 0xFF); h[26] = UInt8((sn >> 8) & 0xFF); h[27] = UInt8(sn & 0xFF)
    if h[0] & 0x3F == 0x01 {
        // Mostly real CDBs (READ/WRITE(10), INQUIRY, MODE SELECT, PROUT, XCOPY, ...) with random fields.
        let cdbOpcodes: [UInt8] = [0x28, 0x2A, 0x12, 0x15, 0x55, 0x5F, 0x83, 0x84, 0x35, 0x42, 0xA0, 0x9E, r.byte()]
        h[32] = cdbOpcodes[r.below(cdbOpcodes.count)]
    }
    if h[0] & 0x3F == 0x01 || h[0] & 0x3F == 0x02 {
        // LUN 1: the well-behaved session works on LUN 0. A logged-in initiator may
        // legitimately reset the target or reserve a LUN, which would disturb any other
        // session by design (ACLs keep strangers out), so task management stays with
        // ABORT TASK / ABORT TASK SET.
        h[8] = 0; h[9] = 1
        h[10] = 0; h[11] = 0; h[12] = 0; h[13] = 0; h[14] = 0; h[15] = 0
        if h[0] & 0x3F == 0x02 { h[1] = 0x80 | UInt8(1 + r.below(2)) }
    }
    let length = [0, 0, 24, 512, 4096, 8192, r.below(9000)][r.below(7)]
    var pdu = rawPDU(h, data: (0..<length).map { _ in r.byte() })
    if r.below(8) == 0 {  // the length field lies
        pdu[5] = r.byte() & 0x01; pdu[6] = r.byte(); pdu[7] = r.byte()
    }
    return pdu
}

@Suite("Hostile connections next to a well-behaved session", .timeLimit(.minutes(5)))
struct HostileConnectionsTests {
    static var seconds: Double { Double(ProcessInfo.processInfo.environment["HOSTILE_SECONDS"] ?? "") ?? 15 }

    @Test("Random and mutated PDUs from 6 connections leave a concurrent libiscsi session correct; memory bounded")
    func hostileConnections() async throws {
        let duration = Self.seconds
        try await withTarget { target in
            let port = target.port
            let rssBefore = residentBytes()
            let stop = NSLock()
            nonisolated(unsafe) var stopped = false
            let isStopped: @Sendable () -> Bool = { stop.withLock { stopped } }
            nonisolated(unsafe) var hostileStats = [Int](repeating: 0, count: 6)
            let statsLock = NSLock()
            var workers: [Thread] = []
            for w in 0..<6 {
                let thread = Thread {
                    var r = HostileRandom(state: 0x5EED_0000 + UInt64(w) * 7919)
                    var pdus = 0
                    while !isStopped() {
                        guard let fd = try? rawConnection(port: port, receiveTimeout: 1) else { continue }
                        var alive = true
                        if w % 2 == 0 {
                            alive = sendAll(fd, rawLogin(initiator: "iqn.2026-11.org.hostile:w\(w)", target: integrationIQN,
                                                         isid: UInt8(w)))
                            var response = [UInt8](repeating: 0, count: 48)
                            alive = alive && recv(fd, &response, 48, Int32(MSG_WAITALL)) == 48 && response[36] == 0
                            _ = drain(fd)
                        }
                        var cmdSN: UInt32 = 0
                        for _ in 0..<(200 + r.below(800)) where alive && !isStopped() {
                            let pdu = w % 2 == 0 ? hostilePDU(&r, cmdSN: cmdSN) : (0..<(1 + r.below(600))).map { _ in r.byte() }
                            alive = sendAll(fd, pdu) && drain(fd)
                            cmdSN &+= 1
                            pdus += 1
                        }
                        close(fd)
                    }
                    statsLock.withLock { hostileStats[w] = pdus }
                }
                thread.start()
                workers.append(thread)
            }
            // The well-behaved session, for the whole duration.
            let rounds = try await onThread("well-behaved session", deadline: duration + 60) { check in
                let client = try ISCSIClient(initiatorName: testInitiatorName + "-good")
                try client.login(portal: target.portal, target: integrationIQN, lun: 0)
                let end = Date().addingTimeInterval(duration)
                var round = 0
                while Date() < end {
                    let lba = UInt32(100_000 + (round % 64) * 64)
                    let data = pattern(seed: UInt32(round + 1), count: 64 * 512)
                    try client.write10(lun: 0, lba: lba, data: data)
                    check.expectBytes(try client.read10(lun: 0, lba: lba, blocks: 64), data, "round \(round)")
                    round += 1
                }
                try client.logout()
                return round
            }
            stop.withLock { stopped = true }
            while workers.contains(where: { $0.isExecuting }) { try await Task.sleep(nanoseconds: 50_000_000) }
            let total = statsLock.withLock { hostileStats.reduce(0, +) }
            // Afterwards a new session works.
            try await onThread("after") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN, lun: 0)
                check.expectEqual(try client.reportLUNs(), [0, 1])
                try client.logout()
            }
            let growth = residentBytes() - rssBefore
            print("hostile: \(total) PDUs/garbage chunks from 6 connections in \(duration) s; "
                  + "good session \(rounds) write+read rounds of 32 KiB; RSS growth \(growth >> 20) MiB")
            #expect(rounds > 10, "the well-behaved session made \(rounds) rounds")
            // At least 10 per second: plain builds send thousands, ThreadSanitizer's about 30.
            #expect(total >= Int(duration * 10), "hostile traffic: \(total) in \(duration) s")
            #expect(growth < 512 << 20, "RSS grew by \(growth >> 20) MiB")
        }
    }
}
