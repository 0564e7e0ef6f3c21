//
// CHAP as iSCSI profiles it (RFC 7143 §12.1.3, RFC 1994), target side, as pure logic.
//
//   initiator                               target
//   AuthMethod=CHAP[,None]          ──▶
//                                   ◀──     AuthMethod=CHAP
//   CHAP_A=<a1,a2,...>              ──▶
//                                   ◀──     CHAP_A=<a>, CHAP_I=<i>, CHAP_C=<16+ random bytes>
//   CHAP_N=<name>, CHAP_R=<H(i‖secret‖C)>
//   [CHAP_I=<i'>, CHAP_C=<C'>]      ──▶     (mutual: C' must differ from C)
//                                   ◀──     [CHAP_N=<target name>, CHAP_R=<H(i'‖target secret‖C')>]
//
// Every failure is the same 02/01 authentication failure: the answer never says whether the
// name, the secret or the algorithm was wrong.
//

/// A CHAP secret. Its description never shows the bytes, so it cannot end up in a log line.
public struct CHAPSecret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// RFC 7143 §12.1.3 (and RFC 3720 §8.2.1): secrets shorter than 96 bits are refused.
    public static let minimumLength = 12
    /// Longer than any real secret; keeps a hostile definition from growing every hash.
    public static let maximumLength = 255

    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { self.bytes = Array(text.utf8) }

    public var description: String { "<secret>" }
    public var debugDescription: String { "<secret>" }
    public var customMirror: Mirror { Mirror(self, children: []) }
}

/// Who may log in with CHAP, and how the target answers a mutual challenge.
public struct CHAPAccount: Sendable, Equatable {
    /// CHAP_N the initiator must send.
    public var user: String
    public var secret: CHAPSecret
    /// CHAP_N and secret the target answers with when the initiator authenticates the target.
    public var mutualUser: String?
    public var mutualSecret: CHAPSecret?

    public init(user: String, secret: CHAPSecret, mutualUser: String? = nil, mutualSecret: CHAPSecret? = nil) {
        self.user = user
        self.secret = secret
        self.mutualUser = mutualUser
        self.mutualSecret = mutualSecret
    }
}

/// Where CHAP challenges and identifiers come from (the system CSPRNG in production,
/// a fixed sequence in tests).
public typealias RandomBytesSource = @Sendable (Int) -> [UInt8]

public let systemRandomBytes: RandomBytesSource = { count in
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

/// Binary values in text keys (RFC 7143 §6.1 binary-value): `0x` hex or `0b` base64.
public enum BinaryValue {
    public static func encodeHex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = Array("0x".utf8)
        out.reserveCapacity(2 + 2 * bytes.count)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count > 2, u[0] == UInt8(ascii: "0") else { return nil }
        switch u[1] {
        case UInt8(ascii: "x"), UInt8(ascii: "X"): return decodeHex(u[2...])
        case UInt8(ascii: "b"), UInt8(ascii: "B"): return decodeBase64(u[2...])
        default: return nil
        }
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func decodeHex(_ digits: ArraySlice<UInt8>) -> [UInt8]? {
        var digits = Array(digits)
        // An odd number of digits has an implied leading zero (RFC 7143 §6.1).
        if digits.count % 2 == 1 { digits.insert(UInt8(ascii: "0"), at: 0) }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var i = 0
        while i < digits.count {
            guard let hi = nibble(digits[i]), let lo = nibble(digits[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func decodeBase64(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        func value(_ c: UInt8) -> UInt32? {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): return 62
            case UInt8(ascii: "/"): return 63
            default: return nil
            }
        }
        var chars = Array(text)
        var padding = 0
        while chars.last == UInt8(ascii: "=") && padding < 2 { chars.removeLast(); padding += 1 }
        guard (chars.count + padding) % 4 == 0, chars.count % 4 != 1 else { return nil }
        var out: [UInt8] = []
        var accumulator: UInt32 = 0, bits = 0
        for c in chars {
            guard let v = value(c) else { return nil }
            accumulator = accumulator << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return out
    }
}

/// RFC 7143 §12.1.3: C and R are at most 1024 bytes.
let maximumCHAPBinaryLength = 1024
/// Our challenges: 16 random bytes at least (RFC 7143 §12.1.3 recommends the hash length or more).
let targetChallengeLength = 32

/// Compares without an early exit, so timing does not reveal how much of a response matched.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
    for i in 0..<max(a.count, b.count) {
        difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return difference == 0
}

/// CHAP_I (identifier, a byte) as decimal or 0x hex (RFC 7143 numerical value).
func parseCHAPIdentifier(_ text: String) -> UInt8? {
    if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt8(text.dropFirst(2), radix: 16) }
    return UInt8(text)
}

/// The response to a challenge: H(identifier ‖ secret ‖ challenge) (RFC 1994 §4.1).
public func chapResponse(algorithm: CHAPAlgorithm, identifier: UInt8, secret: CHAPSecret, challenge: [UInt8]) -> [UInt8] {
    algorithm.hash([identifier] + secret.bytes + challenge)
}

/// The target's half of one CHAP exchange in the security stage.
struct CHAPExchange: Sendable {
    enum Step: Sendable {
        /// AuthMethod=CHAP answered; waiting for CHAP_A.
        case awaitingAlgorithm
        /// Challenge sent; waiting for CHAP_N/CHAP_R.
        case awaitingResponse(CHAPAlgorithm, identifier: UInt8, challenge: [UInt8])
        case authenticated
    }
    let account: CHAPAccount
    var step: Step = .awaitingAlgorithm

    init(account: CHAPAccount) { self.account = account }

    var isAuthenticated: Bool {
        if case .authenticated = step { return true }
        return false
    }

    /// CHAP_A: choose the first algorithm of the initiator's list we implement and challenge it.
    mutating func chooseAlgorithm(_ offered: String, random: RandomBytesSource) -> [(String, String)]? {
        guard case .awaitingAlgorithm = step else { return nil }
        let choice = offered.split(separator: ",", omittingEmptySubsequences: false).lazy
            .compactMap { UInt8($0) }.compactMap { CHAPAlgorithm(rawValue: $0) }.first
        guard let choice else { return nil }
        let bytes = random(1 + targetChallengeLength)
        guard bytes.count == 1 + targetChallengeLength else { return nil }
        let identifier = bytes[0]
        let challenge = Array(bytes[1...])
        step = .awaitingResponse(choice, identifier: identifier, challenge: challenge)
        return [("CHAP_A", String(choice.rawValue)), ("CHAP_I", String(identifier)),
                ("CHAP_C", BinaryValue.encodeHex(challenge))]
    }

    /// CHAP_N, CHAP_R and, for mutual CHAP, CHAP_I and CHAP_C: verify, and answer the
    /// initiator's challenge. nil: authentication failed.
    mutating func verify(name: String?, response: String?, mutualIdentifier: String?,
                         mutualChallenge: String?) -> [(String, String)]? {
        guard case .awaitingResponse(let algorithm, let identifier, let challenge) = step,
              let name, let responseText = response, let received = BinaryValue.decode(responseText),
              received.count <= maximumCHAPBinaryLength
        else { return nil }
        let expected = chapResponse(algorithm: algorithm, identifier: identifier, secret: account.secret,
                                    challenge: challenge)
        // Evaluate both comparisons, so a wrong name and a wrong secret take the same path.
        let nameMatches = constantTimeEqual(Array(name.utf8), Array(account.user.utf8))
        let responseMatches = constantTimeEqual(received, expected)
        guard nameMatches && responseMatches else { return nil }
        var answers: [(String, String)] = []
        switch (mutualIdentifier, mutualChallenge) {
        case (nil, nil):
            break
        case (let i?, let c?):
            guard let mutualUser = account.mutualUser, let mutualSecret = account.mutualSecret,
                  let identifier = parseCHAPIdentifier(i), let theirs = BinaryValue.decode(c),
                  !theirs.isEmpty, theirs.count <= maximumCHAPBinaryLength,
                  // A reflected challenge (ours sent back) would let a peer use us as an oracle.
                  theirs != challenge
            else { return nil }
            let r = chapResponse(algorithm: algorithm, identifier: identifier, secret: mutualSecret, challenge: theirs)
            answers = [("CHAP_N", mutualUser), ("CHAP_R", BinaryValue.encodeHex(r))]
        default:
            return nil
        }
        step = .authenticated
        return answers
    }
}
