//
// SCSITargetDevice: the `SCSIDevice` a transport talks to.
//
// `prepare` runs the fixed pipeline every command goes through, in this order:
//   1. decode the LUN; look the CDB up in the command table (20/00 or 24/00 on failure);
//   2. the usage-mask validator (24/00 with a field pointer);
//   3. LUN existence (25/00 unless the command is allowed without a LU);
//   4. a pending unit attention for this I_T nexus (except INQUIRY, REPORT LUNS, REQUEST SENSE);
//   5. reservation conflicts (RESERVE(6) and persistent reservations);
//   6. write protection for medium-modifying commands;
//   7. the handler, which decodes its CDB fields once and either answers at once or hands
//      `execute` a closure holding the decoded values.
// Errors thrown anywhere become CHECK CONDITION in `response(for:unit:)`, the one place
// where sense bytes are encoded.
//
import NIOCore

public final class SCSITargetDevice: SCSIDevice {
    /// The target as it was built; `logicalUnits` is the inventory now (units come and go).
    public let configuration: TargetDeviceConfiguration
    /// The logical units, read by every command without a lock (see `SnapshotCell`).
    let inventory: SnapshotCell<UnitInventory>
    let table: CommandTable
    /// What other modules contribute (see `SCSIDeviceExtension`).
    public let extensions: [any SCSIDeviceExtension]
    /// Open I_T nexuses with a reference count (a nexus may briefly have two sessions
    /// during session reinstatement).
    private let nexuses = LockedValue<[NexusKey: Int]>([:])

    /// - Parameters:
    ///   - configuration: the target and its logical units.
    ///   - stores: the block store of each logical unit, keyed by LUN. A logical unit
    ///     without a store is a programming error.
    ///   - extensions: modules contributing commands, pages and state to this device; their
    ///     commands join the one command table.
    public init(configuration: TargetDeviceConfiguration, stores: [UInt16: any BlockStore],
                extensions: [any SCSIDeviceExtension] = []) {
        self.configuration = configuration
        var units: [UInt16: LogicalUnit] = [:]
        for lu in configuration.logicalUnits {
            guard let store = stores[lu.number] else {
                preconditionFailure("no block store for LUN \(lu.number)")
            }
            precondition(units[lu.number] == nil, "LUN \(lu.number) configured twice")
            units[lu.number] = LogicalUnit(configuration: lu, store: store)
        }
        self.inventory = SnapshotCell(UnitInventory(units: units))
        self.extensions = extensions
        self.table = CommandTable(SCSITargetDevice.commandDescriptors + extensions.flatMap(\.commandDescriptors))
    }

    func unit(_ number: UInt16?) -> LogicalUnit? {
        guard let number else { return nil }
        return self.inventory.withValue { $0.units[number] }
    }

    /// The logical units now, in LUN order.
    public var logicalUnits: [LogicalUnit] {
        self.inventory.withValue { inventory in inventory.sorted.map { inventory.units[$0]! } }
    }

    /// The logical unit `number`, whoever asks (nil: none).
    public func logicalUnit(_ number: UInt16) -> LogicalUnit? { self.unit(number) }

    /// The unit as `nexus` sees it: a LUN masked from its initiator does not exist for it.
    func unit(_ number: UInt16?, for nexus: ITNexus) -> LogicalUnit? {
        guard let unit = self.unit(number), unit.configuration.isVisible(to: nexus) else { return nil }
        return unit
    }

    // MARK: SCSIDevice

    public func prepare(_ command: SCSICommand) -> PrepareResult {
        let unit = self.unit(command.lunNumber, for: command.nexus)
        do {
            let descriptor = try self.table.lookup(command.cdb)
            try descriptor.validate(command.cdb)
            if unit == nil && !descriptor.flags.contains(.allowedWithoutLogicalUnit) {
                throw SCSIError.logicalUnitNotSupported
            }
            let nexus = NexusKey(command.nexus)
            if !descriptor.flags.contains(.readsMedium) && !descriptor.flags.contains(.writesMedium) {
                // Data commands stay off the device-wide lock; every session starts with
                // INQUIRY / TEST UNIT READY / REPORT LUNS anyway.
                self.noteNexus(nexus)
            }
            if let unit {
                if !descriptor.flags.contains(.ignoresUnitAttention), let ua = unit.takeUnitAttention(for: nexus) {
                    throw SCSIError(sense: ua)
                }
                if unit.isReserved {
                    try unit.checkReservationConflict(descriptor, command: command, nexus: nexus)
                }
                if let error = unit.mediumTermination(for: descriptor) { throw error }
                if descriptor.flags.contains(.writesMedium) && unit.isWriteProtected {
                    throw SCSIError.writeProtected
                }
                if !descriptor.isOffered(unit.configuration) {
                    switch (descriptor.serviceAction, ServiceActionField.forOpcode(descriptor.opcode)) {
                    case (nil, _): throw SCSIError.invalidCommandOperationCode
                    case (_, .byte1LowBits): throw SCSIError.invalidFieldInCDB(byte: 1, bit: 4)
                    case (_, .bytes8And9): throw SCSIError.invalidFieldInCDB(byte: 8, bit: 7)
                    }
                }
            }
            let context = CommandContext(device: self, unit: unit, command: command)
            switch try descriptor.handler(context) {
            case .complete(let reply):
                return .complete(SCSIResponse(reply))
            case .execute(let wantsDataOut, let mayBlock, let execution):
                let dataOutLength = wantsDataOut && command.direction != .toInitiator && command.direction != .none
                    ? command.expectedDataTransferLength : 0
                return .ready(PreparedCommand(command: command, dataOutLength: dataOutLength, mayBlock: mayBlock,
                                              decoded: PreparedExecution(.closure(execution))))
            case .readMedium(let read):
                return .ready(PreparedCommand(command: command, dataOutLength: 0, mayBlock: true,
                                              decoded: PreparedExecution(.read(read))))
            }
        } catch {
            return .complete(self.response(for: error, unit: unit))
        }
    }

    public func execute(_ prepared: PreparedCommand, dataOut: ByteBuffer?) -> SCSIResponse {
        do {
            switch prepared.decoded.work {
            case .closure(let execution):
                if prepared.dataOutLength > 0 && (dataOut?.readableBytes ?? 0) < prepared.dataOutLength {
                    throw SCSIError.dataPhaseError
                }
                return SCSIResponse(try execution(prepared.dataOutLength > 0 ? dataOut : nil))
            case .read(let read):
                let data = try read.unit.readBuffer(lba: read.lba, byteCount: read.byteCount)
                if let access = read.access { self.reportMediumAccess(access) }
                return SCSIResponse(status: .good, dataIn: data, transferLength: read.byteCount)
            }
        } catch {
            return self.response(for: error, unit: self.unit(prepared.command.lunNumber))
        }
    }

    /// Runs a prepared command at once if it can finish without waiting for storage (a READ
    /// served from the page cache); nil when it must go to `execute` off the event loop.
    public func executeWithoutWaiting(_ prepared: PreparedCommand) -> SCSIResponse? {
        guard case .read(let read) = prepared.decoded.work else { return nil }
        do {
            guard let data = try read.unit.readBufferWithoutWaiting(lba: read.lba, byteCount: read.byteCount) else {
                return nil
            }
            if let access = read.access { self.reportMediumAccess(access) }
            return SCSIResponse(status: .good, dataIn: data, transferLength: read.byteCount)
        } catch {
            return self.response(for: error, unit: read.unit)
        }
    }

    /// The one place an error becomes a response: fixed or descriptor format per D_SENSE.
    func response(for error: any Error, unit: LogicalUnit?) -> SCSIResponse {
        SCSIError(mapping: error).response(descriptorFormat: unit?.descriptorSense ?? false)
    }

    /// The unit attention every reset establishes: 29/00 POWER ON, RESET, OR BUS DEVICE RESET
    /// OCCURRED, for every open I_T nexus of the LU *including* the one that asked for the
    /// reset. SAM-5 §6.3 establishes the condition for all I_T nexuses; libiscsi's
    /// MultipathIO.Reset expects it on every path, and its RESERVE(6)/RELEASE(6) helpers
    /// retry only on 29/00 — hence 29/00 rather than the more specific 29/03.
    static let resetUnitAttention = AdditionalSenseCode.powerOnResetOrBusDeviceReset

    public func taskManagement(_ function: TaskManagementFunction, lunField: UInt64,
                               nexus: ITNexus) -> TaskManagementOutcome {
        let outcome = self.performTaskManagement(function, lunField: lunField, nexus: nexus)
        if outcome == .functionComplete && !self.extensions.isEmpty {
            let lun: UInt16? = switch function {
            case .targetWarmReset, .targetColdReset: nil
            case .abortTask, .abortTaskSet, .clearTaskSet, .clearACA, .logicalUnitReset:
                SCSICommand.lunNumber(of: lunField)
            }
            for ext in self.extensions { ext.taskManagement(function, lun: lun, nexus: nexus) }
        }
        return outcome
    }

    private func performTaskManagement(_ function: TaskManagementFunction, lunField: UInt64,
                                       nexus: ITNexus) -> TaskManagementOutcome {
        switch function {
        case .abortTask, .abortTaskSet, .clearTaskSet:
            // The device keeps no task set of its own; the transport aborts its tasks. A
            // SANITIZE waiting for its operation stops waiting (the operation continues).
            guard let unit = self.unit(SCSICommand.lunNumber(of: lunField), for: nexus) else { return .lunDoesNotExist }
            unit.sanitizer.detachWaiters()
            return .functionComplete
        case .clearACA:
            return .functionNotSupported
        case .logicalUnitReset:
            guard let unit = self.unit(SCSICommand.lunNumber(of: lunField), for: nexus) else { return .lunDoesNotExist }
            self.reset(unit)
            unit.raiseUnitAttention(Self.resetUnitAttention, for: self.openNexuses(except: nil))
            return .functionComplete
        case .targetWarmReset, .targetColdReset:
            let everyone = self.openNexuses(except: nil)
            for unit in self.logicalUnits {
                self.reset(unit)
                unit.raiseUnitAttention(Self.resetUnitAttention, for: everyone)
            }
            return .functionComplete
        }
    }

    public func nexusDidOpen(_ nexus: ITNexus) {
        let key = NexusKey(nexus)
        self.nexuses.withLock { $0[key, default: 0] += 1 }
    }

    public func nexusDidClose(_ nexus: ITNexus) {
        let key = NexusKey(nexus)
        let gone = self.nexuses.withLock { open -> Bool in
            guard let count = open[key] else { return true }
            if count <= 1 {
                open[key] = nil
                return true
            }
            open[key] = count - 1
            return false
        }
        guard gone else { return }
        // I_T nexus loss: its RESERVE(6) reservation and prevent state go, and nothing
        // queued for it survives (a new login starts clean).
        for unit in self.logicalUnits {
            unit.nexusLost(key)
        }
        for ext in self.extensions { ext.nexusDidClose(nexus) }
    }

    /// A logical unit reset: the LU's own state, then every extension's state for it.
    private func reset(_ unit: LogicalUnit) {
        unit.reset()
        for ext in self.extensions { ext.logicalUnitDidReset(unit) }
    }

    public func lunNumbers(for nexus: ITNexus) -> [UInt16] {
        self.inventory.withValue { inventory in
            inventory.sorted.filter { inventory.units[$0]!.configuration.isVisible(to: nexus) }
        }
    }

    // MARK: Nexus bookkeeping

    /// Commands may arrive from a nexus the transport never announced (tests); remember it
    /// so that later unit attentions reach it.
    private func noteNexus(_ key: NexusKey) {
        self.nexuses.withLock { open in
            if open[key] == nil { open[key] = 1 }
        }
    }

    func openNexuses(except excluded: NexusKey?) -> [NexusKey] {
        self.nexuses.withLock { open in open.keys.filter { $0 != excluded } }
    }
}

/// What `prepare` decoded for `execute`: opaque outside this module. A concrete type (not an
/// existential) so that preparing a READ allocates no box for it.
public struct PreparedExecution: Sendable {
    enum Work: Sendable {
        case closure(CommandExecution)
        case read(MediumRead)
    }

    let work: Work

    init(_ work: Work) { self.work = work }

    /// A READ of the medium: it changes nothing, so it may overtake other READs.
    public var isMediumRead: Bool {
        if case .read = self.work { return true }
        return false
    }
}

extension SCSIResponse {
    init(_ reply: CommandReply) {
        self.init(status: reply.status, sense: [], dataIn: reply.dataIn, transferLength: reply.transferLength)
    }
}

extension SCSICommand {
    /// `lunNumber` for a bare LUN field (task management).
    public static func lunNumber(of lunField: UInt64) -> UInt16? {
        SCSICommand(lunField: lunField, cdb: [], expectedDataTransferLength: 0, direction: .none,
                    nexus: ITNexus(initiatorPortName: "", targetPortName: "", id: 0)).lunNumber
    }
}

extension LogicalUnit {
    /// LOGICAL UNIT RESET / target reset effects on this LU (SAM-5 §6.3.3): the RESERVE(6)
    /// reservation and medium-removal prevention are cleared and mode parameters return to
    /// their defaults. Persistent reservations survive.
    func reset() {
        self.sanitizer.detachWaiters()
        self.withReservations { state in
            state.reservationHolder = nil
            state.preventingRemoval = []
        }
        _ = self.setModeParameters(ModeParameters.defaults(for: self.configuration))
    }

    func nexusLost(_ key: NexusKey) {
        self.sanitizer.detachWaiters()
        self.withReservations { state in
            if state.reservationHolder == key { state.reservationHolder = nil }
            state.preventingRemoval.remove(key)
        }
        self.discardUnitAttentions(for: key)
    }
}
