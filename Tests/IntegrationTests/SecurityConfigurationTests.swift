// Target definitions: every file under Targets/ must pass check-config (the same parser), and
// the CHAP/ACL keys report their problems with line and key, never echoing a secret.

import Foundation
import ISCSITarget
import Testing

private func issues(_ toml: String, baseDirectory: String? = nil) -> [ConfigurationIssue] {
    do {
        _ = try ServerConfiguration.parse(toml: toml, stateDirectory: "/tmp/unused", baseDirectory: baseDirectory)
        return []
    } catch let error as ConfigurationError {
        return error.issues
    } catch {
        Issue.record("unexpected error \(error)")
        return []
    }
}

private func target(_ extra: String, chap: String = "") -> String {
    """
    [[target]]
    name = "iqn.2026-11.org.test:t"
    \(extra)
      [[target.lun]]
      number = 0
      file = "t.img"
      size = "1MiB"
    \(chap)
    """
}

@Suite("Target definitions: examples, CHAP and ACL keys")
struct SecurityConfigurationTests {
    @Test("Every definition under Targets/ passes check-config")
    func everyShippedDefinitionLoads() throws {
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Targets")
        let files = (FileManager.default.enumerator(atPath: root.path)?.compactMap { $0 as? String } ?? [])
            .filter { $0.hasSuffix(".toml") }.sorted()
        #expect(files.contains("default.toml") && files.contains("examples/chap.toml")
                && files.contains("examples/mutual-chap.toml") && files.contains("examples/acl.toml"), "\(files)")
        for file in files {
            do {
                _ = try ServerConfiguration.load(path: root.appendingPathComponent(file).path, stateDirectory: "/tmp/unused")
            } catch {
                Issue.record("\(file): \(error)")
            }
        }
        let mutual = try ServerConfiguration.load(path: root.appendingPathComponent("examples/mutual-chap.toml").path)
        #expect(mutual.discoveryCHAP?.user == "finder")
        #expect(mutual.targets[0].chap?.mutualUser == "iqn.2026-11.org.iscsi-target:mutual")
        let acl = try ServerConfiguration.load(path: root.appendingPathComponent("examples/acl.toml").path)
        #expect(acl.targets[0].allowedInitiators?.count == 2)
        #expect(acl.targets[1].allowedInitiators == nil)
    }

    @Test("[server] max_unsolicited_bytes: a size or bytes, 0 or from 1 MiB; the line of a bad value")
    func unsolicitedBudgetKey() throws {
        let server = { (value: String) in "[server]\nmax_unsolicited_bytes = \(value)\n" + target("") }
        #expect(issues(server("\"64MiB\"")).isEmpty)
        #expect(issues(server("0")).isEmpty)
        #expect(try ServerConfiguration.parse(toml: server("\"64MiB\""), stateDirectory: "/tmp/unused")
                    .maximumUnsolicitedBytes == 64 << 20)
        #expect(try ServerConfiguration.parse(toml: target(""), stateDirectory: "/tmp/unused")
                    .maximumUnsolicitedBytes == 256 << 20)
        for bad in ["1000", "\"512KiB\"", "-1", "\"lots\""] {
            let found = issues(server(bad))
            #expect(found.map(\.keyPath) == ["server.max_unsolicited_bytes"], "\(bad): \(found)")
            #expect(found.first?.line == 2, "\(bad): \(found)")
        }
    }

    @Test("A secret shorter than 12 bytes is refused at load time, with line and key, and not echoed")
    func shortSecret() {
        let toml = target("", chap: """
              [target.chap]
              user = "alice"
              secret = "short-11by"
            """)
        let found = issues(toml)
        #expect(found.count == 1)
        #expect(found.first?.keyPath == "target[0].chap.secret")
        #expect(found.first?.line == 10, "\(found)")  // the `secret =` line
        #expect(!found.description.contains("short-11by"))
        let discovery = issues("[discovery.chap]\nuser = \"u\"\nsecret = \"tiny\"\n" + target(""))
        #expect(discovery.map(\.keyPath) == ["discovery.chap.secret"])
        #expect(discovery.first?.line == 3)
    }

    @Test("secret_file: read relative to the definition, trailing newline dropped, length checked")
    func secretFile() throws {
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "long-enough-secret\n".write(toFile: directory + "/good.secret", atomically: true, encoding: .utf8)
        try "short\n".write(toFile: directory + "/short.secret", atomically: true, encoding: .utf8)
        let good = try ServerConfiguration.parse(toml: target("", chap: "[target.chap]\nuser = \"a\"\nsecret_file = \"good.secret\""),
                                                 stateDirectory: "/tmp/unused", baseDirectory: directory)
        #expect(good.targets[0].chap?.secret.bytes == Array("long-enough-secret".utf8))
        let short = issues(target("", chap: "[target.chap]\nuser = \"a\"\nsecret_file = \"short.secret\""), baseDirectory: directory)
        #expect(short.map(\.keyPath) == ["target[0].chap.secret_file"])
        let missing = issues(target("", chap: "[target.chap]\nuser = \"a\"\nsecret_file = \"absent.secret\""), baseDirectory: directory)
        #expect(missing.map(\.keyPath) == ["target[0].chap.secret_file"])
    }

    @Test("CHAP and ACL mistakes are each reported")
    func mistakes() {
        let both = issues(target("", chap: "[target.chap]\nuser = \"a\"\nsecret = \"long-enough-secret\"\nsecret_file = \"x\""))
        #expect(both.map(\.keyPath) == ["target[0].chap.secret"])
        let same = issues(target("", chap: """
            [target.chap]
            user = "a"
            secret = "long-enough-secret"
            mutual_user = "t"
            mutual_secret = "long-enough-secret"
            """))
        #expect(same.map(\.keyPath) == ["target[0].chap.mutual_secret"])
        let halfMutual = issues(target("", chap: "[target.chap]\nuser = \"a\"\nsecret = \"long-enough-secret\"\nmutual_user = \"t\""))
        #expect(halfMutual.map(\.keyPath) == ["target[0].chap.mutual_secret"])
        let noUser = issues(target("", chap: "[target.chap]\nsecret = \"long-enough-secret\"\npassword = \"x\""))
        #expect(Set(noUser.map(\.keyPath)) == ["target[0].chap.user", "target[0].chap.password"])
        let acl = issues(target("allowed_initiators = [\"iqn.2026-11.org.test:ok\", \"not a name\"]"))
        #expect(acl.map(\.keyPath) == ["target[0].allowed_initiators"])
        #expect(acl.first?.line == 3)
        let aclType = issues(target("allowed_initiators = \"iqn.2026-11.org.test:ok\""))
        #expect(aclType.map(\.keyPath) == ["target[0].allowed_initiators"])
    }
}
