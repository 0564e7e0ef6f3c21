// Operability over real sessions: the Prometheus metrics listener.

import Foundation
import ISCSITarget
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// GET `path` from 127.0.0.1:`port` over a plain socket: (status line, body).
func httpGet(port: Int, path: String) -> (String, String)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == request.count else { return nil }
    var reply = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        reply += buffer[0..<n]
    }
    let text = String(decoding: reply, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { return nil }
    let statusLine = String(text[..<split.lowerBound]).components(separatedBy: "\r\n").first ?? ""
    return (statusLine, String(text[split.upperBound...]))
}

/// Keeps every log line (message and metadata) for tests that read the log.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [(message: String, metadata: [String: String])] = []

    func append(_ message: String, _ metadata: [String: String]) {
        lock.lock(); defer { lock.unlock() }
        lines.append((message, metadata))
    }

    func entries(_ message: String) -> [[String: String]] {
        lock.lock(); defer { lock.unlock() }
        return lines.filter { $0.message == message }.map(\.metadata)
    }

    var logger: Logger {
        Logger(label: "test") { _ in CapturingHandler(log: self) }
    }

    struct CapturingHandler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let all = self.metadata.merging(event.metadata ?? [:]) { $1 }
            self.log.append("\(event.message)", all.mapValues { "\($0)" })
        }
    }
}

@Suite("Operability over iSCSI", .timeLimit(.minutes(3)))
struct OperabilityTests {
    @Test("the log has one line per task management function and one per copy command, with what and how it ended")
    func taskManagementAndCopyLines() async throws {
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = CapturedLog()
        let configuration = try ServerConfiguration.parse(toml: smallDefinition, stateDirectory: directory, listen: "127.0.0.1:0")
        let server = TargetServer(configuration: configuration, logger: log.logger)
        try await server.start()
        let portal = "127.0.0.1:\(server.boundPort)"
        do {
            try await onThread("tmf and copy") { checks in
                let client = try ISCSIClient()
                try client.login(portal: portal, target: integrationIQN)
                try client.lunReset(lun: 1)
                try copyWithinSession(client, lun: 0, destinationLUN: 1, listID: 9, blocks: 16, sourceLBA: 0,
                                      destinationLBA: 0)
                try client.logout()
            }
        } catch {
            try? await server.stop()
            throw error
        }
        try await server.stop()
        let tmf = log.entries("task management")
        #expect(tmf.count == 1)
        #expect(tmf.first?["iscsi.tmf"] == "logicalUnitReset")
        #expect(tmf.first?["iscsi.tmf.response"] == "functionComplete")
        #expect(tmf.first?["scsi.lun"] == "1")
        let copies = log.entries("copy completed")
        #expect(copies.count == 1)
        #expect(copies.first?["copy.command"] == "EXTENDED COPY(LID1)")
        #expect(copies.first?["copy.bytes"] == "8192")
        #expect(copies.first?["copy.list_id"] == "9")
        #expect(copies.first?["scsi.lun"] == "0")
    }

    @Test("GET /metrics during I/O: valid Prometheus text with non-zero counters per LU and opcode")
    func metrics() async throws {
        let toml = smallDefinition.replacingOccurrences(of: "state_dir = \"state\"",
                                                        with: "state_dir = \"state\"\nmetrics = \"127.0.0.1:0\"")
        try await withTarget(toml: toml) { target in
            let port = target.server.metricsPort
            #expect(port > 0)
            try await onThread("metrics") { checks in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                try client.write10(lun: 0, lba: 0, data: pattern(seed: 1, count: 64 * 512))
                for _ in 0..<10 { _ = try client.read10(lun: 0, lba: 0, blocks: 64) }
                guard let (status, body) = httpGet(port: port, path: "/metrics") else {
                    checks.record("no HTTP answer on \(port)"); return
                }
                checks.expect(status == "HTTP/1.1 200 OK", status)
                let lu = "target=\"\(integrationIQN)\",lun=\"0\""
                checks.expect(body.contains("scsi_commands_total{\(lu),opcode=\"0x28\"} 10"), "READ(10) count")
                checks.expect(body.contains("scsi_commands_total{\(lu),opcode=\"0x2a\"} 1"), "WRITE(10) count")
                checks.expect(body.contains("scsi_bytes_total{\(lu),direction=\"read\"} \(10 * 64 * 512)"), "bytes read")
                checks.expect(body.contains("scsi_bytes_total{\(lu),direction=\"write\"} \(64 * 512)"), "bytes written")
                checks.expect(body.contains("iscsi_sessions 1"), "sessions")
                checks.expect(body.contains("# TYPE scsi_command_duration_seconds histogram"), "histogram type")
                // Every sample line is NAME{labels} VALUE or NAME VALUE with a numeric value.
                for line in body.split(separator: "\n") where !line.hasPrefix("#") {
                    let value = line.split(separator: " ").last.map(String.init) ?? ""
                    checks.expect(Double(value) != nil, "not a sample: \(line)")
                }
                checks.expect(httpGet(port: port, path: "/")?.0 == "HTTP/1.1 404 Not Found", "/ is not found")
                try client.logout()
            }
        }
    }

    @Test("SIGTERM during a 1 GiB write: exit 0 within 10 s, every acknowledged write is in the file")
    func sigterm() async throws {
        let binary = try targetBinary()
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/sigterm.toml"
        try """
        [[target]]
        name = "\(integrationIQN)"
          [[target.lun]]
          number = 0
          file = "sigterm.img"
          size = "1GiB"
          cache = "write-back"
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let port = try freePort()
        let process = try startTargetProcess(binary: binary, config: config, port: port, stateDirectory: directory,
                                             log: directory + "/target.log")
        let chunk = 1 << 20
        let acknowledged: Int = try await onThread("writer", deadline: 100) { checks in
            let client = try ISCSIClient()
            try client.login(portal: "127.0.0.1:\(port)", target: integrationIQN)
            let started = Date()
            var signalled: Date?
            var done = 0
            for i in 0..<1024 {
                if signalled == nil && Date().timeIntervalSince(started) > 0.3 {
                    kill(process.processIdentifier, SIGTERM)
                    signalled = Date()
                }
                do {
                    try client.write10(lun: 0, lba: UInt32(i * chunk / 512), data: pattern(seed: UInt32(i + 1), count: chunk))
                    done += 1
                } catch {
                    break
                }
            }
            checks.expect(done > 0, "nothing was written before SIGTERM")
            return done
        }
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
        #expect(!process.isRunning, "still running 10 s after SIGTERM")
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0)
        // Every acknowledged 1 MiB write is in the backing file.
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: directory + "/sigterm.img"))
        defer { try? file.close() }
        for i in 0..<acknowledged {
            try file.seek(toOffset: UInt64(i * chunk))
            let data = try file.read(upToCount: chunk) ?? Data()
            #expect(Array(data) == pattern(seed: UInt32(i + 1), count: chunk), "chunk \(i) of \(acknowledged)")
            if Array(data) != pattern(seed: UInt32(i + 1), count: chunk) { break }
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/control.sock"), "control socket left behind")
    }
}
