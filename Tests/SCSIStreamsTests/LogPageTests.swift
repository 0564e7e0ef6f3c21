import SCSI
@testable import SCSIStreams
import Testing

func logSense(page: UInt8, subpage: UInt8, pc: UInt8 = 1) -> [UInt8] {
    [0x4D, 0, pc << 6 | page, subpage, 0, 0, 0, 0xFF, 0xFF, 0]
}

/// Group Statistics and Performance (n) with one 30h-byte parameter 0001h.
func groupPage(_ n: UInt8, reads: UInt8, writes: UInt8, received: UInt8, transmitted: UInt8) -> [UInt8] {
    var page: [UInt8] = [0xC0 | 0x19, n, 0x00, 0x34, 0x00, 0x01, 0x03, 0x30]
    for value in [reads, writes, received, transmitted, 0, 0] { page += [0, 0, 0, 0, 0, 0, 0, value] }
    return page
}

@Suite struct StatisticsLogPageTests {
    let block = [UInt8](repeating: 0x5A, count: 512)

    @Test func listingsIncludeTheStatisticsPages() {
        let h = Harness()
        #expect(h.run(logSense(page: 0, subpage: 0)).data == [0x00, 0x00, 0x00, 0x03, 0x00, 0x0D, 0x19])
        let all = h.run(logSense(page: 0, subpage: 0xFF)).data
        #expect(all.count == 4 + 2 * (4 + 33))
        var statistics: [UInt8] = [0x19, 0x00]
        for n in 1...31 { statistics += [0x19, UInt8(n)] }
        statistics += [0x19, 0xFF]
        #expect(Array(all[12...]) == statistics)
        let sub = h.run(logSense(page: 0x19, subpage: 0xFF)).data
        #expect(Array(sub[0..<4]) == [0x59, 0xFF, 0x00, 0x42])
    }

    @Test func groupPageCountsWhatCarriedTheGroupNumber() {
        let h = Harness()
        // WRITE(10) group 1 (2 blocks), WRITE(16) group 1 (1 block), READ(10) group 1 (3 blocks), WRITE(10) group 2.
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 1, 0, 2, 0], dataOut: block + block).status == .good)
        #expect(h.run([0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 1, 0], dataOut: block).status == .good)
        #expect(h.run([0x28, 0, 0, 0, 0, 0, 1, 0, 3, 0], edtl: 1536).status == .good)
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 2, 0, 1, 0], dataOut: block).status == .good)
        #expect(h.run(logSense(page: 0x19, subpage: 1)).data == groupPage(1, reads: 1, writes: 2, received: 3, transmitted: 3))
        #expect(h.run(logSense(page: 0x19, subpage: 2)).data == groupPage(2, reads: 0, writes: 1, received: 1, transmitted: 0))
        #expect(h.run(logSense(page: 0x19, subpage: 31)).data == groupPage(31, reads: 0, writes: 0, received: 0, transmitted: 0))
        // Default cumulative and threshold values: zero.
        #expect(h.run(logSense(page: 0x19, subpage: 1, pc: 3)).data == groupPage(1, reads: 0, writes: 0, received: 0, transmitted: 0))
        #expect(h.run(logSense(page: 0x19, subpage: 1, pc: 0)).data == groupPage(1, reads: 0, writes: 0, received: 0, transmitted: 0))
        #expect(h.run(logSense(page: 0x19, subpage: 0x20)).senseTriple == [0x05, 0x24, 0x00])
    }

    @Test func generalPageIsTheSumOfAllGroups() {
        let h = Harness()
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 1, 0, 1, 0], dataOut: block).status == .good)
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 40, 0, 1, 0], dataOut: block).status == .good)
        #expect(h.run([0x08, 0, 0, 0, 2, 0], edtl: 1024).status == .good)  // READ(6): group 0
        let page = h.run(logSense(page: 0x19, subpage: 0)).data
        #expect(page.count == 4 + 0x5C)
        #expect(Array(page[0..<8]) == [0x99, 0x00, 0x00, 0x5C, 0x00, 0x01, 0x03, 0x40])
        #expect(page[15] == 1 && page[23] == 2 && page[31] == 2 && page[39] == 2)
        #expect(Array(page[72..<76]) == [0x00, 0x02, 0x03, 0x08])
        let interval: [UInt8] = [0x00, 0x03, 0x03, 0x08, 0, 0, 0, 3, 0, 0, 0, 1]
        #expect(Array(page[84...]) == interval)
    }

    @Test func logSelectResetsAGroupOrEverythingAndTellsTheOtherNexuses() {
        let h = Harness()
        h.device.nexusDidOpen(nexus(2))
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 1, 0, 1, 0], dataOut: block).status == .good)
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 2, 0, 1, 0], dataOut: block, nexus: nexus(2)).status == .good)
        // PCR = 1, PC = 01b, page 19h/01h.
        #expect(h.run([0x4C, 0x02, 0x59, 0x01, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(h.streams.statistics(lun: 0)!.groups[1] == TransferCounters())
        #expect(h.streams.statistics(lun: 0)!.groups[2].writeCommands == 1)
        #expect(h.run([0x00, 0, 0, 0, 0, 0], edtl: 0, nexus: nexus(2)).senseTriple == [0x06, 0x2A, 0x02])
        // PCR = 0, PC = 11b, every page: all counters, no new unit attention when nothing changed twice.
        #expect(h.run([0x4C, 0x00, 0xC0, 0x00, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(h.streams.statistics(lun: 0)!.groups[2] == TransferCounters())
        #expect(h.streams.statistics(lun: 0)!.streams[2] == TransferCounters())
        #expect(h.run([0x00, 0, 0, 0, 0, 0], edtl: 0, nexus: nexus(2)).senseTriple == [0x06, 0x2A, 0x02])
        #expect(h.run([0x4C, 0x02, 0x40, 0x00, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(h.run([0x00, 0, 0, 0, 0, 0], edtl: 0, nexus: nexus(2)).status == .good)
    }
}
