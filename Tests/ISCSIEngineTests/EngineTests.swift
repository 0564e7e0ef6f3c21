import ISCSIEngine
@testable import ISCSIWire
import NIOCore
import Testing

// MARK: Helpers

func keys(_ buffer: ByteBuffer) -> [String: String] {
    let pairs = (try? TextKeys.parse(Array(buffer.readableBytesView))) ?? []
    return Dictionary(pairs.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
}

func text(_ pairs: [(String, String)]) -> ByteBuffer { TextKeys.encode(pairs.map { TextKeyValue($0.0, $0.1) }) }

/// The first Login Request of the Linux initiator (iscsistart, kernel 6.1), from the capture.
func linuxLogin(target: String = "iqn.2026-11.org.test:t1") -> LoginRequest {
    LoginRequest(
        transit: true, continue: false, currentStage: 1, nextStage: 3, versionMax: 0, versionMin: 0,
        isid: 0x0002_3D00_0001, tsih: 0, initiatorTaskTag: 0, cid: 0, cmdSN: 0, expStatSN: 0,
        text: text([
            ("InitiatorName", "iqn.2024-01.test:initiator"), ("InitiatorAlias", "(none)"), ("TargetName", target),
            ("SessionType", "Normal"), ("HeaderDigest", "None"), ("DataDigest", "None"), ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"), ("IFMarker", "No"), ("OFMarker", "No"), ("ErrorRecoveryLevel", "0"),
            ("InitialR2T", "No"), ("ImmediateData", "Yes"), ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"), ("MaxOutstandingR2T", "1"), ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"), ("MaxRecvDataSegmentLength", "262144"),
        ]))
}

let directory = LoginDirectory(targets: [LoginDirectory.Target(name: "iqn.2026-11.org.test:t1", alias: "t1", portalGroupTag: 1)])

// MARK: Negotiation and login

@Suite("Login and negotiation (RFC 7143 §6, §13)")
struct LoginTests {
    @Test func linuxInitiatorLoginCompletesInOneStep() {
        var login = LoginStateMachine(directory: directory)
        guard case .establishSession(let outcome) = login.receive(linuxLogin()) else {
            Issue.record("expected the login to complete")
            return
        }
        #expect(outcome.parameters.maxXmitDataSegmentLength == 262_144)
        #expect(outcome.parameters.initialR2T == false)  // OR(No, No)
        #expect(outcome.parameters.immediateData == true)
        #expect(outcome.parameters.maxBurstLength == 16_776_192)
        #expect(outcome.parameters.firstBurstLength == 262_144)
        #expect(outcome.parameters.maxOutstandingR2T == 1)
        let response = login.sessionEstablished(tsih: 7, maxCmdSN: 127)
        #expect(response.transit && response.currentStage == 1 && response.nextStage == 3)
        #expect(response.tsih == 7)
        #expect(response.status == .success)
        let answered = keys(response.text)
        #expect(answered["TargetPortalGroupTag"] == "1")
        #expect(answered["MaxRecvDataSegmentLength"] == "262144")
        #expect(answered["MaxConnections"] == "1")
        #expect(answered["ErrorRecoveryLevel"] == "0")
        #expect(answered["HeaderDigest"] == "None")
        #expect(answered["DefaultTime2Retain"] == "0")
        // Only keys open-iscsi recognises (iscsi.md §1.2).
        let known: Set<String> = [
            "TargetAlias", "TargetAddress", "TargetPortalGroupTag", "InitialR2T", "ImmediateData",
            "MaxRecvDataSegmentLength", "FirstBurstLength", "MaxBurstLength", "HeaderDigest", "DataDigest",
            "DefaultTime2Wait", "DefaultTime2Retain", "OFMarker", "IFMarker", "DataPDUInOrder", "DataSequenceInOrder",
            "MaxOutstandingR2T", "MaxConnections", "ErrorRecoveryLevel",
        ]
        #expect(Set(answered.keys).isSubset(of: known))
    }

    @Test func unknownTargetIsNotFound() {
        var login = LoginStateMachine(directory: directory)
        guard case .fail(let r) = login.receive(linuxLogin(target: "iqn.2026-11.org.test:nope")) else {
            Issue.record("expected failure"); return
        }
        #expect(r.status == .notFound)
    }

    @Test func missingInitiatorNameIsMissingParameter() {
        var login = LoginStateMachine(directory: directory)
        var request = linuxLogin()
        request.text = text([("TargetName", "iqn.2026-11.org.test:t1")])
        guard case .fail(let r) = login.receive(request) else { Issue.record("expected failure"); return }
        #expect(r.status == .missingParameter)
    }

    @Test func unsupportedVersion() {
        var login = LoginStateMachine(directory: directory)
        var request = linuxLogin()
        request.versionMin = 1
        request.versionMax = 1
        guard case .fail(let r) = login.receive(request) else { Issue.record("expected failure"); return }
        #expect(r.status == .unsupportedVersion)
    }

    @Test func securityStageThenOperational() {
        var login = LoginStateMachine(directory: directory)
        let first = LoginRequest(
            transit: true, continue: false, currentStage: 0, nextStage: 1, versionMax: 0, versionMin: 0, isid: 1, tsih: 0,
            initiatorTaskTag: 5, cid: 0, cmdSN: 1, expStatSN: 0,
            text: text([("InitiatorName", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"),
                        ("TargetName", "iqn.2026-11.org.test:t1"), ("SessionType", "Normal"), ("AuthMethod", "CHAP,None")]))
        guard case .respond(let r1) = login.receive(first) else { Issue.record("expected a response"); return }
        #expect(keys(r1.text)["AuthMethod"] == "None")
        #expect(keys(r1.text)["MaxRecvDataSegmentLength"] == nil)  // not in the security stage
        #expect(r1.transit && r1.nextStage == 1)
        var second = first
        second.currentStage = 1
        second.nextStage = 3
        second.text = text([("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C"), ("MaxRecvDataSegmentLength", "8192")])
        guard case .establishSession(let outcome) = login.receive(second) else { Issue.record("expected completion"); return }
        #expect(outcome.parameters.headerDigest && outcome.parameters.dataDigest)
        #expect(outcome.expCmdSN == 1)
        let final = login.sessionEstablished(tsih: 1, maxCmdSN: 128)
        #expect(final.statSN == r1.statSN &+ 1)
        #expect(keys(final.text)["MaxRecvDataSegmentLength"] == "262144")
    }

    @Test func negotiationResultFunctions() throws {
        var n = OperationalNegotiator(limits: TargetNegotiationLimits(), sessionType: .normal)
        let answers = try n.negotiate([
            TextKeyValue("InitialR2T", "Yes"), TextKeyValue("ImmediateData", "No"),
            TextKeyValue("MaxBurstLength", "0x1000"), TextKeyValue("FirstBurstLength", "8192"),
            TextKeyValue("DefaultTime2Wait", "0"), TextKeyValue("X-vendor.key", "1"),
            TextKeyValue("MaxOutstandingR2T", "0"), TextKeyValue("OFMarkInt", "2048~4096"),
        ])
        let a = Dictionary(answers, uniquingKeysWith: { x, _ in x })
        #expect(a["InitialR2T"] == "Yes")
        #expect(a["ImmediateData"] == "No")
        #expect(a["MaxBurstLength"] == "4096")
        #expect(a["FirstBurstLength"] == "4096")  // never above MaxBurstLength
        #expect(a["DefaultTime2Wait"] == "2")  // maximum
        #expect(a["X-vendor.key"] == "NotUnderstood")
        #expect(a["MaxOutstandingR2T"] == "Reject")  // below the range 1…65535
        #expect(a["OFMarkInt"] == "Irrelevant")
        #expect(throws: NegotiationError.duplicateKey("InitialR2T")) { try n.negotiate([TextKeyValue("InitialR2T", "No")]) }
    }

    @Test func discoverySessionAnswersNormalOnlyKeysIrrelevant() throws {
        var n = OperationalNegotiator(limits: TargetNegotiationLimits(), sessionType: .discovery)
        let a = Dictionary(try n.negotiate([TextKeyValue("MaxBurstLength", "262144"), TextKeyValue("HeaderDigest", "None")]),
                           uniquingKeysWith: { x, _ in x })
        #expect(a["MaxBurstLength"] == "Irrelevant")
        #expect(a["HeaderDigest"] == "None")
    }
}

// MARK: Session

final class FakePort: CommandPort, @unchecked Sendable {
    var admitted: [SCSICommandRequest] = []
    var result: (SCSICommandRequest) -> CommandDisposition
    init(result: @escaping (SCSICommandRequest) -> CommandDisposition = { c in
        .accept(token: c.initiatorTaskTag, dataOutLength: c.isWrite ? Int(c.expectedDataTransferLength) : 0)
    }) { self.result = result }
    func admit(_ command: SCSICommandRequest) -> CommandDisposition {
        admitted.append(command)
        return result(command)
    }
    func taskManagement(_ function: TaskManagementFunctionCode, lun: UInt64) -> TaskManagementResponseCode { .functionComplete }
}

func command(itt: UInt32, cmdSN: UInt32, read: Bool = false, write: Bool = false, edtl: UInt32 = 0,
             immediate: [UInt8] = [], cdb: [UInt8] = [0x00] + [UInt8](repeating: 0, count: 15)) -> InitiatorPDU
{
    .scsiCommand(SCSICommandRequest(
        isImmediate: false, isFinal: true, isRead: read, isWrite: write, attribute: 1, lun: 0, initiatorTaskTag: itt,
        expectedDataTransferLength: edtl, cmdSN: cmdSN, expStatSN: 0, cdb: cdb, bidirectionalReadLength: nil,
        immediateData: ByteBuffer(bytes: immediate)))
}

let anyHeader = BasicHeaderSegment(opcode: 0x01)
let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

func makeSession(_ port: FakePort, _ mutate: (inout OperationalParameters) -> Void = { _ in },
                 window: Int = 4, nop: TimeAmount? = nil) -> SessionStateMachine
{
    var p = OperationalParameters()
    p.maxXmitDataSegmentLength = 8192
    p.maxBurstLength = 16384
    p.firstBurstLength = 8192
    p.initialR2T = false
    mutate(&p)
    var c = SessionConfiguration(sessionType: .normal, parameters: p, targetName: "iqn.2026-11.org.test:t1")
    c.commandWindow = window
    c.nopInInterval = nop
    c.nopInTimeout = .seconds(5)
    return SessionStateMachine(configuration: c, port: port, expCmdSN: 10, statSN: 100, now: t0)
}

func sent(_ actions: [SessionAction]) -> [TargetPDU] {
    actions.compactMap { if case .send(let p) = $0 { return p } else { return nil } }
}

func executed(_ actions: [SessionAction]) -> [(UInt32, ByteBuffer?)] {
    actions.compactMap { if case .execute(let itt, _, let d) = $0 { return (itt, d) } else { return nil } }
}

@Suite("Session: command numbering (RFC 7143 §4.2.2.1)")
struct CmdSNTests {
    @Test func outOfWindowCommandsAreDroppedSilently() {
        let port = FakePort()
        var s = makeSession(port)
        #expect(s.maxCmdSN == 13)
        #expect(s.receive(command(itt: 1, cmdSN: 14), header: anyHeader, now: t0).isEmpty)  // MaxCmdSN + 1
        #expect(s.receive(command(itt: 2, cmdSN: 9), header: anyHeader, now: t0).isEmpty)  // ExpCmdSN - 1
        #expect(port.admitted.isEmpty)
    }

    @Test func commandsAheadOfExpCmdSNWaitForTheGap() {
        let port = FakePort()
        var s = makeSession(port)
        #expect(s.receive(command(itt: 2, cmdSN: 11), header: anyHeader, now: t0).isEmpty)
        let actions = s.receive(command(itt: 1, cmdSN: 10), header: anyHeader, now: t0)
        #expect(port.admitted.map(\.initiatorTaskTag) == [1, 2])
        #expect(executed(actions).map(\.0) == [1, 2])
        #expect(s.currentExpCmdSN == 12)
    }

    @Test func statSNAdvancesPerResponse() {
        let port = FakePort()
        var s = makeSession(port)
        _ = s.receive(command(itt: 1, cmdSN: 10), header: anyHeader, now: t0)
        _ = s.receive(command(itt: 2, cmdSN: 11), header: anyHeader, now: t0)
        let a = sent(s.completed(initiatorTaskTag: 1, result: CommandResult(status: 0)))
        let b = sent(s.completed(initiatorTaskTag: 2, result: CommandResult(status: 0)))
        guard case .scsiResponse(let r1) = a.first, case .scsiResponse(let r2) = b.first else {
            Issue.record("expected responses"); return
        }
        #expect(r1.statSN == 100 && r2.statSN == 101)
        #expect(r2.expCmdSN == 12)
    }
}

@Suite("Session: data transfer")
struct DataTransferTests {
    @Test func readIsSegmentedWithPhaseCollapsedStatusAndUnderflow() {
        let port = FakePort()
        var s = makeSession(port)
        _ = s.receive(command(itt: 1, cmdSN: 10, read: true, edtl: 24576), header: anyHeader, now: t0)
        var data = ByteBuffer()
        data.writeRepeatingByte(7, count: 20000)
        let pdus = sent(s.completed(initiatorTaskTag: 1, result: CommandResult(status: 0, dataIn: data, transferLength: 20000)))
        #expect(pdus.count == 3)
        guard case .dataIn(let a) = pdus[0], case .dataIn(let b) = pdus[1], case .dataIn(let c) = pdus[2] else {
            Issue.record("expected Data-In"); return
        }
        #expect(a.dataSN == 0 && a.bufferOffset == 0 && a.data.readableBytes == 8192 && a.status == nil && !a.isFinal)
        // MaxBurstLength 16384 ends a sequence: F without S.
        #expect(b.dataSN == 1 && b.bufferOffset == 8192 && b.isFinal && b.status == nil)
        #expect(c.dataSN == 2 && c.bufferOffset == 16384 && c.data.readableBytes == 3616)
        #expect(c.isFinal && c.status == 0 && c.residual == .underflow(4576) && c.statSN == 100)
    }

    @Test func readLongerThanEDTLIsTrimmedWithOverflow() {
        let port = FakePort()
        var s = makeSession(port)
        _ = s.receive(command(itt: 1, cmdSN: 10, read: true, edtl: 200), header: anyHeader, now: t0)
        let pdus = sent(s.completed(initiatorTaskTag: 1,
                                    result: CommandResult(status: 0, dataIn: ByteBuffer(repeating: 1, count: 512), transferLength: 512)))
        guard case .dataIn(let d) = pdus.first else { Issue.record("expected Data-In"); return }
        #expect(d.data.readableBytes == 200 && d.residual == .overflow(312))
    }

    @Test func checkConditionGoesInASCSIResponse() {
        let port = FakePort { _ in .complete(CommandResult(status: 2, sense: [0x70, 0, 5])) }
        var s = makeSession(port)
        let pdus = sent(s.receive(command(itt: 1, cmdSN: 10, read: true, edtl: 512), header: anyHeader, now: t0))
        guard case .scsiResponse(let r) = pdus.first else { Issue.record("expected SCSI Response"); return }
        #expect(r.status == 2 && r.sense == [0x70, 0, 5] && r.residual == .underflow(512))
    }

    @Test func immediateAndUnsolicitedThenR2T() {
        let port = FakePort()
        var s = makeSession(port)
        // EDTL 20480: 4096 immediate, 4096 unsolicited (FirstBurstLength 8192), 12288 by R2T.
        let a1 = s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 20480, immediate: [UInt8](repeating: 1, count: 4096)),
                           header: anyHeader, now: t0)
        guard case .readyToTransfer(let r2t) = sent(a1).first else { Issue.record("expected R2T"); return }
        #expect(r2t.bufferOffset == 8192 && r2t.desiredDataTransferLength == 12288 && r2t.r2tSN == 0)
        let unsolicited = DataOut(isFinal: true, lun: 0, initiatorTaskTag: 1, targetTransferTag: 0xFFFF_FFFF, expStatSN: 0,
                                  dataSN: 0, bufferOffset: 4096, data: ByteBuffer(repeating: 2, count: 4096))
        #expect(s.receive(.dataOut(unsolicited), header: anyHeader, now: t0).isEmpty)
        let solicited1 = DataOut(isFinal: false, lun: 0, initiatorTaskTag: 1, targetTransferTag: r2t.targetTransferTag,
                                 expStatSN: 0, dataSN: 0, bufferOffset: 8192, data: ByteBuffer(repeating: 3, count: 8192))
        #expect(s.receive(.dataOut(solicited1), header: anyHeader, now: t0).isEmpty)
        let solicited2 = DataOut(isFinal: true, lun: 0, initiatorTaskTag: 1, targetTransferTag: r2t.targetTransferTag,
                                 expStatSN: 0, dataSN: 1, bufferOffset: 16384, data: ByteBuffer(repeating: 4, count: 4096))
        let done = executed(s.receive(.dataOut(solicited2), header: anyHeader, now: t0))
        #expect(done.count == 1)
        let buffer = done[0].1!
        #expect(buffer.readableBytes == 20480)
        #expect(buffer.getInteger(at: 0, as: UInt8.self) == 1)
        #expect(buffer.getInteger(at: 4096, as: UInt8.self) == 2)
        #expect(buffer.getInteger(at: 8192, as: UInt8.self) == 3)
        #expect(buffer.getInteger(at: 20479, as: UInt8.self) == 4)
        guard case .scsiResponse(let r) = sent(s.completed(initiatorTaskTag: 1, result: CommandResult(status: 0, transferLength: 20480))).first
        else { Issue.record("expected response"); return }
        #expect(r.expDataSN == 1 && r.residual == .none)
    }

    @Test func wrongDataSNEndsTheCommandWithCheckCondition() {
        let port = FakePort()
        var s = makeSession(port) { $0.initialR2T = true; $0.immediateData = false }
        guard case .readyToTransfer(let r2t) = sent(s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 1024),
                                                              header: anyHeader, now: t0)).first
        else { Issue.record("expected R2T"); return }
        let bad = DataOut(isFinal: true, lun: 0, initiatorTaskTag: 1, targetTransferTag: r2t.targetTransferTag, expStatSN: 0,
                          dataSN: 0xFFFF_FFFF, bufferOffset: 0, data: ByteBuffer(repeating: 0, count: 1024))
        let actions = s.receive(.dataOut(bad), header: anyHeader, now: t0)
        #expect(executed(actions).isEmpty)
        guard case .scsiResponse(let r) = sent(actions).first else { Issue.record("expected response"); return }
        #expect(r.status == 2 && r.sense[2] == 0x0B)  // ABORTED COMMAND
    }

    @Test func r2tsRespectMaxOutstandingAndMaxBurst() {
        let port = FakePort()
        var s = makeSession(port) { $0.initialR2T = true; $0.maxOutstandingR2T = 2; $0.maxBurstLength = 4096 }
        let pdus = sent(s.receive(command(itt: 1, cmdSN: 10, write: true, edtl: 16384), header: anyHeader, now: t0))
        #expect(pdus.count == 2)
        guard case .readyToTransfer(let a) = pdus[0], case .readyToTransfer(let b) = pdus[1] else { Issue.record("R2Ts"); return }
        #expect(a.bufferOffset == 0 && a.desiredDataTransferLength == 4096 && a.r2tSN == 0)
        #expect(b.bufferOffset == 4096 && b.r2tSN == 1 && a.targetTransferTag != b.targetTransferTag)
        // Completing the first burst releases the third R2T.
        let d = DataOut(isFinal: true, lun: 0, initiatorTaskTag: 1, targetTransferTag: a.targetTransferTag, expStatSN: 0,
                        dataSN: 0, bufferOffset: 0, data: ByteBuffer(repeating: 0, count: 4096))
        guard case .readyToTransfer(let c) = sent(s.receive(.dataOut(d), header: anyHeader, now: t0)).first else {
            Issue.record("expected a third R2T"); return
        }
        #expect(c.bufferOffset == 8192 && c.r2tSN == 2)
    }
}

@Suite("Session: NOP, task management, logout, text")
struct SessionControlTests {
    @Test func nopOutIsEchoed() {
        var s = makeSession(FakePort())
        let ping = NOPOut(isImmediate: true, lun: 0, initiatorTaskTag: 0x4100_0000, targetTransferTag: 0xFFFF_FFFF, cmdSN: 10,
                          expStatSN: 100, pingData: ByteBuffer(bytes: Array("nopping\0".utf8)))
        guard case .nopIn(let n) = sent(s.receive(.nopOut(ping), header: anyHeader, now: t0)).first else {
            Issue.record("expected NOP-In"); return
        }
        #expect(n.initiatorTaskTag == 0x4100_0000 && n.targetTransferTag == 0xFFFF_FFFF)
        #expect(Array(n.pingData.readableBytesView) == Array("nopping\0".utf8))
        #expect(n.statSN == 100)
    }

    @Test func targetPingsAfterSilenceAndClosesWhenUnanswered() {
        var s = makeSession(FakePort(), nop: .seconds(10))
        #expect(s.nextDeadline == t0 + .seconds(10))
        #expect(s.tick(now: t0 + .seconds(9)).isEmpty)
        guard case .nopIn(let ping) = sent(s.tick(now: t0 + .seconds(10))).first else { Issue.record("expected ping"); return }
        #expect(ping.initiatorTaskTag == 0xFFFF_FFFF && ping.targetTransferTag != 0xFFFF_FFFF)
        let actions = s.tick(now: t0 + .seconds(16))
        guard case .close(let reason) = actions.first else { Issue.record("expected close"); return }
        #expect(reason == .pingTimeout)
    }

    @Test func answeredPingKeepsTheConnection() {
        var s = makeSession(FakePort(), nop: .seconds(10))
        guard case .nopIn(let ping) = sent(s.tick(now: t0 + .seconds(10))).first else { Issue.record("expected ping"); return }
        let reply = NOPOut(isImmediate: true, lun: 0, initiatorTaskTag: 0xFFFF_FFFF, targetTransferTag: ping.targetTransferTag,
                           cmdSN: 10, expStatSN: 100, pingData: ByteBuffer())
        #expect(s.receive(.nopOut(reply), header: anyHeader, now: t0 + .seconds(11)).isEmpty)
        #expect(s.tick(now: t0 + .seconds(16)).isEmpty)
        #expect(s.nextDeadline == t0 + .seconds(21))
    }

    @Test func abortTaskSuppressesTheResponse() {
        var s = makeSession(FakePort())
        _ = s.receive(command(itt: 1, cmdSN: 10, read: true, edtl: 512), header: anyHeader, now: t0)
        let abort = TaskManagementRequest(isImmediate: true, function: 1, lun: 0, initiatorTaskTag: 2, referencedTaskTag: 1,
                                          cmdSN: 11, expStatSN: 100, refCmdSN: 10, expDataSN: 0)
        #expect(sent(s.receive(.taskManagement(abort), header: anyHeader, now: t0)).isEmpty)  // waits for the task
        let after = sent(s.completed(initiatorTaskTag: 1, result: CommandResult(status: 0)))
        #expect(after.count == 1)
        guard case .taskManagementResponse(let r) = after.first else { Issue.record("expected TMF response"); return }
        #expect(r.response == 0 && r.initiatorTaskTag == 2)
    }

    @Test func abortOfUnknownTaskSaysSo() {
        var s = makeSession(FakePort())
        let abort = TaskManagementRequest(isImmediate: true, function: 1, lun: 0, initiatorTaskTag: 2, referencedTaskTag: 99,
                                          cmdSN: 10, expStatSN: 100, refCmdSN: 9, expDataSN: 0)
        guard case .taskManagementResponse(let r) = sent(s.receive(.taskManagement(abort), header: anyHeader, now: t0)).first
        else { Issue.record("expected TMF response"); return }
        #expect(r.response == 1)
    }

    @Test func logoutWaitsForOutstandingCommands() {
        var s = makeSession(FakePort())
        _ = s.receive(command(itt: 1, cmdSN: 10), header: anyHeader, now: t0)
        let logout = LogoutRequest(isImmediate: false, reason: 0, initiatorTaskTag: 5, cid: 0, cmdSN: 11, expStatSN: 100)
        #expect(sent(s.receive(.logout(logout), header: anyHeader, now: t0)).isEmpty)
        let actions = s.completed(initiatorTaskTag: 1, result: CommandResult(status: 0))
        let pdus = sent(actions)
        #expect(pdus.count == 2)
        guard case .logoutResponse(let r) = pdus.last else { Issue.record("expected logout response"); return }
        #expect(r.response == 0 && r.initiatorTaskTag == 5)
        #expect(actions.contains { if case .close(.logout) = $0 { return true } else { return false } })
    }

    @Test func sendTargetsAllInANormalSession() {
        var c = SessionConfiguration(sessionType: .normal, parameters: OperationalParameters(), targetName: "iqn.2026-11.org.test:t1")
        c.discoveryRecords = [SendTargetsRecord(name: "iqn.2026-11.org.test:t1", addresses: ["10.0.2.2:3260,1"])]
        c.nopInInterval = nil
        var s = SessionStateMachine(configuration: c, port: FakePort(), expCmdSN: 1, statSN: 1, now: t0)
        let request = TextRequest(isImmediate: false, isFinal: true, continue: false, lun: 0, initiatorTaskTag: 1,
                                  targetTransferTag: 0xFFFF_FFFF, cmdSN: 1, expStatSN: 1, text: text([("SendTargets", "All")]))
        guard case .textResponse(let r) = sent(s.receive(.text(request), header: anyHeader, now: t0)).first else {
            Issue.record("expected text response"); return
        }
        #expect(r.isFinal && !r.continue && r.targetTransferTag == 0xFFFF_FFFF)
        #expect(Array(r.text.readableBytesView) == Array("TargetName=iqn.2026-11.org.test:t1\0TargetAddress=10.0.2.2:3260,1\0".utf8))
    }

    @Test func misspelledTextKeysAreNotUnderstood() {
        var s = makeSession(FakePort())
        let request = TextRequest(isImmediate: false, isFinal: true, continue: false, lun: 0, initiatorTaskTag: 1,
                                  targetTransferTag: 0xFFFF_FFFF, cmdSN: 10, expStatSN: 1,
                                  text: text([("SendTargetsPlease", "All"), ("SendTargets", "Alle")]))
        guard case .textResponse(let r) = sent(s.receive(.text(request), header: anyHeader, now: t0)).first else {
            Issue.record("expected text response"); return
        }
        #expect(keys(r.text) == ["SendTargetsPlease": "NotUnderstood", "SendTargets": "Reject"])
    }

    @Test func unknownOpcodeIsRejected() {
        var s = makeSession(FakePort())
        let header = BasicHeaderSegment(opcode: 0x1C)
        guard case .reject(let r) = sent(s.receiveMalformed(header, error: .unknownOpcode(0x1C), now: t0)).first else {
            Issue.record("expected Reject"); return
        }
        #expect(r.reason == .commandNotSupported && r.rejectedHeader == header.array)
    }
}
