//
// EXTENDED COPY parameter lists (SPC-4 §6.4.3 LID1, §6.5.3 LID4) decoded into values.
//
// Checks run in a fixed order, because initiators' conformance suites tell the sense codes
// apart by it (libiscsi's ExtendedCopy.ParamHdr and DescrLimits):
//   1. the header: list length against the lengths it declares (1A/00), reserved formats;
//   2. the total descriptor list length against the copy manager's maximum (1A/00);
//   3. descriptor counts: CSCDs (26/06), segments (26/08), inline data (26/0B);
//   4. descriptor type codes: CSCDs (26/07), segments (26/09);
//   5. fields of each descriptor (26/00 with a field pointer).
// Whether a CSCD names a logical unit here, and whether a segment's LBAs fit, is decided
// when the copy runs (COPY ABORTED, see `CopyManager`), as SPC-4 §6.4.5 prescribes.
//

/// Limits the copy manager advertises (RECEIVE COPY OPERATING PARAMETERS, VPD 0x8F) and enforces.
public struct CopyLimits: Sendable, Equatable {
    public var maximumCSCDCount: Int
    public var maximumSegmentCount: Int
    /// CSCD list length + segment list length, in bytes.
    public var maximumDescriptorListLength: Int
    /// Bytes one segment may move; 0: no limit.
    public var maximumSegmentLength: UInt32
    /// Inline data is not supported: 0.
    public let maximumInlineDataLength: UInt32 = 0
    /// Held data (RECEIVE COPY DATA) is not supported: 0.
    public let heldDataLimit: UInt32 = 0
    /// Copies that may run at once per logical unit, and how many of them may carry a list ID.
    public var totalConcurrentCopies: UInt16
    public var maximumConcurrentCopies: UInt8
    /// How long held results of a completed copy are kept unread, in seconds.
    public var heldResultsLifetime: Int64
    /// Bytes moved between abort checks (and the mover's buffer size).
    public var chunkSize: Int

    public init(maximumCSCDCount: Int = 32, maximumSegmentCount: Int = 64, maximumDescriptorListLength: Int = 2048,
                maximumSegmentLength: UInt32 = 256 << 20, totalConcurrentCopies: UInt16 = 64,
                maximumConcurrentCopies: UInt8 = 64, heldResultsLifetime: Int64 = 60, chunkSize: Int = 1 << 20) {
        self.maximumCSCDCount = maximumCSCDCount
        self.maximumSegmentCount = maximumSegmentCount
        self.maximumDescriptorListLength = maximumDescriptorListLength
        self.maximumSegmentLength = maximumSegmentLength
        self.totalConcurrentCopies = totalConcurrentCopies
        self.maximumConcurrentCopies = maximumConcurrentCopies
        self.heldResultsLifetime = heldResultsLifetime
        self.chunkSize = max(4096, chunkSize)
    }

    /// The descriptor type codes this copy manager implements, ascending.
    public static let implementedDescriptorTypes: [UInt8] = [0x02, 0x07, 0x0A, 0xE4]
}

/// A VPD 0x83 designator, the way an identification CSCD descriptor names a logical unit.
public struct Designator: Sendable, Hashable, CustomStringConvertible {
    public var codeSet: UInt8
    public var association: UInt8
    public var type: UInt8
    public var value: [UInt8]

    public init(codeSet: UInt8, association: UInt8, type: UInt8, value: [UInt8]) {
        self.codeSet = codeSet & 0x0F
        self.association = association & 0x03
        self.type = type & 0x0F
        self.value = value
    }

    /// The designation descriptors of a Device Identification page (with or without its
    /// 4-byte page header, told apart by the page code 0x83 in byte 1).
    public static func parseList(_ page: [UInt8]) -> [Designator] {
        var offset = page.count >= 4 && page[1] == 0x83 ? 4 : 0
        var result: [Designator] = []
        while offset + 4 <= page.count {
            let length = Int(page[offset + 3])
            guard offset + 4 + length <= page.count else { break }
            result.append(Designator(codeSet: page[offset], association: page[offset + 1] >> 4, type: page[offset + 1],
                                     value: Array(page[(offset + 4)..<(offset + 4 + length)])))
            offset += 4 + length
        }
        return result
    }

    public var description: String {
        "designator(type \(type), assoc \(association), code set \(codeSet), " + value.map { String($0, radix: 16) }.joined() + ")"
    }
}

/// LIST ID USAGE (SPC-4 Table 124).
public enum ListIDUsage: UInt8, Sendable, Equatable {
    /// 00b: the list ID is tracked and the results are held until read.
    case hold = 0
    /// 10b: the list ID is tracked while the copy runs; results are not held.
    case noHold = 2
    /// 11b: no list ID (it must be zero); nothing is tracked.
    case none = 3
}

public enum ExtendedCopyFormat: Sendable, Equatable {
    case lid1
    case lid4

    public var headerLength: Int { self == .lid1 ? 16 : 48 }
    /// The service action of the EXTENDED COPY command.
    public var serviceAction: UInt8 { self == .lid1 ? 0x00 : 0x01 }
}

/// CSCD descriptor 0xE4: identification descriptor (SPC-4 §6.4.4.5).
public struct IdentificationCSCD: Sendable, Equatable {
    /// Byte offset of the descriptor in the parameter list.
    public var offset: Int
    public var luIDType: UInt8
    public var null: Bool
    public var peripheralDeviceType: UInt8
    public var relativeInitiatorPort: UInt16
    public var designator: Designator
    /// Bytes 29–31: DISK BLOCK LENGTH (0: use the logical unit's).
    public var blockLength: UInt32
}

/// Segment descriptor 0x02 or 0x0A: block device to block device.
public struct BlockToBlockSegment: Sendable, Equatable {
    public enum Length: Sendable, Equatable {
        /// 0x02: NUMBER OF BLOCKS (source blocks, or destination blocks when DC is set).
        case blocks(UInt16)
        /// 0x0A: NUMBER OF BYTES, with byte offsets into the first blocks.
        case bytes(UInt32)
    }
    public var sourceIndex: UInt16
    public var destinationIndex: UInt16
    public var destinationCount: Bool
    public var cat: Bool
    public var length: Length
    public var sourceLBA: UInt64
    public var destinationLBA: UInt64
    public var sourceByteOffset: UInt16
    public var destinationByteOffset: UInt16

    public init(sourceIndex: UInt16, destinationIndex: UInt16, destinationCount: Bool, cat: Bool, length: Length,
                sourceLBA: UInt64, destinationLBA: UInt64, sourceByteOffset: UInt16, destinationByteOffset: UInt16) {
        self.sourceIndex = sourceIndex
        self.destinationIndex = destinationIndex
        self.destinationCount = destinationCount
        self.cat = cat
        self.length = length
        self.sourceLBA = sourceLBA
        self.destinationLBA = destinationLBA
        self.sourceByteOffset = sourceByteOffset
        self.destinationByteOffset = destinationByteOffset
    }
}

public struct SegmentDescriptor: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case blockToBlock(BlockToBlockSegment)
        /// 0x07: verify that a CSCD is reachable (TEST UNIT READY when `testUnitReady`).
        case verify(sourceIndex: UInt16, testUnitReady: Bool)
    }
    /// Byte offset of the descriptor in the parameter list.
    public var offset: Int
    public var kind: Kind

    public init(offset: Int, kind: Kind) {
        self.offset = offset
        self.kind = kind
    }
    public var typeCode: UInt8 {
        switch kind {
        case .blockToBlock(let segment):
            if case .bytes = segment.length { return 0x0A }
            return 0x02
        case .verify: return 0x07
        }
    }
}

/// A decoded EXTENDED COPY parameter list.
public struct ExtendedCopyList: Sendable, Equatable {
    public var format: ExtendedCopyFormat
    public var listID: UInt32
    public var usage: ListIDUsage
    public var priority: UInt8
    public var sequentialStriped: Bool
    /// LID4 IMMED and G_SENSE.
    public var immediate: Bool
    public var genericSense: Bool
    public var cscds: [IdentificationCSCD]
    public var segments: [SegmentDescriptor]

    /// Decodes a parameter list. An empty list (PARAMETER LIST LENGTH 0) is not an error and
    /// copies nothing: nil.
    public static func parse(_ list: [UInt8], format: ExtendedCopyFormat,
                             limits: CopyLimits) throws(CopyError) -> ExtendedCopyList? {
        guard !list.isEmpty else { return nil }
        let header = format.headerLength
        guard list.count >= header else { throw .parameterListLength }

        // 1. Header.
        let cscdListLength: Int
        let segmentListLength: Int
        let inlineLength: Int
        let listID: UInt32
        var immediate = false
        var genericSense = false
        let cscdLengthField: Int
        let segmentLengthField: Int
        let inlineLengthField: Int
        switch format {
        case .lid1:
            listID = UInt32(list[0])
            cscdListLength = Int(list.be16(2))
            segmentListLength = Int(list.be32(8))
            inlineLength = Int(list.be32(12))
            (cscdLengthField, segmentLengthField, inlineLengthField) = (2, 8, 12)
        case .lid4:
            guard list[0] == 0x01 else { throw .invalidField(byte: 0, bit: nil) }
            guard list.be16(2) == 0 else { throw .invalidField(byte: 2, bit: nil) }  // header CSCDs (ROD): unsupported
            immediate = list[15] & 0x01 != 0
            genericSense = list[15] & 0x02 != 0
            listID = list.be32(20)
            cscdListLength = Int(list.be16(42))
            segmentListLength = Int(list.be16(44))
            inlineLength = Int(list.be16(46))
            (cscdLengthField, segmentLengthField, inlineLengthField) = (42, 44, 46)
        }
        let flags = list[1]
        let usageBits = (flags >> 3) & 0x03
        guard let usage = ListIDUsage(rawValue: usageBits) else { throw .invalidField(byte: 1, bit: 4) }
        if usage == .none && listID != 0 {
            throw .invalidField(byte: format == .lid1 ? 0 : 20, bit: nil)
        }
        guard header + cscdListLength + segmentListLength + inlineLength <= list.count else {
            throw .parameterListLength
        }
        // 2. Total descriptor list length.
        guard cscdListLength + segmentListLength <= limits.maximumDescriptorListLength else {
            throw .parameterListLength
        }

        // 3. Counts (walking by descriptor sizes, before looking at type codes).
        let cscdStart = header
        let segmentStart = header + cscdListLength
        let segmentEnd = segmentStart + segmentListLength
        var cscdOffsets: [Int] = []
        var offset = cscdStart
        while offset < segmentStart {
            let size = Self.cscdSize(type: list[offset])
            guard offset + size <= segmentStart else { throw .invalidField(byte: cscdLengthField, bit: nil) }
            cscdOffsets.append(offset)
            offset += size
        }
        if cscdOffsets.count > limits.maximumCSCDCount { throw .tooManyCSCDs(byte: cscdLengthField) }
        var segmentOffsets: [Int] = []
        offset = segmentStart
        while offset < segmentEnd {
            guard offset + 4 <= segmentEnd else { throw .invalidField(byte: segmentLengthField, bit: nil) }
            let size = 4 + Int(list.be16(offset + 2))
            guard offset + size <= segmentEnd else { throw .invalidField(byte: offset + 2, bit: nil) }
            segmentOffsets.append(offset)
            offset += size
        }
        if segmentOffsets.count > limits.maximumSegmentCount { throw .tooManySegments(byte: segmentLengthField) }
        if inlineLength > Int(limits.maximumInlineDataLength) {
            throw .inlineDataLengthExceeded(byte: inlineLengthField)
        }

        // 4. Type codes.
        for cscd in cscdOffsets where list[cscd] != 0xE4 {
            throw .unsupportedCSCDType(byte: cscd)
        }
        for segment in segmentOffsets where ![0x02, 0x07, 0x0A].contains(list[segment]) {
            throw .unsupportedSegmentType(byte: segment)
        }

        // 5. Fields.
        let cscds = try cscdOffsets.map { (at: Int) throws(CopyError) in try Self.identificationCSCD(list, at: at) }
        let segments = try segmentOffsets.map { (at: Int) throws(CopyError) in try Self.segment(list, at: at) }
        return ExtendedCopyList(format: format, listID: listID, usage: usage, priority: flags & 0x07,
                                sequentialStriped: flags & 0x20 != 0, immediate: immediate,
                                genericSense: genericSense, cscds: cscds, segments: segments)
    }

    /// CSCD descriptors are 32 bytes, except the IPv6 and IP copy service ones (0xEA, 0xEB: 64).
    static func cscdSize(type: UInt8) -> Int {
        type == 0xEA || type == 0xEB ? 64 : 32
    }

    static func identificationCSCD(_ list: [UInt8], at offset: Int) throws(CopyError) -> IdentificationCSCD {
        let byte1 = list[offset + 1]
        let luIDType = byte1 >> 6
        // 01b (proxy token) is not supported; 10b and 11b are reserved and ignored (SPC-4+).
        if luIDType == 0x01 { throw .invalidField(byte: offset + 1, bit: 7) }
        let designatorLength = Int(list[offset + 7])
        guard designatorLength <= 20 else { throw .invalidField(byte: offset + 7, bit: nil) }
        let value = Array(list[(offset + 8)..<(offset + 8 + designatorLength)])
        return IdentificationCSCD(offset: offset, luIDType: luIDType, null: byte1 & 0x20 != 0,
                                  peripheralDeviceType: byte1 & 0x1F,
                                  relativeInitiatorPort: list.be16(offset + 2),
                                  designator: Designator(codeSet: list[offset + 4], association: list[offset + 5] >> 4,
                                                         type: list[offset + 5], value: value),
                                  blockLength: list.be24(offset + 29))
    }

    static func segment(_ list: [UInt8], at offset: Int) throws(CopyError) -> SegmentDescriptor {
        let type = list[offset]
        let length = list.be16(offset + 2)
        switch type {
        case 0x02, 0x0A:
            let expected: UInt16 = type == 0x02 ? 0x18 : 0x1C
            guard length == expected else { throw .invalidField(byte: offset + 2, bit: nil) }
            let flags = list[offset + 1]
            let segment = BlockToBlockSegment(
                sourceIndex: list.be16(offset + 4), destinationIndex: list.be16(offset + 6),
                destinationCount: flags & 0x02 != 0, cat: flags & 0x01 != 0,
                length: type == 0x02 ? .blocks(list.be16(offset + 10)) : .bytes(list.be32(offset + 8)),
                sourceLBA: list.be64(offset + 12), destinationLBA: list.be64(offset + 20),
                sourceByteOffset: type == 0x0A ? list.be16(offset + 28) : 0,
                destinationByteOffset: type == 0x0A ? list.be16(offset + 30) : 0)
            if type == 0x0A && segment.destinationCount { throw .invalidField(byte: offset + 1, bit: 1) }
            return SegmentDescriptor(offset: offset, kind: .blockToBlock(segment))
        default:  // 0x07
            guard length == 0x08 else { throw .invalidField(byte: offset + 2, bit: nil) }
            return SegmentDescriptor(offset: offset, kind: .verify(sourceIndex: list.be16(offset + 4),
                                                                   testUnitReady: list[offset + 8] & 0x01 != 0))
        }
    }
}
