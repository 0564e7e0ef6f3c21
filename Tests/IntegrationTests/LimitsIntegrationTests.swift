// Resource limits ([server] max_sessions, max_connections_per_address, login_timeout): the
// client over the limit gets login status 03/02 (libiscsi: "Out of resources(770)") or, for a
// stalled login, a closed connection; sessions already running are unaffected.

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
}
