//
// The errors the copy manager reports, each carrying the sense data SPC-4 prescribes.
//
// Two families:
// - problems found while checking the parameter list before anything is copied: ILLEGAL
//   REQUEST with a field pointer (C/D = 0) to the offending byte of the parameter list;
// - problems found while processing a segment: COPY ABORTED, with the segment number in
//   COMMAND-SPECIFIC INFORMATION and a segment pointer (SD = 0, so the FIELD POINTER is
//   relative to the start of the parameter list, bit-identical to a C/D = 0 field pointer).
//
import SCSI

public enum CopyError: Error, Sendable, Equatable {
    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR (1A/00): the list is shorter than its
    /// header says, or longer than the copy manager accepts.
    case parameterListLength
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00) at `byte`/`bit` of the CDB.
    case invalidFieldInCDB(byte: Int, bit: Int?)
    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (26/00) at `byte`/`bit`.
    case invalidField(byte: Int, bit: Int?)
    /// ILLEGAL REQUEST, TOO MANY TARGET DESCRIPTORS (26/06); `byte` is the CSCD list length field.
    case tooManyCSCDs(byte: Int)
    /// ILLEGAL REQUEST, UNSUPPORTED TARGET DESCRIPTOR TYPE CODE (26/07) at the descriptor.
    case unsupportedCSCDType(byte: Int)
    /// ILLEGAL REQUEST, TOO MANY SEGMENT DESCRIPTORS (26/08); `byte` is the segment list length field.
    case tooManySegments(byte: Int)
    /// ILLEGAL REQUEST, UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE (26/09) at the descriptor.
    case unsupportedSegmentType(byte: Int)
    /// ILLEGAL REQUEST, INLINE DATA LENGTH EXCEEDED (26/0B); `byte` is the inline data length field.
    case inlineDataLengthExceeded(byte: Int)
    /// ILLEGAL REQUEST, OPERATION IN PROGRESS (00/16): the list identifier names a copy that
    /// is still running on this I_T nexus.
    case operationInProgress
    /// COPY ABORTED with `code`, segment `segment` (COMMAND-SPECIFIC INFORMATION) and a
    /// field pointer into the parameter list when one applies.
    case copyAborted(AdditionalSenseCode, segment: Int, byte: Int?)
    /// The copy was stopped by COPY OPERATION ABORT (or nexus loss): TASK ABORTED status.
    case aborted(segment: Int)
    /// ILLEGAL REQUEST, INVALID TOKEN OPERATION (23/xx): the ROD token cannot be used.
    case token(RODTokenError)
    /// COPY ABORTED, INVALID TOKEN OPERATION (23/xx): the ROD token stopped being usable
    /// while WRITE USING TOKEN was copying (a change-vulnerable token cancelled, a revoked one).
    case tokenInvalidatedDuringCopy(RODTokenError)
    /// ILLEGAL REQUEST, INSUFFICIENT RESOURCES TO CREATE ROD TOKEN (55/0D).
    case insufficientResourcesToCreateToken
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE (21/00): a range descriptor
    /// reaches past the last logical block.
    case lbaOutOfRange(lba: UInt64)
    /// A medium error of the logical unit while a token operation ran (sense from the store).
    case medium(SenseData)

    public static let unreachableCopyTarget = AdditionalSenseCode(0x08, 0x04)
    public static let thirdPartyDeviceFailure = AdditionalSenseCode(0x0D, 0x01)
    public static let copyTargetDeviceNotReachable = AdditionalSenseCode(0x0D, 0x02)
    public static let unexpectedInexactSegment = AdditionalSenseCode(0x26, 0x0A)
    public static let operationInProgressCode = AdditionalSenseCode(0x00, 0x16)

    /// The sense data, or nil for TASK ABORTED (which carries none).
    public var sense: SenseData? {
        func pointer(_ byte: Int?, _ bit: Int?) -> SenseKeySpecific? {
            byte.map { .fieldPointer(inCDB: false, byte: UInt16(clamping: $0), bit: bit.map { UInt8($0) }) }
        }
        switch self {
        case .parameterListLength:
            return SenseData(key: .illegalRequest, code: .parameterListLengthError)
        case .invalidFieldInCDB(let byte, let bit):
            return SenseData(key: .illegalRequest, code: .invalidFieldInCDB,
                             senseKeySpecific: .fieldPointer(inCDB: true, byte: UInt16(byte), bit: bit.map { UInt8($0) }))
        case .invalidField(let byte, let bit):
            return SenseData(key: .illegalRequest, code: .invalidFieldInParameterList, senseKeySpecific: pointer(byte, bit))
        case .tooManyCSCDs(let byte):
            return SenseData(key: .illegalRequest, code: AdditionalSenseCode(0x26, 0x06), senseKeySpecific: pointer(byte, nil))
        case .unsupportedCSCDType(let byte):
            return SenseData(key: .illegalRequest, code: AdditionalSenseCode(0x26, 0x07), senseKeySpecific: pointer(byte, nil))
        case .tooManySegments(let byte):
            return SenseData(key: .illegalRequest, code: AdditionalSenseCode(0x26, 0x08), senseKeySpecific: pointer(byte, nil))
        case .unsupportedSegmentType(let byte):
            return SenseData(key: .illegalRequest, code: AdditionalSenseCode(0x26, 0x09), senseKeySpecific: pointer(byte, nil))
        case .inlineDataLengthExceeded(let byte):
            return SenseData(key: .illegalRequest, code: AdditionalSenseCode(0x26, 0x0B), senseKeySpecific: pointer(byte, nil))
        case .operationInProgress:
            return SenseData(key: .illegalRequest, code: Self.operationInProgressCode)
        case .copyAborted(let code, let segment, let byte):
            return SenseData(key: .copyAborted, code: code, commandSpecificInformation: UInt32(clamping: segment),
                             senseKeySpecific: pointer(byte, nil))
        case .aborted:
            return nil
        case .token(let error):
            return SenseData(key: .illegalRequest, code: error.code)
        case .tokenInvalidatedDuringCopy(let error):
            return SenseData(key: .copyAborted, code: error.code)
        case .insufficientResourcesToCreateToken:
            return SenseData(key: .illegalRequest, code: AdditionalSenseCode(0x55, 0x0D))
        case .lbaOutOfRange:
            return SenseData(key: .illegalRequest, code: .lbaOutOfRange)
        case .medium(let sense):
            return sense
        }
    }

    /// The error as the device model throws it.
    public var scsiError: SCSIError {
        switch self {
        case .aborted:
            return SCSIError(status: .taskAborted, sense: nil)
        default:
            return SCSIError(sense: self.sense)
        }
    }
}

// MARK: Big-endian access (missing bytes read as zero)

extension Array where Element == UInt8 {
    @inline(__always) func u8(_ index: Int) -> UInt8 { index >= 0 && index < count ? self[index] : 0 }
    func be16(_ index: Int) -> UInt16 { UInt16(u8(index)) << 8 | UInt16(u8(index + 1)) }
    func be24(_ index: Int) -> UInt32 { UInt32(u8(index)) << 16 | UInt32(be16(index + 1)) }
    func be32(_ index: Int) -> UInt32 { UInt32(be16(index)) << 16 | UInt32(be16(index + 2)) }
    func be64(_ index: Int) -> UInt64 { UInt64(be32(index)) << 32 | UInt64(be32(index + 4)) }

    mutating func put16(_ value: UInt16, at index: Int) {
        self[index] = UInt8(truncatingIfNeeded: value >> 8)
        self[index + 1] = UInt8(truncatingIfNeeded: value)
    }
    mutating func put32(_ value: UInt32, at index: Int) {
        put16(UInt16(truncatingIfNeeded: value >> 16), at: index)
        put16(UInt16(truncatingIfNeeded: value), at: index + 2)
    }
    mutating func put64(_ value: UInt64, at index: Int) {
        put32(UInt32(truncatingIfNeeded: value >> 32), at: index)
        put32(UInt32(truncatingIfNeeded: value), at: index + 4)
    }
    mutating func append16(_ value: UInt16) { append(UInt8(truncatingIfNeeded: value >> 8)); append(UInt8(truncatingIfNeeded: value)) }
    mutating func append32(_ value: UInt32) { append16(UInt16(truncatingIfNeeded: value >> 16)); append16(UInt16(truncatingIfNeeded: value)) }
    mutating func append64(_ value: UInt64) { append32(UInt32(truncatingIfNeeded: value >> 32)); append32(UInt32(truncatingIfNeeded: value)) }
}
