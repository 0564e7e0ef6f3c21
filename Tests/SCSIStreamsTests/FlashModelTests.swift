import SCSI
@testable import SCSIStreams
import Testing

/// SplitMix64: a small deterministic generator, so that replays give the same figures everywhere.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The study of Docs/write-amplification.md: a 64 MiB LU (4 KiB pages, 128 KiB erase blocks)
/// filled once, then 5 × its capacity of random 4 KiB writes, `hotWrites` % of them to the first
/// `hotSpace` % of the LBAs (hot, write hint SHORT = group 2), the rest to the other LBAs (cold,
/// LONG = group 4). Counters are zeroed after the fill and after the first capacity of random
/// writes (warm-up), so the figure is the steady state. `hints: false` sends group 0.
func hotColdReplay(placement: FlashPlacement, hints: Bool, overProvisioning: Double = 0.07,
                   hotWrites: Int = 80, hotSpace: Int = 20, seed: UInt64 = 6) throws -> FlashModelReport {
    let blockSize = 512
    let pages = 16384
    let blocksPerPage = UInt64(4096 / blockSize)
    var model = try FlashModel(settings: FlashModelSettings(pageBytes: 4096, pagesPerBlock: 32,
                                                           overProvisioning: overProvisioning, placement: placement),
                               blockCount: UInt64(pages) * blocksPerPage, blockSize: blockSize)
    let hot = pages * hotSpace / 100
    func group(_ page: Int) -> Int { hints ? (page < hot ? 2 : 4) : 0 }
    for page in 0..<pages { model.write(lba: UInt64(page) * blocksPerPage, blocks: blocksPerPage, stream: group(page)) }
    model.resetCounters()
    var random = SplitMix64(state: seed)
    for round in 0..<5 {
        if round == 1 { model.resetCounters() }
        for _ in 0..<pages {
            let page = Int.random(in: 0..<100, using: &random) < hotWrites
                ? Int.random(in: 0..<hot, using: &random) : Int.random(in: hot..<pages, using: &random)
            model.write(lba: UInt64(page) * blocksPerPage, blocks: blocksPerPage, stream: group(page))
        }
    }
    #expect(model.isConsistent())
    return model.report
}

@Suite struct FlashModelTests {
    func model(_ placement: FlashPlacement = .mixed, pages: Int = 1024, pagesPerBlock: Int = 16,
               overProvisioning: Double = 0.25) throws -> FlashModel {
        try FlashModel(settings: FlashModelSettings(pageBytes: 4096, pagesPerBlock: pagesPerBlock,
                                                    overProvisioning: overProvisioning, placement: placement),
                       blockCount: UInt64(pages * 8), blockSize: 512)
    }

    @Test func geometry() throws {
        let m = try model()
        #expect(m.logicalPages == 1024)
        #expect(m.physicalBlocks == 80)  // 1024 × 1.25 / 16
        #expect(m.report.writeAmplification == 1)
    }

    @Test func tooLittleSpareOrBadGeometryIsRefused() {
        #expect(throws: FlashModelError.tooLittleSpare(needed: 19, have: 4)) {
            try model(.perStream, overProvisioning: 0.05)
        }
        #expect(throws: FlashModelError.self) {
            try FlashModel(settings: FlashModelSettings(pageBytes: 3000), blockCount: 1 << 20, blockSize: 512)
        }
    }

    @Test func sequentialRewritesNeverCopy() throws {
        var m = try model()
        for _ in 0..<10 {
            for page in 0..<1024 { m.write(lba: UInt64(page * 8), blocks: 8, stream: 0) }
        }
        #expect(m.hostPageWrites == 10240)
        #expect(m.flashPageWrites == 10240)
        #expect(m.blockErases > 0)
        #expect(m.isConsistent())
    }

    @Test func partialPagesCountAsWholePagesAndTheEndIsClipped() throws {
        var m = try model()
        m.write(lba: 7, blocks: 2, stream: 0)  // straddles pages 0 and 1
        #expect(m.hostPageWrites == 2)
        m.write(lba: 1024 * 8 - 1, blocks: 16, stream: 0)  // only the last page exists
        #expect(m.hostPageWrites == 3)
        #expect(m.isConsistent())
    }

    @Test func randomOverwritesCopyAndStayConsistent() throws {
        var m = try model()
        var random = SplitMix64(state: 1)
        for _ in 0..<20000 { m.write(lba: UInt64(Int.random(in: 0..<1024, using: &random) * 8), blocks: 8, stream: 0) }
        #expect(m.flashPageWrites > m.hostPageWrites)
        #expect(m.isConsistent())
    }

    @Test func trimInvalidatesWholePagesOnlyAndCountsNoWrite() throws {
        var m = try model()
        for page in 0..<1024 { m.write(lba: UInt64(page * 8), blocks: 8, stream: 0) }
        let written = m.hostPageWrites
        m.trim(lba: 4, blocks: 20)  // pages 0–2 touched; only page 1 (blocks 8–15) and page 2 (16–23) whole
        #expect(m.map[0] != FlashModel.none && m.map[1] == FlashModel.none && m.map[2] == FlashModel.none)
        #expect(m.map[3] != FlashModel.none)
        m.trim(lba: 1024 * 8 - 8, blocks: 64)  // the last page, and beyond the end (ignored)
        #expect(m.map[1023] == FlashModel.none)
        #expect(m.hostPageWrites == written)
        #expect(m.isConsistent())
    }

    @Test func trimmingColdDataLowersWriteAmplification() throws {
        // Fill, then random overwrites of the first half; with the second half trimmed, garbage
        // collection has nothing of it to copy.
        func replay(trim: Bool) throws -> FlashModelReport {
            var m = try model(overProvisioning: 0.1)
            for page in 0..<1024 { m.write(lba: UInt64(page * 8), blocks: 8, stream: 0) }
            if trim { m.trim(lba: 512 * 8, blocks: 512 * 8) }
            m.resetCounters()
            var random = SplitMix64(state: 3)
            for _ in 0..<20000 { m.write(lba: UInt64(Int.random(in: 0..<512, using: &random) * 8), blocks: 8, stream: 0) }
            #expect(m.isConsistent())
            return m.report
        }
        let trimmed = try replay(trim: true), kept = try replay(trim: false)
        #expect(trimmed.writeAmplification < kept.writeAmplification)
    }

    @Test func separatingHotFromColdLowersWriteAmplification() throws {
        let streams = try hotColdReplay(placement: .perStream, hints: true)
        let noHints = try hotColdReplay(placement: .perStream, hints: false)
        let ignored = try hotColdReplay(placement: .mixed, hints: true)
        #expect(noHints.flashPageWrites == ignored.flashPageWrites && noHints.hostPageWrites == ignored.hostPageWrites)
        #expect(streams.writeAmplification < noHints.writeAmplification)
    }

    /// Prints the table of Docs/write-amplification.md.
    @Test func studyTable() throws {
        for (hotWrites, hotSpace) in [(80, 20), (90, 10), (95, 5)] {
            for overProvisioning in [0.07, 0.28] {
                let with = try hotColdReplay(placement: .perStream, hints: true, overProvisioning: overProvisioning,
                                             hotWrites: hotWrites, hotSpace: hotSpace)
                let without = try hotColdReplay(placement: .perStream, hints: false, overProvisioning: overProvisioning,
                                                hotWrites: hotWrites, hotSpace: hotSpace)
                let wa = { (r: FlashModelReport) in String(Int((r.writeAmplification * 100).rounded())) }
                print("flash study | \(hotWrites)/\(hotSpace) | \(Int(overProvisioning * 100)) % | "
                      + "\(wa(without)) | \(wa(with)) | (WA × 100; erases \(without.blockErases) / \(with.blockErases))")
                #expect(with.writeAmplification < without.writeAmplification)
            }
        }
    }
}

@Suite struct FlashLogPageTests {
    @Test func logPage30hReportsTheModel() throws {
        let h = Harness(.defaultTarget, blockCount: 8192, flash: FlashModelSettings(pagesPerBlock: 16, overProvisioning: 0.5))
        let streams = h.streams
        let block = [UInt8](repeating: 7, count: 4096)
        #expect(h.run([0x2A, 0, 0, 0, 0, 0, 2, 0, 8, 0], dataOut: block).status == .good)  // page 0, group 2
        #expect(h.run(writeStream16(lba: 9, blocks: 1, stream: 3), dataOut: Array(block[0..<512])).status == .good)
        #expect(streams.flashReport(lun: 0)?.hostPageWrites == 2)
        let page = h.run([0x4D, 0, 0x70, 0, 0, 0, 0, 0xFF, 0xFF, 0]).data
        let expected: [UInt8] = [0xB0, 0x00, 0x00, 0x40,
                                 0x00, 0x00, 0x03, 0x08, 0, 0, 0, 0, 0, 0, 0, 2,
                                 0x00, 0x01, 0x03, 0x08, 0, 0, 0, 0, 0, 0, 0, 2,
                                 0x00, 0x02, 0x03, 0x08, 0, 0, 0, 0, 0, 0, 0, 0,
                                 0x00, 0x03, 0x03, 0x08, 0, 0, 0, 0, 0, 0, 0x03, 0xE8,
                                 0x00, 0x04, 0x03, 0x0C, 0, 0, 0x10, 0, 0, 0, 0, 16, 0x01, 0xF4, 1, 8]
        #expect(page == expected)
        #expect(h.run([0x4C, 0x02, 0x70, 0, 0, 0, 0, 0, 0, 0], edtl: 0).status == .good)
        #expect(streams.flashReport(lun: 0)?.hostPageWrites == 0)
        let supported: [UInt8] = [0, 0, 0, 4, 0x00, 0x0D, 0x19, 0x30]
        #expect(h.run([0x4D, 0, 0x00, 0, 0, 0, 0, 0xFF, 0xFF, 0]).data == supported)
    }
}
