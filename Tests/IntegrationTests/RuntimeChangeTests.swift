// Runtime changes: LUNs added and removed and token limits changed while sessions run, with
// the unit attentions SPC-4 prescribes, and the running definition written back by `save`.

import Foundation
import ISCSITarget
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Definition edits keep the text a person wrote")
struct DefinitionEditorTests {
    static let text = """
        [server]
        listen = "127.0.0.1:0"

        [[target]]
        name = "iqn.2026-11.org.example:a"

          # the boot disk
          [[target.lun]]
          number = 0
          file = "a0.img"   # keep me
          size = "1MiB"

          [[target.lun]]
          number = 1
          file = "a1.img"
          size = "1MiB"

          # Token limits follow.
          [target.tokens]
          max_tokens = 1024     # live tokens
          default_rod_type = "point-in-time-persistent"

        [[target]]
        name = "iqn.2026-11.org.example:b"

          [[target.lun]]
          number = 0
          file = "b0.img"
          size = "1MiB"

        """

    @Test("adding a LU appends a table at the end of its target, indented like its siblings")
    func add() throws {
        var editor = DefinitionEditor(text: Self.text)
        try editor.addLUN(target: "iqn.2026-11.org.example:b", keys: [("number", "4"), ("file", "\"b4.img\""), ("size", "\"2MiB\"")])
        #expect(editor.text == Self.text + """

              [[target.lun]]
              number = 4
              file = "b4.img"
              size = "2MiB"

            """)
        #expect(throws: DefinitionEditError.self) { try editor.addLUN(target: "iqn.2026-11.org.example:none", keys: []) }
    }

    @Test("removing a LU takes its table and the comment above it, nothing else")
    func remove() throws {
        var editor = DefinitionEditor(text: Self.text)
        try editor.removeLUN(target: "iqn.2026-11.org.example:a", lun: 0)
        #expect(editor.text == Self.text.replacingOccurrences(
            of: "  # the boot disk\n  [[target.lun]]\n  number = 0\n  file = \"a0.img\"   # keep me\n  size = \"1MiB\"\n\n",
            with: ""))
        try editor.removeLUN(target: "iqn.2026-11.org.example:a", lun: 1)
        #expect(!editor.text.contains("a1.img"))
        #expect(editor.text.contains("# Token limits follow."))
        #expect(throws: DefinitionEditError.self) { try editor.removeLUN(target: "iqn.2026-11.org.example:a", lun: 1) }
    }

    @Test("token keys: a value changes in place with its comment; a new key joins the table; a missing table is made")
    func tokens() throws {
        var editor = DefinitionEditor(text: Self.text)
        try editor.setTokenKeys(target: "iqn.2026-11.org.example:a", [("max_tokens", "16"), ("max_inactivity_timeout", "90")])
        #expect(editor.text == Self.text.replacingOccurrences(of: """
              max_tokens = 1024     # live tokens
              default_rod_type = "point-in-time-persistent"
            """, with: """
              max_tokens = 16       # live tokens
              default_rod_type = "point-in-time-persistent"
              max_inactivity_timeout = 90
            """))
        try editor.setTokenKeys(target: "iqn.2026-11.org.example:b", [("max_tokens", "8")])
        #expect(editor.text.hasSuffix("  size = \"1MiB\"\n\n  [target.tokens]\n  max_tokens = 8\n"))
        let parsed = try ServerConfiguration.parse(toml: editor.text)
        #expect(parsed.targets.map(\.tokenLimits.maximumTokens) == [16, 8])
        #expect(parsed.targets[0].tokenLimits.maximumInactivityTimeout == 90)
    }
}

@Suite("Runtime changes over iSCSI", .timeLimit(.minutes(3)))
struct RuntimeChangeTests {
    /// Files the process has open whose path ends with `suffix`.
    static func openFiles(endingWith suffix: String) -> [String] {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)") }
            .filter { $0.hasSuffix(suffix) }
    }

    /// MAXIMUM INACTIVITY TIMEOUT of the Block Device ROD Limits descriptor in VPD 0x8F.
    static func maximumInactivityTimeout(_ page: [UInt8]) -> UInt32? {
        var offset = 4
        while offset + 4 <= page.count {
            let type = Int(page[offset]) << 8 | Int(page[offset + 1])
            let length = Int(page[offset + 2]) << 8 | Int(page[offset + 3])
            if type == 0x0000, offset + 16 <= page.count {
                return page[(offset + 12)..<(offset + 16)].reduce(0) { $0 << 8 | UInt32($1) }
            }
            offset += 4 + length
        }
        return nil
    }

    @Test("lun add / lun remove / tokens while a session runs: 3F/0E and 3F/03, REPORT LUNS, I/O, 25/00, file released")
    func changesWhileASessionRuns() async throws {
        try await withTarget { target in
            let server = target.server
            try await onThread("runtime changes") { checks in
                let client = try ISCSIClient(initiatorName: "iqn.2026-11.org.example:runtime")
                try client.login(portal: target.portal, target: integrationIQN)
                try client.testUnitReady(lun: 0)

                let added = try server.perform(ControlRequest(op: "lun-add", target: integrationIQN, keys: [
                    .init("number", "7"), .init("file", "\"runtime-lun7.img\""), .init("size", "\"1MiB\""),
                    .init("thin", "true"),
                ]))
                checks.expect(added.contains("LUN 7 added"), added)
                do {
                    try client.testUnitReadyOnce(lun: 0)
                    checks.record("no unit attention after lun add")
                } catch let error as ISCSIClientError {
                    checks.expectEqual(error.senseKey, 6, "sense key after lun add")
                    checks.expectEqual(error.ascq, 0x3F0E, "REPORTED LUNS DATA HAS CHANGED")
                }
                try client.testUnitReadyOnce(lun: 0)
                checks.expectEqual(try client.reportLUNs(), [0, 1, 7])
                let file = target.stateDirectory + "/runtime-lun7.img"
                checks.expectEqual((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? nil, 1 << 20)
                _ = try? client.testUnitReady(lun: 7)  // its own 3F/0E
                let data = pattern(seed: 7, count: 4096)
                try client.write10(lun: 7, lba: 2040, data: data, fua: true)
                checks.expectBytes(try client.read10(lun: 7, lba: 2040, blocks: 8), data, "LUN 7 data")
                checks.expect(!Self.openFiles(endingWith: "runtime-lun7.img").isEmpty, "LUN 7's file is open")
                // The new LU has its own counters from its first command.
                let metrics = server.metricsText()
                checks.expect(metrics.contains("scsi_commands_total{target=\"\(integrationIQN)\",lun=\"7\",opcode=\"0x2a\"} 1"),
                              "no WRITE(10) counted for LUN 7")

                // Duplicates and unknown keys are refused as in a definition file, and change nothing.
                checks.expect((try? server.perform(ControlRequest(op: "lun-add", target: integrationIQN, keys: [
                    .init("number", "7"), .init("file", "\"other.img\""), .init("size", "\"1MiB\"")]))) == nil,
                    "a second LUN 7 was accepted")
                checks.expect((try? server.perform(ControlRequest(op: "lun-add", target: integrationIQN, keys: [
                    .init("number", "8"), .init("file", "\"x.img\""), .init("size", "\"1MiB\""), .init("colour", "1")]))) == nil,
                    "an unknown key was accepted")

                _ = try server.perform(ControlRequest(op: "lun-remove", target: integrationIQN, lun: 7))
                do {
                    try client.testUnitReadyOnce(lun: 7)
                    checks.record("removed LUN 7 still answers")
                } catch let error as ISCSIClientError {
                    checks.expectEqual(error.senseKey, 5, "sense key for a removed LUN")
                    checks.expectEqual(error.ascq, 0x2500, "LOGICAL UNIT NOT SUPPORTED")
                }
                do {
                    try client.testUnitReadyOnce(lun: 0)
                    checks.record("no unit attention after lun remove")
                } catch let error as ISCSIClientError {
                    checks.expectEqual(error.ascq, 0x3F0E, "REPORTED LUNS DATA HAS CHANGED after remove")
                }
                checks.expectEqual(try client.reportLUNs(), [0, 1])
                checks.expect(Self.openFiles(endingWith: "runtime-lun7.img").isEmpty, "LUN 7's file is still open")
                // The data written with FUA is in the file, which stays.
                let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
                try handle.seek(toOffset: 2040 * 512)
                checks.expectBytes(Array(try handle.read(upToCount: 4096) ?? Data()), data, "LUN 7's file after removal")

                // Token limits: the Third-party Copy VPD page changes, so 3F/03 on every LU (LUN 1
                // first reports the 3F/0E conditions still queued for it).
                try client.testUnitReady(lun: 1)
                _ = try server.perform(ControlRequest(op: "tokens", target: integrationIQN, keys: [
                    .init("max_inactivity_timeout", "100")]))
                for lun: Int32 in [0, 1] {
                    do {
                        try client.testUnitReadyOnce(lun: lun)
                        checks.record("no unit attention on LUN \(lun) after tokens")
                    } catch let error as ISCSIClientError {
                        checks.expectEqual(error.ascq, 0x3F03, "INQUIRY DATA HAS CHANGED on LUN \(lun)")
                    }
                }
                let page = try client.scsiCommand(lun: 0, cdb: [0x12, 0x01, 0x8F, 0x10, 0x00, 0x00], dataInLength: 4096)
                checks.expectEqual(Self.maximumInactivityTimeout(page), 100, "VPD 0x8F MAXIMUM INACTIVITY TIMEOUT")
                // The same limits again: nothing changes, no unit attention.
                let same = try server.perform(ControlRequest(op: "tokens", target: integrationIQN, keys: [
                    .init("max_inactivity_timeout", "100")]))
                checks.expect(same.contains("unchanged"), same)
                try client.testUnitReadyOnce(lun: 0)
                try client.logout()
            }
            #expect(server.status().targets[0].luns.map(\.number) == [0, 1])
        }
    }

    @Test("save writes the running definition back, refuses to lose edits made on disk, and --force overrides")
    func save() async throws {
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/target.toml"
        try smallDefinition.write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try ServerConfiguration.load(path: path, stateDirectory: directory, listen: "127.0.0.1:0")
        let server = TargetServer(configuration: configuration)
        try await server.start()
        do {
            _ = try server.perform(ControlRequest(op: "lun-add", target: secondIQN, keys: [
                .init("number", "3"), .init("file", "\"second-lun3.img\""), .init("size", "\"1MiB\"")]))
            _ = try server.perform(ControlRequest(op: "lun-remove", target: integrationIQN, lun: 1))
            _ = try server.perform(ControlRequest(op: "save"))
            let saved = try String(contentsOfFile: path, encoding: .utf8)
            var expected = DefinitionEditor(text: smallDefinition)
            try expected.addLUN(target: secondIQN, keys: [("number", "3"), ("file", "\"second-lun3.img\""), ("size", "\"1MiB\"")])
            try expected.removeLUN(target: integrationIQN, lun: 1)
            #expect(saved == expected.text)
            let reloaded = try ServerConfiguration.load(path: path, stateDirectory: directory)
            #expect(reloaded.targets.map { $0.luns.map(\.number) } == [[0], [0, 3]])

            // Someone edits the file by hand: save refuses, then --force overwrites.
            try (saved + "# a note\n").write(toFile: path, atomically: true, encoding: .utf8)
            _ = try server.perform(ControlRequest(op: "tokens", target: secondIQN, keys: [.init("max_tokens", "5")]))
            #expect(throws: RuntimeChangeError.self) { try server.perform(ControlRequest(op: "save")) }
            let elsewhere = directory + "/copy.toml"
            _ = try server.perform(ControlRequest(op: "save", output: elsewhere))
            #expect(try ServerConfiguration.load(path: elsewhere).targets[1].tokenLimits.maximumTokens == 5)
            _ = try server.perform(ControlRequest(op: "save", force: true))
            #expect(try ServerConfiguration.load(path: path).targets[1].tokenLimits.maximumTokens == 5)
        } catch {
            try? await server.stop()
            throw error
        }
        try await server.stop()
    }
}
