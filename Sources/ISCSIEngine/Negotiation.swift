//
// Operational parameter negotiation (RFC 7143 §6, §13).
//
// Each key the initiator offers is answered once with the result of the key's result
// function applied to the initiator's offer and the target's own value:
//   - Boolean OR (InitialR2T, DataPDUInOrder, DataSequenceInOrder),
//   - Boolean AND (ImmediateData, IFMarker, OFMarker, RDMAExtensions),
//   - numerical minimum (MaxBurstLength, FirstBurstLength, MaxOutstandingR2T, MaxConnections,
//     ErrorRecoveryLevel, DefaultTime2Retain), numerical maximum (DefaultTime2Wait),
//   - list selection (HeaderDigest, DataDigest, AuthMethod): the first value in the
//     initiator's list that the target supports,
//   - declarative (MaxRecvDataSegmentLength, aliases, names): recorded, not answered.
// Unknown keys are answered `NotUnderstood`, keys that make no sense for the session type
// `Irrelevant`, and out-of-range or malformed values `Reject` (RFC 7143 §6.2).
//
import ISCSIWire

/// The parameters a session runs with once login completes.
public struct OperationalParameters: Sendable, Equatable {
    public var headerDigest = false
    public var dataDigest = false
    /// What we receive at most per PDU (we declare it).
    public var maxRecvDataSegmentLength = 262_144
    /// What the initiator receives at most per PDU (it declares it; RFC default 8192).
    public var maxXmitDataSegmentLength = 8192
    public var initialR2T = true
    public var immediateData = true
    public var maxBurstLength = 262_144
    public var firstBurstLength = 65_536
    public var maxOutstandingR2T = 1
    public var dataPDUInOrder = true
    public var dataSequenceInOrder = true
    public var defaultTime2Wait = 2
    public var defaultTime2Retain = 20
    public var errorRecoveryLevel = 0
    public var maxConnections = 1

    public init() {}
}

/// What the target is willing to run with.
public struct TargetNegotiationLimits: Sendable, Equatable {
    public var maxRecvDataSegmentLength = 262_144
    public var maxBurstLength = 16_776_192
    public var firstBurstLength = 262_144
    public var maxOutstandingR2T = 16
    public var initialR2T = false
    public var immediateData = true
    public var supportsDigests = true
    public var defaultTime2Wait = 2
    public var defaultTime2Retain = 0

    public init() {}
}

public enum SessionType: String, Sendable, Equatable {
    case normal = "Normal"
    case discovery = "Discovery"
}

/// How a key is negotiated.
enum KeyKind {
    case declarative
    case booleanOr(WritableKeyPath<OperationalParameters, Bool>)
    case booleanAnd(WritableKeyPath<OperationalParameters, Bool>?)
    case minimum(WritableKeyPath<OperationalParameters, Int>?, ClosedRange<Int>)
    case maximum(WritableKeyPath<OperationalParameters, Int>, ClosedRange<Int>)
    case digest(WritableKeyPath<OperationalParameters, Bool>)
    /// Keys only meaningful in certain contexts; answered Irrelevant.
    case irrelevant
}

/// One key's answer.
public enum NegotiationError: Error, Sendable, Equatable {
    /// A key was offered twice in one negotiation (RFC 7143 §6.2: a protocol error).
    case duplicateKey(String)
}

/// Negotiates operational keys for one login. A value type; holds no I/O.
public struct OperationalNegotiator: Sendable {
    public private(set) var parameters = OperationalParameters()
    public let limits: TargetNegotiationLimits
    public let sessionType: SessionType
    /// Keys already answered (each key is negotiated once per login).
    private var negotiated: Set<String> = []
    /// Whether our MaxRecvDataSegmentLength was declared yet.
    public private(set) var declaredMaxRecvDataSegmentLength = false

    public init(limits: TargetNegotiationLimits, sessionType: SessionType) {
        self.limits = limits
        self.sessionType = sessionType
        self.parameters.maxRecvDataSegmentLength = limits.maxRecvDataSegmentLength
    }

    /// Forget that our MaxRecvDataSegmentLength was declared (when the answer carrying it
    /// could not be sent in the current stage).
    public mutating func resetDeclaration() { declaredMaxRecvDataSegmentLength = false }

    /// Keys answered elsewhere (login identity, security stage).
    static let loginIdentityKeys: Set<String> = ["InitiatorName", "InitiatorAlias", "TargetName", "SessionType"]

    /// Keys that only make sense in a Normal session (RFC 7143 §13: "Irrelevant when SessionType=Discovery").
    static let normalSessionOnlyKeys: Set<String> = [
        "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
        "DataPDUInOrder", "DataSequenceInOrder", "MaxConnections",
    ]

    func kind(of key: String) -> KeyKind? {
        switch key {
        case "HeaderDigest": .digest(\.headerDigest)
        case "DataDigest": .digest(\.dataDigest)
        case "MaxRecvDataSegmentLength": .declarative
        case "InitialR2T": .booleanOr(\.initialR2T)
        case "ImmediateData": .booleanAnd(\.immediateData)
        case "DataPDUInOrder": .booleanOr(\.dataPDUInOrder)
        case "DataSequenceInOrder": .booleanOr(\.dataSequenceInOrder)
        case "IFMarker", "OFMarker", "RDMAExtensions": .booleanAnd(nil)
        case "MaxBurstLength": .minimum(\.maxBurstLength, 512...16_777_215)
        case "FirstBurstLength": .minimum(\.firstBurstLength, 512...16_777_215)
        case "MaxOutstandingR2T": .minimum(\.maxOutstandingR2T, 1...65_535)
        case "MaxConnections": .minimum(\.maxConnections, 1...65_535)
        case "ErrorRecoveryLevel": .minimum(\.errorRecoveryLevel, 0...2)
        case "DefaultTime2Retain": .minimum(\.defaultTime2Retain, 0...3600)
        case "DefaultTime2Wait": .maximum(\.defaultTime2Wait, 0...3600)
        case "iSCSIProtocolLevel": .minimum(nil, 0...31)
        case "OFMarkInt", "IFMarkInt": .irrelevant
        default: nil
        }
    }

    /// The target's own value for a minimum/maximum key.
    func ownValue(_ key: String) -> Int {
        switch key {
        case "MaxBurstLength": limits.maxBurstLength
        case "FirstBurstLength": limits.firstBurstLength
        case "MaxOutstandingR2T": limits.maxOutstandingR2T
        case "MaxConnections": 1
        case "ErrorRecoveryLevel": 0
        case "DefaultTime2Retain": limits.defaultTime2Retain
        case "DefaultTime2Wait": limits.defaultTime2Wait
        case "iSCSIProtocolLevel": 1  // RFC 7144: this target implements RFC 7143
        default: 0
        }
    }

    func ownBool(_ key: String) -> Bool {
        switch key {
        case "InitialR2T": limits.initialR2T
        case "ImmediateData": limits.immediateData
        case "DataPDUInOrder", "DataSequenceInOrder": true
        default: false  // markers, RDMA: not supported
        }
    }

    /// Parse an iSCSI numerical value: decimal, or hex with 0x (RFC 7143 §6.1).
    static func parseNumber(_ s: String) -> Int? {
        if s.hasPrefix("0x") || s.hasPrefix("0X") {
            let digits = s.dropFirst(2)
            guard !digits.isEmpty, digits.count <= 16 else { return nil }
            return Int(digits, radix: 16)
        }
        guard !s.isEmpty, s.count <= 20, s.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(s)
    }

    /// Answer operational keys. Returns the response pairs in the order offered.
    public mutating func negotiate(_ pairs: [TextKeyValue]) throws(NegotiationError) -> [(String, String)] {
        var answers: [(String, String)] = []
        for pair in pairs {
            let key = pair.key, value = pair.value
            if Self.loginIdentityKeys.contains(key) { continue }
            if negotiated.contains(key) { throw .duplicateKey(key) }
            negotiated.insert(key)
            if sessionType == .discovery && Self.normalSessionOnlyKeys.contains(key) {
                answers.append((key, "Irrelevant"))
                continue
            }
            if key == "TaskReporting" {
                answers.append((key, "RFC3720"))
                continue
            }
            guard let kind = kind(of: key) else {
                answers.append((key, "NotUnderstood"))
                continue
            }
            switch kind {
            case .declarative:
                // MaxRecvDataSegmentLength: what the initiator receives (RFC 7143 §13.12).
                guard let n = Self.parseNumber(value), (512...16_777_215).contains(n) else {
                    answers.append((key, "Reject"))
                    continue
                }
                parameters.maxXmitDataSegmentLength = n
            case .booleanOr(let path):
                guard value == "Yes" || value == "No" else { answers.append((key, "Reject")); continue }
                let result = value == "Yes" || ownBool(key)
                parameters[keyPath: path] = result
                answers.append((key, result ? "Yes" : "No"))
            case .booleanAnd(let path):
                guard value == "Yes" || value == "No" else { answers.append((key, "Reject")); continue }
                let result = value == "Yes" && ownBool(key)
                if let path { parameters[keyPath: path] = result }
                answers.append((key, result ? "Yes" : "No"))
            case .minimum(let path, let range):
                guard let n = Self.parseNumber(value), range.contains(n) else {
                    answers.append((key, "Reject"))
                    continue
                }
                let result = min(n, ownValue(key))
                if let path { parameters[keyPath: path] = result }
                answers.append((key, String(result)))
            case .maximum(let path, let range):
                guard let n = Self.parseNumber(value), range.contains(n) else {
                    answers.append((key, "Reject"))
                    continue
                }
                let result = max(n, ownValue(key))
                parameters[keyPath: path] = result
                answers.append((key, String(result)))
            case .digest(let path):
                let offered = value.split(separator: ",").map(String.init)
                let choice = offered.first { $0 == "None" || ($0 == "CRC32C" && limits.supportsDigests) }
                if let choice {
                    parameters[keyPath: path] = choice == "CRC32C"
                    answers.append((key, choice))
                } else {
                    answers.append((key, "Reject"))
                }
            case .irrelevant:
                answers.append((key, "Irrelevant"))
            }
        }
        // FirstBurstLength never exceeds MaxBurstLength (RFC 7143 §13.14).
        if parameters.firstBurstLength > parameters.maxBurstLength {
            parameters.firstBurstLength = parameters.maxBurstLength
            if let i = answers.firstIndex(where: { $0.0 == "FirstBurstLength" }) {
                answers[i].1 = String(parameters.firstBurstLength)
            }
        }
        if !declaredMaxRecvDataSegmentLength {
            declaredMaxRecvDataSegmentLength = true
            answers.append(("MaxRecvDataSegmentLength", String(limits.maxRecvDataSegmentLength)))
        }
        return answers
    }
}

