// Backpressure against a peer that never reads its responses: a raw session sends a stream
// of 256 KiB READs and reads nothing back. The target must stop reading from that connection
// once the responses pile up, so its memory stays bounded (answering all of them would queue
// 500 MiB),
// while a libiscsi session next to it keeps writing and reading back correct data.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A SCSI Command PDU carrying READ(10) of `blocks` at `lba` on LUN `lun`.
func rawRead10(itt: UInt32, cmdSN: UInt32, expStatSN: UInt32, lun: UInt8, lba: UInt32, blocks: UInt16) -> [UInt8] {
    var h = [UInt8](repeating: 0, count: 48)
    h[0] = 0x01; h[1] = 0xC1  // F, R, simple
    h[9] = lun
    func put(_ value: UInt32, at i: Int) {
        h[i] = UInt8(value >> 24); h[i + 1] = UInt8((value >> 16) & 0xFF)
        h[i + 2] = UInt8((value >> 8) & 0xFF); h[i + 3] = UInt8(value & 0xFF)
    }
    put(itt, at: 16)
    put(UInt32(blocks) * 512, at: 20)
    put(cmdSN, at: 24)
    put(expStatSN, at: 28)
    h[32] = 0x28
    put(lba, at: 34)
    h[39] = UInt8(blocks >> 8); h[40] = UInt8(blocks & 0xFF)
    return rawPDU(h)
}

@Suite("Backpressure", .timeLimit(.minutes(3)))
struct BackpressureTests {
    @Test("A peer that never reads its responses is stopped; memory stays bounded and another session is served")
    func peerThatNeverReads() async throws {
        try await withTarget { target in
            let rssBefore = residentBytes()
            let commands = 2000  // 500 MiB of READ data if the target kept answering
            let hog = try await onThread("hog", deadline: 90) { check -> (fd: Int32, sent: Int, peakGrowth: Int) in
                let fd = try rawConnection(port: target.port, receiveTimeout: 5)
                check.expect(sendAll(fd, rawLogin(initiator: "iqn.2026-11.org.test:never-reads", target: integrationIQN,
                                                  isid: 11)))
                var login = [UInt8](repeating: 0, count: 48)
                check.expect(recv(fd, &login, 48, Int32(MSG_WAITALL)) == 48 && login[36] == 0, "raw login")
                let loginData = Int(login[5]) << 16 | Int(login[6]) << 8 | Int(login[7])
                var skip = [UInt8](repeating: 0, count: (loginData + 3) & ~3)
                if !skip.isEmpty { _ = recv(fd, &skip, skip.count, Int32(MSG_WAITALL)) }
                // From here on nothing is read. (2000 commands of 48 bytes fit in the socket
                // buffers, so the sends themselves need not stall; a send that cannot go on
                // for 2 s ends the stream.)
                var timeout = timeval(tv_sec: 2, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let statSN = UInt32(login[24]) << 24 | UInt32(login[25]) << 16 | UInt32(login[26]) << 8 | UInt32(login[27])
                var sent = 0
                var peak = 0
                while sent < commands {
                    let pdu = rawRead10(itt: UInt32(sent), cmdSN: UInt32(sent), expStatSN: statSN &+ 1, lun: 1,
                                        lba: UInt32(sent % 256) * 512, blocks: 512)
                    guard sendAll(fd, pdu) else { break }
                    sent += 1
                    if sent % 50 == 0 { peak = max(peak, residentBytes() - rssBefore) }
                }
                // Stalled (or all sent): hold the connection unread a little longer and watch memory.
                for _ in 0..<20 {
                    Thread.sleep(forTimeInterval: 0.1)
                    peak = max(peak, residentBytes() - rssBefore)
                }
                return (fd, sent, peak)
            }
            // The well-behaved session while the hog's connection stays open, unread.
            defer { close(hog.fd) }
            let pendingAfterHog = await target.server.pendingResponseBytes()
            let rounds = try await onThread("well-behaved session") { check -> Int in
                let client = try ISCSIClient(initiatorName: testInitiatorName + "-good")
                try client.login(portal: target.portal, target: integrationIQN, lun: 0)
                for round in 0..<50 {
                    let data = pattern(seed: UInt32(round + 1), count: 256 * 512)
                    try client.write10(lun: 0, lba: UInt32(round % 8) * 256, data: data)
                    check.expectBytes(try client.read10(lun: 0, lba: UInt32(round % 8) * 256, blocks: 256), data,
                                      "round \(round)")
                }
                try client.logout()
                return 50
            }
            print("backpressure: the peer that never reads sent \(hog.sent) of \(commands) READs of 256 KiB; "
                  + "peak RSS growth \(max(hog.peakGrowth, residentBytes() - rssBefore) >> 20) MiB; good session \(rounds) rounds of 128 KiB")
            let pending = max(pendingAfterHog, await target.server.pendingResponseBytes())
            print("backpressure: responses queued for the peer that never reads: \(pending >> 10) KiB")
            // The channel's high water mark (2 MiB) plus what was on its way when reading stopped
            // (at most 16 MiB from the pool, and the READs cut from the last bytes received).
            #expect(pending < 32 << 20, "\(pending >> 20) MiB of responses queued")
            // RSS (printed above) is the whole test process, with other suites running alongside
            // and, in the sanitizer stage, ASan's quarantine: the queued bytes are what is checked.
        }
    }
}
