//
// The copy manager of one target: runs EXTENDED COPY (LID1 and LID4), answers RECEIVE COPY
// RESULTS and COPY OPERATION ABORT, and describes itself (operating parameters, VPD 0x8F).
//
// A copy is checked completely before any byte moves: every CSCD a segment names is
// resolved, every length and LBA range checked, so a bad segment N never leaves segments
// 0…N−1 copied behind a failure. Then the segments run in order, in bounded chunks, on the
// calling thread (a thread-pool thread: EXTENDED COPY is a blocking command), with COPY
// OPERATION ABORT and nexus loss checked between chunks.
//
// Logical units are found through a process-wide `CopyUnitRegistry`, so a copy may read one
// target's LU and write another's. One `CopyManager` per target carries that target's limits;
// list identifiers are tracked per (I_T nexus, logical unit).
//
import Foundation
import NIOCore
import SCSI
import Synchronization

public final class CopyManager: Sendable {
    public let registry: CopyUnitRegistry
    public let limits: CopyLimits
    /// Token limits; the operator may change them while the target runs (`setTokenLimits`).
    public var tokenLimits: RODTokenLimits { self.tokenLimitsState.withLock { $0 } }
    private let tokenLimitsState: LockedValue<RODTokenLimits>
    /// The process-wide ROD tokens (the registry's).
    public var tokens: RODTokenStore { self.registry.tokens }
    /// Runs IMMED operations after their command has completed.
    let background: @Sendable (@escaping @Sendable () -> Void) -> Void
    let mover: CopyMover
    let clock: @Sendable () -> NIODeadline
    let table: LockedValue<CopyOperationTable>
    /// Every copy running now, tracked list ID or not, so task management can stop it.
    let running = LockedValue<[UInt64: RunningCopy]>([:])
    let nextCopyNumber = Atomic<UInt64>(0)

    /// Who hears of every copy's end (the server logs one line per copy).
    private let observers = LockedValue<[@Sendable (CopyReport) -> Void]>([])

    /// Calls `observer` after every EXTENDED COPY, POPULATE TOKEN and WRITE USING TOKEN ends.
    public func observe(_ observer: @escaping @Sendable (CopyReport) -> Void) {
        self.observers.withLock { $0.append(observer) }
    }

    func report(_ command: CopyCommandKind, _ key: CopyListKey, outcome: CopyOutcome, bytes: UInt64,
                started: NIODeadline?) {
        let observers = self.observers.withLock { $0 }
        guard !observers.isEmpty else { return }
        let report = CopyReport(command: command, unit: key.unit, initiatorPort: key.initiatorPort, listID: key.listID,
                                outcome: outcome, bytes: bytes,
                                duration: started.map { self.clock() - $0 })
        for observer in observers { observer(report) }
    }

    struct RunningCopy: Sendable {
        var initiatorPort: String
        var targetPort: String
        var unit: CopyUnitID
        var stop: StopFlag
    }

    final class StopFlag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    public init(registry: CopyUnitRegistry, limits: CopyLimits = CopyLimits(),
                tokenLimits: RODTokenLimits = RODTokenLimits(), mover: CopyMover? = nil,
                clock: @escaping @Sendable () -> NIODeadline = { .now() },
                background: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void = { work in
                    Thread.detachNewThread { work() }
                }) {
        self.registry = registry
        self.limits = limits
        self.tokenLimitsState = LockedValue(tokenLimits)
        self.background = background
        self.mover = mover ?? CopyMover(chunkSize: limits.chunkSize)
        self.clock = clock
        self.table = LockedValue(CopyOperationTable(heldResultsLifetime: .seconds(limits.heldResultsLifetime),
                                              maximumRunning: Int(limits.totalConcurrentCopies)))
    }

    /// Installs new token limits; returns true when they differ from the old ones. Live tokens
    /// keep their timeouts; the new limits apply from the next command.
    @discardableResult
    public func setTokenLimits(_ limits: RODTokenLimits) -> Bool {
        self.tokenLimitsState.withLock { current in
            defer { current = limits }
            return current != limits
        }
    }

    // MARK: EXTENDED COPY

    /// Runs one EXTENDED COPY received by `unit` from `nexus`. Blocks until the copy ends.
    public func extendedCopy(_ parameterList: [UInt8], format: ExtendedCopyFormat, unit unitID: CopyUnitID,
                             nexus: ITNexus) throws(CopyError) {
        guard let list = try ExtendedCopyList.parse(parameterList, format: format, limits: self.limits) else { return }
        guard let receiving = self.registry.unit(unitID) else {
            throw .copyAborted(CopyError.unreachableCopyTarget, segment: 0, byte: nil)
        }
        receiving.record { $0.operations += 1 }
        let started = self.clock()
        let key = CopyListKey(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName,
                              unit: unitID, listID: list.listID)
        let tracked: Bool
        do {
            tracked = try self.table.withLock { table throws(CopyError) in
                try table.begin(key, format: format, usage: list.usage, now: self.clock())
            }
        } catch {
            receiving.record { $0.failedOperations += 1 }
            throw error
        }
        var segmentsDone = 0
        var bytesDone: UInt64 = 0
        let stop = StopFlag()
        let number = self.nextCopyNumber.wrappingAdd(1, ordering: .relaxed).newValue
        self.running.withLock {
            $0[number] = RunningCopy(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName,
                                     unit: unitID, stop: stop)
        }
        defer { _ = self.running.withLock { $0.removeValue(forKey: number) } }
        do throws(CopyError) {
            let plan = try self.plan(list, receiving: receiving, nexus: nexus)
            for (index, step) in plan.enumerated() {
                if case .move(let source, let sourceOffset, let destination, let destinationOffset, let length) = step.action {
                    let before = bytesDone
                    do throws(MoveError) {
                        let moved = try self.mover.move(
                            from: source.store, at: sourceOffset, to: destination.store, at: destinationOffset,
                            length: length, durable: !destination.writeCacheEnabled,
                            shouldStop: {
                                stop.raised.load(ordering: .relaxed)
                                    || (tracked && self.table.withLock { $0.isAbortRequested(key) })
                            },
                            progress: { moved in
                                guard tracked else { return }
                                self.table.withLock {
                                    $0.progress(key, segmentsProcessed: index, bytesTransferred: before + moved)
                                }
                            })
                        bytesDone += moved
                        source.record { $0.bytesRead += moved }
                        destination.record { $0.bytesWritten += moved }
                        destination.noteWritten(at: destinationOffset, length: moved)
                    } catch {
                        switch error {
                        case .stopped(let moved):
                            bytesDone += moved
                            throw CopyError.aborted(segment: index)
                        case .readFailed(_, let moved), .writeFailed(_, let moved):
                            bytesDone += moved
                            throw CopyError.copyAborted(CopyError.thirdPartyDeviceFailure, segment: index,
                                                        byte: step.descriptorOffset)
                        }
                    }
                }
                segmentsDone = index + 1
            }
        } catch {
            receiving.record { $0.failedOperations += 1 }
            let outcome: CopyOutcome = error.sense.map { .failed($0) } ?? .aborted
            if tracked {
                self.table.withLock {
                    $0.finish(key, outcome, segmentsProcessed: segmentsDone, bytesTransferred: bytesDone, now: self.clock())
                }
            }
            self.report(.extendedCopy(format), key, outcome: outcome, bytes: bytesDone, started: started)
            throw error
        }
        if tracked {
            self.table.withLock {
                $0.finish(key, .completed, segmentsProcessed: segmentsDone, bytesTransferred: bytesDone, now: self.clock())
            }
        }
        self.report(.extendedCopy(format), key, outcome: .completed, bytes: bytesDone, started: started)
    }

    struct Step {
        enum Action {
            case move(CopyUnit, UInt64, CopyUnit, UInt64, UInt64)
            case verify
        }
        var descriptorOffset: Int
        var action: Action
    }

    /// Resolves and checks every segment; throws the first problem.
    func plan(_ list: ExtendedCopyList, receiving: CopyUnit, nexus: ITNexus) throws(CopyError) -> [Step] {
        var steps: [Step] = []
        for (index, segment) in list.segments.enumerated() {
            let at = segment.offset
            switch segment.kind {
            case .verify(let sourceIndex, _):
                // Every logical unit here is ready once it exists: TEST UNIT READY has nothing to add.
                _ = try self.resolve(sourceIndex, list, receiving: receiving, nexus: nexus, segment: index, field: at + 4)
                steps.append(Step(descriptorOffset: at, action: .verify))
            case .blockToBlock(let b2b):
                let source = try self.resolve(b2b.sourceIndex, list, receiving: receiving, nexus: nexus, segment: index,
                                              field: at + 4)
                let destination = try self.resolve(b2b.destinationIndex, list, receiving: receiving, nexus: nexus,
                                                   segment: index, field: at + 6)
                let sourceSize = UInt64(source.blockSize)
                let destinationSize = UInt64(destination.blockSize)
                let length: UInt64
                var sourceStart: UInt64
                var destinationStart: UInt64
                var overflow = false
                switch b2b.length {
                case .blocks(let blocks):
                    length = UInt64(blocks) * (b2b.destinationCount ? destinationSize : sourceSize)
                    guard length % sourceSize == 0 && length % destinationSize == 0 else {
                        throw .copyAborted(CopyError.unexpectedInexactSegment, segment: index, byte: at + 10)
                    }
                    (sourceStart, overflow) = b2b.sourceLBA.multipliedReportingOverflow(by: sourceSize)
                    if overflow { throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 12) }
                    (destinationStart, overflow) = b2b.destinationLBA.multipliedReportingOverflow(by: destinationSize)
                    if overflow { throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 20) }
                case .bytes(let bytes):
                    length = UInt64(bytes)
                    guard UInt64(b2b.sourceByteOffset) < sourceSize else {
                        throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 28)
                    }
                    guard UInt64(b2b.destinationByteOffset) < destinationSize else {
                        throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 30)
                    }
                    (sourceStart, overflow) = b2b.sourceLBA.multipliedReportingOverflow(by: sourceSize)
                    if overflow { throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 12) }
                    (destinationStart, overflow) = b2b.destinationLBA.multipliedReportingOverflow(by: destinationSize)
                    if overflow { throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 20) }
                    sourceStart += UInt64(b2b.sourceByteOffset)
                    destinationStart += UInt64(b2b.destinationByteOffset)
                }
                if self.limits.maximumSegmentLength > 0 && length > UInt64(self.limits.maximumSegmentLength) {
                    throw .invalidField(byte: at + (b2b.length == .bytes(UInt32(length)) ? 8 : 10), bit: nil)
                }
                let (sourceEnd, sourceOverflow) = sourceStart.addingReportingOverflow(length)
                guard !sourceOverflow && sourceEnd <= source.byteCount else {
                    throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 12)
                }
                let (destinationEnd, destinationOverflow) = destinationStart.addingReportingOverflow(length)
                guard !destinationOverflow && destinationEnd <= destination.byteCount else {
                    throw .copyAborted(.noAdditionalSenseInformation, segment: index, byte: at + 20)
                }
                if destination.isReadOnly && length > 0 {
                    throw .copyAborted(.writeProtected, segment: index, byte: at + 6)
                }
                steps.append(Step(descriptorOffset: at,
                                  action: .move(source, sourceStart, destination, destinationStart, length)))
            }
        }
        return steps
    }

    /// A CSCD index to a logical unit: 0xFFFF is the receiving one; others index the CSCD list.
    /// An LU the initiator could not address itself (another target's ACL, LUN masking) is
    /// as unreachable as one that does not exist.
    func resolve(_ index: UInt16, _ list: ExtendedCopyList, receiving: CopyUnit, nexus: ITNexus, segment: Int,
                 field: Int) throws(CopyError) -> CopyUnit {
        if index == 0xFFFF { return receiving }
        guard Int(index) < list.cscds.count else {
            throw .copyAborted(CopyError.unreachableCopyTarget, segment: segment, byte: field)
        }
        let cscd = list.cscds[Int(index)]
        guard !cscd.null else {
            throw .copyAborted(CopyError.unreachableCopyTarget, segment: segment, byte: cscd.offset + 1)
        }
        guard cscd.peripheralDeviceType == 0 else {
            throw .copyAborted(AdditionalSenseCode(0x0D, 0x03), segment: segment, byte: cscd.offset + 1)
        }
        guard let unit = self.registry.unit(matching: cscd.designator), unit.isAccessible(to: nexus) else {
            throw .copyAborted(CopyError.unreachableCopyTarget, segment: segment, byte: cscd.offset + 4)
        }
        if cscd.blockLength != 0 && Int(cscd.blockLength) != unit.blockSize {
            throw .invalidField(byte: cscd.offset + 29, bit: nil)
        }
        return unit
    }

    // MARK: COPY OPERATION ABORT

    /// Flags the running copy `listID` of (nexus, unit); unknown: INVALID FIELD IN CDB (list ID).
    public func abort(listID: UInt32, unit: CopyUnitID, nexus: ITNexus) throws(CopyError) {
        let key = CopyListKey(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName, unit: unit,
                              listID: listID)
        guard self.table.withLock({ $0.requestAbort(key) }) else { throw .invalidFieldInCDB(byte: 2, bit: nil) }
    }

    /// I_T nexus loss: held results are freed, running copies stop at their next chunk.
    public func nexusLost(_ nexus: ITNexus) {
        self.table.withLock { $0.nexusLost(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName) }
        self.stopCopies { initiator, target, _ in
            initiator == nexus.initiatorPortName && target == nexus.targetPortName
        }
    }

    /// Stops (at their next chunk) the running copies `matching` (initiator port, target port,
    /// receiving LU) selects, with or without a list ID: ABORT TASK SET, CLEAR TASK SET, resets.
    /// Returns how many were asked to stop.
    @discardableResult
    public func stopCopies(matching: (String, String, CopyUnitID) -> Bool) -> Int {
        self.running.withLock { running in
            var count = 0
            for copy in running.values where matching(copy.initiatorPort, copy.targetPort, copy.unit) {
                copy.stop.raised.store(true, ordering: .relaxed)
                count += 1
            }
            return count
        }
    }

    /// Copies running now (statistics, tests).
    public var runningCopies: Int { self.running.withLock { $0.count } }

    /// The operations with a list identifier that are running now (EXTENDED COPY with LIST ID
    /// USAGE 00b/10b, POPULATE TOKEN, WRITE USING TOKEN), for the operator.
    public var trackedOperationsInFlight: [CopyOperation] {
        self.table.withLock { table in
            table.operations.values.filter { if case .running = $0.state { true } else { false } }
        }.sorted { ($0.key.unit.lun, $0.key.listID) < ($1.key.unit.lun, $1.key.listID) }
    }

    /// Frees expired held results (also done lazily by every command).
    public func expire() {
        let now = self.clock()
        self.table.withLock { $0.expire(now: now) }
    }

    // MARK: RECEIVE COPY RESULTS

    /// The parameter data of RECEIVE COPY RESULTS service action `serviceAction`.
    /// 0x00 COPY STATUS (LID1, 1-byte list ID), 0x03 OPERATING PARAMETERS, 0x04 FAILURE
    /// DETAILS (LID1), 0x05 COPY STATUS (LID4). RECEIVE COPY DATA (0x01, 0x06) is not offered:
    /// the held data limit is 0.
    public func receiveCopyResults(serviceAction: UInt8, listID: UInt32, unit: CopyUnitID,
                                   nexus: ITNexus) throws(CopyError) -> [UInt8] {
        let key = CopyListKey(initiatorPort: nexus.initiatorPortName, targetPort: nexus.targetPortName, unit: unit,
                              listID: listID)
        let now = self.clock()
        switch serviceAction {
        case 0x03:
            return self.operatingParameters()
        case 0x00:
            guard let operation = self.table.withLock({ $0.read(key, .statusLID1, now: now) }) else {
                throw .invalidFieldInCDB(byte: 2, bit: nil)
            }
            return Self.copyStatusLID1(operation)
        case 0x04:
            let operation = self.table.withLock { table -> CopyOperation? in
                guard let operation = table.operations[key], case .finished = operation.state else { return nil }
                return table.read(key, .failureDetails, now: now)
            }
            guard let operation else { throw .invalidFieldInCDB(byte: 2, bit: nil) }
            return Self.failureDetails(operation)
        case 0x05:
            guard let operation = self.table.withLock({ $0.read(key, .statusLID4, now: now) }) else {
                throw .invalidFieldInCDB(byte: 2, bit: nil)
            }
            return Self.copyStatusLID4(operation)
        default:
            throw .invalidFieldInCDB(byte: 1, bit: 4)
        }
    }

    /// RECEIVE COPY OPERATING PARAMETERS (SPC-4 §6.18.4).
    public func operatingParameters() -> [UInt8] {
        let types = CopyLimits.implementedDescriptorTypes
        var data = [UInt8](repeating: 0, count: 44)
        data.put32(UInt32(40 + types.count), at: 0)
        data[4] = 0x01  // SNLID: LIST ID USAGE 11b supported
        data.put16(UInt16(clamping: self.limits.maximumCSCDCount), at: 8)
        data.put16(UInt16(clamping: self.limits.maximumSegmentCount), at: 10)
        data.put32(UInt32(clamping: self.limits.maximumDescriptorListLength), at: 12)
        data.put32(self.limits.maximumSegmentLength, at: 16)
        data.put32(self.limits.maximumInlineDataLength, at: 20)
        data.put32(self.limits.heldDataLimit, at: 24)
        data.put32(0, at: 28)  // MAXIMUM STREAM DEVICE TRANSFER SIZE
        data.put16(self.limits.totalConcurrentCopies, at: 34)
        data[36] = self.limits.maximumConcurrentCopies
        data[37] = 0  // DATA SEGMENT GRANULARITY: bytes (segment 0x0A)
        data[38] = 0
        data[39] = 0
        data[43] = UInt8(types.count)
        return data + types
    }

    /// Transfer count and its units (bytes, KiB, MiB, ...) in 32 bits.
    static func transferCount(_ bytes: UInt64) -> (units: UInt8, count: UInt32) {
        var value = bytes
        var units: UInt8 = 0
        while value > UInt64(UInt32.max) {
            value >>= 10
            units += 1
        }
        return (units, UInt32(value))
    }

    /// COPY STATUS (LID1), 12 bytes.
    static func copyStatusLID1(_ operation: CopyOperation) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 12)
        data.put32(8, at: 0)
        switch operation.state {
        case .running: data[4] = 0x00
        case .finished(.completed, _), .finished(.completedWithPartialTokenUsage, _): data[4] = 0x01
        case .finished: data[4] = 0x02
        }
        data.put16(UInt16(clamping: operation.segmentsProcessed), at: 5)
        let (units, count) = Self.transferCount(operation.bytesTransferred)
        data[7] = units
        data.put32(count, at: 8)
        return data
    }

    /// FAILURE DETAILS: 60 bytes and the sense data (fixed format) of a failed copy.
    static func failureDetails(_ operation: CopyOperation) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 60)
        var sense: [UInt8] = []
        if case .finished(let outcome, _) = operation.state {
            switch outcome {
            case .completed, .completedWithPartialTokenUsage: data[56] = SCSIStatus.good.rawValue
            case .aborted: data[56] = SCSIStatus.taskAborted.rawValue
            case .failed(let senseData):
                data[56] = SCSIStatus.checkCondition.rawValue
                sense = senseData.encodeFixed()
            }
        }
        data.put16(UInt16(sense.count), at: 58)
        data += sense
        data.put32(UInt32(data.count - 4), at: 0)
        return data
    }

    /// COPY STATUS (LID4) and the common part of RECEIVE ROD TOKEN INFORMATION (SPC-4
    /// §6.18.5, §6.18.6): 32 bytes and the sense data (fixed format) of a failed operation.
    /// Token commands count in logical blocks of the destination (units F1h); EXTENDED COPY
    /// in bytes.
    static func copyStatusLID4(_ operation: CopyOperation) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 32)
        var sense: [UInt8] = []
        data[4] = operation.kind.serviceAction
        data.put16(operation.statusUpdates, at: 6)
        switch operation.state {
        case .running:
            data[5] = operation.background ? 0x12 : 0x11  // in progress, background / foreground
            data.put32(100, at: 8)  // ESTIMATED STATUS UPDATE DELAY, ms
        case .finished(let outcome, _):
            data.put32(0xFFFF_FFFE, at: 8)
            switch outcome {
            case .completed:
                data[5] = 0x01
                data[12] = SCSIStatus.good.rawValue
            case .completedWithPartialTokenUsage:
                data[5] = 0x03
                data[12] = SCSIStatus.good.rawValue
            case .aborted:
                data[5] = 0x60
                data[12] = SCSIStatus.taskAborted.rawValue
            case .failed(let senseData):
                data[5] = 0x02
                data[12] = SCSIStatus.checkCondition.rawValue
                sense = senseData.encodeFixed()
            }
        }
        data[13] = UInt8(sense.count)
        data[14] = UInt8(sense.count)
        if let blockSize = operation.blockSize, blockSize > 0 {
            data[15] = 0xF1  // TRANSFER COUNT UNITS: logical blocks
            data.put64(operation.bytesTransferred / UInt64(blockSize), at: 16)
        } else {
            data[15] = 0  // bytes
            data.put64(operation.bytesTransferred, at: 16)
        }
        data.put16(UInt16(clamping: operation.segmentsProcessed), at: 24)
        data += sense
        data.put32(UInt32(data.count - 4), at: 0)
        return data
    }

    /// RECEIVE ROD TOKEN INFORMATION: the LID4 status, then the ROD token descriptors
    /// (a completed POPULATE TOKEN: length 514, two reserved bytes, the 512-byte token).
    static func rodTokenInformation(_ operation: CopyOperation) -> [UInt8] {
        var data = Self.copyStatusLID4(operation)
        if let token = operation.token, case .finished(let outcome, _) = operation.state, outcome == .completed {
            data.append32(UInt32(token.count + 2))
            data += [0, 0] + token
        } else {
            data.append32(0)
        }
        data.put32(UInt32(data.count - 4), at: 0)
        return data
    }

    // MARK: Third-party Copy VPD page

    /// The (operation code, service actions) this copy manager implements, for VPD 0x8F.
    public static let supportedCommands: [(UInt8, [UInt8])] = [
        (0x83, [0x00, 0x01, 0x10, 0x11, 0x1C]), (0x84, [0x00, 0x03, 0x04, 0x05, 0x07, 0x08]),
    ]

    /// The descriptors of the Third-party Copy VPD page (SPC-4 §7.8.17), without the page
    /// header, in type order: Block Device ROD Limits, Supported Commands, Parameter Data,
    /// Supported Descriptors, Supported CSCD Descriptor IDs, ROD Token Features, Supported
    /// ROD Types, General Copy Operations.
    public func thirdPartyCopyDescriptors(blockSize: Int = 512) -> [UInt8] {
        func descriptor(_ type: UInt16, _ body: [UInt8]) -> [UInt8] {
            var padded = body
            while (padded.count + 4) % 4 != 0 { padded.append(0) }
            var out: [UInt8] = []
            out.append16(type)
            out.append16(UInt16(padded.count))
            return out + padded
        }
        // 0x0001 Supported Commands.
        var commands: [UInt8] = []
        for (opcode, actions) in Self.supportedCommands {
            commands.append(opcode)
            commands.append(UInt8(actions.count))
            commands += actions
        }
        let supportedCommands = descriptor(0x0001, [UInt8(commands.count)] + commands)
        // 0x0004 Parameter Data.
        var parameterData = [UInt8](repeating: 0, count: 28)
        parameterData.put16(UInt16(clamping: self.limits.maximumCSCDCount), at: 4)
        parameterData.put16(UInt16(clamping: self.limits.maximumSegmentCount), at: 6)
        parameterData.put32(UInt32(clamping: self.limits.maximumDescriptorListLength), at: 8)
        parameterData.put32(self.limits.maximumInlineDataLength, at: 12)
        // 0x0008 Supported Descriptors.
        let types = CopyLimits.implementedDescriptorTypes
        let supportedDescriptors = descriptor(0x0008, [UInt8(types.count)] + types)
        // 0x000C Supported CSCD Descriptor IDs: 0xFFFF (the receiving logical unit).
        let supportedIDs = descriptor(0x000C, [0x00, 0x02, 0xFF, 0xFF])
        // 0x8001 General Copy Operations.
        var general = [UInt8](repeating: 0, count: 32)
        general.put32(UInt32(self.limits.totalConcurrentCopies), at: 0)
        general.put32(UInt32(self.limits.maximumConcurrentCopies), at: 4)
        general.put32(self.limits.maximumSegmentLength, at: 8)
        general[12] = 0  // DATA SEGMENT GRANULARITY
        general[13] = 0  // INLINE DATA GRANULARITY
        let tokens = self.tokenDescriptors(blockSize: blockSize)
        let rodLimits = Array(tokens[0..<36])
        let rodFeatures = Array(tokens[36...])
        return rodLimits + supportedCommands + descriptor(0x0004, parameterData) + supportedDescriptors + supportedIDs
            + rodFeatures + descriptor(0x8001, general)
    }
}
