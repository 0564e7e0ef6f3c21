//
// The copy operations of one copy manager, as a value-type state machine.
//
// An operation is keyed by (I_T nexus, receiving logical unit, list identifier):
//
//     begin ──▶ running ──finish──▶ completed | failed(sense) | aborted
//                  │                        │
//            requestAbort                 (held only with LIST ID USAGE 00b)
//           (flag, seen by the mover       │
//            between chunks)          read (RECEIVE COPY RESULTS) / expired / nexus lost ──▶ freed
//
// Rules (SPC-4 §6.4.3.2, §6.18):
// - LIST ID USAGE 11b: nothing is tracked (the parser has checked the list ID is zero);
// - a list ID that names a *running* copy of the same nexus and logical unit: OPERATION IN
//   PROGRESS (00/16); one that names held results of a finished copy replaces them;
// - held results are freed when read (a successful copy by its status; a failed or aborted
//   copy by FAILURE DETAILS or by COPY STATUS (LID4), which carries the sense data), when
//   `heldResultsLifetime` passes, or when the nexus goes away.
// Time is passed in (`now`); nothing here reads a clock.
//
import NIOCore
import SCSI

public struct CopyListKey: Sendable, Hashable {
    public var initiatorPort: String
    public var targetPort: String
    public var unit: CopyUnitID
    public var listID: UInt32

    public init(initiatorPort: String, targetPort: String, unit: CopyUnitID, listID: UInt32) {
        self.initiatorPort = initiatorPort
        self.targetPort = targetPort
        self.unit = unit
        self.listID = listID
    }
}

public enum CopyOutcome: Sendable, Equatable {
    case completed
    /// WRITE USING TOKEN: the ROD ran out before the destination ranges were filled; what it
    /// held was written (COPY OPERATION STATUS 03h).
    case completedWithPartialTokenUsage
    case failed(SenseData)
    case aborted
}

/// The command that started a copy operation.
/// The end of one copy command, as `CopyManager.observe` reports it.
public struct CopyReport: Sendable {
    public var command: CopyCommandKind
    /// The logical unit that received the command.
    public var unit: CopyUnitID
    public var initiatorPort: String
    public var listID: UInt32
    public var outcome: CopyOutcome
    public var bytes: UInt64
    public var duration: TimeAmount?
}

public enum CopyCommandKind: Sendable, Equatable, CustomStringConvertible {
    case extendedCopy(ExtendedCopyFormat)
    case populateToken
    case writeUsingToken

    /// Its service action (RESPONSE TO SERVICE ACTION in the LID4 status).
    public var description: String {
        switch self {
        case .extendedCopy(let format): format == .lid1 ? "EXTENDED COPY(LID1)" : "EXTENDED COPY(LID4)"
        case .populateToken: "POPULATE TOKEN"
        case .writeUsingToken: "WRITE USING TOKEN"
        }
    }

    public var serviceAction: UInt8 {
        switch self {
        case .extendedCopy(let format): format.serviceAction
        case .populateToken: 0x10
        case .writeUsingToken: 0x11
        }
    }
}

public struct CopyOperation: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case running(abortRequested: Bool)
        case finished(CopyOutcome, at: NIODeadline)
    }
    public var key: CopyListKey
    public var kind: CopyCommandKind
    /// The EXTENDED COPY format (LID4 for the token commands, whose list IDs are 4 bytes).
    public var format: ExtendedCopyFormat {
        if case .extendedCopy(let format) = kind { return format }
        return .lid4
    }
    public var usage: ListIDUsage
    public var state: State
    public var segmentsProcessed: Int
    public var bytesTransferred: UInt64
    /// The nexus went away while the copy ran: nothing is held when it ends.
    public var orphaned = false
    /// Token commands report transfer counts in logical blocks of this size (units F1h).
    public var blockSize: Int?
    /// POPULATE TOKEN: the token, once created.
    public var token: [UInt8]?
    /// Runs after the command completed (IMMED = 1).
    public var background = false
    /// Progress reports so far (OPERATION COUNTER).
    public var statusUpdates: UInt16 = 0
    /// When the copy began (for the log line at its end).
    public var started: NIODeadline?
}

public struct CopyOperationTable: Sendable {
    public private(set) var operations: [CopyListKey: CopyOperation] = [:]
    public let heldResultsLifetime: TimeAmount
    public let maximumRunning: Int

    public init(heldResultsLifetime: TimeAmount, maximumRunning: Int) {
        self.heldResultsLifetime = heldResultsLifetime
        self.maximumRunning = maximumRunning
    }

    /// Starts tracking a copy. Returns false when LIST ID USAGE says nothing is tracked.
    public mutating func begin(_ key: CopyListKey, format: ExtendedCopyFormat, usage: ListIDUsage,
                               now: NIODeadline) throws(CopyError) -> Bool {
        try self.begin(key, kind: .extendedCopy(format), usage: usage, now: now)
    }

    /// Starts tracking a copy of any kind; `configure` fills in its token-command details.
    public mutating func begin(_ key: CopyListKey, kind: CopyCommandKind, usage: ListIDUsage, now: NIODeadline,
                               configure: (inout CopyOperation) -> Void = { _ in }) throws(CopyError) -> Bool {
        self.expire(now: now)
        guard usage != .none else { return false }
        if let existing = self.operations[key], case .running = existing.state {
            throw .operationInProgress
        }
        let running = self.operations.values.filter { if case .running = $0.state { true } else { false } }.count
        if running >= self.maximumRunning { throw .operationInProgress }
        var operation = CopyOperation(key: key, kind: kind, usage: usage, state: .running(abortRequested: false),
                                      segmentsProcessed: 0, bytesTransferred: 0)
        operation.started = now
        configure(&operation)
        self.operations[key] = operation
        return true
    }

    public mutating func progress(_ key: CopyListKey, segmentsProcessed: Int, bytesTransferred: UInt64) {
        guard var operation = self.operations[key], case .running = operation.state else { return }
        operation.segmentsProcessed = segmentsProcessed
        operation.bytesTransferred = bytesTransferred
        operation.statusUpdates &+= 1
        self.operations[key] = operation
    }

    /// POPULATE TOKEN: the token to report once the operation has completed.
    public mutating func attachToken(_ key: CopyListKey, _ token: [UInt8]) {
        self.operations[key]?.token = token
    }

    public func isAbortRequested(_ key: CopyListKey) -> Bool {
        if case .running(true) = self.operations[key]?.state { return true }
        return false
    }

    /// The copy ended. Results are held only for LIST ID USAGE 00b.
    public mutating func finish(_ key: CopyListKey, _ outcome: CopyOutcome, segmentsProcessed: Int,
                                bytesTransferred: UInt64, now: NIODeadline) {
        guard var operation = self.operations[key], case .running = operation.state else { return }
        guard operation.usage == .hold && !operation.orphaned else {
            self.operations[key] = nil
            return
        }
        operation.state = .finished(outcome, at: now)
        operation.segmentsProcessed = segmentsProcessed
        operation.bytesTransferred = bytesTransferred
        self.operations[key] = operation
    }

    /// COPY OPERATION ABORT: flags a running copy. False when no copy with that key runs.
    public mutating func requestAbort(_ key: CopyListKey) -> Bool {
        guard var operation = self.operations[key], case .running = operation.state else { return false }
        operation.state = .running(abortRequested: true)
        self.operations[key] = operation
        return true
    }

    public enum Read: Sendable, Equatable {
        /// COPY STATUS (LID1): frees a successful copy's results.
        case statusLID1
        /// COPY STATUS (LID4): frees any finished copy's results (they include the sense).
        case statusLID4
        /// FAILURE DETAILS: frees any finished copy's results.
        case failureDetails
    }

    /// RECEIVE COPY RESULTS: the operation (nil if unknown), freed as `read` says.
    public mutating func read(_ key: CopyListKey, _ read: Read, now: NIODeadline) -> CopyOperation? {
        self.expire(now: now)
        guard let operation = self.operations[key] else { return nil }
        if case .finished(let outcome, _) = operation.state {
            switch read {
            case .statusLID1:
                if outcome == .completed || outcome == .completedWithPartialTokenUsage { self.operations[key] = nil }
            case .statusLID4, .failureDetails:
                self.operations[key] = nil
            }
        }
        return operation
    }

    /// Frees held results older than the lifetime.
    public mutating func expire(now: NIODeadline) {
        let lifetime = self.heldResultsLifetime
        self.operations = self.operations.filter { _, operation in
            if case .finished(_, let at) = operation.state { return at + lifetime > now }
            return true
        }
    }

    /// The earliest time `expire` will free something.
    public var nextDeadline: NIODeadline? {
        self.operations.values.compactMap { operation -> NIODeadline? in
            if case .finished(_, let at) = operation.state { return at + self.heldResultsLifetime }
            return nil
        }.min()
    }

    /// I_T nexus loss: held results go, running copies are asked to stop.
    public mutating func nexusLost(initiatorPort: String, targetPort: String) {
        for (key, operation) in self.operations where key.initiatorPort == initiatorPort && key.targetPort == targetPort {
            switch operation.state {
            case .running:
                var stopping = operation
                stopping.state = .running(abortRequested: true)
                stopping.orphaned = true
                self.operations[key] = stopping
            case .finished:
                self.operations[key] = nil
            }
        }
    }
}
