//
// Copy offload as a SCSI device extension: the commands, VPD page 0x8F and the INQUIRY 3PC
// bit, over one `CopyManager` per target.
//
//   EXTENDED COPY (LID1)          83h/00h  blocking: runs on the thread pool, in chunks
//   EXTENDED COPY (LID4)          83h/01h  blocking
//   COPY OPERATION ABORT          83h/1Ch
//   RECEIVE COPY STATUS (LID1)    84h/00h
//   RECEIVE COPY OPERATING PARAMETERS 84h/03h
//   RECEIVE COPY FAILURE DETAILS  84h/04h
//   RECEIVE COPY STATUS (LID4)    84h/05h
//   POPULATE TOKEN                83h/10h  blocking (IMMED: runs in the background)
//   WRITE USING TOKEN             83h/11h  blocking (IMMED: runs in the background)
//   RECEIVE ROD TOKEN INFORMATION 84h/07h
//   REPORT ALL ROD TOKENS         84h/08h
//
// RECEIVE COPY DATA (84h/01h, 06h) is not offered: no segment type that holds data is
// implemented, and the held data limit is 0.
//
import NIOCore
import SCSI

public final class CopyOffloadExtension: SCSIDeviceExtension {
    public let manager: CopyManager
    public let targetName: String
    /// The target's initiator ACL: whether an initiator name may log in to this target.
    let initiatorAllowed: @Sendable (String) -> Bool

    /// - Parameters:
    ///   - targetName: the target whose device this extension is installed in.
    ///   - registry: every logical unit of the process (shared by all targets' extensions).
    public init(targetName: String, registry: CopyUnitRegistry, limits: CopyLimits = CopyLimits(),
                tokenLimits: RODTokenLimits = RODTokenLimits(), mover: CopyMover? = nil,
                clock: @escaping @Sendable () -> NIODeadline = { .now() },
                background: (@Sendable (@escaping @Sendable () -> Void) -> Void)? = nil,
                initiatorAllowed: @escaping @Sendable (String) -> Bool = { _ in true }) {
        self.targetName = targetName
        self.initiatorAllowed = initiatorAllowed
        if let background {
            self.manager = CopyManager(registry: registry, limits: limits, tokenLimits: tokenLimits, mover: mover,
                                       clock: clock, background: background)
        } else {
            self.manager = CopyManager(registry: registry, limits: limits, tokenLimits: tokenLimits, mover: mover,
                                       clock: clock)
        }
    }

    /// Registers the device's logical units with the process-wide registry, with the
    /// designators their Device Identification pages report. Call once the device is built.
    public func register(device: SCSITargetDevice) {
        for unit in device.logicalUnits { self.register(unit, of: device) }
    }

    /// Registers one logical unit of `device` (also one added while the target runs).
    public func register(_ unit: LogicalUnit, of device: SCSITargetDevice) {
        let probe = ITNexus(initiatorPortName: "copy-manager,i,0x000000000000",
                            targetPortName: device.configuration.targetPortName, id: UInt64.max)
        defer { device.nexusDidClose(probe) }
        let lu = unit.configuration
        let lunField = lu.number < 256 ? UInt64(lu.number) << 48 : UInt64(0x4000 | lu.number) << 48
        let inquiry = SCSICommand(lunField: lunField, cdb: [0x12, 0x01, 0x83, 0x10, 0x00, 0x00],
                                  expectedDataTransferLength: 0x1000, direction: .toInitiator, nexus: probe)
        var designators: [Designator] = []
        if case .complete(let response) = device.prepare(inquiry), response.status == .good,
           let data = response.dataIn {
            designators = Designator.parseList(Array(data.readableBytesView))
        }
        let allowed = self.initiatorAllowed
        self.manager.registry.register(CopyUnit(
            id: CopyUnitID(targetName: self.targetName, lun: lu.number), designators: designators,
            blockSize: unit.blockSize, blockCount: unit.blockCount, store: unit.store, isReadOnly: lu.readOnly,
            isThinProvisioned: lu.thinProvisioned,
            access: { nexus in allowed(nexus.initiatorName) && lu.isVisible(to: nexus) },
            mediumChanged: { [weak device] deallocated, offset, length in
                let blockSize = UInt64(lu.blockSize)
                device?.reportMediumAccess(MediumAccess(
                    kind: deallocated ? .deallocate : .copy, lun: lu.number, operationCode: 0x83,
                    lba: offset / blockSize, blocks: length / blockSize, bytes: Int(length), groupNumber: 0))
            }))
    }

    /// New token limits for this target, from the next command on. When the Third-party Copy
    /// VPD page changes with them, every I_T nexus gets INQUIRY DATA HAS CHANGED (3Fh/03h) on
    /// every logical unit of `device`. Returns false when nothing changed.
    @discardableResult
    public func setTokenLimits(_ limits: RODTokenLimits, device: SCSITargetDevice) -> Bool {
        let before = self.manager.tokenDescriptors(blockSize: 512)
        guard self.manager.setTokenLimits(limits) else { return false }
        if self.manager.tokenDescriptors(blockSize: 512) != before {
            device.raiseUnitAttentionOnEveryUnit(.inquiryDataHasChanged)
        }
        return true
    }

    /// The token limits now.
    public var tokenLimits: RODTokenLimits { self.manager.tokenLimits }

    /// A logical unit of this target was removed: copies it received stop, its tokens are
    /// revoked (23h/06h, then unknown), and copies can no longer name it.
    public func unregister(lun: UInt16) {
        let unit = CopyUnitID(targetName: self.targetName, lun: lun)
        self.manager.registry.unregister(unit)
        self.manager.stopCopies { _, _, receiving in receiving == unit }
        self.manager.tokens.revoke(cause: "LUN removed") { $0.source == unit }
    }

    /// The addressed logical unit's registry identity. The first command that reaches a
    /// logical unit also teaches the registry how to read its WCE (sg_xcopy, for one, asks
    /// both ends for their operating parameters before copying).
    func unitID(_ context: CommandContext) -> CopyUnitID {
        let lu = context.lu
        let id = CopyUnitID(targetName: self.targetName, lun: lu.number)
        self.manager.registry.unit(id)?.attachDevice(writeCache: { [weak lu] in lu?.writeCacheEnabled ?? true })
        return id
    }

    // MARK: SCSIDeviceExtension

    public var commandDescriptors: [CommandDescriptor] {
        let extendedCopyUsage: [UInt8] = [0x83, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00]
        let lid1ListUsage: [UInt8] = [0x84, 0x1F, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00]
        let lid4ListUsage: [UInt8] = [0x84, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00]
        let tokenUsage: [UInt8] = [0x83, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x00]
        return [
            CommandDescriptor(0x83, serviceAction: 0x10, "POPULATE TOKEN", usage: tokenUsage,
                              direction: .dataOut, flags: [.readsMedium], timeouts: (30, 600),
                              handler: { [unowned self] in try self.tokenCommand($0, populate: true) }),
            CommandDescriptor(0x83, serviceAction: 0x11, "WRITE USING TOKEN", usage: tokenUsage,
                              direction: .dataOut, flags: [.writesMedium], timeouts: (30, 600),
                              handler: { [unowned self] in try self.tokenCommand($0, populate: false) }),
            CommandDescriptor(0x84, serviceAction: 0x07, "RECEIVE ROD TOKEN INFORMATION", usage: lid4ListUsage,
                              direction: .dataIn, flags: [.allowedUnderReservation],
                              handler: { [unowned self] in try self.receiveRODTokenInformation($0) }),
            CommandDescriptor(0x84, serviceAction: 0x08, "REPORT ALL ROD TOKENS",
                              usage: [0x84, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x00],
                              direction: .dataIn, flags: [.allowedUnderReservation],
                              handler: { [unowned self] in
                                  let data = self.manager.reportAllRODTokens(unit: self.unitID($0))
                                  return .complete(.parameterData(data, allocationLength: Self.parameterListLength($0.cdb)))
                              }),
            CommandDescriptor(0x83, serviceAction: 0x00, "EXTENDED COPY(LID1)", usage: extendedCopyUsage,
                              direction: .dataOut, flags: [.modifiesUnderPersistentReservation], timeouts: (30, 600),
                              handler: { [unowned self] in try self.extendedCopy($0, format: .lid1) }),
            CommandDescriptor(0x83, serviceAction: 0x01, "EXTENDED COPY(LID4)", usage: extendedCopyUsage,
                              direction: .dataOut, flags: [.modifiesUnderPersistentReservation], timeouts: (30, 600),
                              handler: { [unowned self] in try self.extendedCopy($0, format: .lid4) }),
            CommandDescriptor(0x83, serviceAction: 0x1C, "COPY OPERATION ABORT",
                              usage: [0x83, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00],
                              flags: [.allowedUnderReservation],
                              handler: { [unowned self] in try self.copyOperationAbort($0) }),
            CommandDescriptor(0x84, serviceAction: 0x00, "RECEIVE COPY STATUS(LID1)", usage: lid1ListUsage,
                              direction: .dataIn, flags: [.allowedUnderReservation],
                              handler: { [unowned self] in try self.receiveCopyResults($0, listID: UInt32($0.cdb[2])) }),
            CommandDescriptor(0x84, serviceAction: 0x03, "RECEIVE COPY OPERATING PARAMETERS", usage: lid1ListUsage,
                              direction: .dataIn, flags: [.allowedUnderReservation],
                              handler: { [unowned self] in try self.receiveCopyResults($0, listID: 0) }),
            CommandDescriptor(0x84, serviceAction: 0x04, "RECEIVE COPY FAILURE DETAILS(LID1)", usage: lid1ListUsage,
                              direction: .dataIn, flags: [.allowedUnderReservation],
                              handler: { [unowned self] in try self.receiveCopyResults($0, listID: UInt32($0.cdb[2])) }),
            CommandDescriptor(0x84, serviceAction: 0x05, "RECEIVE COPY STATUS(LID4)", usage: lid4ListUsage,
                              direction: .dataIn, flags: [.allowedUnderReservation],
                              handler: { [unowned self] in
                                  try self.receiveCopyResults($0, listID: Self.listIdentifier($0.cdb, at: 2))
                              }),
        ]
    }

    public func vpdPageCodes(for unit: LogicalUnit) -> [UInt8] { [0x8F] }

    public func vpdPage(_ pageCode: UInt8, for unit: LogicalUnit) -> [UInt8]? {
        pageCode == 0x8F ? self.manager.thirdPartyCopyDescriptors(blockSize: unit.blockSize) : nil
    }

    /// Standard INQUIRY byte 5 bit 3: 3PC.
    public func standardInquiryBits(for unit: LogicalUnit?) -> [Int: UInt8] {
        unit == nil ? [:] : [5: 0x08]
    }

    public func nexusDidClose(_ nexus: ITNexus) {
        self.manager.nexusLost(nexus)
    }

    /// ABORT TASK SET / CLEAR TASK SET stop this nexus's copies on the LU; LOGICAL UNIT RESET
    /// every copy the LU received; target resets every copy of this target. ABORT TASK does not
    /// name a list ID, so it cannot single out a copy here: the transport drops the task and
    /// the copy runs to its end (its results, if held, stay readable).
    public func taskManagement(_ function: TaskManagementFunction, lun: UInt16?, nexus: ITNexus) {
        let target = self.targetName
        switch function {
        case .abortTaskSet, .clearTaskSet:
            guard let lun else { return }
            self.manager.stopCopies { initiator, port, unit in
                initiator == nexus.initiatorPortName && port == nexus.targetPortName
                    && unit == CopyUnitID(targetName: target, lun: lun)
            }
        case .logicalUnitReset:
            guard let lun else { return }
            let unit = CopyUnitID(targetName: target, lun: lun)
            self.manager.stopCopies { _, _, receiving in receiving == unit }
            self.manager.tokens.revoke(cause: "LOGICAL UNIT RESET") { $0.source == unit }
        case .targetWarmReset, .targetColdReset:
            self.manager.stopCopies { _, _, unit in unit.targetName == target }
            self.manager.tokens.revoke(cause: "target reset") { $0.source.targetName == target }
        case .abortTask, .clearACA:
            break
        }
    }

    // MARK: Handlers

    private static func parameterListLength(_ cdb: [UInt8]) -> Int {
        Int(UInt32(cdb[10]) << 24 | UInt32(cdb[11]) << 16 | UInt32(cdb[12]) << 8 | UInt32(cdb[13]))
    }

    /// A command that carries a parameter list (PARAMETER LIST LENGTH in CDB bytes 10–13) and
    /// runs on the thread pool: `run` gets the list as received.
    private func withParameterList(
        _ context: CommandContext,
        _ run: @escaping @Sendable (CopyManager, [UInt8], CopyUnitID, ITNexus) throws(CopyError) -> Void
    ) -> CommandOutcome {
        let length = Self.parameterListLength(context.cdb)
        guard length > 0 else { return .complete(.good) }
        let unit = self.unitID(context)
        let nexus = context.nexus
        let manager = self.manager
        return .execute(wantsDataOut: true, mayBlock: true) { dataOut in
            var list: [UInt8] = []
            if let dataOut {
                let count = min(length, dataOut.readableBytes)
                list = dataOut.getBytes(at: dataOut.readerIndex, length: count) ?? []
            }
            do throws(CopyError) {
                try run(manager, list, unit, nexus)
            } catch {
                throw error.scsiError
            }
            return .good
        }
    }

    func extendedCopy(_ context: CommandContext, format: ExtendedCopyFormat) throws -> CommandOutcome {
        self.withParameterList(context) { manager, list, unit, nexus throws(CopyError) in
            try manager.extendedCopy(list, format: format, unit: unit, nexus: nexus)
        }
    }

    private static func listIdentifier(_ cdb: [UInt8], at index: Int) -> UInt32 {
        UInt32(cdb[index]) << 24 | UInt32(cdb[index + 1]) << 16 | UInt32(cdb[index + 2]) << 8 | UInt32(cdb[index + 3])
    }

    /// POPULATE TOKEN / WRITE USING TOKEN: LIST IDENTIFIER in CDB bytes 6–9.
    func tokenCommand(_ context: CommandContext, populate: Bool) throws -> CommandOutcome {
        let listID = Self.listIdentifier(context.cdb, at: 6)
        return self.withParameterList(context) { manager, list, unit, nexus throws(CopyError) in
            if populate {
                try manager.populateToken(list, listID: listID, unit: unit, nexus: nexus)
            } else {
                try manager.writeUsingToken(list, listID: listID, unit: unit, nexus: nexus)
            }
        }
    }

    func receiveRODTokenInformation(_ context: CommandContext) throws -> CommandOutcome {
        let data: [UInt8]
        do throws(CopyError) {
            data = try self.manager.rodTokenInformation(listID: Self.listIdentifier(context.cdb, at: 2),
                                                        unit: self.unitID(context), nexus: context.nexus)
        } catch {
            throw error.scsiError
        }
        return .complete(.parameterData(data, allocationLength: Self.parameterListLength(context.cdb)))
    }

    func copyOperationAbort(_ context: CommandContext) throws -> CommandOutcome {
        let listID = Self.listIdentifier(context.cdb, at: 2)
        do throws(CopyError) {
            try self.manager.abort(listID: listID, unit: self.unitID(context), nexus: context.nexus)
        } catch {
            throw error.scsiError
        }
        return .complete(.good)
    }

    func receiveCopyResults(_ context: CommandContext, listID: UInt32) throws -> CommandOutcome {
        let allocationLength = Self.parameterListLength(context.cdb)
        let data: [UInt8]
        do throws(CopyError) {
            data = try self.manager.receiveCopyResults(serviceAction: context.cdb[1] & 0x1F, listID: listID,
                                                        unit: self.unitID(context), nexus: context.nexus)
        } catch {
            throw error.scsiError
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }
}
