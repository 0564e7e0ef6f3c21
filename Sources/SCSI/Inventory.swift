//
// The logical unit inventory of a target, and its changes while the target runs.
//
// Adding or removing a logical unit changes what REPORT LUNS returns, so the device server
// establishes a unit attention with REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh) for every open
// I_T nexus (SPC-4 §6.37, SAM-5 §5.14), on every logical unit that nexus can address after the
// change, the way LIO and SCST queue it. An initiator thus hears of the change through
// whichever LU it talks to next; Linux logs it and raises a LUN_CHANGE_REPORTED uevent, and
// a rescan (`iscsiadm -m session -R`) picks up the new inventory.
//
// A removed logical unit answers LOGICAL UNIT NOT SUPPORTED (25h/00h) from the next command
// on. Commands already past `prepare` finish against the unit they found; its backing store is
// detached afterwards by whoever removed it (`BlockStore.detach`), which flushes it first.
//
public struct UnitInventory: Sendable {
    public var units: [UInt16: LogicalUnit]
    /// The keys of `units`, ascending.
    public private(set) var sorted: [UInt16]

    public init(units: [UInt16: LogicalUnit]) {
        self.units = units
        self.sorted = units.keys.sorted()
    }

    mutating func insert(_ unit: LogicalUnit) {
        self.units[unit.number] = unit
        self.sorted = self.units.keys.sorted()
    }

    mutating func remove(_ number: UInt16) -> LogicalUnit? {
        guard let unit = self.units.removeValue(forKey: number) else { return nil }
        self.sorted = self.units.keys.sorted()
        return unit
    }
}

/// Why an inventory change was refused.
public enum InventoryError: Error, Equatable, CustomStringConvertible {
    case lunInUse(UInt16)
    case noSuchLUN(UInt16)
    case storeTooSmall(UInt16)

    public var description: String {
        switch self {
        case .lunInUse(let lun): "LUN \(lun) already exists"
        case .noSuchLUN(let lun): "there is no LUN \(lun)"
        case .storeTooSmall(let lun): "the backing store of LUN \(lun) holds less than one block"
        }
    }
}

extension SCSITargetDevice {
    /// Adds a logical unit to the running target and tells every open I_T nexus (3Fh/0Eh).
    @discardableResult
    public func addLogicalUnit(_ configuration: LogicalUnitConfiguration, store: any BlockStore) throws(InventoryError)
        -> LogicalUnit
    {
        guard store.byteCount >= UInt64(configuration.blockSize) else { throw .storeTooSmall(configuration.number) }
        let unit = LogicalUnit(configuration: configuration, store: store)
        try self.inventory.update { (inventory: inout UnitInventory) throws(InventoryError) in
            guard inventory.units[configuration.number] == nil else { throw .lunInUse(configuration.number) }
            inventory.insert(unit)
        }
        self.raiseUnitAttentionOnEveryUnit(.reportedLUNsDataHasChanged)
        return unit
    }

    /// Removes a logical unit from the running target and tells every open I_T nexus
    /// (3Fh/0Eh on the units that remain). Returns the unit, whose store the caller detaches.
    @discardableResult
    public func removeLogicalUnit(_ number: UInt16) throws(InventoryError) -> LogicalUnit {
        let unit = try self.inventory.update { (inventory: inout UnitInventory) throws(InventoryError) in
            guard let unit = inventory.remove(number) else { throw .noSuchLUN(number) }
            return unit
        }
        unit.sanitizer.detachWaiters()
        self.raiseUnitAttentionOnEveryUnit(.reportedLUNsDataHasChanged)
        return unit
    }

    /// Queues the unit attention `code` for every open I_T nexus on every logical unit it can
    /// address (e.g. INQUIRY DATA HAS CHANGED when a page's contents changed under it).
    public func raiseUnitAttentionOnEveryUnit(_ code: AdditionalSenseCode) {
        let everyone = self.openNexuses(except: nil)
        for unit in self.logicalUnits {
            let visible = everyone.filter { unit.configuration.isVisible(initiatorName: $0.initiatorName) }
            unit.raiseUnitAttention(code, for: visible)
        }
    }
}

extension NexusKey {
    /// The initiator name part of the initiator port name.
    var initiatorName: String {
        ITNexus(initiatorPortName: self.initiatorPortName, targetPortName: self.targetPortName, id: 0).initiatorName
    }
}

extension LogicalUnitConfiguration {
    func isVisible(initiatorName: String) -> Bool {
        guard let visibleTo else { return true }
        return visibleTo.contains(initiatorName.lowercased())
    }
}
