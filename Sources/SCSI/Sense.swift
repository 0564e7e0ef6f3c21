//
// Sense data (SPC-4 §4.5) as values, and the error type command handlers throw.
//
// Handlers never assemble sense bytes: they throw `SCSIError`, and the device turns it
// into a CHECK CONDITION response in one place (`SCSIError.response(descriptorFormat:)`),
// choosing fixed or descriptor format from the Control mode page D_SENSE bit.
//

/// SPC-4 Table 27: sense keys.
public enum SenseKey: UInt8, Sendable, Equatable {
    case noSense = 0x0
    case recoveredError = 0x1
    case notReady = 0x2
    case mediumError = 0x3
    case hardwareError = 0x4
    case illegalRequest = 0x5
    case unitAttention = 0x6
    case dataProtect = 0x7
    case blankCheck = 0x8
    case vendorSpecific = 0x9
    case copyAborted = 0xA
    case abortedCommand = 0xB
    case volumeOverflow = 0xD
    case miscompare = 0xE
    case completed = 0xF
}

/// An ADDITIONAL SENSE CODE / ADDITIONAL SENSE CODE QUALIFIER pair (SPC-4 Table 28).
public struct AdditionalSenseCode: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var asc: UInt8
    public var ascq: UInt8

    public init(_ asc: UInt8, _ ascq: UInt8) {
        self.asc = asc
        self.ascq = ascq
    }

    public var description: String {
        let hex = { (v: UInt8) in (v < 0x10 ? "0" : "") + String(v, radix: 16, uppercase: true) }
        return "\(hex(self.asc))/\(hex(self.ascq))"
    }

    public static let noAdditionalSenseInformation = AdditionalSenseCode(0x00, 0x00)
    public static let logicalUnitNotReadyCauseNotReportable = AdditionalSenseCode(0x04, 0x00)
    public static let writeError = AdditionalSenseCode(0x0C, 0x00)
    public static let invalidFieldInInformationUnit = AdditionalSenseCode(0x0E, 0x03)
    public static let unrecoveredReadError = AdditionalSenseCode(0x11, 0x00)
    public static let parameterListLengthError = AdditionalSenseCode(0x1A, 0x00)
    public static let miscompareDuringVerify = AdditionalSenseCode(0x1D, 0x00)
    public static let invalidCommandOperationCode = AdditionalSenseCode(0x20, 0x00)
    public static let lbaOutOfRange = AdditionalSenseCode(0x21, 0x00)
    public static let invalidFieldInCDB = AdditionalSenseCode(0x24, 0x00)
    public static let logicalUnitNotSupported = AdditionalSenseCode(0x25, 0x00)
    public static let invalidFieldInParameterList = AdditionalSenseCode(0x26, 0x00)
    public static let parameterNotSupported = AdditionalSenseCode(0x26, 0x01)
    public static let invalidReleaseOfPersistentReservation = AdditionalSenseCode(0x26, 0x04)
    public static let writeProtected = AdditionalSenseCode(0x27, 0x00)
    public static let spaceAllocationFailedWriteProtect = AdditionalSenseCode(0x27, 0x07)
    public static let powerOnResetOrBusDeviceReset = AdditionalSenseCode(0x29, 0x00)
    public static let powerOnOccurred = AdditionalSenseCode(0x29, 0x01)
    public static let scsiBusResetOccurred = AdditionalSenseCode(0x29, 0x02)
    public static let busDeviceResetFunctionOccurred = AdditionalSenseCode(0x29, 0x03)
    public static let iTNexusLossOccurred = AdditionalSenseCode(0x29, 0x07)
    /// Alias kept for readability at call sites that mean "power on / reset".
    public static let powerOnReset = powerOnResetOrBusDeviceReset
    public static let parametersChanged = AdditionalSenseCode(0x2A, 0x00)
    public static let modeParametersChanged = AdditionalSenseCode(0x2A, 0x01)
    public static let reservationsPreempted = AdditionalSenseCode(0x2A, 0x03)
    public static let reservationsReleased = AdditionalSenseCode(0x2A, 0x04)
    public static let registrationsPreempted = AdditionalSenseCode(0x2A, 0x05)
    public static let capacityDataHasChanged = AdditionalSenseCode(0x2A, 0x09)
    public static let commandSequenceError = AdditionalSenseCode(0x2C, 0x00)
    public static let commandsClearedByAnotherInitiator = AdditionalSenseCode(0x2F, 0x00)
    public static let savingParametersNotSupported = AdditionalSenseCode(0x39, 0x00)
    public static let mediumNotPresent = AdditionalSenseCode(0x3A, 0x00)
    public static let inquiryDataHasChanged = AdditionalSenseCode(0x3F, 0x03)
    public static let reportedLUNsDataHasChanged = AdditionalSenseCode(0x3F, 0x0E)
    public static let internalTargetFailure = AdditionalSenseCode(0x44, 0x00)
    public static let dataPhaseError = AdditionalSenseCode(0x4B, 0x00)
    public static let insufficientRegistrationResources = AdditionalSenseCode(0x55, 0x04)
    public static let mediumRemovalPrevented = AdditionalSenseCode(0x53, 0x02)
}

/// The SENSE KEY SPECIFIC field (SPC-4 §4.5.2.4): bytes 15–17 of fixed format sense, or
/// the body of a sense key specific descriptor.
public enum SenseKeySpecific: Sendable, Equatable {
    /// Field pointer (SPC-4 §4.5.2.4.2) for ILLEGAL REQUEST. `inCDB` is the C/D bit
    /// (true: the error is in the CDB; false: in the parameter list). `bit` (0–7), when
    /// present, sets BPV and the BIT POINTER. `byte` is the FIELD POINTER: the byte
    /// number of the first byte of the field in error.
    case fieldPointer(inCDB: Bool, byte: UInt16, bit: UInt8?)
    /// Progress indication (SPC-4 §4.5.2.4.4): a fraction of 65536.
    case progress(UInt16)

    /// The three bytes, SKSV set.
    public var bytes: [UInt8] {
        switch self {
        case .fieldPointer(let inCDB, let byte, let bit):
            var first: UInt8 = 0x80
            if inCDB { first |= 0x40 }
            if let bit { first |= 0x08 | (bit & 0x07) }
            return [first, UInt8(truncatingIfNeeded: byte >> 8), UInt8(truncatingIfNeeded: byte)]
        case .progress(let fraction):
            return [0x80, UInt8(truncatingIfNeeded: fraction >> 8), UInt8(truncatingIfNeeded: fraction)]
        }
    }
}

/// Sense data as values; encoded in fixed (0x70) or descriptor (0x72) format.
public struct SenseData: Sendable, Equatable {
    public var key: SenseKey
    public var code: AdditionalSenseCode
    /// The INFORMATION field (e.g. the offset of the first miscompare); nil: VALID = 0.
    public var information: UInt64?
    public var commandSpecificInformation: UInt32?
    public var senseKeySpecific: SenseKeySpecific?

    public init(key: SenseKey, code: AdditionalSenseCode, information: UInt64? = nil,
                commandSpecificInformation: UInt32? = nil, senseKeySpecific: SenseKeySpecific? = nil) {
        self.key = key
        self.code = code
        self.information = information
        self.commandSpecificInformation = commandSpecificInformation
        self.senseKeySpecific = senseKeySpecific
    }

    /// NO SENSE, no additional sense information: what REQUEST SENSE returns when nothing
    /// is pending.
    public static let noSense = SenseData(key: .noSense, code: .noAdditionalSenseInformation)

    /// Fixed format, current error (response code 0x70), 18 bytes, ADDITIONAL SENSE LENGTH 10
    /// (SPC-4 §4.5.3). An INFORMATION value that does not fit in 32 bits leaves VALID clear.
    public func encodeFixed() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 18)
        bytes[0] = 0x70
        bytes[2] = self.key.rawValue
        if let information, information <= UInt64(UInt32.max) {
            bytes[0] |= 0x80
            bytes.setBigEndian32(UInt32(information), at: 3)
        }
        bytes[7] = 10
        if let commandSpecificInformation {
            bytes.setBigEndian32(commandSpecificInformation, at: 8)
        }
        bytes[12] = self.code.asc
        bytes[13] = self.code.ascq
        if let senseKeySpecific {
            bytes.replaceSubrange(15..<18, with: senseKeySpecific.bytes)
        }
        return bytes
    }

    /// Descriptor format, current error (response code 0x72) (SPC-4 §4.5.2), with an
    /// information descriptor, command-specific descriptor and sense key specific
    /// descriptor when those values are present.
    public func encodeDescriptor() -> [UInt8] {
        var bytes: [UInt8] = [0x72, self.key.rawValue, self.code.asc, self.code.ascq, 0, 0, 0, 0]
        if let information {
            bytes += [0x00, 0x0A, 0x80, 0x00]
            bytes.appendBigEndian64(information)
        }
        if let commandSpecificInformation {
            bytes += [0x01, 0x0A, 0x00, 0x00]
            bytes.appendBigEndian64(UInt64(commandSpecificInformation))
        }
        if let senseKeySpecific {
            bytes += [0x02, 0x06, 0x00, 0x00]
            bytes += senseKeySpecific.bytes
            bytes.append(0)
        }
        bytes[7] = UInt8(bytes.count - 8)
        return bytes
    }

    public func encode(descriptorFormat: Bool) -> [UInt8] {
        descriptorFormat ? self.encodeDescriptor() : self.encodeFixed()
    }
}

/// What a command handler throws: a status with (for CHECK CONDITION) its sense data.
public struct SCSIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: SCSIStatus
    public var sense: SenseData?

    public init(status: SCSIStatus = .checkCondition, sense: SenseData?) {
        self.status = status
        self.sense = sense
    }

    public init(_ key: SenseKey, _ code: AdditionalSenseCode, information: UInt64? = nil,
                senseKeySpecific: SenseKeySpecific? = nil) {
        self.init(sense: SenseData(key: key, code: code, information: information,
                                   senseKeySpecific: senseKeySpecific))
    }

    public var description: String {
        guard let sense else { return "status \(self.status)" }
        return "CHECK CONDITION \(sense.key) \(sense.code)"
    }

    // MARK: Common errors

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, field pointer to `byte` (and `bit`), C/D = 1.
    public static func invalidFieldInCDB(byte: Int, bit: Int? = nil) -> SCSIError {
        SCSIError(.illegalRequest, .invalidFieldInCDB,
                  senseKeySpecific: .fieldPointer(inCDB: true, byte: UInt16(byte), bit: bit.map { UInt8($0) }))
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, field pointer with C/D = 0.
    public static func invalidFieldInParameterList(byte: Int, bit: Int? = nil) -> SCSIError {
        SCSIError(.illegalRequest, .invalidFieldInParameterList,
                  senseKeySpecific: .fieldPointer(inCDB: false, byte: UInt16(byte), bit: bit.map { UInt8($0) }))
    }

    public static let invalidCommandOperationCode = SCSIError(.illegalRequest, .invalidCommandOperationCode)
    public static let lbaOutOfRange = SCSIError(.illegalRequest, .lbaOutOfRange)
    public static let logicalUnitNotSupported = SCSIError(.illegalRequest, .logicalUnitNotSupported)
    public static let parameterListLengthError = SCSIError(.illegalRequest, .parameterListLengthError)
    public static let savingParametersNotSupported = SCSIError(.illegalRequest, .savingParametersNotSupported)
    public static let writeProtected = SCSIError(.dataProtect, .writeProtected)
    public static let dataPhaseError = SCSIError(.abortedCommand, .dataPhaseError)
    public static let reservationConflict = SCSIError(status: .reservationConflict, sense: nil)

    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION, INFORMATION = byte offset of the
    /// first byte that differs (SBC-4 §5.3 / §5.30).
    public static func miscompare(atOffset offset: Int) -> SCSIError {
        SCSIError(.miscompare, .miscompareDuringVerify, information: UInt64(offset))
    }

    /// The single mapping from block-store failures to sense data.
    public init(_ storeError: BlockStoreError) {
        switch storeError {
        case .readFailed:
            self.init(.mediumError, .unrecoveredReadError)
        case .writeFailed, .flushFailed:
            self.init(.mediumError, .writeError)
        case .noSpace:
            self.init(.dataProtect, .spaceAllocationFailedWriteProtect)
        case .outOfRange:
            self.init(.illegalRequest, .lbaOutOfRange)
        }
    }

    /// Maps any error a handler lets escape: SCSI errors as they are, store errors through
    /// `init(_: BlockStoreError)`, anything else as HARDWARE ERROR, INTERNAL TARGET FAILURE.
    public init(mapping error: any Error) {
        if let error = error as? SCSIError {
            self = error
        } else if let error = error as? BlockStoreError {
            self.init(error)
        } else {
            self.init(.hardwareError, .internalTargetFailure)
        }
    }

    /// The response the transport sends for this error.
    public func response(descriptorFormat: Bool = false, transferLength: Int = 0) -> SCSIResponse {
        SCSIResponse(status: self.status, sense: self.sense?.encode(descriptorFormat: descriptorFormat) ?? [],
                     dataIn: nil, transferLength: transferLength)
    }
}
