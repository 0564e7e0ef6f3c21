//
// SANITIZE (SBC-4 §5.30, §4.11): OVERWRITE, BLOCK ERASE, CRYPTOGRAPHIC ERASE and EXIT
// FAILURE MODE.
//
// A sanitize operation runs on its own thread, apart from the command that started it: with
// IMMED = 1 the command completes at once; with IMMED = 0 it completes when the operation
// does, unless it is aborted or its LU is reset first, in which case the operation carries
// on (SBC-4 §4.11.2: a sanitize operation survives task management functions, resets and
// I_T nexus loss). While the operation runs, every command except INQUIRY, REPORT LUNS and
// REQUEST SENSE is terminated with NOT READY, LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS
// (02/04/1B) and a progress indication. An operation that fails leaves the LU in the
// failure mode: medium access commands get MEDIUM ERROR, SANITIZE COMMAND FAILED (03/31/03)
// until EXIT FAILURE MODE or a successful sanitize.
//
// What each action does to a file-backed medium:
//   OVERWRITE     the initialization pattern (repeated from the start of every block,
//                 inverted between passes with INVERT) over every block, OVERWRITE COUNT
//                 times; an all-zero pattern on a thin LU deallocates instead (LBPRZ = 1).
//   BLOCK ERASE   deallocates every block (offered on thin-provisioned LUs only; reads
//                 return zeros afterwards: WABEREQ = 01b).
//   CRYPTO ERASE  the medium's "key" is discarded: every block reads as zeros afterwards
//                 (deallocated; thin-provisioned LUs only, WACEREQ = 01b).
// A fully provisioned LU offers OVERWRITE only (WABEREQ = WACEREQ = 00b): an erase of a
// thick file would be an overwrite anyway, and libiscsi reads WACEREQ from the WABEREQ field.
// `sanitizeMinimumSeconds` (configuration) stretches an operation to at least that long,
// to emulate a drive whose sanitize takes time (and to let initiators see it in progress).
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

extension AdditionalSenseCode {
    public static let logicalUnitNotReadySanitizeInProgress = AdditionalSenseCode(0x04, 0x1B)
    public static let sanitizeCommandFailed = AdditionalSenseCode(0x31, 0x03)
}

/// The sanitize state of one logical unit.
public final class Sanitizer: Sendable {
    enum Condition: Int { case idle = 0, inProgress = 1, failed = 2 }

    private let condition = Atomic<Int>(Condition.idle.rawValue)
    /// Progress of the running operation, a fraction of 65536.
    private let progress = Atomic<Int>(0)
    /// Bumped by task management and nexus loss: an IMMED = 0 command stops waiting.
    private let detachEpoch = Atomic<Int>(0)
    /// Bumped when an operation ends.
    private let finishedCount = Atomic<Int>(0)

    public var isInProgress: Bool { self.condition.load(ordering: .acquiring) == Condition.inProgress.rawValue }
    public var isInFailureMode: Bool { self.condition.load(ordering: .acquiring) == Condition.failed.rawValue }

    /// The error a command gets while a sanitize operation runs or has failed (nil: none).
    func termination(for descriptor: CommandDescriptor) -> SCSIError? {
        switch self.condition.load(ordering: .acquiring) {
        case Condition.inProgress.rawValue:
            if descriptor.flags.contains(.allowedWithoutLogicalUnit) { return nil }
            return SCSIError(sense: self.inProgressSense)
        case Condition.failed.rawValue:
            guard descriptor.flags.contains(.readsMedium) || descriptor.flags.contains(.writesMedium),
                  descriptor.opcode != 0x48 else { return nil }
            return SCSIError(.mediumError, .sanitizeCommandFailed)
        default:
            return nil
        }
    }

    /// NOT READY, SANITIZE IN PROGRESS with the progress indication.
    var inProgressSense: SenseData {
        let fraction = UInt16(clamping: self.progress.load(ordering: .relaxed))
        return SenseData(key: .notReady, code: .logicalUnitNotReadySanitizeInProgress,
                         senseKeySpecific: .progress(fraction))
    }

    /// Commands waiting for an operation stop waiting (the operation continues).
    public func detachWaiters() {
        self.detachEpoch.add(1, ordering: .releasing)
    }

    /// Leaves the failure mode (EXIT FAILURE MODE).
    func exitFailureMode() {
        _ = self.condition.compareExchange(expected: Condition.failed.rawValue, desired: Condition.idle.rawValue,
                                           ordering: .acquiringAndReleasing)
    }

    /// Starts `work` on its own thread; returns false if an operation already runs.
    /// `work` reports progress through its argument (0...1).
    func start(minimumSeconds: Double, immediate: Bool,
               _ work: @escaping @Sendable (_ progress: (Double) -> Void) throws -> Void) throws(SCSIError) {
        let (exchanged, _) = self.condition.compareExchange(expected: Condition.idle.rawValue,
                                                            desired: Condition.inProgress.rawValue,
                                                            ordering: .acquiringAndReleasing)
        if !exchanged {
            // A failed LU may be sanitized again; a running operation cannot be joined.
            let (fromFailed, _) = self.condition.compareExchange(expected: Condition.failed.rawValue,
                                                                 desired: Condition.inProgress.rawValue,
                                                                 ordering: .acquiringAndReleasing)
            if !fromFailed {
                throw SCSIError(sense: SenseData(key: .notReady, code: .logicalUnitNotReadySanitizeInProgress))
            }
        }
        self.progress.store(0, ordering: .relaxed)
        let epoch = self.detachEpoch.load(ordering: .acquiring)
        let finished = self.finishedCount.load(ordering: .acquiring)
        let started = Sanitizer.now()
        let outcome = LockedValue<Bool?>(nil)
        startDetachedThread {
            var succeeded = true
            do {
                try work { fraction in
                    self.progress.store(Int(max(0, min(1, fraction)) * 65535), ordering: .relaxed)
                }
            } catch {
                succeeded = false
            }
            let remaining = minimumSeconds - (Sanitizer.now() - started)
            if remaining > 0 { usleep(UInt32(min(remaining, 3600) * 1_000_000)) }
            self.progress.store(65535, ordering: .relaxed)
            outcome.withLock { $0 = succeeded }
            self.condition.store(succeeded ? Condition.idle.rawValue : Condition.failed.rawValue, ordering: .releasing)
            self.finishedCount.add(1, ordering: .releasing)
        }
        if immediate { return }
        // IMMED = 0: the command completes with the operation, unless detached first.
        while self.finishedCount.load(ordering: .acquiring) == finished {
            if self.detachEpoch.load(ordering: .acquiring) != epoch { return }
            usleep(10_000)
        }
        if outcome.withLock({ $0 }) == false { throw SCSIError(.mediumError, .sanitizeCommandFailed) }
    }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

private final class ThreadBody {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// Runs `body` on a new detached POSIX thread.
func startDetachedThread(_ body: @escaping @Sendable () -> Void) {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    #if canImport(Darwin)
    var thread: pthread_t?
    #else
    var thread = pthread_t()
    #endif
    let rc = pthread_create(&thread, nil, { argument in
        let box = Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue()
        box.body()
        return nil
    }, context)
    if rc != 0 {
        Unmanaged<ThreadBody>.fromOpaque(context).takeRetainedValue().body()
        return
    }
    #if canImport(Darwin)
    pthread_detach(thread!)
    #else
    pthread_detach(thread)
    #endif
}

extension SCSITargetDevice {
    private static let sanitizeActions: [(UInt16, String, @Sendable (LogicalUnitConfiguration) -> Bool)] = [
        (0x01, "OVERWRITE", { _ in true }),
        (0x02, "BLOCK ERASE", { $0.thinProvisioned }),
        (0x03, "CRYPTOGRAPHIC ERASE", { $0.thinProvisioned }),
        (0x1F, "EXIT FAILURE MODE", { _ in true }),
    ]

    static let sanitizeDescriptors: [CommandDescriptor] = sanitizeActions.map { action, name, offered in
        CommandDescriptor(0x48, serviceAction: action, "SANITIZE / " + name,
                          usage: [0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00],
                          direction: action == 0x01 ? .dataOut : .none,
                          flags: action == 0x1F ? [.modifiesUnderPersistentReservation]
                              : [.writesMedium, .modifiesUnderPersistentReservation],
                          timeouts: (60, 3600), offered: offered, handler: { try sanitize($0) })
    }

    static func sanitize(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let unit = context.lu
        let immediate = cdb[1] & 0x80 != 0
        let serviceAction = cdb[1] & 0x1F
        let parameterListLength = Int(cdb.bigEndian16(at: 7))
        let lu = unit.configuration
        let minimumSeconds = lu.sanitizeMinimumSeconds
        switch serviceAction {
        case 0x01:  // OVERWRITE: a 4-byte header and a pattern of 1 to block-size bytes
            if parameterListLength < 5 || parameterListLength > unit.blockSize + 4 {
                throw SCSIError.invalidFieldInCDB(byte: 7, bit: 7)
            }
            return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
                guard let dataOut, dataOut.readableBytes >= parameterListLength else {
                    throw SCSIError.parameterListLengthError
                }
                let list = Array(dataOut.readableBytesView.prefix(parameterListLength))
                let plan = try parseOverwriteList(list, blockSize: unit.blockSize)
                let device = context.device
                try unit.sanitizer.start(minimumSeconds: minimumSeconds, immediate: immediate) { progress in
                    try overwrite(unit, plan: plan, progress: progress) { deallocated in
                        // Each pass rewrote the whole medium (or, zeros on a thin LU, deallocated it).
                        device.reportMediumAccess(MediumAccess(
                            kind: deallocated ? .deallocate : .write, lun: unit.number, operationCode: 0x48, lba: 0,
                            blocks: unit.blockCount, bytes: 0, groupNumber: 0))
                    }
                }
                return .good
            }
        case 0x02, 0x03:  // BLOCK ERASE, CRYPTOGRAPHIC ERASE: no parameter list
            if parameterListLength != 0 { throw SCSIError.invalidFieldInCDB(byte: 7, bit: 7) }
            return .execute(wantsDataOut: false, mayBlock: true) { _ in
                let device = context.device
                try unit.sanitizer.start(minimumSeconds: minimumSeconds, immediate: immediate) { progress in
                    try erase(unit, progress: progress)
                    // An erased device holds no data: every block is trimmed.
                    device.reportMediumAccess(.deallocation(unit, lba: 0, blocks: unit.blockCount, operationCode: 0x48))
                }
                return .good
            }
        default:  // 0x1F EXIT FAILURE MODE (the table admits no other service action)
            if parameterListLength != 0 { throw SCSIError.invalidFieldInCDB(byte: 7, bit: 7) }
            unit.sanitizer.exitFailureMode()
            return .complete(.good)
        }
    }

    struct OverwritePlan: Sendable, Equatable {
        var invert: Bool
        var passes: Int
        /// One logical block of the pattern (repeated from the block's first byte).
        var block: [UInt8]
    }

    /// OVERWRITE parameter list (SBC-4 §5.30.3): INVERT, TEST, OVERWRITE COUNT; INITIALIZATION
    /// PATTERN LENGTH; the pattern.
    static func parseOverwriteList(_ list: [UInt8], blockSize: Int) throws(SCSIError) -> OverwritePlan {
        let passes = Int(list[0] & 0x1F)
        if list[0] & 0x60 != 0 { throw SCSIError.invalidFieldInParameterList(byte: 0, bit: 6) }
        if passes == 0 { throw SCSIError.invalidFieldInParameterList(byte: 0, bit: 4) }
        if list[1] != 0 { throw SCSIError.invalidFieldInParameterList(byte: 1, bit: 7) }
        let patternLength = Int(list.bigEndian16(at: 2))
        if patternLength == 0 || patternLength > blockSize || patternLength + 4 > list.count {
            throw SCSIError.invalidFieldInParameterList(byte: 2, bit: 7)
        }
        let pattern = Array(list[4..<(4 + patternLength)])
        var block: [UInt8] = []
        block.reserveCapacity(blockSize)
        while block.count < blockSize { block += pattern.prefix(blockSize - block.count) }
        return OverwritePlan(invert: list[0] & 0x80 != 0, passes: passes, block: block)
    }

    /// `passDone` is told after each pass whether it deallocated (zeros on a thin LU) or wrote.
    static func overwrite(_ unit: LogicalUnit, plan: OverwritePlan, progress: (Double) -> Void,
                          passDone: (Bool) -> Void = { _ in }) throws {
        let total = unit.blockCount
        var block = plan.block
        for pass in 0..<plan.passes {
            if pass > 0 && plan.invert { block = block.map { ~$0 } }
            let deallocate = unit.configuration.thinProvisioned && block.allSatisfy({ $0 == 0 })
            if deallocate {
                try unit.store.deallocate(at: 0, length: total * UInt64(unit.blockSize))
            } else {
                try fill(unit, block: block) { done in
                    progress((Double(pass) + Double(done) / Double(max(total, 1))) / Double(plan.passes))
                }
            }
            passDone(deallocate)
        }
        try unit.store.flush()
    }

    static func erase(_ unit: LogicalUnit, progress: (Double) -> Void) throws {
        let total = unit.blockCount
        if unit.configuration.thinProvisioned {
            try unit.store.deallocate(at: 0, length: total * UInt64(unit.blockSize))
        } else {
            try fill(unit, block: [UInt8](repeating: 0, count: unit.blockSize)) { done in
                progress(Double(done) / Double(max(total, 1)))
            }
        }
        try unit.store.flush()
    }

    /// Writes `block` over every block of the LU in 1 MiB chunks.
    static func fill(_ unit: LogicalUnit, block: [UInt8], progress: (UInt64) -> Void) throws {
        let total = unit.blockCount
        let step: UInt64 = max(1, UInt64((1 << 20) / unit.blockSize))
        var lba: UInt64 = 0
        while lba < total {
            let count = min(step, total - lba)
            try writeRepeated(block, unit: unit, lba: lba, count: count, durable: false)
            lba += count
            progress(lba)
        }
    }
}
