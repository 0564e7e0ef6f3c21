import CopyOffload
import SCSI
import Testing

/// Builders for parameter lists (LID1 and LID4).
enum Lists {
    static let naa: [UInt8] = [0x60, 0x5A, 0x49, 0x53, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    static let naaOther: [UInt8] = [0x60, 0x5A, 0x49, 0x53, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8]

    static func cscd(_ designator: [UInt8] = naa, type: UInt8 = 0xE4, byte1: UInt8 = 0, blockLength: UInt32 = 512) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 32)
        d[0] = type
        d[1] = byte1
        d[4] = 0x01  // binary
        d[5] = 0x03  // association LU, NAA
        d[7] = UInt8(designator.count)
        d.replaceSubrange(8..<(8 + designator.count), with: designator)
        d[29] = UInt8(blockLength >> 16); d[30] = UInt8((blockLength >> 8) & 0xFF); d[31] = UInt8(blockLength & 0xFF)
        return d
    }

    static func b2b(source: UInt16 = 0, destination: UInt16 = 1, blocks: UInt16, sourceLBA: UInt64, destinationLBA: UInt64,
                    type: UInt8 = 0x02, dc: Bool = false) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 28)
        d[0] = type
        d[1] = dc ? 0x02 : 0
        d[3] = 0x18
        d[4] = UInt8(source >> 8); d[5] = UInt8(source & 0xFF)
        d[6] = UInt8(destination >> 8); d[7] = UInt8(destination & 0xFF)
        d[10] = UInt8(blocks >> 8); d[11] = UInt8(blocks & 0xFF)
        for i in 0..<8 {
            d[12 + i] = UInt8((sourceLBA >> (56 - 8 * UInt64(i))) & 0xFF)
            d[20 + i] = UInt8((destinationLBA >> (56 - 8 * UInt64(i))) & 0xFF)
        }
        return d
    }

    static func b2bBytes(source: UInt16 = 0, destination: UInt16 = 1, bytes: UInt32, sourceLBA: UInt64, destinationLBA: UInt64,
                         sourceOffset: UInt16, destinationOffset: UInt16) -> [UInt8] {
        var d = b2b(source: source, destination: destination, blocks: 0, sourceLBA: sourceLBA, destinationLBA: destinationLBA)
        d[0] = 0x0A
        d[3] = 0x1C
        d[8] = UInt8(bytes >> 24); d[9] = UInt8((bytes >> 16) & 0xFF); d[10] = UInt8((bytes >> 8) & 0xFF); d[11] = UInt8(bytes & 0xFF)
        d += [UInt8(sourceOffset >> 8), UInt8(sourceOffset & 0xFF), UInt8(destinationOffset >> 8), UInt8(destinationOffset & 0xFF)]
        return d
    }

    static func lid1(listID: UInt8 = 1, usage: UInt8 = 0, priority: UInt8 = 0, cscds: [[UInt8]], segments: [[UInt8]],
                     inline: UInt32 = 0) -> [UInt8] {
        let c = cscds.flatMap { $0 }
        let s = segments.flatMap { $0 }
        var h = [UInt8](repeating: 0, count: 16)
        h[0] = listID
        h[1] = usage << 3 | priority
        h[2] = UInt8(c.count >> 8); h[3] = UInt8(c.count & 0xFF)
        h[8] = UInt8(s.count >> 24); h[9] = UInt8((s.count >> 16) & 0xFF); h[10] = UInt8((s.count >> 8) & 0xFF); h[11] = UInt8(s.count & 0xFF)
        h[12] = UInt8(inline >> 24); h[15] = UInt8(inline & 0xFF)
        return h + c + s
    }

    static func lid4(listID: UInt32 = 0x1234, usage: UInt8 = 0, cscds: [[UInt8]], segments: [[UInt8]]) -> [UInt8] {
        let c = cscds.flatMap { $0 }
        let s = segments.flatMap { $0 }
        var h = [UInt8](repeating: 0, count: 48)
        h[0] = 0x01
        h[1] = usage << 3
        h[20] = UInt8(listID >> 24); h[21] = UInt8((listID >> 16) & 0xFF); h[22] = UInt8((listID >> 8) & 0xFF); h[23] = UInt8(listID & 0xFF)
        h[42] = UInt8(c.count >> 8); h[43] = UInt8(c.count & 0xFF)
        h[44] = UInt8(s.count >> 8); h[45] = UInt8(s.count & 0xFF)
        return h + c + s
    }
}

/// Fixed-format sense bytes: key, ASC/ASCQ, optional CSI and SKS field pointer (C/D = 0).
func fixedSense(_ key: UInt8, _ asc: UInt8, _ ascq: UInt8, csi: UInt32? = nil, field: UInt16? = nil, bit: UInt8? = nil,
                cd: Bool = false) -> [UInt8] {
    var s = [UInt8](repeating: 0, count: 18)
    s[0] = 0x70; s[2] = key; s[7] = 10; s[12] = asc; s[13] = ascq
    if let csi { s[8] = UInt8(csi >> 24); s[9] = UInt8((csi >> 16) & 0xFF); s[10] = UInt8((csi >> 8) & 0xFF); s[11] = UInt8(csi & 0xFF) }
    if let field {
        s[15] = 0x80 | (cd ? 0x40 : 0) | (bit.map { 0x08 | $0 } ?? 0)
        s[16] = UInt8(field >> 8); s[17] = UInt8(field & 0xFF)
    }
    return s
}

func parseError(_ list: [UInt8], _ format: ExtendedCopyFormat = .lid1, limits: CopyLimits = CopyLimits()) -> [UInt8]? {
    do {
        _ = try ExtendedCopyList.parse(list, format: format, limits: limits)
        return nil
    } catch {
        return error.sense?.encodeFixed()
    }
}

@Suite("EXTENDED COPY parameter lists")
struct ParameterListTests {
    @Test("An empty parameter list copies nothing and is not an error")
    func emptyList() throws {
        #expect(try ExtendedCopyList.parse([], format: .lid1, limits: CopyLimits()) == nil)
    }

    @Test("LID1: header, CSCDs and a block-to-block segment decode")
    func lid1Decodes() throws {
        let bytes = Lists.lid1(listID: 7, usage: 2, priority: 1, cscds: [Lists.cscd(), Lists.cscd(Lists.naaOther)],
                               segments: [Lists.b2b(blocks: 16, sourceLBA: 8, destinationLBA: 0x1_0000_0000)])
        let list = try #require(try ExtendedCopyList.parse(bytes, format: .lid1, limits: CopyLimits()))
        #expect(list.listID == 7)
        #expect(list.usage == .noHold)
        #expect(list.priority == 1)
        #expect(list.cscds.count == 2)
        #expect(list.cscds[0].offset == 16)
        #expect(list.cscds[1].designator == Designator(codeSet: 1, association: 0, type: 3, value: Lists.naaOther))
        #expect(list.cscds[0].blockLength == 512)
        #expect(list.segments == [SegmentDescriptor(offset: 80, kind: .blockToBlock(BlockToBlockSegment(
            sourceIndex: 0, destinationIndex: 1, destinationCount: false, cat: false, length: .blocks(16),
            sourceLBA: 8, destinationLBA: 0x1_0000_0000, sourceByteOffset: 0, destinationByteOffset: 0)))])
    }

    @Test("LID4: 48-byte header, 32-bit list ID, 0x0A and 0x07 segments")
    func lid4Decodes() throws {
        var verify = [UInt8](repeating: 0, count: 12)
        verify[0] = 0x07; verify[3] = 0x08; verify[8] = 0x01
        let bytes = Lists.lid4(listID: 0xDEAD_BEEF, cscds: [Lists.cscd()],
                               segments: [Lists.b2bBytes(source: 0, destination: 0xFFFF, bytes: 1000, sourceLBA: 1,
                                                         destinationLBA: 2, sourceOffset: 3, destinationOffset: 4), verify])
        let list = try #require(try ExtendedCopyList.parse(bytes, format: .lid4, limits: CopyLimits()))
        #expect(list.listID == 0xDEAD_BEEF)
        #expect(list.segments.count == 2)
        #expect(list.segments[0].offset == 80)
        #expect(list.segments[0].typeCode == 0x0A)
        guard case .blockToBlock(let b2b) = list.segments[0].kind else { Issue.record("kind"); return }
        #expect(b2b.length == .bytes(1000))
        #expect(b2b.sourceByteOffset == 3 && b2b.destinationByteOffset == 4 && b2b.destinationIndex == 0xFFFF)
        #expect(list.segments[1] == SegmentDescriptor(offset: 112, kind: .verify(sourceIndex: 0, testUnitReady: true)))
    }

    @Test("A list shorter than the header, or than the lengths it declares: 1A/00")
    func shortLists() {
        #expect(parseError([0, 0, 0]) == fixedSense(0x05, 0x1A, 0x00))
        var full = Lists.lid1(cscds: [Lists.cscd()], segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)])
        full.removeLast()
        #expect(parseError(full) == fixedSense(0x05, 0x1A, 0x00))
        // libiscsi ParamHdr: header declares 32 + 28, the list carries 16 + 32 − 1.
        #expect(parseError(Array(Lists.lid1(cscds: [Lists.cscd()], segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)]).prefix(47)))
                == fixedSense(0x05, 0x1A, 0x00))
        #expect(parseError(Array(Lists.lid4(cscds: [], segments: []).prefix(40)), .lid4) == fixedSense(0x05, 0x1A, 0x00))
    }

    @Test("Descriptor list longer than the maximum is 1A/00, checked before the counts")
    func totalLengthBeforeCounts() {
        let limits = CopyLimits(maximumCSCDCount: 2, maximumSegmentCount: 2, maximumDescriptorListLength: 100)
        let list = Lists.lid1(cscds: Array(repeating: Lists.cscd(), count: 3),
                              segments: Array(repeating: Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0), count: 3))
        #expect(parseError(list, limits: limits) == fixedSense(0x05, 0x1A, 0x00))
    }

    @Test("Too many CSCDs: 26/06 pointing at the CSCD list length; too many segments: 26/08")
    func counts() {
        let limits = CopyLimits(maximumCSCDCount: 2, maximumSegmentCount: 2)
        let seg = Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)
        #expect(parseError(Lists.lid1(cscds: Array(repeating: Lists.cscd(), count: 3), segments: [seg]), limits: limits)
                == fixedSense(0x05, 0x26, 0x06, field: 2))
        #expect(parseError(Lists.lid1(cscds: [Lists.cscd()], segments: Array(repeating: seg, count: 3)), limits: limits)
                == fixedSense(0x05, 0x26, 0x08, field: 8))
        #expect(parseError(Lists.lid4(cscds: [Lists.cscd()], segments: Array(repeating: seg, count: 3)), .lid4, limits: limits)
                == fixedSense(0x05, 0x26, 0x08, field: 44))
        // Counts come before types: three unknown CSCDs are "too many", not "unsupported".
        #expect(parseError(Lists.lid1(cscds: Array(repeating: Lists.cscd(type: 0xE0), count: 3), segments: [seg]), limits: limits)
                == fixedSense(0x05, 0x26, 0x06, field: 2))
    }

    @Test("Unsupported CSCD type: 26/07 at the descriptor; unsupported segment type: 26/09")
    func types() {
        let seg = Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)
        #expect(parseError(Lists.lid1(cscds: [Lists.cscd(), Lists.cscd(type: 0xE0)], segments: [seg]))
                == fixedSense(0x05, 0x26, 0x07, field: 48))
        // libiscsi DescrType: a stream-to-stream (0x03) descriptor of 20 bytes.
        var stream = [UInt8](repeating: 0, count: 20)
        stream[0] = 0x03; stream[3] = 0x10
        #expect(parseError(Lists.lid1(cscds: [Lists.cscd()], segments: [seg, stream]))
                == fixedSense(0x05, 0x26, 0x09, field: 76))
    }

    @Test("Inline data is not supported: 26/0B at INLINE DATA LENGTH")
    func inlineData() {
        var list = Lists.lid1(cscds: [Lists.cscd()], segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)], inline: 4)
        list += [1, 2, 3, 4]
        #expect(parseError(list) == fixedSense(0x05, 0x26, 0x0B, field: 12))
    }

    @Test("LIST ID USAGE 01b is reserved; 11b needs list ID 0")
    func listIDUsage() {
        let seg = Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)
        #expect(parseError(Lists.lid1(usage: 1, cscds: [Lists.cscd()], segments: [seg])) == fixedSense(0x05, 0x26, 0x00, field: 1, bit: 4))
        #expect(parseError(Lists.lid1(listID: 5, usage: 3, cscds: [Lists.cscd()], segments: [seg])) == fixedSense(0x05, 0x26, 0x00, field: 0))
        #expect(parseError(Lists.lid1(listID: 0, usage: 3, cscds: [Lists.cscd()], segments: [seg])) == nil)
        #expect(parseError(Lists.lid4(listID: 9, usage: 3, cscds: [Lists.cscd()], segments: [seg]), .lid4) == fixedSense(0x05, 0x26, 0x00, field: 20))
    }

    @Test("Field checks: descriptor lengths, proxy tokens, designator length, LID4 format")
    func fields() {
        var seg = Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)
        seg[3] = 0x14
        seg += [0, 0, 0, 0] // keep the walk consistent: 4 + 0x14 = 24 bytes declared, 32 carried
        #expect(parseError(Lists.lid1(cscds: [Lists.cscd()], segments: [Array(seg.prefix(24))])) == fixedSense(0x05, 0x26, 0x00, field: 50))
        #expect(parseError(Lists.lid1(cscds: [Lists.cscd(byte1: 0x40)], segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)]))
                == fixedSense(0x05, 0x26, 0x00, field: 17, bit: 7))
        // LU ID TYPE 10b is reserved and ignored (libiscsi ValidTgtDescr, SPC-4 and later).
        #expect(parseError(Lists.lid1(cscds: [Lists.cscd(byte1: 0x80)], segments: [Lists.b2b(blocks: 1, sourceLBA: 0, destinationLBA: 0)])) == nil)
        var long = Lists.cscd()
        long[7] = 21
        #expect(parseError(Lists.lid1(cscds: [long], segments: [])) == fixedSense(0x05, 0x26, 0x00, field: 23))
        var lid4 = Lists.lid4(cscds: [], segments: [])
        lid4[0] = 0x02
        #expect(parseError(lid4, .lid4) == fixedSense(0x05, 0x26, 0x00, field: 0))
    }
}
