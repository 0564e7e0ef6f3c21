//
// iSCSI opcodes and fixed protocol constants (RFC 7143 §11).
//

/// Opcodes sent by an initiator (RFC 7143 §11.1.1).
public enum InitiatorOpcode: UInt8, Sendable, CaseIterable {
    case nopOut = 0x00
    case scsiCommand = 0x01
    case taskManagementRequest = 0x02
    case loginRequest = 0x03
    case textRequest = 0x04
    case dataOut = 0x05
    case logoutRequest = 0x06
    case snackRequest = 0x10
}

/// Opcodes sent by a target (RFC 7143 §11.1.1).
public enum TargetOpcode: UInt8, Sendable, CaseIterable {
    case nopIn = 0x20
    case scsiResponse = 0x21
    case taskManagementResponse = 0x22
    case loginResponse = 0x23
    case textResponse = 0x24
    case dataIn = 0x25
    case logoutResponse = 0x26
    case readyToTransfer = 0x31
    case asynchronousMessage = 0x32
    case reject = 0x3F
}

/// Reject reasons (RFC 7143 §11.17.1).
public enum RejectReason: UInt8, Sendable {
    case dataDigestError = 0x02
    case snackReject = 0x03
    case protocolError = 0x04
    case commandNotSupported = 0x05
    case immediateCommandReject = 0x06
    case taskInProgress = 0x07
    case invalidDataACK = 0x08
    case invalidPDUField = 0x09
    case longOperationReject = 0x0A
    case deprecatedNegotiationReset = 0x0B
    case waitingForLogout = 0x0C
}

/// Login status class and detail (RFC 7143 §11.13.5).
public struct LoginStatus: Sendable, Equatable, CustomStringConvertible {
    public var statusClass: UInt8
    public var detail: UInt8
    public init(_ statusClass: UInt8, _ detail: UInt8) {
        self.statusClass = statusClass
        self.detail = detail
    }

    public static let success = LoginStatus(0x00, 0x00)
    public static let targetMovedTemporarily = LoginStatus(0x01, 0x01)
    public static let targetMovedPermanently = LoginStatus(0x01, 0x02)
    public static let initiatorError = LoginStatus(0x02, 0x00)
    public static let authenticationFailure = LoginStatus(0x02, 0x01)
    public static let authorizationFailure = LoginStatus(0x02, 0x02)
    public static let notFound = LoginStatus(0x02, 0x03)
    public static let targetRemoved = LoginStatus(0x02, 0x04)
    public static let unsupportedVersion = LoginStatus(0x02, 0x05)
    public static let tooManyConnections = LoginStatus(0x02, 0x06)
    public static let missingParameter = LoginStatus(0x02, 0x07)
    public static let cannotIncludeInSession = LoginStatus(0x02, 0x08)
    public static let sessionTypeNotSupported = LoginStatus(0x02, 0x09)
    public static let sessionDoesNotExist = LoginStatus(0x02, 0x0A)
    public static let invalidDuringLogin = LoginStatus(0x02, 0x0B)
    public static let targetError = LoginStatus(0x03, 0x00)
    public static let serviceUnavailable = LoginStatus(0x03, 0x01)
    public static let outOfResources = LoginStatus(0x03, 0x02)

    public var description: String {
        "0x" + String(statusClass, radix: 16) + String(format2: detail)
    }
}

extension String {
    init(format2 value: UInt8) {
        let s = String(value, radix: 16)
        self = s.count == 1 ? "0" + s : s
    }
}

/// Task management function codes (RFC 7143 §11.5.1).
public enum TaskManagementFunctionCode: UInt8, Sendable {
    case abortTask = 1
    case abortTaskSet = 2
    case clearACA = 3
    case clearTaskSet = 4
    case logicalUnitReset = 5
    case targetWarmReset = 6
    case targetColdReset = 7
    case taskReassign = 8
}

/// Task management responses (RFC 7143 §11.6.1).
public enum TaskManagementResponseCode: UInt8, Sendable {
    case functionComplete = 0
    case taskDoesNotExist = 1
    case lunDoesNotExist = 2
    case taskStillAllegiant = 3
    case reassignmentNotSupported = 4
    case functionNotSupported = 5
    case authorizationFailed = 6
    case functionRejected = 255
}

/// Login stages (RFC 7143 §11.12.3).
public enum LoginStage: UInt8, Sendable, Comparable {
    case securityNegotiation = 0
    case operationalNegotiation = 1
    case fullFeaturePhase = 3

    public static func < (a: LoginStage, b: LoginStage) -> Bool { a.rawValue < b.rawValue }
}

public enum WireConstants {
    /// RFC 7143 §11.2: the Basic Header Segment is 48 bytes.
    public static let basicHeaderSegmentLength = 48
    /// The reserved tag value (RFC 7143 §11.2.1.8).
    public static let reservedTag: UInt32 = 0xFFFF_FFFF
    /// RFC 7143 §13.12: 512 to 2^24-1.
    public static let maxDataSegmentLengthLimit = (1 << 24) - 1
    /// What a login, text, reject or async PDU may carry at most before the operational
    /// parameters are known (RFC 7143 §13.12: the default MaxRecvDataSegmentLength).
    public static let defaultMaxRecvDataSegmentLength = 8192
}
