// EXTENDED COPY over real iSCSI sessions (libiscsi): a copy between LUNs of two different
// targets of one process. The 1 GiB copy measurement is in Benchmarks/run.sh.

import Foundation
import Testing

/// The first NAA designator (code set, association|type, length, value) of a VPD 0x83 page.
func naaDesignator(_ page: [UInt8]) -> [UInt8]? {
    var offset = 4
    while offset + 4 <= page.count {
        let length = Int(page[offset + 3])
        if page[offset + 1] & 0x3F == 0x03 { return Array(page[offset..<(offset + 4 + length)]) }
        offset += 4 + length
    }
    return nil
}

/// An identification CSCD descriptor (0xE4) for a designator as `naaDesignator` returns it.
func identificationCSCD(_ designator: [UInt8], blockSize: Int = 512) -> [UInt8] {
    var d = [UInt8](repeating: 0, count: 32)
    d[0] = 0xE4
    d[4] = designator[0] & 0x0F
    d[5] = designator[1] & 0x3F
    d[7] = designator[3]
    d.replaceSubrange(8..<(8 + designator.count - 4), with: designator[4...])
    d[30] = UInt8(blockSize >> 8); d[31] = UInt8(blockSize & 0xFF)
    return d
}

/// A block-to-block (0x02) segment descriptor.
func blockSegment(source: UInt16, destination: UInt16, blocks: UInt16, sourceLBA: UInt64, destinationLBA: UInt64) -> [UInt8] {
    var d = [UInt8](repeating: 0, count: 28)
    d[0] = 0x02; d[3] = 0x18
    d[4] = UInt8(source >> 8); d[5] = UInt8(source & 0xFF)
    d[6] = UInt8(destination >> 8); d[7] = UInt8(destination & 0xFF)
    d[10] = UInt8(blocks >> 8); d[11] = UInt8(blocks & 0xFF)
    for i in 0..<8 {
        d[12 + i] = UInt8(truncatingIfNeeded: sourceLBA >> (56 - 8 * UInt64(i)))
        d[20 + i] = UInt8(truncatingIfNeeded: destinationLBA >> (56 - 8 * UInt64(i)))
    }
    return d
}

/// An EXTENDED COPY (LID1) parameter list and its CDB.
func extendedCopyLID1(listID: UInt8, usage: UInt8, cscds: [[UInt8]], segments: [[UInt8]]) -> (cdb: [UInt8], list: [UInt8]) {
    let c = cscds.flatMap { $0 }, s = segments.flatMap { $0 }
    var list = [UInt8](repeating: 0, count: 16)
    list[0] = listID; list[1] = usage << 3
    list[2] = UInt8(c.count >> 8); list[3] = UInt8(c.count & 0xFF)
    list[8] = UInt8(s.count >> 24); list[9] = UInt8((s.count >> 16) & 0xFF)
    list[10] = UInt8((s.count >> 8) & 0xFF); list[11] = UInt8(s.count & 0xFF)
    list += c + s
    var cdb = [UInt8](repeating: 0, count: 16)
    cdb[0] = 0x83
    cdb[10] = UInt8(list.count >> 24); cdb[11] = UInt8((list.count >> 16) & 0xFF)
    cdb[12] = UInt8((list.count >> 8) & 0xFF); cdb[13] = UInt8(list.count & 0xFF)
    return (cdb, list)
}

let vpd83CDB: [UInt8] = [0x12, 0x01, 0x83, 0x01, 0x00, 0x00]

/// EXTENDED COPY (LID1) sent to `lun`: `blocks` blocks from `sourceLBA` of the LU itself (CSCD
/// 0xFFFF) to `destinationLBA` of LU `destinationLUN` of the same session, named by its NAA designator.
func copyWithinSession(_ client: ISCSIClient, lun: Int32, destinationLUN: Int32, listID: UInt8, blocks: UInt16,
                       sourceLBA: UInt64, destinationLBA: UInt64) throws {
    let page = try client.scsiCommand(lun: destinationLUN, cdb: vpd83CDB, dataInLength: 256)
    guard let naa = naaDesignator(page) else {
        throw ISCSIClientError(kind: .badData, operation: "VPD 0x83", message: "no NAA designator")
    }
    let (cdb, list) = extendedCopyLID1(listID: listID, usage: 0, cscds: [identificationCSCD(naa)],
                                       segments: [blockSegment(source: 0xFFFF, destination: 0, blocks: blocks,
                                                               sourceLBA: sourceLBA, destinationLBA: destinationLBA)])
    _ = try client.scsiCommand(lun: lun, cdb: cdb, dataOut: list)
}

@Suite("EXTENDED COPY over iSCSI", .timeLimit(.minutes(5)))
struct CopyOffloadIntegrationTests {
    @Test("A copy sent to one target reads its LUN and writes a LUN of another target of the process")
    func crossTarget() async throws {
        try await withTarget { target in
            try await onThread("cross-target xcopy") { checks in
                let a = try ISCSIClient()
                try a.login(portal: target.portal, target: integrationIQN)
                let b = try ISCSIClient(initiatorName: testInitiatorName + "-b")
                try b.login(portal: target.portal, target: secondIQN)
                let data = pattern(seed: 42, count: 1 << 20)
                try a.write10(lun: 0, lba: 100, data: data)
                let page = try b.scsiCommand(lun: 0, cdb: vpd83CDB, dataInLength: 256)
                guard let naa = naaDesignator(page) else { checks.record("no NAA designator"); return }
                // CSCD 0: the other target's LUN; source: 0xFFFF (the LUN receiving the command).
                let (cdb, list) = extendedCopyLID1(listID: 3, usage: 0, cscds: [identificationCSCD(naa)],
                                                   segments: [blockSegment(source: 0xFFFF, destination: 0, blocks: 2048,
                                                                           sourceLBA: 100, destinationLBA: 8)])
                _ = try a.scsiCommand(lun: 0, cdb: cdb, dataOut: list)
                checks.expect(try b.read10(lun: 0, lba: 8, blocks: 2048) == data, "copied data differs")
                // RECEIVE COPY STATUS (LID1), list 3: completed, 1 segment, 1 MiB.
                let status = try a.scsiCommand(lun: 0, cdb: [0x84, 0x00, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0],
                                               dataInLength: 12)
                checks.expect(status == [0, 0, 0, 8, 0x01, 0, 1, 0, 0, 0x10, 0, 0], "status \(status)")
                try a.logout(); try b.logout()
            }
        }
    }
}
