//
// The login phase of one connection (RFC 7143 §6.3, §11.12–11.13), target side.
//
//        first Login Request
//   ┌────────────────────────┐
//   │ awaitingFirstRequest   │──(bad version / name / target)──▶ failed
//   └───────────┬────────────┘
//               ▼
//   ┌────────────────────────┐  C=1: gather text, answer with an empty response
//   │ negotiating(stage)     │◀─┐ keys answered, T=1 honoured when the stages allow
//   └───────────┬────────────┘──┘
//               │ response with T=1, NSG=FullFeature
//               ▼
//   ┌────────────────────────┐  the runtime assigns a TSIH (and reinstates an old
//   │ awaitingSession        │  session with the same ISID) then calls
//   └───────────┬────────────┘  `sessionEstablished(tsih:)` for the final response
//               ▼
//         fullFeature
//
// Policy on peer violations: anything malformed in a login ends it with a Login Response
// carrying the status class the RFC names (initiator error 02/xx), then the connection
// closes. The machine does no I/O and asks the runtime for nothing but a TSIH.
//
import ISCSIWire
import NIOCore

/// What the login needs to know about the targets behind this portal.
public struct LoginDirectory: Sendable {
    public struct Target: Sendable {
        public var name: String
        public var alias: String?
        public var portalGroupTag: UInt16
        /// CHAP required to log in to this target; nil: AuthMethod=None.
        public var chap: CHAPAccount?
        /// Initiator names allowed to log in (compared case-insensitively); nil: everyone.
        public var allowedInitiators: [String]?
        public init(name: String, alias: String?, portalGroupTag: UInt16, chap: CHAPAccount? = nil,
                    allowedInitiators: [String]? = nil) {
            self.name = name
            self.alias = alias
            self.portalGroupTag = portalGroupTag
            self.chap = chap
            self.allowedInitiators = allowedInitiators
        }

        /// Whether `initiatorName` may log in to (and, in discovery, see) this target.
        public func admits(initiatorName: String) -> Bool {
            guard let allowed = allowedInitiators else { return true }
            let name = initiatorName.lowercased()
            return allowed.contains { $0.lowercased() == name }
        }
    }
    public var targets: [String: Target]
    /// The portal group tag of this portal, answered in discovery logins too.
    public var portalGroupTag: UInt16
    /// CHAP required for discovery sessions; nil: AuthMethod=None.
    public var discoveryCHAP: CHAPAccount?
    public init(targets: [Target], portalGroupTag: UInt16 = 1, discoveryCHAP: CHAPAccount? = nil) {
        self.targets = Dictionary(targets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.portalGroupTag = portalGroupTag
        self.discoveryCHAP = discoveryCHAP
    }
}

/// What a completed login established.
public struct LoginOutcome: Sendable, Equatable {
    public var initiatorName: String
    public var initiatorAlias: String?
    public var targetName: String?
    public var sessionType: SessionType
    public var isid: UInt64
    /// The TSIH the initiator sent (0 for a new session).
    public var requestedTSIH: UInt16
    public var cid: UInt16
    public var parameters: OperationalParameters
    /// The CmdSN the session starts at (the Login Request's CmdSN).
    public var expCmdSN: UInt32
    /// The StatSN of the final Login Response.
    public var statSN: UInt32
}

public enum LoginAction: Sendable, Equatable {
    /// Send this response and keep negotiating.
    case respond(LoginResponse)
    /// Send this response, then close the connection.
    case fail(LoginResponse)
    /// Login is complete: assign a TSIH and call `sessionEstablished(tsih:)`.
    case establishSession(LoginOutcome)
}

public struct LoginStateMachine: Sendable {
    private enum State: Sendable {
        case awaitingFirstRequest
        case negotiating(Progress)
        case awaitingSession(Progress, pendingResponse: LoginResponse, outcome: LoginOutcome)
        case complete
        case failed
    }

    private struct Progress: Sendable {
        var isid: UInt64
        var tsih: UInt16
        var cid: UInt16
        var initiatorTaskTag: UInt32
        var stage: UInt8
        var statSN: UInt32
        var expCmdSN: UInt32
        var initiatorName: String
        var initiatorAlias: String?
        var targetName: String?
        var sessionType: SessionType
        var negotiator: OperationalNegotiator
        /// Text gathered from Login Requests with C=1.
        var pendingText: [UInt8] = []
        var securityDone = false
        var answeredPortalGroupTag = false
        /// The CHAP account this login must authenticate with (nil: none required).
        var requiredCHAP: CHAPAccount?
        var chap: CHAPExchange?
        /// The initiator is not in the target's ACL: refused once authentication is done, so
        /// that an unauthenticated peer learns nothing about the ACL.
        var authorized = true
    }

    private var state: State = .awaitingFirstRequest
    public let directory: LoginDirectory
    public let limits: TargetNegotiationLimits
    private let random: RandomBytesSource

    public init(directory: LoginDirectory, limits: TargetNegotiationLimits = TargetNegotiationLimits(),
                random: @escaping RandomBytesSource = systemRandomBytes) {
        self.directory = directory
        self.limits = limits
        self.random = random
    }

    public var isComplete: Bool {
        if case .complete = state { return true }
        return false
    }

    private func failure(_ request: LoginRequest, _ status: LoginStatus, statSN: UInt32) -> LoginAction {
        var r = LoginResponse(
            transit: false, currentStage: request.currentStage, nextStage: 0, isid: request.isid, tsih: 0,
            initiatorTaskTag: request.initiatorTaskTag, status: status, text: ByteBuffer())
        r.statSN = statSN
        r.expCmdSN = request.cmdSN
        r.maxCmdSN = request.cmdSN
        return .fail(r)
    }

    public mutating func receive(_ request: LoginRequest) -> LoginAction {
        switch state {
        case .complete, .failed, .awaitingSession:
            // A Login Request in full feature phase or after failure is a protocol error.
            state = .failed
            return failure(request, .invalidDuringLogin, statSN: request.expStatSN)
        case .awaitingFirstRequest:
            // RFC 7143 §11.12.4: version 0 is the only one; VersionMin above it is unsupported.
            guard request.versionMin == 0 else {
                state = .failed
                return failure(request, .unsupportedVersion, statSN: request.expStatSN)
            }
            let progress = Progress(
                isid: request.isid, tsih: request.tsih, cid: request.cid,
                initiatorTaskTag: request.initiatorTaskTag, stage: request.currentStage,
                statSN: request.expStatSN, expCmdSN: request.cmdSN, initiatorName: "", initiatorAlias: nil,
                targetName: nil, sessionType: .normal,
                negotiator: OperationalNegotiator(limits: limits, sessionType: .normal))
            return process(request, progress: progress, first: true)
        case .negotiating(let progress):
            guard request.isid == progress.isid, request.tsih == progress.tsih,
                  request.initiatorTaskTag == progress.initiatorTaskTag, request.cid == progress.cid
            else {
                state = .failed
                return failure(request, .initiatorError, statSN: progress.statSN)
            }
            return process(request, progress: progress, first: false)
        }
    }

    private mutating func process(_ request: LoginRequest, progress p: Progress, first: Bool) -> LoginAction {
        var p = p
        guard request.currentStage == p.stage, request.currentStage != 3, request.currentStage != 2 else {
            state = .failed
            return failure(request, .initiatorError, statSN: p.statSN)
        }
        p.pendingText.append(contentsOf: request.text.readableBytesView)
        if request.continue {
            // RFC 7143 §11.12.2: more text follows; answer with an empty response.
            guard !request.transit else {
                state = .failed
                return failure(request, .initiatorError, statSN: p.statSN)
            }
            guard p.pendingText.count <= 65_536 else {
                state = .failed
                return failure(request, .outOfResources, statSN: p.statSN)
            }
            var r = LoginResponse(
                transit: false, currentStage: p.stage, nextStage: 0, isid: p.isid, tsih: p.tsih,
                initiatorTaskTag: p.initiatorTaskTag, status: .success, text: ByteBuffer())
            r.statSN = p.statSN
            r.expCmdSN = p.expCmdSN
            r.maxCmdSN = p.expCmdSN
            state = .negotiating(p)
            return .respond(r)
        }
        let pairs: [TextKeyValue]
        do {
            pairs = try TextKeys.parse(p.pendingText)
        } catch {
            state = .failed
            return failure(request, .initiatorError, statSN: p.statSN)
        }
        p.pendingText = []
        var answers: [(String, String)] = []

        if first {
            let names = Dictionary(pairs.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let initiatorName = names["InitiatorName"], !initiatorName.isEmpty else {
                state = .failed
                return failure(request, .missingParameter, statSN: p.statSN)
            }
            p.initiatorName = initiatorName
            p.initiatorAlias = names["InitiatorAlias"]
            switch names["SessionType"] ?? "Normal" {
            case "Normal": p.sessionType = .normal
            case "Discovery": p.sessionType = .discovery
            default:
                state = .failed
                return failure(request, .sessionTypeNotSupported, statSN: p.statSN)
            }
            p.negotiator = OperationalNegotiator(limits: limits, sessionType: p.sessionType)
            if p.sessionType == .normal {
                guard let targetName = names["TargetName"], !targetName.isEmpty else {
                    state = .failed
                    return failure(request, .missingParameter, statSN: p.statSN)
                }
                guard let target = directory.targets[targetName] else {
                    state = .failed
                    return failure(request, .notFound, statSN: p.statSN)
                }
                p.targetName = targetName
                p.requiredCHAP = target.chap
                p.authorized = target.admits(initiatorName: initiatorName)
                if let alias = target.alias { answers.append(("TargetAlias", alias)) }
                answers.append(("TargetPortalGroupTag", String(target.portalGroupTag)))
            } else {
                p.requiredCHAP = directory.discoveryCHAP
                answers.append(("TargetPortalGroupTag", String(directory.portalGroupTag)))
            }
            p.answeredPortalGroupTag = true
            // A target that requires CHAP cannot be entered by skipping the security stage.
            if p.requiredCHAP != nil && p.stage != LoginStage.securityNegotiation.rawValue {
                state = .failed
                return failure(request, .authenticationFailure, statSN: p.statSN)
            }
            if p.requiredCHAP == nil && !p.authorized {
                state = .failed
                return failure(request, .authorizationFailure, statSN: p.statSN)
            }
        }

        // Keys valid only in the first request, or only from the target, are not negotiable later.
        let operationalPairs = pairs.filter { pair in
            !["InitiatorName", "InitiatorAlias", "TargetName", "SessionType"].contains(pair.key)
        }
        if p.stage == LoginStage.securityNegotiation.rawValue {
            var rest: [TextKeyValue] = []
            var chapKeys: [String: String] = [:]
            for pair in operationalPairs {
                switch pair.key {
                case "AuthMethod":
                    // The method the target requires, if the initiator offers it.
                    let offered = pair.value.split(separator: ",").map(String.init)
                    let method = p.requiredCHAP == nil ? "None" : "CHAP"
                    guard p.chap == nil, !p.securityDone, offered.contains(method) else {
                        state = .failed
                        return failure(request, .authenticationFailure, statSN: p.statSN)
                    }
                    answers.append(("AuthMethod", method))
                    if let account = p.requiredCHAP {
                        p.chap = CHAPExchange(account: account)
                    } else {
                        p.securityDone = true
                    }
                case "CHAP_A":
                    guard var exchange = p.chap, let a = exchange.chooseAlgorithm(pair.value, random: random) else {
                        state = .failed
                        return failure(request, .authenticationFailure, statSN: p.statSN)
                    }
                    p.chap = exchange
                    answers += a
                case "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C":
                    guard p.chap != nil, chapKeys.updateValue(pair.value, forKey: pair.key) == nil else {
                        state = .failed
                        return failure(request, .authenticationFailure, statSN: p.statSN)
                    }
                case let key where key.hasPrefix("CHAP_"):
                    state = .failed
                    return failure(request, .authenticationFailure, statSN: p.statSN)
                default:
                    rest.append(pair)
                }
            }
            if !chapKeys.isEmpty {
                guard var exchange = p.chap,
                      let a = exchange.verify(name: chapKeys["CHAP_N"], response: chapKeys["CHAP_R"],
                                              mutualIdentifier: chapKeys["CHAP_I"], mutualChallenge: chapKeys["CHAP_C"])
                else {
                    state = .failed
                    return failure(request, .authenticationFailure, statSN: p.statSN)
                }
                // Authenticated: now the ACL decides.
                guard p.authorized else {
                    state = .failed
                    return failure(request, .authorizationFailure, statSN: p.statSN)
                }
                p.chap = exchange
                p.securityDone = true
                answers += a
            }
            // Operational keys in the security stage: answered, but our declaration waits for
            // the operational stage (open-iscsi accepts only security keys here).
            if !rest.isEmpty {
                do {
                    let declared = p.negotiator.declaredMaxRecvDataSegmentLength
                    var a = try p.negotiator.negotiate(rest)
                    if !declared { a.removeAll { $0.0 == "MaxRecvDataSegmentLength" } ; p.negotiator.resetDeclaration() }
                    answers += a
                } catch {
                    state = .failed
                    return failure(request, .initiatorError, statSN: p.statSN)
                }
            }
        } else {
            if operationalPairs.contains(where: { $0.key == "AuthMethod" || $0.key.hasPrefix("CHAP_") }) {
                state = .failed
                return failure(request, .initiatorError, statSN: p.statSN)
            }
            do {
                answers += try p.negotiator.negotiate(operationalPairs)
            } catch {
                state = .failed
                return failure(request, .initiatorError, statSN: p.statSN)
            }
        }

        // Stage transition (RFC 7143 §6.3): honour T=1 when NSG is a later valid stage.
        var transit = false
        var nextStage: UInt8 = 0
        // Leaving the security stage needs a completed authentication when one is required;
        // while a CHAP exchange is under way the target answers T=0 (RFC 7143 §12.1.3).
        let mayLeaveSecurity = p.requiredCHAP == nil || p.securityDone
        if request.transit && p.stage == LoginStage.securityNegotiation.rawValue && !mayLeaveSecurity && p.chap == nil {
            state = .failed
            return failure(request, .authenticationFailure, statSN: p.statSN)
        }
        if request.transit && (p.stage != LoginStage.securityNegotiation.rawValue || mayLeaveSecurity) {
            let nsg = request.nextStage
            let validNext: Bool
            switch p.stage {
            case 0: validNext = nsg == 1 || nsg == 3
            case 1: validNext = nsg == 3
            default: validNext = false
            }
            guard validNext else {
                state = .failed
                return failure(request, .initiatorError, statSN: p.statSN)
            }
            transit = true
            nextStage = nsg
        }

        var text = ByteBuffer()
        TextKeys.encode(answers.map { TextKeyValue($0.0, $0.1) }, into: &text)
        var response = LoginResponse(
            transit: transit, currentStage: p.stage, nextStage: nextStage, isid: p.isid, tsih: p.tsih,
            initiatorTaskTag: p.initiatorTaskTag, status: .success, text: text)
        response.expCmdSN = p.expCmdSN
        response.maxCmdSN = p.expCmdSN

        if transit && nextStage == LoginStage.fullFeaturePhase.rawValue {
            var parameters = p.negotiator.parameters
            if p.sessionType == .discovery {
                // Discovery sessions carry no SCSI data; keep the RFC defaults there.
                parameters.initialR2T = true
            }
            let outcome = LoginOutcome(
                initiatorName: p.initiatorName, initiatorAlias: p.initiatorAlias, targetName: p.targetName,
                sessionType: p.sessionType, isid: p.isid, requestedTSIH: p.tsih, cid: p.cid,
                parameters: parameters, expCmdSN: p.expCmdSN, statSN: p.statSN)
            state = .awaitingSession(p, pendingResponse: response, outcome: outcome)
            return .establishSession(outcome)
        }
        response.statSN = p.statSN
        p.statSN &+= 1
        if transit { p.stage = nextStage }
        state = .negotiating(p)
        return .respond(response)
    }

    /// The runtime refuses this connection before looking at the request (a resource limit):
    /// the answer to the first Login Request carries `status`, then the connection closes.
    public mutating func refuse(_ request: LoginRequest, status: LoginStatus) -> LoginResponse {
        state = .failed
        guard case .fail(let response) = failure(request, status, statSN: request.expStatSN) else {
            preconditionFailure("failure() always fails")
        }
        return response
    }

    /// The runtime assigned `tsih` (non-zero). Returns the final Login Response.
    public mutating func sessionEstablished(tsih: UInt16, maxCmdSN: UInt32) -> LoginResponse {
        guard case .awaitingSession(let p, var response, _) = state else {
            preconditionFailure("sessionEstablished called while not awaiting a session")
        }
        response.tsih = tsih
        response.statSN = p.statSN
        response.maxCmdSN = maxCmdSN
        state = .complete
        return response
    }

    /// The runtime refused the session (e.g. TSIH unknown, too many sessions).
    public mutating func sessionRefused(_ status: LoginStatus) -> LoginResponse {
        guard case .awaitingSession(let p, var response, _) = state else {
            preconditionFailure("sessionRefused called while not awaiting a session")
        }
        response.transit = false
        response.nextStage = 0
        response.status = status
        response.text = ByteBuffer()
        response.statSN = p.statSN
        state = .failed
        return response
    }
}

