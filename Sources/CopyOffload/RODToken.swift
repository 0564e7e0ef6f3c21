//
// ROD tokens (SPC-4 §5.17.6): the 512 bytes POPULATE TOKEN hands out and WRITE USING TOKEN
// hands back, the ROD types this copy manager offers, and the token errors (ASC 23h).
//
// Layout of the tokens created here (offsets in bytes):
//
//     0–3     ROD TYPE (the type actually in force: a request for "point in time default"
//             gets a persistent token)
//     6–7     ROD TOKEN LENGTH = 01F8h
//     8–15    COPY MANAGER ROD TOKEN IDENTIFIER (unique in this process)
//     16–47   CREATOR LOGICAL UNIT DESCRIPTOR: an identification CSCD descriptor (E4h) with
//             the source LU's NAA designator and its block length at bytes 45–47
//     48–63   NUMBER OF BYTES REPRESENTED (128 bits)
//     96–119  device type specific data: READ CAPACITY (16) bytes 8–31 of the source LU
//     128–    TARGET DEVICE DESCRIPTOR: a SCSI name string designation descriptor (target)
//     448–455 copy manager instance (random for each run of the process)
//     456–479 random bytes
//     496–511 authenticator: SipHash-2-4 (two keys, 128 bits) of bytes 0–495 under a key
//             that never leaves the process
//
// The authenticator makes a token unforgeable: one altered by the initiator fails it and is
// reported as TOKEN CORRUPT (23/05); one from another run of the process (another instance
// number) as TOKEN UNKNOWN (23/04).
//
import SCSI

/// ROD types (SPC-4 Table 144).
public enum RODType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case accessUponReference = 0x0001_0000
    case pointInTimeDefault = 0x0080_0000
    case pointInTimeChangeVulnerable = 0x0080_0001
    case pointInTimePersistent = 0x0080_0002
    case blockDeviceZero = 0xFFFF_0001

    /// The types a POPULATE TOKEN may ask for (RTV = 1).
    public static let creatable: [RODType] = [
        .accessUponReference, .pointInTimeDefault, .pointInTimeChangeVulnerable, .pointInTimePersistent,
    ]

    /// The type a token of this requested type really has.
    public var effective: RODType { self == .pointInTimeDefault ? .pointInTimePersistent : self }

    public var description: String {
        switch self {
        case .accessUponReference: "access-upon-reference"
        case .pointInTimeDefault: "point-in-time-default"
        case .pointInTimeChangeVulnerable: "point-in-time-change-vulnerable"
        case .pointInTimePersistent: "point-in-time-persistent"
        case .blockDeviceZero: "block-device-zero"
        }
    }

    /// The configuration file's names ("access-upon-reference", ...).
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }
}

/// Why a ROD token cannot be used: ILLEGAL REQUEST with ASC 23h and this ASCQ.
public enum RODTokenError: UInt8, Error, Sendable, Equatable, CustomStringConvertible {
    case causeNotReportable = 0x00
    case unsupportedTokenType = 0x01
    case remoteTokenUsageNotSupported = 0x02
    case tokenUnknown = 0x04
    case tokenCorrupt = 0x05
    case tokenRevoked = 0x06
    case tokenExpired = 0x07
    case tokenCancelled = 0x08
    case tokenDeleted = 0x09
    case invalidTokenLength = 0x0A

    public var code: AdditionalSenseCode { AdditionalSenseCode(0x23, self.rawValue) }

    public var description: String {
        switch self {
        case .causeNotReportable: "invalid token operation"
        case .unsupportedTokenType: "unsupported token type"
        case .remoteTokenUsageNotSupported: "remote token usage not supported"
        case .tokenUnknown: "token unknown"
        case .tokenCorrupt: "token corrupt"
        case .tokenRevoked: "token revoked"
        case .tokenExpired: "token expired"
        case .tokenCancelled: "token cancelled"
        case .tokenDeleted: "token deleted"
        case .invalidTokenLength: "invalid token length"
        }
    }
}

/// SipHash-2-4 (Aumasson and Bernstein), the keyed hash that authenticates tokens.
struct SipHash24 {
    static func hash(_ data: [UInt8], _ range: Range<Int>, key k0: UInt64, _ k1: UInt64) -> UInt64 {
        var v0: UInt64 = k0 ^ 0x736f_6d65_7073_6575
        var v1: UInt64 = k1 ^ 0x646f_7261_6e64_6f6d
        var v2: UInt64 = k0 ^ 0x6c79_6765_6e65_7261
        var v3: UInt64 = k1 ^ 0x7465_6462_7974_6573
        @inline(__always) func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }
        @inline(__always) func round() {
            v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
            v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
            v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        }
        let count = range.count
        var index = range.lowerBound
        while index + 8 <= range.upperBound {
            var m: UInt64 = 0
            for i in 0..<8 { m |= UInt64(data[index + i]) << (8 * UInt64(i)) }
            v3 ^= m; round(); round(); v0 ^= m
            index += 8
        }
        var last = UInt64(truncatingIfNeeded: count) << 56
        var shift: UInt64 = 0
        while index < range.upperBound {
            last |= UInt64(data[index]) << shift
            shift += 8
            index += 1
        }
        v3 ^= last; round(); round(); v0 ^= last
        v2 ^= 0xFF
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

/// What this copy manager needs to create and recognise its tokens.
public struct RODTokenMinter: Sendable {
    public static let length = 512
    public static let lengthField: UInt16 = 0x01F8
    static let instanceOffset = 448
    static let nonceOffset = 456
    static let authenticatorOffset = 496

    /// Random for each run of the process.
    public let instance: UInt64
    private let keys: (UInt64, UInt64, UInt64, UInt64)

    public init() {
        var generator = SystemRandomNumberGenerator()
        self.init(instance: generator.next(), keys: (generator.next(), generator.next(), generator.next(), generator.next()))
    }

    init(instance: UInt64, keys: (UInt64, UInt64, UInt64, UInt64)) {
        self.instance = instance
        self.keys = keys
    }

    func authenticator(_ token: [UInt8]) -> (UInt64, UInt64) {
        let range = 0..<Self.authenticatorOffset
        return (SipHash24.hash(token, range, key: keys.0, keys.1), SipHash24.hash(token, range, key: keys.2, keys.3))
    }

    /// The bytes of a new token.
    func mint(type: RODType, identifier: UInt64, source: CopyUnit, bytesRepresented: UInt64) -> [UInt8] {
        var token = [UInt8](repeating: 0, count: Self.length)
        token.put32(type.rawValue, at: 0)
        token.put16(Self.lengthField, at: 6)
        token.put64(identifier, at: 8)
        // Creator logical unit: identification CSCD descriptor E4h (SPC-4 §6.4.4.5).
        token[16] = 0xE4
        if let naa = source.designators.first(where: { $0.type == 3 && $0.value.count <= 20 })
            ?? source.designators.first(where: { $0.value.count <= 20 }) {
            token[20] = naa.codeSet
            token[21] = naa.type
            token[23] = UInt8(naa.value.count)
            for (i, byte) in naa.value.enumerated() { token[24 + i] = byte }
        }
        token[47] = UInt8(truncatingIfNeeded: source.blockSize)
        token[45] = UInt8(truncatingIfNeeded: source.blockSize >> 16)
        token[46] = UInt8(truncatingIfNeeded: source.blockSize >> 8)
        // NUMBER OF BYTES REPRESENTED: 128 bits, the upper half zero.
        token.put64(bytesRepresented, at: 56)
        // READ CAPACITY (16) bytes 8–31: block length, protection, exponents, LBPME/LBPRZ.
        token.put32(UInt32(source.blockSize), at: 96)
        if source.isThinProvisioned { token[102] = 0xC0 }
        // Target device descriptor: SCSI name string designator, association 10b (target).
        var name = Array(source.id.targetName.utf8.prefix(223)) + [0]
        while name.count % 4 != 0 { name.append(0) }
        token[128] = 0x03
        token[129] = 0x20 | 0x08
        token[131] = UInt8(name.count)
        for (i, byte) in name.enumerated() { token[132 + i] = byte }
        token.put64(self.instance, at: Self.instanceOffset)
        var generator = SystemRandomNumberGenerator()
        for offset in stride(from: Self.nonceOffset, to: Self.nonceOffset + 24, by: 8) {
            token.put64(generator.next(), at: offset)
        }
        let (a, b) = self.authenticator(token)
        token.put64(a, at: Self.authenticatorOffset)
        token.put64(b, at: Self.authenticatorOffset + 8)
        return token
    }

    /// What a token an initiator sent is, before any lookup.
    public enum Recognition: Sendable, Equatable {
        /// The block device zero ROD token (ROD type FFFF0001h).
        case zero
        /// One of ours, with this identifier.
        case minted(identifier: UInt64, type: RODType)
    }

    /// Checks, in order: the length field (23/0A), the ROD type (23/01), the instance (a token
    /// of another run or another copy manager: 23/04) and the authenticator (23/05).
    public func recognise(_ token: [UInt8]) -> Result<Recognition, RODTokenError> {
        guard token.count == Self.length else { return .failure(.invalidTokenLength) }
        let rawType = token.be32(0)
        guard token.be16(6) == Self.lengthField else { return .failure(.invalidTokenLength) }
        guard let type = RODType(rawValue: rawType) else { return .failure(.unsupportedTokenType) }
        if type == .blockDeviceZero { return .success(.zero) }
        guard token.be64(Self.instanceOffset) == self.instance else { return .failure(.tokenUnknown) }
        let (a, b) = self.authenticator(token)
        guard token.be64(Self.authenticatorOffset) == a, token.be64(Self.authenticatorOffset + 8) == b else {
            return .failure(.tokenCorrupt)
        }
        return .success(.minted(identifier: token.be64(8), type: type))
    }
}
