//
// One TCP connection: frames PDUs, feeds them to the login and session state machines,
// and carries out the actions they return (write PDUs, run commands, arm the one timer,
// close). All of its state lives on the channel's event loop.
//
// Backpressure: while the peer leaves more than the channel's high water mark of our
// responses unread (the channel is not writable), or READ data on its way from the thread
// pool passes `poolDataInHighWater`, the handler neither asks the socket for more bytes nor
// cuts further PDUs from what it has already received; it resumes when both have drained.
//
import Foundation
import ISCSIEngine
import ISCSIWire
import Logging
import NIOCore
import SCSI

final class ConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Responses the peer has not taken yet: reading stops above `high`, resumes below `low`.
    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 512 << 10, high: 2 << 20)
    /// READ data being fetched on the thread pool for one connection: reading stops above it.
    static let poolDataInHighWater = 16 << 20

    private enum State {
        case login(LoginStateMachine)
        case fullFeature(Session)
        case closed
    }

    /// A logged-in session: its state machine and what it is connected to. A class, so that
    /// reaching it costs one retain: the machine is changed in place through it, where
    /// binding a struct out of an enum payload or an optional copied (retained) every one of
    /// the machine's tables several times per command.
    private final class Session {
        let tsih: UInt16
        var machine: SessionStateMachine
        let device: SCSITargetDevice?
        var nexus: ITNexus?
        /// The target's command counters (normal sessions).
        let metrics: TargetMetrics?

        init(tsih: UInt16, machine: SessionStateMachine, device: SCSITargetDevice?, nexus: ITNexus?, metrics: TargetMetrics?) {
            self.tsih = tsih
            self.machine = machine
            self.device = device
            self.nexus = nexus
            self.metrics = metrics
        }
    }

    private let context: TargetContext
    private var state: State
    /// The session in full feature phase, nil otherwise (one retain: `Session` is a class).
    private var session: Session? {
        if case .fullFeature(let session) = state { return session }
        return nil
    }
    private var framer = PDUFramer()
    private var writer = PDUWriter()
    private var inbound: ByteBuffer?
    private var needsFlush = false
    /// Whether the current batch (the PDUs of one socket read, or one delivery of pool
    /// completions) has flushed its first response already; see `flushFirstOfBatch`.
    private var batchFlushed = false
    private var timer: Scheduled<Void>?
    private var blockingWork: BlockingWorkQueue?
    /// Commands submitted to `blockingWork` and not yet completed (event loop only).
    private var blockingInFlight = 0
    /// The tags of commands on the pool that are not medium READs (writes and the rest).
    private var poolNonReads: Set<UInt32> = []
    private var timerDeadline: NIODeadline?
    private var logger: Logger
    private weak var channelContext: ChannelHandlerContext?
    /// The source address this connection is counted under (limit per address).
    private var countedAddress: String?
    /// A resource limit refuses this connection: its first Login Request gets this status.
    private var refusal: LoginStatus?
    private var loginTimer: Scheduled<Void>?
    /// Task management requests waiting for their response (for the one log line per function).
    private var taskManagementRequests: [UInt32: TaskManagementRequest] = [:]
    /// What this connection has taken from the server's unsolicited-data budget.
    private var unsolicitedAccounted = 0
    /// Backpressure (see the top of the file): no reads and no PDU cutting while set.
    private var readPaused = false
    /// A `read` the pipeline asked for while paused, issued on resume.
    private var readDeferred = false
    private var processingInbound = false
    /// READ data expected from commands on the thread pool, by task tag, and its sum.
    private var poolDataIn: [UInt32: Int] = [:]
    private var poolDataInBytes = 0
    /// Emptied action arrays kept for reuse (one per nesting level of `runMachine`), so a
    /// command allocates no array for the actions the session machine returns.
    private var spareActions: [[SessionAction]] = []

    init(context: TargetContext) {
        self.context = context
        self.state = .login(LoginStateMachine(directory: context.directory, limits: Self.limits(context)))
        self.logger = context.logger
    }

    static func limits(_ context: TargetContext) -> TargetNegotiationLimits {
        TargetNegotiationLimits()
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        channelContext = context
        if let remote = context.channel.remoteAddress { logger[metadataKey: "iscsi.peer"] = "\(remote)" }
        let configuration = self.context.configuration
        if let ip = context.channel.remoteAddress?.ipAddress {
            if self.context.connections.open(ip, limit: configuration.maximumConnectionsPerAddress) {
                countedAddress = ip
            } else {
                refusal = .outOfResources
            }
        }
        // A connection that has not completed its login in time is closed (RFC 7143 leaves the
        // login timeout to the implementation); it holds no session yet.
        let boxed = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        loginTimer = context.eventLoop.scheduleTask(in: .seconds(Int64(configuration.loginTimeout))) {
            let (handler, context) = boxed.value
            guard case .login = handler.state else { return }
            handler.logger.info("login timeout")
            handler.close(context: context)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        logger.debug("connection opened")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if inbound == nil || inbound!.readableBytes == 0 {
            inbound = bytes
        } else {
            inbound!.writeBuffer(&bytes)
        }
        processInbound(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        endBatch(context: context)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if readPaused { readDeferred = true } else { context.read() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        updateReadGate(context: context)
        context.fireChannelWritabilityChanged()
    }

    private func updateReadGate(context: ChannelHandlerContext) {
        let pause = !context.channel.isWritable || poolDataInBytes > Self.poolDataInHighWater
        guard pause != readPaused else { return }
        readPaused = pause
        if pause { return }
        // PDUs already received are cut now (unless the loop that paused is still on the
        // stack: it goes on by itself), then the deferred read is issued.
        if !processingInbound {
            processInbound(context: context)
            endBatch(context: context)
        }
        if readDeferred, !readPaused {
            readDeferred = false
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func teardown() {
        timer?.cancel()
        timer = nil
        loginTimer?.cancel()
        loginTimer = nil
        if let address = countedAddress {
            countedAddress = nil
            self.context.connections.close(address)
        }
        blockingWork = nil  // breaks the queue → handler reference once queued work drains
        if unsolicitedAccounted != 0 {
            self.context.unsolicitedBudget.adjust(by: -unsolicitedAccounted)
            unsolicitedAccounted = 0
        }
        if let session {
            session.machine.connectionLost()
            if let nexus = session.nexus { session.device?.nexusDidClose(nexus) }
            session.nexus = nil
            if let channel = channelContext?.channel { self.context.sessions.remove(tsih: session.tsih, channel: channel) }
            logger.info("session closed", metadata: ["iscsi.tsih": "\(session.tsih)"])
        }
        state = .closed
    }

    /// Runs `body` on the session machine in place, then performs the actions it produced.
    /// The machine's tables must be uniquely referenced while `body` runs, or the first
    /// insertion copies them: nothing may hold a copy of the machine across this call.
    private func runMachine(context: ChannelHandlerContext,
                            _ body: (inout SessionStateMachine, inout [SessionAction]) -> Void) {
        guard var actions = stepMachine(body) else { return }
        perform(actions, context: context)
        actions.removeAll(keepingCapacity: true)
        spareActions.append(actions)
    }

    private var isFullFeature: Bool { session != nil }

    /// The first half of `runMachine`: the machine changes in place (the session machine is
    /// pure, so `body` cannot reach back into this handler while it has the machine).
    private func stepMachine(_ body: (inout SessionStateMachine, inout [SessionAction]) -> Void) -> [SessionAction]? {
        guard let session else { return nil }
        var actions = spareActions.popLast() ?? []
        body(&session.machine, &actions)
        let held = session.machine.heldUnsolicitedBytes
        if held != unsolicitedAccounted {
            // Tasks finished (or the command was never taken): give the difference back.
            self.context.unsolicitedBudget.adjust(by: held - unsolicitedAccounted)
            unsolicitedAccounted = held
        }
        return actions
    }

    /// The I_T nexus ends (logout or connection loss): the device releases what it held for it.
    private func endNexus() {
        guard let session, let nexus = session.nexus else { return }
        session.device?.nexusDidClose(nexus)
        session.nexus = nil
    }

    // MARK: Inbound

    private func processInbound(context: ChannelHandlerContext) {
        processingInbound = true
        defer { processingInbound = false }
        while !readPaused, var buffer = inbound, buffer.readableBytes > 0 {
            if case .closed = state { inbound = nil; return }
            let pdu: RawPDU?
            do {
                pdu = try framer.next(from: &buffer)
                inbound = buffer
            } catch {
                inbound = buffer
                handleFramingError(error, context: context)
                continue
            }
            guard let pdu else { break }
            handle(pdu, context: context)
            flushFirstOfBatch(context: context)
        }
        if let b = inbound, b.readableBytes == 0 { inbound = nil } else if inbound != nil { inbound!.discardReadBytes() }
    }

    private func handleFramingError(_ error: FramingError, context: ChannelHandlerContext) {
        switch state {
        case .login, .closed:
            logger.info("framing error during login", metadata: ["error": "\(error)"])
            close(context: context)
        case .fullFeature:
            runMachine(context: context) { machine, actions in actions += machine.receiveFramingError(error) }
        }
    }

    private func handle(_ raw: RawPDU, context: ChannelHandlerContext) {
        let decoded: InitiatorPDU
        do {
            decoded = try InitiatorPDU(decoding: raw)
        } catch {
            if isFullFeature {
                runMachine(context: context) { machine, actions in
                    actions += machine.receiveMalformed(raw.header, error: error, now: .now())
                }
            } else {
                close(context: context)
            }
            return
        }
        // The hot path first.
        if isFullFeature {
            if case .taskManagement(let request) = decoded { self.taskManagementRequests[request.initiatorTaskTag] = request }
            let admitted = reserveUnsolicitedData(for: decoded)
            runMachine(context: context) { machine, actions in
                machine.receive(decoded, header: raw.header, now: .now(), unsolicitedDataAdmitted: admitted, into: &actions)
            }
            return
        }
        switch state {
        case .closed:
            return
        case .login(var login):
            guard case .login(let request) = decoded else {
                // RFC 7143 §6.3: only Login Requests before the full feature phase.
                logger.info("non-login PDU before login completed")
                close(context: context)
                return
            }
            if let status = refusal {
                logger.info("login refused: connection limit", metadata: ["iscsi.status": "\(status)"])
                let response = login.refuse(request, status: status)
                state = .login(login)
                write(.loginResponse(response), context: context)
                closeAfterLoginFailure(context: context)
                return
            }
            let action = login.receive(request)
            state = .login(login)
            handleLogin(action, login: login, context: context)
        case .fullFeature:
            preconditionFailure("handled above")
        }
    }

    /// Takes a SCSI command's unsolicited data share from the server budget before the
    /// session machine sees the command; false: no room (the machine answers BUSY/TASK SET FULL).
    private func reserveUnsolicitedData(for pdu: InitiatorPDU) -> Bool {
        // Only writes carry unsolicited data.
        guard case .scsiCommand(let command) = pdu, command.isWrite,
              let bytes = session?.machine.unsolicitedReservation(for: command) else { return true }
        guard bytes > 0 else { return true }
        guard self.context.unsolicitedBudget.reserve(bytes, sessionHolds: unsolicitedAccounted) else { return false }
        unsolicitedAccounted += bytes
        return true
    }

    // MARK: Login

    /// After a failed login both sides close (RFC 7143 §11.13.5). The initiator is given a
    /// moment to close first, having read the status: a close racing the response makes the
    /// Linux initiator log a connection error for a login that merely failed. Nothing more
    /// is read from the connection meanwhile.
    private func closeAfterLoginFailure(context: ChannelHandlerContext) {
        flushIfNeeded(context: context)
        teardown()
        let boxed = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .seconds(2)) {
            boxed.value.close(promise: nil)
        }
    }

    private func handleLogin(_ action: LoginAction, login: LoginStateMachine, context: ChannelHandlerContext) {
        switch action {
        case .respond(let response):
            write(.loginResponse(response), context: context)
        case .fail(let response):
            logger.info("login failed", metadata: ["iscsi.status": "\(response.status)"])
            write(.loginResponse(response), context: context)
            closeAfterLoginFailure(context: context)
        case .establishSession(let outcome):
            establish(outcome, login: login, context: context)
        }
    }

    private func establish(_ outcome: LoginOutcome, login: LoginStateMachine, context: ChannelHandlerContext) {
        var login = login
        let key = SessionRegistry.Key(initiatorName: outcome.initiatorName, isid: outcome.isid,
                                      targetName: outcome.targetName ?? "")
        let admission = self.context.sessions.admit(key: key, requestedTSIH: outcome.requestedTSIH, channel: context.channel)
        guard case .admitted(let tsih, let nexusID, let replacing) = admission else {
            if case .refused(let status) = admission {
                let response = login.sessionRefused(status)
                write(.loginResponse(response), context: context)
                closeAfterLoginFailure(context: context)
            }
            return
        }
        if let replacing {
            logger.info("session reinstatement: closing the previous connection")
            replacing.close(promise: nil)
        }
        var sessionConfiguration = SessionConfiguration(
            sessionType: outcome.sessionType, parameters: outcome.parameters, targetName: outcome.targetName)
        sessionConfiguration.commandWindow = self.context.configuration.commandWindow
        let nop = self.context.configuration.nopInterval
        sessionConfiguration.nopInInterval = nop > 0 ? .seconds(Int64(nop)) : nil
        sessionConfiguration.nopInTimeout = .seconds(Int64(max(nop, 5) + 5))
        sessionConfiguration.discoveryRecords = self.context.discoveryRecords(
            localAddress: context.channel.localAddress, initiatorName: outcome.initiatorName)
        sessionConfiguration.faultDropLastDataIn = self.context.configuration.faultDropLastDataIn

        var sessionDevice: SCSITargetDevice?
        var nexus: ITNexus?
        var metrics: TargetMetrics?
        let port: any CommandPort
        if outcome.sessionType == .normal, let name = outcome.targetName, let device = self.context.devices[name],
           let target = self.context.configuration.targets.first(where: { $0.name == name })
        {
            let isidHex = String(outcome.isid, radix: 16)
            let itNexus = ITNexus(
                initiatorPortName: "\(outcome.initiatorName),i,0x\(String(repeating: "0", count: max(0, 12 - isidHex.count)))\(isidHex)",
                targetPortName: device.configuration.targetPortName, id: nexusID, relativeTargetPort: target.portalGroupTag)
            device.nexusDidOpen(itNexus)
            (sessionDevice, nexus, metrics) = (device, itNexus, self.context.metrics.targets[name])
            port = DevicePort(device: device, nexus: itNexus, metrics: metrics)
        } else {
            port = NoDevicePort()
        }
        let machine = SessionStateMachine(
            configuration: sessionConfiguration, port: port, expCmdSN: outcome.expCmdSN, statSN: outcome.statSN &+ 1,
            now: .now())
        let response = login.sessionEstablished(tsih: tsih, maxCmdSN: machine.maxCmdSN)
        write(.loginResponse(response), context: context)
        // Digests and our receive limit apply from the first PDU after the final Login Response.
        writer.digests = DigestSettings(header: outcome.parameters.headerDigest, data: outcome.parameters.dataDigest)
        framer.digests = writer.digests
        framer.maxDataSegmentLength = outcome.parameters.maxRecvDataSegmentLength
        state = .fullFeature(Session(tsih: tsih, machine: machine, device: sessionDevice, nexus: nexus, metrics: metrics))
        loginTimer?.cancel()
        loginTimer = nil
        logger[metadataKey: "iscsi.tsih"] = "\(tsih)"
        let parameters = outcome.parameters
        self.context.sessions.describe(tsih: tsih, channel: context.channel, SessionStatus(
            tsih: tsih, initiator: outcome.initiatorName, isid: String(format: "%012llx", outcome.isid),
            target: outcome.targetName, peer: context.channel.remoteAddress.map { "\($0)" } ?? "",
            established: Date(), headerDigest: parameters.headerDigest, dataDigest: parameters.dataDigest,
            maxRecvDataSegmentLength: parameters.maxRecvDataSegmentLength,
            maxXmitDataSegmentLength: parameters.maxXmitDataSegmentLength, maxBurstLength: parameters.maxBurstLength,
            firstBurstLength: parameters.firstBurstLength, initialR2T: parameters.initialR2T,
            immediateData: parameters.immediateData, maxOutstandingR2T: parameters.maxOutstandingR2T))
        logger.info("session established", metadata: [
            "iscsi.initiator": "\(outcome.initiatorName)",
            "iscsi.target": "\(outcome.targetName ?? "(discovery)")",
            "iscsi.digests": "\(outcome.parameters.headerDigest ? "H" : "-")\(outcome.parameters.dataDigest ? "D" : "-")",
            "iscsi.mrdsl": "\(outcome.parameters.maxXmitDataSegmentLength)",
        ])
        armTimer(context: context)
    }

    // MARK: Actions

    /// One line per task management function, when its response goes out.
    private func logTaskManagement(_ response: TaskManagementResponse) {
        guard let request = self.taskManagementRequests.removeValue(forKey: response.initiatorTaskTag) else { return }
        let function = TaskManagementFunctionCode(rawValue: request.function).map { "\($0)" } ?? "function \(request.function)"
        let outcome = TaskManagementResponseCode(rawValue: response.response).map { "\($0)" } ?? "\(response.response)"
        var metadata: Logger.Metadata = [
            "iscsi.tmf": "\(function)", "iscsi.tmf.response": "\(outcome)",
            "scsi.lun": "\(SCSICommand.lunNumber(of: request.lun).map { "\($0)" } ?? String(request.lun, radix: 16))",
        ]
        if request.function == TaskManagementFunctionCode.abortTask.rawValue {
            metadata["iscsi.referenced_itt"] = "\(String(request.referencedTaskTag, radix: 16))"
        }
        logger.info("task management", metadata: metadata)
    }

    private func perform(_ actions: [SessionAction], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let pdu):
                if case .taskManagementResponse(let response) = pdu { logTaskManagement(response) }
                write(pdu, context: context)
            case .execute(let itt, let token, let dataOut):
                execute(itt: itt, token: token, dataOut: dataOut, context: context)
            case .loggedOut:
                logger.info("logout")
                endNexus()
            case .close(let reason):
                if reason != .logout { logger.info("closing connection", metadata: ["reason": "\(reason)"]) }
                if reason == .targetColdReset, let device = session?.device {
                    // TARGET COLD RESET ends every session of the target (RFC 7143 §11.5.1).
                    for channel in self.context.sessions.channels(of: device.configuration.targetName)
                    where channel !== context.channel {
                        channel.close(promise: nil)
                    }
                }
                flushIfNeeded(context: context)
                close(context: context)
                return
            }
        }
        armTimer(context: context)
    }

    private func execute(itt: UInt32, token: any Sendable, dataOut: ByteBuffer?, context: ChannelHandlerContext) {
        guard let session, let device = session.device,
              let prepared = token as? PreparedCommand
        else { return }
        let metrics = session.metrics
        let started = NIODeadline.now()
        if !prepared.mayBlock {
            let response = device.execute(prepared, dataOut: dataOut)
            metrics?.record(command: prepared.command, response: response,
                           nanoseconds: UInt64(max(0, (NIODeadline.now() - started).nanoseconds)))
            complete(itt: itt, response: response, context: context)
            return
        }
        // A READ whose data is in the page cache completes here, without two thread hops --
        // unless commands of this connection that it must not overtake wait on the pool: any
        // write or other command, or anything at all for an ORDERED / HEAD OF QUEUE READ. A
        // SIMPLE READ may overtake READs on the pool (neither changes the medium); before,
        // one READ sent to the pool (its pages not cached) sent every following READ there as
        // long as one was in flight, which at a steady queue depth could last the whole run.
        let simple = prepared.command.attribute == .simple || prepared.command.attribute == .untagged
        if blockingInFlight == 0 || (simple && poolNonReads.isEmpty),
           let response = device.executeWithoutWaiting(prepared) {
            metrics?.record(command: prepared.command, response: response,
                           nanoseconds: UInt64(max(0, (NIODeadline.now() - started).nanoseconds)))
            complete(itt: itt, response: response, context: context)
            return
        }
        blockingInFlight += 1
        if !prepared.decoded.isMediumRead { poolNonReads.insert(itt) }
        let dataIn = session.machine.expectedDataInLength(initiatorTaskTag: itt)
        if dataIn > 0 {
            poolDataIn[itt] = dataIn
            poolDataInBytes += dataIn
            if poolDataInBytes > Self.poolDataInHighWater { updateReadGate(context: context) }
        }
        workQueue(context: context).submit(BlockingWorkQueue.Item(initiatorTaskTag: itt) {
            let response = device.execute(prepared, dataOut: dataOut)
            metrics?.record(command: prepared.command, response: response,
                           nanoseconds: UInt64(max(0, (NIODeadline.now() - started).nanoseconds)))
            return response
        })
    }

    private func workQueue(context: ChannelHandlerContext) -> BlockingWorkQueue {
        if let queue = blockingWork { return queue }
        let boxed = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let queue = BlockingWorkQueue(pool: self.context.threadPool, eventLoop: context.eventLoop) { finished in
            let (handler, context) = boxed.value
            handler.blockingInFlight -= finished.count
            for item in finished {
                if !handler.poolNonReads.isEmpty { handler.poolNonReads.remove(item.initiatorTaskTag) }
                if let dataIn = handler.poolDataIn.removeValue(forKey: item.initiatorTaskTag) {
                    handler.poolDataInBytes -= dataIn
                }
                handler.complete(itt: item.initiatorTaskTag, response: item.response, context: context)
                handler.flushFirstOfBatch(context: context)
            }
            handler.endBatch(context: context)
            if handler.readPaused { handler.updateReadGate(context: context) }
        }
        blockingWork = queue
        return queue
    }

    private func complete(itt: UInt32, response: SCSIResponse, context: ChannelHandlerContext) {
        runMachine(context: context) { machine, actions in
            machine.completed(initiatorTaskTag: itt, result: CommandResult(response), into: &actions)
        }
    }

    private func write(_ pdu: TargetPDU, context: ChannelHandlerContext) {
        let (head, data, trailer) = writer.frame(pdu, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(head), promise: nil)
        if let data { context.write(wrapOutboundOut(data), promise: nil) }
        if let trailer { context.write(wrapOutboundOut(trailer), promise: nil) }
        needsFlush = true
    }

    /// Write coalescing. The first response of a batch goes out at once, so the initiator
    /// starts on it (and sends its next command) while the target works through the rest of
    /// the batch; the others go out together when the batch ends (one `writev`). Holding
    /// every response to the end of the batch made target and initiator take turns: at queue
    /// depth 4 on one session that cost a third of the IOPS, while flushing every response
    /// halved the IOPS at queue depth 32 (one `writev` and loopback delivery per response).
    private func flushFirstOfBatch(context: ChannelHandlerContext) {
        guard needsFlush, !batchFlushed else { return }
        batchFlushed = true
        flushIfNeeded(context: context)
    }

    private func endBatch(context: ChannelHandlerContext) {
        batchFlushed = false
        flushIfNeeded(context: context)
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    private func close(context: ChannelHandlerContext) {
        flushIfNeeded(context: context)
        teardown()
        context.close(promise: nil)
    }

    // MARK: Timer

    private func armTimer(context: ChannelHandlerContext) {
        guard let deadline = session?.machine.nextDeadline else {
            timer?.cancel()
            timer = nil
            timerDeadline = nil
            return
        }
        // A timer that fires earlier than needed is harmless (tick does nothing and the
        // timer is re-armed); re-arming on every PDU is not, at tens of thousands of IOPS.
        if let current = timerDeadline, timer != nil, current <= deadline { return }
        timer?.cancel()
        timerDeadline = deadline
        let boxed = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = boxed.value
            handler.timerFired(context: context)
        }
    }

    private func timerFired(context: ChannelHandlerContext) {
        timer = nil
        timerDeadline = nil
        runMachine(context: context) { machine, actions in actions += machine.tick(now: .now()) }
        flushIfNeeded(context: context)
    }
}

/// The port of a discovery session. The session machine rejects SCSI commands and task
/// management in discovery sessions before they reach a port, so this is never asked.
struct NoDevicePort: CommandPort {
    func admit(_ command: SCSICommandRequest) -> CommandDisposition {
        .complete(CommandResult(status: SCSIStatus.checkCondition.rawValue))
    }
    func taskManagement(_ function: TaskManagementFunctionCode, lun: UInt64) -> TaskManagementResponseCode {
        .lunDoesNotExist
    }
}
