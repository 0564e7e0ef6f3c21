//
// One logical unit: its configuration, its block store and its small mutable state.
//
// Data commands never take the state lock on their hot path: the two mode values they
// need (WCE, D_SENSE) and "is anything pending for anyone" flags are mirrored in atomics.
// Control state (mode pages, unit attention queues, reservations) lives in one per-LU
// lock (`LockedValue`); nothing here is global to the target.
//
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import Synchronization

/// The identity of an I_T nexus for SCSI state (UAs, reservations): the initiator port and
/// target port names. Two sessions with the same ISID are the same nexus.
public struct NexusKey: Hashable, Sendable {
    public var initiatorPortName: String
    public var targetPortName: String

    public init(_ nexus: ITNexus) {
        self.initiatorPortName = nexus.initiatorPortName
        self.targetPortName = nexus.targetPortName
    }
}

/// The changeable mode parameters (current values).
struct ModeParameters: Sendable, Equatable {
    /// Caching page WCE.
    var writeCacheEnabled: Bool
    /// Control page D_SENSE: report sense data in descriptor format.
    var descriptorSense: Bool
    /// Control page SWP: software write protect (the medium is write-protected until cleared).
    var softwareWriteProtect: Bool = false
}

struct LogicalUnitState: Sendable {
    var mode: ModeParameters
    /// Pending unit attentions per I_T nexus, oldest first.
    var unitAttentions: [NexusKey: [SenseData]] = [:]
    /// The holder of a RESERVE(6) reservation.
    var reservationHolder: NexusKey?
    var persistentReservations = PersistentReservationState()
    /// I_T nexuses that sent PREVENT ALLOW MEDIUM REMOVAL with PREVENT = 1.
    var preventingRemoval: Set<NexusKey> = []

    static let maximumPendingUnitAttentions = 8
}

/// A reader–writer lock: ordinary writes share it, COMPARE AND WRITE holds it alone, so
/// the compare and the write happen with no other write to the LU in between.
public final class SharedExclusiveLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        self.lock = .allocate(capacity: 1)
        self.lock.initialize(to: pthread_rwlock_t())
        let rc = pthread_rwlock_init(self.lock, nil)
        precondition(rc == 0, "pthread_rwlock_init failed: \(rc)")
    }

    deinit {
        pthread_rwlock_destroy(self.lock)
        self.lock.deallocate()
    }

    public func withShared<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(self.lock)
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }

    public func withExclusive<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(self.lock)
        defer { pthread_rwlock_unlock(self.lock) }
        return try body()
    }
}

/// One logical unit as command handlers (including those of device extensions) see it.
public final class LogicalUnit: Sendable {
    public let configuration: LogicalUnitConfiguration
    public let store: any BlockStore
    public let blockSize: Int
    /// Blocks actually usable: min(configured, store size / block size).
    public let blockCount: UInt64
    let state: LockedValue<LogicalUnitState>
    /// Ordinary writes hold it shared; COMPARE AND WRITE holds it exclusively.
    public let writeOrdering = SharedExclusiveLock()

    private let writeCacheEnabledFlag: Atomic<Bool>
    private let descriptorSenseFlag: Atomic<Bool>
    private let softwareWriteProtectFlag = Atomic<Bool>(false)
    /// SANITIZE state: in progress / failed, and the waiters of running operations.
    public let sanitizer = Sanitizer()
    /// Removable LUs: whether the medium is loaded (START STOP UNIT with LOEJ changes it).
    private let mediumPresentFlag = Atomic<Bool>(true)
    public var isMediumPresent: Bool { self.mediumPresentFlag.load(ordering: .acquiring) }
    func setMediumPresent(_ present: Bool) { self.mediumPresentFlag.store(present, ordering: .releasing) }
    /// Number of queued unit attentions across all nexuses (fast "nothing pending" check).
    private let pendingUnitAttentionCount = Atomic<Int>(0)
    /// True while a RESERVE(6) or persistent reservation exists.
    private let reservedFlag: Atomic<Bool>

    init(configuration: LogicalUnitConfiguration, store: any BlockStore) {
        self.configuration = configuration
        self.store = store
        self.blockSize = configuration.blockSize
        self.blockCount = min(configuration.blockCount, store.byteCount / UInt64(configuration.blockSize))
        let mode = ModeParameters.defaults(for: configuration)
        var initial = LogicalUnitState(mode: mode)
        if let path = configuration.reservationStatePath, let saved = ReservationPersistence.load(path: path) {
            initial.persistentReservations = saved
        }
        self.reservedFlag = Atomic(initial.reservationHolder != nil || initial.persistentReservations.reservation != nil)
        self.state = LockedValue(initial)
        self.writeCacheEnabledFlag = Atomic(mode.writeCacheEnabled)
        self.descriptorSenseFlag = Atomic(mode.descriptorSense)
    }

    public var number: UInt16 { self.configuration.number }
    public var writeCacheEnabled: Bool { self.writeCacheEnabledFlag.load(ordering: .relaxed) }
    public var descriptorSense: Bool { self.descriptorSenseFlag.load(ordering: .relaxed) }
    /// Read-only by configuration or by the Control mode page SWP bit.
    public var isWriteProtected: Bool {
        self.configuration.readOnly || self.softwareWriteProtectFlag.load(ordering: .relaxed)
    }
    var isReserved: Bool { self.reservedFlag.load(ordering: .acquiring) }

    // MARK: Mode parameters

    var modeParameters: ModeParameters { self.state.withLock { $0.mode } }

    /// Installs new current values; returns true when something changed.
    func setModeParameters(_ mode: ModeParameters) -> Bool {
        let changed = self.state.withLock { state -> Bool in
            guard state.mode != mode else { return false }
            state.mode = mode
            return true
        }
        self.writeCacheEnabledFlag.store(mode.writeCacheEnabled, ordering: .relaxed)
        self.descriptorSenseFlag.store(mode.descriptorSense, ordering: .relaxed)
        self.softwareWriteProtectFlag.store(mode.softwareWriteProtect, ordering: .relaxed)
        return changed
    }

    // MARK: Unit attentions

    /// Queues `sense` for each of `nexuses` (duplicates of a pending condition are dropped).
    func raiseUnitAttention(_ code: AdditionalSenseCode, for nexuses: some Sequence<NexusKey>) {
        let sense = SenseData(key: .unitAttention, code: code)
        let added = self.state.withLock { state -> Int in
            var added = 0
            for nexus in nexuses {
                var queue = state.unitAttentions[nexus, default: []]
                guard !queue.contains(sense) else { continue }
                if queue.count >= LogicalUnitState.maximumPendingUnitAttentions {
                    queue.removeLast()
                    added -= 1
                }
                queue.append(sense)
                state.unitAttentions[nexus] = queue
                added += 1
            }
            return added
        }
        self.pendingUnitAttentionCount.add(added, ordering: .releasing)
    }

    /// Removes and returns the oldest unit attention pending for `nexus`.
    func takeUnitAttention(for nexus: NexusKey) -> SenseData? {
        guard self.pendingUnitAttentionCount.load(ordering: .acquiring) > 0 else { return nil }
        let sense = self.state.withLock { state -> SenseData? in
            guard var queue = state.unitAttentions[nexus], !queue.isEmpty else { return nil }
            let first = queue.removeFirst()
            state.unitAttentions[nexus] = queue.isEmpty ? nil : queue
            return first
        }
        if sense != nil { self.pendingUnitAttentionCount.subtract(1, ordering: .releasing) }
        return sense
    }

    func discardUnitAttentions(for nexus: NexusKey) {
        let removed = self.state.withLock { $0.unitAttentions.removeValue(forKey: nexus)?.count ?? 0 }
        if removed > 0 { self.pendingUnitAttentionCount.subtract(removed, ordering: .releasing) }
    }

    // MARK: Reservations

    /// Runs `body` on the state and refreshes the fast "reserved" flag afterwards.
    func withReservations<T>(_ body: (inout LogicalUnitState) throws -> T) rethrows -> T {
        try self.state.withLock { state in
            defer {
                let reserved = state.reservationHolder != nil || state.persistentReservations.reservation != nil
                self.reservedFlag.store(reserved, ordering: .releasing)
            }
            return try body(&state)
        }
    }

    // MARK: Ranges

    /// Checks that `count` blocks from `lba` lie inside the medium: LBA OUT OF RANGE otherwise.
    /// With `count` = 0 an LBA one past the last block is accepted (libiscsi *_0blocks tests
    /// and UNMAP descriptors expect GOOD there, and OUT OF RANGE beyond it).
    public func checkRange(lba: UInt64, count: UInt64) throws(SCSIError) {
        let (end, overflow) = lba.addingReportingOverflow(count)
        if overflow || end > self.blockCount {
            throw SCSIError.lbaOutOfRange
        }
    }

    public func byteOffset(_ lba: UInt64) -> UInt64 { lba * UInt64(self.blockSize) }

    // MARK: Data

    /// Reads `byteCount` bytes at `lba` into a new buffer.
    public func readBuffer(lba: UInt64, byteCount: Int) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: byteCount)
        guard byteCount > 0 else { return buffer }
        let offset = self.byteOffset(lba)
        let store = self.store
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: byteCount) { pointer in
            try store.read(into: UnsafeMutableRawBufferPointer(rebasing: pointer[0..<byteCount]), at: offset)
            return byteCount
        }
        return buffer
    }

    /// `readBuffer` when the store can answer without waiting for storage; nil otherwise.
    public func readBufferWithoutWaiting(lba: UInt64, byteCount: Int) throws -> ByteBuffer? {
        var buffer = ByteBufferAllocator().buffer(capacity: byteCount)
        guard byteCount > 0 else { return buffer }
        let offset = self.byteOffset(lba)
        let store = self.store
        var ready = false
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: byteCount) { pointer in
            ready = try store.readWithoutWaiting(into: UnsafeMutableRawBufferPointer(rebasing: pointer[0..<byteCount]), at: offset)
            return ready ? byteCount : 0
        }
        return ready ? buffer : nil
    }

    /// Reads into a byte array.
    public func readBytes(lba: UInt64, byteCount: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: byteCount)
        guard byteCount > 0 else { return bytes }
        let offset = self.byteOffset(lba)
        try bytes.withUnsafeMutableBytes { try self.store.read(into: $0, at: offset) }
        return bytes
    }

    /// Writes the first `byteCount` readable bytes of `data` at `lba`.
    public func write(_ data: ByteBuffer, byteCount: Int, lba: UInt64, durable: Bool) throws {
        guard byteCount > 0 else {
            if durable { try self.store.flush() }
            return
        }
        precondition(data.readableBytes >= byteCount)
        let offset = self.byteOffset(lba)
        let store = self.store
        try data.withUnsafeReadableBytes { pointer in
            try store.write(UnsafeRawBufferPointer(rebasing: pointer[0..<byteCount]), at: offset, durable: durable)
        }
    }

    /// Whether a write must be on stable storage before GOOD: FUA, or WCE = 0.
    public func writeMustBeDurable(forceUnitAccess: Bool) -> Bool {
        forceUnitAccess || !self.writeCacheEnabled
    }
}
