// CHAP and access control as libiscsi sees them: one-way and mutual CHAP through the API and
// through `user%password@` URLs (iscsi-inq, iscsi-ls), discovery CHAP, initiator ACLs, and the
// login status classes of each failure (libiscsi reports "Status: <text>(class << 8 | detail)").

import Foundation
import Testing

let chapIQN = "iqn.2026-11.org.iscsi-target:chap"
let mutualIQN = "iqn.2026-11.org.iscsi-target:mutual"
let aclIQN = "iqn.2026-11.org.iscsi-target:acl"
let otherInitiator = "iqn.2026-11.org.iscsi-target:someone-else"

func securityDefinition(discoveryCHAP: Bool = false, secretFile: String? = nil) -> String {
    let secretLine = secretFile.map { "secret_file = \"\($0)\"" } ?? "secret = \"alice-secret-123\""
    return """
    \(discoveryCHAP ? "[discovery.chap]\nuser = \"finder\"\nsecret = \"discovery-secret-1\"\n" : "")
    [[target]]
    name = "\(chapIQN)"
      [target.chap]
      user = "alice"
      \(secretLine)
      [[target.lun]]
      number = 0
      file = "chap.img"
      size = "4MiB"

    [[target]]
    name = "\(mutualIQN)"
      [target.chap]
      user = "alice"
      secret = "alice-secret-123"
      mutual_user = "\(mutualIQN)"
      mutual_secret = "target-secret-456"
      [[target.lun]]
      number = 0
      file = "mutual.img"
      size = "4MiB"

    [[target]]
    name = "\(aclIQN)"
    allowed_initiators = ["\(testInitiatorName)", "\(otherInitiator)"]
      [[target.lun]]
      number = 0
      file = "acl.img"
      size = "4MiB"
      [[target.lun]]
      number = 1
      file = "acl-masked.img"
      size = "4MiB"
      allowed_initiators = ["\(otherInitiator)"]
    """
}

/// Runs a libiscsi command-line tool; returns its exit status and output.
func runTool(_ name: String, _ arguments: [String]) throws -> (Int32, String) {
    let path = "/usr/bin/\(name)"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw ISCSIClientError(kind: .library, operation: name, message: "\(path) missing: install libiscsi-bin")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// The login failure libiscsi reported, as its "(status)" number, or nil when it logged in.
func loginStatus(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "success"
    } catch {
        let text = "\(error)"
        for code in ["513", "514", "515"] where text.contains("(\(code))") { return code }
        return text
    }
}

@Suite("CHAP and access control from libiscsi", .timeLimit(.minutes(3)))
struct SecurityIntegrationTests {
    @Test("One-way CHAP: right secret logs in; none, wrong secret or wrong name fail with 02/01")
    func oneWayCHAP() async throws {
        try await withTarget(toml: securityDefinition()) { target in
            try await onThread("chap") { check in
                let good = try ISCSIClient()
                try good.setCHAP(user: "alice", password: "alice-secret-123")
                try good.login(portal: target.portal, target: chapIQN)
                check.expectEqual(try good.reportLUNs(), [0])
                try good.logout()

                check.expectEqual(loginStatus { try ISCSIClient().login(portal: target.portal, target: chapIQN) }, "513",
                                  "no credentials")
                for (user, password) in [("alice", "alice-secret-124"), ("mallory", "alice-secret-123")] {
                    let status = loginStatus {
                        let c = try ISCSIClient()
                        try c.setCHAP(user: user, password: password)
                        try c.login(portal: target.portal, target: chapIQN)
                    }
                    check.expectEqual(status, "513", "\(user)")
                }
                check.expectEqual(loginStatus {
                    let c = try ISCSIClient()
                    try c.setCHAP(user: "alice", password: "alice-secret-123")
                    try c.login(portal: target.portal, target: "iqn.2026-11.org.iscsi-target:absent")
                }, "515", "unknown target")
            }
        }
    }

    @Test("CHAP secret read from a file")
    func secretFile() async throws {
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/alice.secret"
        try "alice-secret-123\n".write(toFile: file, atomically: true, encoding: .utf8)
        try await withTarget(toml: securityDefinition(secretFile: file), stateDirectory: directory) { target in
            try await onThread("chap file") { check in
                let good = try ISCSIClient()
                try good.setCHAP(user: "alice", password: "alice-secret-123")
                try good.login(portal: target.portal, target: chapIQN)
                try good.logout()
            }
        }
    }

    @Test("user%password@ URLs: iscsi-inq logs in with the right secret and fails with a wrong one")
    func urlCredentials() async throws {
        try await withTarget(toml: securityDefinition()) { target in
            let (ok, out) = try await onThread("iscsi-inq") { _ in
                try runTool("iscsi-inq", ["iscsi://alice%alice-secret-123@\(target.portal)/\(chapIQN)/0"])
            }
            #expect(ok == 0, "iscsi-inq with the right secret: \(out)")
            #expect(out.contains("Peripheral"), "INQUIRY output: \(out)")
            let (bad, badOut) = try await onThread("iscsi-inq") { _ in
                try runTool("iscsi-inq", ["iscsi://alice%wrong-secret-999@\(target.portal)/\(chapIQN)/0"])
            }
            #expect(bad != 0, "iscsi-inq with a wrong secret must fail: \(badOut)")
            #expect(badOut.contains("Authentication failure"), "\(badOut)")
        }
    }

    @Test("Mutual CHAP: the target proves its secret; a wrong expected target secret fails")
    func mutualCHAP() async throws {
        try await withTarget(toml: securityDefinition()) { target in
            try await onThread("mutual chap") { check in
                let good = try ISCSIClient()
                try good.setCHAP(user: "alice", password: "alice-secret-123")
                try good.setTargetCHAP(user: mutualIQN, password: "target-secret-456")
                try good.login(portal: target.portal, target: mutualIQN)
                check.expectEqual(try good.reportLUNs(), [0])
                try good.logout()

                let status = loginStatus {
                    let c = try ISCSIClient()
                    try c.setCHAP(user: "alice", password: "alice-secret-123")
                    try c.setTargetCHAP(user: mutualIQN, password: "not-the-target-secret")
                    try c.login(portal: target.portal, target: mutualIQN)
                }
                check.expect(status.contains("Invalid CHAP_R"), "libiscsi must refuse the target's answer: \(status)")
                // The same target still accepts one-way CHAP.
                let oneWay = try ISCSIClient()
                try oneWay.setCHAP(user: "alice", password: "alice-secret-123")
                try oneWay.login(portal: target.portal, target: mutualIQN)
                try oneWay.logout()
            }
        }
    }

    @Test("ACL: a name not in allowed_initiators fails with 02/02 and does not see the target in discovery")
    func accessControl() async throws {
        try await withTarget(toml: securityDefinition()) { target in
            try await onThread("acl") { check in
                let allowed = try ISCSIClient()
                try allowed.login(portal: target.portal, target: aclIQN)
                try allowed.logout()
                let stranger = "iqn.2026-11.org.iscsi-target:stranger"
                check.expectEqual(loginStatus {
                    try ISCSIClient(initiatorName: stranger).login(portal: target.portal, target: aclIQN)
                }, "514", "initiator not in the ACL")
                let seenByAllowed = try ISCSIClient().discover(portal: target.portal).map(\.name)
                check.expect(seenByAllowed.contains(aclIQN), "\(seenByAllowed)")
                let seenByStranger = try ISCSIClient(initiatorName: stranger).discover(portal: target.portal).map(\.name)
                check.expectEqual(seenByStranger.sorted(), [chapIQN, mutualIQN].sorted())
            }
        }
    }

    @Test("LUN masking: a masked LUN is absent from REPORT LUNS and answers as a nonexistent LUN")
    func lunMasking() async throws {
        try await withTarget(toml: securityDefinition()) { target in
            try await onThread("masking") { check in
                let masked = try ISCSIClient()
                try masked.login(portal: target.portal, target: aclIQN)
                check.expectEqual(try masked.reportLUNs(), [0], "REPORT LUNS of an initiator LUN 1 is masked from")
                // INQUIRY to a LUN that does not exist: peripheral qualifier 3, device type 0x1F.
                let inquiry = try masked.scsiCommand(lun: 1, cdb: [0x12, 0, 0, 0, 36, 0], dataInLength: 36)
                check.expectEqual(inquiry.first, 0x7F, "INQUIRY byte 0 of a masked LUN")
                do {
                    _ = try masked.scsiCommand(lun: 1, cdb: [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], dataInLength: 512)
                    check.record("READ(10) to a masked LUN succeeded")
                } catch let error as ISCSIClientError {
                    check.expect(error.kind == .scsiStatus(2) && error.senseKey == 5 && error.ascq == 0x2500,
                                 "READ(10) to a masked LUN: \(error)")
                }
                try masked.logout()
                let seeing = try ISCSIClient(initiatorName: otherInitiator)
                try seeing.login(portal: target.portal, target: aclIQN)
                check.expectEqual(try seeing.reportLUNs(), [0, 1], "REPORT LUNS of the initiator LUN 1 is visible to")
                _ = try seeing.read10(lun: 1, lba: 0, blocks: 1)
                try seeing.logout()
            }
        }
    }

    @Test("Discovery CHAP: SendTargets needs the discovery secret (API and iscsi-ls URL)")
    func discoveryCHAP() async throws {
        try await withTarget(toml: securityDefinition(discoveryCHAP: true)) { target in
            try await onThread("discovery chap") { check in
                let client = try ISCSIClient()
                try client.setCHAP(user: "finder", password: "discovery-secret-1")
                let names = try client.discover(portal: target.portal).map(\.name)
                check.expectEqual(names.sorted(), [chapIQN, mutualIQN, aclIQN].sorted())
                check.expectEqual(loginStatus { _ = try ISCSIClient().discover(portal: target.portal) }, "513",
                                  "discovery without credentials")
                let (ok, out) = try runTool("iscsi-ls", ["iscsi://finder%discovery-secret-1@\(target.portal)"])
                check.expect(ok == 0 && out.contains(chapIQN), "iscsi-ls with discovery CHAP: \(out)")
                let (bad, badOut) = try runTool("iscsi-ls", ["iscsi://finder%wrong-secret-000@\(target.portal)"])
                check.expect(bad != 0, "iscsi-ls with a wrong discovery secret must fail: \(badOut)")
            }
        }
    }
}
