import NIOCore
import SCSI
@testable import SCSIStreams
import Testing

/// scsi_debug's fixed configuration, which the reference samples were captured from.
let scsiDebugLike = StreamSettings(maximumStreams: 6, permanentStreams: 5)

let modeSense10IOAdvice: [UInt8] = [0x5A, 0x08, 0x0A, 0x05, 0, 0, 0, 0x02, 0x00, 0]  // what Linux sd sends

func getStreamStatus(start: UInt16, allocation: UInt32) -> [UInt8] {
    [0x9E, 0x16, 0, 0, UInt8(start >> 8), UInt8(start & 0xFF), 0, 0, 0, 0,
     UInt8(allocation >> 24), UInt8((allocation >> 16) & 0xFF), UInt8((allocation >> 8) & 0xFF), UInt8(allocation & 0xFF),
     0, 0]
}

let streamOpen: [UInt8] = [0x9E, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0]
func streamClose(_ id: UInt8) -> [UInt8] { [0x9E, 0x54, 0, 0, 0, id, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0] }

func writeStream16(lba: UInt8, blocks: UInt8, stream: UInt8, group: UInt8 = 0) -> [UInt8] {
    [0x9A, 0, 0, 0, 0, 0, 0, 0, 0, lba, 0, stream, 0, blocks, group, 0]
}

func writeStream32(lba: UInt8, blocks: UInt8, stream: UInt8, group: UInt8 = 0) -> [UInt8] {
    var cdb = [UInt8](repeating: 0, count: 32)
    cdb[0] = 0x7F
    cdb[5] = stream
    cdb[6] = group
    cdb[7] = 0x18
    cdb[9] = 0x10
    cdb[19] = lba
    cdb[31] = blocks
    return cdb
}

@Suite struct SampleTests {
    @Test func blockLimitsExtensionMatchesSample() throws {
        let h = Harness(scsiDebugLike)
        #expect(h.run([0x12, 0x01, 0xB7, 0x01, 0x00, 0]).data == (try sample("b7.hex")))
    }

    @Test func groupingPageThroughLinuxModeSense10MatchesSample() throws {
        let h = Harness(scsiDebugLike)
        let response = h.run(modeSense10IOAdvice)
        #expect(response.status == .good)
        #expect(response.data == (try sample("ms10_ioad.hex")))
    }

    @Test func getStreamStatusMatchesSample() throws {
        let h = Harness(scsiDebugLike)
        #expect(h.run(streamOpen).data == [0x07, 0, 0, 0, 0, 0x05, 0, 0])  // the one non-permanent stream
        #expect(h.run(getStreamStatus(start: 0, allocation: 248)).data == (try sample("gss.hex")))
    }

    @Test func streamControlOpenMatchesSample() throws {
        let h = Harness(StreamSettings(maximumStreams: 8, permanentStreams: 3))
        #expect(h.run(streamOpen).data == (try sample("sc_open.hex")))
    }
}

@Suite struct InquiryTests {
    @Test func vpdListHasB7InOrderAndExtendedInquiryHasGroupSup() {
        let h = Harness()
        let list = h.run([0x12, 0x01, 0x00, 0x00, 0xFF, 0]).data
        #expect(Array(list.dropFirst(4)) == [0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2, 0xB7])
        #expect(list[3] == 8)
        let extended = h.run([0x12, 0x01, 0x86, 0x00, 0xFF, 0]).data
        #expect(extended[5] == 0x17)  // GROUP_SUP | HEADSUP | ORDSUP | SIMPSUP
    }

    @Test func defaultTargetReportsEightStreams() {
        let page = Harness().run([0x12, 0x01, 0xB7, 0x00, 0xFF, 0]).data
        #expect(page.count == 32)
        #expect(page[5] == 0x01 && page[6] == 0 && page[7] == 8)
    }

    @Test func noStreamsMeansNoPagesAndNoCommands() {
        let h = Harness(StreamSettings(maximumStreams: 0, permanentStreams: 0))
        #expect(!h.run([0x12, 0x01, 0x00, 0x00, 0xFF, 0]).data.contains(0xB7))
        #expect(h.run([0x12, 0x01, 0xB7, 0x00, 0xFF, 0]).senseTriple == [0x05, 0x24, 0x00])
        #expect(h.run(writeStream16(lba: 0, blocks: 1, stream: 0), dataOut: [UInt8](repeating: 0, count: 512))
            .senseTriple == [0x05, 0x20, 0x00])
    }

    @Test func reportSupportedOperationCodesListsStreamCommands() {
        let h = Harness()
        let all = h.run([0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]).data
        var entries: [(UInt8, UInt16)] = []
        var offset = 4
        while offset + 8 <= all.count {
            entries.append((all[offset], UInt16(all[offset + 2]) << 8 | UInt16(all[offset + 3])))
            offset += 8
        }
        #expect(entries.contains { $0 == (0x9A, 0) })
        #expect(entries.contains { $0 == (0x7F, 0x10) })
        #expect(entries.contains { $0 == (0x9E, 0x14) })
        #expect(entries.contains { $0 == (0x9E, 0x16) })
        // One command: WRITE STREAM(32) usage data (reporting options 011b).
        let one = h.run([0xA3, 0x0C, 0x03, 0x7F, 0x00, 0x10, 0, 0, 0x01, 0, 0, 0]).data
        #expect(one[1] & 0x07 == 0x03 && one[3] == 32 && one[4] == 0x7F && one[13] == 0x10)
    }
}

@Suite struct StreamControlTests {
    @Test func openAssignsLowestFreeIdentifierThenRunsOut() {
        let h = Harness()  // 8 streams, 0–5 permanent
        #expect(h.run(streamOpen).data[5] == 6)
        #expect(h.run(streamOpen).data[5] == 7)
        let full = h.run(streamOpen)
        #expect(full.status == .checkCondition)
        #expect(full.senseTriple == [0x07, 0x55, 0x10])
        #expect(h.run(streamClose(6)).status == .good)
        #expect(h.run(streamOpen).data[5] == 6)
    }

    @Test func closingAStreamThatIsNotOpenOrIsPermanentIsInvalid() {
        let h = Harness()
        #expect(h.run(streamClose(7)).senseTriple == [0x05, 0x24, 0x00])
        #expect(h.run(streamClose(2)).senseTriple == [0x05, 0x24, 0x00])
        #expect(h.run([0x9E, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]).senseTriple == [0x05, 0x24, 0x00])
    }

    @Test func streamsOpenedByANexusCloseWithIt() {
        let h = Harness()
        #expect(h.run(streamOpen, nexus: nexus(2)).data[5] == 6)
        #expect(h.streams.openStreams(lun: 0) == [0, 1, 2, 3, 4, 5, 6])
        h.device.nexusDidClose(nexus(2))  // the device noted the nexus when it saw its first command
        #expect(h.streams.openStreams(lun: 0) == [0, 1, 2, 3, 4, 5])
    }

    @Test func logicalUnitResetClosesOpenedStreams() {
        let h = Harness()
        _ = h.run(streamOpen)
        #expect(h.device.taskManagement(.logicalUnitReset, lunField: 0, nexus: nexus()) == .functionComplete)
        #expect(h.streams.openStreams(lun: 0) == [0, 1, 2, 3, 4, 5])
    }
}

@Suite struct GetStreamStatusTests {
    @Test func linuxProbeSeesPermanentStreams() {
        let h = Harness()
        for id: UInt16 in 0..<6 {
            let data = h.run(getStreamStatus(start: id, allocation: 16)).data
            #expect(data.count == 16)
            #expect(data[8] & 0x80 == 0x80)  // PERM
            #expect(data[10] == 0 && UInt16(data[11]) == id)
        }
        // Stream 6 is not open: no descriptor with PERM, so sd stops counting at 6.
        let six = h.run(getStreamStatus(start: 6, allocation: 16)).data
        #expect(six.count == 8 && six[3] == 0 && six[7] == 6)
    }

    @Test func parameterDataLengthDoesNotDependOnAllocationLength() {
        let h = Harness()
        let short = h.run(getStreamStatus(start: 0, allocation: 16)).data
        #expect(Array(short.prefix(8)) == [0, 0, 0, 0x30, 0, 0, 0, 6])
        let full = h.run(getStreamStatus(start: 0, allocation: 248)).data
        #expect(full.count == 8 + 48)
        #expect(Array(full[48..<56]) == [0x80, 0, 0, 5, 6, 0, 0, 0])
    }

    @Test func startingIdentifierBeyondTheMaximumIsInvalid() {
        #expect(Harness().run(getStreamStatus(start: 8, allocation: 64)).senseTriple == [0x05, 0x24, 0x00])
    }

    @Test func openedStreamIsListedWithoutPerm() {
        let h = Harness()
        _ = h.run(streamOpen)
        let data = h.run(getStreamStatus(start: 6, allocation: 64)).data
        #expect(Array(data.prefix(8)) == [0, 0, 0, 8, 0, 0, 0, 7])
        #expect(Array(data[8..<16]) == [0x00, 0, 0, 6, 7, 0, 0, 0])
    }
}

@Suite struct WriteStreamTests {
    @Test func writeStreamToAClosedStreamIsStreamNotOpen() {
        let h = Harness()
        let block = [UInt8](repeating: 0xAB, count: 512)
        #expect(h.run(writeStream16(lba: 1, blocks: 1, stream: 7), dataOut: block).senseTriple == [0x05, 0x2C, 0x0F])
        #expect(h.run(writeStream32(lba: 1, blocks: 1, stream: 6), dataOut: block).senseTriple == [0x05, 0x2C, 0x0F])
        #expect(h.run(writeStream16(lba: 1, blocks: 1, stream: 9), dataOut: block).senseTriple == [0x05, 0x24, 0x00])
    }

    @Test func writeStreamWritesAndCountsPerStreamAndGroup() {
        let h = Harness()
        let block = [UInt8](repeating: 0xAB, count: 1024)
        #expect(h.run(writeStream16(lba: 4, blocks: 2, stream: 3, group: 9), dataOut: block).status == .good)
        #expect(h.run(streamOpen).data[5] == 6)
        #expect(h.run(writeStream32(lba: 8, blocks: 2, stream: 6), dataOut: block).status == .good)
        let read = h.run([0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0], edtl: 1024).data
        #expect(read == block)
        #expect(h.run([0x28, 0, 0, 0, 0, 8, 0, 0, 2, 0], edtl: 1024).data == block)
        let stats = h.streams.statistics(lun: 0)!
        #expect(stats.streams[3].writeCommands == 1 && stats.streams[3].blocksWritten == 2)
        #expect(stats.streams[6].writeCommands == 1 && stats.streams[6].bytesWritten == 1024)
        #expect(stats.groups[9].writeCommands == 1)
        #expect(stats.groups[0].writeCommands == 1 && stats.groups[0].readCommands == 2)
    }

    @Test func writeStream32IsOptIn() {
        let h = Harness(.defaultTarget)
        let response = h.run(writeStream32(lba: 0, blocks: 1, stream: 1), dataOut: [UInt8](repeating: 0, count: 512))
        #expect(response.senseTriple == [0x05, 0x24, 0x00])  // 7Fh known (service action not offered)
        #expect(h.run(writeStream16(lba: 0, blocks: 1, stream: 1), dataOut: [UInt8](repeating: 0, count: 512)).status == .good)
    }

    @Test func writeStream32NeedsAdditionalLength18h() {
        var cdb = writeStream32(lba: 0, blocks: 1, stream: 1)
        cdb[7] = 0x10
        #expect(Harness().run(cdb, dataOut: [UInt8](repeating: 0, count: 512)).senseTriple == [0x05, 0x24, 0x00])
    }

    @Test func groupNumbersOfOrdinaryCommandsAreCounted() {
        let h = Harness()
        let block = [UInt8](repeating: 1, count: 512)
        // WRITE(10) group 3, WRITE(16) group 5, WRITE(12) group 2, READ(16) group 4, WRITE(10) group 40.
        #expect(h.run([0x2A, 0, 0, 0, 0, 1, 3, 0, 1, 0], dataOut: block).status == .good)
        #expect(h.run([0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 5, 0], dataOut: block).status == .good)
        #expect(h.run([0xAA, 0, 0, 0, 0, 3, 0, 0, 0, 1, 2, 0], dataOut: block).status == .good)
        #expect(h.run([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 4, 0], edtl: 512).status == .good)
        #expect(h.run([0x2A, 0, 0, 0, 0, 1, 40, 0, 1, 0], dataOut: block).status == .good)
        let stats = h.streams.statistics(lun: 0)!
        #expect(stats.groups[3].writeCommands == 1 && stats.groups[5].writeCommands == 1)
        #expect(stats.groups[2].writeCommands == 1 && stats.groups[4].readCommands == 1)
        #expect(stats.groups[40].writeCommands == 1)
        #expect(stats.streams[3].writeCommands == 1 && stats.streams[5].writeCommands == 1)
        #expect(stats.streams[4].readCommands == 1)
        #expect(stats.streams.reduce(0) { $0 + $1.writeCommands } == 3)  // group 40 is no stream
    }

    @Test func countingFromManyThreadsLosesNothing() async {
        // The counters are atomics without a lock: concurrent READs and WRITEs all count.
        let unit = StreamUnit(lun: 0, settings: StreamSettings.defaultTarget)
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for _ in 0..<10_000 {
                        unit.record(worker % 2 == 0 ? .read : .write, stream: nil, group: 3, blocks: 8, bytes: 4096)
                    }
                }
            }
        }
        let stats = unit.statistics
        #expect(stats.groups[3].readCommands == 20_000 && stats.groups[3].writeCommands == 20_000)
        #expect(stats.groups[3].blocksRead == 160_000 && stats.groups[3].bytesWritten == 81_920_000)
        #expect(stats.streams[3] == stats.groups[3])  // group 3 is a permanent stream by default
        #expect(unit.resetCounters(group: nil) && !unit.resetCounters(group: nil))
        #expect(unit.statistics == StreamStatistics(streams: unit.descriptorCount))
    }
}

@Suite struct GroupingModePageTests {
    @Test func modeSense6ReturnsTheSubpage() {
        let h = Harness(scsiDebugLike)
        let data = h.run([0x1A, 0x08, 0x0A, 0x05, 0xFF, 0]).data
        let ms10 = try! sample("ms10_ioad.hex")
        #expect(data[0] == UInt8(4 + 112 - 1) && data[3] == 0)
        #expect(Array(data.dropFirst(4)) == Array(ms10.dropFirst(8)))
    }

    @Test func listingsIncludeTheSubpageInOrder() {
        let h = Harness()
        func pages(_ data: [UInt8]) -> [[UInt8]] {
            var out: [[UInt8]] = []
            var offset = 8
            while offset < data.count {
                if data[offset] & 0x40 != 0 {
                    out.append([data[offset] & 0x3F, data[offset + 1]])
                    offset += 4 + Int(data[offset + 2]) << 8 + Int(data[offset + 3])
                } else {
                    out.append([data[offset] & 0x3F, 0])
                    offset += 2 + Int(data[offset + 1])
                }
            }
            return out
        }
        let all = h.run([0x5A, 0x08, 0x3F, 0xFF, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect(pages(all) == [[0x01, 0], [0x08, 0], [0x0A, 0], [0x0A, 0x05], [0x1C, 0]])
        let subpageZero = h.run([0x5A, 0x08, 0x3F, 0x00, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect(pages(subpageZero) == [[0x01, 0], [0x08, 0], [0x0A, 0], [0x1C, 0]])
        let control = h.run([0x5A, 0x08, 0x0A, 0xFF, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect(pages(control) == [[0x0A, 0], [0x0A, 0x05]])
        #expect(h.run([0x5A, 0x08, 0x0A, 0x06, 0, 0, 0, 0x10, 0x00, 0]).senseTriple == [0x05, 0x24, 0x00])
    }

    @Test func changeableDefaultAndSavedValues() {
        let h = Harness()
        let changeable = h.run([0x5A, 0x08, 0x4A, 0x05, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect(changeable.count == 8 + 16 + 8 * 16)
        #expect(Array(changeable[24..<31]) == [0xC2, 0, 0, 0, 0xBF, 0xFF, 0xFF])
        let defaults = h.run([0x5A, 0x08, 0x8A, 0x05, 0, 0, 0, 0x10, 0x00, 0]).data
        #expect((0..<8).map { defaults[24 + 16 * $0] } == [4, 4, 4, 4, 4, 4, 0, 0])
        #expect(h.run([0x5A, 0x08, 0xCA, 0x05, 0, 0, 0, 0x10, 0x00, 0]).senseTriple == [0x05, 0x39, 0x00])
    }

    @Test func modeSelectChangesHintsButNotStreamEnable() {
        let h = Harness()
        var page = Array(h.run(modeSense10IOAdvice).data.dropFirst(8))
        page[0] &= 0x7F  // PS is reserved in MODE SELECT
        page[16 + 16 * 2 + 5] = 0x55  // descriptor 2: access pattern frequencies
        page[16 + 16 * 2] |= 0x02  // CS_ENBLE
        var list: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0] + page
        let length = UInt8(list.count)
        #expect(h.run([0x55, 0x10, 0, 0, 0, 0, 0, 0, length, 0], dataOut: list).status == .good)
        let after = h.run(modeSense10IOAdvice).data
        #expect(after[8 + 16 + 32] == 0x06 && after[8 + 16 + 32 + 5] == 0x55)
        // ST_ENBLE is not changeable.
        list[8 + 16 + 16 * 7] = 0x04
        #expect(h.run([0x55, 0x10, 0, 0, 0, 0, 0, 0, length, 0], dataOut: list).senseTriple == [0x05, 0x26, 0x00])
        // A LU reset restores the defaults.
        _ = h.device.taskManagement(.logicalUnitReset, lunField: 0, nexus: nexus())
        #expect(h.run(modeSense10IOAdvice).senseTriple == [0x06, 0x29, 0x00])
        #expect(h.run(modeSense10IOAdvice).data.dropFirst(8 + 16 + 32).first == 0x04)
    }
}
