// End-to-end tests: the target runs in-process, libiscsi (an independent initiator) drives it
// over real TCP on 127.0.0.1. All libiscsi calls run on dedicated threads (`onThread`).
//
// Data digests: libiscsi 1.19 (Debian 12) always offers DataDigest=None and has no API to ask for
// CRC32C data digests, so only header digests can be exercised from here.

import Foundation
import Testing

@Suite("Target driven by libiscsi", .timeLimit(.minutes(3)))
struct IntegrationTests {

    // MARK: Discovery

    @Test("SendTargets lists every target with the portal it was reached on")
    func discoveryListsTargets() async throws {
        try await withTarget { target in
            let found = try await onThread("discovery") { _ in
                try ISCSIClient().discover(portal: target.portal)
            }
            let names = found.map(\.name)
            #expect(names.sorted() == [integrationIQN, secondIQN].sorted(), "SendTargets answer: \(found)")
            for entry in found {
                // TargetAddress=host:port,tpgt; libiscsi keeps the ",tpgt" suffix.
                #expect(entry.portals == ["127.0.0.1:\(target.port),1"], "portals of \(entry.name)")
            }
        }
    }

    @Test("SendTargets advertises the configured address instead of the local one")
    func discoveryAdvertisedAddress() async throws {
        try await withTarget(advertise: "10.0.2.2:3260") { target in
            let found = try await onThread("discovery") { _ in
                try ISCSIClient().discover(portal: target.portal)
            }
            let entry = try #require(found.first { $0.name == integrationIQN }, "SendTargets answer: \(found)")
            #expect(entry.portals == ["10.0.2.2:3260,1"])
        }
    }

    // MARK: Login and identification

    @Test("Login, INQUIRY, REPORT LUNS and READ CAPACITY(16) on the small definition")
    func loginAndIdentify() async throws {
        try await withTarget { target in
            try await onThread("identify") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN, lun: 0)
                check.expectEqual(try client.reportLUNs(), [0, 1], "REPORT LUNS")
                for lun: Int32 in [0, 1] {
                    let inquiry = try client.inquiry(lun: lun)
                    check.expectEqual(inquiry.qualifier, 0, "LUN \(lun) peripheral qualifier")
                    check.expectEqual(inquiry.deviceType, 0, "LUN \(lun): direct-access block device")
                    check.expect(inquiry.version >= 5, "LUN \(lun): VERSION \(inquiry.version), want SPC-3 or later")
                    check.expectEqual(inquiry.responseDataFormat, 2, "LUN \(lun) response data format")
                    check.expect(inquiry.commandQueueing, "LUN \(lun): CmdQue bit")
                    check.expect(!inquiry.vendor.isEmpty && !inquiry.product.isEmpty, "LUN \(lun): \(inquiry)")
                    let capacity = try client.readCapacity16(lun: lun)
                    check.expectEqual(capacity.blockLength, 512, "LUN \(lun) block length")
                    check.expectEqual(capacity.blocks, smallLUNBlocks, "LUN \(lun) blocks")
                }
                try client.testUnitReady(lun: 1)
                try client.logout()

                let second = try ISCSIClient()
                try second.login(portal: target.portal, target: secondIQN, lun: 0)
                check.expectEqual(try second.reportLUNs(), [0], "REPORT LUNS of the second target")
                check.expectEqual(try second.readCapacity16(lun: 0).blocks, 16 * 1024 * 1024 / 512,
                                  "blocks of the second target's LUN 0")
                try second.logout()
            }
        }
    }

    @Test("The default definition serves two 1 GiB LUNs (2097152 blocks of 512 bytes)")
    func defaultDefinitionCapacity() async throws {
        let toml = try defaultDefinition()
        try await withTarget(toml: toml) { target in
            try await onThread("default definition") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: "iqn.2026-11.org.iscsi-target:default", lun: 0)
                check.expectEqual(try client.reportLUNs(), [0, 1], "REPORT LUNS")
                for lun: Int32 in [0, 1] {
                    let capacity = try client.readCapacity16(lun: lun)
                    check.expectEqual(capacity.blocks, 2_097_152, "LUN \(lun) blocks")
                    check.expectEqual(capacity.blockLength, 512, "LUN \(lun) block length")
                }
                try client.logout()
            }
        }
    }

    @Test("Login to an unknown target name fails with 'target not found' and harms nothing")
    func unknownTargetFails() async throws {
        try await withTarget { target in
            try await onThread("unknown target") { check in
                let client = try ISCSIClient()
                do {
                    try client.login(portal: target.portal, target: "iqn.2026-11.org.iscsi-target:no-such-target")
                    check.record("login to an unknown target name succeeded")
                } catch let error as ISCSIClientError {
                    // Login Response status class 2 detail 3 (0x0203 = 515): Not Found.
                    check.expect(error.message.contains("Target not found") || error.message.contains("515"),
                                 "\(error)")
                }
                let good = try ISCSIClient()
                try good.login(portal: target.portal, target: integrationIQN)
                try good.testUnitReady(lun: 0)
                try good.logout()
            }
        }
    }

    // MARK: Data

    @Test("Write, read back and compare on LUN 0 and LUN 1 without cross-talk")
    func writeReadCompareTwoLUNs() async throws {
        try await withTarget { target in
            try await onThread("two LUNs") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                let last = UInt32(smallLUNBlocks - 1)
                // (lba, blocks): single block, small, crossing typical burst sizes, 1 MiB, the last blocks.
                let extents: [(UInt32, Int)] = [(0, 1), (1, 7), (64, 129), (1000, 512), (4096, 2048),
                                                (last - 16, 16), (last, 1)]
                for (i, (lba, blocks)) in extents.enumerated() {
                    let a = pattern(seed: UInt32(100 + i), count: blocks * 512)
                    let b = pattern(seed: UInt32(200 + i), count: blocks * 512)
                    try client.write10(lun: 0, lba: lba, data: a)
                    try client.write10(lun: 1, lba: lba, data: b)
                    check.expectBytes(try client.read10(lun: 0, lba: lba, blocks: blocks), a, "LUN 0 lba \(lba) x\(blocks)")
                    check.expectBytes(try client.read10(lun: 1, lba: lba, blocks: blocks), b, "LUN 1 lba \(lba) x\(blocks)")
                }
                // Untouched blocks read as zeros (new sparse files).
                check.expectBytes(try client.read10(lun: 0, lba: 20000, blocks: 8), [UInt8](repeating: 0, count: 4096),
                                  "never-written blocks")
                // The second target's LUN 0 is separate storage.
                let other = try ISCSIClient()
                try other.login(portal: target.portal, target: secondIQN)
                check.expectBytes(try other.read10(lun: 0, lba: 0, blocks: 1), [UInt8](repeating: 0, count: 512),
                                  "second target's LUN 0 must not show the first target's data")
                try other.logout()

                // A new session sees what the first one wrote.
                try client.logout()
                let again = try ISCSIClient()
                try again.login(portal: target.portal, target: integrationIQN)
                for (i, (lba, blocks)) in extents.enumerated() {
                    check.expectBytes(try again.read10(lun: 0, lba: lba, blocks: blocks),
                                      pattern(seed: UInt32(100 + i), count: blocks * 512), "new session, LUN 0 lba \(lba)")
                    check.expectBytes(try again.read10(lun: 1, lba: lba, blocks: blocks),
                                      pattern(seed: UInt32(200 + i), count: blocks * 512), "new session, LUN 1 lba \(lba)")
                }
                try again.logout()
            }
        }
    }

    @Test("A read past the last block is CHECK CONDITION, ILLEGAL REQUEST, LBA OUT OF RANGE")
    func readPastEnd() async throws {
        try await withTarget { target in
            try await onThread("out of range") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                do {
                    _ = try client.read10(lun: 0, lba: UInt32(smallLUNBlocks - 1), blocks: 2)
                    check.record("READ(10) across the end of the LUN succeeded")
                } catch let error as ISCSIClientError {
                    check.expect(error.kind == .scsiStatus(2) && error.senseKey == 5 && error.ascq == 0x2100,
                                 "want CHECK CONDITION 05/21/00, got \(error)")
                }
                // The session is still usable afterwards.
                try client.testUnitReady(lun: 0)
                try client.logout()
            }
        }
    }

    @Test("Data written survives a target restart over the same state directory")
    func dataSurvivesRestart() async throws {
        let directory = try makeStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let data = pattern(seed: 4242, count: 64 * 512)
        try await withTarget(stateDirectory: directory) { target in
            try await onThread("write before restart") { _ in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                try client.write10(lun: 1, lba: 777, data: data, fua: true)
                try client.logout()
            }
        }
        try await withTarget(stateDirectory: directory) { target in
            try await onThread("read after restart") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                check.expectBytes(try client.read10(lun: 1, lba: 777, blocks: 64), data, "after restart")
                try client.logout()
            }
        }
    }

    // MARK: Digests

    @Test("I/O with header digests off and on; the negotiated value is the first one offered",
          arguments: [HeaderDigest.none, .crc32c, .noneOrCRC32C, .crc32cOrNone])
    func headerDigests(_ digest: HeaderDigest) async throws {
        try await withTarget { target in
            let relay = try Relay(targetPort: target.port)
            defer { relay.stop() }
            try await onThread("digest \(digest)") { check in
                let client = try ISCSIClient()
                try client.login(portal: relay.portal, target: integrationIQN, headerDigest: digest)
                // The Login Response must answer with the first value of the initiator's list.
                let expected = (digest == .crc32c || digest == .crc32cOrNone) ? "CRC32C" : "None"
                check.expect(relay.targetText.contains("HeaderDigest=\(expected)\n"),
                             "Login Response should carry HeaderDigest=\(expected); target sent keys: "
                             + relay.targetText.split(separator: "\n").filter { $0.contains("=") }.joined(separator: " "))
                _ = try client.inquiry(lun: 0)
                let data = pattern(seed: 9, count: 1 << 20)
                try client.write10(lun: 0, lba: 2048, data: data)
                check.expectBytes(try client.read10(lun: 0, lba: 2048, blocks: 2048), data, "1 MiB, digest \(digest)")
                let small = pattern(seed: 10, count: 512)
                try client.write10(lun: 1, lba: 5, data: small)
                check.expectBytes(try client.read10(lun: 1, lba: 5, blocks: 1), small, "1 block, digest \(digest)")
                try client.logout()
            }
        }
    }

    @Test("A PDU whose header digest does not match is not executed")
    func corruptedHeaderDigest() async throws {
        try await withTarget { target in
            let relay = try Relay(targetPort: target.port)
            defer { relay.stop() }
            try await onThread("corrupted header", deadline: 60) { check in
                let client = try ISCSIClient(timeoutSeconds: 5)
                try client.login(portal: relay.portal, target: integrationIQN, lun: 0, headerDigest: .crc32c)
                let original = pattern(seed: 77, count: 512)
                try client.write10(lun: 0, lba: 300, data: original)
                // Flip the LBA's low byte in the next command's CDB (BHS byte 32 + 5): a target that
                // ignored the header digest would write LBA 300 ^ 0xFF = 467 and answer GOOD; it must
                // detect the mismatch instead and drop the PDU or the connection (ERL 0).
                relay.corruptNextInitiatorChunk(at: 37)
                do {
                    try client.write10(lun: 0, lba: 300, data: pattern(seed: 78, count: 512))
                    check.record("a WRITE(10) with a corrupted header digest completed GOOD")
                } catch {
                    // Expected: connection dropped, reject, or no answer (timeout).
                }
            }
            // Nothing was written anywhere near: a fresh session sees the original block and zeros
            // at the LBA the corrupted CDB named.
            try await onThread("after corruption") { check in
                let client = try ISCSIClient()
                try client.login(portal: target.portal, target: integrationIQN)
                check.expectBytes(try client.read10(lun: 0, lba: 300, blocks: 1), pattern(seed: 77, count: 512),
                                  "LBA 300 must still hold the first write")
                check.expectBytes(try client.read10(lun: 0, lba: 300 ^ 0xFF, blocks: 1),
                                  [UInt8](repeating: 0, count: 512), "LBA 467 (the corrupted CDB's) must be untouched")
                try client.logout()
            }
        }
    }

    // MARK: Concurrency and failures

    @Test("16 concurrent sessions, each writing and reading its own region from its own thread")
    func sixteenConcurrentSessions() async throws {
        try await withTarget { target in
            let sessions = 16
            let regionBlocks = 4096          // 2 MiB per session
            let clients = try (0..<sessions).map { _ in try ISCSIClient() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, client) in clients.enumerated() {
                    group.addTask {
                        try await onThread("session \(index)", deadline: 150, onDeadline: { client.killConnection() }) { check in
                            try client.login(portal: target.portal, target: integrationIQN)
                            let lun = Int32(index % 2)
                            let base = UInt32(index * regionBlocks)
                            for round in 0..<6 {
                                let blocks = [1, 8, 64, 256, 1024, 2048][round]
                                let lba = base + UInt32((round * 331) % (regionBlocks - blocks))
                                let data = pattern(seed: UInt32(index * 100 + round), count: blocks * 512)
                                try client.write10(lun: lun, lba: lba, data: data)
                                let back = try client.read10(lun: lun, lba: lba, blocks: blocks)
                                check.expectBytes(back, data, "session \(index) round \(round) lba \(lba) x\(blocks)")
                            }
                            // Final known content of the whole region.
                            try client.write10(lun: lun, lba: base, data: pattern(seed: UInt32(9000 + index),
                                                                                   count: regionBlocks * 512))
                            try client.logout()
                        }
                    }
                }
                try await group.waitForAll()
            }
            // One fresh session checks every region: nobody wrote outside its own.
            try await onThread("verify regions") { check in
                let checker = try ISCSIClient()
                try checker.login(portal: target.portal, target: integrationIQN)
                for index in 0..<sessions {
                    let back = try checker.read10(lun: Int32(index % 2), lba: UInt32(index * regionBlocks),
                                                  blocks: regionBlocks)
                    check.expectBytes(back, pattern(seed: UInt32(9000 + index), count: regionBlocks * 512),
                                      "region of session \(index)")
                }
                try checker.logout()
            }
        }
    }

    @Test("Killing one connection mid-transfer leaves the other sessions working")
    func killedConnectionIsolated() async throws {
        try await withTarget { target in
            let victim = try ISCSIClient()
            let survivors = try (0..<2).map { _ in try ISCSIClient() }
            try await onThread("logins") { _ in
                try victim.login(portal: target.portal, target: integrationIQN)
                for s in survivors { try s.login(portal: target.portal, target: integrationIQN) }
            }
            let victimWrites = ManagedCounter()
            let victimDone = ManagedCounter()
            let killed = ManagedCounter()
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The victim streams 1 MiB writes until its connection is cut under it.
                group.addTask {
                    let outcome: Error? = try await onThread("victim", deadline: 60,
                                                             onDeadline: { victim.killConnection() }) { _ in
                        defer { victimDone.increment() }
                        let data = pattern(seed: 666, count: 1 << 20)
                        do {
                            while true {
                                try victim.write10(lun: 0, lba: 32768, data: data)
                                victimWrites.increment()
                            }
                        } catch {
                            return error
                        }
                    }
                    if killed.value == 0 {
                        Issue.record("the victim session failed before its connection was killed: \(String(describing: outcome))")
                    }
                }
                // Survivors keep writing and verifying their own regions before, during and after.
                for (index, survivor) in survivors.enumerated() {
                    group.addTask {
                        try await onThread("survivor \(index)", deadline: 90,
                                           onDeadline: { survivor.killConnection() }) { check in
                            let lun = Int32(index)
                            let started = Date()
                            var round = 0
                            var roundsAfterKill = 0
                            while roundsAfterKill < 20 && Date().timeIntervalSince(started) < 60 {
                                if killed.value > 0 { roundsAfterKill += 1 }
                                let data = pattern(seed: UInt32(round * 7 + index), count: 256 * 512)
                                let lba = UInt32(index * 8192 + (round % 16) * 256)
                                try survivor.write10(lun: lun, lba: lba, data: data)
                                let back = try survivor.read10(lun: lun, lba: lba, blocks: 256)
                                check.expectBytes(back, data, "survivor \(index) round \(round)")
                                round += 1
                            }
                            if roundsAfterKill < 20 {
                                check.record("survivor \(index) gave up after 60 s with \(roundsAfterKill) rounds after the kill")
                            }
                            try survivor.logout()
                        }
                    }
                }
                // Cut the victim's connection once it is well into its transfers (a write is in flight).
                group.addTask {
                    try await onThread("killer", deadline: 40) { _ in
                        let started = Date()
                        while victimWrites.value < 3 && victimDone.value == 0
                                && Date().timeIntervalSince(started) < 20 {
                            Thread.sleep(forTimeInterval: 0.002)
                        }
                        victim.killConnection()
                        killed.increment()
                    }
                }
                try await group.waitForAll()
            }
            // The target still accepts new sessions and serves I/O.
            try await onThread("after kill") { check in
                let fresh = try ISCSIClient()
                try fresh.login(portal: target.portal, target: integrationIQN)
                let data = pattern(seed: 31337, count: 8 * 512)
                try fresh.write10(lun: 0, lba: 32768, data: data)
                check.expectBytes(try fresh.read10(lun: 0, lba: 32768, blocks: 8), data, "fresh session after the kill")
                try fresh.logout()
            }
        }
    }
}

/// A thread-safe counter shared between initiator threads.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
