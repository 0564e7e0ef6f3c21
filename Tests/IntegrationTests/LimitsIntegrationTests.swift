// Resource limits ([server] max_sessions, max_connections_per_address, login_timeout,
// max_unsolicited_bytes): the client over the limit gets login status 03/02 (libiscsi: "Out of
// resources(770)"), for a stalled login a closed connection, for unsolicited write data beyond
// the budget TASK SET FULL; sessions already running are unaffected.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

func limitsDefinition(_ serverKeys: String) -> String {
    """
    [server]
    \(serverKeys)

    [[target]]
    name = "\(integrationIQN)"
      [[target.lun]]
      number = 0
      file = "limits.img"
      size = "4MiB"
    """
}

func outOfResources(_ body: () throws -> Void) -> Bool {
    do {
        try body()
        return false
    } catch {
        return "\(error)".contains("(770)")
    }
}

/// A plain TCP connection to 127.0.0.1:`port` (blocking socket, receive timeout `seconds`).
func rawConnection(port: Int, receiveTimeout seconds: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw ISCSIClientError(kind: .library, operation: "socket", message: "errno \(errno)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw ISCSIClientError(kind: .library, operation: "connect", message: "errno \(errno)")
    }
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

@Suite("Resource limits", .timeLimit(.minutes(2)))
struct LimitsIntegrationTests {
    @Test("max_sessions: the session over the limit gets 03/02, the others keep working")
    func maximumSessions() async throws {
        try await withTarget(toml: limitsDefinition("max_sessions = 2")) { target in
            try await onThread("max sessions") { check in
                let a = try ISCSIClient(initiatorName: testInitiatorName + "-a")
                try a.login(portal: target.portal, target: integrationIQN)
                let b = try ISCSIClient(initiatorName: testInitiatorName + "-b")
                try b.login(portal: target.portal, target: integrationIQN)
                check.expect(outOfResources {
                    try ISCSIClient(initiatorName: testInitiatorName + "-c").login(portal: target.portal, target: integrationIQN)
                }, "third session must be refused with 03/02")
                try a.write10(lun: 0, lba: 0, data: pattern(seed: 1, count: 512))
                check.expectBytes(try b.read10(lun: 0, lba: 0, blocks: 1), pattern(seed: 1, count: 512), "sessions unaffected")
                try b.logout()
                let c = try ISCSIClient(initiatorName: testInitiatorName + "-c")
                try c.login(portal: target.portal, target: integrationIQN)
                try c.logout()
                try a.logout()
            }
        }
    }

    @Test("max_connections_per_address: the connection over the limit gets 03/02")
    func connectionsPerAddress() async throws {
        try await withTarget(toml: limitsDefinition("max_connections_per_address = 1")) { target in
            try await onThread("per address") { check in
                let a = try ISCSIClient()
                try a.login(portal: target.portal, target: integrationIQN)
                check.expect(outOfResources {
                    try ISCSIClient(initiatorName: testInitiatorName + "-b").login(portal: target.portal, target: integrationIQN)
                }, "second connection from 127.0.0.1 must be refused with 03/02")
                try a.testUnitReady(lun: 0)
                try a.logout()
                // The slot is free again once the first connection has closed.
                var loggedIn = false
                for _ in 0..<50 where !loggedIn {
                    do {
                        let b = try ISCSIClient(initiatorName: testInitiatorName + "-b")
                        try b.login(portal: target.portal, target: integrationIQN)
                        try b.logout()
                        loggedIn = true
                    } catch {
                        Thread.sleep(forTimeInterval: 0.1)
                    }
                }
                check.expect(loggedIn, "login after the first connection closed")
            }
        }
    }

    @Test("login_timeout: a connection that never logs in is closed")
    func loginTimeout() async throws {
        try await withTarget(toml: limitsDefinition("login_timeout = 1")) { target in
            try await onThread("login timeout") { check in
                let fd = try rawConnection(port: target.port, receiveTimeout: 5)
                defer { close(fd) }
                let start = Date()
                var byte: UInt8 = 0
                let n = recv(fd, &byte, 1, 0)
                let elapsed = Date().timeIntervalSince(start)
                check.expect(n == 0, "the target must close the idle connection (recv returned \(n), errno \(errno))")
                check.expect(elapsed > 0.5 && elapsed < 4, "closed after \(elapsed) s, login_timeout is 1 s")
                // A normal login is unaffected.
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                try client.logout()
            }
        }
    }

    @Test("max_unsolicited_bytes: writes beyond the budget get TASK SET FULL; another session's writes go on")
    func unsolicitedBudget() async throws {
        try await withTarget(toml: limitsDefinition("max_unsolicited_bytes = \"1MiB\"")) { target in
            try await onThread("unsolicited budget") { check in
                // A raw session (InitialR2T=No, FirstBurstLength 64 KiB by default) sends 40 WRITE(10)s
                // of 64 KiB with 8 KiB of immediate data each and never the rest: each may make the
                // target hold 64 KiB, so 16 fit in 1 MiB and the other 24 are refused.
                let fd = try rawConnection(port: target.port, receiveTimeout: 5)
                check.expect(sendAll(fd, rawLogin(initiator: "iqn.2026-11.org.test:hog", target: integrationIQN, isid: 9)))
                var login = [UInt8](repeating: 0, count: 48)
                check.expect(recv(fd, &login, 48, Int32(MSG_WAITALL)) == 48 && login[36] == 0, "raw login")
                let loginData = Int(login[5]) << 16 | Int(login[6]) << 8 | Int(login[7])
                var skip = [UInt8](repeating: 0, count: (loginData + 3) & ~3)
                if !skip.isEmpty { _ = recv(fd, &skip, skip.count, Int32(MSG_WAITALL)) }
                let statSN = UInt32(login[24]) << 24 | UInt32(login[25]) << 16 | UInt32(login[26]) << 8 | UInt32(login[27])
                for i in 0..<40 {
                    var h = [UInt8](repeating: 0, count: 48)
                    h[0] = 0x01; h[1] = 0xA1  // SCSI Command, F, W, simple
                    h[16] = 0; h[17] = 0; h[18] = 0x10; h[19] = UInt8(i)  // ITT
                    h[20] = 0; h[21] = 0x01; h[22] = 0; h[23] = 0  // EDTL 65536
                    let cmdSN = UInt32(i)
                    h[24] = UInt8(cmdSN >> 24); h[25] = UInt8((cmdSN >> 16) & 0xFF); h[26] = UInt8((cmdSN >> 8) & 0xFF); h[27] = UInt8(cmdSN & 0xFF)
                    h[28] = UInt8((statSN &+ 1) >> 24); h[29] = UInt8(((statSN &+ 1) >> 16) & 0xFF)
                    h[30] = UInt8(((statSN &+ 1) >> 8) & 0xFF); h[31] = UInt8((statSN &+ 1) & 0xFF)
                    // WRITE(10) of 128 blocks at LBA i*128
                    h[32] = 0x2A; h[36] = UInt8((i * 128) >> 8); h[37] = UInt8((i * 128) & 0xFF); h[40] = 0x80
                    check.expect(sendAll(fd, rawPDU(h, data: [UInt8](repeating: UInt8(i), count: 8192))), "send \(i)")
                }
                var refused: [UInt8] = []
                var header = [UInt8](repeating: 0, count: 48)
                while refused.count < 24, recv(fd, &header, 48, Int32(MSG_WAITALL)) == 48 {
                    let length = Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
                    var data = [UInt8](repeating: 0, count: (length + 3) & ~3)
                    if !data.isEmpty { _ = recv(fd, &data, data.count, Int32(MSG_WAITALL)) }
                    if header[0] & 0x3F == 0x21 { refused.append(header[3]) }  // SCSI Response: its status
                }
                check.expectEqual(refused, [UInt8](repeating: 0x28, count: 24))
                check.expectEqual(target.server.unsolicitedBytesHeld, 16 * 65536)
                // Another session is not starved: it holds nothing, so its write is always taken.
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                for round in 0..<8 {
                    let data = pattern(seed: UInt32(round + 7), count: 128 * 512)
                    try client.write10(lun: 0, lba: 4096, data: data)
                    check.expectBytes(try client.read10(lun: 0, lba: 4096, blocks: 128), data, "round \(round)")
                }
                try client.logout()
                // The budget is given back when the hog's connection goes away.
                close(fd)
                var held = target.server.unsolicitedBytesHeld
                for _ in 0..<50 where held != 0 {
                    Thread.sleep(forTimeInterval: 0.1)
                    held = target.server.unsolicitedBytesHeld
                }
                check.expectEqual(held, 0)
            }
        }
    }
}
