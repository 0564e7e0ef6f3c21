@testable import ISCSIEngine
@testable import ISCSIWire
import NIOCore
import Testing

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }

@Suite("CHAP hashes (RFC 1321, FIPS 180-4 test vectors)")
struct CHAPDigestTests {
    @Test func md5Vectors() {
        #expect(hex(MD5.hash([])) == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(hex(MD5.hash(Array("abc".utf8))) == "900150983cd24fb0d6963f7d28e17f72")
        #expect(hex(MD5.hash(Array("message digest".utf8))) == "f96b697d7cb7938d525a2f31aaf161d0")
        let long = String(repeating: "1234567890", count: 8)
        #expect(hex(MD5.hash(Array(long.utf8))) == "57edf4a22be3c955ac49da2e2107b67a")
    }

    @Test func sha1Vectors() {
        #expect(hex(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(SHA1.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
    }

    @Test func sha256Vectors() {
        #expect(hex(SHA256.hash([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex(SHA256.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func binaryValues() {
        #expect(BinaryValue.encodeHex([0x00, 0xAB, 0x10]) == "0x00ab10")
        #expect(BinaryValue.decode("0x00AB10") == [0x00, 0xAB, 0x10])
        #expect(BinaryValue.decode("0xabc") == [0x0A, 0xBC])  // odd length: implied leading zero
        #expect(BinaryValue.decode("0bAAEC") == [0x00, 0x01, 0x02])
        #expect(BinaryValue.decode("0bAAE=") == [0x00, 0x01])
        #expect(BinaryValue.decode("0xzz") == nil)
        #expect(BinaryValue.decode("1234") == nil)
        #expect(BinaryValue.decode("0x") == nil)
    }

    @Test func secretsNeverPrint() {
        let secret = CHAPSecret("initiator-secret")
        #expect("\(secret)" == "<secret>")
        #expect(String(reflecting: secret) == "<secret>")
        let account = CHAPAccount(user: "u", secret: secret)
        #expect(!"\(account)".contains("initiator-secret"))
        #expect(!String(reflecting: account).contains("initiator-secret"))
    }
}

// MARK: CHAP in the login state machine

let chapIQN = "iqn.2026-11.org.test:chap"
let oneWay = CHAPAccount(user: "alice", secret: CHAPSecret("initiator-secret"))
let mutual = CHAPAccount(user: "alice", secret: CHAPSecret("initiator-secret"),
                         mutualUser: "target-bob", mutualSecret: CHAPSecret("target-secret-xyz"))
/// Identifier 0x2a, then challenge bytes 0, 1, 2, …
let fixedRandom: RandomBytesSource = { n in [0x2a] + (0..<UInt8(n - 1)).map { $0 } }

func chapDirectory(_ account: CHAPAccount, allowed: [String]? = nil) -> LoginDirectory {
    LoginDirectory(targets: [LoginDirectory.Target(name: chapIQN, alias: nil, portalGroupTag: 1, chap: account,
                                                   allowedInitiators: allowed)],
                   discoveryCHAP: account)
}

func securityRequest(_ pairs: [(String, String)], transit: Bool = true, nextStage: UInt8 = 1) -> LoginRequest {
    LoginRequest(transit: transit, continue: false, currentStage: 0, nextStage: transit ? nextStage : 0,
                 versionMax: 0, versionMin: 0, isid: 0x0002_3D00_0001, tsih: 0, initiatorTaskTag: 1, cid: 0, cmdSN: 1,
                 expStatSN: 0, text: text(pairs))
}

func firstCHAPRequest(initiator: String = "iqn.2024-01.test:initiator", target: String? = chapIQN,
                      methods: String = "CHAP,None") -> LoginRequest {
    var pairs = [("InitiatorName", initiator)]
    if let target { pairs += [("SessionType", "Normal"), ("TargetName", target)] } else { pairs += [("SessionType", "Discovery")] }
    return securityRequest(pairs + [("AuthMethod", methods)])
}

/// Drives a login through AuthMethod and CHAP_A; returns the target's CHAP answer.
func startCHAP(_ login: inout LoginStateMachine, algorithms: String = "5", first: LoginRequest = firstCHAPRequest())
    -> [String: String]?
{
    guard case .respond(let r1) = login.receive(first) else { return nil }
    #expect(keys(r1.text)["AuthMethod"] == "CHAP")
    #expect(!r1.transit)  // no leaving the security stage before authentication
    guard case .respond(let r2) = login.receive(securityRequest([("CHAP_A", algorithms)], transit: false)) else { return nil }
    #expect(!r2.transit)
    return keys(r2.text)
}

@Suite("CHAP login (RFC 7143 §12.1.3)")
struct CHAPLoginTests {
    @Test func oneWayMD5LogsIn() {
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        guard let challenge = startCHAP(&login) else { Issue.record("no challenge"); return }
        #expect(challenge["CHAP_A"] == "5")
        #expect(challenge["CHAP_I"] == "42")
        #expect(challenge["CHAP_C"] == "0x" + hex((0..<32).map { UInt8($0) }))
        let action = login.receive(securityRequest([("CHAP_N", "alice"), ("CHAP_R", "0xde53e5e268fa503066bbd3bde377c938")]))
        guard case .respond(let r) = action else { Issue.record("expected success, got \(action)"); return }
        #expect(r.status == .success)
        #expect(r.transit && r.currentStage == 0 && r.nextStage == 1)
        #expect(keys(r.text)["CHAP_N"] == nil)
    }

    @Test(arguments: [("7,6,5", "7", "0x80489e262cb88eeb289d9df6ca4cc01b520ad3cd6ce51dd68d37d58f66984cf4"),
                      ("6,5", "6", "0x55ab40e0c9600ac91339a198bef2c4095b93050e"),
                      ("9,8,5", "5", "0xde53e5e268fa503066bbd3bde377c938")])
    func algorithmIsTheInitiatorsFirstSupportedChoice(offered: String, chosen: String, response: String) {
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        guard let challenge = startCHAP(&login, algorithms: offered) else { Issue.record("no challenge"); return }
        #expect(challenge["CHAP_A"] == chosen)
        guard case .respond(let r) = login.receive(securityRequest([("CHAP_N", "alice"), ("CHAP_R", response)])) else {
            Issue.record("expected success"); return
        }
        #expect(r.transit)
    }

    @Test(arguments: ["", "56", "1,2,3", "Reject"])
    func unsupportedAlgorithmsFail(offered: String) {
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        _ = login.receive(firstCHAPRequest())
        guard case .fail(let r) = login.receive(securityRequest([("CHAP_A", offered)], transit: false)) else {
            Issue.record("expected failure"); return
        }
        #expect(r.status == .authenticationFailure)
    }

    @Test func wrongSecretAndWrongNameFailAlike() {
        var statuses: [LoginResponse] = []
        for (name, response) in [("alice", "0xde53e5e268fa503066bbd3bde377c939"), ("mallory", "0xde53e5e268fa503066bbd3bde377c938"),
                                 ("alice", "0xde53"), ("alice", "garbage")] {
            var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
            _ = startCHAP(&login)
            guard case .fail(let r) = login.receive(securityRequest([("CHAP_N", name), ("CHAP_R", response)])) else {
                Issue.record("expected failure for \(name)"); continue
            }
            statuses.append(r)
        }
        #expect(statuses.count == 4)
        #expect(statuses.allSatisfy { $0.status == .authenticationFailure && $0.text.readableBytes == 0 })
    }

    @Test func noCredentialsFails() {
        // The initiator offers only None to a CHAP target.
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        guard case .fail(let r) = login.receive(firstCHAPRequest(methods: "None")) else { Issue.record("expected failure"); return }
        #expect(r.status == .authenticationFailure)
        // The initiator skips the security stage (Linux without credentials: CSG=1 directly).
        var skipping = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        guard case .fail(let r2) = skipping.receive(linuxLogin(target: chapIQN)) else { Issue.record("expected failure"); return }
        #expect(r2.status == .authenticationFailure)
        // Security stage, T=1, without AuthMethod.
        var silent = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        let request = securityRequest([("InitiatorName", "iqn.2024-01.test:i"), ("TargetName", chapIQN)])
        guard case .fail(let r3) = silent.receive(request) else { Issue.record("expected failure"); return }
        #expect(r3.status == .authenticationFailure)
    }

    @Test func responseBeforeChallengeFails() {
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        _ = login.receive(firstCHAPRequest())
        guard case .fail(let r) = login.receive(securityRequest([("CHAP_N", "alice"), ("CHAP_R", "0x00")])) else {
            Issue.record("expected failure"); return
        }
        #expect(r.status == .authenticationFailure)
    }

    @Test func mutualCHAPAnswersTheInitiatorsChallenge() {
        var login = LoginStateMachine(directory: chapDirectory(mutual), random: fixedRandom)
        _ = startCHAP(&login, algorithms: "7")
        let action = login.receive(securityRequest([
            ("CHAP_N", "alice"), ("CHAP_R", "0x80489e262cb88eeb289d9df6ca4cc01b520ad3cd6ce51dd68d37d58f66984cf4"),
            ("CHAP_I", "7"), ("CHAP_C", "0x" + String(repeating: "aa", count: 16)),
        ]))
        guard case .respond(let r) = action else { Issue.record("expected success, got \(action)"); return }
        #expect(r.transit)
        #expect(keys(r.text)["CHAP_N"] == "target-bob")
        #expect(keys(r.text)["CHAP_R"] == "0x46448a3c696ab4f2400e8f5dd8e9c8f11332c705b9c295d3b4761c6964f1d38f")
    }

    @Test func reflectedChallengeIsRefused() {
        var login = LoginStateMachine(directory: chapDirectory(mutual), random: fixedRandom)
        guard let challenge = startCHAP(&login) else { Issue.record("no challenge"); return }
        let action = login.receive(securityRequest([
            ("CHAP_N", "alice"), ("CHAP_R", "0xde53e5e268fa503066bbd3bde377c938"),
            ("CHAP_I", "42"), ("CHAP_C", challenge["CHAP_C"]!),
        ]))
        guard case .fail(let r) = action else { Issue.record("expected failure"); return }
        #expect(r.status == .authenticationFailure)
    }

    @Test func mutualRequestWithoutTargetCredentialsFails() {
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        _ = startCHAP(&login)
        let action = login.receive(securityRequest([
            ("CHAP_N", "alice"), ("CHAP_R", "0xde53e5e268fa503066bbd3bde377c938"),
            ("CHAP_I", "7"), ("CHAP_C", "0x" + String(repeating: "aa", count: 16)),
        ]))
        guard case .fail(let r) = action else { Issue.record("expected failure"); return }
        #expect(r.status == .authenticationFailure)
    }

    @Test func oversizeMutualChallengeFails() {
        var login = LoginStateMachine(directory: chapDirectory(mutual), random: fixedRandom)
        _ = startCHAP(&login)
        let action = login.receive(securityRequest([
            ("CHAP_N", "alice"), ("CHAP_R", "0xde53e5e268fa503066bbd3bde377c938"),
            ("CHAP_I", "7"), ("CHAP_C", "0x" + String(repeating: "aa", count: 1025)),
        ]))
        guard case .fail(let r) = action else { Issue.record("expected failure"); return }
        #expect(r.status == .authenticationFailure)
    }

    @Test func discoverySessionUsesDiscoveryCHAP() {
        var login = LoginStateMachine(directory: chapDirectory(oneWay), random: fixedRandom)
        _ = startCHAP(&login, first: firstCHAPRequest(target: nil))
        guard case .respond(let r) = login.receive(securityRequest([("CHAP_N", "alice"),
                                                                      ("CHAP_R", "0xde53e5e268fa503066bbd3bde377c938")]))
        else { Issue.record("expected success"); return }
        #expect(r.transit)
    }

    @Test func noCHAPConfiguredStillAnswersNone() {
        var login = LoginStateMachine(directory: directory)
        guard case .respond(let r) = login.receive(firstCHAPRequest(target: "iqn.2026-11.org.test:t1")) else {
            Issue.record("expected success"); return
        }
        #expect(keys(r.text)["AuthMethod"] == "None")
        #expect(r.transit)
    }

    @Test func aclRefusesAfterAuthenticationAndWithoutCHAP() {
        // With CHAP: the right secret from a name not in the ACL is an authorization failure.
        var login = LoginStateMachine(directory: chapDirectory(oneWay, allowed: ["iqn.2024-01.test:other"]), random: fixedRandom)
        _ = startCHAP(&login)
        guard case .fail(let r) = login.receive(securityRequest([("CHAP_N", "alice"),
                                                                   ("CHAP_R", "0xde53e5e268fa503066bbd3bde377c938")]))
        else { Issue.record("expected failure"); return }
        #expect(r.status == .authorizationFailure)
        // Without CHAP: refused at once.
        let open = LoginDirectory(targets: [LoginDirectory.Target(name: "iqn.2026-11.org.test:t1", alias: nil, portalGroupTag: 1,
                                                                   allowedInitiators: ["IQN.2024-01.TEST:INITIATOR"])])
        var allowed = LoginStateMachine(directory: open)
        guard case .establishSession = allowed.receive(linuxLogin()) else { Issue.record("expected login"); return }
        let closed = LoginDirectory(targets: [LoginDirectory.Target(name: "iqn.2026-11.org.test:t1", alias: nil, portalGroupTag: 1,
                                                                     allowedInitiators: [])])
        var refused = LoginStateMachine(directory: closed)
        guard case .fail(let r2) = refused.receive(linuxLogin()) else { Issue.record("expected failure"); return }
        #expect(r2.status == .authorizationFailure)
    }
}
