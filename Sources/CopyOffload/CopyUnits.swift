//
// Every logical unit of the process, as the copy manager sees it.
//
// An identification CSCD descriptor names a logical unit by one of its VPD 0x83 designators
// (NAA, EUI-64, T10 vendor ID, ...). Copies may run between logical units of different
// targets of the same process, so the registry is process-wide: each target registers its
// logical units when its device is built and removes them when it goes away.
//
import SCSI

/// Which logical unit: the iSCSI target name and the LUN.
public struct CopyUnitID: Sendable, Hashable, CustomStringConvertible {
    public var targetName: String
    public var lun: UInt16

    public init(targetName: String, lun: UInt16) {
        self.targetName = targetName
        self.lun = lun
    }

    public var description: String { "\(targetName)/\(lun)" }
}

/// Copy statistics of one logical unit (operator-visible).
public struct CopyStatistics: Sendable, Equatable {
    /// EXTENDED COPY commands received by this logical unit, and how many of them failed.
    public var operations: UInt64 = 0
    public var failedOperations: UInt64 = 0
    /// Bytes read from / written to this logical unit by copies.
    public var bytesRead: UInt64 = 0
    public var bytesWritten: UInt64 = 0

    public init() {}
}

/// One logical unit: identity, geometry and storage.
public final class CopyUnit: Sendable {
    public let id: CopyUnitID
    /// Logical-unit designators (association 0) from its Device Identification page.
    public let designators: [Designator]
    public let blockSize: Int
    public let blockCount: UInt64
    public let store: any BlockStore
    public let isReadOnly: Bool
    /// Thin provisioned (LBPME): zeroing by token deallocates instead of writing zeros.
    public let isThinProvisioned: Bool
    /// Whether an I_T nexus may reach this LU at all (the target's initiator ACL and the LU's
    /// masking): copies never read or write an LU their initiator could not address itself.
    private let access: @Sendable (ITNexus) -> Bool
    /// Whether writes may stay in a volatile cache (WCE); false: copies write durably.
    private let writeCacheProbe: LockedValue<(read: @Sendable () -> Bool, fromDevice: Bool)>
    private let statisticsState = LockedValue(CopyStatistics())
    /// Told of every byte range a copy wrote (false) or deallocated (true), so the device's
    /// extensions (the flash model) see medium changes made without a WRITE command.
    private let mediumChanged: (@Sendable (_ deallocated: Bool, _ offset: UInt64, _ length: UInt64) -> Void)?

    public init(id: CopyUnitID, designators: [Designator], blockSize: Int, blockCount: UInt64, store: any BlockStore,
                isReadOnly: Bool = false, isThinProvisioned: Bool = false,
                writeCacheEnabled: @escaping @Sendable () -> Bool = { true },
                access: @escaping @Sendable (ITNexus) -> Bool = { _ in true },
                mediumChanged: (@Sendable (_ deallocated: Bool, _ offset: UInt64, _ length: UInt64) -> Void)? = nil) {
        self.mediumChanged = mediumChanged
        self.id = id
        self.designators = designators.filter { $0.association == 0 }
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.store = store
        self.isReadOnly = isReadOnly
        self.isThinProvisioned = isThinProvisioned
        self.access = access
        self.writeCacheProbe = LockedValue((writeCacheEnabled, false))
    }

    /// The current WCE of the logical unit (copies to it are made durable when it is off).
    public var writeCacheEnabled: Bool { self.writeCacheProbe.withLock { $0.read }() }

    /// Reads WCE from the device's logical unit from now on (set once; later calls are ignored).
    public func attachDevice(writeCache probe: @escaping @Sendable () -> Bool) {
        self.writeCacheProbe.withLock { state in
            if !state.fromDevice { state = (probe, true) }
        }
    }

    public var byteCount: UInt64 { self.blockCount * UInt64(self.blockSize) }

    /// Whether `nexus` may read or write this LU through a copy.
    public func isAccessible(to nexus: ITNexus) -> Bool { self.access(nexus) }
    public var statistics: CopyStatistics { self.statisticsState.withLock { $0 } }

    /// A copy wrote `length` bytes at byte `offset`.
    func noteWritten(at offset: UInt64, length: UInt64) {
        if length > 0 { self.mediumChanged?(false, offset, length) }
    }

    /// A copy deallocated `length` bytes at byte `offset` (the zero ROD token on a thin LU).
    func noteDeallocated(at offset: UInt64, length: UInt64) {
        if length > 0 { self.mediumChanged?(true, offset, length) }
    }

    func record(_ update: (inout CopyStatistics) -> Void) {
        self.statisticsState.withLock { update(&$0) }
    }
}

/// The process-wide set of logical units copies may address.
public final class CopyUnitRegistry: Sendable {
    private let units = LockedValue<[CopyUnitID: CopyUnit]>([:])
    /// Every ROD token of the process.
    public let tokens: RODTokenStore

    public init(tokens: RODTokenStore = RODTokenStore(makeSnapshotStore: RODTokenStore.temporaryFiles())) {
        self.tokens = tokens
    }

    public func register(_ unit: CopyUnit) {
        self.units.withLock { $0[unit.id] = unit }
    }

    public func unregister(_ id: CopyUnitID) {
        self.units.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// Removes every logical unit of `targetName`.
    public func removeTarget(_ targetName: String) {
        self.units.withLock { units in units = units.filter { $0.key.targetName != targetName } }
    }

    public func unit(_ id: CopyUnitID) -> CopyUnit? {
        self.units.withLock { $0[id] }
    }

    public var all: [CopyUnit] {
        self.units.withLock { Array($0.values) }.sorted { ($0.id.targetName, $0.id.lun) < ($1.id.targetName, $1.id.lun) }
    }

    /// The logical unit one of whose designators equals `designator` (code set, association,
    /// type and value). When several match (a misconfiguration), the first in name order.
    public func unit(matching designator: Designator) -> CopyUnit? {
        self.all.first { $0.designators.contains(designator) }
    }
}
