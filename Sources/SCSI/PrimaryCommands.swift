//
// SPC commands other than INQUIRY, mode pages, RSOC and persistent reservations:
// TEST UNIT READY, REQUEST SENSE, REPORT LUNS, START STOP UNIT, PREVENT ALLOW MEDIUM
// REMOVAL, SEND DIAGNOSTIC, RESERVE(6)/RELEASE(6), REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
//

extension SCSITargetDevice {
    /// The medium is always present and ready: GOOD (the pipeline reports any unit attention).
    static func testUnitReady(_ context: CommandContext) throws -> CommandOutcome {
        .complete(.good)
    }

    /// REQUEST SENSE (SPC-4 §6.39): returns and clears one pending unit attention, else NO
    /// SENSE; LOGICAL UNIT NOT SUPPORTED as data for a LUN that does not exist. DESC selects
    /// descriptor format.
    static func requestSense(_ context: CommandContext) throws -> CommandOutcome {
        let descriptorFormat = context.cdb[1] & 0x01 != 0
        let allocationLength = Int(context.cdb[4])
        let sense: SenseData
        if let unit = context.unit {
            sense = unit.takeUnitAttention(for: NexusKey(context.nexus)) ?? unit.notReadySense ?? .noSense
        } else {
            sense = SenseData(key: .illegalRequest, code: .logicalUnitNotSupported)
        }
        return .complete(.parameterData(sense.encode(descriptorFormat: descriptorFormat),
                                        allocationLength: allocationLength))
    }

    /// REPORT LUNS (SPC-4 §6.33).
    static func reportLUNs(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let allocationLength = Int(cdb.bigEndian32(at: 6))
        guard allocationLength >= 16 else { throw SCSIError.invalidFieldInCDB(byte: 6, bit: 7) }
        let luns: [UInt16]
        switch cdb[2] {
        case 0x00, 0x02: luns = context.device.lunNumbers(for: context.nexus)
        case 0x01, 0x10, 0x11: luns = []  // no well-known or administrative logical units
        case 0x12: luns = context.unit == nil ? [] : context.device.lunNumbers(for: context.nexus)
        default: throw SCSIError.invalidFieldInCDB(byte: 2, bit: 7)
        }
        var data: [UInt8] = []
        data.appendBigEndian32(UInt32(luns.count * 8))
        data.appendBigEndian32(0)
        for lun in luns {
            data += encodeLUN(lun)
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }

    /// Eight-byte LUN: peripheral device addressing below 256, flat space addressing above (SAM-5 §4.7).
    static func encodeLUN(_ lun: UInt16) -> [UInt8] {
        let first: [UInt8] = lun < 256 ? [0x00, UInt8(lun)] : [0x40 | UInt8((lun >> 8) & 0x3F), UInt8(lun & 0xFF)]
        return first + [0, 0, 0, 0, 0, 0]
    }

    /// START STOP UNIT (SBC-4 §5.25): a removable LU ejects and loads its medium with LOEJ
    /// (see RemovableMedium.swift); otherwise accepted, and the medium never stops being ready.
    static func startStopUnit(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let powerCondition = cdb[4] >> 4
        let noFlush = cdb[4] & 0x04 != 0
        let start = cdb[4] & 0x01 != 0
        let loadEject = cdb[4] & 0x02 != 0
        let unit = context.lu
        // A removable medium is ejected (START = 0) or loaded (START = 1) with LOEJ, unless an
        // I_T nexus prevents removal; with a power condition, START and LOEJ are ignored.
        if unit.configuration.removable && powerCondition == 0 && loadEject {
            if unit.isRemovalPrevented { throw SCSIError(.illegalRequest, .mediumRemovalPrevented) }
            if !start {
                return .execute(wantsDataOut: false, mayBlock: true) { _ in
                    try unit.store.flush()
                    unit.setMediumPresent(false)
                    return .good
                }
            }
            unit.setMediumPresent(true)
            return .complete(.good)
        }
        // Stopping (power condition 0, START = 0) flushes the cache unless NO_FLUSH.
        if powerCondition == 0 && !start && !noFlush {
            return .execute(wantsDataOut: false, mayBlock: true) { _ in
                try unit.store.flush()
                return .good
            }
        }
        return .complete(.good)
    }

    /// PREVENT ALLOW MEDIUM REMOVAL (SBC-4 §5.13): recorded per I_T nexus; on a removable LU any
    /// preventing nexus makes START STOP UNIT with LOEJ fail with MEDIUM REMOVAL PREVENTED.
    static func preventAllowMediumRemoval(_ context: CommandContext) throws -> CommandOutcome {
        let prevent = context.cdb[4] & 0x03
        let key = NexusKey(context.nexus)
        context.lu.withReservations { state in
            if prevent == 0 { state.preventingRemoval.remove(key) } else { state.preventingRemoval.insert(key) }
        }
        return .complete(.good)
    }

    /// SEND DIAGNOSTIC (SPC-4 §6.42): the default self-test (SELFTEST = 1) passes; a
    /// parameter list or a self-test code is not supported.
    static func sendDiagnostic(_ context: CommandContext) throws -> CommandOutcome {
        let cdb = context.cdb
        let selfTestCode = cdb[1] >> 5
        let selfTest = cdb[1] & 0x04 != 0
        if selfTest && selfTestCode != 0 { throw SCSIError.invalidFieldInCDB(byte: 1, bit: 7) }
        if cdb.bigEndian16(at: 3) != 0 { throw SCSIError.invalidFieldInCDB(byte: 3, bit: 7) }
        if !selfTest && selfTestCode == 0x0 && cdb[1] & 0x10 == 0 {
            // PF = 0 and no self-test: nothing to do.
            return .complete(.good)
        }
        if !selfTest && (selfTestCode == 0x3 || selfTestCode == 0x7) {
            throw SCSIError.invalidFieldInCDB(byte: 1, bit: 7)
        }
        return .complete(.good)
    }

    /// RESERVE(6) (SPC-2 §7.21): the LU is reserved to this I_T nexus. A conflicting
    /// reservation is handled by the pipeline before we get here.
    static func reserve6(_ context: CommandContext) throws -> CommandOutcome {
        let key = NexusKey(context.nexus)
        try context.lu.withReservations { state in
            if state.persistentReservations.reservation != nil
                || !state.persistentReservations.registrations.isEmpty {
                throw SCSIError.reservationConflict
            }
            if let holder = state.reservationHolder, holder != key { throw SCSIError.reservationConflict }
            state.reservationHolder = key
        }
        return .complete(.good)
    }

    /// RELEASE(6): releases this nexus's reservation; GOOD (without effect) otherwise.
    static func release6(_ context: CommandContext) throws -> CommandOutcome {
        let key = NexusKey(context.nexus)
        context.lu.withReservations { state in
            if state.reservationHolder == key { state.reservationHolder = nil }
        }
        return .complete(.good)
    }

    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.40).
    static func reportSupportedTaskManagementFunctions(_ context: CommandContext) throws -> CommandOutcome {
        let repd = context.cdb[2] & 0x80 != 0
        let allocationLength = Int(context.cdb.bigEndian32(at: 6))
        guard allocationLength >= 4 else { throw SCSIError.invalidFieldInCDB(byte: 6, bit: 7) }
        // ATS ATSS CACAS CTSS LURS QTS TRS WAKES | QUAS QTSS ITNRS | ...
        var data: [UInt8] = [0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0x00, 0x00, 0x00]
        if repd {
            data[3] = 0x0C
            data += [UInt8](repeating: 0, count: 12)
        }
        return .complete(.parameterData(data, allocationLength: allocationLength))
    }
}
