// Command blocks of the guides that run on the host (`# host-run: NAME` as their first line) run
// as written next to a real `iscsi-target serve` of Targets/default.toml. (Blocks marked
// `# guest-run:` run inside the Linux guest: Tests/Guest, scenario docs.)

import Foundation
import ISCSITarget
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Host command blocks of the guides run as written", .timeLimit(.minutes(3)))
struct DocsHostRunTests {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// (file, name, script) of every host-run block.
    static func hostBlocks() throws -> [(String, String, String)] {
        let docs = repository.appendingPathComponent("Docs")
        var blocks: [(String, String, String)] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: docs.path).sorted() where file.hasSuffix(".md") {
            let text = try String(contentsOf: docs.appendingPathComponent(file), encoding: .utf8)
            var current: [String]?
            for line in text.components(separatedBy: "\n") {
                if line.hasPrefix("```sh") { current = []; continue }
                if line.hasPrefix("```"), let block = current {
                    if let first = block.first, first.hasPrefix("# host-run: ") {
                        blocks.append((file, String(first.dropFirst("# host-run: ".count)), block.joined(separator: "\n")))
                    }
                    current = nil
                    continue
                }
                current?.append(line)
            }
        }
        return blocks
    }

    @Test("runtime changes: lun add, lun remove, tokens and save against the default target")
    func hostRunBlocks() throws {
        let blocks = try Self.hostBlocks()
        #expect(blocks.map(\.1).contains("runtime-changes"), "no host-run block found")
        let binary = try targetBinary()
        for (file, name, script) in blocks {
            let scratch = try makeStateDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            try FileManager.default.createDirectory(atPath: scratch + "/Targets", withIntermediateDirectories: true)
            let original = try String(contentsOf: Self.repository.appendingPathComponent("Targets/default.toml"), encoding: .utf8)
            try original.write(toFile: scratch + "/Targets/default.toml", atomically: true, encoding: .utf8)
            let port = try freePort()
            let server = Process()
            server.executableURL = URL(fileURLWithPath: binary)
            server.arguments = ["serve", "--listen", "127.0.0.1:\(port)"]
            server.currentDirectoryURL = URL(fileURLWithPath: scratch)
            let log = scratch + "/serve.log"
            FileManager.default.createFile(atPath: log, contents: nil)
            let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            server.standardOutput = logHandle
            server.standardError = logHandle
            try server.run()
            defer {
                server.terminate()
                server.waitUntilExit()
            }
            var up = false
            for _ in 0..<300 where !up {
                up = FileManager.default.fileExists(atPath: scratch + "/state/control.sock")
                if !up { Thread.sleep(forTimeInterval: 0.05) }
            }
            #expect(up, "the server did not come up: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            let shell = Process()
            shell.executableURL = URL(fileURLWithPath: "/bin/sh")
            shell.arguments = ["-e", "-c", script]
            shell.currentDirectoryURL = URL(fileURLWithPath: scratch)
            var environment = ProcessInfo.processInfo.environment
            environment["PATH"] = (binary as NSString).deletingLastPathComponent + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
            shell.environment = environment
            let output = Pipe()
            shell.standardOutput = output
            shell.standardError = output
            try shell.run()
            let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            shell.waitUntilExit()
            #expect(shell.terminationStatus == 0, "\(file) block \(name) failed:\n\(printed)")
            if name == "runtime-changes" {
                let saved = try String(contentsOfFile: scratch + "/Targets/default.toml", encoding: .utf8)
                var expected = DefinitionEditor(text: original)
                try expected.setTokenKeys(target: "iqn.2026-11.org.iscsi-target:default",
                                          [("max_tokens", "64"), ("max_inactivity_timeout", "120")])
                #expect(saved == expected.text, "the saved definition:\n\(saved)")
                #expect(printed.contains("LUN 2 added") && printed.contains("LUN 2 removed"), Comment(rawValue: printed))
            }
        }
    }
}
