// Durability across `kill -9`: the target binary runs as its own process; libiscsi writes with
// FUA and with SYNCHRONIZE CACHE, the process is killed with SIGKILL while writes are still
// being issued, and after a restart over the same state directory every write that was
// acknowledged as durable (a FUA write's GOOD, or any write followed by a GOOD SYNCHRONIZE
// CACHE) reads back intact. Repeated over several rounds; earlier rounds are re-checked each time.

import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The `iscsi-target` executable next to the test bundle (swift build --build-tests builds it).
func targetBinary() throws -> String {
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var directory = runner.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("iscsi-target").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    throw ISCSIClientError(kind: .library, operation: "targetBinary",
                           message: "no iscsi-target executable near \(runner.path): run `swift build` first")
}

/// A port nothing listens on right now (bound and released).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Starts `iscsi-target serve` and waits until its portal accepts connections.
func startTargetProcess(binary: String, config: String, port: Int, stateDirectory: String, log: String) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = ["serve", "--config", config, "--listen", "127.0.0.1:\(port)", "--state-dir", stateDirectory]
    FileManager.default.createFile(atPath: log, contents: nil)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    handle.seekToEndOfFile()
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    for _ in 0..<300 {
        if let fd = try? rawConnection(port: port, receiveTimeout: 1) {
            close(fd)
            return process
        }
        guard process.isRunning else { break }
        Thread.sleep(forTimeInterval: 0.05)
    }
    process.terminate()
    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    throw ISCSIClientError(kind: .library, operation: "start target", message: "portal never opened; log:\n\(text)")
}

@Suite("Durability across kill -9", .timeLimit(.minutes(3)))
struct DurabilityTests {
    static let blocksPerWrite = 8
    static let writesPerRound = 40

    @Test("Writes acknowledged after FUA or SYNCHRONIZE CACHE survive kill -9 and a restart (4 rounds)")
    func killNine() async throws {
        let binary = try targetBinary()
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/durability.toml"
        try """
        [[target]]
        name = "\(integrationIQN)"
          [[target.lun]]
          number = 0
          file = "durable.img"
          size = "64MiB"
          cache = "write-back"
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let log = directory + "/target.log"
        var durable: [(lba: UInt32, seed: UInt32)] = []
        for round in 0..<4 {
            let port = try freePort()
            let process = try startTargetProcess(binary: binary, config: config, port: port, stateDirectory: directory, log: log)
            let portal = "127.0.0.1:\(port)"
            let before = durable
            let acknowledged: [(lba: UInt32, seed: UInt32)] = try await onThread("round \(round)") { check in
                let client = try ISCSIClient()
                try client.login(portal: portal, target: integrationIQN)
                // Everything acknowledged as durable in earlier rounds is there.
                for (lba, seed) in before {
                    check.expectBytes(try client.read10(lun: 0, lba: lba, blocks: Self.blocksPerWrite),
                                      pattern(seed: seed, count: Self.blocksPerWrite * 512), "round \(round): LBA \(lba)")
                }
                var done: [(lba: UInt32, seed: UInt32)] = []
                var unsynced: [(lba: UInt32, seed: UInt32)] = []
                // The killer fires while writes are being issued.
                let killAt = Self.writesPerRound / 2 + round * 3
                for i in 0..<Self.writesPerRound {
                    let lba = UInt32((round * Self.writesPerRound + i) * Self.blocksPerWrite)
                    let seed = UInt32(round * 1000 + i + 1)
                    if i == killAt {
                        kill(process.processIdentifier, SIGKILL)
                    }
                    do {
                        let fua = i % 2 == 0
                        try client.write10(lun: 0, lba: lba, data: pattern(seed: seed, count: Self.blocksPerWrite * 512), fua: fua)
                        if fua {
                            done.append((lba, seed))
                        } else {
                            unsynced.append((lba, seed))
                            if unsynced.count == 3 {
                                _ = try client.scsiCommand(lun: 0, cdb: [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                                done += unsynced
                                unsynced = []
                            }
                        }
                    } catch {
                        break  // the target is gone
                    }
                }
                check.expect(done.count >= Self.writesPerRound / 4, "round \(round): only \(done.count) durable writes before the kill")
                return done
            }
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL,
                    "round \(round): the target must have died of SIGKILL")
            durable += acknowledged
        }
        // Final check after the last kill.
        let port = try freePort()
        let process = try startTargetProcess(binary: binary, config: config, port: port, stateDirectory: directory, log: log)
        defer { process.terminate(); process.waitUntilExit() }
        let all = durable
        try await onThread("final check") { check in
            let client = try ISCSIClient()
            try client.login(portal: "127.0.0.1:\(port)", target: integrationIQN)
            for (lba, seed) in all {
                check.expectBytes(try client.read10(lun: 0, lba: lba, blocks: Self.blocksPerWrite),
                                  pattern(seed: seed, count: Self.blocksPerWrite * 512), "final: LBA \(lba)")
            }
            try client.logout()
        }
        #expect(all.count >= 4 * Self.writesPerRound / 4)
    }
}
