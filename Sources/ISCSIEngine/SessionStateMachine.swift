//
// The full feature phase of a session (RFC 7143 §4, §11), target side. One connection
// per session (MaxConnections=1) and ErrorRecoveryLevel 0, as the Linux initiator runs.
//
// Responsibilities:
//   - command numbering: ExpCmdSN/MaxCmdSN window (RFC 7143 §4.2.2.1); commands outside
//     the window are dropped silently, commands ahead of ExpCmdSN wait for the gap;
//     StatSN on every status-bearing PDU;
//   - data flow: immediate data, unsolicited Data-Out within FirstBurstLength, R2T with
//     MaxOutstandingR2T and MaxBurstLength, Data-In with DataSN, bursts and
//     phase-collapsed status, residuals;
//   - NOP-Out/NOP-In both ways, task management, Text (SendTargets), Logout.
//
// Per task:   queued ──(in CmdSN order)──▶ admitted ──▶ collecting ──▶ executing ──▶ done
//                                            │                ▲             │
//                                            └────────────────┘             └─▶ aborted (no response)
//
// Policy on peer violations (ERL 0):
//   - a PDU that is malformed but framed: Reject with the RFC reason, connection stays;
//   - a Data-Out that breaks the sequence (DataSN, offset, burst): the task ends with
//     CHECK CONDITION, ABORTED COMMAND and the iSCSI sense of RFC 7143 §11.4.7.2;
//   - a PDU that cannot be framed (bad header digest, over-long segment): close.
//
// The machine holds no channel and reads no clock: `now` is passed in, and the SCSI
// device is reached through the `CommandPort` protocol, whose calls never block.
//
import ISCSIWire
import NIOCore

/// What the SCSI side returns for a finished command, in transport terms.
public struct CommandResult: Sendable {
    public var status: UInt8
    public var sense: [UInt8]
    public var dataIn: ByteBuffer?
    /// The device's transfer length for the command (SPDTL), for residuals.
    public var transferLength: Int

    public init(status: UInt8, sense: [UInt8] = [], dataIn: ByteBuffer? = nil, transferLength: Int = 0) {
        self.status = status
        self.sense = sense
        self.dataIn = dataIn
        self.transferLength = transferLength
    }
}

/// The device's first word on a command.
public enum CommandDisposition: Sendable {
    /// Done already (an error, or no work needed).
    case complete(CommandResult)
    /// Collect `dataOutLength` bytes (the EDTL for writes, 0 otherwise), then execute.
    case accept(token: any Sendable, dataOutLength: Int)
}

/// How the session reaches the SCSI device. Implementations never block.
public protocol CommandPort: Sendable {
    func admit(_ command: SCSICommandRequest) -> CommandDisposition
    func taskManagement(_ function: TaskManagementFunctionCode, lun: UInt64) -> TaskManagementResponseCode
}

/// A discovery record: a target name and its portals as `address:port,tpgt`.
public struct SendTargetsRecord: Sendable, Equatable {
    public var name: String
    public var addresses: [String]
    public init(name: String, addresses: [String]) {
        self.name = name
        self.addresses = addresses
    }
}

public struct SessionConfiguration: Sendable {
    public var sessionType: SessionType
    public var parameters: OperationalParameters
    public var targetName: String?
    /// Command window (queue depth) offered through MaxCmdSN.
    public var commandWindow: Int = 128
    /// Send a NOP-In ping after this much silence; nil disables target pings.
    public var nopInInterval: TimeAmount? = .seconds(10)
    /// Close the connection when a ping is not answered within this time.
    public var nopInTimeout: TimeAmount = .seconds(15)
    /// What SendTargets may return to this initiator.
    public var discoveryRecords: [SendTargetsRecord] = []
    /// Test-only fault: omit the last Data-In PDU of reads longer than 64 KiB (status is
    /// still sent), so that an end-to-end suite can prove it notices data loss.
    public var faultDropLastDataIn = false

    public init(sessionType: SessionType, parameters: OperationalParameters, targetName: String?) {
        self.sessionType = sessionType
        self.parameters = parameters
        self.targetName = targetName
    }
}

public enum SessionAction: Sendable {
    /// Send a PDU (sequence numbers filled).
    case send(TargetPDU)
    /// Run the command with its collected Data-Out; report back with `completed(itt:result:)`.
    case execute(initiatorTaskTag: UInt32, token: any Sendable, dataOut: ByteBuffer?)
    /// Close the connection after sending what precedes.
    case close(reason: CloseReason)
    /// The session ends by logout: release what the session holds now; the Logout
    /// Response follows, then `close`.
    case loggedOut
}

public enum CloseReason: Sendable, Equatable {
    case logout
    case protocolError(String)
    case pingTimeout
    case targetColdReset
}

/// Sense data that RFC 7143 §11.4.7.2 prescribes for iSCSI-level failures of a command.
enum TransportSense {
    /// Fixed-format sense: ABORTED COMMAND with the given ASC/ASCQ.
    static func abortedCommand(asc: UInt8, ascq: UInt8) -> [UInt8] {
        var s = [UInt8](repeating: 0, count: 18)
        s[0] = 0x70
        s[2] = 0x0B
        s[7] = 10
        s[12] = asc
        s[13] = ascq
        return s
    }
    /// PROTOCOL SERVICE CRC ERROR (47/05): a data digest failed.
    static let crcError = abortedCommand(asc: 0x47, ascq: 0x05)
    /// DATA OFFSET ERROR (4B/05): a Data-Out at the wrong offset.
    static let dataOffsetError = abortedCommand(asc: 0x4B, ascq: 0x05)
    /// INVALID TARGET PORT TRANSFER TAG RECEIVED (4B/01).
    static let invalidTransferTag = abortedCommand(asc: 0x4B, ascq: 0x01)
    /// TOO MUCH WRITE DATA (4B/02).
    static let tooMuchWriteData = abortedCommand(asc: 0x4B, ascq: 0x02)
    /// UNEXPECTED UNSOLICITED DATA (0C/0C).
    static let unexpectedUnsolicitedData = abortedCommand(asc: 0x0C, ascq: 0x0C)
    /// DATA PHASE ERROR (4B/00): a Data-Out out of sequence (DataSN).
    static let dataPhaseError = abortedCommand(asc: 0x4B, ascq: 0x00)
}

public struct SessionStateMachine: Sendable {
    // MARK: State

    private struct R2TState: Sendable {
        var offset: Int
        var length: Int
        var nextOffset: Int
        var nextDataSN: UInt32
    }

    /// Write data being gathered for one task.
    private struct DataCollector: Sendable {
        var expected: Int
        var buffer: ByteBuffer
        var received = 0
        /// Unsolicited region [0, unsolicitedEnd): immediate data plus unsolicited Data-Out.
        var unsolicitedEnd: Int
        var unsolicitedNextOffset: Int
        var unsolicitedNextDataSN: UInt32 = 0
        var unsolicitedOpen: Bool
        /// Where the next R2T starts.
        var solicitedNextOffset: Int
        var r2ts: [UInt32: R2TState] = [:]
        var r2tSN: UInt32 = 0

        var isComplete: Bool { received >= expected }

        /// The gathered data, `expected` bytes readable (the buffer grows as data arrives).
        var completedBuffer: ByteBuffer {
            var b = buffer
            if b.readableBytes < expected { b.moveWriterIndex(to: b.readerIndex + expected) }
            return b
        }
    }

    /// Up to this EDTL a write's buffer is allocated whole when the command arrives; above it,
    /// it grows with the data actually received, so a hostile EDTL (up to 4 GiB) costs nothing.
    static let eagerWriteBufferLimit = 16 << 20
    /// Text Request data gathered across C=1 PDUs is refused beyond this (RFC 7143 §11.10.2
    /// leaves the limit to the target).
    static let maximumTextRequestLength = 65_536

    private enum TaskPhase: Sendable {
        /// Arrived ahead of ExpCmdSN; data may already be gathering.
        case queued(DataCollector?)
        /// Arrived ahead of ExpCmdSN without room for its unsolicited data: its data is
        /// dropped, and it is answered BUSY or TASK SET FULL when its turn comes.
        case queuedWithoutResources
        case collecting(token: any Sendable, DataCollector)
        case executing(r2tCount: UInt32)
        /// Aborted while executing: the result will be dropped.
        case aborted
    }

    private struct Task: Sendable {
        var request: SCSICommandRequest
        var phase: TaskPhase
    }

    private enum Phase: Sendable {
        case active
        /// Logout received: respond once every task has finished.
        case loggingOut(LogoutRequest)
        case closed
    }

    private struct PendingTaskManagement: Sendable {
        var request: TaskManagementRequest
        var response: TaskManagementResponseCode
        var waitingFor: Set<UInt32>
        var closeAfter: Bool
    }

    private struct PendingText: Sendable {
        var initiatorTaskTag: UInt32
        var targetTransferTag: UInt32
        var remaining: ByteBuffer
    }

    public let configuration: SessionConfiguration
    private let port: any CommandPort
    private var phase: Phase = .active
    private var tasks: [UInt32: Task] = [:]
    /// Commands that arrived ahead of ExpCmdSN, by CmdSN.
    private var queuedByCmdSN: [UInt32: InitiatorPDU] = [:]
    private var expCmdSN: UInt32
    private var advertisedMaxCmdSN: UInt32
    private var statSN: UInt32
    private var nextTransferTag: UInt32 = 1
    private var pendingTaskManagement: [PendingTaskManagement] = []
    private var pendingText: PendingText?
    private var textRequestBuffer: [UInt8] = []
    /// Tasks that ended in a data error, whose late Data-Out is dropped quietly.
    private var retiredTags: [UInt32] = []
    private var lastReceive: NIODeadline
    private var outstandingPing: (tag: UInt32, deadline: NIODeadline)?
    /// Unsolicited (immediate and unsolicited Data-Out) bytes each live write may make us
    /// hold, by task tag, and their sum; the runtime accounts the sum against the server's
    /// budget (`unsolicitedReservation(for:)`, `receive(...unsolicitedDataAdmitted:)`).
    private var unsolicitedHeld: [UInt32: Int] = [:]
    public private(set) var heldUnsolicitedBytes = 0

    public init(configuration: SessionConfiguration, port: any CommandPort, expCmdSN: UInt32, statSN: UInt32,
                now: NIODeadline) {
        self.configuration = configuration
        self.port = port
        self.expCmdSN = expCmdSN
        self.statSN = statSN
        self.advertisedMaxCmdSN = expCmdSN &+ UInt32(max(configuration.commandWindow, 1)) &- 1
        self.lastReceive = now
    }

    public var parameters: OperationalParameters { configuration.parameters }

    /// The unsolicited data a SCSI command may make this session hold until it completes:
    /// its immediate data, and with InitialR2T=No up to FirstBurstLength of its write
    /// (RFC 7143 §4.2.5.2). 0 for commands without Data-Out.
    public func unsolicitedReservation(for c: SCSICommandRequest) -> Int {
        guard c.isWrite, c.expectedDataTransferLength > 0 else { return 0 }
        let immediate = c.immediateData.readableBytes
        if parameters.initialR2T { return immediate }
        return max(immediate, min(parameters.firstBurstLength, Int(c.expectedDataTransferLength)))
    }

    /// The Data-In a live task may still produce: its EDTL when it is a read, else 0.
    public func expectedDataInLength(initiatorTaskTag itt: UInt32) -> Int {
        guard let request = tasks[itt]?.request, request.isRead else { return 0 }
        return Int(request.expectedDataTransferLength)
    }

    private mutating func holdUnsolicited(_ c: SCSICommandRequest) {
        let bytes = unsolicitedReservation(for: c)
        guard bytes > 0, unsolicitedHeld[c.initiatorTaskTag] == nil else { return }
        unsolicitedHeld[c.initiatorTaskTag] = bytes
        heldUnsolicitedBytes += bytes
    }

    private mutating func releaseUnsolicited(_ itt: UInt32) {
        guard heldUnsolicitedBytes > 0, let bytes = unsolicitedHeld.removeValue(forKey: itt) else { return }
        heldUnsolicitedBytes -= bytes
    }
    public var activeTaskCount: Int { tasks.count }
    public var isClosed: Bool { if case .closed = phase { return true } else { return false } }

    /// MaxCmdSN as it would be advertised now (also used for the final Login Response).
    public var maxCmdSN: UInt32 { advertisedMaxCmdSN }
    public var currentExpCmdSN: UInt32 { expCmdSN }

    // MARK: Sequence numbers

    private mutating func refreshWindow() {
        let window = max(configuration.commandWindow, 1)
        let free = max(window - tasks.count - queuedByCmdSN.count, 1)
        let candidate = expCmdSN &+ UInt32(free) &- 1
        if SerialNumber.lessThan(advertisedMaxCmdSN, candidate) { advertisedMaxCmdSN = candidate }
    }

    /// Fill sequence numbers; status-bearing PDUs consume a StatSN (RFC 7143 §4.2.2.2). A
    /// NOP-In ping of ours, an R2T and a Data-In without status carry the current StatSN
    /// without consuming it.
    private mutating func stamp(_ pdu: TargetPDU) -> TargetPDU {
        refreshWindow()
        switch pdu {
        case .nopIn(let p): return .nopIn(numbered(p, consumesStatSN: p.initiatorTaskTag != WireConstants.reservedTag))
        case .scsiResponse(let p): return .scsiResponse(numbered(p))
        case .taskManagementResponse(let p): return .taskManagementResponse(numbered(p))
        case .loginResponse: return pdu
        case .textResponse(let p): return .textResponse(numbered(p))
        case .dataIn(let p): return .dataIn(numbered(p, consumesStatSN: p.status != nil))
        case .logoutResponse(let p): return .logoutResponse(numbered(p))
        case .readyToTransfer(let p): return .readyToTransfer(numbered(p, consumesStatSN: false))
        case .asynchronousMessage(let p): return .asynchronousMessage(numbered(p))
        case .reject(let p): return .reject(numbered(p))
        }
    }

    private mutating func numbered<P: SequenceNumbered>(_ pdu: P, consumesStatSN: Bool = true) -> P {
        var p = pdu
        p.expCmdSN = expCmdSN
        p.maxCmdSN = advertisedMaxCmdSN
        p.statSN = statSN
        if consumesStatSN { statSN &+= 1 }
        return p
    }

    private mutating func send(_ pdu: TargetPDU, into actions: inout [SessionAction]) {
        actions.append(.send(stamp(pdu)))
    }

    private mutating func reject(_ header: BasicHeaderSegment, _ reason: RejectReason, into actions: inout [SessionAction]) {
        send(.reject(Reject(reason: reason, rejectedHeader: header.array)), into: &actions)
    }

    private mutating func takeTransferTag() -> UInt32 {
        let tag = nextTransferTag
        nextTransferTag &+= 1
        if nextTransferTag == WireConstants.reservedTag { nextTransferTag = 1 }
        return tag
    }

    // MARK: Input

    /// A PDU could not be decoded (format error) though it was framed.
    public mutating func receiveMalformed(_ header: BasicHeaderSegment, error: PDUFormatError, now: NIODeadline) -> [SessionAction] {
        lastReceive = now
        var actions: [SessionAction] = []
        switch error {
        case .unknownOpcode: reject(header, .commandNotSupported, into: &actions)
        case .malformedAdditionalHeader, .unexpectedData: reject(header, .invalidPDUField, into: &actions)
        }
        return actions
    }

    /// A framing error. Data digest errors keep the connection; the rest close it.
    public mutating func receiveFramingError(_ error: FramingError) -> [SessionAction] {
        var actions: [SessionAction] = []
        switch error {
        case .dataDigestMismatch(let header):
            reject(header, .dataDigestError, into: &actions)
            // RFC 7143 §7.8: at ERL 0 a lost Data-Out ends its command.
            if header.opcodeByte == InitiatorOpcode.dataOut.rawValue {
                let itt = header.initiatorTaskTag
                if tasks[itt] != nil {
                    failTask(itt, sense: TransportSense.crcError, into: &actions)
                }
            }
            // Any other PDU is discarded after the Reject (RFC 7143 §6.7): a command whose
            // immediate data failed its digest never reached the CmdSN window, and the
            // initiator retries it with the same CmdSN.
        case .headerDigestMismatch:
            phase = .closed
            actions.append(.close(reason: .protocolError("header digest error")))
        case .dataSegmentTooLong(let header, let length):
            reject(header, .protocolError, into: &actions)
            phase = .closed
            actions.append(.close(reason: .protocolError("data segment of \(length) bytes exceeds MaxRecvDataSegmentLength")))
        }
        return actions
    }

    /// `unsolicitedDataAdmitted: false` (a SCSI command only): the runtime has no room for
    /// the command's unsolicited data; it is answered BUSY or TASK SET FULL in its CmdSN turn
    /// and its data is dropped (`Docs/security.md`).
    public mutating func receive(_ pdu: InitiatorPDU, header: BasicHeaderSegment, now: NIODeadline,
                                 unsolicitedDataAdmitted: Bool = true) -> [SessionAction] {
        var actions: [SessionAction] = []
        receive(pdu, header: header, now: now, unsolicitedDataAdmitted: unsolicitedDataAdmitted, into: &actions)
        return actions
    }

    /// `receive(_:header:now:unsolicitedDataAdmitted:)` appending to the caller's array (which
    /// a connection reuses, so a command costs no array allocation).
    public mutating func receive(_ pdu: InitiatorPDU, header: BasicHeaderSegment, now: NIODeadline,
                                 unsolicitedDataAdmitted: Bool = true, into actions: inout [SessionAction]) {
        lastReceive = now
        if case .closed = phase { return }
        switch pdu {
        case .dataOut(let d):
            receiveDataOut(d, header: header, into: &actions)
        case .snack:
            reject(header, .commandNotSupported, into: &actions)
        case .login:
            reject(header, .protocolError, into: &actions)
        case .nopOut(let n):
            if n.initiatorTaskTag == WireConstants.reservedTag {
                // An answer to our ping (or a ping wanting no answer): never numbered.
                if let ping = outstandingPing, ping.tag == n.targetTransferTag { outstandingPing = nil }
                return
            }
            sequence(pdu, cmdSN: n.cmdSN, immediate: n.isImmediate, header: header, into: &actions)
        case .scsiCommand(let c):
            if configuration.sessionType == .discovery {
                reject(header, .protocolError, into: &actions)
                return
            }
            if tasks[c.initiatorTaskTag] != nil {
                reject(header, .taskInProgress, into: &actions)
                return
            }
            if case .loggingOut = phase {
                reject(header, .waitingForLogout, into: &actions)
                return
            }
            // Immediate data rules (RFC 7143 §4.2.5.2).
            let immediate = c.immediateData.readableBytes
            if immediate > 0 && (!parameters.immediateData || !c.isWrite || immediate > parameters.firstBurstLength
                || immediate > Int(c.expectedDataTransferLength))
            {
                reject(header, .protocolError, into: &actions)
                return
            }
            sequence(pdu, cmdSN: c.cmdSN, immediate: c.isImmediate, header: header, admitted: unsolicitedDataAdmitted,
                     into: &actions)
        case .taskManagement(let t):
            if configuration.sessionType == .discovery {
                reject(header, .protocolError, into: &actions)
                return
            }
            sequence(pdu, cmdSN: t.cmdSN, immediate: t.isImmediate, header: header, into: &actions)
        case .text(let t):
            sequence(pdu, cmdSN: t.cmdSN, immediate: t.isImmediate, header: header, into: &actions)
        case .logout(let l):
            sequence(pdu, cmdSN: l.cmdSN, immediate: l.isImmediate, header: header, into: &actions)
        }
    }

    /// CmdSN ordering: immediate PDUs run now; others run in CmdSN order inside the window.
    private mutating func sequence(_ pdu: InitiatorPDU, cmdSN: UInt32, immediate: Bool, header: BasicHeaderSegment,
                                   admitted: Bool = true, into actions: inout [SessionAction])
    {
        if immediate {
            deliver(pdu, header: header, admitted: admitted, into: &actions)
            return
        }
        if cmdSN == expCmdSN {
            expCmdSN &+= 1
            deliver(pdu, header: header, admitted: admitted, into: &actions)
            while let next = queuedByCmdSN.removeValue(forKey: expCmdSN) {
                expCmdSN &+= 1
                deliver(next, header: nil, into: &actions)
            }
            return
        }
        guard SerialNumber.lessThan(expCmdSN, cmdSN), SerialNumber.lessThanOrEqual(cmdSN, advertisedMaxCmdSN),
              queuedByCmdSN[cmdSN] == nil
        else {
            // RFC 7143 §4.2.2.1: outside the window, silently ignored.
            return
        }
        queuedByCmdSN[cmdSN] = pdu
        if case .scsiCommand(let c) = pdu {
            if admitted {
                // Start gathering its unsolicited data already.
                tasks[c.initiatorTaskTag] = Task(request: c, phase: .queued(makeCollector(c)))
                holdUnsolicited(c)
            } else {
                tasks[c.initiatorTaskTag] = Task(request: c, phase: .queuedWithoutResources)
            }
        }
    }

    private func makeCollector(_ c: SCSICommandRequest) -> DataCollector? {
        guard c.isWrite, c.expectedDataTransferLength > 0 else { return nil }
        let expected = Int(c.expectedDataTransferLength)
        let immediate = c.immediateData.readableBytes
        let unsolicitedEnd = parameters.initialR2T ? immediate : min(parameters.firstBurstLength, expected)
        var buffer: ByteBuffer
        if immediate == expected {
            buffer = c.immediateData  // no copy: the whole write came in the command PDU
        } else {
            buffer = ByteBufferAllocator().buffer(capacity: min(expected, max(immediate, Self.eagerWriteBufferLimit)))
            buffer.writeImmediateData(c.immediateData)
        }
        return DataCollector(
            expected: expected, buffer: buffer, received: immediate, unsolicitedEnd: unsolicitedEnd,
            unsolicitedNextOffset: immediate, unsolicitedOpen: !parameters.initialR2T && immediate < unsolicitedEnd,
            solicitedNextOffset: unsolicitedEnd)
    }

    private mutating func deliver(_ pdu: InitiatorPDU, header: BasicHeaderSegment?, admitted: Bool = true,
                                  into actions: inout [SessionAction])
    {
        switch pdu {
        case .scsiCommand(let c): startCommand(c, admitted: admitted, into: &actions)
        case .nopOut(let n): answerPing(n, into: &actions)
        case .taskManagement(let t): manageTasks(t, into: &actions)
        case .text(let t): answerText(t, header: header, into: &actions)
        case .logout(let l): beginLogout(l, into: &actions)
        case .dataOut, .snack, .login: break  // never sequenced
        }
    }

    // MARK: SCSI commands

    private mutating func startCommand(_ c: SCSICommandRequest, admitted: Bool, into actions: inout [SessionAction]) {
        var collector: DataCollector?
        if let existing = tasks[c.initiatorTaskTag], case .queued(let gathered) = existing.phase {
            collector = gathered
        } else if !admitted || tasks[c.initiatorTaskTag].map({
            if case .queuedWithoutResources = $0.phase { return true } else { return false }
        }) == true {
            refuseForResources(c, into: &actions)
            return
        } else {
            collector = makeCollector(c)
            holdUnsolicited(c)
        }
        tasks[c.initiatorTaskTag] = Task(request: c, phase: .executing(r2tCount: 0))
        switch port.admit(c) {
        case .complete(let result):
            tasks[c.initiatorTaskTag] = nil
            releaseUnsolicited(c.initiatorTaskTag)
            if let collector, collector.unsolicitedOpen { retire(c.initiatorTaskTag) }
            respond(to: c, result: result, r2tCount: 0, into: &actions)
        case .accept(let token, let dataOutLength):
            guard dataOutLength > 0, var collector else {
                tasks[c.initiatorTaskTag] = Task(request: c, phase: .executing(r2tCount: 0))
                actions.append(.execute(initiatorTaskTag: c.initiatorTaskTag, token: token, dataOut: nil))
                return
            }
            if collector.isComplete {
                tasks[c.initiatorTaskTag] = Task(request: c, phase: .executing(r2tCount: 0))
                actions.append(.execute(initiatorTaskTag: c.initiatorTaskTag, token: token, dataOut: collector.completedBuffer))
                return
            }
            issueR2Ts(c, &collector, into: &actions)
            tasks[c.initiatorTaskTag] = Task(request: c, phase: .collecting(token: token, collector))
        }
    }

    /// No room for the command's unsolicited data (server budget): SAM's answers for a
    /// target short of resources, as SCST gives them -- TASK SET FULL while other commands of
    /// this session are in progress (their completion frees room), BUSY otherwise. The
    /// command consumed its CmdSN; Data-Out it already sent, or still sends, is dropped.
    private mutating func refuseForResources(_ c: SCSICommandRequest, into actions: inout [SessionAction]) {
        tasks[c.initiatorTaskTag] = nil
        retire(c.initiatorTaskTag)
        let status: UInt8 = tasks.isEmpty ? 0x08 : 0x28
        respond(to: c, result: CommandResult(status: status), r2tCount: 0, into: &actions)
    }

    /// Keep up to MaxOutstandingR2T R2Ts of at most MaxBurstLength in flight.
    private mutating func issueR2Ts(_ c: SCSICommandRequest, _ collector: inout DataCollector,
                                    into actions: inout [SessionAction])
    {
        while collector.r2ts.count < parameters.maxOutstandingR2T && collector.solicitedNextOffset < collector.expected {
            let offset = collector.solicitedNextOffset
            let length = min(parameters.maxBurstLength, collector.expected - offset)
            let tag = takeTransferTag()
            collector.r2ts[tag] = R2TState(offset: offset, length: length, nextOffset: offset, nextDataSN: 0)
            collector.solicitedNextOffset = offset + length
            let r2t = ReadyToTransfer(
                lun: c.lun, initiatorTaskTag: c.initiatorTaskTag, targetTransferTag: tag, r2tSN: collector.r2tSN,
                bufferOffset: UInt32(offset), desiredDataTransferLength: UInt32(length))
            collector.r2tSN &+= 1
            send(.readyToTransfer(r2t), into: &actions)
        }
    }

    private mutating func retire(_ itt: UInt32) {
        retiredTags.append(itt)
        if retiredTags.count > 64 { retiredTags.removeFirst(retiredTags.count - 64) }
    }

    private mutating func failTask(_ itt: UInt32, sense: [UInt8], into actions: inout [SessionAction]) {
        guard let task = tasks.removeValue(forKey: itt) else { return }
        releaseUnsolicited(itt)
        retire(itt)
        var r2tCount: UInt32 = 0
        if case .collecting(_, let collector) = task.phase { r2tCount = collector.r2tSN }
        respond(to: task.request, result: CommandResult(status: 0x02, sense: sense), r2tCount: r2tCount, into: &actions)
    }

    private mutating func receiveDataOut(_ d: DataOut, header: BasicHeaderSegment, into actions: inout [SessionAction]) {
        let itt = d.initiatorTaskTag
        guard var task = tasks[itt] else {
            if retiredTags.contains(itt) || d.targetTransferTag == WireConstants.reservedTag { return }
            reject(header, .invalidPDUField, into: &actions)
            return
        }
        let length = d.data.readableBytes
        let offset = Int(d.bufferOffset)
        switch task.phase {
        case .executing, .aborted, .queuedWithoutResources:
            return  // late data for a task already answered or aborted, or without room
        case .queued(let maybeCollector):
            guard var collector = maybeCollector, d.targetTransferTag == WireConstants.reservedTag else {
                failTask(itt, sense: TransportSense.unexpectedUnsolicitedData, into: &actions)
                return
            }
            if let sense = acceptUnsolicited(d, &collector) {
                failTask(itt, sense: sense, into: &actions)
                return
            }
            task.phase = .queued(collector)
            tasks[itt] = task
        case .collecting(let token, var collector):
            if d.targetTransferTag == WireConstants.reservedTag {
                if let sense = acceptUnsolicited(d, &collector) {
                    failTask(itt, sense: sense, into: &actions)
                    return
                }
            } else {
                guard var r2t = collector.r2ts[d.targetTransferTag] else {
                    failTask(itt, sense: TransportSense.invalidTransferTag, into: &actions)
                    return
                }
                guard d.dataSN == r2t.nextDataSN else {
                    failTask(itt, sense: TransportSense.dataPhaseError, into: &actions)
                    return
                }
                guard offset == r2t.nextOffset else {
                    failTask(itt, sense: TransportSense.dataOffsetError, into: &actions)
                    return
                }
                guard offset + length <= r2t.offset + r2t.length else {
                    failTask(itt, sense: TransportSense.tooMuchWriteData, into: &actions)
                    return
                }
                collector.buffer.setImmediateData(d.data, at: offset)
                collector.received += length
                r2t.nextOffset += length
                r2t.nextDataSN &+= 1
                if r2t.nextOffset == r2t.offset + r2t.length {
                    collector.r2ts[d.targetTransferTag] = nil
                    issueR2Ts(task.request, &collector, into: &actions)
                } else {
                    collector.r2ts[d.targetTransferTag] = r2t
                }
            }
            if collector.isComplete && collector.r2ts.isEmpty {
                tasks[itt] = Task(request: task.request, phase: .executing(r2tCount: collector.r2tSN))
                actions.append(.execute(initiatorTaskTag: itt, token: token, dataOut: collector.completedBuffer))
            } else {
                tasks[itt] = Task(request: task.request, phase: .collecting(token: token, collector))
            }
        }
    }

    /// Returns sense data when the unsolicited Data-Out breaks the rules.
    private func acceptUnsolicited(_ d: DataOut, _ collector: inout DataCollector) -> [UInt8]? {
        let length = d.data.readableBytes
        let offset = Int(d.bufferOffset)
        guard collector.unsolicitedOpen else { return TransportSense.unexpectedUnsolicitedData }
        guard d.dataSN == collector.unsolicitedNextDataSN else { return TransportSense.dataPhaseError }
        guard offset == collector.unsolicitedNextOffset else { return TransportSense.dataOffsetError }
        guard offset + length <= collector.unsolicitedEnd else { return TransportSense.tooMuchWriteData }
        collector.buffer.setImmediateData(d.data, at: offset)
        collector.received += length
        collector.unsolicitedNextOffset += length
        collector.unsolicitedNextDataSN &+= 1
        if d.isFinal { collector.unsolicitedOpen = false }
        return nil
    }

    /// The device finished a command.
    public mutating func completed(initiatorTaskTag itt: UInt32, result: CommandResult) -> [SessionAction] {
        var actions: [SessionAction] = []
        completed(initiatorTaskTag: itt, result: result, into: &actions)
        return actions
    }

    /// `completed(initiatorTaskTag:result:)` appending to the caller's array.
    public mutating func completed(initiatorTaskTag itt: UInt32, result: CommandResult,
                                   into actions: inout [SessionAction]) {
        guard let task = tasks.removeValue(forKey: itt) else { return }
        releaseUnsolicited(itt)
        switch task.phase {
        case .aborted:
            break
        case .executing(let r2tCount):
            respond(to: task.request, result: result, r2tCount: r2tCount, into: &actions)
        case .queued, .queuedWithoutResources, .collecting:
            // Completion before execution cannot happen; keep the task table honest.
            respond(to: task.request, result: result, r2tCount: 0, into: &actions)
        }
        settle(finished: itt, into: &actions)
    }

    /// Send Data-In (bursts of MaxBurstLength in PDUs of the initiator's MRDSL) and status.
    private mutating func respond(to c: SCSICommandRequest, result: CommandResult, r2tCount: UInt32,
                                  into actions: inout [SessionAction])
    {
        if case .closed = phase { return }
        let edtl = Int(c.expectedDataTransferLength)
        let spdtl = result.transferLength
        let residual: Residual =
            spdtl > edtl ? .overflow(UInt32(spdtl - edtl)) : (spdtl < edtl ? .underflow(UInt32(edtl - spdtl)) : .none)
        var data = result.dataIn ?? ByteBuffer()
        if data.readableBytes > edtl { data = data.getSlice(at: data.readerIndex, length: edtl)! }
        let total = data.readableBytes
        let collapse = result.status == 0 && result.sense.isEmpty && total > 0
        var dataSN: UInt32 = 0
        if total > 0 {
            let segment = max(parameters.maxXmitDataSegmentLength, 512)
            let burst = max(parameters.maxBurstLength, segment)
            let dropLast = configuration.faultDropLastDataIn && total > 65_536
            var offset = 0
            while offset < total {
                let burstEnd = min(offset - offset % burst + burst, total)
                let length = min(segment, burstEnd - offset)
                let slice = data.getSlice(at: data.readerIndex + offset, length: length)!
                let isLast = offset + length == total
                let endsBurst = offset + length == burstEnd
                var pdu = DataIn(
                    lun: c.lun, initiatorTaskTag: c.initiatorTaskTag, dataSN: dataSN, bufferOffset: UInt32(offset),
                    data: slice, isFinal: endsBurst)
                if isLast && collapse && !dropLast {
                    pdu.status = result.status
                    pdu.residual = residual
                }
                if !(isLast && dropLast) {
                    send(.dataIn(pdu), into: &actions)
                    dataSN &+= 1
                }
                offset += length
            }
            if collapse && !dropLast { return }
        }
        var response = SCSIResponsePDU(
            initiatorTaskTag: c.initiatorTaskTag, status: result.status, residual: residual,
            expDataSN: total > 0 ? dataSN : r2tCount, sense: result.sense)
        response.response = 0
        send(.scsiResponse(response), into: &actions)
    }

    // MARK: NOP

    private mutating func answerPing(_ n: NOPOut, into actions: inout [SessionAction]) {
        var data = n.pingData
        if data.readableBytes > parameters.maxXmitDataSegmentLength {
            data = data.getSlice(at: data.readerIndex, length: parameters.maxXmitDataSegmentLength)!
        }
        send(.nopIn(NOPIn(lun: n.lun, initiatorTaskTag: n.initiatorTaskTag, targetTransferTag: WireConstants.reservedTag,
                          pingData: data)), into: &actions)
    }

    /// The earliest time `tick(now:)` has work.
    public var nextDeadline: NIODeadline? {
        if case .closed = phase { return nil }
        if let ping = outstandingPing { return ping.deadline }
        guard let interval = configuration.nopInInterval else { return nil }
        return lastReceive + interval
    }

    public mutating func tick(now: NIODeadline) -> [SessionAction] {
        var actions: [SessionAction] = []
        if case .closed = phase { return actions }
        if let ping = outstandingPing {
            if now >= ping.deadline {
                phase = .closed
                actions.append(.close(reason: .pingTimeout))
            }
            return actions
        }
        guard let interval = configuration.nopInInterval, now >= lastReceive + interval else { return actions }
        let tag = takeTransferTag()
        outstandingPing = (tag, now + configuration.nopInTimeout)
        send(.nopIn(NOPIn(initiatorTaskTag: WireConstants.reservedTag, targetTransferTag: tag)), into: &actions)
        return actions
    }

    // MARK: Task management

    private mutating func manageTasks(_ t: TaskManagementRequest, into actions: inout [SessionAction]) {
        guard let function = TaskManagementFunctionCode(rawValue: t.function) else {
            send(.taskManagementResponse(TaskManagementResponse(initiatorTaskTag: t.initiatorTaskTag,
                                                               response: .functionRejected)), into: &actions)
            return
        }
        var affected: [UInt32] = []
        var response: TaskManagementResponseCode = .functionComplete
        var closeAfter = false
        switch function {
        case .abortTask:
            if tasks[t.referencedTaskTag] != nil {
                affected = [t.referencedTaskTag]
                // Tell the device too: a command that waits for a long operation (SANITIZE
                // with IMMED = 0) stops waiting, so the abort does not wait for the operation.
                if case .executing = tasks[t.referencedTaskTag]?.phase {
                    _ = port.taskManagement(function, lun: t.lun)
                }
            } else if queuedByCmdSN.values.contains(where: {
                if case .scsiCommand(let c) = $0 { return c.initiatorTaskTag == t.referencedTaskTag }
                return false
            }) {
                affected = [t.referencedTaskTag]
            } else {
                response = .taskDoesNotExist
            }
        case .abortTaskSet, .clearTaskSet:
            affected = tasks.filter { $0.value.request.lun == t.lun }.map(\.key)
            response = port.taskManagement(function, lun: t.lun)
        case .logicalUnitReset:
            affected = tasks.filter { $0.value.request.lun == t.lun }.map(\.key)
            response = port.taskManagement(function, lun: t.lun)
        case .targetWarmReset, .targetColdReset:
            affected = Array(tasks.keys)
            response = port.taskManagement(function, lun: t.lun)
            closeAfter = function == .targetColdReset
        case .clearACA:
            response = .functionNotSupported
        case .taskReassign:
            response = .reassignmentNotSupported
        }
        var waitingFor: Set<UInt32> = []
        if response == .functionComplete {
            for itt in affected {
                // Drop queued copies too: an aborted command never runs.
                for (sn, pdu) in queuedByCmdSN {
                    if case .scsiCommand(let c) = pdu, c.initiatorTaskTag == itt { queuedByCmdSN[sn] = nil }
                }
                guard let task = tasks[itt] else { continue }
                switch task.phase {
                case .executing:
                    tasks[itt] = Task(request: task.request, phase: .aborted)
                    waitingFor.insert(itt)
                case .aborted:
                    waitingFor.insert(itt)
                case .queued, .queuedWithoutResources, .collecting:
                    tasks[itt] = nil
                    releaseUnsolicited(itt)
                    retire(itt)
                }
            }
        }
        pendingTaskManagement.append(PendingTaskManagement(request: t, response: response, waitingFor: waitingFor,
                                                           closeAfter: closeAfter))
        settle(finished: nil, into: &actions)
    }

    /// Send task management and logout responses whose tasks have all finished.
    private mutating func settle(finished: UInt32?, into actions: inout [SessionAction]) {
        if let finished {
            for i in pendingTaskManagement.indices { pendingTaskManagement[i].waitingFor.remove(finished) }
        }
        while let first = pendingTaskManagement.first, first.waitingFor.isEmpty {
            pendingTaskManagement.removeFirst()
            send(.taskManagementResponse(TaskManagementResponse(initiatorTaskTag: first.request.initiatorTaskTag,
                                                               response: first.response)), into: &actions)
            if first.closeAfter {
                phase = .closed
                actions.append(.close(reason: .targetColdReset))
                return
            }
        }
        if case .loggingOut(let request) = phase, tasks.isEmpty, pendingTaskManagement.isEmpty {
            var response = LogoutResponse(initiatorTaskTag: request.initiatorTaskTag, response: 0)
            response.time2Wait = 0
            response.time2Retain = 0
            // The session ends before its Logout Response is sent (e.g. RESERVE(6) is released
            // by then: SPC-4 §5.13.5 and libiscsi Reserve6.Logout).
            actions.append(.loggedOut)
            send(.logoutResponse(response), into: &actions)
            phase = .closed
            actions.append(.close(reason: .logout))
        }
    }

    // MARK: Logout

    private mutating func beginLogout(_ l: LogoutRequest, into actions: inout [SessionAction]) {
        switch l.reason {
        case 0, 1:
            // One connection per session: closing the connection closes the session.
            phase = .loggingOut(l)
            settle(finished: nil, into: &actions)
        default:
            // ERL 0: connection recovery is not supported (RFC 7143 §11.15.1, response 2).
            send(.logoutResponse(LogoutResponse(initiatorTaskTag: l.initiatorTaskTag, response: 2)), into: &actions)
        }
    }

    // MARK: Text

    private mutating func answerText(_ t: TextRequest, header: BasicHeaderSegment?, into actions: inout [SessionAction]) {
        // Continuation of a long answer (RFC 7143 §11.10.4): an empty request echoing our TTT.
        if t.targetTransferTag != WireConstants.reservedTag {
            guard let pending = pendingText, pending.targetTransferTag == t.targetTransferTag,
                  pending.initiatorTaskTag == t.initiatorTaskTag
            else {
                if let header { reject(header, .invalidPDUField, into: &actions) }
                return
            }
            pendingText = nil
            sendText(pending.remaining, itt: t.initiatorTaskTag, lun: t.lun, into: &actions)
            return
        }
        pendingText = nil
        textRequestBuffer.append(contentsOf: t.text.readableBytesView)
        guard textRequestBuffer.count <= Self.maximumTextRequestLength else {
            textRequestBuffer = []
            if let header { reject(header, .protocolError, into: &actions) }
            return
        }
        if t.continue {
            // More request text follows: acknowledge with an empty response.
            let tag = takeTransferTag()
            send(.textResponse(TextResponse(isFinal: false, continue: false, lun: t.lun,
                                            initiatorTaskTag: t.initiatorTaskTag, targetTransferTag: tag,
                                            text: ByteBuffer())), into: &actions)
            return
        }
        let bytes = textRequestBuffer
        textRequestBuffer = []
        var answers: [TextKeyValue] = []
        do {
            for pair in try TextKeys.parse(bytes) {
                if pair.key == "SendTargets" {
                    answers += sendTargets(pair.value)
                } else {
                    answers.append(TextKeyValue(pair.key, "NotUnderstood"))
                }
            }
        } catch {
            if let header { reject(header, .protocolError, into: &actions) }
            return
        }
        sendText(TextKeys.encode(answers), itt: t.initiatorTaskTag, lun: t.lun, into: &actions)
    }

    private func sendTargets(_ value: String) -> [TextKeyValue] {
        let records: [SendTargetsRecord]
        switch value {
        case "All":
            records = configuration.discoveryRecords
        case "":
            guard configuration.sessionType == .normal else { return [TextKeyValue("SendTargets", "Reject")] }
            records = configuration.discoveryRecords.filter { $0.name == configuration.targetName }
        default:
            let isName = value.hasPrefix("iqn.") || value.hasPrefix("eui.") || value.hasPrefix("naa.")
            guard isName else { return [TextKeyValue("SendTargets", "Reject")] }
            records = configuration.discoveryRecords.filter { $0.name == value }
        }
        var out: [TextKeyValue] = []
        for r in records {
            out.append(TextKeyValue("TargetName", r.name))
            for a in r.addresses { out.append(TextKeyValue("TargetAddress", a)) }
        }
        return out
    }

    /// Send text, splitting across responses with C=1 when it exceeds the initiator's MRDSL.
    private mutating func sendText(_ text: ByteBuffer, itt: UInt32, lun: UInt64, into actions: inout [SessionAction]) {
        let limit = parameters.maxXmitDataSegmentLength
        if text.readableBytes <= limit {
            send(.textResponse(TextResponse(isFinal: true, continue: false, lun: lun, initiatorTaskTag: itt,
                                            targetTransferTag: WireConstants.reservedTag, text: text)), into: &actions)
            return
        }
        var rest = text
        let head = rest.readSlice(length: limit)!
        let tag = takeTransferTag()
        pendingText = PendingText(initiatorTaskTag: itt, targetTransferTag: tag, remaining: rest)
        send(.textResponse(TextResponse(isFinal: false, continue: true, lun: lun, initiatorTaskTag: itt,
                                        targetTransferTag: tag, text: head)), into: &actions)
    }

    /// The connection went away: every task is dropped.
    public mutating func connectionLost() {
        phase = .closed
        unsolicitedHeld = [:]
        heldUnsolicitedBytes = 0
        for itt in tasks.keys {
            if case .executing = tasks[itt]!.phase { tasks[itt]!.phase = .aborted }
        }
    }
}

extension ByteBuffer {
    /// Write another buffer's readable bytes without consuming the source.
    mutating func writeImmediateData(_ data: ByteBuffer) {
        var d = data
        writeBuffer(&d)
    }

    mutating func setImmediateData(_ data: ByteBuffer, at offset: Int) {
        setBuffer(data, at: readerIndex + offset)
    }
}
