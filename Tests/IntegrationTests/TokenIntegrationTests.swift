// Token-based copy (ODX) over real iSCSI sessions (libiscsi): POPULATE TOKEN on one target,
// RECEIVE ROD TOKEN INFORMATION for the token, WRITE USING TOKEN on another target of the
// process, with the point-in-time semantics and the token errors an initiator sees.

import Foundation
import ISCSITarget
import Testing

func bigEndian(_ value: UInt64, _ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64(count - 1 - $0))) }
}

/// POPULATE TOKEN CDB and parameter list.
func populateTokenCommand(listID: UInt32, ranges: [(UInt64, UInt32)], rodType: UInt32? = nil,
                          timeout: UInt32 = 0, immediate: Bool = false) -> (cdb: [UInt8], list: [UInt8]) {
    let descriptors: [UInt8] = ranges.flatMap { range -> [UInt8] in
        let lba: [UInt8] = bigEndian(range.0, 8)
        let blocks: [UInt8] = bigEndian(UInt64(range.1), 4)
        return lba + blocks + [0, 0, 0, 0]
    }
    var list = bigEndian(UInt64(14 + descriptors.count), 2)
    list += [(immediate ? 0x01 : 0) | (rodType != nil ? 0x02 : 0), 0]
    list += bigEndian(UInt64(timeout), 4)
    list += bigEndian(UInt64(rodType ?? 0), 4)
    list += [0, 0]
    list += bigEndian(UInt64(descriptors.count), 2)
    list += descriptors
    let cdb: [UInt8] = [0x83, 0x10, 0, 0, 0, 0] + bigEndian(UInt64(listID), 4) + bigEndian(UInt64(list.count), 4) + [0, 0]
    return (cdb, list)
}

/// WRITE USING TOKEN CDB and parameter list.
func writeUsingTokenCommand(listID: UInt32, token: [UInt8], ranges: [(UInt64, UInt32)], offset: UInt64 = 0,
                            deleteToken: Bool = false, immediate: Bool = false) -> (cdb: [UInt8], list: [UInt8]) {
    let descriptors: [UInt8] = ranges.flatMap { range -> [UInt8] in
        let lba: [UInt8] = bigEndian(range.0, 8)
        let blocks: [UInt8] = bigEndian(UInt64(range.1), 4)
        return lba + blocks + [0, 0, 0, 0]
    }
    var list = bigEndian(UInt64(534 + descriptors.count), 2)
    list += [(immediate ? 0x01 : 0) | (deleteToken ? 0x02 : 0), 0, 0, 0, 0, 0]
    list += bigEndian(offset, 8)
    list += token
    list += [0, 0, 0, 0, 0, 0]
    list += bigEndian(UInt64(descriptors.count), 2)
    list += descriptors
    let cdb: [UInt8] = [0x83, 0x11, 0, 0, 0, 0] + bigEndian(UInt64(listID), 4) + bigEndian(UInt64(list.count), 4) + [0, 0]
    return (cdb, list)
}

func receiveRODTokenInformationCDB(listID: UInt32, allocation: UInt32 = 1024) -> [UInt8] {
    [0x84, 0x07] + bigEndian(UInt64(listID), 4) + [0, 0, 0, 0] + bigEndian(UInt64(allocation), 4) + [0, 0]
}

@Suite("Token-based copy over iSCSI", .timeLimit(.minutes(5)))
struct TokenIntegrationTests {
    @Test("Persistent token across targets: the copy delivers the data as of POPULATE TOKEN; then DEL_TKN, then 23/09")
    func crossTargetPersistent() async throws {
        try await withTarget { target in
            try await onThread("token copy") { checks in
                let a = try ISCSIClient()
                try a.login(portal: target.portal, target: integrationIQN)
                let b = try ISCSIClient(initiatorName: testInitiatorName + "-b")
                try b.login(portal: target.portal, target: secondIQN)
                let original = pattern(seed: 7, count: 256 * 512)
                try a.write10(lun: 0, lba: 1000, data: original)
                // POPULATE TOKEN (persistent) of LBA 1000+256 on target A, LUN 0.
                let (ptCDB, ptList) = populateTokenCommand(listID: 0x101, ranges: [(1000, 256)], rodType: 0x0080_0002)
                _ = try a.scsiCommand(lun: 0, cdb: ptCDB, dataOut: ptList)
                let info = try a.scsiCommand(lun: 0, cdb: receiveRODTokenInformationCDB(listID: 0x101), dataInLength: 1024)
                checks.expect(info.count == 550, "RRTI length \(info.count)")
                guard info.count == 550 else { return }
                checks.expectBytes(Array(info[4..<6]), [0x10, 0x01])
                checks.expectBytes(Array(info[15..<24]), [0xF1] + bigEndian(256, 8))
                let token = Array(info[38...])
                // Overwrite the source after the token was made.
                try a.write10(lun: 0, lba: 1000, data: [UInt8](repeating: 0x5A, count: 64 * 512))
                // WRITE USING TOKEN on target B (another target of the process), DEL_TKN.
                let (wutCDB, wutList) = writeUsingTokenCommand(listID: 0x102, token: token, ranges: [(16, 256)], deleteToken: true)
                _ = try b.scsiCommand(lun: 0, cdb: wutCDB, dataOut: wutList)
                checks.expect(try b.read10(lun: 0, lba: 16, blocks: 256) == original, "copied data is not the point-in-time data")
                // RECEIVE COPY STATUS (LID4) for the write: response to 11h, completed, 256 blocks.
                let status = try b.scsiCommand(lun: 0, cdb: [0x84, 0x05, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
                                               dataInLength: 64)
                checks.expectBytes(Array(status[4..<6]), [0x11, 0x01])
                checks.expectBytes(Array(status[15..<24]), [0xF1] + bigEndian(256, 8))
                // The token was deleted: TOKEN DELETED.
                let (again, againList) = writeUsingTokenCommand(listID: 0x103, token: token, ranges: [(16, 8)])
                do {
                    _ = try b.scsiCommand(lun: 0, cdb: again, dataOut: againList)
                    checks.record("a deleted token was accepted")
                } catch let error as ISCSIClientError {
                    checks.expect(error.senseKey == 0x05 && error.ascq == 0x2309, "\(error)")
                }
                try a.logout(); try b.logout()
            }
        }
    }

    @Test("Change-vulnerable token cancelled by a write (23/08); a tampered token is corrupt (23/05); zero token writes zeros")
    func tokenErrors() async throws {
        try await withTarget { target in
            try await onThread("token errors") { checks in
                let a = try ISCSIClient()
                try a.login(portal: target.portal, target: integrationIQN)
                func expectSense(_ cdb: [UInt8], _ list: [UInt8], _ ascq: Int, _ what: String) {
                    do {
                        _ = try a.scsiCommand(lun: 1, cdb: cdb, dataOut: list)
                        checks.record("\(what): accepted")
                    } catch let error as ISCSIClientError {
                        checks.expect(error.senseKey == 0x05 && error.ascq == ascq, "\(what): \(error)")
                    } catch {
                        checks.record("\(what): \(error)")
                    }
                }
                let (ptCDB, ptList) = populateTokenCommand(listID: 1, ranges: [(0, 64)], rodType: 0x0080_0001)
                _ = try a.scsiCommand(lun: 0, cdb: ptCDB, dataOut: ptList)
                let info = try a.scsiCommand(lun: 0, cdb: receiveRODTokenInformationCDB(listID: 1), dataInLength: 1024)
                guard info.count == 550 else { checks.record("RRTI length \(info.count)"); return }
                let token = Array(info[38...])
                var tampered = token
                tampered[100] ^= 0x40
                let (bad, badList) = writeUsingTokenCommand(listID: 2, token: tampered, ranges: [(0, 64)])
                expectSense(bad, badList, 0x2305, "tampered token")
                try a.write10(lun: 0, lba: 63, data: [UInt8](repeating: 1, count: 512))
                let (cancelled, cancelledList) = writeUsingTokenCommand(listID: 3, token: token, ranges: [(0, 64)])
                expectSense(cancelled, cancelledList, 0x2308, "cancelled token")
                // The block device zero ROD token.
                try a.write10(lun: 1, lba: 500, data: [UInt8](repeating: 0xEE, count: 16 * 512))
                var zero = [UInt8](repeating: 0, count: 512)
                zero[0] = 0xFF; zero[1] = 0xFF; zero[3] = 0x01; zero[6] = 0x01; zero[7] = 0xF8
                let (zeroCDB, zeroList) = writeUsingTokenCommand(listID: 4, token: zero, ranges: [(504, 4)])
                _ = try a.scsiCommand(lun: 1, cdb: zeroCDB, dataOut: zeroList)
                let after = try a.read10(lun: 1, lba: 500, blocks: 16)
                checks.expect(after == [UInt8](repeating: 0xEE, count: 4 * 512) + [UInt8](repeating: 0, count: 4 * 512)
                              + [UInt8](repeating: 0xEE, count: 8 * 512), "zero token result")
                // VPD 0x8F starts with the Block Device ROD Limits descriptor.
                let vpd = try a.scsiCommand(lun: 0, cdb: [0x12, 0x01, 0x8F, 0x04, 0x00, 0x00], dataInLength: 1024)
                checks.expectBytes(Array(vpd[4..<8]), [0x00, 0x00, 0x00, 0x20])
                try a.logout()
            }
        }
    }

    @Test("status over the control socket: the session, the token with its state and time left, the copy statistics")
    func statusShowsTokens() async throws {
        try await withTarget { target in
            let socket = (target.stateDirectory as NSString).appendingPathComponent("control.sock")
            try await onThread("status") { checks in
                let a = try ISCSIClient()
                try a.login(portal: target.portal, target: integrationIQN)
                try a.write10(lun: 0, lba: 0, data: pattern(seed: 3, count: 16 * 512))
                let (ptCDB, ptList) = populateTokenCommand(listID: 9, ranges: [(0, 16)], rodType: 0x0080_0001, timeout: 30)
                _ = try a.scsiCommand(lun: 0, cdb: ptCDB, dataOut: ptList)
                let decoder = JSONDecoder()
                decoder.dateDecodingStrategy = .iso8601
                func status() -> ServerStatus? {
                    ControlSocket.request("status", path: socket).flatMap { try? decoder.decode(ServerStatus.self, from: $0) }
                }
                guard let first = status() else { checks.record("no status on \(socket)"); return }
                checks.expect(first.sessions.contains { $0.initiator == testInitiatorName && $0.target == integrationIQN },
                              "session missing: \(first.sessions)")
                guard let token = first.tokens.first else { checks.record("no token in status"); return }
                checks.expect(token.state == "valid" && token.type == "point-in-time-change-vulnerable", "\(token)")
                checks.expect(token.ranges == ["0+16"] && token.bytes == 16 * 512, "\(token)")
                checks.expect((token.secondsLeft ?? 0) > 25 && (token.secondsLeft ?? 99) <= 30, "\(token)")
                Thread.sleep(forTimeInterval: 1.1)
                let later = status()?.tokens.first?.secondsLeft ?? 99
                checks.expect(later < token.secondsLeft!, "time left does not decrease: \(later)")
                // A write to the source cancels it; status shows the tombstone.
                try a.write10(lun: 0, lba: 3, data: [UInt8](repeating: 7, count: 512))
                checks.expect(status()?.tokens.first?.state == "cancelled", "not cancelled")
                try a.logout()
            }
        }
    }
}
